"""The plugin author's kit (`routeplane.testing`) itself: contract checks, wires, results, callers, config."""

from __future__ import annotations

from typing import Any, List

import pytest

from routeplane import Plugin, PluginId
from routeplane.config import ConfigError
from routeplane.hooks.language_model import (
    ExecutionHook,
    HookDecision,
    Outcome,
    PreRequestHook,
    StreamHook,
    StreamInterest,
)
from routeplane.language_model.context import ANONYMOUS, Identity
from routeplane.language_model.types import Generation, ReasoningPart, ResponseStart, TextPart
from routeplane.request_log import RequestLogPlugin
from routeplane.testing import DEFAULT_CONFIG, WIRE_PATHS, Gateway, Result, check_plugin, run_request

# --- check_plugin and plugins that answer themselves ----------------------------------------------


class CacheHook(PreRequestHook):
    """Answers a prompt it has seen before itself: the shape of every response cache."""

    def __init__(self) -> None:
        self.seen: set = set()

    def check(self, ctx: Any) -> HookDecision:
        key = ctx.prompt.messages[-1].text()
        if key in self.seen:
            return HookDecision.respond(Generation("cached", ctx.prompt.model, (TextPart("from the cache"),)))
        self.seen.add(key)
        return HookDecision.allow()


class ResponseCache(Plugin):
    id = PluginId("response-cache")

    def __init__(self) -> None:
        self.hook = CacheHook()

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(self.hook)


class CannedAnswers(Plugin):
    """Answers every request itself: the upstream is never called."""

    id = PluginId("canned")

    def install(self, app: Any) -> None:
        class Canned(PreRequestHook):
            def check(self, ctx: Any) -> HookDecision:
                return HookDecision.respond(Generation("canned", ctx.prompt.model, (TextPart("canned"),)))

        app.language_model_builder().pre_request_hook(Canned())


def test_the_cache_itself_works():
    gw = Gateway(plugins=[ResponseCache()])
    assert gw.chat("what time is it").text == "You said: what time is it"
    again = gw.chat("what time is it")
    assert again.text == "from the cache" and len(again.settlements) == 1


def test_check_plugin_passes_a_correct_response_cache():
    report = check_plugin(ResponseCache())
    assert report.checks == ["non-streaming request", "streaming request", "failing upstream", "client disconnect"]
    assert report.hooks["pre_request_hook"] == 1


def test_check_plugin_sends_a_distinct_prompt_per_check_also_for_a_given_request():
    plugin = ResponseCache()
    request = {"model": "default", "messages": [{"role": "system", "content": "be brief"},
                                                {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    check_plugin(plugin, request=request)
    assert len(plugin.hook.seen) == 4, plugin.hook.seen
    assert request["messages"][1]["content"] == [{"type": "text", "text": "hi"}], "the caller's body is not changed"


def test_check_plugin_says_when_the_plugin_answered_without_the_upstream():
    with pytest.raises(AssertionError) as info:
        check_plugin(CannedAnswers())
    message = str(info.value)
    assert "answered without calling the upstream (a cache?)" in message and "request=" in message
    assert "must not look like success" not in message


# --- every wire, and Result.text ---------------------------------------------------------------

BODIES = {
    "openai_chat": {"model": "default", "messages": [{"role": "user", "content": "hi there"}]},
    "anthropic_messages": {"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "hi there"}]},
    "openai_responses": {"model": "default", "input": "hi there"},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]},
}


def _stream(gw: Gateway, wire: str, **kw: Any) -> Result:
    if wire == "gemini":
        return gw.request(BODIES[wire], wire=wire, stream=True, **kw)
    return gw.request({**BODIES[wire], "stream": True}, wire=wire, **kw)


@pytest.mark.parametrize("wire", sorted(BODIES))
def test_every_wire_answers_with_its_text_plain_and_streamed(wire):
    gw = Gateway()
    plain = gw.request(BODIES[wire], wire=wire)
    assert plain.status == 200 and not plain.streamed
    assert plain.text == "You said: hi there"
    streamed = _stream(gw, wire)
    assert streamed.status == 200 and streamed.streamed
    assert streamed.text == "You said: hi there"
    assert [s.outcome for s in plain.settlements + streamed.settlements] == ["success", "success"]


@pytest.mark.parametrize("wire", sorted(BODIES))
def test_text_leaves_reasoning_out(wire):
    answer = Generation("g1", "echo", (ReasoningPart("let me think"), TextPart("the answer")))
    gw = Gateway(script=[answer, answer])
    assert gw.request(BODIES[wire], wire=wire).text == "the answer"
    assert _stream(gw, wire).text == "the answer"


def test_gemini_model_is_in_the_url():
    gw = Gateway()
    r = gw.request(BODIES["gemini"], wire="gemini", model="mock-echo")
    assert r.status == 200 and r.settlements[0].route == "mock-echo"
    unsse = gw.request(BODIES["gemini"], path="/v1beta/models/default:streamGenerateContent")
    assert unsse.wire == "gemini" and unsse.text == "You said: hi there"  # one JSON array of chunks


def test_the_wire_of_a_path_is_inferred_for_text():
    gw = Gateway()
    assert gw.request(BODIES["openai_responses"], path="/v1/responses").text == "You said: hi there"
    assert gw.request(BODIES["anthropic_messages"], path=WIRE_PATHS["anthropic_messages"]).text == \
        "You said: hi there"


def test_unknown_wire_is_a_value_error_naming_the_wires():
    with pytest.raises(ValueError) as info:
        Gateway().request(BODIES["openai_chat"], wire="smtp")
    for wire in ("openai_chat", "anthropic_messages", "openai_responses", "gemini"):
        assert wire in str(info.value)
    with pytest.raises(ValueError, match="gemini"):
        Gateway().request(BODIES["openai_chat"], wire="openai_chat", model="default")


def test_text_of_an_error_shows_the_error():
    r = Gateway().request({"model": "no-such-route", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 404
    with pytest.raises(ValueError, match="404"):
        _ = r.text


def test_result_headers_are_case_insensitive():
    r = Gateway().chat("hi")
    assert "X-Request-Id" in r.headers and "x-request-id" in r.headers
    assert r.headers["X-REQUEST-ID"] == r.headers["x-request-id"]
    assert r.headers.get("content-type") == "application/json"
    assert "x-request-id" in Result(200, {"X-Request-Id": "r1"}, b"{}").headers


# --- callers, and config sections ---------------------------------------------------------------


class WhoIsCalling(PreRequestHook, StreamHook):
    def __init__(self) -> None:
        self.seen: List[Identity] = []
        self.at_end: List[Identity] = []

    def check(self, ctx: Any) -> HookDecision:
        self.seen.append(ctx.identity)
        return HookDecision.allow()

    def on_stream_end(self, ctx: Any, outcome: Outcome) -> None:
        self.at_end.append(ctx.identity)


def test_a_request_runs_as_the_given_caller():
    who = WhoIsCalling()
    gw = Gateway(hooks=[who])
    alice = Identity(account_id="acct-alice", key_id="key-1", kind="api_key", models=("default",))
    assert gw.chat("hi", identity=alice).status == 200
    assert gw.chat("hi").status == 200
    assert _stream(gw, "anthropic_messages", identity=alice).status == 200
    assert who.seen == [alice, ANONYMOUS, alice]
    assert who.at_end == [alice]
    # The kit adds no hook of its own: dry runs and hook statistics show the plugins' hooks only.
    assert [pid for pid, _h in gw.app.pipeline.hooks.pre_request] == ["app"]
    with pytest.raises(TypeError):
        gw.chat("hi", identity={"account_id": "acct-alice"})
    once = WhoIsCalling()
    assert run_request(BODIES["openai_chat"], identity=alice, hooks=[once]).status == 200
    assert once.seen == [alice]


def test_config_with_auth_is_refused_clearly():
    config = {"providers": {"mock": {"protocol": "mock"}},
              "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
              "auth": {"mode": "api_keys"}}
    with pytest.raises(ConfigError, match="identity="):
        Gateway(config=config)
    Gateway(config={**config, "auth": {"mode": "none"}})  # auth off is what the kit does anyway


def test_config_plugins_section_is_honoured():
    base = {"providers": {"mock": {"protocol": "mock"}},
            "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}}
    gw = Gateway(config={**base, "plugins": {"request_log": {"format": "json"}}})
    logs = [p for p in gw.app.plugins if isinstance(p, RequestLogPlugin)]
    assert [p.format for p in logs] == ["json"]
    assert Gateway(config={**base, "plugins": {"request_log": {"enabled": False}}}).app.plugins == ()
    with pytest.raises(ConfigError, match="plugins.no-such-plugin"):
        Gateway(config={**base, "plugins": {"no-such-plugin": {}}})
    with pytest.raises(ConfigError, match="plugins.request_log"):
        Gateway(config={**base, "plugins": {"request_log": {"format": "xml"}}})


# --- hook contracts ----------------------------------------------------------------------------


def test_an_end_of_stream_hook_needs_no_on_part():
    class EndOnly(StreamHook):
        def __init__(self) -> None:
            self.outcomes: List[Outcome] = []

        def interest(self) -> StreamInterest:
            return StreamInterest.NONE

        def on_stream_end(self, ctx: Any, outcome: Outcome) -> None:
            self.outcomes.append(outcome)

    hook = EndOnly()
    gw = Gateway(hooks=[hook])
    assert gw.chat("hi", stream=True).text == "You said: hi"
    assert hook.outcomes == [Outcome.SUCCESS]


def test_on_success_of_a_stream_gets_what_its_docstring_says():
    class Seen(ExecutionHook):
        def __init__(self) -> None:
            self.results: List[Any] = []

        def on_success(self, ctx: Any, result: Any) -> None:
            self.results.append(result)

    hook = Seen()
    Gateway(hooks=[hook]).chat("hi", stream=True)
    first, rest = hook.results[0]
    assert isinstance(first, ResponseStart) and iter(rest) is rest
    doc = " ".join(ExecutionHook.__doc__.split())
    assert "`(first_part, iterator)`" in doc and "ResponseStart" in doc
    assert "the first stream part and a tuple" not in doc


def test_pre_request_docstring_names_the_metadata_api():
    doc = " ".join(PreRequestHook.__doc__.split())
    assert "ctx.plugin_metadata(plugin_id)" in doc and "ctx.metadata" not in doc


def test_check_plugin_with_a_config_section_for_the_plugin_it_checks() -> None:
    """Gateway installed the config's `plugins:` section and then the same plugin passed in `plugins=`:
    'a plugin with id ... is already installed'. The passed object wins; its section is its own."""
    from routeplane_guardrails import GuardrailsPlugin

    config = dict(DEFAULT_CONFIG, plugins={"guardrails": {"upgoing": {"api_keys": "block"}}})
    check_plugin(GuardrailsPlugin(), config=config)
