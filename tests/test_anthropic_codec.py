"""Anthropic Messages codec as pure functions: inbound decode, outbound encode, usage, stop reasons, SSE both ways."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from routeplane.errors import InvalidRequest, InvalidUpstreamResponse, RouteplaneError, UpstreamError
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    GenerationParams,
    ImagePart,
    Message,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    ReasoningStart,
    ResponseFormat,
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
    ToolChoice,
    ToolResultPart,
    Usage,
    UsageUpdate,
)
from routeplane.protocols import anthropic_messages as an
from routeplane.protocols.anthropic_messages.blocks import sanitize_id
from routeplane.protocols.anthropic_messages.request import decode_request, encode_request
from routeplane.protocols.anthropic_messages.response import (
    decode_response,
    decode_usage,
    encode_response,
    encode_usage,
)
from routeplane.protocols.sse import SSEEvent, iter_events

TARGET = RoutingTarget("anth", "claude-up", "anthropic_messages", api_key="sk-ant-secret-key-123456")


def _body(**kw: Any) -> Dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **kw}


def _prompt(messages, **kw: Any) -> Prompt:
    return Prompt(model="m", messages=tuple(messages), **kw)


# --- inbound decode ------------------------------------------------------------------


def test_max_tokens_is_required_and_named():
    body = _body()
    del body["max_tokens"]
    with pytest.raises(InvalidRequest) as info:
        decode_request(body)
    assert info.value.param == "max_tokens"


@pytest.mark.parametrize("bad, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]},
     "messages[0].content[0].input"),
    ({"system": 5}, "system"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"stop_sequences": ["a", 1]}, "stop_sequences"),
])
def test_invalid_bodies_are_400_naming_the_field(bad, param):
    with pytest.raises(InvalidRequest) as info:
        decode_request(_body(**bad))
    assert info.value.param == param and info.value.status == 400


def test_decode_system_blocks_cache_control_tools_and_choice():
    p = decode_request(_body(
        system=[{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
        tools=[{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
               {"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        metadata={"user_id": "u-1"}, stop_sequences=["###"], thinking={"type": "enabled", "budget_tokens": 3000},
    ), {"anthropic-beta": "b1", "anthropic-version": "2023-06-01", "x-api-key": "secret"})
    assert p.system == (TextPart("Rules.", {"type": "ephemeral"}),)
    assert [t.name for t in p.tools] == ["f"] and p.tools[0].cache_control == {"type": "ephemeral"}
    assert p.tool_choice == ToolChoice("required", parallel=False)
    assert p.params.user == "u-1" and p.params.stop == ("###",)
    assert p.params.reasoning_budget == 3000 and p.params.reasoning_effort == "medium"
    assert p.extras[an.request.HEADERS_KEY] == {"anthropic-beta": "b1", "anthropic-version": "2023-06-01"}
    assert p.extras[an.request.SERVER_TOOLS_KEY] == [[1, {"type": "web_search_20250305", "name": "web_search"}]]


def test_tool_results_become_a_tool_message_before_the_rest_of_the_turn():
    p = decode_request(_body(messages=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "also"},
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "bad"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]},
    ]))
    roles = [m.role for m in p.messages]
    assert roles == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER]
    assistant = p.messages[1].parts
    assert assistant[0] == ReasoningPart("t", "sig", provider="anthropic_messages")
    assert assistant[1] == ReasoningPart(redacted="opaque", provider="anthropic_messages")
    assert assistant[2] == ToolCallPart("toolu_1", "f", '{"a":1}')
    result = p.messages[2].parts[0]
    assert result.is_error and result.text() == "bad" and isinstance(result.content[1], ImagePart)


# --- outbound encode ------------------------------------------------------------------


def test_encode_merges_same_role_puts_results_first_and_drops_empty_text():
    prompt = _prompt([
        Message(Role.USER, (TextPart("a"),)),
        Message(Role.USER, (TextPart(""), TextPart("b"))),
        Message(Role.ASSISTANT, (TextPart(""), ToolCallPart("call.1|x", "f", ""), ToolCallPart("call:2", "f", '{"k":2}'))),
        Message(Role.USER, (TextPart("after"),)),
        Message(Role.TOOL, (ToolResultPart("call.1|x", (TextPart("r1"),)), ToolResultPart("call:2", (), True))),
    ])
    body = encode_request(prompt, TARGET, False)
    assert body["max_tokens"] == 4096 and body["model"] == "claude-up" and "stream" not in body
    msgs = body["messages"]
    assert msgs[0] == {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    uses = msgs[1]["content"]
    assert [b["type"] for b in uses] == ["tool_use", "tool_use"] and uses[0]["input"] == {}
    results = msgs[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    # Sanitized consistently on both sides, and still distinct.
    assert [b["tool_use_id"] for b in results[:2]] == [u["id"] for u in uses]
    assert all(an.blocks.ID_OK.match(u["id"]) for u in uses) and uses[0]["id"] != uses[1]["id"]
    assert results[1] == {"type": "tool_result", "tool_use_id": uses[1]["id"], "is_error": True}


def test_sanitize_id_keeps_valid_ids_and_is_deterministic():
    assert sanitize_id("toolu_01-A") == "toolu_01-A"
    assert sanitize_id("a.b") == sanitize_id("a.b") != sanitize_id("a:b")


def test_only_signed_anthropic_reasoning_is_sent_as_thinking():
    prompt = _prompt([
        Message(Role.USER, (TextPart("q"),)),
        Message(Role.ASSISTANT, (ReasoningPart("foreign", provider="openai_chat"),
                                 ReasoningPart("gemini", "g-sig", provider="gemini"),
                                 ReasoningPart("unsigned", provider="anthropic_messages"),
                                 ReasoningPart("signed", "sig-1", provider="anthropic_messages"),
                                 ReasoningPart(redacted="opaque", provider="anthropic_messages"),
                                 TextPart("answer"))),
        Message(Role.ASSISTANT, (ReasoningPart("only foreign", provider="openai_chat"),)),
        Message(Role.USER, (TextPart("next"),)),
    ])
    msgs = encode_request(prompt, TARGET, False)["messages"]
    assert msgs[1]["content"] == [{"type": "thinking", "thinking": "signed", "signature": "sig-1"},
                                  {"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "answer"}]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]  # the empty assistant turn is gone


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_tool_arguments_that_are_not_a_json_object_are_400(arguments):
    prompt = _prompt([Message(Role.USER, (TextPart("q"),)), Message(Role.ASSISTANT, (ToolCallPart("c1", "f", arguments),))])
    with pytest.raises(InvalidRequest) as info:
        encode_request(prompt, TARGET, False)
    assert info.value.status == 400 and info.value.code == "invalid_tool_arguments"


def test_sampling_clamp_max_tokens_option_and_json_mode():
    target = TARGET.replace(options={"default_max_tokens": 1000})
    prompt = _prompt([Message(Role.USER, (TextPart("q"),))],
                     params=GenerationParams(temperature=1.7, top_p=0.5, user="u"),
                     response_format=ResponseFormat("json_object"))
    body = encode_request(prompt, target, True)
    assert body["temperature"] == 1.0 and body["top_p"] == 0.5 and body["max_tokens"] == 1000
    assert body["metadata"] == {"user_id": "u"} and body["stream"] is True
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}


def test_reasoning_effort_becomes_a_thinking_budget_that_fits():
    msgs = [Message(Role.USER, (TextPart("q"),))]
    body = encode_request(_prompt(msgs, params=GenerationParams(reasoning_effort="medium", temperature=0.3)), TARGET, False)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 4096 + 8192 and "temperature" not in body
    capped = encode_request(_prompt(msgs, params=GenerationParams(reasoning_effort="high", max_tokens=5000)), TARGET, False)
    assert capped["thinking"]["budget_tokens"] == 4999 and capped["max_tokens"] == 5000
    from routeplane.language_model.types import Tool

    forced = encode_request(_prompt(msgs, params=GenerationParams(reasoning_effort="low"), tools=(Tool("f"),),
                                    tool_choice=ToolChoice("tool", "f", parallel=False)), TARGET, False)
    assert "thinking" not in forced  # Anthropic rejects thinking with a forcing tool_choice
    assert forced["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}


def test_headers_forward_client_beta_only_on_the_same_wire():
    same = decode_request(_body(), {"anthropic-beta": "b1", "anthropic-version": "2026-10-21"})
    h = an.PROVIDER.request_headers(TARGET, same)
    assert h["x-api-key"] == TARGET.api_key and h["anthropic-beta"] == "b1" and h["anthropic-version"] == "2026-10-21"
    foreign = same.replace(extras_protocol="openai_chat")
    h2 = an.PROVIDER.request_headers(TARGET, foreign)
    assert "anthropic-beta" not in h2 and h2["anthropic-version"] == "2023-06-01"
    assert an.PROVIDER.url(TARGET.replace(base_url="http://h:1/v1/"), False) == "http://h:1/v1/messages"


def test_same_wire_request_round_trips_unknown_fields():
    body = _body(system=[{"type": "text", "text": "S"}], thinking={"type": "adaptive"}, temperature=0.2,
                 service_tier="auto", output_config={"effort": "low"},
                 tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
                        {"type": "custom", "name": "f", "input_schema": {"type": "object"},
                         "input_examples": [{"a": 1}], "cache_control": {"type": "ephemeral"}},
                        {"type": "bash_20250124", "name": "bash"}])
    out = encode_request(decode_request(body), TARGET, False)
    expected = dict(body, model="claude-up", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    out["messages"] = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert out == expected


# --- response, usage, stop reasons ---------------------------------------------------------


def test_usage_buckets_both_ways():
    u = decode_usage({"input_tokens": 40, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
                      "output_tokens": 120, "output_tokens_details": {"thinking_tokens": 60}})
    assert (u.input_tokens, u.cache_write_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) == (
        40, 100, 2000, 60, 60)
    assert u.total_input == 2140 and u.total_output == 120
    assert encode_usage(Usage(40, 2000, 100, 60, 60)) == {
        "input_tokens": 40, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
        "output_tokens": 120, "output_tokens_details": {"thinking_tokens": 60}}
    later = decode_usage({"output_tokens": 150}, u)  # message_delta: cumulative, present fields overwrite
    assert (later.input_tokens, later.cache_read_tokens, later.total_output, later.reasoning_tokens) == (40, 2000, 150, 60)


@pytest.mark.parametrize("wire, canonical", [
    ("end_turn", FinishReason.STOP), ("stop_sequence", FinishReason.STOP_SEQUENCE), ("max_tokens", FinishReason.LENGTH),
    ("tool_use", FinishReason.TOOL_CALLS), ("pause_turn", FinishReason.PAUSE), ("refusal", FinishReason.CONTENT_FILTER),
    ("model_context_window_exceeded", FinishReason.LENGTH),
])
def test_stop_reasons_round_trip(wire, canonical):
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "x", "content": [{"type": "text", "text": "t"}],
            "stop_reason": wire, "stop_sequence": "##" if wire == "stop_sequence" else None,
            "usage": {"input_tokens": 1, "output_tokens": 1}}
    gen = decode_response(body, TARGET)
    assert gen.finish_reason is canonical
    out = encode_response(gen, _prompt([]))
    assert out["stop_reason"] == wire and out["stop_sequence"] == body["stop_sequence"]


def test_response_foreign_reasoning_and_bad_arguments():
    gen = Generation("chatcmpl-1", "x", (ReasoningPart("why", "gsig", provider="gemini"), TextPart(""), TextPart("ok"),
                                          ToolCallPart("c1", "f", "{broken")), FinishReason.TOOL_CALLS)
    plain = encode_response(gen, decode_request(_body()))
    assert [b["type"] for b in plain["content"]] == ["text", "tool_use"]
    assert plain["content"][1]["input"] == {"_raw": "{broken"} and plain["id"] == "msg_chatcmpl-1"
    thinking = encode_response(gen, decode_request(_body(thinking={"type": "enabled", "budget_tokens": 1024})))
    assert thinking["content"][0] == {"type": "thinking", "thinking": "why", "signature": ""}


def test_error_bodies_and_529():
    err = RouteplaneError("busy", status=503, kind="overloaded")
    assert an.CLIENT.error_body(err) == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert an.CLIENT.error_status(err) == 529
    assert an.CLIENT.error_body(RouteplaneError("x", status=413, kind="request_too_large"))["error"]["type"] == \
        "request_too_large"


# --- stream decoder (provider) ----------------------------------------------------------------


def _decode(events: List[Dict[str, Any]], finish: bool = True) -> List[Any]:
    dec = an.PROVIDER.stream_decoder(TARGET)
    out: List[Any] = []
    for e in events:
        out.extend(dec.feed(SSEEvent(json.dumps(e), e.get("type"))))
    if finish:
        out.extend(dec.finish())
    return out


START = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-up", "content": [],
                                              "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1}}}


def test_decoder_tolerates_ping_and_unknown_events_and_keeps_signature():
    parts = _decode([
        START, {"type": "ping"}, {"type": "brand_new_event"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "R"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"whole": True}}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ])
    assert ReasoningEnd(0, "SIG") in parts and ReasoningStart(1, "anthropic_messages", "R") in parts
    assert ToolCallDelta(2, '{"whole":true}') in parts
    usage = [p for p in parts if isinstance(p, UsageUpdate)][-1].usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.total_output) == (10, 4, 9)
    assert parts[-1] == Finish(FinishReason.TOOL_CALLS)


def test_decoder_error_event_and_missing_message_stop():
    with pytest.raises(UpstreamError) as info:
        _decode([START, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}])
    assert info.value.kind == "overloaded" and info.value.retriable and info.value.status == 503
    with pytest.raises(InvalidUpstreamResponse):
        _decode([START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}])
    dec = an.PROVIDER.stream_decoder(TARGET)
    with pytest.raises(InvalidUpstreamResponse):
        dec.feed(SSEEvent("{nope", "message_start"))


# --- stream encoder (client) -------------------------------------------------------------------


def _encode(parts: List[Any], prompt: Prompt = None) -> List[SSEEvent]:
    enc = an.CLIENT.stream_encoder(prompt or decode_request(_body(stream=True)))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return list(iter_events([raw]))


def test_encoder_names_every_event_skips_empty_text_and_hides_foreign_reasoning():
    events = _encode([
        ResponseStart("abc", "x", usage=Usage(input_tokens=7)),
        ReasoningStart(0, "openai_chat"), ReasoningDelta(0, "private"), ReasoningEnd(0),
        TextStart(1), TextEnd(1),
        TextStart(2), TextDelta(2, "hi"), TextEnd(2),
        UsageUpdate(Usage(7, 0, 0, 3)), Finish(FinishReason.STOP),
    ])
    assert all(e.event == json.loads(e.data)["type"] for e in events)
    names = [e.event for e in events]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    start = json.loads(events[0].data)["message"]
    assert start["id"] == "msg_abc" and start["usage"]["input_tokens"] == 7
    assert json.loads(events[1].data)["index"] == 0


def test_encoder_holds_a_block_while_an_earlier_tool_call_is_incomplete():
    events = _encode([
        ResponseStart("a", "x"),
        ToolCallStart(0, "c0", "f"), ToolCallDelta(0, '{"a":'),
        ToolCallStart(1, "c1", "g"), ToolCallDelta(1, '{"b":2}'),
        ToolCallDelta(0, "1}"), TextDelta(2, "late text"),
        ToolCallEnd(0), ToolCallEnd(1), Finish(FinishReason.TOOL_CALLS),
    ])
    data = [json.loads(e.data) for e in events]
    blocks = [(d["index"], d["content_block"].get("id", d["content_block"]["type"]))
              for d in data if d["type"] == "content_block_start"]
    assert blocks == [(0, "c0"), (1, "c1"), (2, "text")]
    args: Dict[int, str] = {}
    for d in data:
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
            args[d["index"]] = args.get(d["index"], "") + d["delta"]["partial_json"]
    assert args == {0: '{"a":1}', 1: '{"b":2}'}
    # Never two blocks open at once.
    open_blocks = 0
    for d in data:
        open_blocks += {"content_block_start": 1, "content_block_stop": -1}.get(d["type"], 0)
        assert open_blocks in (0, 1)
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


def test_encoder_signature_and_error_frame():
    enc = an.CLIENT.stream_encoder(decode_request(_body(stream=True)))
    raw = b"".join(enc.encode(p) for p in [
        ResponseStart("a", "x"), ReasoningStart(0, "anthropic_messages"), ReasoningDelta(0, "t"),
        ReasoningEnd(0, "SIG"), ReasoningStart(1, "gemini"), ReasoningDelta(1, "g", signature="GSIG"), ReasoningEnd(1)])
    raw += enc.error(RouteplaneError("Overloaded", status=503, kind="overloaded"))
    data = [json.loads(e.data) for e in iter_events([raw])]
    sigs = [d["delta"]["signature"] for d in data if d.get("delta", {}).get("type") == "signature_delta"]
    assert sigs == ["SIG"]
    assert data[-1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_dangling_tool_calls_get_an_error_result_and_orphan_results_become_text():
    prompt = _prompt([
        Message(Role.USER, (TextPart("q"),)),
        Message(Role.ASSISTANT, (ToolCallPart("c1", "f", "{}"), ToolCallPart("c2", "f", "{}"))),
        Message(Role.TOOL, (ToolResultPart("c2", (TextPart("ok"),)), ToolResultPart("zz", (TextPart("stale"),)))),
        Message(Role.USER, (TextPart("go on"),)),
    ])
    msgs = encode_request(prompt, TARGET, False)["messages"]
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "No result was provided for this tool call.",
         "is_error": True},
        {"type": "tool_result", "tool_use_id": "c2", "content": "ok"},
        {"type": "text", "text": "[result of tool call zz]: stale"},
        {"type": "text", "text": "go on"},
    ]


def test_thinking_is_off_when_continuing_a_tool_turn_without_its_signed_thinking():
    from routeplane.language_model.types import Tool

    history = [Message(Role.USER, (TextPart("q"),)),
               Message(Role.ASSISTANT, (ReasoningPart("r", provider="openai_chat"), ToolCallPart("c1", "f", "{}"))),
               Message(Role.TOOL, (ToolResultPart("c1", (TextPart("ok"),)),))]
    params = GenerationParams(reasoning_effort="low")
    body = encode_request(_prompt(history, params=params, tools=(Tool("f"),)), TARGET, False)
    assert "thinking" not in body  # Anthropic would 400 without the turn's signed thinking block
    signed = list(history)
    signed[1] = Message(Role.ASSISTANT, (ReasoningPart("r", "sig", provider="anthropic_messages"),
                                         ToolCallPart("c1", "f", "{}")))
    body = encode_request(_prompt(signed, params=params, tools=(Tool("f"),)), TARGET, False)
    assert body["thinking"]["type"] == "enabled"
    assert body["messages"][1]["content"][0] == {"type": "thinking", "thinking": "r", "signature": "sig"}


def test_upstream_error_statuses():
    overloaded = an.PROVIDER.decode_error(529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
                                          {}, TARGET)
    assert overloaded.retriable and overloaded.kind == "overloaded" and "Overloaded" in overloaded.message
    billing = an.PROVIDER.decode_error(402, b'{"type":"error","error":{"type":"billing_error","message":"no credit"}}',
                                       {}, TARGET)
    assert (billing.status, billing.kind, billing.retriable) == (402, "budget", True)
    assert an.CLIENT.error_body(billing)["error"]["type"] == "billing_error"
    leaked = an.PROVIDER.decode_error(400, b'{"error":{"message":"bad key sk-ant-secret-key-123456"}}', {}, TARGET)
    assert "sk-ant-secret" not in leaked.message


def test_openai_insufficient_quota_is_billing_error_for_anthropic_clients():
    from routeplane.protocols.base import upstream_status_error

    oc = RoutingTarget("oc", "gpt", "openai_chat")
    quota = upstream_status_error(429, b'{"error":{"message":"quota","type":"insufficient_quota",'
                                       b'"code":"insufficient_quota"}}', {}, oc)
    assert quota.kind == "budget" and quota.status == 429  # OpenAI clients keep their 429
    assert an.CLIENT.error_status(quota) == 402 and an.CLIENT.error_body(quota)["error"]["type"] == "billing_error"
    limited = upstream_status_error(429, b'{"error":{"type":"rate_limit_exceeded"}}', {"retry-after": "2"}, oc)
    assert limited.kind == "rate_limit" and an.CLIENT.error_status(limited) == 429


def test_same_wire_stream_keeps_anthropic_usage_fields():
    parts = _decode([
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "content": [], "usage": {
            "input_tokens": 3, "cache_creation_input_tokens": 5, "output_tokens": 1, "service_tier": "priority",
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 5}}}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ])
    data = [json.loads(e.data) for e in _encode(parts)]
    start, delta = data[0]["message"]["usage"], data[-2]["usage"]
    assert start["service_tier"] == "priority" and start["cache_creation"]["ephemeral_1h_input_tokens"] == 5
    assert delta["output_tokens"] == 7 and delta["cache_creation_input_tokens"] == 5
    from routeplane.language_model.types import UsageUpdate as UU
    foreign = _encode([ResponseStart("r", "m"), UU(Usage(1, 0, 0, 1, raw={"prompt_tokens": 1, "service_tier": "x"})),
                       Finish(FinishReason.STOP)])
    assert "prompt_tokens" not in json.loads(foreign[-2].data)["usage"]
