"""A memory budget per gunicorn worker: past it, the worker recycles itself as after `max_requests`.

Long-running Python proxies grow: a plugin that caches without bound, a
library that leaks, fragmentation after a burst of large bodies. Recycling
after a number of requests (`max_requests`) bounds that only on average; this
bounds it by what the worker really holds. The worker reads its resident set
size from /proc at most every `CHECK_SECONDS` (one small file read, from its
heartbeat, never from a request's thread). Once it is over the limit the
worker stops accepting, lets its open requests and streams finish within the
graceful timeout, and exits; the master starts a fresh one in its place, so
the listening socket never closes and no request is refused.

`$ROUTEPLANE_MAX_WORKER_RSS_MB` sets the limit (default 1024, `0` = off);
gunicorn_conf.py refuses anything but a whole number at start-up.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional

ENV = "ROUTEPLANE_MAX_WORKER_RSS_MB"
DEFAULT_MB = 1024
CHECK_SECONDS = 5.0

log = logging.getLogger(__name__)

try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - platforms without sysconf
    _PAGE = 4096


def rss_mb() -> Optional[float]:
    """This process's resident set size in MB, or None where /proc is missing (the budget is then off)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None


def limit_from_env() -> int:
    """The limit in MB from the environment (0 = off).

    gunicorn_conf.py refuses a bad value at start-up; a worker class used without it (`gunicorn -k`)
    must still boot, so here a bad value means the default, with a warning (a ValueError at boot
    would make gunicorn halt the whole server).
    """
    raw = os.environ.get(ENV)
    if not raw:
        return DEFAULT_MB
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        log.warning("%s must be a whole number of MB >= 0, not %r: using %d", ENV, raw, DEFAULT_MB)
        return DEFAULT_MB
    return value


class MemoryBudget:
    """Answers, at most every `every` seconds, whether the process is over `limit_mb`."""

    def __init__(self, limit_mb: int, every: float = CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 read: Callable[[], Optional[float]] = rss_mb) -> None:
        self.limit_mb = limit_mb
        self._every = every
        self._clock = clock
        self._read = read
        self._next = clock() + every

    def exceeded(self) -> Optional[float]:
        """The RSS in MB when a check is due and finds it over the limit; None otherwise."""
        if self.limit_mb <= 0:
            return None
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self._every
        rss = self._read()
        return rss if rss is not None and rss > self.limit_mb else None
