"""check_plugin fails, naming the hook and its exception, when one of the plugin's hooks raises on an
ordinary request: before, a raising stream hook, execution hook or settlement recorder passed every
check (the error became a 500 / an error frame / a log line), and a raising pre-request hook failed
with "expected exactly one settlement, got 0", which points nowhere near the bug."""

from __future__ import annotations

from typing import Any

import pytest

from routeplane import Plugin, PluginId
from routeplane.errors import GuardrailViolation
from routeplane.hooks.language_model import (
    ExecutionHook,
    ObserveHook,
    PreRequestHook,
    SettlementRecorder,
    StreamAction,
    StreamHook,
    StreamInterest,
)
from routeplane.language_model.types import Generation
from routeplane.testing import check_plugin


class RaisingCheck(PreRequestHook):
    def check(self, ctx):
        raise RuntimeError("pre-request bug")


class RaisingStream(StreamHook):
    def interest(self):
        return StreamInterest.TEXT

    def on_part(self, ctx, part):
        raise KeyError("stream bug")


class RaisingStreamEnd(StreamHook):
    def interest(self):
        return StreamInterest.NONE

    def on_stream_end(self, ctx, outcome):
        raise ValueError("end bug")


class RaisingSuccess(ExecutionHook):
    def on_success(self, ctx, result):
        raise RuntimeError("execution bug")


class RaisingRecorder(SettlementRecorder):
    def record(self, settlement):
        raise RuntimeError("recorder bug")


class RaisingObserver(ObserveHook):
    def on_request_end(self, event):
        raise RuntimeError("observer bug")


def _plugin(method: str, hook: Any) -> Plugin:
    class OneHook(Plugin):
        id = PluginId("one-hook")

        def install(self, app: Any) -> None:
            getattr(app.language_model_builder(), method)(hook)

    return OneHook()


@pytest.mark.parametrize("method, hook, first_check, said", [
    ("pre_request_hook", RaisingCheck(), "non-streaming request", "RuntimeError: pre-request bug"),
    ("stream_hook", RaisingStream(), "streaming request", "KeyError: 'stream bug'"),
    ("stream_hook", RaisingStreamEnd(), "streaming request", "ValueError: end bug"),
    ("execution_hook", RaisingSuccess(), "non-streaming request", "RuntimeError: execution bug"),
    ("settlement_recorder", RaisingRecorder(), "non-streaming request", "RuntimeError: recorder bug"),
    ("observe_hook", RaisingObserver(), "non-streaming request", "RuntimeError: observer bug"),
])
def test_a_hook_that_raises_fails_the_contract_naming_it(method, hook, first_check, said):
    with pytest.raises(AssertionError) as caught:
        check_plugin(_plugin(method, hook))
    message = str(caught.value)
    assert message.startswith(f"{first_check}: the plugin's {method} {type(hook).__name__} raised ({said})"), message


class BlockEverything(ExecutionHook):
    """A deliberate block: a RouteplaneError from on_success is the documented way to refuse an answer."""

    def on_success(self, ctx, result):
        if isinstance(result, Generation):
            raise GuardrailViolation("The answer was blocked.")
        return None


class Quiet(StreamHook):
    def on_part(self, ctx, part):
        return StreamAction.pass_()


def test_a_deliberate_block_is_not_a_raising_hook():
    report = check_plugin(_plugin("execution_hook", BlockEverything()))
    assert "client disconnect" in report.checks
    assert "client disconnect" in check_plugin(_plugin("stream_hook", Quiet())).checks
