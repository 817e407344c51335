"""Fallback on failures that arrive before a stream's first content (issue 5: "falls back when a provider
fails"). Upstreams often open a stream and only then fail: Anthropic `message_start` then `overloaded_error`,
an OpenAI role-only chunk then an error chunk, Responses `response.created` then `response.failed`, a Gemini
chunk without parts then an error. Nothing the client would see had arrived, yet the gateway had answered
200 and sent the opening, so the failure was an error frame instead of a fallback (and a client error a 200
with an error frame instead of an HTTP 400). The pipeline now holds the structural opening back
(language_model/first_content.py).

End to end: the official SDKs against the gateway under gunicorn, two scripted upstreams behind every route
(A first, B behind it). In process: the hold's rules (its bound, hooks, breaker, order of the held parts)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import openai
import pytest
from google import genai

from routeplane.app import App
from routeplane.config import parse_config
from routeplane.errors import UpstreamConnectionError, UpstreamStatusError
from routeplane.hooks.language_model import ExecutionHook, FallbackDecision
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.executor import MockExecutor
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Message,
    Prompt,
    ReasoningStart,
    ResponseStart,
    Role,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import CapturedSettlements
from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import FakeUpstream, Reply, openai_chunk
from tests.support.wires import fallback_pair_config, gemini_sse, responses_sse

pytestmark = pytest.mark.e2e

KEY = "sk-upstream-secret-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]
AN_START = {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant",
                                                 "model": "up", "content": [], "stop_reason": None,
                                                 "usage": {"input_tokens": 3, "output_tokens": 0}}}
AN_OPEN_TEXT = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
INVALID = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}
SHELL = {"id": "resp_a", "object": "response", "created_at": 1763800000, "status": "in_progress", "model": "up",
         "output": []}


def an_answer(text: str, input_tokens: int = 7) -> Reply:
    """A complete Anthropic stream (target B's answer)."""
    start = {**AN_START, "message": {**AN_START["message"], "id": "msg_b",
                                     "usage": {"input_tokens": input_tokens, "output_tokens": 0}}}
    return Reply.anthropic_sse([
        start, AN_OPEN_TEXT, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"}])


def oc_answer(text: str) -> Reply:
    return Reply.sse([openai_chunk({"role": "assistant", "content": text}), openai_chunk({}, "stop"),
                      openai_chunk(None, usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})])


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = fallback_pair_config((servers[0].url, servers[1].url), KEY, prices={"input": 1.0, "output": 10.0})
    db = f"sqlite:///{tmp_path_factory.mktemp('hunt-stream-fallback')}/rp.db"
    config["database"] = {"url": db}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def attempts_of(row: Dict[str, Any]) -> List[Tuple[str, bool, int]]:
    return [(a["provider"], a["ok"], a["status"]) for a in json.loads(row["attempts_json"])]


# --- end to end ------------------------------------------------------------------------------------


def test_anthropic_overloaded_after_message_start_falls_back(ups: Any, claude: anthropic.Anthropic,
                                                             gateway: GatewayProcess) -> None:
    """message_start (and an empty text block, and a ping) then `overloaded_error`: the client got a 200,
    A's message_start and an overloaded error event, though B was there to answer."""
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, {"type": "ping"}, AN_OPEN_TEXT, OVERLOADED]))
    b.enqueue(an_answer("from b"))
    with claude.messages.stream(model="an", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
        events = list(stream)
        message = stream.get_final_message()
    assert [e.type for e in events].count("message_start") == 1
    assert message.content[0].text == "from b"  # type: ignore[union-attr]
    assert message.id != "msg_a" and message.usage.input_tokens == 7
    assert len(b.requests) == 1
    row = spend_row(gateway.db_url, stream.response.headers["x-request-id"])
    assert (row["outcome"], row["status"], row["provider"]) == ("success", 200, "an-b")
    assert attempts_of(row) == [("an-a", False, 529), ("an-b", True, 200)]
    assert row["input_tokens"] == 7  # B's answer; A's message_start (3) was not billed
    assert row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]


def test_openai_role_chunk_then_error_chunk_falls_back(ups: Any, oai: openai.OpenAI,
                                                       gateway: GatewayProcess) -> None:
    a, b = ups
    a.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                         {"error": {"message": "The server had an error", "type": "server_error"}}], done=None))
    b.enqueue(oc_answer("from b"))
    stream = oai.chat.completions.create(model="oc", messages=HI, stream=True,  # type: ignore[arg-type]
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from b"
    assert len({c.id for c in chunks}) == 1
    assert len(b.requests) == 1
    row = spend_row(gateway.db_url, stream.response.headers["x-request-id"])
    assert (row["outcome"], row["provider"]) == ("success", "oc-b")
    assert attempts_of(row) == [("oc-a", False, 500), ("oc-b", True, 200)]


def test_a_responses_failure_after_its_opening_falls_back_for_an_anthropic_client(
        ups: Any, claude: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    """Cross-wire: `response.created` / `in_progress` / an empty message item, then `response.failed`."""
    a, b = ups
    item = {"type": "message", "id": "msg_a", "role": "assistant", "status": "in_progress", "content": []}
    a.enqueue(responses_sse([
        {"type": "response.created", "response": SHELL}, {"type": "response.in_progress", "response": SHELL},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": "msg_a", "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.failed", "response": {**SHELL, "status": "failed",
                                                 "error": {"code": "server_error", "message": "try again"}}}]))
    done = {**SHELL, "id": "resp_b", "status": "completed", "usage": {"input_tokens": 7, "output_tokens": 2},
            "output": [{"type": "message", "id": "msg_b", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "from b", "annotations": []}]}]}
    b.enqueue(responses_sse([
        {"type": "response.created", "response": {**SHELL, "id": "resp_b"}},
        {"type": "response.output_text.delta", "item_id": "msg_b", "output_index": 0, "content_index": 0,
         "delta": "from b"},
        {"type": "response.completed", "response": done}]))
    with claude.messages.stream(model="orr", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
        text = stream.get_final_text()
    assert text == "from b"
    assert len(b.requests) == 1
    row = spend_row(gateway.db_url, stream.response.headers["x-request-id"])
    assert [(p, ok) for p, ok, _ in attempts_of(row)] == [("orr-a", False), ("orr-b", True)]


def test_a_gemini_chunk_without_parts_then_an_error_falls_back(ups: Any, oai: openai.OpenAI) -> None:
    a, b = ups
    a.enqueue(gemini_sse([
        {"candidates": [{"content": {"role": "model", "parts": []}, "index": 0}],
         "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}, "modelVersion": "up"},
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]))
    b.enqueue(gemini_sse([
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "from b"}]}, "finishReason": "STOP",
                         "index": 0}], "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2,
                                                         "totalTokenCount": 9}, "modelVersion": "up"}]))
    chunks = list(oai.chat.completions.create(model="ge", messages=HI, stream=True))  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from b"
    assert len(b.requests) == 1


def test_a_gemini_client_gets_the_fallback_of_an_anthropic_upstream(ups: Any, gclient: genai.Client) -> None:
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, {"type": "ping"}, OVERLOADED]))
    b.enqueue(an_answer("from b"))
    chunks = list(gclient.models.generate_content_stream(model="an", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == "from b"
    assert len(b.requests) == 1


def test_an_error_after_the_first_text_is_still_an_error_frame(ups: Any, claude: anthropic.Anthropic,
                                                               gateway: GatewayProcess) -> None:
    """The hold ends at the first content: from there on, no fallback (nothing spliced, nothing twice)."""
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, AN_OPEN_TEXT, {"type": "content_block_delta", "index": 0,
                                                            "delta": {"type": "text_delta", "text": "Hel"}},
                                   OVERLOADED]))
    seen: List[str] = []
    texts: List[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model="an", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
            for event in stream:
                seen.append(event.type)
                if event.type == "text":
                    texts.append(event.text)
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert seen.count("message_start") == 1 and texts == ["Hel"]
    assert len(b.requests) == 0
    row = spend_row(gateway.db_url, stream.response.headers["x-request-id"])
    assert (row["outcome"], row["attempts"]) == ("upstream_error", 1)


def test_a_client_error_in_the_hold_is_a_real_400_without_fallback(ups: Any, claude: anthropic.Anthropic,
                                                                   oai: openai.OpenAI,
                                                                   gateway: GatewayProcess) -> None:
    """No byte was sent, so the client's own mistake is an HTTP 400 in its protocol (it was a 200 with an
    error frame), and it does not go on to B."""
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, AN_OPEN_TEXT, INVALID]))
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="an", max_tokens=5, messages=HI, stream=True)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "prompt is too long" in info.value.message and KEY not in info.value.message
    row = spend_row(gateway.db_url, info.value.response.headers["x-request-id"])
    assert (row["status"], row["attempts"], row["cost_micro_usd"]) == (400, 1, 0)
    a.enqueue(Reply.sse([openai_chunk({"role": "assistant"}),
                         {"error": {"message": "maximum context length exceeded", "type": "invalid_request_error",
                                    "code": "context_length_exceeded"}}], done=None))
    with pytest.raises(openai.BadRequestError) as info2:
        oai.chat.completions.create(model="oc", messages=HI, stream=True)  # type: ignore[arg-type]
    assert "maximum context length" in info2.value.message
    assert len(b.requests) == 0


def test_every_target_failing_in_the_hold_merges_like_failures_before_the_first_part(
        ups: Any, claude: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, OVERLOADED]))
    b.enqueue(Reply.anthropic_sse([AN_START, OVERLOADED]))
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model="an", max_tokens=5, messages=HI, stream=True)  # type: ignore[arg-type]
    assert info.value.status_code == 529 and info.value.body["error"]["type"] == "overloaded_error"  # type: ignore
    row = spend_row(gateway.db_url, info.value.response.headers["x-request-id"])
    assert attempts_of(row) == [("an-a", False, 529), ("an-b", False, 529)]
    assert (row["outcome"], row["input_tokens"], row["cost_micro_usd"]) == ("upstream_error", 0, 0)


# --- in process: the hold's rules ------------------------------------------------------------------

CONFIG = {
    "providers": {"a": {"protocol": "mock"}, "b": {"protocol": "mock"}},
    "models": {"two": {"targets": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]}},
    "fallback": {"cooldown": {"failures": 1, "seconds": 30}},
}
BUSY = UpstreamStatusError("a is busy", provider="a", upstream_status=529, status=503, kind="overloaded")


def pipeline(*hooks: Any, **per_provider: Any) -> Tuple[Any, MockExecutor, CapturedSettlements]:
    executor = MockExecutor(per_provider=per_provider)
    settlements = CapturedSettlements()

    def configure(lm: Any) -> None:
        lm.executor(executor)
        for hook in hooks:
            lm.execution_hook(hook)
        lm.settlement_recorder(settlements)

    app = App.builder().config(parse_config(CONFIG, "<test>")).inline_observers().language_model(configure).build()
    return app.pipeline, executor, settlements


def run(pl: Any) -> Any:
    prompt = Prompt(model="two", messages=(Message(Role.USER, (TextPart("hi"),)),), stream=True)
    return pl.run(PipelineContext("req-1", "openai_chat", prompt, {}))


def answer(text: str) -> List[Any]:
    return [ResponseStart("b1", "m2"), TextStart(0), TextDelta(0, text), TextEnd(0),
            UsageUpdate(Usage(input_tokens=4, output_tokens=1)), Finish(FinishReason.STOP)]


def test_held_parts_are_emitted_once_in_order_and_the_failure_trips_the_breaker() -> None:
    opening = [ResponseStart("a1", "m1", usage=Usage(input_tokens=3)), UsageUpdate(Usage(input_tokens=3)),
               ReasoningStart(0, "x"), TextStart(1)]
    pl, executor, settlements = pipeline(a=[opening + [BUSY]], b=[answer("B")])
    assert list(run(pl)) == answer("B")
    [s] = settlements.items
    assert [(t.provider, t.ok) for t in s.attempts] == [("a", False), ("b", True)]
    assert (s.usage.input_tokens, s.usage.output_tokens) == (4, 1)  # b's; a's opening (3) is not billed
    assert pl.cooldown.would_skip("a:m1")  # a failure in the hold is a failure of the target
    assert s.ttft_ms is not None


def test_the_hold_is_bounded_and_an_on_failure_veto_is_honoured() -> None:
    class Veto(ExecutionHook):
        def on_failure(self, ctx: Any, error: Any) -> FallbackDecision:
            return FallbackDecision.fail()

    from routeplane.language_model.first_content import MAX_HELD

    endless = [ResponseStart("a1", "m1")] + [UsageUpdate(Usage(input_tokens=i)) for i in range(MAX_HELD + 5)]
    pl, executor, _ = pipeline(a=[endless + [BUSY]], b=[answer("B")])
    stream = run(pl)  # past the bound the stream is released: the failure comes as part of it
    with pytest.raises(UpstreamStatusError):
        list(stream)
    assert [c.target.provider for c in executor.calls] == ["a"]
    pl, executor, settlements = pipeline(Veto(), a=[[ResponseStart("a1", "m1"), UpstreamConnectionError(
        "reset", provider="a")]], b=[answer("B")])
    with pytest.raises(UpstreamConnectionError):
        run(pl)
    assert [c.target.provider for c in executor.calls] == ["a"]
    assert settlements.items[0].status == 502
