"""routeplane's gunicorn worker: gthread that keeps a busy kept-alive connection in the thread that served it.

Stock gthread hands every kept-alive connection back to its main thread
after each response: the socket is registered with the poller, the main
thread wakes when the next request arrives, and submits the connection to
the pool again. Those two thread hand-offs and half a dozen system calls
cost about 0.15 ms of CPU per request on a 2-core VM (docs/deploy.md §8),
more than Flask's own dispatch.

This worker first waits a short while (`LINGER_SECONDS`) in the thread that
just answered, for the next request on the same connection: a client or an
nginx upstream keepalive pool sending request after request is served by one
thread without a hand-off. It gives the connection back to the poller, as
stock gthread does, as soon as the wait is over, other connections are queued
for a thread, or the worker is stopping; so a thread is never held by an idle
client for longer than the linger. The queue is looked at before and after
the wait: a connection that arrives while every thread lingers waits at most
the linger, never behind another connection's next request.

A stopping gthread worker keeps its idle kept-alive connections open for a
while (gunicorn 27: 2 s), so a request racing the stop is answered with
"Connection: close" instead of dropped; `$ROUTEPLANE_STOP_KEEPALIVE_LINGER`
(seconds) shortens that wait, never lengthens it.

A worker past its memory budget (`$ROUTEPLANE_MAX_WORKER_RSS_MB`, routeplane/worker_memory.py,
checked from the heartbeat) retires itself the same way as after `max_requests`.

When `max_requests` or the memory budget retires it, the worker tells the master at once
(`on_recycle`, set by routeplane/gunicorn_conf.py), so a replacement starts
accepting while this one drains: gunicorn alone spawns it only once the old
worker has exited, and with one worker (or two draining together) new
requests waited in the accept queue for the longest open stream.

Everything else (parsing, keep-alive timeouts, graceful stop, max_requests)
is gthread's own. On gunicorn versions whose `handle` does not return a plain
keep-alive flag, the worker behaves exactly like gthread.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from typing import Any, Callable, Optional

from gunicorn import util
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker as _GThreadWorker

from .logs import redact, redact_logger
from .worker_memory import ENV as MEMORY_ENV
from .worker_memory import MemoryBudget, limit_from_env

# Long enough for a client's next request on a busy connection (tens of µs to
# a few ms), short enough that a thread is soon back for other connections.
LINGER_SECONDS = 0.02


class ThreadWorker(_GThreadWorker):
    on_recycle: Optional[Callable[["ThreadWorker"], None]] = None  # called once when it retires itself
    _over_memory = False
    # Set by SIGTERM/SIGQUIT: the master is stopping this worker (HUP, TTOU, stop) and wants no replacement.
    _stopping = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Reentrant: a signal handler (handle_exit) may set `alive` in the main thread while it holds the lock.
        self._alive_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        # gthread turns `alive` off in the request that reaches max_requests, before the app runs it
        # (a stream may then last minutes): the moment to ask for a replacement. Under the lock, so two
        # pool threads reaching max_requests together ask once.
        with self._alive_lock:
            recycled = not value and getattr(self, "_alive", False) and not self._stopping and (
                self._over_memory or getattr(self, "nr", 0) >= self.max_requests)
            self._alive = value
        if recycled and not self._stopping and self.on_recycle is not None:  # a SIGTERM may land meanwhile
            try:
                self.on_recycle(self)
            except Exception:  # noqa: BLE001 - the replacement then starts after the exit, as in stock gunicorn
                self.log.exception("routeplane: asking the master for a replacement worker failed")

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: the master stops this worker; a request reaching max_requests now must not ask for a
        replacement (the master would spawn one more worker than it wants, undoing a TTOU)."""
        self._stopping = True
        super().handle_exit(sig, frame)

    def handle_quit(self, sig: int, frame: Any) -> None:
        self._stopping = True
        super().handle_quit(sig, frame)

    def init_process(self) -> None:
        util.write_error = write_json_error  # gunicorn's own refusals (limits, bad framing) in JSON
        for logger in (self.log.error_log, self.log.access_log):  # a refused request line may hold `?key=`
            redact_logger(logger)
        linger = stop_keepalive_linger()
        if linger is not None and hasattr(gthread, "STOP_KEEPALIVE_LINGER"):  # gunicorn >= 27
            gthread.STOP_KEEPALIVE_LINGER = min(gthread.STOP_KEEPALIVE_LINGER, linger)
        self._memory = MemoryBudget(limit_from_env())
        super().init_process()

    def notify(self) -> None:
        """The heartbeat (at least once a second from the main loop), and the memory budget's check."""
        super().notify()
        memory = getattr(self, "_memory", None)
        if memory is None or not self.alive:
            return
        rss = memory.exceeded()
        if rss is not None:
            self.log.warning("routeplane: worker %s holds %.0f MB, over %s=%d: recycling it once its open "
                             "requests end", self.pid, rss, MEMORY_ENV, memory.limit_mb)
            self._over_memory = True
            self.alive = False

    def handle(self, conn: Any) -> Any:
        if not getattr(conn, "initialized", True) and getattr(conn, "data_ready", None) is False:
            # A new connection: gthread (>= 26) waits for its first bytes with a
            # selector made for the purpose (4 system calls); usually they are here.
            conn.data_ready = _has_bytes(conn.sock)
        keepalive = super().handle(conn)
        while keepalive is True and self.alive and self._next_request_arrives(conn):
            keepalive = super().handle(conn)
        return keepalive

    def _next_request_arrives(self, conn: Any) -> bool:
        """Whether this thread should serve the connection's next request itself."""
        unreader = getattr(conn.parser, "unreader", None)
        buf = getattr(unreader, "buf", None)
        if buf is not None and buf.getvalue():
            return True  # already read ahead: the poller would not see it
        pending = getattr(conn.sock, "pending", None)
        if pending is not None and pending():
            return True  # TLS: decrypted bytes wait in the SSL object, invisible to poll
        if not self._nobody_waits():
            return False
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        # Asked again after the wait: a connection queued meanwhile must not wait
        # behind this one's whole next request (which may be a long LLM call).
        return bool(poller.poll(LINGER_SECONDS * 1000)) and self.alive and self._nobody_waits()

    def _nobody_waits(self) -> bool:
        """No other connection is queued for a thread of the pool."""
        queue = getattr(self.tpool, "_work_queue", None)
        return queue is not None and queue.empty()


def stop_keepalive_linger() -> Optional[float]:
    """$ROUTEPLANE_STOP_KEEPALIVE_LINGER in seconds, or None (unset: gthread's own). gunicorn_conf.py
    refuses a value that is not a number ≥ 0 at start-up."""
    raw = os.environ.get("ROUTEPLANE_STOP_KEEPALIVE_LINGER")
    return float(raw) if raw else None


def _has_bytes(sock: socket.socket) -> bool:
    """Whether a read would not block (bytes waiting, or the peer closed)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # the read will report the error
    return True


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 413: "INVALID_ARGUMENT",
                  414: "INVALID_ARGUMENT", 417: "FAILED_PRECONDITION", 431: "INVALID_ARGUMENT", 501: "UNIMPLEMENTED"}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it refuses before the app runs (a request line or header past
    the `limits`, broken framing), as JSON instead of its HTML page.

    The request is not parsed, so its wire is unknown: the one body has the
    fields of all three error shapes (OpenAI `error.message/type/code`,
    Anthropic `type: error` + `error.type/message`, Gemini
    `error.code/message/status`), and each SDK reads it as its own.
    """
    message = redact(f"{reason}: {mesg}" if mesg else reason)  # the refused request line, `?key=` and all
    body = json.dumps({"type": "error", "error": {
        "type": "invalid_request_error" if status_int < 500 else "api_error",
        "message": message[:500],
        "code": status_int,
        "status": _GOOGLE_STATUS.get(status_int, "INTERNAL" if status_int >= 500 else "INVALID_ARGUMENT"),
    }}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1", "replace")
    util.write_nonblock(sock, head + body)
