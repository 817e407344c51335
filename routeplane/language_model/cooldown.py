"""Fallback settings and the per-worker circuit breaker that sidelines failing targets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from ..errors import UpstreamError


@dataclass(frozen=True)
class CooldownPolicy:
    """`failures` consecutive retriable failures open a target's breaker for
    `seconds`; then one request probes it (half-open). `failures: 0` turns the
    breaker off (Retry-After is still honoured, see FallbackSettings)."""

    failures: int = 3
    seconds: float = 30.0


@dataclass(frozen=True)
class FallbackSettings:
    """How the execute stage moves along a chain.

    `backoff`: seconds to wait before the 2nd, 3rd, ... hop (the last value
    repeats; empty = fall back at once). `retry_after_max`: an upstream's
    Retry-After sidelines that target for at most this long (0 = ignore
    Retry-After for cooldown).
    """

    backoff: Tuple[float, ...] = ()
    retry_after_max: float = 60.0
    cooldown: CooldownPolicy = field(default_factory=CooldownPolicy)

    def backoff_before(self, hop: int) -> float:
        """The wait before hop number `hop` (0 is the first call: no wait)."""
        if hop <= 0 or not self.backoff:
            return 0.0
        return self.backoff[min(hop, len(self.backoff)) - 1]


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    probe_since: Optional[float] = None  # a half-open probe is in flight since then
    reason: str = ""


@dataclass(frozen=True)
class BreakerState:
    """A read-only view of one target's breaker, for admin views and tests."""

    label: str
    state: str  # "closed" | "open" | "half_open"
    failures: int
    retry_in: float
    reason: str


class CooldownTracker:
    """Per-target breakers of one worker process, keyed by `provider:model`.

    Thread-safe (gthread workers share it). Per worker on purpose: a breaker
    must react within a request or two, which a shared store on the hot path
    cannot do cheaply; each worker learns on its own in a few requests.
    """

    def __init__(self, settings: FallbackSettings = FallbackSettings(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: Dict[str, _Breaker] = {}

    def acquire(self, label: str) -> bool:
        """May this request call the target now? Claims the probe when the breaker is half-open."""
        now = self._clock()
        with self._lock:
            b = self._breakers.get(label)
            if b is None or b.open_until == 0.0:
                return True
            if self._skipped(b, now):
                return False
            b.probe_since = now
            return True

    def would_skip(self, label: str) -> bool:
        """Would a request skip this target now? Claims nothing (dry runs: count_tokens)."""
        now = self._clock()
        with self._lock:
            b = self._breakers.get(label)
            return b is not None and b.open_until != 0.0 and self._skipped(b, now)

    def _skipped(self, b: _Breaker, now: float) -> bool:
        """Open, or half-open with its one probe out. A probe that never reported
        (its thread died) stops blocking others after one period."""
        if now < b.open_until:
            return True
        return b.probe_since is not None and now - b.probe_since < max(self.settings.cooldown.seconds, 1.0)

    def record_success(self, label: str) -> None:
        with self._lock:
            self._breakers.pop(label, None)

    def record_failure(self, label: str, err: UpstreamError) -> None:
        """Count a failed call. Only fallback-worthy failures count; a 4xx means the target is alive."""
        if not err.retriable:
            if err.upstream_status is not None:
                self.record_success(label)
            else:
                self.release(label)
            return
        now = self._clock()
        policy = self.settings.cooldown
        with self._lock:
            b = self._breakers.setdefault(label, _Breaker())
            b.failures += 1
            b.reason = type(err).__name__
            probing, b.probe_since = b.probe_since is not None, None
            until = 0.0
            if policy.failures > 0 and (probing or b.failures >= policy.failures):
                until = now + policy.seconds
            hint = err.retry_after
            if hint is not None and hint > 0 and self.settings.retry_after_max > 0:
                # The upstream said when to come back: do not call it before then (capped). "0" is
                # "now": it must not open the breaker (half-open would let one request at a time through).
                until = max(until, now + min(hint, self.settings.retry_after_max))
            if until:
                b.open_until = max(b.open_until, until) if b.open_until > now else until

    def release(self, label: str) -> None:
        """Drop a probe claim without a verdict (the call never happened or ended in a bug)."""
        with self._lock:
            b = self._breakers.get(label)
            if b is not None:
                b.probe_since = None

    def states(self) -> Tuple[BreakerState, ...]:
        now = self._clock()
        with self._lock:
            out = []
            for label, b in sorted(self._breakers.items()):
                if b.open_until == 0.0:
                    state = "closed"
                elif now < b.open_until:
                    state = "open"
                else:
                    state = "half_open"
                out.append(BreakerState(label, state, b.failures, max(0.0, b.open_until - now), b.reason))
            return tuple(out)
