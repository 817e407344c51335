"""Runs tests/support/mcp_server.py as a real streamable-HTTP MCP server in a subprocess on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Optional

import requests

from tests.support.gateway import free_port

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_server.py")


class MCPUpstreamProcess:
    def __init__(self, name: str, json_response: bool = False, port: Optional[int] = None) -> None:
        self.name = name
        self.transport = "http-json" if json_response else "http"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 20.0) -> "MCPUpstreamProcess":
        self.proc = subprocess.Popen([sys.executable, SCRIPT, self.name, self.transport, str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"MCP server {self.name} exited with {self.proc.returncode}")
            try:
                with requests.get(self.url, timeout=1, headers={"Accept": "text/event-stream"}) as r:
                    if r.status_code < 500:
                        return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"MCP server {self.name} did not start in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
