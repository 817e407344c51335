"""Bug hunt on the OpenAI Chat Completions wire (session 9): the official SDKs against the gateway under
gunicorn, with scripted OpenAI-compatible upstreams (regressions for routeplane/protocols/openai_chat/)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "Weather in Paris and London?"}]


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ("openai_chat", "anthropic_messages"), timeouts={"connect": 2, "read": 5})).start()
    yield gw
    gw.stop()


def streamed_calls(oai: Any) -> List[Dict[str, str]]:
    """The tool calls a raw SDK stream carries, assembled by their `index` as the SDK's users do."""
    calls: Dict[int, Dict[str, str]] = {}
    for chunk in oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True):
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += tc.id or ""
            call["name"] += tc.function.name or ""
            call["arguments"] += tc.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


# --- whole tool calls with neither index nor id ------------------------------------------------------


def _whole_call(name: str, args: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(args)}, **extra}


PARIS, LONDON = _whole_call("get_weather", {"city": "Paris"}), _whole_call("get_weather", {"city": "London"})
WHOLE_CALLS = {
    # Two parallel calls, each whole, in one chunk and in two chunks; some servers send "" as the id.
    "one_chunk": [openai_chunk({"role": "assistant", "tool_calls": [PARIS, LONDON]})],
    "two_chunks": [openai_chunk({"role": "assistant", "tool_calls": [PARIS]}), openai_chunk({"tool_calls": [LONDON]})],
    "empty_ids": [openai_chunk({"role": "assistant", "tool_calls": [{**PARIS, "id": ""}]}),
                  openai_chunk({"tool_calls": [{**LONDON, "id": ""}]})],
}


@pytest.mark.parametrize("shape", sorted(WHOLE_CALLS))
def test_whole_tool_calls_without_index_or_id_stay_separate(oai, up, shape):
    # They were merged into one call whose arguments were '{"city": "Paris"}{"city": "London"}'.
    up.enqueue(Reply.sse(WHOLE_CALLS[shape] + [openai_chunk({}, "tool_calls")]))
    calls = streamed_calls(oai)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "London"})]
    assert calls[0]["id"] and calls[1]["id"] and calls[0]["id"] != calls[1]["id"]

    up.enqueue(Reply.sse(WHOLE_CALLS[shape] + [openai_chunk({}, "tool_calls")]))
    with oai.chat.completions.stream(model="via-openai_chat", messages=USER) as stream:
        final = stream.get_final_completion()
    assert [json.loads(tc.function.arguments) for tc in final.choices[0].message.tool_calls] == [
        {"city": "Paris"}, {"city": "London"}]


def test_unindexed_fragments_of_one_call_still_join(oai, up):
    # A server that leaves the index out but streams one call in pieces, its name repeated: one call.
    first = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": '}}
    rest = {"type": "function", "function": {"name": "get_weather", "arguments": '"Paris"}'}}
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "tool_calls": [first]}),
                          openai_chunk({"tool_calls": [rest]}), openai_chunk({}, "tool_calls")]))
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed_calls(oai)] == [
        ("get_weather", {"city": "Paris"})]


# --- usage in the compatible servers' own spellings --------------------------------------------------------


def test_deepseek_cache_hits_are_cached_tokens(oai, up):
    # DeepSeek counts its cache hits as prompt_cache_hit_tokens: they were billed as uncached input.
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
             "prompt_cache_hit_tokens": 80, "prompt_cache_miss_tokens": 20}
    up.enqueue(Reply.json(openai_completion("hi", usage=usage)))
    answer = oai.chat.completions.create(model="via-openai_chat", messages=USER)
    assert (answer.usage.prompt_tokens, answer.usage.prompt_tokens_details.cached_tokens) == (100, 80)

    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "hi"}), openai_chunk({}, "stop"),
                          openai_chunk(None, usage=usage)]))
    chunks = list(oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 80


def test_usage_inside_the_last_choice_is_read(oai, up):
    # Moonshot (Kimi) streams its usage in choices[0].usage; the gateway estimated it instead.
    up.enqueue(Reply.sse([
        openai_chunk({"role": "assistant", "content": "Bonjour"}),
        {**openai_chunk({}, "stop"), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": {
            "prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32, "cached_tokens": 16}}]}]))
    chunks = list(oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True,
                                              stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (19, 13, 16)


# --- finish reasons of compatible servers ------------------------------------------------------------------


def test_finish_reason_error_is_a_failure_not_a_complete_answer(oai, up):
    # Mistral and OpenRouter end a failed generation with finish_reason "error": it reached the client as
    # "stop", the half answer passed off as whole (and billed as a success).
    up.enqueue(Reply.json(openai_completion("Half an ans", finish="error")))
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(model="via-openai_chat", messages=USER)
    assert info.value.status_code == 502 and "finish_reason 'error'" in info.value.message

    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "Half an ans"}),
                          {**openai_chunk({}, "error"), "choices": [{"index": 0, "delta": {}, "finish_reason": "error",
                                                                     "error": {"message": "provider crashed"}}]}]))
    seen: List[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True):
            seen.extend(c.finish_reason for c in chunk.choices if c.finish_reason)
    assert "provider crashed" in err.value.message and seen == []


def test_mistral_model_length_is_length(oai, up):
    up.enqueue(Reply.json(openai_completion("Cut", finish="model_length")))
    assert oai.chat.completions.create(model="via-openai_chat", messages=USER).choices[0].finish_reason == "length"


def test_anthropic_prompt_too_long_is_context_length_exceeded(oai, up):
    """Anthropic has no code for a prompt over the context window: its words become OpenAI's code."""
    up.enqueue(Reply.json({"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "prompt is too long: 210000 tokens > 200000 maximum"}},
                          400))
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="via-anthropic_messages", messages=USER)
    assert info.value.code == "context_length_exceeded"
