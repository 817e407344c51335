"""OpenAI Responses codec as pure functions: request decode/encode, response and usage, stream encoder/decoder."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from routeplane.errors import InvalidRequest, InvalidUpstreamResponse, UpstreamError, UpstreamTimeout
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator, generation_to_parts
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    Message,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    ReasoningStart,
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
from routeplane.protocols import openai_responses as wire
from routeplane.protocols.carried import restore
from routeplane.protocols.openai_responses.request import pack_reasoning_signature
from routeplane.protocols.sse import iter_events

TARGET = RoutingTarget("up", "gpt-x", "openai_responses", base_url="http://x/v1", api_key="sk-secret-key-123456")
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def decode(**body: Any) -> Prompt:
    return wire.CLIENT.decode_request({"model": "m", **body})


# --- request decode ------------------------------------------------------------


def test_string_input_is_one_user_message_and_instructions_are_system() -> None:
    p = decode(input="hi", instructions="Be terse.", max_output_tokens=50, reasoning={"effort": "low"})
    assert p.messages == (Message(Role.USER, (TextPart("hi"),)),)
    assert p.system_text() == "Be terse."
    assert p.params.max_tokens == 50 and p.params.reasoning_effort == "low"
    assert p.include_usage  # Responses always reports usage


def test_items_collapse_into_canonical_turns() -> None:
    p = decode(input=[
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
         "encrypted_content": "ENC"},
        {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": "{\"city\":\"Paris\"}", "id": "fc_1"},
        {"type": "function_call", "call_id": "call_2", "name": "w", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "21C"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Both mild.", "annotations": []}]},
    ])
    assert p.system_text() == "Use tools."
    roles = [m.role for m in p.messages]
    assert roles == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    assistant = p.messages[1].parts
    assert isinstance(assistant[0], ReasoningPart) and assistant[0].provider == "openai_responses"
    assert assistant[0].text == "think" and assistant[0].signature == pack_reasoning_signature("rs_1", "ENC")
    assert [c.id for c in assistant[1:]] == ["call_1", "call_2"]
    assert [r.text() for r in p.messages[2].parts] == ["18C", "21C"]
    assert p.messages[0].parts[1].media_type == "image/png"


@pytest.mark.parametrize("field,value", [("previous_response_id", "resp_1"), ("conversation", "conv_1")])
def test_server_side_state_is_a_clear_400(field: str, value: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode(input="hi", **{field: value})
    assert exc.value.param == field and "stateless" in exc.value.message and exc.value.status == 400


def test_item_reference_is_rejected_not_dropped() -> None:
    with pytest.raises(InvalidRequest, match="stateless"):
        decode(input=[{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_1"}])


def test_flat_function_tools_and_tool_choice() -> None:
    p = decode(input="x", tools=[{"type": "function", "name": "w", "parameters": SCHEMA, "strict": True}],
               tool_choice={"type": "function", "name": "w"}, parallel_tool_calls=False,
               text={"format": {"type": "json_schema", "name": "out", "schema": SCHEMA, "strict": True}})
    assert p.tools[0].name == "w" and p.tools[0].parameters == SCHEMA and p.tools[0].strict is True
    assert p.tool_choice.mode == "tool" and p.tool_choice.name == "w" and p.tool_choice.parallel is False
    assert p.response_format.type == "json_schema" and p.response_format.schema == SCHEMA


def test_chat_shaped_tools_are_400() -> None:
    with pytest.raises(InvalidRequest, match="flat"):
        decode(input="x", tools=[{"type": "function", "function": {"name": "w"}}])


def test_allowed_tools_filters_the_offer() -> None:
    p = decode(input="x", tools=[{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
               tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "b"}]})
    assert [t.name for t in p.tools] == ["b"] and p.tool_choice.mode == "auto"


def test_bad_types_name_the_parameter() -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode(input=5)
    assert exc.value.param == "input"
    with pytest.raises(InvalidRequest) as exc:
        decode(input="x", max_output_tokens="many")
    assert exc.value.param == "max_output_tokens"


# --- request encode ------------------------------------------------------------


def _history_prompt(**kw: Any) -> Prompt:
    return Prompt(model="m", system=(TextPart("sys"),), messages=(
        Message(Role.USER, (TextPart("Weather?"),)),
        Message(Role.ASSISTANT, (
            ReasoningPart("mine", pack_reasoning_signature("rs_9", "ENC9"), provider="openai_responses"),
            ReasoningPart("theirs", "anthropic-sig", provider="anthropic_messages"),
            TextPart("Checking."),
            ToolCallPart("call_1", "w", "{\"city\":\"Paris\"}"),
        )),
        Message(Role.TOOL, (ToolResultPart("call_1", (TextPart("boom"),), is_error=True),)),
    ), **kw)


def test_encode_history_as_items() -> None:
    body = wire.PROVIDER.encode_request(_history_prompt(), TARGET, stream=True)
    assert body["model"] == "gpt-x" and body["instructions"] == "sys" and body["stream"] is True
    assert body["store"] is False and "reasoning.encrypted_content" in body["include"]
    kinds = [i.get("type", i.get("role")) for i in body["input"]]
    assert kinds == ["user", "reasoning", "assistant", "function_call", "function_call_output"]
    reasoning = body["input"][1]
    assert reasoning["id"] == "rs_9" and reasoning["encrypted_content"] == "ENC9"  # another vendor's is dropped
    assert body["input"][3] == {"type": "function_call", "call_id": "call_1", "name": "w",
                                "arguments": "{\"city\":\"Paris\"}"}
    assert body["input"][4]["output"].startswith("Error: ")


def test_encode_tools_flat_and_options() -> None:
    from routeplane.language_model.types import GenerationParams, ResponseFormat, Tool, ToolChoice

    p = Prompt(model="m", messages=(Message(Role.USER, (TextPart("x"),)),), tools=(Tool("w", "Weather", SCHEMA),),
               tool_choice=ToolChoice("tool", "w"), response_format=ResponseFormat("json_schema", "o", SCHEMA),
               params=GenerationParams(max_tokens=9, reasoning_effort="high", stop=("END",)))
    body = wire.PROVIDER.encode_request(p, TARGET, stream=False)
    assert body["tools"] == [{"type": "function", "name": "w", "parameters": SCHEMA, "description": "Weather",
                              "strict": False}]
    assert body["tool_choice"] == {"type": "function", "name": "w"}
    assert body["text"] == {"format": {"type": "json_schema", "name": "o", "schema": SCHEMA}}
    assert body["max_output_tokens"] == 9 and body["reasoning"] == {"effort": "high"}
    assert "stop" not in body and "stream" not in body  # Responses has no stop sequences


def test_same_wire_extras_forward_only_to_the_same_wire() -> None:
    p = decode(input="x", metadata={"k": "v"}, store=True, reasoning={"effort": "low", "summary": "auto"})
    body = wire.PROVIDER.encode_request(p, TARGET, stream=False)
    assert body["metadata"] == {"k": "v"} and body["store"] is True
    assert body["reasoning"] == {"summary": "auto", "effort": "low"}
    from routeplane.protocols import openai_chat

    chat = openai_chat.PROVIDER.encode_request(p, TARGET.replace(protocol="openai_chat"), stream=False)
    assert "metadata" not in chat and "store" not in chat


# --- responses and usage -------------------------------------------------------


def test_usage_buckets_round_trip() -> None:
    u = Usage(input_tokens=40, cache_read_tokens=2000, cache_write_tokens=10, output_tokens=60, reasoning_tokens=60)
    wire_usage = wire.response.encode_usage(u)
    assert wire_usage == {"input_tokens": 2050, "input_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 10},
                          "output_tokens": 120, "output_tokens_details": {"reasoning_tokens": 60}, "total_tokens": 2170}
    back = wire.response.decode_usage(wire_usage)
    assert (back.input_tokens, back.cache_read_tokens, back.cache_write_tokens, back.output_tokens,
            back.reasoning_tokens) == (40, 2000, 10, 60, 60)


def test_encode_response_items_and_status() -> None:
    gen = Generation("abc", "up", (ReasoningPart("why", provider="anthropic_messages", signature="s"),
                                   TextPart("Hi"), ToolCallPart("call_1", "w", "{}")),
                     FinishReason.LENGTH, Usage(input_tokens=3, output_tokens=4))
    body = wire.CLIENT.encode_response(gen, decode(input="x"))
    assert body["id"] == "resp_abc" and body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [o["type"] for o in body["output"]] == ["reasoning", "message", "function_call"]
    # Anthropic's signature is carried opaquely (never as OpenAI's own) and comes back as Anthropic's.
    carried = body["output"][0]["encrypted_content"]
    assert carried != "s" and restore(carried) == ReasoningPart("why", "s", provider="anthropic_messages")
    assert body["output"][2]["call_id"] == "call_1" and body["usage"]["total_tokens"] == 7


def test_decode_response() -> None:
    body = {"id": "resp_1", "status": "completed", "model": "gpt-x", "created_at": 5, "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": "E"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "w", "arguments": "{}"},
    ], "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 6,
                 "output_tokens_details": {"reasoning_tokens": 2}}}
    gen = wire.PROVIDER.decode_response(body, TARGET)
    assert gen.finish_reason is FinishReason.TOOL_CALLS
    assert gen.parts[0].signature == pack_reasoning_signature("rs_1", "E")
    assert gen.usage.input_tokens == 6 and gen.usage.cache_read_tokens == 4 and gen.usage.reasoning_tokens == 2
    incomplete = wire.PROVIDER.decode_response({**body, "status": "incomplete", "output": [],
                                                "incomplete_details": {"reason": "content_filter"}}, TARGET)
    assert incomplete.finish_reason is FinishReason.CONTENT_FILTER
    with pytest.raises(UpstreamError, match="overloaded"):
        wire.PROVIDER.decode_response({"status": "failed", "error": {"code": "server_error",
                                                                      "message": "overloaded"}}, TARGET)


def test_error_body_is_the_openai_envelope() -> None:
    body = wire.CLIENT.error_body(InvalidRequest("bad", param="input"))
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": None}}


# --- stream encoder ------------------------------------------------------------


def encode_stream(parts: List[Any], prompt: Prompt = None, error: Any = None) -> List[Dict[str, Any]]:
    enc = wire.CLIENT.stream_encoder(prompt or decode(input="x"))
    raw = b"".join(enc.encode(p) for p in parts) + (enc.error(error) if error else enc.close())
    events = list(iter_events([raw]))
    out = []
    for ev in events:
        data = json.loads(ev.data)
        assert ev.event == data["type"]  # the event: line names the same type
        out.append(data)
    assert b"[DONE]" not in raw
    return out


def test_stream_text_and_tool_call_event_sequence() -> None:
    parts = [ResponseStart("up1", "up"), TextStart(0), TextDelta(0, "Hel"), TextDelta(0, "lo"), TextEnd(0),
             ToolCallStart(1, "call_1", "w"), ToolCallDelta(1, "{\"ci"), ToolCallDelta(1, "ty\":1}"), ToolCallEnd(1),
             UsageUpdate(Usage(input_tokens=5, cache_read_tokens=2, output_tokens=3)), Finish(FinishReason.TOOL_CALLS)]
    events = encode_stream(parts)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    added_fc = events[9]["item"]
    assert added_fc["call_id"] == "call_1" and added_fc["name"] == "w" and added_fc["arguments"] == ""
    assert events[10]["item_id"] == added_fc["id"] and events[10]["output_index"] == 1
    final = events[-1]["response"]
    assert final["id"] == events[0]["response"]["id"] == "resp_up1"
    assert final["status"] == "completed"
    assert [o["type"] for o in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == "{\"city\":1}"
    assert final["usage"]["input_tokens"] == 7 and final["usage"]["input_tokens_details"]["cached_tokens"] == 2


def test_stream_never_interleaves_items() -> None:
    # Chat-style upstreams close every tool call only at the end.
    parts = [ToolCallStart(0, "a", "w"), ToolCallDelta(0, "{}"), ToolCallStart(1, "b", "w"), ToolCallDelta(1, "{}"),
             ToolCallEnd(0), ToolCallEnd(1)]
    events = encode_stream(parts)
    item_events = [(e["type"], e.get("output_index")) for e in events if "output_index" in e]
    assert item_events == [("response.output_item.added", 0), ("response.function_call_arguments.delta", 0),
                           ("response.function_call_arguments.done", 0), ("response.output_item.done", 0),
                           ("response.output_item.added", 1), ("response.function_call_arguments.delta", 1),
                           ("response.function_call_arguments.done", 1), ("response.output_item.done", 1)]


def test_stream_openai_reasoning_keeps_its_id_everywhere() -> None:
    sig = pack_reasoning_signature("rs_up", "ENC")
    parts = [ReasoningStart(0, "openai_responses"), ReasoningDelta(0, "thinking"), ReasoningEnd(0, sig),
             TextStart(1), TextDelta(1, "ok"), TextEnd(1)]
    events = encode_stream(parts)
    reasoning_events = [e for e in events if e.get("item", {}).get("type") == "reasoning" or "summary_index" in e]
    ids = {e.get("item_id") or e["item"]["id"] for e in reasoning_events}
    assert ids == {"rs_up"}
    final = events[-1]["response"]["output"][0]
    assert final == {"type": "reasoning", "id": "rs_up", "summary": [{"type": "summary_text", "text": "thinking"}],
                     "encrypted_content": "ENC"}


def test_stream_length_is_incomplete_and_usage_always_present() -> None:
    events = encode_stream([TextDelta(0, "x"), Finish(FinishReason.LENGTH)])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    # No usage from upstream: the gateway's estimate, never nothing.
    assert events[-1]["response"]["usage"]["output_tokens"] == 1


def test_stream_error_is_error_event_then_response_failed() -> None:
    events = encode_stream([TextDelta(0, "x")], error=UpstreamTimeout("too slow", provider="p"))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "too slow"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["message"] == "too slow"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


# --- stream decoder ------------------------------------------------------------


def decode_stream(raw: bytes) -> List[Any]:
    dec = wire.PROVIDER.stream_decoder(TARGET)
    parts: List[Any] = []
    for ev in iter_events([raw]):
        parts.extend(dec.feed(ev))
    parts.extend(dec.finish())
    return parts


def test_encoder_output_decodes_to_the_same_generation() -> None:
    gen = Generation("resp_x", "m", (
        ReasoningPart("plan", pack_reasoning_signature("rs_1", "E1"), provider="openai_responses"),
        TextPart("Hello"), ToolCallPart("call_9", "w", "{\"city\":\"Paris\"}")),
        FinishReason.TOOL_CALLS, Usage(input_tokens=8, cache_read_tokens=2, output_tokens=5, reasoning_tokens=3))
    enc = wire.CLIENT.stream_encoder(decode(input="x"))
    raw = b"".join(enc.encode(p) for p in generation_to_parts(gen)) + enc.close()
    acc = GenerationAccumulator()
    for p in decode_stream(raw):
        acc.add(p)
    back = acc.generation()
    assert back.parts == gen.parts
    assert back.finish_reason is FinishReason.TOOL_CALLS
    assert (back.usage.input_tokens, back.usage.cache_read_tokens, back.usage.output_tokens,
            back.usage.reasoning_tokens) == (8, 2, 5, 3)


def test_decoder_without_terminal_event_is_an_upstream_failure() -> None:
    raw = (b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
           b'"response":{"id":"r","model":"m","output":[]}}\n\n')
    with pytest.raises(InvalidUpstreamResponse, match="terminal"):
        decode_stream(raw)


@pytest.mark.parametrize("payload", [
    {"type": "error", "code": "server_error", "message": "boom sk-secret-key-123456"},
    {"type": "error", "error": {"code": "server_error", "message": "boom sk-secret-key-123456"}},
])
def test_decoder_error_event_raises_and_scrubs(payload: Dict[str, Any]) -> None:
    raw = f"event: error\ndata: {json.dumps(payload)}\n\n".encode()
    with pytest.raises(UpstreamError) as exc:
        decode_stream(raw)
    assert "boom" in exc.value.message and "sk-secret" not in exc.value.message


def test_decoder_keys_deltas_by_item_id() -> None:
    events = [
        {"type": "response.created", "response": {"id": "r", "model": "m"}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "function_call", "id": "fc_a", "call_id": "call_a", "name": "f", "arguments": ""}},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "id": "fc_b", "call_id": "call_b", "name": "g", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_b", "output_index": 1, "delta": "{\"b\":1}"},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_a", "output_index": 0, "delta": "{\"a\":1}"},
        {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": []}},
    ]
    raw = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    acc = GenerationAccumulator()
    for p in decode_stream(raw):
        acc.add(p)
    calls = {c.id: c.arguments for c in acc.generation().tool_calls()}
    assert calls == {"call_a": "{\"a\":1}", "call_b": "{\"b\":1}"}
    assert acc.generation().finish_reason is FinishReason.TOOL_CALLS


def test_pause_is_incomplete_without_reason_and_decodes_back() -> None:
    body = wire.CLIENT.encode_response(Generation("r", "m", (TextPart("..."),), FinishReason.PAUSE), decode(input="x"))
    assert body["status"] == "incomplete" and body["incomplete_details"] is None
    assert wire.PROVIDER.decode_response(body, TARGET).finish_reason is FinishReason.PAUSE


def test_budget_only_reasoning_becomes_an_effort_and_strict_is_false_across_wires() -> None:
    from routeplane.language_model.types import GenerationParams, Tool

    p = Prompt(model="m", messages=(Message(Role.USER, (TextPart("x"),)),), tools=(Tool("w", None, SCHEMA),),
               params=GenerationParams(reasoning_budget=2000))
    body = wire.PROVIDER.encode_request(p, TARGET, stream=False)
    assert body["reasoning"] == {"effort": "low"} and body["tools"][0]["strict"] is False
    same = wire.PROVIDER.encode_request(decode(input="x", tools=[{"type": "function", "name": "w"}]), TARGET, False)
    assert "strict" not in same["tools"][0]  # the Responses client's own default stands
    assert same["input"] == [{"role": "user", "content": "x"}]


def test_rate_limit_error_event_keeps_its_kind() -> None:
    raw = b'event: error\ndata: {"type":"error","code":"rate_limit_exceeded","message":"slow down"}\n\n'
    with pytest.raises(UpstreamError) as exc:
        decode_stream(raw)
    assert exc.value.status == 429 and exc.value.kind == "rate_limit"


def test_anthropic_thinking_round_trips_through_a_responses_client() -> None:
    gen = Generation("r", "m", (ReasoningPart("plan", "SIG", provider="anthropic_messages"),
                                ReasoningPart("", None, "REDACTED", provider="anthropic_messages"),
                                ToolCallPart("toolu_1", "w", "{}")), FinishReason.TOOL_CALLS)
    for body_output in (
        wire.CLIENT.encode_response(gen, decode(input="x"))["output"],
        _streamed_output(gen),
    ):
        history = [{"role": "user", "content": "x"}, *body_output,
                   {"type": "function_call_output", "call_id": "toolu_1", "output": "ok"}]
        prompt = decode(input=history)
        assistant = prompt.messages[1].parts
        assert assistant[0] == ReasoningPart("plan", "SIG", provider="anthropic_messages")
        assert assistant[1] == ReasoningPart("", None, "REDACTED", provider="anthropic_messages")
        # Sent to OpenAI, neither goes anywhere: only OpenAI's own reasoning does.
        sent = wire.PROVIDER.encode_request(prompt, TARGET, stream=False)
        assert [i.get("type") for i in sent["input"]] == [None, "function_call", "function_call_output"]


def _streamed_output(gen: Generation) -> List[Dict[str, Any]]:
    return encode_stream(list(generation_to_parts(gen)))[-1]["response"]["output"]
