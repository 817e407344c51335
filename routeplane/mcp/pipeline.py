"""The MCP pipeline: pre-request hooks, aggregation or pass-through, route hooks, upstream call, observers."""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..auth.globs import model_allowed
from ..hooks.mcp import MCPDecision, MCPDenial, MCPPreRequestHook, MCPRouteHook
from ..observers import ObserverDispatcher
from .catalog import KINDS, Catalog
from .context import MCPCallEvent, MCPRequestContext, MCPTarget
from .inflight import Flight, Flights
from .jsonrpc import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, MCPError
from .settings import MCPGatewaySettings, MCPServerConfig
from .upstream import LIST_CHANGED, Upstream, UpstreamFailure, make_upstream

log = logging.getLogger("routeplane.mcp")

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
ROUTED = ("tools/call", "prompts/get", "resources/read")


class ToolAllowlistHook(MCPPreRequestHook):
    """The caller's `tools` allowlist (globs, as `models` for models) on `tools/call`; absent = every tool.

    Patterns match the aggregate name (`<prefix><tool>`) on both endpoints, so
    one policy means the same on `/mcp` and `/mcp/<server>`.
    """

    def check(self, ctx: MCPRequestContext) -> MCPDecision:
        if ctx.method != "tools/call":
            return MCPDecision.allow()
        patterns = tool_patterns(ctx.identity)
        name = ctx.metadata.get("mcp.aggregate_name") or ctx.name or ""
        if patterns is None or model_allowed(patterns, name):
            return MCPDecision.allow()
        return MCPDecision.deny(MCPDenial.forbidden(f"Tool {name!r} is not allowed for this credential."))


def tool_patterns(identity: Any) -> Optional[Tuple[str, ...]]:
    """The identity's `tools` claim (a JWT claim), or None: no claim allows every tool."""
    claims = getattr(identity, "claims", None) or {}
    value = claims.get("tools")
    if value is None:
        return None
    return tuple(value)


def client_meta(meta: Any) -> Dict[str, Any]:
    """The client's request `_meta` that may go upstream, `progressToken` included (the caller swaps it).

    Left out: keys under a prefix the spec reserves for MCP (a label `modelcontextprotocol` or `mcp`, as
    in `io.modelcontextprotocol/protocolVersion`): they describe the client's own connection to the
    gateway (its era, capabilities, log level), while the gateway speaks to upstreams in its own
    session; and `routeplane/…`, the gateway's own namespace.
    """
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items() if isinstance(k, str) and not _gateway_meta_key(k)}


def _gateway_meta_key(key: str) -> bool:
    prefix, slash, _ = key.partition("/")
    if not slash:
        return False
    labels = prefix.lower().split(".")
    return labels[0] == "routeplane" or any(label in ("modelcontextprotocol", "mcp") for label in labels)


class MCPPipeline:
    """One worker's MCP gateway: upstream connections (lazy), list caches, hooks and call counters."""

    def __init__(self, servers: Mapping[str, MCPServerConfig], settings: MCPGatewaySettings,
                 pre_request: Sequence[MCPPreRequestHook], route: Sequence[MCPRouteHook],
                 observers: ObserverDispatcher, cursor_key: Callable[[], bytes],
                 upstream_factory: Callable[..., Upstream] = make_upstream) -> None:
        self.servers = {sid: s for sid, s in servers.items() if s.enabled}
        self.settings = settings
        self.pre_request = tuple(pre_request)
        self.route = tuple(route)
        self.observers = observers
        self._factory = upstream_factory
        self._upstreams: Dict[str, Upstream] = {}
        self._lock = threading.Lock()
        self.catalog = Catalog(self.servers, self.upstream, settings.list_cache_seconds, settings.page_size,
                               cursor_key, settings.list_deadline_seconds)
        self._counts: "collections.Counter[Tuple[str, str, str]]" = collections.Counter()
        self._counts_lock = threading.Lock()
        self.flights = Flights()

    # --- upstreams --------------------------------------------------------------

    def upstream(self, server: str) -> Upstream:
        up = self._upstreams.get(server)
        if up is None:
            with self._lock:
                up = self._upstreams.get(server)
                if up is None:
                    up = self._factory(self.servers[server], self._notified)
                    self._upstreams[server] = up
        return up

    def _notified(self, server: str, method: str, params: Dict[str, Any]) -> None:
        kinds = LIST_CHANGED.get(method)
        if kinds:
            log.info("MCP server %r: %s; its cached lists are dropped", server, method)
            self.catalog.invalidate(server, kinds)

    def close(self) -> None:
        self.catalog.close()
        with self._lock:
            ups, self._upstreams = list(self._upstreams.values()), {}
        for up in ups:
            try:
                up.close()
            except Exception:
                log.exception("closing MCP upstream %r failed", up.server)

    # --- counters ---------------------------------------------------------------

    def counts(self) -> Dict[str, int]:
        """This worker's routed-call counts, keyed `method|server|outcome` (for /admin/metrics)."""
        with self._counts_lock:
            return {"|".join(k): v for k, v in sorted(self._counts.items())}

    # --- requests ---------------------------------------------------------------

    def servers_for(self, endpoint: Optional[str]) -> List[str]:
        if endpoint is None:
            return list(self.servers)
        return [endpoint]

    def initialize(self, params: Mapping[str, Any], endpoint: Optional[str]) -> Tuple[Dict[str, Any], str]:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise MCPError(INVALID_PARAMS, "Invalid params: initialize needs a protocolVersion string.", 400)
        # Spec: echo the client's version when supported, else answer our latest and let it decide.
        version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        capabilities: Dict[str, Any] = {"tools": {}, "prompts": {}, "resources": {}, "logging": {}}
        info = {"name": "routeplane", "title": "routeplane MCP gateway", "version": "1"}
        result: Dict[str, Any] = {"protocolVersion": version, "capabilities": capabilities, "serverInfo": info}
        if endpoint is None:
            result["instructions"] = ("Tools and prompts of several MCP servers, each named <server prefix><name>: "
                                      + ", ".join(f"{s.prefix}* ({sid})" for sid, s in self.servers.items()))
        else:
            try:  # pass-through: the upstream's own capabilities (change notifications are not forwarded,
                # `completion/complete` is not served: so no `completions`, or clients would call it)
                up = self.upstream(endpoint)
                up.ensure_initialized()
                capabilities = {k: ({} if isinstance(v, dict) else v) for k, v in up.capabilities.items()
                                if k in ("tools", "prompts", "resources", "logging")}
                result["capabilities"] = capabilities
            except UpstreamFailure as exc:
                log.warning("initialize on /mcp/%s: %s", endpoint, exc)
        return result, version

    def handle(self, method: str, params: Dict[str, Any], ctx: MCPRequestContext,
               on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
               flight: Optional[Flight] = None) -> Dict[str, Any]:
        """Answer one request (not initialize): the JSON-RPC result, or raise MCPError.

        With `on_progress`, a routed call's upstream `notifications/progress` are handed to it
        (params with the client's own progressToken) while the call runs. With `flight`, the
        client may cancel a routed call (see `flights`).
        """
        self.admit(method, params, ctx)
        return self.dispatch(method, params, ctx, on_progress, flight)

    def admit(self, method: str, params: Dict[str, Any], ctx: MCPRequestContext) -> None:
        """Validate the request's name/arguments and run the pre-request hooks (raise MCPError to refuse)."""
        if method in ROUTED:
            self._prepare_name(method, params, ctx, self.servers_for(ctx.endpoint))
        self._check(ctx)

    def dispatch(self, method: str, params: Dict[str, Any], ctx: MCPRequestContext,
                 on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
                 flight: Optional[Flight] = None) -> Dict[str, Any]:
        """Answer an admitted request."""
        servers = self.servers_for(ctx.endpoint)
        if method == "ping":
            return {}
        if method == "logging/setLevel":
            return {}  # accepted; upstream log notifications are not relayed (documented)
        if method in KINDS:
            cursor = params.get("cursor")
            if cursor is not None and not isinstance(cursor, str):
                raise MCPError(INVALID_PARAMS, "Invalid params: cursor must be a string.", 200)
            patterns = tool_patterns(ctx.identity) if method == "tools/list" else None
            prefixed = ctx.endpoint is None

            def visible(name: str) -> bool:
                if patterns is None:
                    return True
                aggregate = name if prefixed else self.servers[servers[0]].prefix + name
                return model_allowed(patterns, aggregate)

            return self.catalog.listing(method, servers, prefixed, cursor, visible, ctx.endpoint or "")
        if method in ROUTED:
            return self._routed(method, params, ctx, servers, on_progress, flight)
        raise MCPError(METHOD_NOT_FOUND, f"Method not found: {method}", 200)

    def _prepare_name(self, method: str, params: Dict[str, Any], ctx: MCPRequestContext,
                      servers: List[str]) -> None:
        key = "uri" if method == "resources/read" else "name"
        value = params.get(key)
        if not isinstance(value, str) or not value:
            raise MCPError(INVALID_PARAMS, f"Invalid params: {method} needs a {key!r} string.", 200)
        if method == "tools/call" and "arguments" in params and not isinstance(params["arguments"], dict):
            raise MCPError(INVALID_PARAMS, "Invalid params: 'arguments' must be an object.", 200)
        if method == "prompts/get" and "arguments" in params and not (
                isinstance(params["arguments"], dict) and all(isinstance(v, str) for v in params["arguments"].values())):
            raise MCPError(INVALID_PARAMS, "Invalid params: prompt 'arguments' must map names to strings.", 200)
        if method != "resources/read":
            aggregate = value if ctx.endpoint is None else self.servers[servers[0]].prefix + value
            ctx.metadata["mcp.aggregate_name"] = aggregate

    def _check(self, ctx: MCPRequestContext) -> None:
        for hook in self.pre_request:
            decision = hook.check(ctx)
            if not isinstance(decision, MCPDecision):
                raise MCPError(-32603, "Internal error: an MCP pre-request hook returned no decision.", 500)
            if not decision.allowed:
                d = decision.denial
                assert d is not None
                if ctx.method in ROUTED:
                    self._emit(ctx, None, None, "denied", d.code, d.message)
                raise MCPError(d.code, d.message, d.status, retry_after=d.retry_after)

    def _routed(self, method: str, params: Dict[str, Any], ctx: MCPRequestContext, servers: List[str],
                on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
                flight: Optional[Flight] = None) -> Dict[str, Any]:
        exposed = params["uri" if method == "resources/read" else "name"]
        target: Optional[MCPTarget] = None
        try:
            if method == "resources/read":
                server = servers[0] if ctx.endpoint is not None else self.catalog.owner_of_uri(exposed, servers)
                target = MCPTarget(server, exposed)
            elif ctx.endpoint is not None:
                target = MCPTarget(ctx.endpoint, exposed)
            else:
                target = MCPTarget(*self.catalog.owner_of_name(exposed, servers))
            for hook in self.route:
                target = hook.resolve(target, ctx)
                if not isinstance(target, MCPTarget) or target.server not in self.servers:
                    raise MCPError(-32603, "Internal error: an MCP route hook chose no configured server.", 500)
            upstream_params = dict(params)
            upstream_params["uri" if method == "resources/read" else "name"] = target.name
            meta = client_meta(upstream_params.pop("_meta", None))
            up = self.upstream(target.server)
            client_token = meta.pop("progressToken", None)
            if on_progress is not None and isinstance(client_token, (str, int)):
                # Our own token upstream: clients' tokens could collide on a shared upstream session.
                token = f"rp-{uuid.uuid4().hex}"
                upstream_params["_meta"] = {**meta, "progressToken": token}
                up.listen_progress(token, lambda p: on_progress({**p, "progressToken": client_token}))
                try:
                    result = up.request(method, upstream_params, flight=flight)
                finally:
                    up.listen_progress(token, None)
            else:
                if meta:  # a progressToken whose progress could not be relayed is not sent
                    upstream_params["_meta"] = meta
                result = up.request(method, upstream_params, flight=flight)
        except UpstreamFailure as exc:
            log.warning("%s %r: %s", method, exposed, exc)
            self._emit(ctx, target, exposed, "error", None, str(exc))
            raise exc.to_error() from None
        except MCPError as exc:
            self._emit(ctx, target, exposed, "error", exc.code, exc.message)
            raise
        outcome = "tool_error" if method == "tools/call" and result.get("isError") else "ok"
        if outcome == "tool_error":
            result = up.redact_tool_error(result)
        self._emit(ctx, target, exposed, outcome, None, None)
        return result

    def _emit(self, ctx: MCPRequestContext, target: Optional[MCPTarget], exposed: Optional[str], outcome: str,
              code: Optional[int], message: Optional[str]) -> None:
        event = MCPCallEvent(
            request_id=ctx.request_id, method=ctx.method, server=target.server if target else None,
            name=target.name if target else None, exposed_name=exposed or ctx.name, outcome=outcome,
            latency_ms=round((time.monotonic() - ctx.started) * 1000, 3), account_id=ctx.identity.account_id,
            endpoint=ctx.endpoint, error_code=code, error_message=message)
        with self._counts_lock:
            self._counts[(ctx.method, event.server or "-", outcome)] += 1
        log.info("mcp call method=%s server=%s name=%s outcome=%s latency_ms=%.1f account=%s",
                 event.method, event.server, event.name, outcome, event.latency_ms, event.account_id)
        self.observers.emit("on_call_end", event)


__all__ = ["MCPPipeline", "ToolAllowlistHook", "SUPPORTED_VERSIONS", "INVALID_REQUEST", "client_meta"]
