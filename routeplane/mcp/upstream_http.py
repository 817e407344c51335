"""Streamable HTTP upstream client on `requests`: JSON or SSE answers, one upstream session per worker."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional

import requests
import urllib3

from ..protocols.sse import EventTooLarge, SSEParser
from .settings import MCPServerConfig
from .upstream import Upstream, UpstreamFailure, log

MAX_BODY_BYTES = 64 * 1024 * 1024  # one upstream answer; a runaway upstream must not exhaust the worker


class _SessionGone(Exception):
    """The upstream answered 404 to our session id: it restarted or expired the session."""


class HttpUpstream(Upstream):
    """One upstream MCP session per worker process, shared by every downstream session.

    Upstream state is not per user here (gateway-held credentials in
    `headers`; the caller's bearer token is never forwarded, per the MCP
    security rules), so one session per worker is enough. On a 404 the
    session is re-initialized and the request retried once.
    """

    def __init__(self, config: MCPServerConfig, on_notification: Callable[[str, str, Dict[str, Any]], None]) -> None:
        super().__init__(config, on_notification)
        assert config.url is not None
        self.url = config.url
        self._local = threading.local()  # one requests.Session per thread (not documented thread-safe)
        self._sessions: "list[requests.Session]" = []
        self._sessions_lock = threading.Lock()
        self.session_id: Optional[str] = None

    def _http(self) -> requests.Session:
        http = getattr(self._local, "session", None)
        if http is None:
            http = requests.Session()
            self._local.session = http
            with self._sessions_lock:
                self._sessions.append(http)
        return http

    def _headers(self, initializing: bool) -> Dict[str, str]:
        headers = dict(self.config.headers)
        headers.update({"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
        if not initializing:
            if self.session_id:
                headers["Mcp-Session-Id"] = self.session_id
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def _exchange(self, message: Dict[str, Any], timeout: float, initializing: bool = False) -> Dict[str, Any]:
        used = self.session_id
        try:
            return self._post(message, timeout, initializing)
        except _SessionGone:
            if initializing:
                raise UpstreamFailure(self.server, "refused to start a session (HTTP 404)") from None
            with self._init_lock:
                if self.session_id == used:  # another thread may have re-initialized already
                    self._handshake()
            try:
                return self._post(message, timeout, False)
            except _SessionGone:
                raise UpstreamFailure(self.server, "lost its session twice in a row") from None

    def _handshake(self) -> None:
        self.session_id = None
        super()._handshake()

    def _send_notification(self, method: str, params: Optional[Dict[str, Any]] = None) -> None:
        message: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        try:
            self._post(message, self.config.timeout, False)
        except (UpstreamFailure, _SessionGone) as exc:
            log.warning("notification %s to %s failed: %s", method, self.server, exc)

    def _post(self, message: Dict[str, Any], timeout: float, initializing: bool) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        try:
            resp = self._http().post(self.url, data=json.dumps(message).encode("utf-8"),
                                     headers=self._headers(initializing), timeout=(min(timeout, 10.0), timeout),
                                     stream=True, allow_redirects=False)
        except requests.Timeout:
            raise UpstreamFailure(self.server, f"did not answer within {timeout:g}s", timeout=True) from None
        except requests.RequestException as exc:
            raise UpstreamFailure(self.server, f"is unreachable ({type(exc).__name__})") from None
        try:
            return self._read(resp, message, deadline, timeout, initializing)
        except requests.Timeout:
            raise UpstreamFailure(self.server, f"did not answer within {timeout:g}s", timeout=True) from None
        except urllib3.exceptions.ReadTimeoutError:  # from reading the body ourselves (`_chunks`)
            raise UpstreamFailure(self.server, f"did not answer within {timeout:g}s", timeout=True) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            if _read_timed_out(exc):  # requests reports a timeout while reading the body as ConnectionError
                raise UpstreamFailure(self.server, f"did not answer within {timeout:g}s", timeout=True) from None
            raise UpstreamFailure(self.server, f"broke the connection ({type(exc).__name__})") from None
        except EventTooLarge as exc:
            raise UpstreamFailure(self.server, f"sent a stream event over the {exc.limit_text} limit") from None
        except (OSError, ValueError) as exc:  # a socket error while reading
            raise UpstreamFailure(self.server, f"broke the connection ({type(exc).__name__})") from None
        finally:
            resp.close()

    def _read(self, resp: requests.Response, message: Dict[str, Any], deadline: float, timeout: float,
              initializing: bool) -> Dict[str, Any]:
        if 300 <= resp.status_code < 400:
            # Never followed: a redirect would carry the configured credential headers to another
            # host and sidestep the URL checks done on `url` (metadata / private addresses).
            raise UpstreamFailure(self.server, f"answered a redirect (HTTP {resp.status_code}); "
                                  "redirects are not followed")
        if "id" not in message or "method" not in message:  # a notification or a reply: 202, no body
            if resp.status_code == 404 and not initializing and self.session_id:
                raise _SessionGone()
            return {}
        if initializing and resp.status_code < 300:
            self.session_id = resp.headers.get("Mcp-Session-Id") or None
        if resp.status_code == 404 and not initializing and self.session_id:
            raise _SessionGone()
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            raw = bytearray()
            for chunk in self._chunks(resp, deadline, timeout):
                raw += chunk
                if len(raw) > MAX_BODY_BYTES:
                    raise UpstreamFailure(self.server, f"answered more than {MAX_BODY_BYTES} bytes")
            try:
                body = json.loads(bytes(raw))
            except ValueError:
                raise UpstreamFailure(self.server, f"answered invalid JSON (HTTP {resp.status_code})") from None
            if isinstance(body, dict) and ("result" in body or "error" in body):
                if body.get("id") != message["id"] and not (body.get("id") is None and "error" in body):
                    # as on the SSE path: only the answer to this request (or an error it could not tie to one)
                    raise UpstreamFailure(self.server, "answered another request's id")
                return body
            raise UpstreamFailure(self.server, f"answered a non JSON-RPC body (HTTP {resp.status_code})")
        if resp.status_code >= 400:
            raise UpstreamFailure(self.server, f"answered HTTP {resp.status_code}")
        if ctype != "text/event-stream":
            raise UpstreamFailure(self.server, f"answered an unexpected content type {ctype or 'none'!r}")
        parser = SSEParser()
        for chunk in self._chunks(resp, deadline, timeout):
            for event in parser.feed(chunk):
                found = self._event(event.data, message["id"])
                if found is not None:
                    return found
        for event in parser.finish():
            found = self._event(event.data, message["id"])
            if found is not None:
                return found
        raise UpstreamFailure(self.server, "closed its stream before answering")

    def _chunks(self, resp: requests.Response, deadline: float, timeout: float) -> Iterator[bytes]:
        """The body as it arrives, with the deadline checked after every read.

        `iter_content` reads a body without a length or chunking (it ends when the connection
        closes) to its end before yielding, so an upstream trickling bytes would hold the caller
        past any deadline; `read1` returns what one read of the socket brings, and each read
        may wait only for what is left of the deadline, not a whole timeout more.
        """
        sock = _socket_of(resp)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UpstreamFailure(self.server, f"did not answer within {timeout:g}s", timeout=True)
            if sock is not None:
                try:
                    sock.settimeout(left)
                except OSError:  # `Connection: close`: the body is read and http.client closed the socket
                    sock = None
            chunk = resp.raw.read1(65536, decode_content=True)
            if not chunk:
                return
            yield chunk

    def _event(self, data: str, request_id: Any) -> Optional[Dict[str, Any]]:
        if not data.strip():
            return None
        try:
            msg = json.loads(data)
        except ValueError:
            raise UpstreamFailure(self.server, "sent an SSE event that is not JSON") from None
        if not isinstance(msg, dict):
            return None
        if "method" in msg and "id" in msg:
            # A server-to-client request (sampling, elicitation, roots): this gateway offers none of
            # those capabilities, so it answers "method not found" instead of leaving the upstream waiting.
            reply = {"jsonrpc": "2.0", "id": msg["id"],
                     "error": {"code": -32601, "message": "the gateway does not support this request"}}
            threading.Thread(target=self._send_reply, args=(reply,), daemon=True).start()
            return None
        if "method" in msg:
            self.notified(msg["method"], msg.get("params") or {})
            return None
        if msg.get("id") == request_id and ("result" in msg or "error" in msg):
            return msg
        return None

    def _send_reply(self, reply: Dict[str, Any]) -> None:
        try:
            self._post(reply, self.config.timeout, False)
        except Exception as exc:  # best effort: the upstream times its own request out
            log.debug("reply to %s failed: %s", self.server, exc)

    def close(self) -> None:
        self._runners.close()
        if self.session_id:
            try:  # end our upstream session (spec: clients SHOULD DELETE when done)
                self._http().delete(self.url, headers=self._headers(False), timeout=2,
                                   allow_redirects=False).close()
            except requests.RequestException:
                pass
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for http in sessions:
            http.close()


def _socket_of(resp: requests.Response) -> Optional[socket.socket]:
    """The socket the body is read from (urllib3 sets its timeout again for each request). A body
    that ends at close leaves the connection without one: http.client hands it to the response."""
    sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
    if sock is None:  # http.client.HTTPResponse.fp -> BufferedReader -> SocketIO -> socket
        sock = getattr(getattr(getattr(getattr(resp.raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _read_timed_out(exc: BaseException) -> bool:
    """Whether urllib3's read timeout is somewhere in the exception's chain or arguments."""
    seen = 0
    stack = [exc]
    while stack and seen < 16:
        e = stack.pop()
        seen += 1
        if isinstance(e, (urllib3.exceptions.ReadTimeoutError, socket.timeout)):
            return True
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                stack.append(linked)
    return False
