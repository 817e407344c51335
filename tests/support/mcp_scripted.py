"""Pieces of the scripted streamable-HTTP MCP servers some tests run in-process (the paths and answers are
each test's own): a handler that answers JSON-RPC, and a server that stays quiet when the gateway hangs up."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict


class JsonRpcHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, msg: Dict[str, Any], result: Dict[str, Any]) -> None:
        self._send(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode())

    def _send(self, status: int, raw: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the gateway hanging up on a hung request is expected here
