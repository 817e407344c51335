"""Lifecycle: open streams register how to interrupt them; close_streams() reaches each one once it is due."""

from __future__ import annotations

from typing import List

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
