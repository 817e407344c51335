"""A raw-socket upstream for tests that control every byte of an answer (its framing, its timing, how the
connection ends): each connection's request is read whole and answered by `answer(conn, reply)`, where
`reply` is what tests/support/wires.py's weather_upstream would send for it."""

from __future__ import annotations

import socket
import threading

from tests.support.upstream import RecordedRequest, Reply
from tests.support.wires import weather_upstream


class RawUpstream:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, conn: socket.socket, reply: Reply) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            head, body = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
            while len(body) < int(headers.get("content-length", 0)):
                body += conn.recv(65536)
            try:
                self.answer(conn, weather_upstream(RecordedRequest("POST", lines[0].split()[1], headers, body)))
            except OSError:
                pass  # the gateway hung up: some scripts provoke it
