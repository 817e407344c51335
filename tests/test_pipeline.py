"""The language-model pipeline without Flask: ordering, deny/respond, settlement, stream hooks, observers."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import pytest

from routeplane.app import App
from routeplane.config import parse_config
from routeplane.errors import (
    AllTargetsFailed,
    HookDenied,
    InternalError,
    StreamAborted,
    UpstreamConnectionError,
    UpstreamStatusError,
)
from routeplane.hooks.language_model import (
    DenyReason,
    ExecutionHook,
    FallbackDecision,
    HookDecision,
    ObserveHook,
    Outcome,
    PreRequestHook,
    RouteHook,
    SettlementRecorder,
    StreamAction,
    StreamHook,
    StreamInterest,
)
from routeplane.hooks.mcp import MCPPreRequestHook
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.executor import MockExecutor
from routeplane.language_model.pipeline import PipelineStream
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    Message,
    Prompt,
    ResponseStart,
    Role,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import CapturedEvents, CapturedSettlements

CONFIG = {
    "providers": {"a": {"protocol": "mock"}, "b": {"protocol": "mock"}},
    "models": {
        "default": {"targets": [{"provider": "a", "model": "m1"}]},
        "two": {"targets": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]},
    },
}


class Harness:
    """A pipeline built through the public builder, with a scripted executor and captured output."""

    def __init__(self, *hooks: Tuple[str, Any], script: Any = (), per_provider: Optional[Dict[str, Any]] = None,
                 observers: Any = ()) -> None:
        self.executor = MockExecutor(script, per_provider=per_provider)
        self.settlements = CapturedSettlements()
        self.events = CapturedEvents()

        def configure(lm: Any) -> None:
            lm.executor(self.executor)
            for kind, hook in hooks:
                getattr(lm, kind)(hook)
            lm.settlement_recorder(self.settlements)
            for obs in observers:
                lm.observe_hook(obs)
            lm.observe_hook(self.events)

        self.app = (App.builder().config(parse_config(CONFIG, "<test>")).inline_observers()
                    .language_model(configure).build())
        self.pipeline = self.app.pipeline

    def run(self, text: str = "hello", *, model: str = "default", stream: bool = False) -> Any:
        self.ctx = PipelineContext("req-1", "openai_chat", prompt(text, model=model, stream=stream), {})
        return self.pipeline.run(self.ctx)


def prompt(text: str = "hello", *, model: str = "default", stream: bool = False, system: str = "") -> Prompt:
    return Prompt(model=model, messages=(Message(Role.USER, (TextPart(text),)),),
                  system=(TextPart(system),) if system else (), stream=stream)


def gen(text: str = "hi", usage: Optional[Usage] = None) -> Generation:
    return Generation("g1", "m1", (TextPart(text),), FinishReason.STOP, usage or Usage(input_tokens=3, output_tokens=2))


def text_parts(*pieces: str) -> list:
    parts: list = [ResponseStart("s1", "m1"), TextStart(0)]
    parts += [TextDelta(0, p) for p in pieces]
    parts += [TextEnd(0), UsageUpdate(Usage(input_tokens=4, output_tokens=len(pieces))), Finish(FinishReason.STOP)]
    return parts


class Pre(PreRequestHook):
    def __init__(self, name: str, log: List[str], decision: Optional[HookDecision] = None) -> None:
        self.name, self.log, self.decision = name, log, decision or HookDecision.allow()

    def check(self, ctx: PipelineContext) -> HookDecision:
        self.log.append(self.name)
        return self.decision


# --- ordering ----------------------------------------------------------------


def test_hooks_run_in_registration_order_across_stages():
    log: List[str] = []

    class Route(RouteHook):
        def __init__(self, name: str) -> None:
            self.name = name

        def resolve(self, chain, ctx):
            log.append(self.name)
            return chain

    class Exec(ExecutionHook):
        def __init__(self, name: str) -> None:
            self.name = name

        def on_success(self, ctx, result):
            log.append(self.name)
            return None

    h = Harness(("pre_request_hook", Pre("pre2", log)), ("route_hook", Route("route1")),
                ("pre_request_hook", Pre("pre1", log)), ("execution_hook", Exec("exec2")),
                ("route_hook", Route("route2")), ("execution_hook", Exec("exec1")))
    out = h.run()
    assert isinstance(out, Generation)
    assert log == ["pre2", "pre1", "route1", "route2", "exec2", "exec1"]
    phases = [e.phase.value for e in h.events.named("after_phase")]
    assert phases == ["pre_request", "route", "execute", "settle"]
    methods = [m for m, _e in h.events.items]
    assert methods[0] == "on_request_start" and methods[-1] == "on_request_end"


def test_route_hook_can_reorder_and_drop_targets():
    class Reverse(RouteHook):
        def resolve(self, chain, ctx):
            return list(reversed(chain))

    h = Harness(("route_hook", Reverse()))
    h.run(model="two")
    assert [c.target.provider for c in h.executor.calls] == ["b"]

    class Empty(RouteHook):
        def resolve(self, chain, ctx):
            return []

    h = Harness(("route_hook", Empty()))
    with pytest.raises(Exception) as info:
        h.run()
    assert getattr(info.value, "status", None) == 503
    assert h.executor.calls == []
    assert len(h.settlements.items) == 1 and h.settlements.items[0].status == 503


# --- deny ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason, status, kind",
    [
        (DenyReason.unauthorized(), 401, "authentication"),
        (DenyReason.forbidden(), 403, "permission"),
        (DenyReason.payment_required(), 402, "budget"),
        (DenyReason.rate_limited("slow down", retry_after=7.5), 429, "rate_limit"),
        (DenyReason.guardrail_violation(), 400, "guardrail"),
        (DenyReason.bad_request("bad"), 400, "invalid_request"),
        (DenyReason.custom(418, "teapot"), 418, "custom"),
        (DenyReason.custom(503, "maintenance"), 503, "custom"),
    ],
)
def test_first_deny_stops_with_its_status_and_no_settlement(reason, status, kind):
    log: List[str] = []
    h = Harness(("pre_request_hook", Pre("first", log)),
                ("pre_request_hook", Pre("denier", log, HookDecision.deny(reason))),
                ("pre_request_hook", Pre("never", log)))
    with pytest.raises(HookDenied) as info:
        h.run()
    err = info.value
    assert err.status == status and err.kind == kind and err.message == reason.message
    assert log == ["first", "denier"]
    assert h.executor.calls == []
    assert h.settlements.items == []
    if status == 429:
        assert err.retry_after == 7.5
    else:
        assert err.retry_after is None
    end = h.events.named("on_request_end")
    assert len(end) == 1 and end[0].outcome == "denied" and end[0].status == status


def test_custom_deny_status_must_be_an_error_status():
    with pytest.raises(ValueError):
        DenyReason.custom(200, "fine")
    with pytest.raises(TypeError):
        HookDecision.deny("no")  # type: ignore[arg-type]


def test_crashing_pre_request_hook_fails_closed():
    class Boom(PreRequestHook):
        def check(self, ctx):
            raise KeyError("bug")

    h = Harness(("pre_request_hook", Boom()))
    with pytest.raises(InternalError):
        h.run()
    assert h.executor.calls == []


# --- respond -------------------------------------------------------------------


def test_respond_short_circuits_but_is_settled_and_observed():
    canned = gen("from cache", Usage(input_tokens=0, output_tokens=0))
    log: List[str] = []
    h = Harness(("pre_request_hook", Pre("cache", log, HookDecision.respond(canned))),
                ("pre_request_hook", Pre("never", log)))
    out = h.run()
    assert out is canned
    assert log == ["cache"]
    assert h.executor.calls == []
    [s] = h.settlements.items
    assert s.outcome == "success" and s.provider is None and s.attempts == () and s.cost_micro_usd == 0
    assert len(h.events.named("on_request_end")) == 1


def test_respond_short_circuits_a_stream_too():
    seen: List[Any] = []

    class Tap(StreamHook):
        def on_part(self, ctx, part):
            seen.append(part)
            return StreamAction.pass_()

    h = Harness(("pre_request_hook", Pre("cache", [], HookDecision.respond(gen("cached text")))),
                ("stream_hook", Tap()))
    out = h.run(stream=True)
    assert isinstance(out, PipelineStream)
    parts = list(out)
    assert "".join(p.text for p in parts if isinstance(p, TextDelta)) == "cached text"
    assert isinstance(parts[-1], Finish)
    assert seen == parts
    assert h.executor.calls == []
    [s] = h.settlements.items
    assert s.outcome == "success" and s.streamed
    # Settled with the hook's own usage, as without a stream; a cache hit costs nothing (it was logged
    # as unpriced, while the budget counted it as free).
    assert (s.usage.input_tokens, s.usage.output_tokens, s.cost_micro_usd) == (3, 2, 0)


def test_respond_usage_is_settled_alike_with_and_without_stream():
    free = Generation("g", "cache", (TextPart("cached answer"),), FinishReason.STOP, Usage(reported=False))
    for stream in (False, True):
        h = Harness(("pre_request_hook", Pre("cache", [], HookDecision.respond(free))))
        out = h.run(stream=stream)
        if stream:
            list(out)
        [s] = h.settlements.items
        assert (s.usage.total, s.cost_micro_usd, s.provider) == (0, 0, None), stream


def test_a_responded_answer_passes_the_execution_hooks_as_an_upstreams_would():
    """A cache hit or canned answer is checked like any answer: a redacting hook rewrites it, a blocking one
    refuses it (settled as failed, free), so a non-streaming client cannot get what a streaming one would not."""
    class Redact(ExecutionHook):
        def on_success(self, ctx, result):
            return dataclasses.replace(result, parts=(TextPart(result.text().replace("secret", "[x]")),))

    h = Harness(("pre_request_hook", Pre("cache", [], HookDecision.respond(gen("a cached secret")))),
                ("execution_hook", Redact()))
    out = h.run()
    assert out.text() == "a cached [x]" and h.executor.calls == []
    [s] = h.settlements.items
    assert s.outcome == "success" and s.provider is None

    class Block(ExecutionHook):
        def on_success(self, ctx, result):
            raise HookDenied(DenyReason.guardrail_violation("blocked"))

    h = Harness(("pre_request_hook", Pre("cache", [], HookDecision.respond(gen("a cached secret")))),
                ("execution_hook", Block()))
    with pytest.raises(HookDenied):
        h.run()
    [s] = h.settlements.items
    assert s.outcome != "success" and s.cost_micro_usd == 0 and s.status == 400


def test_respond_requires_a_generation():
    with pytest.raises(TypeError):
        HookDecision.respond("text")  # type: ignore[arg-type]


# --- settlement on failure -------------------------------------------------------


def test_upstream_failure_is_settled_exactly_once():
    err = UpstreamStatusError("a returned HTTP 400: bad", provider="a", upstream_status=400, retriable=False,
                              status=400)
    h = Harness(script=[err])
    with pytest.raises(UpstreamStatusError):
        h.run()
    [s] = h.settlements.items
    assert s.outcome == "upstream_error" and s.status == 400 and s.provider == "a"
    assert len(s.attempts) == 1 and not s.attempts[0].ok and s.attempts[0].status == 400


def test_retriable_failure_falls_back_and_settles_once_with_history():
    h = Harness(per_provider={"a": [UpstreamConnectionError("a down", provider="a")], "b": [gen("from b")]})
    out = h.run(model="two")
    assert out.text() == "from b"
    [s] = h.settlements.items
    assert s.outcome == "success" and s.provider == "b"
    assert [(a.provider, a.ok) for a in s.attempts] == [("a", False), ("b", True)]


def test_all_targets_failing_merges_errors_and_settles_once():
    h = Harness(per_provider={"a": [UpstreamConnectionError("a down", provider="a")],
                              "b": [UpstreamConnectionError("b down", provider="b")]})
    with pytest.raises(AllTargetsFailed) as info:
        h.run(model="two")
    assert info.value.status == 502
    [s] = h.settlements.items
    assert s.outcome == "upstream_error" and len(s.attempts) == 2


def test_stream_failure_before_first_part_is_settled_once():
    h = Harness(script=[UpstreamStatusError("x", provider="a", upstream_status=429, retriable=True, status=429,
                                            retry_after=3)])
    with pytest.raises(UpstreamStatusError) as info:
        h.run(stream=True)
    assert info.value.status == 429
    assert len(h.settlements.items) == 1 and h.settlements.items[0].status == 429


def test_upstream_error_mid_stream_settles_failed_once():
    ends: List[Outcome] = []

    class End(StreamHook):
        def on_part(self, ctx, part):
            return StreamAction.pass_()

        def on_stream_end(self, ctx, outcome):
            ends.append(outcome)

    parts = text_parts("a", "b")[:3] + [UpstreamConnectionError("cut", provider="a")]
    h = Harness(("stream_hook", End()), script=[parts])
    stream = h.run(stream=True)
    got = []
    with pytest.raises(UpstreamConnectionError):
        for p in stream:
            got.append(p)
    assert len(got) == 3
    stream.close()
    assert ends == [Outcome.UPSTREAM_ERROR]
    [s] = h.settlements.items
    assert s.outcome == "upstream_error" and s.status == 502


# --- client stops reading ------------------------------------------------------------


def test_client_stops_reading_stream_is_settled_once_as_disconnected():
    ends: List[Outcome] = []
    closed: List[bool] = []

    def upstream_parts():
        try:
            yield from text_parts("one ", "two ", "three")
        finally:
            closed.append(True)

    class End(StreamHook):
        def on_part(self, ctx, part):
            return StreamAction.pass_()

        def on_stream_end(self, ctx, outcome):
            ends.append(outcome)

    h = Harness(("stream_hook", End()), script=[lambda target, p: None])
    h.executor.stream = lambda target, p, ctx: upstream_parts()  # type: ignore[method-assign]
    stream = h.run(stream=True)
    it = iter(stream)
    first = next(it)
    assert isinstance(first, ResponseStart)
    stream.close()
    stream.close()  # idempotent
    assert ends == [Outcome.CLIENT_DISCONNECTED]
    assert closed == [True], "the upstream connection must be closed"
    [s] = h.settlements.items
    assert s.outcome == "client_disconnected"
    assert s.usage.total_input > 0  # estimated from the prompt: the caller is still billed


def test_stream_closed_before_any_part_is_still_settled():
    ends: List[Outcome] = []

    class End(StreamHook):
        def on_part(self, ctx, part):
            return StreamAction.pass_()

        def on_stream_end(self, ctx, outcome):
            ends.append(outcome)

    h = Harness(("stream_hook", End()), script=[text_parts("x")])
    stream = h.run(stream=True)
    stream.close()
    assert ends == [Outcome.CLIENT_DISCONNECTED]
    [s] = h.settlements.items
    assert s.outcome == "client_disconnected"


def test_completed_stream_settles_with_reported_usage():
    h = Harness(script=[text_parts("a", "b", "c")])
    stream = h.run(stream=True)
    parts = list(stream)
    stream.close()
    assert sum(isinstance(p, TextDelta) for p in parts) == 3
    [s] = h.settlements.items
    assert s.outcome == "success" and s.usage.output_tokens == 3 and s.usage.input_tokens == 4
    assert s.ttft_ms is not None


# --- stream hooks ------------------------------------------------------------------------


class Upper(StreamHook):
    def interest(self):
        return StreamInterest.TEXT

    def on_part(self, ctx, part):
        if isinstance(part, TextDelta):
            return StreamAction.replace([TextDelta(part.index, part.text.upper())])
        return StreamAction.pass_()


class DropWord(StreamHook):
    def __init__(self, word: str) -> None:
        self.word = word
        self.ends: List[Outcome] = []

    def on_part(self, ctx, part):
        if isinstance(part, TextDelta) and part.text.strip().lower() == self.word:
            return StreamAction.drop()
        return StreamAction.pass_()

    def on_stream_end(self, ctx, outcome):
        self.ends.append(outcome)


def _text(parts) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextDelta))


def test_stream_hooks_chain_pass_replace_drop():
    drop = DropWord("SECRET")  # runs after Upper: sees upper-cased text
    drop.word = "secret"
    h = Harness(("stream_hook", Upper()), ("stream_hook", drop),
                script=[text_parts("keep ", "secret", " end")])
    stream = h.run(stream=True)
    parts = list(stream)
    assert _text(parts) == "KEEP  END"
    assert drop.ends == [Outcome.SUCCESS]
    assert h.settlements.items[0].outcome == "success"


def test_stream_hook_replace_can_expand_into_several_parts():
    class Split(StreamHook):
        def on_part(self, ctx, part):
            if isinstance(part, TextDelta) and len(part.text) > 1:
                return StreamAction.replace([TextDelta(part.index, c) for c in part.text])
            return StreamAction.pass_()

    h = Harness(("stream_hook", Split()), script=[text_parts("abc")])
    parts = list(h.run(stream=True))
    assert [p.text for p in parts if isinstance(p, TextDelta)] == ["a", "b", "c"]


def test_stream_interest_filters_parts():
    seen: List[type] = []

    class UsageOnly(StreamHook):
        def interest(self):
            return StreamInterest.USAGE

        def on_part(self, ctx, part):
            seen.append(type(part))
            return StreamAction.pass_()

    h = Harness(("stream_hook", UsageOnly()), script=[text_parts("a")])
    list(h.run(stream=True))
    assert seen == [UsageUpdate]


def test_stream_hook_abort_ends_stream_with_error_and_settles_aborted():
    class Abort(StreamHook):
        def __init__(self) -> None:
            self.ends: List[Outcome] = []

        def on_part(self, ctx, part):
            if isinstance(part, TextDelta) and "bad" in part.text:
                return StreamAction.abort(StreamAborted("blocked by policy", status=400))
            return StreamAction.pass_()

        def on_stream_end(self, ctx, outcome):
            self.ends.append(outcome)

    abort = Abort()
    later = DropWord("never")
    h = Harness(("stream_hook", abort), ("stream_hook", later), script=[text_parts("ok ", "bad", "more")])
    stream = h.run(stream=True)
    got = []
    with pytest.raises(StreamAborted) as info:
        for p in stream:
            got.append(p)
    stream.close()
    assert info.value.message == "blocked by policy"
    assert _text(got) == "ok "
    assert abort.ends == [Outcome.ABORTED] and later.ends == [Outcome.ABORTED]
    [s] = h.settlements.items
    assert s.outcome == "aborted" and s.status == 400


def test_on_stream_end_failure_does_not_break_settlement():
    class BadEnd(StreamHook):
        def on_part(self, ctx, part):
            return StreamAction.pass_()

        def on_stream_end(self, ctx, outcome):
            raise RuntimeError("bug in plugin")

    h = Harness(("stream_hook", BadEnd()), script=[text_parts("a")])
    assert _text(list(h.run(stream=True))) == "a"
    assert len(h.settlements.items) == 1


# --- observers ----------------------------------------------------------------------------


class Exploding(ObserveHook):
    def __init__(self) -> None:
        self.calls = 0

    def _boom(self, event: Any) -> None:
        self.calls += 1
        raise RuntimeError("observer bug")

    on_request_start = after_phase = on_hop_start = on_hop_end = on_stream_part = on_request_end = _boom


def test_observer_exceptions_are_isolated_and_counted():
    bad = Exploding()
    h = Harness(observers=[bad], script=[gen("unchanged")])
    out = h.run()
    assert out.text() == "unchanged"
    assert bad.calls > 0
    assert h.pipeline.observers.errors == bad.calls
    assert len(h.settlements.items) == 1
    # the well-behaved observer registered after it still saw everything
    assert h.events.named("on_request_end")[0].success

    bad2 = Exploding()
    h2 = Harness(observers=[bad2], script=[text_parts("x", "y")])
    assert _text(list(h2.run(stream=True))) == "xy"
    assert h2.pipeline.observers.errors == bad2.calls > 0


def test_observers_see_frozen_snapshots():
    h = Harness(script=[text_parts("x")])
    list(h.run(stream=True))
    assert h.events.items
    for _method, event in h.events.items:
        assert dataclasses.is_dataclass(event)
        field = dataclasses.fields(event)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field, "changed")
    end = h.events.named("on_request_end")[0]
    assert end.outcome == "success" and end.usage.output_tokens == 1
    assert [e.hop for e in h.events.named("on_hop_start")] == [0]


def test_observer_pool_mode_never_blocks_and_drains():
    seen: List[str] = []

    class Slowish(ObserveHook):
        def on_request_end(self, event):
            seen.append(event.request_id)

    app = (App.builder().config(parse_config(CONFIG, "<test>"))
           .language_model(lambda lm: lm.executor(MockExecutor()).observe_hook(Slowish())).build())
    ctx = PipelineContext("req-pool", "openai_chat", prompt(), {})
    app.pipeline.run(ctx)
    app.pipeline.observers.drain(5)
    assert seen == ["req-pool"]


# --- registration --------------------------------------------------------------------------


class MCPHookImpl(MCPPreRequestHook):
    def check(self, ctx):
        return None


def test_mcp_hook_on_language_model_pipeline_is_type_error():
    builder = App.builder().language_model_builder()
    with pytest.raises(TypeError, match="another pipeline"):
        builder.pre_request_hook(MCPHookImpl())
    with pytest.raises(TypeError):
        builder.observe_hook(MCPHookImpl())


def test_language_model_hook_on_mcp_pipeline_is_type_error():
    with pytest.raises(TypeError):
        App.builder().mcp_builder().pre_request_hook(Pre("x", []))


def test_object_not_implementing_the_contract_is_type_error():
    class Duck:
        def check(self, ctx):
            return HookDecision.allow()

    builder = App.builder().language_model_builder()
    with pytest.raises(TypeError, match="not a PreRequestHook"):
        builder.pre_request_hook(Duck())
    with pytest.raises(TypeError, match="not a StreamHook"):
        builder.stream_hook(Pre("x", []))


def test_wrong_arity_is_type_error_naming_the_hook():
    class NoCtx(PreRequestHook):
        def check(self):  # type: ignore[override]
            return HookDecision.allow()

    class TooMany(SettlementRecorder):
        def record(self, settlement, extra):  # type: ignore[override]
            pass

    class BadObserver(ObserveHook):
        def on_request_end(self):  # type: ignore[override]
            pass

    builder = App.builder().language_model_builder()
    with pytest.raises(TypeError, match="NoCtx"):
        builder.pre_request_hook(NoCtx())
    with pytest.raises(TypeError, match="TooMany"):
        builder.settlement_recorder(TooMany())
    with pytest.raises(TypeError, match="on_request_end"):
        builder.observe_hook(BadObserver())


def test_type_error_names_the_plugin():
    from routeplane.app import Plugin, PluginId

    class Broken(Plugin):
        id = PluginId("broken-plugin")

        def install(self, app):
            app.language_model_builder().pre_request_hook(object())

    with pytest.raises(TypeError, match="broken-plugin"):
        App.builder().plugin(Broken())


# --- prompt lock and execution hooks -----------------------------------------------------


def test_prompt_replaceable_in_pre_request_and_read_only_after():
    errors: List[Exception] = []

    class Rewrite(PreRequestHook):
        def check(self, ctx):
            ctx.replace_prompt(ctx.prompt.replace(messages=(Message(Role.USER, (TextPart("rewritten"),)),)))
            return HookDecision.allow()

    class TryRewrite(RouteHook):
        def resolve(self, chain, ctx):
            try:
                ctx.replace_prompt(ctx.prompt.replace(model="other"))
            except RuntimeError as exc:
                errors.append(exc)
            return chain

    h = Harness(("pre_request_hook", Rewrite()), ("route_hook", TryRewrite()))
    h.run("original")
    assert h.executor.calls[0].prompt.messages[0].text() == "rewritten"
    assert h.executor.calls[0].prompt.model == "default"
    assert len(errors) == 1 and "read-only" in str(errors[0])
    with pytest.raises(RuntimeError):
        h.ctx.replace_prompt(prompt("late"))


def test_prompt_is_locked_even_after_a_deny():
    h = Harness(("pre_request_hook", Pre("d", [], HookDecision.deny(DenyReason.forbidden()))))
    with pytest.raises(HookDenied):
        h.run()
    with pytest.raises(RuntimeError):
        h.ctx.replace_prompt(prompt("late"))


def test_execution_hook_can_veto_fallback():
    seen: List[Any] = []

    class Veto(ExecutionHook):
        def on_failure(self, ctx, error):
            seen.append(error)
            return FallbackDecision.fail()

    h = Harness(("execution_hook", Veto()), per_provider={"a": [UpstreamConnectionError("a down", provider="a")],
                                                         "b": [gen("from b")]})
    with pytest.raises(UpstreamConnectionError):
        h.run(model="two")
    assert [c.target.provider for c in h.executor.calls] == ["a"]
    assert len(seen) == 1
    [s] = h.settlements.items
    assert s.outcome == "upstream_error" and len(s.attempts) == 1


def test_execution_hook_veto_with_its_own_error():
    class Veto(ExecutionHook):
        def on_failure(self, ctx, error):
            return FallbackDecision.fail(UpstreamStatusError("policy says stop", provider="a", status=503))

    h = Harness(("execution_hook", Veto()), per_provider={"a": [UpstreamConnectionError("a down", provider="a")]})
    with pytest.raises(UpstreamStatusError, match="policy says stop"):
        h.run(model="two")
    assert len(h.executor.calls) == 1
    assert len(h.settlements.items) == 1


def test_execution_hook_allows_fallback_by_default_and_can_replace_result():
    class Redact(ExecutionHook):
        def on_success(self, ctx, result):
            return dataclasses.replace(result, parts=(TextPart(result.text().replace("secret", "[x]")),))

    h = Harness(("execution_hook", Redact()), per_provider={"a": [UpstreamConnectionError("a down", provider="a")],
                                                           "b": [gen("a secret answer")]})
    out = h.run(model="two")
    assert out.text() == "a [x] answer"
    assert [c.target.provider for c in h.executor.calls] == ["a", "b"]


def test_an_answer_refused_by_an_execution_hook_is_billed_its_estimate_when_the_upstream_sent_no_usage():
    """The upstream was called and paid; a hook that refuses its answer (a guardrail block) must not
    make the settlement free. Streams bill an input estimate in the same case."""
    class Block(ExecutionHook):
        def on_success(self, ctx, result):
            raise HookDenied(DenyReason.guardrail_violation("blocked"))

    unreported = gen("x" * 4000, Usage(reported=False))
    h = Harness(("execution_hook", Block()), per_provider={"a": [unreported]})
    with pytest.raises(HookDenied):
        h.run(model="two")
    [s] = h.settlements.items
    assert s.usage.input_tokens > 0 and s.usage.output_tokens >= 900 and not s.usage.reported


def test_crashing_settlement_recorder_is_isolated():
    class Bad(SettlementRecorder):
        def record(self, settlement):
            raise RuntimeError("db down")

    h = Harness(("settlement_recorder", Bad()))
    out = h.run()
    assert isinstance(out, Generation)
    assert h.pipeline.settlement_errors == 1
    assert len(h.settlements.items) == 1  # the recorder after it still ran


def test_missing_upstream_usage_is_estimated_never_zero():
    no_usage = Generation("g", "m1", (TextPart("twelve chars"),), FinishReason.STOP, Usage(reported=False))
    h = Harness(script=[no_usage])
    h.run("a prompt of some length")
    [s] = h.settlements.items
    assert not s.usage.reported
    assert s.usage.input_tokens > 0 and s.usage.output_tokens == 3

    h = Harness(script=[[ResponseStart("s", "m1"), TextStart(0), TextDelta(0, "twelve chars"), TextEnd(0),
                         Finish(FinishReason.STOP)]])
    list(h.run("a prompt of some length", stream=True))
    [s] = h.settlements.items
    assert not s.usage.reported and s.usage.input_tokens > 0 and s.usage.output_tokens == 3


def test_execution_hook_rejecting_an_opened_stream_closes_the_upstream():
    closed: List[bool] = []

    def upstream_parts():
        try:
            yield from text_parts("a", "b")
        finally:
            closed.append(True)

    class Reject(ExecutionHook):
        def on_success(self, ctx, result):
            raise StreamAborted("not this one", status=403)

    h = Harness(("execution_hook", Reject()))
    h.executor.stream = lambda target, p, ctx: upstream_parts()  # type: ignore[method-assign]
    with pytest.raises(StreamAborted):
        h.run(stream=True)
    assert closed == [True]
    [s] = h.settlements.items
    assert s.status == 403


def test_slow_observers_never_slow_a_request_and_overflow_is_counted():
    import threading
    import time

    release = threading.Event()

    class Stuck(ObserveHook):
        def on_request_start(self, event):
            release.wait(5)

    config = dict(CONFIG, server={"observer_threads": 1, "observer_queue": 2})
    app = (App.builder().config(parse_config(config, "<test>"))
           .language_model(lambda lm: lm.executor(MockExecutor()).observe_hook(Stuck())).build())
    try:
        t0 = time.monotonic()
        for i in range(5):
            out = app.pipeline.run(PipelineContext(f"req-{i}", "openai_chat", prompt(), {}))
            assert out.text() == "You said: hello"
        assert time.monotonic() - t0 < 2.0
        assert app.pipeline.observers.dropped > 0
    finally:
        release.set()
        app.pipeline.observers.drain(5)
