"""Hook contracts of the language-model pipeline, and the decision values they return.

Contracts only: the loop that calls them is `routeplane.language_model.pipeline`.
Stages run synchronously in registration order:

    pre-request → route → execute (fallback) → stream → settle → observe
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from ..errors import RouteplaneError
from ..language_model.types import Generation, StreamPart

if TYPE_CHECKING:  # pragma: no cover
    from ..language_model.context import PipelineContext
    from ..language_model.events import HopEvent, PhaseEvent, RequestEndEvent, RequestStartEvent, StreamPartEvent
    from ..language_model.routing import RoutingTarget
    from ..language_model.settlement import Settlement


# --- decisions -------------------------------------------------------------


@dataclass(frozen=True)
class DenyReason:
    """Why a pre-request hook refused a request; `status` is what the client gets."""

    kind: str
    message: str
    status: int
    retry_after: Optional[float] = None
    # Machine-readable error code for the wire's error body (e.g. "guardrail_violation").
    code: Optional[str] = None

    @classmethod
    def unauthorized(cls, message: str = "Missing or invalid credentials.") -> "DenyReason":
        return cls("authentication", message, 401)

    @classmethod
    def forbidden(cls, message: str = "Not allowed.") -> "DenyReason":
        return cls("permission", message, 403)

    @classmethod
    def payment_required(cls, message: str = "Budget exhausted.") -> "DenyReason":
        return cls("budget", message, 402)

    @classmethod
    def rate_limited(cls, message: str = "Rate limited.", retry_after: Optional[float] = None) -> "DenyReason":
        return cls("rate_limit", message, 429, retry_after)

    @classmethod
    def guardrail_violation(cls, message: str = "The request violates a guardrail.") -> "DenyReason":
        return cls("guardrail", message, 400, code="guardrail_violation")

    @classmethod
    def bad_request(cls, message: str) -> "DenyReason":
        return cls("invalid_request", message, 400)

    @classmethod
    def custom(cls, status: int, message: str) -> "DenyReason":
        if not 400 <= status <= 599:
            raise ValueError(f"a deny status must be 4xx or 5xx, got {status}")
        return cls("custom", message, status)


class DecisionKind(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    RESPOND = "respond"


@dataclass(frozen=True)
class HookDecision:
    """What a pre-request hook decided: allow, deny(reason) or respond(generation)."""

    kind: DecisionKind
    reason: Optional[DenyReason] = None
    result: Optional[Generation] = None

    @classmethod
    def allow(cls) -> "HookDecision":
        return _ALLOW

    @classmethod
    def deny(cls, reason: DenyReason) -> "HookDecision":
        if not isinstance(reason, DenyReason):
            raise TypeError("HookDecision.deny() takes a DenyReason")
        return cls(DecisionKind.DENY, reason=reason)

    @classmethod
    def respond(cls, result: Generation) -> "HookDecision":
        if not isinstance(result, Generation):
            raise TypeError("HookDecision.respond() takes a Generation")
        return cls(DecisionKind.RESPOND, result=result)


_ALLOW = HookDecision(DecisionKind.ALLOW)


@dataclass(frozen=True)
class FallbackDecision:
    """An execution hook's verdict on a failed attempt: try the next target, or fail now."""

    try_next: bool
    error: Optional[RouteplaneError] = None

    @classmethod
    def next(cls) -> "FallbackDecision":
        return cls(True)

    @classmethod
    def fail(cls, error: Optional[RouteplaneError] = None) -> "FallbackDecision":
        return cls(False, error)


class StreamInterest(enum.Flag):
    """Which stream parts a stream hook wants to see; others bypass it."""

    NONE = 0
    TEXT = enum.auto()
    REASONING = enum.auto()
    TOOL_CALLS = enum.auto()
    USAGE = enum.auto()
    LIFECYCLE = enum.auto()  # response start, finish
    OPAQUE = enum.auto()  # OpaqueBlock: a provider's server-side tool call or result, kept for its own wire
    ALL = TEXT | REASONING | TOOL_CALLS | USAGE | LIFECYCLE | OPAQUE


class StreamActionKind(enum.Enum):
    PASS = "pass"
    REPLACE = "replace"
    DROP = "drop"
    ABORT = "abort"


@dataclass(frozen=True)
class StreamAction:
    kind: StreamActionKind
    parts: Tuple[StreamPart, ...] = ()
    error: Optional[RouteplaneError] = None

    @classmethod
    def pass_(cls) -> "StreamAction":
        return _PASS

    @classmethod
    def replace(cls, parts: Sequence[StreamPart]) -> "StreamAction":
        return cls(StreamActionKind.REPLACE, parts=tuple(parts))

    @classmethod
    def drop(cls) -> "StreamAction":
        return _DROP

    @classmethod
    def abort(cls, error: RouteplaneError) -> "StreamAction":
        return cls(StreamActionKind.ABORT, error=error)


_PASS = StreamAction(StreamActionKind.PASS)
_DROP = StreamAction(StreamActionKind.DROP)


class Phase(enum.Enum):
    PRE_REQUEST = "pre_request"
    ROUTE = "route"
    EXECUTE = "execute"
    STREAM = "stream"
    SETTLE = "settle"


class Outcome(enum.Enum):
    """How a request (or a stream) ended."""

    SUCCESS = "success"
    UPSTREAM_ERROR = "upstream_error"
    ABORTED = "aborted"  # a stream hook aborted it
    CLIENT_DISCONNECTED = "client_disconnected"
    DENIED = "denied"
    ERROR = "error"


# --- contracts -------------------------------------------------------------


class LanguageModelHook:
    """Marker base of every language-model hook contract (not of MCP/ACP hooks)."""


class PreRequestHook(LanguageModelHook, ABC):
    """Fires once per request before routing, in registration order.

    May return `HookDecision.allow()`, `.deny(DenyReason)` (the first deny stops
    the request: no upstream call, no settlement) or `.respond(Generation)`
    (short-circuit: no upstream call; the result is still settled and observed).
    May replace the prompt with `ctx.replace_prompt()`, share values with its
    later stages through `ctx.extensions`, and write the plugin's settlement
    metadata into `ctx.plugin_metadata(plugin_id)`. Must not do slow I/O
    without a timeout.
    """

    @abstractmethod
    def check(self, ctx: "PipelineContext") -> HookDecision: ...


class RouteHook(LanguageModelHook, ABC):
    """Fires once after the routing table resolved the model.

    Returns the (possibly rewritten) ordered chain of targets: drop, reorder,
    add, or override key/base URL. An empty chain ends the request with 503.
    Must not call the upstream.
    """

    @abstractmethod
    def resolve(self, chain: List["RoutingTarget"], ctx: "PipelineContext") -> List["RoutingTarget"]: ...


class ExecutionHook(LanguageModelHook, ABC):
    """Sees each upstream attempt's outcome.

    `on_success(ctx, result)` fires when an attempt succeeded. For a
    non-streaming request `result` is the `Generation`; the hook may return a
    replacement `Generation` (a response check that redacts) or raise a
    RouteplaneError (a response check that blocks: the request is settled as
    failed). For a stream it fires once the upstream's stream reached its
    first content (its opening is held until then, so a failure before it
    can still fall back: language_model/first_content.py), and `result` is
    the tuple `(first_part, iterator)`: the first stream part (normally the
    `ResponseStart`) and the rest of the stream, held parts first, which the hook
    must not consume; its return value is ignored (rewrite streams with a
    `StreamHook`). `on_failure(ctx, error)` fires after a failed attempt and
    returns a `FallbackDecision`: `next()` lets the executor try the next
    target (only if the error is retriable), `fail()` vetoes the fallback.
    Never fires after the first byte reached the client.
    """

    def on_success(self, ctx: "PipelineContext", result: Any) -> Optional[Generation]:
        return None

    def on_failure(self, ctx: "PipelineContext", error: RouteplaneError) -> FallbackDecision:
        return FallbackDecision.next()


class StreamHook(LanguageModelHook, ABC):
    """Sees each canonical stream part before the client does, chained.

    `interest()` selects the parts it gets (others pass untouched).
    `on_part` returns `StreamAction.pass_()` (the default), `.replace(parts)`,
    `.drop()` or `.abort(error)` (the client gets its wire's error frame); a
    hook that only needs the end (`interest()` returning `NONE`) overrides
    just `on_stream_end(ctx, outcome)`, which fires exactly once per stream,
    whatever the outcome, including a client that disconnected. Runs inline
    on the request's thread: keep it fast.
    """

    def interest(self) -> StreamInterest:
        return StreamInterest.ALL

    def on_part(self, ctx: "PipelineContext", part: StreamPart) -> StreamAction:
        return StreamAction.pass_()

    def on_stream_end(self, ctx: "PipelineContext", outcome: Outcome) -> None:
        return None


class SettlementRecorder(LanguageModelHook, ABC):
    """Receives the immutable settlement of every request that was served.

    Fires exactly once per request, on success and on failure (never after a
    pre-request deny), from the response's close path, so a client that
    disconnects mid-stream is settled too. Errors are logged and counted;
    they never reach the client.
    """

    @abstractmethod
    def record(self, settlement: "Settlement") -> None: ...


class ObserveHook(LanguageModelHook):
    """Read-only observer of frozen event snapshots, run on a bounded thread pool.

    Its errors are logged, counted and swallowed; it can never change or slow
    a response. Override only the methods you need.
    """

    def on_request_start(self, event: "RequestStartEvent") -> None:
        return None

    def after_phase(self, event: "PhaseEvent") -> None:
        return None

    def on_hop_start(self, event: "HopEvent") -> None:
        return None

    def on_hop_end(self, event: "HopEvent") -> None:
        return None

    def on_stream_part(self, event: "StreamPartEvent") -> None:
        return None

    def on_request_end(self, event: "RequestEndEvent") -> None:
        return None


HOOK_KINDS = {
    "pre_request_hook": (PreRequestHook, ("check",)),
    "route_hook": (RouteHook, ("resolve",)),
    "execution_hook": (ExecutionHook, ("on_success", "on_failure")),
    "stream_hook": (StreamHook, ("on_part", "on_stream_end", "interest")),
    "settlement_recorder": (SettlementRecorder, ("record",)),
    "observe_hook": (
        ObserveHook,
        ("on_request_start", "after_phase", "on_hop_start", "on_hop_end", "on_stream_part", "on_request_end"),
    ),
}

