"""The verdict cache: per (provider, model), shared by a worker's threads, one verification per stampede."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from .verdict import Verdict

Key = Tuple[str, str]


class _Flight:
    """One verification in progress; concurrent requests for the same key wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.verdict: Optional[Verdict] = None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # verifications started
    joined: int = 0  # requests that waited on another request's verification


class VerdictCache:
    """Verified verdicts live `verified_ttl` seconds, unverified ones `unverified_ttl` (shorter,
    so a transient failure clears quickly while a dead endpoint is not hammered).

    `clock` is monotonic seconds (injectable for tests). `wait_timeout` bounds how long
    a request waits on another thread's verification; past it the request gets an
    unverified verdict (fail-closed) rather than starting a second one.

    At most `max_entries` verdicts are kept: a client names the model of a direct route
    (`tee:<anything>`), so the keys are the client's to choose. Past the bound, expired
    verdicts go first, then the least recently used: a flood of invented models cannot
    push out the verdict of a route that is in use.
    """

    def __init__(self, verified_ttl: float = 600.0, unverified_ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, wait_timeout: float = 30.0,
                 max_entries: int = 4096) -> None:
        self.verified_ttl = verified_ttl
        self.unverified_ttl = unverified_ttl
        self.wait_timeout = wait_timeout
        self.max_entries = max(1, int(max_entries))
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: Dict[Key, Tuple[Verdict, float]] = {}
        self._flights: Dict[Key, _Flight] = {}
        self.stats = CacheStats()

    def get_or_verify(self, key: Key, verify: Callable[[], Verdict],
                      on_timeout: Callable[[], Verdict]) -> Tuple[Verdict, bool]:
        """The cached verdict for `key` (and True), or the result of `verify()` (and False).

        `verify` must not raise (the caller turns errors into unverified verdicts);
        if it does anyway, waiters get `on_timeout()` and nothing is cached.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() < entry[1]:
                self.stats.hits += 1
                self._entries[key] = self._entries.pop(key)  # most recently used last: evicted last
                return entry[0], True
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
                self.stats.misses += 1
            else:
                self.stats.joined += 1
        assert flight is not None
        if not leader:
            if flight.done.wait(self.wait_timeout) and flight.verdict is not None:
                return flight.verdict, True
            return on_timeout(), False
        verdict: Optional[Verdict] = None
        try:
            verdict = verify()
            return verdict, False
        finally:
            with self._lock:
                if verdict is not None:
                    self._store(key, verdict)
                self._flights.pop(key, None)
            flight.verdict = verdict
            flight.done.set()

    def _store(self, key: Key, verdict: Verdict) -> None:
        """Cache `verdict` (the lock is held), keeping at most `max_entries`."""
        ttl = self.verified_ttl if verdict.verified else self.unverified_ttl
        now = self._clock()
        self._entries.pop(key, None)  # re-inserted last: the dict's order is oldest first
        self._entries[key] = (verdict, now + ttl)
        if len(self._entries) <= self.max_entries:
            return
        for stale in [k for k, (_v, expires) in self._entries.items() if expires <= now]:
            del self._entries[stale]
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def peek(self, key: Key) -> Optional[Verdict]:
        """The unexpired cached verdict, without verifying."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[0] if entry is not None and self._clock() < entry[1] else None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
