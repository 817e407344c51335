"""Fallback settings and the per-worker circuit breaker that sidelines failing targets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Tuple

from ..errors import UpstreamError

# Upstream statuses that speak about the credential, not the provider: its own rate limit or quota
# (429, 402 billing), a key refused (401/403; not retriable, so they only reset). Everything else a
# target can fail with (5xx, 529 overload, 408, timeouts, connection errors) is the provider's.
CREDENTIAL_STATUSES = frozenset((401, 402, 403, 429))
# Most breakers a worker keeps: per-credential ones come and go with tenants.
MAX_BREAKERS = 4096
# Per process, never stored: a fingerprint tells tenants apart without helping anyone recover or confirm a key.
_FINGERPRINT_KEY = secrets.token_bytes(32)


def credential_fingerprint(api_key: Optional[str], headers: Mapping[str, str]) -> str:
    """8 hex of a keyed hash of a credential (the key and every header: a header may carry it)."""
    mac = hmac.new(_FINGERPRINT_KEY, (api_key or "").encode("utf-8", "surrogatepass"), hashlib.sha256)
    for name, value in sorted((str(k).lower(), str(v)) for k, v in headers.items()):
        mac.update(b"\0" + name.encode("utf-8", "surrogatepass") + b"\0" + value.encode("utf-8", "surrogatepass"))
    return mac.hexdigest()[:8]


class CredentialKey(str):
    """`provider:model#fingerprint`: the breaker of a target called with a credential other than the
    configured one (a route hook's per-tenant key). `label` is the target's shared breaker, which
    provider-wide failures feed and which sidelines every credential (docs/routing.md)."""

    label: str

    def __new__(cls, label: str, fingerprint: str) -> "CredentialKey":
        key = super().__new__(cls, f"{label}#{fingerprint}")
        key.label = label
        return key


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
    wide: bool = False  # the last failure counted was the provider's: the breaker applies to every credential


@dataclass(frozen=True)
class BreakerState:
    """A read-only view of one target's breaker, for admin views and tests."""

    label: str
    state: str  # "closed" | "open" | "half_open"
    failures: int
    retry_in: float
    reason: str  # the failure's class and upstream status (`UpstreamStatusError 503`), never its message
    # The breaker a per-credential one belongs to (`provider:model`, or `provider:model@…` for another
    # endpoint); `label` itself for the others.
    owner: str = ""


class CooldownTracker:
    """Per-target breakers of one worker process, keyed by `provider:model`, or by a
    CredentialKey for a target called with another credential than the configured one.

    Thread-safe (gthread workers share it). Per worker on purpose: a breaker
    must react within a request or two, which a shared store on the hot path
    cannot do cheaply; each worker learns on its own in a few requests.

    A credential's own failures (CREDENTIAL_STATUSES) feed its own breaker; the
    provider's failures feed the shared `provider:model` one, which a
    per-credential call also obeys while the provider's failure is the last it
    counted. The configured credential's breaker is the shared one, as before.
    """

    def __init__(self, settings: FallbackSettings = FallbackSettings(),
                 clock: Callable[[], float] = time.monotonic, max_breakers: int = MAX_BREAKERS) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: Dict[str, _Breaker] = {}
        self._max = max_breakers

    def acquire(self, key: str) -> bool:
        """May this request call the target now? Claims the probe when a breaker is half-open."""
        now = self._clock()
        with self._lock:
            found = self._applying(key)
            if not found:
                return True
            if any(self._skipped(b, now) for b in found):
                return False
            for b in found:
                b.probe_since = now
            return True

    def would_skip(self, key: str) -> bool:
        """Would a request skip this target now? Claims nothing (dry runs: count_tokens)."""
        now = self._clock()
        with self._lock:
            return any(self._skipped(b, now) for b in self._applying(key))

    def _applying(self, key: str) -> Tuple[_Breaker, ...]:
        """The non-closed breakers a call under `key` obeys: its own, and for a per-credential
        key the shared one while the provider's failure is the last it counted."""
        own = self._breakers.get(key)
        shared = self._shared(key)
        return tuple(b for b in (own, shared) if b is not None and b.open_until != 0.0)

    def _shared(self, key: str) -> Optional[_Breaker]:
        if not isinstance(key, CredentialKey):
            return None
        b = self._breakers.get(key.label)
        return b if b is not None and b.wide else None

    def _skipped(self, b: _Breaker, now: float) -> bool:
        """Open, or half-open with its one probe out. A probe that never reported
        (its thread died) stops blocking others after one period."""
        if now < b.open_until:
            return True
        return b.probe_since is not None and now - b.probe_since < max(self.settings.cooldown.seconds, 1.0)

    def record_success(self, key: str) -> None:
        """The target answered: close its breaker, and for a per-credential call the shared one
        if the provider's failure opened it (the provider is evidently up)."""
        with self._lock:
            self._breakers.pop(key, None)
            if self._shared(key) is not None:
                self._breakers.pop(key.label, None)  # type: ignore[attr-defined]

    def record_failure(self, key: str, err: UpstreamError) -> None:
        """Count a failed call. Only fallback-worthy failures count; a 4xx means the target is alive.
        A credential's failure counts on its key, the provider's on the shared `provider:model`."""
        if not err.retriable:
            if err.upstream_status is not None:
                self.record_success(key)
            else:
                self.release(key)
            return
        wide = err.upstream_status not in CREDENTIAL_STATUSES
        counted = key.label if wide and isinstance(key, CredentialKey) else key
        now = self._clock()
        with self._lock:
            other = self._breakers.get(key) if counted is not key else self._shared(key)
            if other is not None:
                other.probe_since = None  # its probe ends without a verdict
            self._count(self._slot(counted, now), err, now, wide)

    def _count(self, b: _Breaker, err: UpstreamError, now: float, wide: bool) -> None:
        policy = self.settings.cooldown
        b.failures += 1
        # Class and status only: an error's message may quote the upstream's answer, which may echo a key.
        b.reason = type(err).__name__ + (f" {err.upstream_status}" if err.upstream_status is not None else "")
        b.wide = wide
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

    def _slot(self, key: str, now: float) -> _Breaker:
        """`key`'s breaker, made if new. A full map first drops what no longer matters (closed or
        expired), then the oldest per-credential breakers: tenants must not grow it without bound."""
        b = self._breakers.get(key)
        if b is None:
            if len(self._breakers) >= self._max:
                self._evict(now)
            b = self._breakers[key] = _Breaker()
        return b

    def _evict(self, now: float) -> None:
        stale = [k for k, b in self._breakers.items() if b.probe_since is None and b.open_until <= now]
        if len(stale) < self._max // 8:  # mostly open: drop the oldest eighth of the tenants' ones too
            stale += [k for k in self._breakers if isinstance(k, CredentialKey)][:self._max // 8 or 1]
        for k in stale:
            self._breakers.pop(k, None)

    def release(self, key: str) -> None:
        """Drop probe claims without a verdict (the call never happened or ended in a bug)."""
        with self._lock:
            for b in (self._breakers.get(key), self._shared(key)):
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
                out.append(BreakerState(str(label), state, b.failures, max(0.0, b.open_until - now), b.reason,
                                        str(getattr(label, "label", label))))
            return tuple(out)
