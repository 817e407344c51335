"""A real local attestation server (http.server on a free loopback port) that signs Ed25519 reports, scripted per mode."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from nacl.signing import SigningKey
from routeplane_attestation import canonical_json

GOOD_MEASUREMENT = "a1" * 48
BAD_MEASUREMENT = "b2" * 48
OLD_NONCE = "0f" * 32

# Each mode is one failure (or none) of the report the server answers with.
MODES = ("valid", "wrong_measurement", "replayed_nonce", "stale", "timeout", "http_500")


class AttestationServer:
    """`with AttestationServer() as srv: srv.mode = "stale"; srv.url` — counts requests in `srv.hits`."""

    def __init__(self, seed: bytes = b"\x07" * 32) -> None:
        self.key = SigningKey(seed)
        self.public_hex = self.key.verify_key.encode().hex()
        self.mode = "valid"
        self.delay = 0.0  # seconds before answering (a slow but valid endpoint)
        self.hang = 5.0  # how long "timeout" mode holds the request (released early on close)
        self.hits = 0
        # mode "custom": custom(nonce, model) -> (status, body bytes)
        self.custom: Optional[Callable[[str, str], Tuple[int, bytes]]] = None
        self.nonces: List[str] = []
        self._last_valid: Optional[bytes] = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/attestation/report"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "AttestationServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def wait_hits(self, n: int, timeout: float = 3.0) -> int:
        """`hits` once it reaches n (a handler may still be starting when a verifier gave up), or at the timeout."""
        deadline = time.monotonic() + timeout
        while self.hits < n and time.monotonic() < deadline:
            self._closing.wait(0.01)
        return self.hits

    def signed(self, report: Dict[str, Any]) -> bytes:
        sig = self.key.sign(canonical_json(report)).signature.hex()
        return json.dumps({"report": report, "signature": sig}).encode()

    def report(self, nonce: str, model: str, **changes: Any) -> Dict[str, Any]:
        return dict({"version": 1, "nonce": nonce, "model": model, "timestamp": int(time.time()),
                     "measurement": GOOD_MEASUREMENT, "signing_key": self.public_hex, "tee": "tdx+h100"}, **changes)

    def answer(self, nonce: str, model: str) -> Tuple[int, bytes]:
        mode = self.mode
        if mode == "custom":
            assert self.custom is not None
            return self.custom(nonce, model)
        if mode == "http_500":
            return 500, b'{"error": "attestation service unavailable"}'
        if mode == "timeout":
            self._closing.wait(self.hang)
            return 200, b"{}"
        if mode == "wrong_measurement":
            return 200, self.signed(self.report(nonce, model, measurement=BAD_MEASUREMENT))
        if mode == "stale":
            return 200, self.signed(self.report(nonce, model, timestamp=int(time.time()) - 3600))
        if mode == "replayed_nonce":
            # A genuine answer recorded earlier, replayed verbatim (or one signed for an old nonce).
            return 200, self._last_valid or self.signed(self.report(OLD_NONCE, model))
        body = self.signed(self.report(nonce, model))
        self._last_valid = body
        return 200, body

    def _handler(self) -> type:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = parse_qs(urlsplit(self.path).query)
                nonce, model = query.get("nonce", [""])[0], query.get("model", [""])[0]
                with srv._lock:
                    srv.hits += 1
                    srv.nonces.append(nonce)
                if srv.delay:
                    srv._closing.wait(srv.delay)
                if srv.mode == "trickle":  # headers at once, then one byte per 0.1 s
                    self._trickle()
                    return
                status, body = srv.answer(nonce, model)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the verifier gave up (timeout test)

            def _trickle(self) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    for _ in range(100):
                        if srv._closing.wait(0.1):
                            return
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def provider_section(srv: AttestationServer, **changes: Any) -> Dict[str, Any]:
    """`plugins.attestation.providers.<id>` pinning the server's key and the good measurement."""
    return dict({"url": srv.url, "signing_keys": [srv.public_hex], "measurements": [GOOD_MEASUREMENT],
                 "timeout": 0.5}, **changes)


GATEWAY_CONFIG: Dict[str, Any] = {
    "providers": {"tee": {"protocol": "mock", "confidential": True}, "plain": {"protocol": "mock"}},
    "models": {
        "only-tee": {"targets": [{"provider": "tee", "model": "echo"}]},
        "mixed": {"targets": [{"provider": "tee", "model": "echo"}, {"provider": "plain", "model": "echo"}]},
    },
}
