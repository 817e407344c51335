"""Regressions from a bug hunt on the Anthropic Messages wire, through the official SDKs.

The SDKs talk to the gateway in-process (httpx2's WSGI transport); the gateway talks to a real
local fake upstream over HTTP, so both codec directions and the web layer are exercised.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import httpx2
import openai
import pytest

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

TOOL = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
HI = [{"role": "user", "content": "hi"}]


Env = Tuple[FakeUpstream, anthropic.Anthropic, openai.OpenAI]


@pytest.fixture
def env() -> Iterator[Env]:
    up = FakeUpstream().start()
    config = {
        "providers": {"oc": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": "k-oc"},
                      "an": {"protocol": "anthropic_messages", "base_url": up.url, "api_key": "k-an"}},
        "models": {"gpt-route": {"targets": [{"provider": "oc", "model": "gpt-up"}]},
                   "claude-route": {"targets": [{"provider": "an", "model": "claude-up"}]}},
    }
    gw = Gateway(config=config, executor=HttpExecutor())
    claude = anthropic.Anthropic(base_url="http://gateway", api_key="client-key", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))
    gpt = openai.OpenAI(base_url="http://gateway/v1", api_key="client-key", max_retries=0,
                        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))
    try:
        yield up, claude, gpt
    finally:
        claude.close()
        gpt.close()
        up.stop()


def _an_message(content: List[Dict[str, Any]], stop_reason: str = "end_turn") -> Dict[str, Any]:
    return {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}


# --- Files API images --------------------------------------------------------------


def test_image_with_a_file_source_reaches_an_anthropic_upstream_as_an_image(env: Env) -> None:
    """`{"type":"image","source":{"type":"file","file_id":…}}` (Files API) was a 400 "Unsupported image
    source type 'file'"; inside a tool_result too."""
    up, claude, _ = env
    up.enqueue(Reply.json(_an_message([{"type": "text", "text": "a cat"}])))
    image = {"type": "image", "source": {"type": "file", "file_id": "file_img1"}, "cache_control": {"type": "ephemeral"}}
    msg = claude.messages.create(model="claude-route", max_tokens=50, tools=[TOOL], messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "image", "source": {"type": "file", "file_id": "file_img2"}}]}]},
    ], extra_headers={"anthropic-beta": "files-api-2025-04-14"})
    assert msg.content[0].text == "a cat"
    sent = up.requests[0]
    assert sent.json["messages"][0]["content"][1] == image
    result = sent.json["messages"][2]["content"][0]
    assert result["content"] == [{"type": "image", "source": {"type": "file", "file_id": "file_img2"}}]
    assert sent.headers["anthropic-beta"] == "files-api-2025-04-14"


def test_another_vendors_file_id_is_a_400_before_any_upstream_call(env: Env) -> None:
    """A file id names an upload in one vendor's Files API: an OpenAI `input_image.file_id` went to
    Anthropic as a `document` block (then as an image of an id Anthropic cannot resolve), and to Gemini
    it was dropped without a word. It is a 400 naming the id; the two OpenAI wires share their ids."""
    up, claude, gpt = env
    image: Any = {"type": "input_image", "file_id": "file-img1", "detail": "auto"}
    with pytest.raises(openai.BadRequestError, match="file-img1"):
        gpt.responses.create(model="claude-route", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"}, image]}])
    with pytest.raises(anthropic.BadRequestError, match="file_abc"):
        claude.messages.create(model="gpt-route", max_tokens=64, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "file_abc"}},
            {"type": "text", "text": "What is this?"}]}])
    assert up.requests == []
    up.enqueue(Reply.json(openai_completion("a cat")))
    r = gpt.responses.create(model="gpt-route", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"}, image]}])
    assert r.output_text == "a cat" and "file-img1" in up.requests[0].body.decode()


def test_an_image_sent_as_an_openai_file_part_is_an_anthropic_image(env: Env) -> None:
    """A Chat `file` part holding image bytes became a `document` with media_type image/png (Anthropic: 400)."""
    up, _, gpt = env
    up.enqueue(Reply.json(_an_message([{"type": "text", "text": "a cat"}])))
    gpt.chat.completions.create(model="claude-route", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "file", "file": {"file_data": "data:image/png;base64,iVBORw0KGgo=", "filename": "cat.png"}}]}])
    blocks = up.requests[0].json["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": "iVBORw0KGgo="}}


# --- streamed tool input the SDK cannot parse ---------------------------------------


def _chat_tool_stream(arguments: List[str]) -> Reply:
    return Reply.sse([
        openai_chunk({"role": "assistant", "content": ""}),
        openai_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "f", "arguments": ""}}]}),
        *[openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in arguments],
        openai_chunk({}, "tool_calls"),
        openai_chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}),
    ])


@pytest.mark.parametrize("arguments, expected", [
    (["not ", "json \"quoted\"\n"], {"_raw": 'not json "quoted"\n'}),
    (["[1,", " 2]"], {"_raw": "[1, 2]"}),
    ([" ", ' {"city":', ' "Paris"}'], {"city": "Paris"}),
    (["  "], {}),
])
def test_streamed_tool_input_that_is_not_an_object_reaches_the_sdk_as_raw(env: Env, arguments: List[str], expected: Any) -> None:
    """An upstream model's tool arguments that are not a JSON object crashed the SDK's stream helper
    (ValueError "Unable to parse tool parameter JSON from model"), while the same answer unstreamed
    gave {"_raw": "<text>"}. Both now give the same input."""
    up, claude, _ = env
    up.enqueue(_chat_tool_stream(arguments))
    with claude.messages.stream(model="gpt-route", max_tokens=50, tools=[TOOL], messages=HI) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.input) for b in final.content] == [("tool_use", expected)]
    assert final.stop_reason == "tool_use"
    up.enqueue(Reply.json(openai_completion(None, finish="tool_calls", tool_calls=[
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "".join(arguments)}}])))
    unstreamed = claude.messages.create(model="gpt-route", max_tokens=50, tools=[TOOL], messages=HI)
    assert unstreamed.content[0].input == expected


# --- an OpenAI refusal is Anthropic's stop_reason "refusal" -------------------------


REFUSAL = "I can't help with that."


def test_an_openai_refusal_is_stop_reason_refusal(env: Env) -> None:
    """OpenAI reports a refusal as `message.refusal` with finish_reason "stop"; an Anthropic client got
    stop_reason "end_turn", so it could not tell a refusal from an answer."""
    up, claude, _ = env
    completion = openai_completion(None)
    completion["choices"][0]["message"]["refusal"] = REFUSAL
    up.enqueue(Reply.json(completion))
    msg = claude.messages.create(model="gpt-route", max_tokens=50, messages=HI)
    assert msg.stop_reason == "refusal" and [b.text for b in msg.content] == [REFUSAL]

    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": None, "refusal": ""}),
                          openai_chunk({"refusal": "I can't "}), openai_chunk({"refusal": "help with that."}),
                          openai_chunk({}, "stop"),
                          openai_chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})]))
    with claude.messages.stream(model="gpt-route", max_tokens=50, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and [b.text for b in final.content] == [REFUSAL]


def test_an_ordinary_answer_keeps_end_turn(env: Env) -> None:
    up, claude, _ = env
    up.enqueue(Reply.json(openai_completion("Hello!")))
    assert claude.messages.create(model="gpt-route", max_tokens=50, messages=HI).stop_reason == "end_turn"


# --- GET /v1/models paging -----------------------------------------------------------


def test_models_list_honours_limit_and_the_sdk_pages_through_all(env: Env) -> None:
    """`limit`/`after_id`/`before_id` were ignored: `models.list(limit=1)` got every model on one page."""
    _, claude, _ = env
    first = claude.models.list(limit=1)
    assert [m.id for m in first.data] == ["gpt-route"] and first.has_more is True
    assert [m.id for m in claude.models.list(limit=1)] == ["gpt-route", "claude-route"]  # auto-pagination
    assert [m.id for m in claude.models.list(after_id="gpt-route").data] == ["claude-route"]
    assert [m.id for m in claude.models.list(limit=5, before_id="claude-route").data] == ["gpt-route"]
    everything = claude.models.list()
    assert [m.id for m in everything.data] == ["gpt-route", "claude-route"] and everything.has_more is False
    # A cursor naming no model is an empty page, not the first page again.
    assert claude.models.list(after_id="no-such-model").data == []
    assert claude.models.list(after_id="no-such-model", before_id="claude-route").data == []


def test_audio_bound_for_a_wire_without_audio_input_is_a_400(env: Env) -> None:
    """Chat `input_audio` went to Anthropic as a `document` with an audio type, which Anthropic refuses
    (only Chat and Gemini take audio in): a 400 naming the media type, before any upstream call."""
    up, _, gpt = env
    audio: Any = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    with pytest.raises(openai.BadRequestError, match="audio/wav"):
        gpt.chat.completions.create(model="claude-route", messages=[{"role": "user", "content": [
            {"type": "text", "text": "Transcribe."}, audio]}])
    assert up.requests == []
    up.enqueue(Reply.json(openai_completion("hello")))
    r = gpt.chat.completions.create(model="gpt-route", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Transcribe."}, audio]}])
    assert r.choices[0].message.content == "hello" and "input_audio" in up.requests[0].body.decode()


def test_count_tokens_refuses_what_messages_would_refuse(env: Env) -> None:
    """count_tokens' dry run takes the route chain /v1/messages would: a file id no target of the route
    can read is the same 400, not a 200 estimate."""
    up, claude, _ = env
    content: Any = [{"type": "image", "source": {"type": "file", "file_id": "file_abc"}},
                    {"type": "text", "text": "What is this?"}]
    with pytest.raises(anthropic.BadRequestError, match="file_abc"):
        claude.messages.count_tokens(model="gpt-route", messages=[{"role": "user", "content": content}])
    assert up.requests == []
