"""Frozen event snapshots handed to observers (they run on other threads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

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
