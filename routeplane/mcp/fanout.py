"""A bounded pool of daemon threads that asks several upstream MCP servers at once (list fetches)."""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Callable, List, Optional, Tuple

log = logging.getLogger("routeplane.mcp")

# (what to run, its arguments, what to call instead if the pool closes before it runs)
_Task = Optional[Tuple[Callable[..., Any], Tuple[Any, ...], Optional[Callable[[], Any]]]]


class FanOut:
    """Runs callables on at most `limit` threads, started as needed (and again after a fork).

    Daemon threads, unlike `concurrent.futures`' (joined at interpreter exit): a fetch stuck on a
    hung upstream must not hold a worker's shutdown until that upstream's timeout ends. Tasks
    report their own outcome; one that raises is logged. Beyond `limit` busy threads, tasks wait
    in the queue; `close()` calls the `cancel` of each one still waiting there.
    """

    def __init__(self, limit: int, name: str) -> None:
        self._limit = max(1, limit)
        self._name = name
        self._lock = threading.Lock()
        self._queue: "queue.SimpleQueue[_Task]" = queue.SimpleQueue()
        self._pid: Optional[int] = None
        self._threads = 0
        self._idle = 0  # threads waiting for a task that no submit has claimed yet
        self._backlog = 0  # queued tasks no idle thread was claimed for

    def submit(self, fn: Callable[..., Any], *args: Any, cancel: Optional[Callable[[], Any]] = None) -> None:
        with self._lock:
            if self._pid != os.getpid():  # gunicorn forks after the app is built: threads do not survive it
                self._queue, self._pid, self._threads, self._idle, self._backlog = queue.SimpleQueue(), os.getpid(), 0, 0, 0
            if self._idle:
                self._idle -= 1
            elif self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._run, args=(self._queue,), name=f"{self._name}-{self._threads}",
                                 daemon=True).start()
            else:
                self._backlog += 1
            self._queue.put((fn, args, cancel))

    def _run(self, tasks: "queue.SimpleQueue[_Task]") -> None:
        while True:
            task = tasks.get()
            if task is None:
                return
            fn, args, _ = task
            try:
                fn(*args)
            except Exception:  # a task reports its own failures; this is a bug in one
                log.exception("%s task failed", self._name)
            with self._lock:
                if tasks is not self._queue:  # forked away or closed: this thread's pool is gone
                    return
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle += 1

    def close(self) -> None:
        """Let idle threads end; busy ones end after their task. A task still queued never runs: its
        `cancel` is called instead, so nothing waits on it for good."""
        with self._lock:
            tasks, threads = self._queue, self._threads
            self._queue, self._pid, self._threads, self._idle, self._backlog = queue.SimpleQueue(), None, 0, 0, 0
        dropped: List[Callable[[], Any]] = []
        while True:  # a thread may still take a task meanwhile: then it runs, and is not cancelled
            try:
                task = tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None and task[2] is not None:
                dropped.append(task[2])
        for _ in range(threads):
            tasks.put(None)
        for cancel in dropped:
            try:
                cancel()
            except Exception:
                log.exception("cancelling a queued %s task failed", self._name)
