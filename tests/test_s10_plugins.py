"""Plugin-author ergonomics: text hold-back for stream hooks (routeplane.hooks.hold_back), and one hook vocabulary
in check_plugin's report and the builder."""

from __future__ import annotations

import random
import warnings
from typing import Any, List

import pytest

from routeplane import Plugin, PluginId
from routeplane.errors import GuardrailViolation
from routeplane.hooks.hold_back import HoldBackStreamHook, TextHoldBack
from routeplane.hooks.language_model import (
    HOOK_KINDS,
    ExecutionHook,
    ObserveHook,
    PreRequestHook,
    RouteHook,
    SettlementRecorder,
    StreamHook,
    StreamInterest,
)
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    OpaqueBlock,
    ReasoningDelta,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextStart,
    TokenLogprobs,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import WIRE_PATHS, Gateway, check_plugin, text_stream

KEY = "sk-" + "Ab3" * 7 + "x"  # 25 characters
KEY_PATTERN = r"sk-[A-Za-z0-9]{22}"


def run(hold_back: TextHoldBack, parts: List[StreamPart]) -> List[StreamPart]:
    out: List[StreamPart] = []
    for part in parts:
        out.extend(hold_back.feed(part))
    return out


def text_of(parts: List[StreamPart]) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextDelta))


def merged(parts: List[StreamPart]) -> List[Any]:
    """The parts with each run of TextDeltas as one string: the order a client sees, whatever the chunking."""
    out: List[Any] = []
    for p in parts:
        if isinstance(p, TextDelta) and out and isinstance(out[-1], str):
            out[-1] += p.text
        else:
            out.append(p.text if isinstance(p, TextDelta) else p)
    return out


# --- TextHoldBack: the buffer --------------------------------------------------------------------


def test_a_secret_split_across_two_deltas_is_replaced():
    hb = TextHoldBack(KEY_PATTERN, "[key]", hold=len(KEY) - 1)
    out = run(hb, text_stream(f"my key is {KEY[:10]}", f"{KEY[10:]}, keep it"))
    assert text_of(out) == "my key is [key], keep it"
    assert KEY[:4] not in text_of(out) and hb.rewrites == 1 and hb.held == 0


def test_clean_text_passes_whole_and_at_most_hold_characters_wait():
    text = "The quick brown fox jumps over the lazy dog. " * 5
    hb = TextHoldBack(KEY_PATTERN, "[key]", hold=24)
    received = released = 0
    for i in range(0, len(text), 7):
        chunk = text[i:i + 7]
        received += len(chunk)
        released += len(text_of(hb.feed(TextDelta(0, chunk))))
        assert received - released == min(24, received)
    assert text_of(hb.feed(TextEnd(0))) == text[released:]


def test_a_match_that_may_still_grow_is_held_whole():
    hb = TextHoldBack(r"sk-\w+", "[key]", hold=2)
    assert text_of(hb.feed(TextDelta(0, "a sk-abcdef"))) == "a "  # the match reaches the end: it may grow
    assert text_of(hb.feed(TextDelta(0, "ghij"))) == ""
    assert text_of(hb.feed(TextDelta(0, " then"))) == "[key] th"
    assert text_of(hb.feed(TextEnd(0))) == "en"


def test_any_chunking_gives_the_same_text_as_the_whole_answer():
    rng = random.Random(10)
    text = f"call {KEY} or {KEY}{KEY} then sk-short and {KEY[:-1]}! {KEY}"
    expected = TextHoldBack(KEY_PATTERN, "[key]", hold=0).rewrite_text(text)
    assert expected.count("[key]") == 4
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        out = run(TextHoldBack(KEY_PATTERN, "[key]", hold=len(KEY) - 1), text_stream(*chunks))
        assert text_of(out) == expected, chunks


def test_look_behinds_see_the_released_text():
    hb = TextHoldBack(r"\bkey\b", "***", hold=3)
    out = run(hb, text_stream("a monk", "ey and a ", "key"))
    assert text_of(out) == "a monkey and a ***"


def test_replacement_as_for_re_sub():
    hb = TextHoldBack(r"(\w+)@(\w+)\.com", lambda m: f"<{m.group(2)}>", hold=30)
    assert text_of(run(hb, text_stream("mail bob@exa", "mple.com now"))) == "mail <example> now"
    hb = TextHoldBack(r"(\w+)@example\.com", r"\1@…", hold=30)
    assert text_of(run(hb, text_stream("mail bob@exa", "mple.com now"))) == "mail bob@… now"


def test_parts_that_are_not_text_keep_their_order():
    hb = TextHoldBack(KEY_PATTERN, "[key]", hold=24)
    usage = UsageUpdate(Usage(1, output_tokens=2))
    logprobs = TokenLogprobs(0, "openai_chat", ({"token": "x"},), "x")
    assert hb.feed(TextStart(0)) == [TextStart(0)]
    assert hb.feed(TextDelta(0, "held text")) == []
    assert hb.feed(usage) == [usage] and hb.feed(logprobs) == [logprobs]  # no place in the text's order
    tool = ToolCallStart(1, "call_1", "lookup")
    assert hb.feed(tool) == [TextDelta(0, "held text"), tool]  # another block: after the held text
    assert hb.feed(ToolCallDelta(1, '{"k": "sk-"}')) == [ToolCallDelta(1, '{"k": "sk-"}')]  # JSON: untouched
    assert hb.feed(ReasoningDelta(2, KEY)) == [ReasoningDelta(2, KEY)]  # signed: untouched
    assert hb.feed(TextDelta(0, " more")) == []
    block = OpaqueBlock(3, "anthropic_messages", {"type": "web_search_tool_result"})
    assert hb.feed(block) == [TextDelta(0, " more"), block]
    assert hb.feed(TextDelta(0, "end")) == []
    finish = Finish(FinishReason.STOP)
    assert hb.feed(finish) == [TextDelta(0, "end"), finish]


def test_text_of_two_blocks_keeps_its_order():
    hb = TextHoldBack(KEY_PATTERN, "[key]", hold=24)
    out = run(hb, [TextStart(0), TextDelta(0, "first"), TextStart(1), TextDelta(1, "second"), TextDelta(0, " again"),
                   TextEnd(0), TextEnd(1)])
    assert out == [TextStart(0), TextDelta(0, "first"), TextStart(1), TextDelta(1, "second"),
                   TextDelta(0, " again"), TextEnd(0), TextEnd(1)]


def test_an_annotation_follows_the_text_before_it():
    hb = TextHoldBack(KEY_PATTERN, "[key]", hold=24)
    note = TextAnnotation(0, "anthropic_messages", {"type": "char_location", "cited_text": "born"})
    out = run(hb, [TextStart(0), TextDelta(0, "Shannon was born"), note, TextDelta(0, f" in 1916, {KEY[:5]}"),
                   TextDelta(0, KEY[5:] + " ok"), TextEnd(0)])
    assert merged(out) == [TextStart(0), "Shannon was born", note, " in 1916, [key] ok", TextEnd(0)]
    # An annotation inside a match goes out after the whole match.
    hb = TextHoldBack(KEY_PATTERN, "[key]", hold=24)
    out = run(hb, [TextDelta(0, "a " + KEY[:6]), note, TextDelta(0, KEY[6:] + " b"), TextEnd(0)])
    assert merged(out) == ["a [key]", note, " b", TextEnd(0)]


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="hold"):
        TextHoldBack("x", hold=-1)
    with pytest.raises(TypeError, match="pattern"):
        TextHoldBack(hold=3)


def test_a_subclass_may_find_spans_its_own_way():
    class Words(TextHoldBack):
        def __init__(self, words: List[str]) -> None:
            super().__init__(hold=max(map(len, words)) - 1)
            self.words = words

        def matches(self, text: str, start: int) -> Any:
            for word in self.words:
                at = text.find(word)
                while at >= 0:
                    yield at, at + len(word), "#" * len(word)
                    at = text.find(word, at + 1)

    out = run(Words(["alpha", "omega"]), text_stream("al", "pha to om", "ega"))
    assert text_of(out) == "##### to #####"


# --- HoldBackStreamHook through the test kit (end to end) -----------------------------------------


class RedactKeysInStream(HoldBackStreamHook):
    def __init__(self) -> None:
        super().__init__(KEY_PATTERN, "[key]", hold=len(KEY) - 1)

    def on_stream_end(self, ctx: Any, outcome: Any) -> None:
        ctx.plugin_metadata("redact-keys")["redacted"] = self.hold_back(ctx).rewrites


class RedactKeys(Plugin):
    id = PluginId("redact-keys")

    def install(self, app: Any) -> None:
        app.language_model_builder().stream_hook(RedactKeysInStream())


WIRE_BODIES = {
    "openai_chat": {"model": "default", "messages": [{"role": "user", "content": "x"}]},
    "anthropic_messages": {"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]},
    "openai_responses": {"model": "default", "input": "x"},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
}


@pytest.mark.parametrize("wire", sorted(WIRE_PATHS))
def test_a_plugin_on_the_hold_back_redacts_a_secret_split_across_two_upstream_chunks(wire):
    with Gateway(plugins=[RedactKeys()], script=[text_stream(f"your key: {KEY[:12]}", f"{KEY[12:]}. Bye")]) as gw:
        result = gw.request(WIRE_BODIES[wire], wire=wire, stream=True)
    assert result.status == 200 and result.streamed
    assert result.text == "your key: [key]. Bye"
    assert KEY[:12].encode() not in result.body and KEY[12:].encode() not in result.body
    (settlement,) = result.settlements
    assert settlement.outcome == "success" and settlement.metadata["redact-keys"] == {"redacted": 1}


def test_the_hold_back_plugin_keeps_the_plugin_contract():
    report = check_plugin(RedactKeys())
    assert report.hooks["stream_hook"] == 1 and "client disconnect" in report.checks


def test_two_hold_back_hooks_in_one_request_keep_their_own_text():
    hooks = [HoldBackStreamHook("secret", "******", hold=5), HoldBackStreamHook("plan", "####", hold=3)]
    with Gateway(hooks=hooks, script=[text_stream("my sec", "ret pl", "an")]) as gw:
        assert gw.chat("x", stream=True).text == "my ****** ####"


def test_a_replacement_that_raises_aborts_the_stream_in_the_wires_error_shape():
    def refuse(_match: Any) -> str:
        raise GuardrailViolation("The answer contained an API key.", code="guardrail_violation")

    with Gateway(hooks=[HoldBackStreamHook(KEY_PATTERN, refuse, hold=len(KEY) - 1)],
                 script=[text_stream(f"key {KEY[:3]}", KEY[3:])]) as gw:
        result = gw.chat("x", stream=True)
    errors = [e for e in result.sse if isinstance(e, dict) and "error" in e]
    assert errors and errors[0]["error"]["message"] == "The answer contained an API key."
    assert KEY[:3].encode() not in result.body
    assert [s.outcome for s in result.settlements] == ["aborted"]


def test_the_hold_back_hook_sees_every_part_that_may_follow_held_text():
    hook = HoldBackStreamHook("x", hold=0)
    assert hook.interest() == StreamInterest.ALL & ~StreamInterest.USAGE
    assert isinstance(hook, StreamHook)
    with pytest.raises(TypeError, match="hold="):
        HoldBackStreamHook("x")


def test_a_match_cut_by_another_block_is_still_rewritten_as_its_rest_arrives():
    hb = TextHoldBack(r"sk-\w+", "[key]", hold=8)
    out = run(hb, [TextDelta(0, "a sk-abc"), ToolCallStart(1, "c", "f"), TextDelta(0, "def and more text"),
                   TextEnd(0)])
    assert merged(out) == ["a [key]", ToolCallStart(1, "c", "f"), "[key] and more text", TextEnd(0)]


# --- one hook vocabulary: check_plugin's report counts by builder method ------------------------


class EveryHook(PreRequestHook, RouteHook, ExecutionHook, StreamHook, SettlementRecorder, ObserveHook):
    def check(self, ctx: Any) -> Any:
        from routeplane.hooks.language_model import HookDecision

        return HookDecision.allow()

    def resolve(self, chain: Any, ctx: Any) -> Any:
        return chain

    def record(self, settlement: Any) -> None:
        return None


class EveryHookPlugin(Plugin):
    id = PluginId("every-hook")

    def install(self, app: Any) -> None:
        hook = EveryHook()
        (app.language_model_builder().pre_request_hook(hook).route_hook(hook).execution_hook(hook)
            .stream_hook(hook).settlement_recorder(hook).observe_hook(hook))


def test_report_hooks_are_named_as_the_builder_methods_that_register_them():
    report = check_plugin(EveryHookPlugin())
    assert set(report.hooks) == set(HOOK_KINDS)
    builder_methods = {name for name in HOOK_KINDS if callable(getattr(
        __import__("routeplane").App.builder().language_model_builder(), name, None))}
    assert set(report.hooks) == builder_methods
    assert all(report.hooks[method] == 1 for method in HOOK_KINDS)


@pytest.mark.parametrize("old, new", [("pre_request", "pre_request_hook"), ("route", "route_hook"),
                                      ("execution", "execution_hook"), ("stream", "stream_hook"),
                                      ("settlement", "settlement_recorder"), ("observe", "observe_hook")])
def test_the_old_stage_names_still_read_with_a_deprecation_warning(old, new):
    report = check_plugin(EveryHookPlugin())
    with pytest.warns(DeprecationWarning, match=rf'report.hooks\["{old}"\] is deprecated: use report.hooks\["{new}"\]') \
            as caught:
        assert report.hooks[old] == 1
    assert caught[0].filename == __file__, "the warning points at the plugin's test, not the kit"
    with pytest.warns(DeprecationWarning, match=new) as caught:
        assert report.hooks.get(old) == 1
    assert caught[0].filename == __file__


def test_an_unknown_hook_name_says_the_valid_ones():
    report = check_plugin(EveryHookPlugin())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert report.hooks.get("nope", 0) == 0 and report.hooks.get("stream_hook") == 1
    with pytest.raises(KeyError, match="pre_request_hook, route_hook"):
        report.hooks["pre_request_hooks"]
