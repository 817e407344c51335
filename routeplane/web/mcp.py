"""MCP streamable HTTP endpoints: `/mcp` (every server, prefixed names) and `/mcp/<server>` (one, native names)."""

from __future__ import annotations

import ipaddress
import json
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional
from urllib.parse import urlsplit

from flask import Blueprint, Response, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..auth.guard import authenticate_request
from ..errors import InvalidRequest
from ..hooks.mcp import DENY_CODES
from ..mcp import modern
from ..mcp.context import MCPRequestContext
from ..mcp.inflight import Flight
from ..mcp.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    MCPError,
    classify,
    result_body,
)
from ..mcp.pipeline import ROUTED, SUPPORTED_VERSIONS, client_meta
from ..protocols.sse import dumps
from .common import parse_json, request_id

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.mcp")

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
STREAM_IDLE_SECONDS = 3600.0


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("mcp", __name__)
    runtime = app.mcp
    limit = app.config.server.max_body_bytes

    @bp.route("/mcp", methods=["POST", "GET", "DELETE"], defaults={"server": None})
    @bp.route("/mcp/<server>", methods=["POST", "GET", "DELETE"])
    def endpoint(server: Optional[str]) -> Response:
        rid = request_id()
        message_id: Any = None
        try:
            _check_origin(app.config.mcp.allowed_origins)
            identity = _authenticate(app)  # first: which server ids exist is not for anyone to probe
            if server is not None and server not in runtime.pipeline.servers:
                raise MCPError(INVALID_REQUEST, f"Unknown MCP server {server!r}.", 404)
            if request.method in ("GET", "HEAD"):  # Flask routes HEAD with GET
                # No server-initiated messages are sent (change notifications only invalidate caches),
                # so there is no standalone stream to open: the spec's 405 allowance.
                raise MCPError(INVALID_REQUEST, "Method Not Allowed: this gateway opens no server-to-client "
                               "stream; use POST.", 405)
            if request.method == "DELETE":
                session = _session(runtime, identity, server, required=True)
                assert session is not None
                runtime.signer.revoke(session)
                return Response(status=204, headers={"x-request-id": rid})
            _check_accept()
            data = _parse(_read_body(limit))
            message_id = _id_of(data)  # a refusal of the message still answers its id when it has a usable one
            message = classify(data)
            version = modern.requested_version(message.params) if message.kind == "request" else None
            if version is not None:  # 2026-07-28: stateless, no session
                return _modern_request(runtime, message, version, identity, server, rid)
            if (message.kind != "request" and not request.headers.get(SESSION_HEADER)
                    and request.headers.get(VERSION_HEADER) in modern.MODERN_VERSIONS):
                return Response(status=202, headers={"x-request-id": rid})
            if message.kind == "request" and message.method == "initialize":
                result, version = runtime.pipeline.initialize(message.params, server)
                sid = runtime.signer.mint(version, identity.account_id, server)
                return _answer(result_body(message.id, result), rid, runtime,
                               {SESSION_HEADER: sid})  # type: ignore[arg-type]
            session = _session(runtime, identity, server, required=True)
            assert session is not None
            if message.kind != "request":
                # Notifications (initialized, cancelled, roots/list_changed) and responses: accepted.
                if message.method == "notifications/cancelled":
                    runtime.pipeline.flights.cancel(session.key, message.params)
                return Response(status=202, headers={"x-request-id": rid})
            ctx = MCPRequestContext(rid, message.method, message.params, identity, dict(request.headers), server,
                                    session.key)
            params = dict(message.params)
            flights = runtime.pipeline.flights
            flight = flights.open(session.key, message.id) if message.method in ROUTED else None
            try:
                if _relays_progress(message.method, params):
                    runtime.pipeline.admit(message.method, params, ctx)  # refusals keep their HTTP status
                    stream = _progress_stream(runtime, message.id, message.method, params, ctx, rid, flight=flight)
                    flight = None  # the stream's work closes it
                    return stream
                result = runtime.pipeline.handle(message.method, params, ctx, flight=flight)
            finally:
                if flight is not None:
                    flights.close(session.key, message.id, flight)
            return _answer(result_body(message.id, result), rid, runtime)  # type: ignore[arg-type]
        except MCPError as err:
            return _error(err, message_id, rid, runtime)
        except Exception:  # never a traceback to the client
            log.exception("MCP request %s failed", rid)
            return _error(MCPError(INTERNAL_ERROR, "Internal error.", 500), message_id, rid, runtime)

    return bp


def _relays_progress(method: str, params: Dict[str, Any]) -> bool:
    """A routed call asking for progress, from a client that takes SSE: answer as a stream."""
    meta = params.get("_meta")
    return (method in ROUTED and isinstance(meta, dict) and isinstance(meta.get("progressToken"), (str, int))
            and _accepts("text/event-stream"))


def _progress_stream(runtime: Any, message_id: Any, method: str, params: Dict[str, Any], ctx: MCPRequestContext,
                     rid: str, finish: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
                     on_error: Optional[Callable[[MCPError], MCPError]] = None,
                     flight: Optional[Flight] = None) -> Response:
    """SSE answer: upstream progress notifications as they come, then the response (mcp.md §2).

    A `flight` (the client may cancel the call) is closed when the call ends."""
    events: "queue.Queue[Optional[bytes]]" = queue.Queue()

    def frame(body: Dict[str, Any]) -> bytes:
        return f"event: message\ndata: {dumps(body)}\n\n".encode("utf-8")

    def on_progress(p: Dict[str, Any]) -> None:
        events.put(frame({"jsonrpc": "2.0", "method": "notifications/progress", "params": p}))

    def work() -> None:
        try:
            result = runtime.pipeline.dispatch(method, params, ctx, on_progress, flight)
            events.put(frame(result_body(message_id, finish(result) if finish else result)))
        except MCPError as err:
            events.put(frame((on_error(err) if on_error else err).body(message_id)))
        except Exception:
            log.exception("MCP request %s failed", rid)
            events.put(frame(MCPError(INTERNAL_ERROR, "Internal error.", 500).body(message_id)))
        finally:
            if flight is not None and ctx.session_key is not None:
                runtime.pipeline.flights.close(ctx.session_key, message_id, flight)
            events.put(None)

    threading.Thread(target=work, name=f"mcp-{rid}", daemon=True).start()

    def body() -> Iterator[bytes]:
        while True:
            try:  # the upstream timeout ends the work long before this bound
                item = events.get(timeout=STREAM_IDLE_SECONDS)
            except queue.Empty:
                yield frame(MCPError(INTERNAL_ERROR, "Internal error: the call produced nothing in time.",
                                     500).body(message_id))
                return
            if item is None:
                return
            yield item

    headers = {"x-request-id": rid, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(body(), status=200, mimetype="text/event-stream", headers=headers)


def _modern_request(runtime: Any, message: Any, version: Any, identity: Any, server: Optional[str],
                    rid: str) -> Response:
    try:
        v = modern.check_version(version, SUPPORTED_VERSIONS)
        modern.check_headers(request.headers, v, message.method, message.params)
        hello, _ = runtime.pipeline.initialize({"protocolVersion": SUPPORTED_VERSIONS[0]}, server)
        if message.method == "server/discover":
            result = modern.discover(hello["capabilities"], hello["serverInfo"], SUPPORTED_VERSIONS)
        elif message.method in modern.REMOVED:
            raise MCPError(METHOD_NOT_FOUND, f"Method not found: {message.method}", 404)
        else:
            params = {k: val for k, val in message.params.items() if k != "_meta"}
            meta = client_meta(message.params.get("_meta"))  # without this era's own keys
            if meta:
                params["_meta"] = meta
            ctx = MCPRequestContext(rid, message.method, params, identity, dict(request.headers), server, None)
            if _relays_progress(message.method, params):
                runtime.pipeline.admit(message.method, params, ctx)
                return _progress_stream(
                    runtime, message.id, message.method, params, ctx, rid,
                    finish=lambda r: modern.decorate(message.method, r, hello["serverInfo"]),
                    on_error=modern.modern_error)
            result = runtime.pipeline.handle(message.method, params, ctx)
        body = result_body(message.id, modern.decorate(message.method, result, hello["serverInfo"]))
        return _answer(body, rid, runtime)
    except MCPError as err:
        raise modern.modern_error(err) from None


def _check_origin(allowed: Any) -> None:
    """DNS-rebinding guard (spec: validate Origin): listed in mcp.allowed_origins, or the request's
    own host when that host is an IP address or `localhost`.

    Under DNS rebinding the attacker's page and its requests name the attacker's
    domain in both `Origin` and `Host` (the domain now resolves to this
    gateway), so "same host as the request" alone proves nothing; a page served
    from a domain name must be listed.
    """
    origin = request.headers.get("Origin")
    if not origin or origin in allowed:
        return
    host = (urlsplit(origin).netloc or "").lower()
    if host and host == (request.host or "").lower() and _not_rebindable(urlsplit(origin).hostname or ""):
        return
    raise MCPError(INVALID_REQUEST, "Forbidden: this Origin may not call the MCP endpoint.", 403)


def _not_rebindable(hostname: str) -> bool:
    """An IP literal or localhost: a name no page can make resolve to this gateway."""
    if hostname == "localhost":
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _authenticate(app: "App") -> Any:
    identity, err = authenticate_request(app, request.headers, request.remote_addr)
    if err is None:
        return identity
    status = getattr(err, "status", 401)
    raise MCPError(DENY_CODES.get(status, -32000), str(getattr(err, "message", None) or err), status,
                   retry_after=getattr(err, "retry_after", None))  # an auth hook's rate limit keeps its Retry-After


def _check_accept() -> None:
    if not request.headers.get("Accept") or (_accepts("application/json") or _accepts("text/event-stream")):
        pass
    else:
        raise MCPError(INVALID_REQUEST, "Not Acceptable: accept application/json and text/event-stream.", 406)
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json":
        raise MCPError(INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json.", 415)


def _parse(body: bytes) -> Any:
    """The gateway's JSON rules (depth, NaN, number range) as on every wire; a refusal is a JSON-RPC parse error."""
    try:
        return parse_json(body)
    except InvalidRequest as err:
        raise MCPError(PARSE_ERROR, f"Parse error: {err.message}", 400) from None


def _read_body(limit: int) -> bytes:
    length = request.content_length
    too_large = MCPError(INVALID_REQUEST, f"Payload Too Large: the limit is {limit} bytes.", 413)
    if length is not None and length > limit:
        raise too_large
    try:
        raw = request.stream.read(limit + 1)
    except RequestEntityTooLarge:
        raise too_large from None
    except ClientDisconnected:
        raise MCPError(INVALID_REQUEST, "The client disconnected before sending the whole body.", 400) from None
    if len(raw) > limit:
        raise too_large
    return raw


def _id_of(data: Any) -> Any:
    """The message's id if it is a usable JSON-RPC id (string or integer), else None."""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _session(runtime: Any, identity: Any, server: Optional[str], required: bool) -> Any:
    sid = request.headers.get(SESSION_HEADER)
    if not sid:
        if required:
            raise MCPError(INVALID_REQUEST, "Bad Request: Missing session ID", 400)
        return None
    session = runtime.signer.verify(sid, identity.account_id, server)
    version = request.headers.get(VERSION_HEADER)
    if version is not None and (version not in SUPPORTED_VERSIONS or version != session.protocol_version):
        raise MCPError(INVALID_REQUEST, f"Bad Request: unsupported or mismatched {VERSION_HEADER} {version!r} "
                       f"(this session negotiated {session.protocol_version}).", 400)
    return session


def _accepts(mimetype: str) -> bool:
    """`Accept` lists the type (or its `type/*`, or `*/*`) with a non-zero quality."""
    kind = mimetype.split("/")[0]
    return any(q > 0 and value in (mimetype, f"{kind}/*", "*/*") for value, q in request.accept_mimetypes)


def _wants_sse(runtime: Any) -> bool:
    if not request.headers.get("Accept"):
        return False
    sse, js = _accepts("text/event-stream"), _accepts("application/json")
    return sse and (runtime.pipeline.settings.prefer_sse or not js)


def _answer(body: Dict[str, Any], rid: str, runtime: Any, headers: Optional[Dict[str, str]] = None,
            status: int = 200) -> Response:
    out = {"x-request-id": rid, **(headers or {})}
    if _wants_sse(runtime) and status == 200:
        out.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        payload = f"event: message\ndata: {dumps(body)}\n\n"
        return Response(payload, status=200, mimetype="text/event-stream", headers=out)
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json",
                    headers=out)


def _error(err: MCPError, message_id: Any, rid: str, runtime: Any) -> Response:
    headers: Dict[str, str] = {}
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if err.status == 405:
        headers["Allow"] = "POST, DELETE"
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(0, int(err.retry_after + 0.999)))
    return _answer(err.body(message_id), rid, runtime, headers, err.status)
