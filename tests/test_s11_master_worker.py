"""A worker asks the master for a replacement once, and never when the master itself is stopping it."""

from __future__ import annotations

import signal
import threading
from typing import Any, Iterator, List

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from routeplane.gunicorn_worker import ThreadWorker


def _make(cls: type = ThreadWorker) -> Any:
    cfg = Config()
    cfg.set("max_requests", 5)
    worker = cls(1, 99, [], None, 30, cfg, Logger(cfg))
    worker.max_requests = 5  # without gunicorn's jitter
    worker.method_queue.init()
    asked: List[int] = []
    worker.on_recycle = lambda w: asked.append(w.nr)
    worker.asked = asked
    return worker


@pytest.fixture
def worker() -> Iterator[Any]:
    made = _make()
    yield made
    made.method_queue.close()
    made.tmp.close()


def test_max_requests_asks_for_a_replacement(worker: Any) -> None:
    worker.nr = 5
    worker.alive = False  # what gthread does in the request reaching max_requests
    assert worker.asked == [5]


def test_a_sigterm_racing_the_last_request_asks_for_nothing(worker: Any) -> None:
    worker.nr = 5  # a pool thread has just counted its max_requests-th request...
    worker.handle_exit(signal.SIGTERM, None)  # ...and the master's SIGTERM (HUP, TTOU, stop) lands first
    assert not worker.alive
    assert worker.asked == []  # before: a replacement the master did not want (a TTOU undone)


class _SlowReadWorker(ThreadWorker):
    """Holds each thread in the middle of the setter until both are there (or 0.5 s passed)."""

    barrier = threading.Barrier(2, timeout=0.5)

    @property
    def _over_memory(self) -> bool:
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return False


def test_two_threads_reaching_max_requests_together_ask_once() -> None:
    worker = _make(_SlowReadWorker)
    try:
        worker.nr = 5
        threads = [threading.Thread(target=setattr, args=(worker, "alive", False)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert worker.asked == [5]  # before: [5, 5], the second O_EXCL marker failing with a traceback
    finally:
        worker.method_queue.close()
        worker.tmp.close()
