"""A throwaway MariaDB server for tests: mariadb-install-db in a temp dir, a free port, a socket of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, List, Optional, Tuple

from tests.support.gateway import free_port

USER, PASSWORD = "routeplane", "rp-test-pw"


def find_binaries() -> Optional[Tuple[str, str]]:
    """(server, install-db) from Debian's mariadb-server (or an older mysqld/mysql_install_db), or None."""
    def which(*names: str) -> Optional[str]:
        for name in names:
            found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
            if found:
                return found
        return None

    server = which("mariadbd", "mysqld")
    install_db = which("mariadb-install-db", "mysql_install_db")
    return (server, install_db) if server and install_db else None


def _dies_with_us() -> List[str]:
    """A command prefix that makes the kernel SIGKILL the server when this process dies, so a killed
    pytest leaves no server behind (util-linux's setpriv; no preexec_fn, which is unsafe with threads)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class MariaDBServer:
    """`MariaDBServer(server, install_db).start()` → `.url`; `.stop()` removes everything.

    Durability is traded for speed (no fsync at commit, no doublewrite, small
    log): the data lives only as long as the test session. The server's
    character set and collation are Debian's (its mariadb.conf.d/50-server.cnf):
    utf8mb4, utf8mb4_general_ci.
    """

    def __init__(self, server: str, install_db: str, dbname: str = "routeplane_test") -> None:
        self.server = server
        self.install_db = install_db
        self.dbname = dbname
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="routeplane-mariadb-", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "mysqld.sock")
        self.log = os.path.join(self.dir, "server.log")
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.version = ""

    @property
    def url(self) -> str:
        return self._url(self.dbname)

    def _url(self, name: str) -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def _options(self) -> List[str]:
        user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without it
        return ["--no-defaults", f"--datadir={self.data}", *user, "--skip-name-resolve",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0", "--performance-schema=OFF",
                "--skip-log-bin"]

    def start(self) -> "MariaDBServer":
        try:
            # root logs in over the server's own socket without a password (normal auth: unix_socket auth
            # would tie it to the OS user); the tests connect over TCP as a user with a password.
            proc = subprocess.run([self.install_db, *self._options(), "--auth-root-authentication-method=normal",
                                   "--skip-test-db"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=self.dir, timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"{self.install_db} failed ({proc.returncode}):\n"
                                   f"{proc.stdout.decode(errors='replace')}")
            self._launch()
            self._admin(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                        f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'",
                        f"CREATE DATABASE {self.dbname}")
            self.version = str(self._admin("SELECT VERSION()")[0][0])
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*_dies_with_us(), self.server, *self._options(), f"--socket={self.sock}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", "--skip-networking=0", f"--pid-file={os.path.join(self.dir, 'pid')}",
                 "--max-connections=500"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + 60
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(f"mariadbd did not start (exit {self.proc.returncode}):\n{self._server_log()}")
            time.sleep(0.05)
        self._admin("SELECT 1")

    def _listening(self) -> bool:
        # A plain socket, not PyMySQL: its failed connects leave the socket to the GC (a ResourceWarning).
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.sock)
            except OSError:
                return False
        return True

    def _admin(self, *statements: str) -> List[Any]:
        """Run statements as root over the server's own socket; the last one's rows."""
        import pymysql

        conn = pymysql.connect(unix_socket=self.sock, user="root", connect_timeout=5, autocommit=True)
        try:
            rows: List[Any] = []
            with conn.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql)
                    rows = list(cursor.fetchall())
            return rows
        finally:
            conn.close()

    def create_database(self, name: str, charset: str = "") -> str:
        """A fresh, empty database on this server (the server's character set unless `charset`); its URL."""
        self._admin(f"CREATE DATABASE {name}" + (f" CHARACTER SET {charset}" if charset else ""))
        return self._url(name)

    def restart(self) -> None:
        """Kill and start again: every client session is cut, as in a failover or a crash."""
        self._kill()
        self._launch()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # throwaway data: no clean shutdown needed
            self.proc.wait(30)

    def stop(self) -> None:
        try:
            self._kill()
        finally:
            self.proc = None
            shutil.rmtree(self.dir, ignore_errors=True)

    def _server_log(self) -> str:
        try:
            with open(self.log, "rb") as fh:
                return fh.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""
