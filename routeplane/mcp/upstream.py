"""Upstream MCP connections: the shared client handshake, failure types, and the transport factory."""

from __future__ import annotations

import itertools
import logging
import re
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..protocols.base import scrub
from .inflight import Flight, Runners, cancelled_error
from .jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, UPSTREAM_UNAVAILABLE, MCPError
from .settings import MCPServerConfig

log = logging.getLogger("routeplane.mcp")

_CREDENTIAL_NAME = re.compile(r"key|token|secret|passw|auth|cred|cookie", re.IGNORECASE)

CLIENT_PROTOCOL_VERSION = "2025-11-25"
CLIENT_INFO = {"name": "routeplane", "version": "1"}

# notification method -> the list kinds it invalidates
LIST_CHANGED = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "resources/templates"),
}


class UpstreamFailure(Exception):
    """The upstream could not answer (down, died, timed out, spoke garbage). The message names only the server."""

    def __init__(self, server: str, reason: str, timeout: bool = False) -> None:
        super().__init__(f"upstream MCP server {server!r} {reason}")
        self.server = server
        self.reason = reason
        self.timeout = timeout

    def to_error(self) -> MCPError:
        status = 504 if self.timeout else 502
        return MCPError(UPSTREAM_UNAVAILABLE, str(self), status, data={"server": self.server})


class Upstream(ABC):
    """One upstream MCP server as seen by this worker: a lazily initialized client connection.

    `request()` returns the JSON-RPC result, raises MCPError for a JSON-RPC
    error the upstream answered (passed through, a code that is not a JSON-RPC
    error code made one), UpstreamFailure otherwise.
    Safe to call from many threads.
    """

    def __init__(self, config: MCPServerConfig, on_notification: Callable[[str, str, Dict[str, Any]], None]) -> None:
        self.config = config
        self.server = config.id
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._init_lock = threading.Lock()
        self._initialized = False
        self.capabilities: Dict[str, Any] = {}
        self.server_info: Dict[str, Any] = {}
        self.protocol_version = CLIENT_PROTOCOL_VERSION
        self._progress: Dict[str, Callable[[Dict[str, Any]], None]] = {}
        self._progress_lock = threading.Lock()
        self._secrets = _credential_values(config)
        self._runners = Runners(f"mcp-call-{self.server}")

    @property
    def handshake_timeout(self) -> float:
        return self.config.timeout

    def next_id(self) -> int:
        return next(self._ids)

    def request(self, method: str, params: Optional[Dict[str, Any]] = None,
                timeout: Optional[float] = None, flight: Optional[Flight] = None) -> Dict[str, Any]:
        """The call's result; with `flight`, a client's cancel forwards to this upstream and ends the wait."""
        self.ensure_initialized()
        return self._call(method, params, timeout, flight)

    def ensure_initialized(self) -> None:
        if self._initialized:
            return
        with self._init_lock:
            if not self._initialized:
                self._handshake()

    def _handshake(self) -> None:
        # Until it succeeds the upstream is not initialized: a re-initialize that fails (the upstream
        # restarted and is not answering yet) must be tried again by the next request, not leave this
        # worker sending requests without a session for good.
        self._initialized = False
        result = self._exchange({"jsonrpc": "2.0", "id": self.next_id(), "method": "initialize", "params": {
            "protocolVersion": CLIENT_PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}},
            self.handshake_timeout, initializing=True)
        result = _result_of(self.server, result, self._secrets)
        capabilities, info, version = (result.get(k) for k in ("capabilities", "serverInfo", "protocolVersion"))
        capabilities = {} if capabilities is None else capabilities
        if not isinstance(capabilities, dict):
            raise UpstreamFailure(self.server, "answered initialize without a capabilities object")
        self.capabilities = capabilities
        self.server_info = info if isinstance(info, dict) else {}
        self.protocol_version = version if isinstance(version, str) and version else CLIENT_PROTOCOL_VERSION
        self._send_notification("notifications/initialized")
        self._initialized = True

    def reset(self) -> None:
        """Forget the upstream session: the next request initializes again."""
        self._initialized = False

    def _call(self, method: str, params: Optional[Dict[str, Any]], timeout: Optional[float],
              flight: Optional[Flight] = None) -> Dict[str, Any]:
        message: Dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id(), "method": method}
        if params is not None:
            message["params"] = params
        timeout = timeout or self.config.timeout
        if flight is None:
            return _result_of(self.server, self._exchange(message, timeout), self._secrets)
        if not flight.bind(self, message["id"]):
            raise cancelled_error()  # cancelled before it was sent: never sent
        try:
            response = self._exchange_cancellable(message, timeout, flight)
        except (UpstreamFailure, MCPError):
            if flight.cancelled:
                raise cancelled_error() from None
            raise
        finally:
            flight.unbind()
        if flight.cancelled:  # spec: a cancelled request's late answer is not sent on
            raise cancelled_error()
        return _result_of(self.server, response, self._secrets)

    def _exchange_cancellable(self, message: Dict[str, Any], timeout: float, flight: Flight) -> Dict[str, Any]:
        """`_exchange`, returning (with an UpstreamFailure) as soon as the client cancels the call.

        The exchange runs on a pooled thread, so the request's own thread can stop
        waiting while the upstream finishes (or times out) on its own.
        """
        outcome: Dict[str, Any] = {}

        def exchange() -> None:
            try:
                outcome["response"] = self._exchange(message, timeout)
            except BaseException as exc:  # handed to the waiting thread, which raises it
                outcome["error"] = exc
            finally:
                flight.wake.set()

        self._runners.run(exchange)
        flight.wake.wait()
        if "error" in outcome:
            raise outcome["error"]
        if "response" not in outcome:
            raise UpstreamFailure(self.server, "was not waited for: the client cancelled the call")
        return outcome["response"]

    def cancel(self, upstream_id: Any, reason: Optional[str]) -> None:
        """Forward a client's cancel of the request this upstream knows as `upstream_id` (mcp.md §11)."""
        params: Dict[str, Any] = {"requestId": upstream_id}
        if reason:
            params["reason"] = reason
        try:
            self._send_notification("notifications/cancelled", params)
        except UpstreamFailure as exc:  # best effort: the call has stopped being waited for either way
            log.info("forwarding a cancel to %s failed: %s", self.server, exc)

    def redact_tool_error(self, result: Dict[str, Any]) -> Dict[str, Any]:
        """A `tools/call` result with `isError: true`, its content blocks (every string but base64 payloads:
        text, an embedded resource's text and uri, a resource link) and `structuredContent` scrubbed of the
        credentials the gateway sent this server, as its JSON-RPC errors are (a successful result is the
        tool's own and is never touched)."""
        out = dict(result)
        content = result.get("content")
        if isinstance(content, list):
            out["content"] = [_scrub_block(block, self._secrets) for block in content]
        if "structuredContent" in result:
            out["structuredContent"] = _scrub(result["structuredContent"], self._secrets)
        return out

    def listen_progress(self, token: str, listener: Optional[Callable[[Dict[str, Any]], None]]) -> None:
        """Route `notifications/progress` carrying `token` to `listener` (None: stop)."""
        with self._progress_lock:
            if listener is None:
                self._progress.pop(token, None)
            else:
                self._progress[token] = listener

    def notified(self, method: str, params: Dict[str, Any]) -> None:
        """A notification the upstream sent: progress goes to its request's listener, list_changed
        invalidates caches, the rest is dropped."""
        if not isinstance(params, dict):  # garbage from the upstream: never an exception in a reader
            params = {}
        if method == "notifications/progress":
            with self._progress_lock:
                listener = self._progress.get(str(params.get("progressToken")))
            if listener is not None:
                try:
                    listener(params)
                except Exception:
                    log.exception("relaying progress from %s failed", self.server)
            return
        try:
            self._on_notification(self.server, method, params)
        except Exception:
            log.exception("handling notification %s from %s failed", method, self.server)

    @abstractmethod
    def _exchange(self, message: Dict[str, Any], timeout: float, initializing: bool = False) -> Dict[str, Any]:
        """Send one request; return the upstream's JSON-RPC response object."""

    @abstractmethod
    def _send_notification(self, method: str, params: Optional[Dict[str, Any]] = None) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


def _credential_values(config: MCPServerConfig) -> Tuple[str, ...]:
    """The gateway-held credentials an upstream could echo in an error: its header values (and the token
    of `Bearer <token>`) and its credential-named env values, longest first."""
    values = set()
    for value in config.headers.values():
        values.update((value, value.split(" ", 1)[-1]))
    values.update(v for k, v in config.env.items() if _CREDENTIAL_NAME.search(k))
    return tuple(sorted((v for v in values if len(v) >= 8), key=len, reverse=True))


def _scrub(value: Any, secrets: Sequence[str], depth: int = 0) -> Any:
    """`value` (an upstream's error message or data) without the gateway's own credentials in any string."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "[redacted]")
        return scrub(value)
    if depth > 32:  # deeper than any honest error's data: dropped rather than walked
        return None
    if isinstance(value, dict):
        return {_scrub(str(k), secrets, depth + 1): _scrub(v, secrets, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets, depth + 1) for v in value]
    return value


# Base64 payloads of content blocks (image/audio `data`, an embedded resource's `blob`): no credential is
# quoted in them, and rewriting a run of them would corrupt the file.
_BINARY_FIELDS = frozenset({"data", "blob"})


def _scrub_block(block: Any, secrets: Sequence[str]) -> Any:
    """A content block (or an embedded resource) with every string scrubbed but its base64 payload."""
    if not isinstance(block, dict):
        return block
    return {k: v if k in _BINARY_FIELDS else _scrub_block(v, secrets) if k == "resource" else _scrub(v, secrets)
            for k, v in block.items()}


def _result_of(server: str, response: Dict[str, Any], secrets: Sequence[str] = ()) -> Dict[str, Any]:
    if "error" in response:
        err = response.get("error")
        if not isinstance(err, dict):
            raise UpstreamFailure(server, "answered a malformed JSON-RPC error")
        # The upstream's own JSON-RPC error is passed through (code, message, data), with the server
        # named, but never the credentials the gateway sent it (an upstream may quote a rejected one).
        message = _scrub(str(err.get("message") or "error"), secrets)[:500]
        data = _scrub(err.get("data"), secrets)
        raise MCPError(_error_code(err.get("code"), message), message, 200, data=data)
    result = response.get("result")
    if not isinstance(result, dict):
        raise UpstreamFailure(server, "answered without a result object")
    return result


_SAYS_INVALID_PARAMS = re.compile(r"invalid (param|argument)|missing (required )?argument|required argument"
                                  r"|unknown (tool|prompt)", re.IGNORECASE)


def _error_code(code: Any, message: str) -> int:
    """The upstream's error code, or one a client can act on when it is not a JSON-RPC error code.

    The Python SDK's servers answer `code: 0` for any exception a handler raises
    (a prompt's missing argument, an unknown prompt), which SDK clients cannot tell
    from success codes; the spec gives those -32602 (mcp.md §6), the rest is -32603.
    """
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        return code
    return INVALID_PARAMS if _SAYS_INVALID_PARAMS.search(message) else INTERNAL_ERROR


def internal(message: str) -> MCPError:
    return MCPError(INTERNAL_ERROR, message, 500)


def make_upstream(config: MCPServerConfig,
                  on_notification: Callable[[str, str, Dict[str, Any]], None]) -> Upstream:
    if config.type == "http":
        from .upstream_http import HttpUpstream

        return HttpUpstream(config, on_notification)
    from .upstream_stdio import StdioUpstream

    return StdioUpstream(config, on_notification)
