"""Hook contracts of the ACP pipeline (pre-request, route, observe) and their decision values; no logic."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from ..acp.context import ACPRequestContext, ACPTarget, ACPTurnEvent


@dataclass(frozen=True)
class ACPDecision:
    """What a pre-request hook decided: `ACPDecision.allow()` or `ACPDecision.deny(message, code)`.

    A denial answers the client's request with the JSON-RPC error `{code, message, data?}`
    (acp.md §6); the request never reaches the agent. The message must be safe to show.
    """

    code: Optional[int] = None
    message: str = ""
    data: Optional[Dict[str, object]] = None

    @property
    def allowed(self) -> bool:
        return self.code is None

    @classmethod
    def allow(cls) -> "ACPDecision":
        return cls()

    @classmethod
    def deny(cls, message: str, code: int = -32000, data: Optional[Dict[str, object]] = None) -> "ACPDecision":
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError("ACPDecision.deny() takes an integer JSON-RPC error code")
        return cls(code, message, data)


class ACPHook:
    """Marker base of every ACP hook contract (not of language-model or MCP hooks)."""


class ACPPreRequestHook(ACPHook, ABC):
    """Fires for each client request relayed to an agent (not `initialize`, not notifications), in order.

    `ctx` (routeplane.acp.context.ACPRequestContext) carries the method, the
    params as the client sent them, the agent the request goes to and the
    client-visible session id (None before `session/new` answers). Returns
    `ACPDecision.allow()` or `.deny(message, code)`: the first deny stops the
    request. A hook that raises denies it too (-32603, fail closed). Runs on
    the relay's reader thread: no slow I/O without a timeout.
    """

    @abstractmethod
    def check(self, ctx: "ACPRequestContext") -> ACPDecision: ...


class ACPRouteHook(ACPHook, ABC):
    """Chooses the agent of a new session: fires on `session/new`, in registration order.

    Gets the target chosen so far (`--agent`, else the config's default agent)
    and the context (`ctx.params["cwd"]`, `ctx.params.get("_meta")`); returns
    the target to use, the same or `target.replace(agent=…)` naming a
    configured agent. Later requests of the session stay on that agent.
    """

    @abstractmethod
    def resolve(self, target: "ACPTarget", ctx: "ACPRequestContext") -> "ACPTarget": ...


class ACPObserveHook(ACPHook):
    """Read-only observer: `on_turn_end(event)` gets a frozen `ACPTurnEvent` after each prompt turn.

    Runs on the bounded observer thread pool (inline in tests); its errors are
    logged and swallowed and can never change or slow the relay.
    """

    def on_turn_end(self, event: "ACPTurnEvent") -> None:
        return None


# kind -> (contract, method names with their arity besides self)
ACP_HOOK_KINDS: Dict[str, Tuple[type, Dict[str, int]]] = {
    "pre_request_hook": (ACPPreRequestHook, {"check": 1}),
    "route_hook": (ACPRouteHook, {"resolve": 2}),
    "observe_hook": (ACPObserveHook, {"on_turn_end": 1}),
}

__all__ = ["ACPDecision", "ACPHook", "ACPObserveHook", "ACPPreRequestHook", "ACPRouteHook", "ACP_HOOK_KINDS"]
