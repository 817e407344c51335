"""Frozen event snapshots handed to observers (they run on other threads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from ..hooks.language_model import Phase
from .settlement import Attempt
from .types import StreamPart, Usage


@dataclass(frozen=True)
class RequestStartEvent:
    request_id: str
    inbound_protocol: str
    route: str
    streamed: bool
    account_id: Optional[str]
    started_at: float


@dataclass(frozen=True)
class PhaseEvent:
    request_id: str
    phase: Phase
    elapsed_ms: float
    ok: bool = True


@dataclass(frozen=True)
class HopEvent:
    request_id: str
    hop: int  # 0-based attempt number
    provider: str
    model: str
    protocol: str
    ok: Optional[bool] = None  # None on hop start
    latency_ms: Optional[float] = None
    status: Optional[int] = None
    error_type: Optional[str] = None


@dataclass(frozen=True)
class StreamPartEvent:
    request_id: str
    part: StreamPart
    elapsed_ms: float


@dataclass(frozen=True)
class RequestEndEvent:
    request_id: str
    inbound_protocol: str
    route: str
    provider: Optional[str]
    model: Optional[str]
    account_id: Optional[str]
    streamed: bool
    latency_ms: float
    ttft_ms: Optional[float]
    usage: Usage
    cost_micro_usd: Optional[int]
    success: bool
    outcome: str
    error_type: Optional[str]
    status: int
    attempts: Tuple[Attempt, ...]
    # Coarse failure family for dashboards (see ERROR_CLASSES); None on success.
    error_class: Optional[str] = None
    # A copy of ctx.metadata at the end (plugin id -> JSON-able dict), e.g. trace ids.
    metadata: Mapping[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # unix seconds


# transport: no usable answer (connect/read failure, timeout, broken stream); provider: the
# upstream answered with an error status; the rest are the gateway's own refusals.
ERROR_CLASSES = ("transport", "provider", "access_denied", "budget", "rate_limit", "guardrail", "invalid_request",
                 "no_target", "policy", "client_disconnected", "internal")

_KIND_CLASS = {
    "authentication": "access_denied", "permission": "access_denied", "budget": "budget",
    "rate_limit": "rate_limit", "guardrail": "guardrail", "invalid_request": "invalid_request",
    "request_too_large": "invalid_request", "not_found": "invalid_request", "overloaded": "no_target",
    "internal": "internal",
}


def error_class(err: Any, outcome: Optional[str] = None) -> Optional[str]:
    """The ERROR_CLASSES family of a RouteplaneError (or of a deny kind string)."""
    from ..errors import AllTargetsFailed, UpstreamError, UpstreamStatusError

    if outcome == "client_disconnected":
        return "client_disconnected"
    if err is None:
        return None
    if isinstance(err, str):
        return _KIND_CLASS.get(err, "policy")
    if isinstance(err, AllTargetsFailed):
        inner = [error_class(e) for e in err.errors]
        return "transport" if inner and all(c == "transport" for c in inner) else "provider"
    if isinstance(err, UpstreamStatusError):
        return "provider"
    if isinstance(err, UpstreamError):
        return "transport"
    return _KIND_CLASS.get(getattr(err, "kind", ""), "policy")
