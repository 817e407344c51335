"""Lifecycle: open streams register how to interrupt them; close_streams() reaches each one once it is due."""

from __future__ import annotations

import threading
from typing import List

import routeplane.lifecycle as lifecycle_module
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.types import Message, Prompt, TextPart
from routeplane.lifecycle import Lifecycle


def test_close_streams_calls_registered_aborts_and_late_registrations_at_once() -> None:
    life = Lifecycle()
    calls: List[str] = []
    life.register(lambda: calls.append("a"))
    gone = life.register(lambda: calls.append("gone"))
    life.unregister(gone)
    life.register(lambda: 1 / 0)  # a failing abort does not spare the others
    life.register(lambda: calls.append("b"))
    assert calls == [] and not life.closing.is_set()
    life.close_streams()
    assert life.closing.is_set() and calls == ["a", "b"]
    life.register(lambda: calls.append("late"))  # a stream opened while closing is cut at once
    assert calls == ["a", "b", "late"]


def test_context_abort_reaches_aborters_registered_before_and_after() -> None:
    prompt = Prompt(model="m", messages=(Message("user", (TextPart("hi"),)),))
    ctx = PipelineContext("r1", "openai_chat", prompt, {})
    hits: List[int] = []
    ctx.on_abort(lambda: hits.append(1))
    reason = RuntimeError("shutting down")
    ctx.abort(reason)
    assert ctx.aborted is reason and hits == [1]
    ctx.on_abort(lambda: hits.append(2))  # an attempt opened after the abort is interrupted too
    ctx.abort(RuntimeError("again"))
    assert ctx.aborted is reason and hits == [1, 2, 1, 2]


def test_a_second_drain_arriving_inside_the_first_returns_at_once(monkeypatch) -> None:
    # begin_drain runs in the SIGTERM handler; a second SIGTERM can interrupt the first
    # call anywhere inside it. Simulated here by re-entering from inside Timer.start().
    life = Lifecycle()
    reentered: List[bool] = []

    class ReenteringTimer(threading.Timer):
        def start(self) -> None:
            life.begin_drain(5.0)  # the second signal
            reentered.append(True)
            super().start()

    monkeypatch.setattr(lifecycle_module.threading, "Timer", ReenteringTimer)
    worker = threading.Thread(target=life.begin_drain, args=(5.0,), daemon=True)
    worker.start()
    worker.join(3)
    assert not worker.is_alive(), "the second drain waited for the first: a deadlock in a signal handler"
    assert reentered == [True] and life.draining.is_set() and not life.closing.is_set()
    life.close_streams()  # (the timer never fires during the test)
