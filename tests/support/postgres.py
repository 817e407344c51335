"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a free port, a socket dir of its own."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from typing import List, Optional

from tests.support.gateway import free_port


def find_bindir() -> Optional[str]:
    """Debian's postgresql package puts the server binaries under /usr/lib/postgresql/<version>/bin."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    if candidates:
        return os.path.dirname(candidates[0])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _version_key(path: str) -> float:
    try:
        return float(path.split("/")[-3])
    except ValueError:
        return 0.0


class PostgresCluster:
    """`PostgresCluster().start()` → `.url`; `.stop()` removes everything.

    initdb refuses to run as root, so as root the cluster is owned by the
    `postgres` system user (the Debian package creates it) and every server
    command runs through `runuser`.
    """

    def __init__(self, bindir: str, dbname: str = "routeplane_test") -> None:
        self.bindir = bindir
        self.dbname = dbname
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        # As root the server runs as `postgres`, which must be able to reach the directory:
        # /tmp, not a $TMPDIR under root's home.
        self.dir = tempfile.mkdtemp(prefix="routeplane-pg-", dir="/tmp" if self.user else None)
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "server.log")
        self.started = False

    @property
    def url(self) -> str:
        role = self.user or _current_user()
        return f"postgresql://{role}@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, argv: List[str], timeout: float = 60.0) -> str:
        if self.user:
            argv = ["runuser", "-u", self.user, "--"] + argv
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout.decode(errors='replace')}"
                               f"\n{self._server_log()}")
        return proc.stdout.decode(errors="replace")

    def start(self) -> "PostgresCluster":
        os.makedirs(self.sock)
        if self.user:
            subprocess.run(["chown", "-R", f"{self.user}:", self.dir], check=True, timeout=30)
        bin_ = lambda name: os.path.join(self.bindir, name)  # noqa: E731
        self._run([bin_("initdb"), "-D", self.data, "-A", "trust", "-U", self.user or _current_user(),
                   "-E", "UTF8", "--no-sync", "--no-instructions"])
        opts = (f"-p {self.port} -k {self.sock} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        self._run([bin_("pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start"])
        self.started = True
        deadline = time.monotonic() + 30
        while True:
            try:
                self._run([bin_("createdb"), "-h", self.sock, "-p", str(self.port), self.dbname], timeout=30)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self

    def restart(self) -> None:
        """A fast restart: every client session is cut, as in a failover or a server upgrade."""
        opts = (f"-p {self.port} -k {self.sock} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts, "-m", "fast",
                   "-w", "-t", "60", "restart"])

    def pause(self) -> None:
        """Stop the server but keep its data (an outage); `resume()` starts it again on the same port."""
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"])
        self.started = False

    def resume(self) -> None:
        opts = (f"-p {self.port} -k {self.sock} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60",
                   "start"])
        self.started = True

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this cluster; returns its URL."""
        self._run([os.path.join(self.bindir, "createdb"), "-h", self.sock, "-p", str(self.port), name], timeout=30)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        try:
            if self.started:
                self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "-t", "60",
                           "stop"])
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)

    def _server_log(self) -> str:
        try:
            with open(self.log, "rb") as fh:
                return fh.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""


def _current_user() -> str:
    import getpass

    return getpass.getuser()
