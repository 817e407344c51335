"""Self-verifying MCP session ids (HMAC-signed), their secret, and cross-worker revocation via the store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Set

from .jsonrpc import INVALID_REQUEST, MCPError

if TYPE_CHECKING:  # pragma: no cover
    from ..store import Store

log = logging.getLogger("routeplane.mcp")

SECRET_ENV = "ROUTEPLANE_MCP_SESSION_SECRET"
_PREFIX = "rpmcp1"


@dataclass(frozen=True)
class MCPSession:
    """What a verified session id says: who opened it, on which endpoint, at which protocol version."""

    key: str  # public handle (hash of the nonce): logs, revocation, observers
    protocol_version: str
    account: str  # a hash of the account id it was opened by
    endpoint: str  # "" = aggregate /mcp, else the server of /mcp/<server>
    issued_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def account_tag(account_id: Optional[str]) -> str:
    return hashlib.sha256((account_id or "").encode("utf-8")).hexdigest()[:16]


class SessionSigner:
    """Mints and verifies `Mcp-Session-Id`s any worker can check without shared memory.

    An id is `rpmcp1.<payload>.<hmac>`: the payload (random nonce, negotiated
    version, account tag, endpoint, issue time) is signed with the gateway's
    session secret, so a worker that never saw the session accepts it and a
    forged or altered id is 404 (spec: unknown session). Termination (DELETE)
    is the only shared state: a row in the store's `mcp_revoked_sessions`.
    """

    def __init__(self, secret_source: "SecretSource", ttl_seconds: int, store: Optional["Store"] = None) -> None:
        self._secret = secret_source
        self.ttl = ttl_seconds
        self._store = store
        self._revoked: Set[str] = set()  # this worker's own deletes (and cached store hits)
        self._lock = threading.Lock()

    def mint(self, protocol_version: str, account_id: Optional[str], endpoint: Optional[str]) -> str:
        payload = {"n": _b64(secrets.token_bytes(16)), "v": protocol_version, "a": account_tag(account_id),
                   "e": endpoint or "", "t": int(time.time())}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"{_PREFIX}.{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret.get(), f"{_PREFIX}.{body}".encode("ascii"), hashlib.sha256).digest())

    def verify(self, session_id: str, account_id: Optional[str], endpoint: Optional[str]) -> MCPSession:
        """The session, or MCPError 404 (unknown, forged, expired, terminated, or another caller's)."""
        gone = MCPError(INVALID_REQUEST, "Session not found", 404)
        parts = session_id.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX or len(session_id) > 512 or not session_id.isascii():
            raise gone
        if not hmac.compare_digest(self._sign(parts[1]), parts[2]):
            raise gone
        try:
            payload = json.loads(_unb64(parts[1]))
            session = MCPSession(key=hashlib.sha256(payload["n"].encode("ascii")).hexdigest()[:32],
                                 protocol_version=str(payload["v"]), account=str(payload["a"]),
                                 endpoint=str(payload["e"]), issued_at=float(payload["t"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise gone from None
        if session.issued_at + self.ttl < time.time():
            raise gone
        # A session belongs to the caller that opened it and to its endpoint.
        if session.account != account_tag(account_id) or session.endpoint != (endpoint or ""):
            raise gone
        if self.is_revoked(session.key):
            raise gone
        return session

    def revoke(self, session: MCPSession) -> None:
        with self._lock:
            self._revoked.add(session.key)
        if self._store is None:
            return
        p = self._store.param
        try:
            self._store.execute(f"DELETE FROM mcp_revoked_sessions WHERE expires_at < {p}", (time.time(),))
            self._store.execute(f"INSERT INTO mcp_revoked_sessions (session_key, expires_at) VALUES ({p}, {p})",
                                (session.key, session.issued_at + self.ttl))
        except Exception as exc:  # noqa: BLE001 - the DELETE still ends the session on this worker
            log.warning("recording the end of MCP session %s in the store failed: %s", session.key, exc)

    def is_revoked(self, key: str) -> bool:
        if key in self._revoked:
            return True
        if self._store is None:
            return False
        try:
            rows = self._store.execute(
                f"SELECT 1 FROM mcp_revoked_sessions WHERE session_key = {self._store.param}", (key,))
        except Exception as exc:  # noqa: BLE001 - the store is down: sessions are not credentials, serve on
            log.warning("checking MCP session revocation failed: %s", exc)
            return False
        if rows:
            with self._lock:
                self._revoked.add(key)
        return bool(rows)


class SecretSource:
    """The HMAC key of session ids, resolved once per worker, in this order:

    1. `mcp.session_secret` in the config; 2. `$ROUTEPLANE_MCP_SESSION_SECRET`;
    3. the random secret the MCP plugin's migration wrote to the store
       (`mcp_gateway_secret`), shared by every worker and host on that store;
    4. none of those: a random per-process secret, with a warning (sessions then
       only work with one worker).
    """

    def __init__(self, configured: Optional[str], store: Optional["Store"]) -> None:
        self._configured = configured
        self._store = store
        self._value: Optional[bytes] = None
        self._fallback: Optional[bytes] = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self.origin = ""

    def get(self) -> bytes:
        if self._value is not None:
            return self._value
        with self._lock:
            if self._value is None:
                if self._fallback is not None and time.monotonic() < self._retry_at:
                    return self._fallback
                value = self._resolve()
                if self.origin == "process" and self._store is not None:
                    # The store failed: serve with a per-process key for now and ask it again in a
                    # few seconds (sessions minted meanwhile get 404 elsewhere and re-initialize).
                    self._fallback = self._fallback or value
                    self._retry_at = time.monotonic() + 5.0
                    return self._fallback
                self._value = value
            return self._value

    def _resolve(self) -> bytes:
        if self._configured:
            self.origin = "config"
            return self._configured.encode("utf-8")
        env = os.environ.get(SECRET_ENV)
        if env:
            self.origin = "env"
            return env.encode("utf-8")
        if self._store is not None:
            try:
                rows = self._store.execute("SELECT secret FROM mcp_gateway_secret WHERE id = 1")
                if rows and rows[0][0]:
                    self.origin = "store"
                    return str(rows[0][0]).encode("utf-8")
            except Exception as exc:  # noqa: BLE001
                log.warning("reading the MCP session secret from the store failed: %s", exc)
        log.warning("no MCP session secret (mcp.session_secret, $%s or the store): using a per-process one; "
                    "MCP sessions will not survive a restart nor move between workers", SECRET_ENV)
        self.origin = "process"
        return secrets.token_bytes(32)


def describe(session: MCPSession) -> Dict[str, Any]:
    return {"session": session.key, "protocol_version": session.protocol_version}
