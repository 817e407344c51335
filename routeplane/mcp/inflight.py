"""Routed calls a client may cancel (`notifications/cancelled`, mcp.md §8): its request id to the upstream's."""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from .jsonrpc import MCPError

if TYPE_CHECKING:  # pragma: no cover
    from .upstream import Upstream

log = logging.getLogger("routeplane.mcp")

REQUEST_CANCELLED = -32800  # what the reference server answers a cancelled request's open POST with
MAX_REASON_CHARS = 200


def cancelled_error() -> MCPError:
    """The answer that ends a cancelled request's POST: never the upstream's late result.

    The spec says a cancelled request gets no response, but a 2025-era HTTP POST
    (or its SSE stream) ends only with one for its id, so the reference server
    answers `-32800 Request cancelled`; the client has stopped waiting and drops it.
    """
    return MCPError(REQUEST_CANCELLED, "Request cancelled", 200)


class Flight:
    """One routed call of a legacy session: the upstream request carrying it, and whether the client cancelled.

    `wake` is set when the call may stop being waited for: its upstream answer came,
    or the client cancelled it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self.wake = threading.Event()
        self._upstream: Optional["Upstream"] = None
        self._upstream_id: Any = None

    def bind(self, upstream: "Upstream", upstream_id: Any) -> bool:
        """Record the upstream request carrying this call; False if the client cancelled it already."""
        with self._lock:
            if self.cancelled:
                return False
            self._upstream, self._upstream_id = upstream, upstream_id
            return True

    def unbind(self) -> None:
        """The upstream answered (or failed): a later cancel has nothing to forward."""
        with self._lock:
            self._upstream = None

    def cancel(self, reason: Optional[str]) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            upstream, upstream_id = self._upstream, self._upstream_id
        self.wake.set()
        if upstream is not None:
            upstream.cancel(upstream_id, reason)


class Flights:
    """This worker's cancellable calls, by (session key, the client's request id).

    Per worker: a cancel that reaches another gunicorn worker than its request finds
    nothing here and is dropped, as the spec allows for an unknown request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Dict[Tuple[str, Any], Flight] = {}

    def open(self, session_key: str, request_id: Any) -> Flight:
        flight = Flight()
        with self._lock:
            self._open[(session_key, _key(request_id))] = flight
        return flight

    def close(self, session_key: str, request_id: Any, flight: Flight) -> None:
        with self._lock:
            key = (session_key, _key(request_id))
            if self._open.get(key) is flight:  # a reused id's newer call stays
                del self._open[key]

    def cancel(self, session_key: str, params: Dict[str, Any]) -> None:
        """Act on a client's `notifications/cancelled`; an unknown or finished id is dropped quietly."""
        request_id = params.get("requestId")
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            return
        with self._lock:
            flight = self._open.get((session_key, _key(request_id)))
        if flight is None:
            return
        reason = params.get("reason")
        flight.cancel(reason[:MAX_REASON_CHARS] if isinstance(reason, str) else None)


def _key(request_id: Any) -> Any:
    """Ids compare with their JSON type: `1` and `"1"` are different requests."""
    return (type(request_id).__name__, request_id)


class Runners:
    """Reused daemon threads that run cancellable upstream exchanges.

    Daemon: a call the client cancelled must not hold up the worker's exit while its
    upstream finishes. Reused: an HTTP upstream keeps one `requests.Session` per
    thread, so a thread per call would leave a session behind per call.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._loop, name=f"{self._name}-{self._threads}", daemon=True).start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # the job reports its own outcome; this only keeps the thread alive
                log.exception("%s: a call failed", self._name)
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        with self._lock:
            threads, self._threads, self._idle = self._threads, 0, 0
        for _ in range(threads):
            self._jobs.put(None)
