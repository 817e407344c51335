"""The official anthropic SDK through the gateway (real gunicorn) to an OpenAI-compatible upstream,
and the official openai SDK to an Anthropic upstream; usage and stop/finish reasons as the SDKs report them."""

from __future__ import annotations

import json
from typing import Iterator, Tuple

import anthropic
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e

UPSTREAM_KEY = "sk-e2e-upstream-0123456789"
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def env() -> Iterator[Tuple[GatewayProcess, FakeUpstream, FakeUpstream]]:
    oc, an = FakeUpstream().start(), FakeUpstream().start()
    config = {
        "providers": {
            "oc": {"protocol": "openai_chat", "base_url": oc.url + "/v1", "api_key": UPSTREAM_KEY},
            "an": {"protocol": "anthropic_messages", "base_url": an.url, "api_key": UPSTREAM_KEY},
        },
        "models": {
            "gpt-route": {"targets": [{"provider": "oc", "model": "gpt-up"}]},
            "claude-route": {"targets": [{"provider": "an", "model": "claude-up"}]},
        },
    }
    gw = GatewayProcess(config).start()
    try:
        yield gw, oc, an
    finally:
        gw.stop()
        oc.stop()
        an.stop()


@pytest.fixture
def claude(env) -> Iterator[anthropic.Anthropic]:
    gw, oc, an = env
    oc.requests.clear()
    an.requests.clear()
    with anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0) as client:
        yield client


@pytest.fixture
def gpt(env) -> Iterator[openai.OpenAI]:
    gw, oc, an = env
    oc.requests.clear()
    an.requests.clear()
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0) as client:
        yield client


# --- anthropic SDK → OpenAI-compatible upstream ----------------------------------


def test_anthropic_create_maps_usage_with_cache_and_stop_reason(env, claude):
    _, oc, _ = env
    oc.enqueue(Reply.json(openai_completion("Bonjour.", usage={
        "prompt_tokens": 2140, "completion_tokens": 30, "total_tokens": 2170,
        "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 10}})))
    msg = claude.messages.create(model="gpt-route", max_tokens=300, system="Be terse.",
                                 messages=[{"role": "user", "content": "Say hello in French."}])
    assert msg.content[0].type == "text" and msg.content[0].text == "Bonjour."
    assert msg.stop_reason == "end_turn" and msg.model == "gpt-route"
    # Anthropic input_tokens excludes cache reads and writes (translation.md §9).
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (
        40, 2000, 100)
    assert msg.usage.output_tokens == 30
    sent = oc.requests[0]
    assert sent.json["messages"] == [{"role": "system", "content": "Be terse."},
                                     {"role": "user", "content": "Say hello in French."}]
    assert sent.json["model"] == "gpt-up" and sent.json["max_completion_tokens"] == 300
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" and "client-key" not in json.dumps(sent.headers)


def test_anthropic_stream_get_final_message_with_parallel_tools(env, claude):
    _, oc, _ = env
    usage = {"prompt_tokens": 60, "completion_tokens": 22, "total_tokens": 82,
             "prompt_tokens_details": {"cached_tokens": 50}}
    oc.enqueue(Reply.sse([
        openai_chunk({"role": "assistant", "content": ""}),
        openai_chunk({"content": "Checking "}), openai_chunk({"content": "both."}),
        openai_chunk({"tool_calls": [{"index": 0, "id": "call_p", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ""}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "id": "call_r", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city":'}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": ' "Rome"}'}}]}),
        openai_chunk({}, "tool_calls"), openai_chunk(None, usage=usage),
    ]))
    with claude.messages.stream(model="gpt-route", max_tokens=200, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Weather in Paris and Rome?"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Checking both."
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.input) for b in final.content[1:]] == [("call_p", {"city": "Paris"}), ("call_r", {"city": "Rome"})]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (10, 50, 22)
    assert oc.requests[0].json["stream_options"] == {"include_usage": True}


def test_anthropic_tool_use_across_two_turns(env, claude):
    _, oc, _ = env
    oc.enqueue(Reply.json(openai_completion(None, finish="tool_calls", tool_calls=[
        {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}])))
    oc.enqueue(Reply.json(openai_completion("It is 18C in Paris.")))
    question = {"role": "user", "content": "Weather in Paris?"}
    first = claude.messages.create(model="gpt-route", max_tokens=200, tools=[WEATHER], messages=[question],
                                   tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.input == {"city": "Paris"}
    second = claude.messages.create(model="gpt-route", max_tokens=200, tools=[WEATHER], messages=[
        question,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"},
                                     {"type": "text", "text": "Thanks!"}]},
    ])
    assert second.content[0].text == "It is 18C in Paris." and second.stop_reason == "end_turn"
    assert oc.requests[0].json["tool_choice"] == "required"
    history = oc.requests[1].json["messages"]
    assert history[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert history[2] == {"role": "tool", "tool_call_id": "call_w1", "content": "18C"}
    assert history[3] == {"role": "user", "content": "Thanks!"}


def test_anthropic_sdk_sees_overloaded_and_rate_limit_errors(env, claude):
    _, oc, _ = env
    oc.enqueue(Reply.json({"error": {"message": "busy", "type": "server_error"}}, status=503))
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model="gpt-route", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 529 and info.value.body["error"]["type"] == "overloaded_error"
    oc.enqueue(Reply.json({"error": {"message": "slow down", "type": "rate_limit_exceeded"}}, status=429,
                          headers={"Retry-After": "3"}))
    with pytest.raises(anthropic.RateLimitError) as rl:
        claude.messages.create(model="gpt-route", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert rl.value.response.headers["retry-after"] == "3"


def test_anthropic_sdk_mid_stream_error_raises(env, claude):
    _, oc, _ = env
    oc.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "part"}),
                          {"error": {"message": "boom", "type": "server_error"}}], done=None))
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model="gpt-route", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()
    assert info.value.body["error"]["type"] == "api_error"


def test_count_tokens_forwarded_to_anthropic_and_estimated_otherwise(env, claude):
    _, _, an = env
    an.enqueue(Reply.json({"input_tokens": 1234}))
    counted = claude.messages.count_tokens(model="claude-route", messages=[{"role": "user", "content": "hello"}],
                                           system="Be terse.")
    assert counted.input_tokens == 1234
    sent = an.requests[0]
    assert sent.path == "/v1/messages/count_tokens" and sent.json["model"] == "claude-up"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    estimate = claude.messages.count_tokens(model="gpt-route", messages=[{"role": "user", "content": "x" * 400}])
    assert 90 <= estimate.input_tokens <= 120  # ~4 characters a token, documented as an estimate


# --- openai SDK → Anthropic upstream ------------------------------------------------


def _an_message(content, stop_reason="end_turn", usage=None):
    return {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 10, "output_tokens": 5}}


def test_openai_create_against_anthropic_usage_and_finish(env, gpt):
    _, _, an = env
    an.enqueue(Reply.json(_an_message(
        [{"type": "thinking", "thinking": "hmm", "signature": "sig-x"}, {"type": "text", "text": "Hi!"}],
        usage={"input_tokens": 40, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
               "output_tokens": 120, "output_tokens_details": {"thinking_tokens": 60}})))
    r = gpt.chat.completions.create(model="claude-route", messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}], temperature=1.6)
    assert r.choices[0].message.content == "Hi!" and r.choices[0].finish_reason == "stop"
    u = r.usage
    # OpenAI prompt_tokens includes cached tokens (translation.md §9 worked check).
    assert (u.prompt_tokens, u.prompt_tokens_details.cached_tokens, u.completion_tokens, u.total_tokens) == (
        2140, 2000, 120, 2260)
    assert u.completion_tokens_details.reasoning_tokens == 60
    sent = an.requests[0]
    assert sent.json["max_tokens"] == 4096  # the documented default when the client omits it
    assert sent.json["temperature"] == 1.0  # clamped to Anthropic's 0..1
    assert sent.json["system"] == "Be terse."
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in sent.headers


def test_openai_stream_against_anthropic_tool_calls(env, gpt):
    _, _, an = env
    events = [
        {"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                                              "model": "claude-up", "content": [], "stop_reason": None,
                                              "stop_sequence": None,
                                              "usage": {"input_tokens": 25, "cache_read_input_tokens": 5,
                                                        "output_tokens": 1}}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "On it."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"city": "Par'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'is"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "input_json_delta", "partial_json": '{"city": "Rome"}'}},
        {"type": "content_block_stop", "index": 2},
        {"type": "some_future_event", "detail": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 40}},
        {"type": "message_stop"},
    ]
    an.enqueue(Reply.anthropic_sse(events))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}]
    with gpt.chat.completions.stream(model="claude-route", messages=[{"role": "user", "content": "Weather?"}],
                                     tools=tools, stream_options={"include_usage": True}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "On it." and choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"}), ("toolu_2", "get_weather", {"city": "Rome"})]
    assert (final.usage.prompt_tokens, final.usage.prompt_tokens_details.cached_tokens,
            final.usage.completion_tokens) == (30, 5, 40)
    # no output_tokens_details upstream: the reasoning count is unknown, so it is left out, not 0
    assert final.usage.completion_tokens_details is None
    assert an.requests[0].json["stream"] is True


def test_openai_usage_omits_a_reasoning_count_anthropic_did_not_give(env, gpt):
    """translation.md §9: reasoning_tokens = thinking_tokens, "omit if absent — do not guess".
    Before, every answer from an Anthropic upstream claimed reasoning_tokens: 0, thinking or not."""
    _, _, an = env
    an.enqueue(Reply.json(_an_message(
        [{"type": "thinking", "thinking": "hmm", "signature": "sig-x"}, {"type": "text", "text": "Hi!"}],
        usage={"input_tokens": 40, "output_tokens": 120})))
    r = gpt.chat.completions.with_raw_response.create(model="claude-route",
                                                       messages=[{"role": "user", "content": "hi"}])
    usage = json.loads(r.text)["usage"]
    assert usage["completion_tokens"] == 120 and "completion_tokens_details" not in usage


def test_openai_sdk_sees_anthropic_529_as_503(env, gpt):
    _, _, an = env
    an.enqueue(Reply.json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                          status=529))
    with pytest.raises(openai.InternalServerError) as info:
        gpt.chat.completions.create(model="claude-route", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503


def test_anthropic_sdk_same_wire_forwards_beta_and_thinking(env, claude):
    _, _, an = env
    an.enqueue(Reply.json(_an_message([{"type": "thinking", "thinking": "plan", "signature": "sig-1"},
                                       {"type": "text", "text": "Done."}])))
    msg = claude.messages.create(
        model="claude-route", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "go"}], extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    assert [b.type for b in msg.content] == ["thinking", "text"] and msg.content[0].signature == "sig-1"
    sent = an.requests[0]
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert sent.json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in sent.headers


def test_anthropic_sdk_thinking_tool_loop_round_trips_the_signature(env, claude):
    _, _, an = env
    an.enqueue(Reply.anthropic_sse([
        {"type": "message_start", "message": {"id": "msg_t", "type": "message", "role": "assistant",
                                              "model": "claude-up", "content": [], "stop_reason": None,
                                              "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Need weather."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBsig=="}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 50, "output_tokens_details": {"thinking_tokens": 20}}},
        {"type": "message_stop"},
    ]))
    an.enqueue(Reply.json(_an_message([{"type": "text", "text": "Oslo: 3C."}])))
    thinking = {"type": "enabled", "budget_tokens": 2048}
    question = {"role": "user", "content": "Weather in Oslo?"}
    with claude.messages.stream(model="claude-route", max_tokens=4096, thinking=thinking, tools=[WEATHER],
                                messages=[question]) as stream:
        first = stream.get_final_message()
    assert [b.type for b in first.content] == ["thinking", "tool_use"] and first.content[0].signature == "EqQBsig=="
    assert first.usage.output_tokens == 50
    second = claude.messages.create(model="claude-route", max_tokens=4096, thinking=thinking, tools=[WEATHER], messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "3C"}]}])
    assert second.content[0].text == "Oslo: 3C."
    sent = an.requests[1].json["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": "Need weather.", "signature": "EqQBsig=="}
    assert sent[1] == {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}


def test_anthropic_sdk_lists_models(claude):
    ids = [m.id for m in claude.models.list()]
    assert sorted(ids) == ["claude-route", "gpt-route"]
    assert claude.models.retrieve("claude-route").display_name == "claude-route"
