"""Runs the real gateway under a real gunicorn, on a free loopback port, from a config dict."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Mapping, Optional, Set, Tuple

import requests
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# free_port() hands out ports below the kernel's ephemeral range (where bind(0), client sockets and the
# fake upstreams' listeners live), from a slice of its own per pytest-xdist worker: a port is only
# reserved until the child process (gunicorn, nginx, PostgreSQL) binds it, and a port the kernel gave
# one test process in that gap could go to another's child; the first child's health check would then
# reach the second's server. Within a process no port is handed out twice.
_PORTS_LOW = 20000
_issued: Set[int] = set()
_ports_lock = threading.Lock()
_ports_random = random.Random()


def _port_slice() -> Optional[Tuple[int, int]]:
    """This process's slice of the ports outside the kernel's ephemeral range; None if there is no room."""
    eph_low, eph_high = 32768, 60999
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            eph_low, eph_high = (int(v) for v in fh.read().split()[:2])
    except (OSError, ValueError):
        pass
    if eph_low - _PORTS_LOW >= 2000:
        low, high = _PORTS_LOW, eph_low
    elif 65536 - (eph_high + 1) >= 2000:
        low, high = eph_high + 1, 65536
    else:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    span = (high - low) // count
    return low + (index % count) * span, low + (index % count + 1) * span


def free_port() -> int:
    """A loopback port nothing listens on, for a child process to bind (see above)."""
    chosen = _port_slice()
    low, high = chosen or (0, 0)
    with _ports_lock:
        for _ in range(500 if chosen else 0):
            port = _ports_random.randrange(low, high)
            if port in _issued:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _issued.add(port)
            return port
    with socket.socket() as s:  # no room outside the ephemeral range, or the slice is used up: the kernel chooses
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """`with GatewayProcess(config) as gw: requests.get(gw.url + "/health")`."""

    def __init__(self, config: Optional[Dict[str, Any]] = None, *, workers: int = 1, threads: int = 16,
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None) -> None:
        self.config = config
        self.workers = workers
        self.threads = threads
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self._dir = tempfile.mkdtemp(prefix="routeplane-gw-")
        self.cwd = cwd or self._dir
        self.log_path = os.path.join(self._dir, "gunicorn.log")
        self.config_path: Optional[str] = None

    def start(self, timeout: float = 30.0) -> "GatewayProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
        if self.config is not None:
            self.config_path = os.path.join(self._dir, "routeplane.yaml")
            self.write_config(self.config)
            env["ROUTEPLANE_CONFIG"] = self.config_path
        env.update({
            "ROUTEPLANE_LISTEN": f"127.0.0.1:{self.port}",
            "ROUTEPLANE_WORKERS": str(self.workers),
            "ROUTEPLANE_THREADS": str(self.threads),
            "PYTHONUNBUFFERED": "1",
            # A client's idle keep-alive connection held each stop 2 s (gthread's stop linger); the
            # tests of that behaviour set it themselves.
            "ROUTEPLANE_STOP_KEEPALIVE_LINGER": "0.1",
        })
        env.update(self.extra_env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:routeplane.gunicorn_conf"],
            cwd=self.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy in {timeout}s:\n{self.logs()}")

    def write_config(self, config: Dict[str, Any]) -> None:
        assert self.config_path is not None
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(config, fh)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def logs(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
