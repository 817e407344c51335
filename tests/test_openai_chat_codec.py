"""The OpenAI Chat Completions codec as pure functions, on payloads shaped like the official SDK's."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeplane.errors import InvalidRequest, InvalidUpstreamResponse, UpstreamError
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ImagePart,
    Message,
    Prompt,
    ResponseStart,
    Role,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
    UsageUpdate,
)
from routeplane.protocols import openai_chat
from routeplane.protocols.openai_chat.request import decode_request, encode_request
from routeplane.protocols.openai_chat.response import decode_response, decode_usage, encode_response, encode_usage
from routeplane.protocols.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder
from routeplane.protocols.sse import SSEEvent, SSEParser, iter_events

TARGET = RoutingTarget(provider="up", model="gpt-up", protocol="openai_chat", base_url="http://127.0.0.1:9/v1",
                       api_key="sk-secret-upstream-key")


def body(**fields: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello"}]}
    out.update(fields)
    return out


# --- decode request -----------------------------------------------------------------


def test_decode_string_and_parts_content_with_system_and_developer():
    p = decode_request(body(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "this?"}],
         "name": "alice"},
    ]))
    assert p.model == "gpt-4.1" and not p.stream
    assert p.system_text() == "Be brief.\n\nUse French."
    [m] = p.messages
    assert m.role is Role.USER and m.text() == "What is this?" and m.name == "alice"


def test_decode_images_data_url_and_http_url():
    p = decode_request(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]))
    parts = p.messages[0].parts
    assert parts[1] == ImagePart(url="https://example.com/cat.png", detail="low")
    assert parts[2] == ImagePart(data="iVBORw0KGgo=", media_type="image/png")
    out = encode_request(p, TARGET, stream=False)
    assert out["messages"][0]["content"][2] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_non_base64_data_url_is_rejected():
    with pytest.raises(InvalidRequest):
        decode_request(body(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]))


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True}}


def test_decode_tools_history_and_tool_results():
    p = decode_request(body(tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris and time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
    ]))
    [tool] = p.tools
    assert tool.name == "get_weather" and tool.strict is True and tool.parameters["required"] == ["city"]
    assistant, results = p.messages[1], p.messages[2]
    assert [c.id for c in assistant.parts if isinstance(c, ToolCallPart)] == ["call_1", "call_2"]
    assert results.role is Role.TOOL and [r.tool_call_id for r in results.parts] == ["call_1", "call_2"]
    assert results.parts[1].text() == "14:05"
    out = encode_request(p, TARGET, stream=False)
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert out["messages"][1]["content"] is None
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{\"city\":\"Paris\"}"
    assert out["tools"] == [WEATHER_TOOL]


def test_decode_legacy_functions_and_function_call():
    p = decode_request(body(
        functions=[{"name": "lookup", "parameters": {"type": "object", "properties": {}}}],
        function_call={"name": "lookup"},
        messages=[{"role": "user", "content": "x"},
                  {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": "{}"}},
                  {"role": "function", "name": "lookup", "content": "42"}]))
    assert [t.name for t in p.tools] == ["lookup"]
    assert p.tool_choice is not None and p.tool_choice.mode == "tool" and p.tool_choice.name == "lookup"
    call = p.messages[1].parts[0]
    result = p.messages[2].parts[0]
    assert isinstance(call, ToolCallPart) and isinstance(result, ToolResultPart)
    assert call.id == result.tool_call_id  # the legacy pair stays linked
    out = encode_request(p, TARGET, stream=False)
    assert out["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert "functions" not in out and "function_call" not in out


@pytest.mark.parametrize("raw, mode, name", [
    ("auto", "auto", None),
    ("none", "none", None),
    ("required", "required", None),
    ({"type": "function", "function": {"name": "get_weather"}}, "tool", "get_weather"),
])
def test_decode_tool_choice_forms(raw, mode, name):
    p = decode_request(body(tools=[WEATHER_TOOL], tool_choice=raw, parallel_tool_calls=False))
    assert p.tool_choice is not None
    assert (p.tool_choice.mode, p.tool_choice.name, p.tool_choice.parallel) == (mode, name, False)
    out = encode_request(p, TARGET, stream=False)
    assert out["tool_choice"] == raw and out["parallel_tool_calls"] is False


TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_allowed_tools_narrows_the_offer(mode):
    p = decode_request(body(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice={
        "type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [
            {"type": "function", "function": {"name": "get_time"}}]}}))
    assert [t.name for t in p.tools] == ["get_time"]
    assert p.tool_choice is not None and p.tool_choice.mode == mode
    out = encode_request(p, TARGET, stream=False)
    assert out["tools"] == [TIME_TOOL] and out["tool_choice"] == mode


@pytest.mark.parametrize("raw, param", [
    ({"type": "allowed_tools"}, "tool_choice.allowed_tools"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}}, "tool_choice.allowed_tools.mode"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function"}]}},
     "tool_choice.allowed_tools.tools[0]"),
])
def test_invalid_allowed_tools(raw, param):
    with pytest.raises(InvalidRequest) as info:
        decode_request(body(tools=[WEATHER_TOOL], tool_choice=raw))
    assert info.value.param == param


def test_invalid_tool_choice_names_the_param():
    with pytest.raises(InvalidRequest) as info:
        decode_request(body(tool_choice="sometimes"))
    assert info.value.param == "tool_choice"


@pytest.mark.parametrize("raw", [
    {"type": "text"},
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "answer", "strict": True,
                                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
])
def test_response_format_round_trips(raw):
    p = decode_request(body(response_format=raw))
    assert p.response_format is not None and p.response_format.type == raw["type"]
    assert encode_request(p, TARGET, stream=False)["response_format"] == raw


def test_stop_string_or_list():
    assert decode_request(body(stop="END")).params.stop == ("END",)
    assert decode_request(body(stop=["a", "b"])).params.stop == ("a", "b")
    assert encode_request(decode_request(body(stop="END")), TARGET, False)["stop"] == ["END"]
    with pytest.raises(InvalidRequest) as info:
        decode_request(body(stop=[1, 2]))
    assert info.value.param == "stop"


def test_max_tokens_and_max_completion_tokens():
    legacy = decode_request(body(max_tokens=50))
    modern = decode_request(body(max_completion_tokens=60))
    both = decode_request(body(max_tokens=50, max_completion_tokens=70))
    assert legacy.params.max_tokens == 50 and modern.params.max_tokens == 60 and both.params.max_tokens == 70
    # Same wire: the field the client used is the field the upstream gets.
    assert encode_request(legacy, TARGET, False).get("max_tokens") == 50
    assert "max_completion_tokens" not in encode_request(legacy, TARGET, False)
    assert encode_request(modern, TARGET, False)["max_completion_tokens"] == 60
    assert "max_tokens_field" not in encode_request(legacy, TARGET, False)


def test_generation_params_decode():
    p = decode_request(body(temperature=0, top_p=0.5, seed=7, presence_penalty=1, frequency_penalty=-1,
                            reasoning_effort="low", user="u-1", stream=True,
                            stream_options={"include_usage": True}))
    assert p.params.temperature == 0.0 and p.params.top_p == 0.5 and p.params.seed == 7
    assert p.params.reasoning_effort == "low" and p.params.user == "u-1"
    assert p.stream and p.include_usage


# --- validation errors ------------------------------------------------------------------


@pytest.mark.parametrize("fields, param", [
    ({"model": 5}, "model"),
    ({"messages": "hello"}, "messages"),
    ({"stream": "yes"}, "stream"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"tools": {"a": 1}}, "tools"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": 1, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": ["hello"]}, "messages[0]"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}, "messages[0].content[0].type"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"seed": "1"}, "seed"),
    ({"messages": [{"role": "user", "content": "x", "name": 7}]}, "messages[0].name"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "name": ["a"]}]},
     "messages[1].name"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
])
def test_wrong_types_name_the_param(fields, param):
    with pytest.raises(InvalidRequest) as info:
        decode_request(body(**fields))
    assert info.value.status == 400
    assert info.value.param == param
    assert param.split(".")[-1].split("[")[0] in info.value.message


def test_missing_model_and_messages():
    with pytest.raises(InvalidRequest) as info:
        decode_request({"messages": [{"role": "user", "content": "x"}]})
    assert info.value.param == "model" and info.value.code == "missing_required_parameter"
    with pytest.raises(InvalidRequest) as info:
        decode_request({"model": "m"})
    assert info.value.param == "messages"
    with pytest.raises(InvalidRequest) as info:
        decode_request({"model": "m", "messages": []})
    assert info.value.param == "messages"
    with pytest.raises(InvalidRequest):
        decode_request({"model": "", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(InvalidRequest):
        decode_request(["not", "an", "object"])


def test_n_greater_than_one_is_rejected():
    assert decode_request(body(n=1)).model == "gpt-4.1"
    with pytest.raises(InvalidRequest) as info:
        decode_request(body(n=2))
    assert info.value.param == "n"


# --- encode outbound ---------------------------------------------------------------------


def test_stream_forces_include_usage_and_non_stream_drops_stream_fields():
    p = decode_request(body(stream=True))
    assert not p.include_usage
    out = encode_request(p, TARGET, stream=True)
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["model"] == "gpt-up"
    plain = encode_request(p, TARGET, stream=False)
    assert "stream" not in plain and "stream_options" not in plain


def test_same_wire_extras_pass_through_but_not_to_other_wires():
    p = decode_request(body(logit_bias={"50256": -100}, metadata={"team": "a"}, store=True,
                            service_tier="flex", prompt_cache_key="k1"))
    out = encode_request(p, TARGET, stream=False)
    assert out["logit_bias"] == {"50256": -100} and out["metadata"] == {"team": "a"}
    assert out["store"] is True and out["service_tier"] == "flex" and out["prompt_cache_key"] == "k1"
    foreign = p.replace(extras_protocol="anthropic_messages")
    out2 = encode_request(foreign, TARGET, stream=False)
    assert "logit_bias" not in out2 and "metadata" not in out2


def test_provider_codec_url_and_headers():
    codec = openai_chat.PROVIDER
    assert codec.url(TARGET, True) == "http://127.0.0.1:9/v1/chat/completions"
    assert codec.headers(TARGET)["Authorization"] == "Bearer sk-secret-upstream-key"


def test_upstream_error_body_scrubs_the_key():
    err = openai_chat.PROVIDER.decode_error(
        400, json.dumps({"error": {"message": "bad key sk-secret-upstream-key here", "type": "invalid_request_error"}}
                        ).encode(), {}, TARGET)
    assert err.status == 400 and not err.retriable
    assert "sk-secret-upstream-key" not in err.message and "bad key" in err.message
    limited = openai_chat.PROVIDER.decode_error(429, b"{}", {"retry-after": "3"}, TARGET)
    assert limited.status == 429 and limited.retry_after == 3 and limited.retriable


# --- responses and usage -----------------------------------------------------------------

SDK_RESPONSE = {
    "id": "chatcmpl-123", "object": "chat.completion", "created": 1763800000, "model": "gpt-x-2026-01-01",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None,
                                         "annotations": [], "tool_calls": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 32, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_abc",
}


def test_decode_response_usage_buckets_are_disjoint():
    g = decode_response(SDK_RESPONSE, TARGET)
    assert g.text() == "Hello!" and g.finish_reason is FinishReason.STOP
    u = g.usage
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) == (176, 1024, 48, 32)
    assert u.total_input == 1200 and u.total_output == 80 and u.reported
    assert encode_usage(u)["prompt_tokens"] == 1200 and encode_usage(u)["completion_tokens"] == 80
    assert encode_usage(u)["prompt_tokens_details"]["cached_tokens"] == 1024
    assert encode_usage(u)["completion_tokens_details"]["reasoning_tokens"] == 32


def test_response_round_trip_keeps_same_wire_extras():
    g = decode_response(SDK_RESPONSE, TARGET)
    out = encode_response(g, decode_request(body()))
    assert out["object"] == "chat.completion" and out["model"] == "gpt-4.1"
    assert out["system_fingerprint"] == "fp_abc" and out["id"] == "chatcmpl-123"
    assert out["choices"][0]["message"]["content"] == "Hello!"
    assert out["usage"]["total_tokens"] == 1280


def test_response_with_tool_calls():
    raw = dict(SDK_RESPONSE, choices=[{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}}])
    g = decode_response(raw, TARGET)
    assert [c.name for c in g.tool_calls()] == ["get_weather", "get_time"]
    assert g.finish_reason is FinishReason.TOOL_CALLS
    out = encode_response(g, decode_request(body()))
    msg = out["choices"][0]["message"]
    assert msg["content"] is None and msg["tool_calls"][1]["id"] == "call_b"
    assert out["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("bad", [[], {"choices": []}, {"choices": [{"message": "x"}]},
                                 {"choices": [{"message": {"tool_calls": ["x"]}}]}])
def test_invalid_upstream_response(bad):
    with pytest.raises(InvalidUpstreamResponse):
        decode_response(bad, TARGET)


def test_decode_usage_tolerates_missing_and_garbage():
    assert decode_usage(None) is None
    u = decode_usage({"prompt_tokens": "x", "completion_tokens": None})
    assert u is not None and u.total == 0


# --- stream decoder ------------------------------------------------------------------------


def chunk(delta: Any, finish: Any = None, usage: Any = None) -> SSEEvent:
    c: Dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1763800000, "model": "m",
                         "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                               "finish_reason": finish}]}
    if usage is not None:
        c["usage"] = usage
    return SSEEvent(json.dumps(c))


DONE = SSEEvent("[DONE]")


def decode_all(events: List[SSEEvent]) -> list:
    d = ChatStreamDecoder(TARGET)
    out: list = []
    for e in events:
        out.extend(d.feed(e))
    out.extend(d.finish())
    return out


def test_stream_decoder_text_with_usage_after_finish():
    parts = decode_all([
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"),
        chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                           "prompt_tokens_details": {"cached_tokens": 1}}),
        DONE,
    ])
    assert isinstance(parts[0], ResponseStart) and parts[0].id == "chatcmpl-1"
    assert [p.text for p in parts if isinstance(p, TextDelta)] == ["Hel", "lo"]
    assert isinstance(parts[1], TextStart) and any(isinstance(p, TextEnd) for p in parts)
    usage = [p for p in parts if isinstance(p, UsageUpdate)]
    assert len(usage) == 1 and usage[0].usage.input_tokens == 4 and usage[0].usage.cache_read_tokens == 1
    # Finish is held until [DONE], so usage that arrives after finish_reason still comes first.
    assert isinstance(parts[-1], Finish) and parts[-1].reason is FinishReason.STOP
    assert parts.index(usage[0]) < len(parts) - 1


def test_stream_decoder_parallel_tool_calls_in_fragments():
    parts = decode_all([
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "get_time", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        DONE,
    ])
    starts = [p for p in parts if isinstance(p, ToolCallStart)]
    assert [(s.id, s.name) for s in starts] == [("call_a", "get_weather"), ("call_b", "get_time")]
    args: Dict[int, str] = {}
    for p in parts:
        if isinstance(p, ToolCallDelta):
            args[p.index] = args.get(p.index, "") + p.arguments
    assert json.loads(args[starts[0].index]) == {"city": "Paris"} and args[starts[1].index] == "{}"
    assert sorted(p.index for p in parts if isinstance(p, ToolCallEnd)) == sorted(s.index for s in starts)
    assert parts[-1] == Finish(FinishReason.TOOL_CALLS)


def _calls(parts: list) -> list:
    starts = [p for p in parts if isinstance(p, ToolCallStart)]
    args: Dict[int, str] = {}
    for p in parts:
        if isinstance(p, ToolCallDelta):
            args[p.index] = args.get(p.index, "") + p.arguments
    ends = [p.index for p in parts if isinstance(p, ToolCallEnd)]
    assert sorted(ends) == sorted(s.index for s in starts), "every tool call block is closed exactly once"
    return [(s.id, s.name, args.get(s.index, "")) for s in starts]


def test_stream_decoder_parallel_calls_all_sent_with_index_zero():
    """Some OpenAI-compatible servers give every parallel call index 0; a new id means a new call."""
    parts = decode_all([
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_b", "type": "function",
                               "function": {"name": "get_time", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"), DONE,
    ])
    assert _calls(parts) == [("call_a", "get_weather", "{\"city\": \"Paris\"}"), ("call_b", "get_time", "{}")]


def test_stream_decoder_id_repeated_on_every_fragment_is_one_call():
    parts = decode_all([
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{\"ci"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"arguments": "ty\": 1}"}}]}),
        chunk({}, "tool_calls"), DONE,
    ])
    assert _calls(parts) == [("call_a", "get_weather", "{\"city\": 1}")]


def test_stream_decoder_tool_call_without_id_gets_a_unique_one():
    parts = decode_all([
        chunk({"tool_calls": [{"index": 0, "function": {"name": "a", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "b", "arguments": "{}"}}]}),
        DONE,
    ])
    ids = [c[0] for c in _calls(parts)]
    assert len(set(ids)) == 2 and all(ids)
    assert parts[-1] == Finish(FinishReason.TOOL_CALLS)


def test_stream_decoder_text_then_tool_call():
    parts = decode_all([chunk({"content": "Let me check."}),
                        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}),
                        chunk({}, "tool_calls"), DONE])
    kinds = [type(p).__name__ for p in parts]
    assert kinds == ["ResponseStart", "TextStart", "TextDelta", "TextEnd", "ToolCallStart", "ToolCallDelta",
                     "ToolCallEnd", "Finish"]


def test_stream_decoder_missing_done_is_an_error():
    d = ChatStreamDecoder(TARGET)
    d.feed(chunk({"content": "partial"}))
    d.feed(chunk({}, "stop"))
    with pytest.raises(InvalidUpstreamResponse, match="DONE"):
        d.finish()


def test_stream_decoder_error_object_mid_stream():
    d = ChatStreamDecoder(TARGET)
    d.feed(chunk({"content": "a"}))
    with pytest.raises(UpstreamError) as info:
        d.feed(SSEEvent(json.dumps({"error": {"message": "upstream overloaded sk-secret-upstream-key",
                                              "type": "server_error", "code": "overloaded"}})))
    assert "upstream overloaded" in info.value.message
    assert "sk-secret-upstream-key" not in info.value.message


def test_stream_decoder_invalid_json_chunk():
    d = ChatStreamDecoder(TARGET)
    with pytest.raises(InvalidUpstreamResponse):
        d.feed(SSEEvent("{not json"))
    with pytest.raises(InvalidUpstreamResponse):
        ChatStreamDecoder(TARGET).feed(SSEEvent("[1, 2]"))


# --- stream encoder ----------------------------------------------------------------------


def frames(data: bytes) -> List[Any]:
    out = []
    for ev in iter_events([data]):
        out.append(ev.data if ev.data == "[DONE]" else json.loads(ev.data))
    return out


def encode_all(parts: list, **prompt_fields: Any) -> List[Any]:
    prompt = Prompt(model="client-model", messages=(Message(Role.USER, (TextPart("x"),)),), stream=True,
                    **prompt_fields)
    enc = ChatStreamEncoder(prompt)
    data = b"".join(enc.encode(p) for p in parts) + enc.close()
    return frames(data)


TOOL_STREAM = [
    ResponseStart("chatcmpl-9", "up"), ToolCallStart(0, "call_a", "get_weather"),
    ToolCallDelta(0, "{\"ci"), ToolCallDelta(0, "ty\":\"Paris\"}"), ToolCallEnd(0),
    ToolCallStart(1, "call_b", "get_time"), ToolCallDelta(1, "{}"), ToolCallEnd(1),
    UsageUpdate(Usage(input_tokens=5, output_tokens=3)), Finish(FinishReason.TOOL_CALLS),
]


def test_stream_encoder_emits_tool_call_id_and_name_once():
    out = encode_all(TOOL_STREAM)
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["id"] == "chatcmpl-9" and c["model"] == "client-model" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum("role" in c["choices"][0]["delta"] for c in chunks if c["choices"]) == 1
    frags = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    ids = [f["id"] for f in frags if "id" in f]
    names = [f["function"]["name"] for f in frags if "name" in f.get("function", {})]
    assert ids == ["call_a", "call_b"] and names == ["get_weather", "get_time"]
    args = {0: "", 1: ""}
    for f in frags:
        args[f["index"]] += f["function"].get("arguments", "")
    assert json.loads(args[0]) == {"city": "Paris"} and args[1] == "{}"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert all("usage" not in c for c in chunks), "no usage fields unless the client asked"


def test_stream_encoder_usage_chunk_only_with_include_usage():
    parts = [ResponseStart("x", "up"), TextStart(0), TextDelta(0, "Hi"), TextEnd(0),
             UsageUpdate(Usage(input_tokens=4, cache_read_tokens=6, output_tokens=2, reasoning_tokens=1)),
             Finish(FinishReason.STOP)]
    with_usage = encode_all(parts, include_usage=True)
    assert with_usage[-1] == "[DONE]"
    last = with_usage[-2]
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 10 and last["usage"]["completion_tokens"] == 3
    assert last["usage"]["total_tokens"] == 13
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 6
    assert all(c["usage"] is None for c in with_usage[:-2])
    without = encode_all(parts)
    assert all(c == "[DONE]" or c["choices"] for c in without)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in without[:-1]) == "Hi"


def test_stream_encoder_error_frame_is_an_openai_error_object():
    prompt = Prompt(model="m", messages=(), stream=True)
    enc = ChatStreamEncoder(prompt)
    [frame] = frames(enc.error(UpstreamError("upstream died", provider="up")))
    assert frame["error"]["message"] == "upstream died" and frame["error"]["type"]


def test_stream_encoder_closes_with_stop_when_finish_missing():
    out = encode_all([TextDelta(0, "a")])
    assert [c["choices"][0]["finish_reason"] for c in out[:-1]][-1] == "stop"


def test_generation_round_trip_through_encoder_and_decoder():
    """Our own encoder's output, fed back through our decoder, gives back the same content."""
    from routeplane.language_model.stream import GenerationAccumulator

    out = encode_all(TOOL_STREAM, include_usage=True)
    raw = b"".join(b"data: " + (x.encode() if isinstance(x, str) else json.dumps(x).encode()) + b"\n\n" for x in out)
    d = ChatStreamDecoder(TARGET)
    parser = SSEParser()
    acc = GenerationAccumulator()
    for ev in parser.feed(raw) + parser.finish():
        for p in d.feed(ev):
            acc.add(p)
    for p in d.finish():
        acc.add(p)
    g: Generation = acc.generation()
    assert [(c.id, c.name, c.arguments) for c in g.tool_calls()] == [
        ("call_a", "get_weather", "{\"city\":\"Paris\"}"), ("call_b", "get_time", "{}")]
    assert g.usage.total_input == 5 and g.finish_reason is FinishReason.TOOL_CALLS


# --- SSE parser ----------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_line_endings(eol):
    raw = b"data: one" + eol + eol + b"event: x" + eol + b"data: two" + eol + eol
    events = SSEParser().feed(raw)
    assert [(e.data, e.event) for e in events] == [("one", None), ("two", "x")]


def test_sse_crlf_split_across_feeds():
    p = SSEParser()
    events = p.feed(b"data: a\r") + p.feed(b"\n\r") + p.feed(b"\ndata: b\r\n\r\n")
    assert [e.data for e in events] == ["a", "b"]


def test_sse_multibyte_utf8_split_across_feeds():
    raw = "data: {\"t\":\"héllo €\U0001F600\"}\n\n".encode("utf-8")
    for cut in range(1, len(raw)):
        p = SSEParser()
        events = p.feed(raw[:cut]) + p.feed(raw[cut:]) + p.finish()
        assert [json.loads(e.data)["t"] for e in events] == ["héllo €\U0001F600"], cut


def test_sse_byte_at_a_time():
    raw = b": keep-alive\n\ndata: x\r\ndata: y\r\n\r\ndata:z\n\n"
    p = SSEParser()
    events = []
    for i in range(len(raw)):
        events += p.feed(raw[i:i + 1])
    assert [e.data for e in events + p.finish()] == ["x\ny", "z"]


def test_sse_comments_multiline_and_final_event_without_blank_line():
    p = SSEParser()
    events = p.feed(b": ping\n\ndata: line1\ndata: line2\n\nid: 7\ndata: last")
    assert [e.data for e in events] == ["line1\nline2"]
    tail = p.finish()
    assert [(e.data, e.id) for e in tail] == [("last", "7")]
    assert p.finish() == []


_line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.lists(_line_text, min_size=1, max_size=3), min_size=1, max_size=6),
       eol=st.sampled_from(["\n", "\r\n", "\r"]), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
       comment=st.booleans())
def test_sse_parser_is_independent_of_chunking(events, eol, cuts, comment):
    """However the bytes are split across reads, the same events come out (any line ending, UTF-8 included)."""
    raw = ""
    for lines in events:
        if comment:
            raw += ": keep-alive" + eol
        raw += "".join(f"data: {line}{eol}" for line in lines) + eol
    data = raw.encode("utf-8")
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0] + points, points + [len(data)])]
    p = SSEParser()
    got = []
    for piece in pieces:
        got += p.feed(piece)
    got += p.finish()
    assert [e.data for e in got] == ["\n".join(lines) for lines in events]


@settings(max_examples=100, deadline=None)
@given(args=st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=8)), max_size=3),
                     min_size=1, max_size=3),
       sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5),
       interleave=st.booleans())
def test_tool_call_arguments_survive_any_fragmentation(args, sizes, interleave):
    """Upstream fragments → canonical parts → client chunks → the SDK's accumulation: arguments intact, ids once."""
    texts = [json.dumps(a) for a in args]
    frags: List[List[str]] = []
    for t in texts:
        pieces, i, k = [], 0, 0
        while i < len(t):
            n = sizes[k % len(sizes)]
            pieces.append(t[i:i + n])
            i, k = i + n, k + 1
        frags.append(pieces)
    events = [chunk({"role": "assistant", "content": None})]
    for idx in range(len(texts)):
        events.append(chunk({"tool_calls": [{"index": idx, "id": f"call_{idx}", "type": "function",
                                             "function": {"name": f"fn{idx}", "arguments": ""}}]}))
        if not interleave:
            events += [chunk({"tool_calls": [{"index": idx, "function": {"arguments": p}}]}) for p in frags[idx]]
    if interleave:  # round-robin the fragments of every call, as parallel calls may arrive
        for j in range(max(len(f) for f in frags)):
            for idx, f in enumerate(frags):
                if j < len(f):
                    events.append(chunk({"tool_calls": [{"index": idx, "function": {"arguments": f[j]}}]}))
    events += [chunk({}, "tool_calls"), DONE]
    parts = decode_all(events)
    assert _calls(parts) == [(f"call_{i}", f"fn{i}", texts[i]) for i in range(len(texts))]
    # What an OpenAI SDK client accumulates from our chunks (strings concatenate per tool index).
    acc: Dict[int, Dict[str, str]] = {}
    for c in encode_all(parts)[:-1]:
        for frag in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            a = acc.setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
            a["id"] += frag.get("id") or ""
            a["name"] += frag.get("function", {}).get("name") or ""
            a["arguments"] += frag.get("function", {}).get("arguments") or ""
    assert [(a["id"], a["name"], json.loads(a["arguments"])) for _, a in sorted(acc.items())] == [
        (f"call_{i}", f"fn{i}", args[i]) for i in range(len(args))]
