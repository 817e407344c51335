"""A worker's lifecycle: draining on SIGTERM/HUP, then closing open streams (settled) before the hard kill."""

from __future__ import annotations

import itertools
import threading
from typing import Callable, Dict, Optional


class Lifecycle:
    """Shared by the health endpoints (`/ready` says 503 while draining) and every open SSE body.

    gunicorn's SIGTERM handler (routeplane/gunicorn_conf.py) calls
    `begin_drain(close_after)`: the worker stops accepting, open streams keep
    running, and after `close_after` seconds `closing` is set so each stream
    ends with an error event at its next part and is settled, before the
    master's SIGKILL at graceful_timeout. A stream whose upstream is silent
    has no next part, and a non-streaming call may still be waiting for its
    answer: every request registers an abort callback (`register`) that
    `close_streams()` calls, which interrupts its blocked upstream call so it
    still ends with a shutting_down error, settled.

    A worker also drains when it is replaced while the server keeps running (HUP): `server_stopping`
    tells the two apart, so /ready says 503 only when the whole server is going away, not when a
    load balancer's poll lands on a replaced worker's last kept-alive connection.
    """

    def __init__(self) -> None:
        self.server_stopping: Callable[[], bool] = lambda: True  # without gunicorn_conf.py: every drain is a stop
        self.draining = threading.Event()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._drain_once = threading.Lock()  # taken by the first begin_drain, never released
        self._open = 0
        self._timer: Optional[threading.Timer] = None
        self._aborts: Dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def begin_drain(self, close_after: Optional[float]) -> None:
        # Runs in a signal handler, and a second SIGTERM can arrive while the first is still in
        # here (the master signals its workers, and a supervisor may signal the whole process
        # group too). Waiting for a lock the interrupted frame holds would hang the worker until
        # the SIGKILL (seen: 30 s, streams cut unsettled), so this is one-shot and never blocks.
        if not self._drain_once.acquire(blocking=False):
            return
        self.draining.set()
        if close_after is not None:
            timer = threading.Timer(max(0.0, close_after), self.close_streams)
            timer.daemon = True
            self._timer = timer
            timer.start()

    def close_streams(self) -> None:
        """Set `closing` and interrupt every registered stream (idempotent)."""
        self.closing.set()
        with self._lock:
            aborts = list(self._aborts.values())
        for abort in aborts:
            try:
                abort()
            except Exception:  # noqa: BLE001 - one stream's failure must not spare the others
                pass

    def register(self, abort: Callable[[], None]) -> int:
        """Remember how to interrupt one open stream; called at once if closing already began."""
        with self._lock:
            key = next(self._ids)
            self._aborts[key] = abort
        if self.closing.is_set():
            abort()
        return key

    def unregister(self, key: int) -> None:
        with self._lock:
            self._aborts.pop(key, None)

    def try_open_stream(self, limit: int) -> bool:
        """Count one more open stream unless `limit` are open already (then the caller refuses it)."""
        with self._lock:
            if self._open >= limit:
                return False
            self._open += 1
            return True

    def stream_opened(self) -> None:
        with self._lock:
            self._open += 1

    def stream_closed(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def stopping(self) -> bool:
        """Draining because the server stops (not because this worker alone is being replaced)."""
        return self.draining.is_set() and self.server_stopping()

    @property
    def open_streams(self) -> int:
        return self._open
