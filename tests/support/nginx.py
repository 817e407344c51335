"""Runs a real nginx (Debian's package) as a foreground child on a free loopback port, from config text."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, Optional

from tests.support.gateway import free_port  # one port allocator for every child process

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


def nginx_binary() -> Optional[str]:
    for name in NGINX_CANDIDATES:
        path = shutil.which(name) or (name if os.path.isfile(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None




class NginxProcess:
    """`NginxProcess(http_block_text).start()`: every path (pid, logs, temp) lives in a private temp dir.

    `http_body` is the text inside `http { }`; `{port}` in it is replaced by the
    port nginx should listen on (`self.port`), `{dir}` by the temp dir; `files`
    (name → text) are written under `{dir}/files/` first.
    """

    def __init__(self, http_body: str, *, worker_processes: int = 1, port: Optional[int] = None,
                 files: Optional[Dict[str, str]] = None) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (scripts/test-services installs it from Debian's packages)")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="routeplane-nginx-")
        # nginx workers drop to `nobody` when started as root; let them read the dir.
        os.chmod(self.dir, 0o755)
        self.http_body = http_body.replace("{port}", str(self.port)).replace("{dir}", self.dir)
        self.worker_processes = worker_processes
        for name, text in (files or {}).items():  # static files under {dir}/files/
            path = os.path.join(self.dir, "files", name)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
        self.proc: Optional[subprocess.Popen] = None
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "error.log")

    def config_text(self) -> str:
        d = self.dir
        user = "user root root;\n" if os.geteuid() == 0 else ""
        return (
            f"{user}worker_processes {self.worker_processes};\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"  client_body_temp_path {d}/client_body; proxy_temp_path {d}/proxy;\n"
            f"  fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n"
            "  access_log off;\n"
            f"{self.http_body}\n"
            "}\n"
        )

    def start(self, timeout: float = 15.0) -> "NginxProcess":
        with open(self.conf_path, "w") as fh:
            fh.write(self.config_text())
        argv = [self.binary, "-p", self.dir, "-e", self.error_log, "-c", self.conf_path, "-g", "daemon off;"]
        check = subprocess.run(argv + ["-t"], capture_output=True, text=True, timeout=timeout)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the config:\n{check.stderr}\n--- config ---\n{self.config_text()}")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout}s:\n{self.logs()}")

    def pids(self) -> list:
        """The master and its worker processes (for CPU/RSS accounting)."""
        assert self.proc is not None
        return [self.proc.pid] + children_of(self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        try:
            with open(self.error_log, "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> "NginxProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def children_of(pid: int) -> list:
    """Direct child pids of `pid` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []
