"""Hook contracts of the MCP pipeline (pre-request, route, observe) and their decision values; no logic."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from ..mcp.context import MCPCallEvent, MCPRequestContext, MCPTarget

# JSON-RPC codes of a denial, by HTTP status (-32000…-32019 is implementation-defined, mcp.md §9).
DENY_CODES = {400: -32602, 401: -32001, 402: -32004, 403: -32003, 429: -32029}


@dataclass(frozen=True)
class MCPDenial:
    """Why a request is refused: the HTTP status, the JSON-RPC error code and a message safe for the client."""

    status: int
    message: str
    code: int = -32000
    retry_after: Optional[float] = None

    @classmethod
    def unauthorized(cls, message: str = "Missing or invalid credentials.") -> "MCPDenial":
        return cls(401, message, DENY_CODES[401])

    @classmethod
    def forbidden(cls, message: str) -> "MCPDenial":
        return cls(403, message, DENY_CODES[403])

    @classmethod
    def rate_limited(cls, message: str, retry_after: Optional[float] = None) -> "MCPDenial":
        return cls(429, message, DENY_CODES[429], retry_after)

    @classmethod
    def bad_request(cls, message: str) -> "MCPDenial":
        return cls(400, message, DENY_CODES[400])

    @classmethod
    def custom(cls, status: int, message: str, code: Optional[int] = None) -> "MCPDenial":
        if not 400 <= status <= 599:
            raise ValueError(f"a denial needs a 4xx/5xx status, not {status}")
        return cls(status, message, DENY_CODES.get(status, -32000) if code is None else code)


@dataclass(frozen=True)
class MCPDecision:
    """What a pre-request hook decided: `MCPDecision.allow()` or `MCPDecision.deny(MCPDenial…)`."""

    denial: Optional[MCPDenial] = None

    @property
    def allowed(self) -> bool:
        return self.denial is None

    @classmethod
    def allow(cls) -> "MCPDecision":
        return cls(None)

    @classmethod
    def deny(cls, denial: MCPDenial) -> "MCPDecision":
        if not isinstance(denial, MCPDenial):
            raise TypeError("MCPDecision.deny() takes an MCPDenial")
        return cls(denial)


class MCPHook:
    """Marker base of every MCP hook contract (not of language-model or ACP hooks)."""


class MCPPreRequestHook(MCPHook, ABC):
    """Fires once per JSON-RPC request (not notifications, not `initialize`/`server/discover`), before it
    is answered or routed, in registration order (the built-in tools allowlist first).

    `ctx` (routeplane.mcp.context.MCPRequestContext) carries the method, the
    exposed name (`tools/call` / `prompts/get`: the prefixed name on `/mcp`;
    `resources/read`: the URI), the arguments, the caller's identity and the
    endpoint (`None` = aggregate, else the server name). Returns
    `MCPDecision.allow()` or `.deny(MCPDenial)`: the first deny stops the
    request, which gets a JSON-RPC error with the denial's code at the
    denial's HTTP status. May put values in `ctx.metadata`. Must not call an
    upstream nor do slow I/O without a timeout; runs on the request thread.
    """

    @abstractmethod
    def check(self, ctx: "MCPRequestContext") -> MCPDecision: ...


class MCPRouteHook(MCPHook, ABC):
    """Fires for calls routed to one upstream (`tools/call`, `prompts/get`, `resources/read`), in order.

    Gets the resolved `MCPTarget(server, name)` (upstream server id and the
    upstream's own tool/prompt name or resource URI) and returns the target to
    use: the same, or another (`target.replace(server=…, name=…)`) naming a
    configured server. Raising `routeplane.mcp.jsonrpc.MCPError` ends the
    request with that error. Must not call the upstream itself.
    """

    @abstractmethod
    def resolve(self, target: "MCPTarget", ctx: "MCPRequestContext") -> "MCPTarget": ...


class MCPObserveHook(MCPHook):
    """Read-only observer: `on_call_end(event)` gets a frozen `MCPCallEvent` after each routed call.

    Runs on the bounded observer thread pool (inline in tests); its errors are
    logged and swallowed and can never change or slow a response.
    """

    def on_call_end(self, event: "MCPCallEvent") -> None:
        return None


# kind -> (contract, method names with their arity besides self)
MCP_HOOK_KINDS: Dict[str, Tuple[type, Dict[str, int]]] = {
    "pre_request_hook": (MCPPreRequestHook, {"check": 1}),
    "route_hook": (MCPRouteHook, {"resolve": 2}),
    "observe_hook": (MCPObserveHook, {"on_call_end": 1}),
}

__all__ = ["MCPDecision", "MCPDenial", "MCPHook", "MCPObserveHook", "MCPPreRequestHook", "MCPRouteHook",
           "MCP_HOOK_KINDS", "DENY_CODES"]
