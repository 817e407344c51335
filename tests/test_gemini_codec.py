"""Gemini codec as pure functions: request decode/encode, schemas, usage, finish reasons, errors, streams."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List

import pytest

from routeplane.errors import InvalidRequest, InvalidUpstreamResponse, NotFound, UpstreamError, UpstreamTimeout
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator, generation_to_parts
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    GenerationParams,
    Message,
    Prompt,
    ReasoningPart,
    Role,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolResultPart,
    Usage,
    UsageUpdate,
)
from routeplane.protocols import gemini as wire
from routeplane.protocols.carried import restore
from routeplane.protocols.gemini.request import SIGNATURE_PLACEHOLDER, is_synthetic
from routeplane.protocols.gemini.schema import clean_for_gemini
from routeplane.protocols.sse import SSEEvent, iter_events

TARGET = RoutingTarget("g", "gemini-x", "gemini", base_url="http://up", api_key="AIzaSyA-secret-key-0123456789")
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def decode(body: Dict[str, Any], model: str = "gemini-x", stream: bool = False) -> Prompt:
    return wire.CLIENT.for_path(model, stream).decode_request(body)


def user(text: str) -> Dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


# --- request decode ------------------------------------------------------------


def test_model_and_stream_come_from_the_path() -> None:
    p = decode({"contents": [user("hi")], "model": "models/other"}, model="from-path", stream=True)
    assert p.model == "from-path" and p.stream and p.include_usage


def test_camel_and_snake_case_are_both_accepted() -> None:
    camel = decode({"systemInstruction": {"parts": [{"text": "S"}]}, "contents": [user("hi")],
                    "generationConfig": {"maxOutputTokens": 7, "topK": 3, "stopSequences": ["END"]}})
    snake = decode({"system_instruction": {"parts": [{"text": "S"}]}, "contents": [user("hi")],
                    "generation_config": {"max_output_tokens": 7, "top_k": 3, "stop_sequences": ["END"]}})
    assert camel == snake
    assert camel.system_text() == "S" and camel.params.max_tokens == 7 and camel.params.top_k == 3
    assert camel.params.stop == ("END",)


def test_function_calls_without_ids_get_stable_synthetic_ids_and_results_match_by_name() -> None:
    body = {"contents": [
        user("Weather Paris+Rome?"),
        {"role": "model", "parts": [
            {"thought": True, "text": "need tools", "thoughtSignature": "T1"},
            {"functionCall": {"name": "w", "args": {"city": "Paris"}}, "thoughtSignature": "S1"},
            {"functionCall": {"name": "v", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "v", "response": {"output": "21C"}}},
            {"functionResponse": {"name": "w", "response": {"error": "down"}}},
            {"text": "and?"}]},
    ]}
    p = decode(body)
    assert [m.role for m in p.messages] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER]
    thought, call_w, call_v = p.messages[1].parts
    assert thought == ReasoningPart("need tools", "T1", provider="gemini")
    assert call_w.signature == "S1" and call_w.signature_provider == "gemini"
    assert is_synthetic(call_w.id) and is_synthetic(call_v.id) and call_w.id != call_v.id
    assert decode(body).messages[1].parts[1].id == call_w.id  # deterministic for the same history
    r_v, r_w = p.messages[2].parts
    assert (r_v.tool_call_id, r_v.text(), r_v.is_error) == (call_v.id, "21C", False)
    assert (r_w.tool_call_id, r_w.text(), r_w.is_error) == (call_w.id, "down", True)
    assert p.messages[3].parts == (TextPart("and?"),)


def test_orphan_function_response_without_id_is_400() -> None:
    with pytest.raises(InvalidRequest, match="answers no functionCall"):
        decode({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {}}}]}]})


def test_tools_tool_config_and_generation_config() -> None:
    p = decode({
        "contents": [user("x")],
        "tools": [{"functionDeclarations": [
            {"name": "a", "parametersJsonSchema": SCHEMA},
            {"name": "b", "description": "B", "parameters": {"type": "OBJECT", "properties": {
                "n": {"type": "INTEGER", "nullable": True}}, "required": ["n"]}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}},
        "generationConfig": {"temperature": 0.5, "topP": 0.9, "responseMimeType": "application/json",
                             "responseJsonSchema": SCHEMA, "thinkingConfig": {"thinkingBudget": 0}},
    })
    assert p.tools[0].parameters == SCHEMA
    assert p.tools[1].parameters == {"type": "object", "properties": {"n": {"type": ["integer", "null"]}},
                                     "required": ["n"]}
    assert p.tool_choice == ToolChoice("tool", "b")
    assert p.params.temperature == 0.5 and p.params.top_p == 0.9 and p.params.reasoning_effort == "none"
    assert p.response_format.type == "json_schema" and p.response_format.schema == SCHEMA


def test_integer_fields_take_integral_numbers_as_the_json_mapping_does() -> None:
    p = decode({"contents": [user("x")], "generationConfig": {
        "topK": 4.0, "maxOutputTokens": 64.0, "seed": 7.0, "candidateCount": 1.0,
        "thinkingConfig": {"thinkingBudget": 2048.0}}})
    assert (p.params.top_k, p.params.max_tokens, p.params.seed, p.params.reasoning_budget) == (4, 64, 7, 2048)
    assert all(type(v) is int for v in (p.params.top_k, p.params.max_tokens, p.params.seed))


@pytest.mark.parametrize("body,param", [
    ({"contents": []}, "contents"),
    ({"contents": [user("x")], "generationConfig": {"topK": 4.5}}, "generationConfig.topK"),
    ({"contents": [user("x")], "generationConfig": {"maxOutputTokens": "64"}}, "generationConfig.maxOutputTokens"),
    ({"contents": [user("x")], "generationConfig": {"seed": True}}, "generationConfig.seed"),
    ({"contents": "hi"}, "contents"),
    ({"contents": [user("x")], "generationConfig": {"candidateCount": 2}}, "generationConfig.candidateCount"),
    ({"contents": [user("x")], "tools": ["googleSearch"]}, "tools[0]"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "contents[0].role"),
])
def test_bad_requests_are_400_naming_the_field(body: Dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode(body)
    assert exc.value.param == param


# --- request encode ------------------------------------------------------------


def test_encode_history_from_another_wire() -> None:
    prompt = Prompt(model="m", system=(TextPart("sys"),), messages=(
        Message(Role.USER, (TextPart("Weather?"),)),
        Message(Role.ASSISTANT, (ReasoningPart("hmm", "anthropic-sig", provider="anthropic_messages"),
                                 TextPart("Checking."), ToolCallPart("call_1", "w", "{\"city\":\"Paris\"}"),
                                 ToolCallPart("call_2", "w", "not json"))),
        Message(Role.TOOL, (ToolResultPart("call_1", (TextPart("18C"),)),
                            ToolResultPart("call_2", (TextPart("{\"t\":21}"),)))),
        Message(Role.USER, (TextPart("thanks"),)),
    ), tools=(Tool("w", "Weather", {**SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"}),),
        tool_choice=ToolChoice("required"), params=GenerationParams(max_tokens=10, reasoning_effort="low"))
    body = wire.PROVIDER.encode_request(prompt, TARGET, stream=False)
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    model = body["contents"][1]["parts"]
    assert model[0] == {"text": "Checking."}  # another vendor's reasoning never reaches Gemini
    assert model[1] == {"functionCall": {"name": "w", "args": {"city": "Paris"}, "id": "call_1"},
                        "thoughtSignature": SIGNATURE_PLACEHOLDER}
    assert model[2]["functionCall"]["args"] == {"_raw": "not json"} and "thoughtSignature" not in model[2]
    results = body["contents"][2]["parts"]
    assert results[0] == {"functionResponse": {"name": "w", "response": {"output": "18C"}, "id": "call_1"}}
    assert results[1]["functionResponse"]["response"] == {"t": 21}
    assert results[2] == {"text": "thanks"}  # results first, then the user's text, in one turn
    decl = body["tools"][0]["functionDeclarations"][0]
    assert decl == {"name": "w", "description": "Weather", "parametersJsonSchema": SCHEMA}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {"maxOutputTokens": 10,
                                        "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True}}


def test_gemini_round_trip_keeps_signatures_and_drops_synthetic_ids() -> None:
    original = {"contents": [
        user("q"),
        {"role": "model", "parts": [{"text": "t", "thought": True, "thoughtSignature": "T"},
                                    {"functionCall": {"name": "w", "args": {"a": 1}}, "thoughtSignature": "S"}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"output": "ok"}}}]},
        {"role": "model", "parts": [{"text": "done", "thoughtSignature": "S2"}]},
        user("more"),
    ], "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}],
        "generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH", "includeThoughts": True},
                             "responseModalities": ["TEXT"]}}
    body = wire.PROVIDER.encode_request(decode(original), TARGET, stream=True)
    assert body["contents"] == original["contents"]
    assert body["safetySettings"] == original["safetySettings"]
    assert body["generationConfig"] == original["generationConfig"]


def test_schema_field_option_sends_a_cleaned_openapi_schema() -> None:
    schema = {"$schema": "x", "type": "object", "additionalProperties": False, "$defs": {"C": {"type": "string",
              "format": "uri"}}, "properties": {"c": {"$ref": "#/$defs/C"}, "n": {"type": ["integer", "null"]},
              "k": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "e": {"enum": [1, 2]}},
              "required": ["c", "gone"]}
    assert clean_for_gemini(schema) == {
        "type": "OBJECT", "properties": {"c": {"type": "STRING"}, "n": {"type": "INTEGER", "nullable": True},
                                         "k": {"type": "STRING", "nullable": True}, "e": {"enum": ["1", "2"]}},
        "required": ["c"]}
    prompt = Prompt(model="m", messages=(Message(Role.USER, (TextPart("x"),)),), tools=(Tool("w", None, schema),))
    body = wire.PROVIDER.encode_request(prompt, TARGET.replace(options={"gemini_schema_field": "parameters"}), False)
    assert body["tools"][0]["functionDeclarations"][0]["parameters"]["type"] == "OBJECT"


def test_url_and_headers() -> None:
    assert wire.PROVIDER.url(TARGET, False) == "http://up/v1beta/models/gemini-x:generateContent"
    assert wire.PROVIDER.url(TARGET, True) == "http://up/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    assert wire.PROVIDER.url(TARGET.replace(base_url="http://up/v1/"), False) == \
        "http://up/v1/models/gemini-x:generateContent"
    headers = wire.PROVIDER.headers(TARGET)
    assert headers["x-goog-api-key"] == TARGET.api_key and "Authorization" not in headers


# --- usage, finish reasons, responses, errors ---------------------------------------


def test_usage_mapping_matches_translation_worked_check() -> None:
    # translation.md §9: AN {input:40, cache_read:2000, output:120 of which thinking 60}
    u = Usage(input_tokens=40, cache_read_tokens=2000, output_tokens=60, reasoning_tokens=60)
    assert wire.response.encode_usage(u) == {"promptTokenCount": 2040, "cachedContentTokenCount": 2000,
                                             "candidatesTokenCount": 60, "thoughtsTokenCount": 60,
                                             "totalTokenCount": 2160}
    back = wire.response.decode_usage({"promptTokenCount": 2040, "cachedContentTokenCount": 2000,
                                       "candidatesTokenCount": 60, "thoughtsTokenCount": 60, "totalTokenCount": 2160})
    assert (back.input_tokens, back.cache_read_tokens, back.output_tokens, back.reasoning_tokens) == (40, 2000, 60, 60)
    assert back.total_output == 120  # candidatesTokenCount excludes thoughts; OpenAI-style output includes them


@pytest.mark.parametrize("reason,parts,expected", [
    ("STOP", [], FinishReason.STOP),
    ("STOP", [{"functionCall": {"name": "w", "args": {}}}], FinishReason.TOOL_CALLS),
    ("MAX_TOKENS", [{"text": "x"}], FinishReason.LENGTH),
    ("SAFETY", [], FinishReason.CONTENT_FILTER),
    ("RECITATION", [], FinishReason.CONTENT_FILTER),
    ("MALFORMED_FUNCTION_CALL", [], FinishReason.STOP),
])
def test_finish_reasons(reason: str, parts: List[Any], expected: FinishReason) -> None:
    body = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": reason}]}
    assert wire.PROVIDER.decode_response(body, TARGET).finish_reason is expected


def test_blocked_prompt_is_a_content_filter_not_a_crash() -> None:
    gen = wire.PROVIDER.decode_response({"promptFeedback": {"blockReason": "SAFETY"},
                                         "usageMetadata": {"promptTokenCount": 4}}, TARGET)
    assert gen.finish_reason is FinishReason.CONTENT_FILTER and gen.parts == () and gen.usage.input_tokens == 4


def test_decode_response_synthesizes_ids_and_keeps_signatures() -> None:
    gen = wire.PROVIDER.decode_response({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "why", "thought": True}, {"text": "A"}, {"text": "B", "thoughtSignature": "SIG"},
        {"functionCall": {"name": "w", "args": {"x": 1}}, "thoughtSignature": "S"},
        {"functionCall": {"id": "fc_7", "name": "w", "args": {}}}]}, "finishReason": "STOP"}],
        "responseId": "r1", "modelVersion": "gemini-x-001"}, TARGET)
    reasoning, text, sig_only, call1, call2 = gen.parts
    assert reasoning == ReasoningPart("why", provider="gemini") and text == TextPart("AB")
    assert sig_only == ReasoningPart("", "SIG", provider="gemini")
    assert is_synthetic(call1.id) and call1.signature == "S" and call1.arguments == "{\"x\":1}"
    assert call2.id == "fc_7"
    # Back to a Gemini client: the synthetic id stays invisible and the signatures return in place.
    body = wire.CLIENT.encode_response(gen, decode({"contents": [user("x")]}))
    assert body["candidates"][0]["content"]["parts"] == [
        {"text": "why", "thought": True}, {"text": "AB", "thoughtSignature": "SIG"},
        {"functionCall": {"name": "w", "args": {"x": 1}}, "thoughtSignature": "S"},
        {"functionCall": {"name": "w", "args": {}, "id": "fc_7"}}]
    assert body["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("err,status,name", [
    (InvalidRequest("bad"), 400, "INVALID_ARGUMENT"),
    (NotFound("nope"), 404, "NOT_FOUND"),
    (UpstreamTimeout("slow"), 504, "DEADLINE_EXCEEDED"),
    (UpstreamError("down", status=503, kind="overloaded"), 503, "UNAVAILABLE"),
])
def test_error_body_is_google_shaped(err: Any, status: int, name: str) -> None:
    assert wire.CLIENT.error_body(err) == {"error": {"code": status, "message": err.message, "status": name}}


def test_invalid_gemini_key_is_the_gateways_credential_problem() -> None:
    body = json.dumps({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                                 "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                              "reason": "API_KEY_INVALID"}]}}).encode()
    err = wire.PROVIDER.decode_error(400, body, {}, TARGET)
    assert err.status == 502 and err.upstream_status == 401 and not err.retriable
    plain = wire.PROVIDER.decode_error(400, b'{"error":{"code":400,"message":"bad field"}}', {}, TARGET)
    assert plain.status == 400 and "bad field" in plain.message


# --- streams -------------------------------------------------------------------


def encode_stream(parts: List[Any], sse: bool = True, error: Any = None) -> bytes:
    enc = wire.CLIENT.for_path("gemini-x", True, sse).stream_encoder(decode({"contents": [user("x")]}))
    return b"".join(enc.encode(p) for p in parts) + (enc.error(error) if error else enc.close())


def test_stream_frames_are_data_lines_only_and_calls_go_out_whole() -> None:
    raw = encode_stream([TextDelta(0, "Hi"), ToolCallStart(1, "call_1", "w"), ToolCallDelta(1, "{\"ci"),
                         ToolCallDelta(1, "ty\":\"P\"}"), ToolCallEnd(1),
                         UsageUpdate(Usage(input_tokens=3, output_tokens=2)), Finish(FinishReason.TOOL_CALLS)])
    lines = [line for line in raw.split(b"\r\n") if line]
    assert all(line.startswith(b"data: {") for line in lines)
    chunks = [json.loads(line[6:]) for line in lines]
    assert chunks[0]["candidates"][0]["content"]["parts"] == [{"text": "Hi"}]
    assert chunks[1]["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "w", "args": {"city": "P"}, "id": "call_1"}}]
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}


def test_every_stream_chunk_has_parts_and_the_last_content_carries_the_finish() -> None:
    # google-genai's chat drops the turn from its history if any chunk has no parts.
    raw = encode_stream([TextDelta(0, "Hel"), TextDelta(0, "lo"), Finish(FinishReason.STOP)])
    chunks = [json.loads(line[6:]) for line in raw.split(b"\r\n") if line]
    assert [c["candidates"][0]["content"]["parts"] for c in chunks] == [[{"text": "Hel"}], [{"text": "lo"}]]
    assert "finishReason" not in chunks[0]["candidates"][0] and chunks[1]["candidates"][0]["finishReason"] == "STOP"
    # No usage from upstream: the gateway's estimate, never nothing.
    assert chunks[1]["usageMetadata"]["candidatesTokenCount"] > 0
    empty = [json.loads(line[6:]) for line in encode_stream([Finish(FinishReason.STOP)]).split(b"\r\n") if line]
    assert empty[0]["candidates"][0]["content"]["parts"] == [{"text": ""}]


def test_stream_error_frame_and_array_mode() -> None:
    raw = encode_stream([TextDelta(0, "x")], error=UpstreamError("boom", status=503, kind="overloaded"))
    last = json.loads(raw.split(b"\r\n\r\n")[-2][6:])
    assert last == {"error": {"code": 503, "message": "boom", "status": "UNAVAILABLE"}}
    arr = json.loads(encode_stream([TextDelta(0, "a"), TextDelta(0, "b")], sse=False))
    assert [c["candidates"][0]["content"]["parts"] for c in arr] == [[{"text": "a"}], [{"text": "b"}]]
    assert arr[-1]["candidates"][0]["finishReason"] == "STOP"
    assert json.loads(encode_stream([TextDelta(0, "a")], sse=False, error=UpstreamError("x")))[-1]["error"]["code"] == 502


def decode_stream(raw: bytes) -> List[Any]:
    dec = wire.PROVIDER.stream_decoder(TARGET)
    out: List[Any] = []
    for ev in iter_events([raw]):
        out.extend(dec.feed(ev))
    out.extend(dec.finish())
    return out


def _chunk(parts: List[Any], finish: str = None, usage: Dict[str, Any] = None) -> bytes:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    body: Dict[str, Any] = {"candidates": [cand], "responseId": "r", "modelVersion": "v"}
    if usage:
        body["usageMetadata"] = usage
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def test_stream_decoder_success_needs_a_finish_reason_before_close() -> None:
    with pytest.raises(InvalidUpstreamResponse, match="finishReason"):
        decode_stream(_chunk([{"text": "Hel"}], usage={"promptTokenCount": 3}))
    parts = decode_stream(_chunk([{"text": "Hel"}], usage={"promptTokenCount": 3}) +
                          _chunk([{"text": "lo"}], "STOP", {"promptTokenCount": 3, "candidatesTokenCount": 2}))
    acc = GenerationAccumulator()
    for p in parts:
        acc.add(p)
    gen = acc.generation()
    assert gen.text() == "Hello" and gen.finish_reason is FinishReason.STOP
    assert gen.usage.input_tokens == 3 and gen.usage.output_tokens == 2  # the last usageMetadata wins


def test_stream_decoder_error_chunk_raises_with_its_status() -> None:
    raw = _chunk([{"text": "a"}]) + b'data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\r\n\r\n'
    with pytest.raises(UpstreamError) as exc:
        decode_stream(raw)
    assert exc.value.status == 503 and "overloaded" in exc.value.message


def test_generation_survives_gemini_stream_both_ways() -> None:
    gen = Generation("r", "m", (ReasoningPart("why", "TS", provider="gemini"), TextPart("Hello"),
                                ToolCallPart("call_gxabc", "w", "{\"a\":1}", "S", "gemini")),
                     FinishReason.TOOL_CALLS, Usage(input_tokens=5, cache_read_tokens=1, output_tokens=3,
                                                    reasoning_tokens=2))
    raw = encode_stream(list(generation_to_parts(gen)))
    acc = GenerationAccumulator()
    for p in decode_stream(raw):
        acc.add(p)
    back = acc.generation()
    assert back.text() == "Hello" and back.finish_reason is FinishReason.TOOL_CALLS
    assert back.parts[0] == ReasoningPart("why", "TS", provider="gemini")
    call = back.tool_calls()[0]
    assert (call.name, call.arguments, call.signature) == ("w", "{\"a\":1}", "S") and is_synthetic(call.id)
    assert (back.usage.input_tokens, back.usage.cache_read_tokens, back.usage.output_tokens,
            back.usage.reasoning_tokens) == (5, 1, 3, 2)


def test_sse_event_with_crlf_and_blank_data_is_ignored() -> None:
    dec = wire.PROVIDER.stream_decoder(TARGET)
    assert dec.feed(SSEEvent("")) == []


def test_placeholder_signature_only_for_foreign_history() -> None:
    body = {"contents": [user("q"), {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "w", "args": {}}}]},
                         {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "w",
                                                                          "response": {"output": "ok"}}}]}]}
    same = wire.PROVIDER.encode_request(decode(body), TARGET, stream=False)
    assert same["contents"] == body["contents"]  # a Gemini client owns its signatures
    foreign = decode(body).replace(extras={}, extras_protocol="openai_chat")
    sent = wire.PROVIDER.encode_request(foreign, TARGET, stream=False)
    assert sent["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE_PLACEHOLDER
    off = wire.PROVIDER.encode_request(foreign, TARGET.replace(options={"thought_signature_placeholder": False}), False)
    assert "thoughtSignature" not in off["contents"][1]["parts"][0]
    other = wire.PROVIDER.encode_request(foreign, TARGET.replace(options={"thought_signature_placeholder": "ctx"}), False)
    assert other["contents"][1]["parts"][0]["thoughtSignature"] == "ctx"


def test_foreign_thoughts_shown_only_when_the_client_asked() -> None:
    gen = Generation("r", "m", (ReasoningPart("hmm", "an-sig", provider="anthropic_messages"), TextPart("Hi")))
    plain = decode({"contents": [user("x")]})
    asked = decode({"contents": [user("x")], "generationConfig": {"thinkingConfig": {"includeThoughts": True}}})
    hidden = wire.CLIENT.encode_response(gen, plain)["candidates"][0]["content"]["parts"]
    shown = wire.CLIENT.encode_response(gen, asked)["candidates"][0]["content"]["parts"]
    # The text is shown only when asked; the signature is carried opaquely either way (never in the clear).
    assert [p.get("text") for p in hidden] == ["", "Hi"] and hidden[0]["thought"] is True
    assert [p.get("text") for p in shown] == ["hmm", "Hi"]
    for parts in (hidden, shown):
        assert "an-sig" not in json.dumps(parts)
        assert restore(parts[0]["thoughtSignature"]) == ReasoningPart("hmm", "an-sig", provider="anthropic_messages")
    streamed = wire.CLIENT.for_path("m", True).stream_encoder(plain)
    raw = b"".join(streamed.encode(p) for p in generation_to_parts(gen)) + streamed.close()
    assert b"hmm" not in raw and b"Hi" in raw and b"thoughtSignature" in raw


def test_anthropic_thinking_round_trips_through_a_gemini_client() -> None:
    gen = Generation("r", "m", (ReasoningPart("plan", "SIG", provider="anthropic_messages"),
                                ToolCallPart("toolu_1", "w", "{}")), FinishReason.TOOL_CALLS)
    asked = {"contents": [user("x")], "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    enc = wire.CLIENT.for_path("m", True).stream_encoder(decode(asked))
    raw = b"".join(enc.encode(p) for p in generation_to_parts(gen)) + enc.close()
    model_parts = [p for line in raw.split(b"\r\n") if line
                   for p in json.loads(line[6:])["candidates"][0]["content"]["parts"]]
    # google-genai re-encodes bytes as URL-safe base64 when it sends the history back.
    for p in model_parts:
        if "thoughtSignature" in p:
            p["thoughtSignature"] = p["thoughtSignature"].replace("+", "-").replace("/", "_")
    history = {"contents": [user("x"), {"role": "model", "parts": model_parts}, {"role": "user", "parts": [
        {"functionResponse": {"id": "toolu_1", "name": "w", "response": {"output": "ok"}}}]}]}
    parts = decode(history).messages[1].parts
    assert ReasoningPart("plan", "SIG", provider="anthropic_messages") in parts
    sent = wire.PROVIDER.encode_request(decode(history), TARGET, stream=False)
    assert "SIG" not in json.dumps(sent)  # never to Gemini


@pytest.mark.parametrize("stream", [False, True])
def test_openai_reasoning_round_trips_through_a_gemini_client(stream: bool) -> None:
    """An OpenAI Responses reasoning item (id + encrypted_content, packed in the signature) rides in a
    thoughtSignature and comes back as OpenAI's, so a tool loop on a Responses upstream keeps it."""
    from routeplane.protocols import openai_responses

    item = ReasoningPart("", "rs_1\ngAAAA-enc", provider="openai_responses")
    gen = Generation("r", "m", (item, ToolCallPart("call_1", "w", "{}")), FinishReason.TOOL_CALLS)
    plain = decode({"contents": [user("x")]})
    if stream:
        enc = wire.CLIENT.for_path("m", True).stream_encoder(plain)
        raw = b"".join(enc.encode(p) for p in generation_to_parts(gen)) + enc.close()
        model_parts = [p for line in raw.split(b"\r\n") if line
                       for p in json.loads(line[6:])["candidates"][0]["content"]["parts"]]
    else:
        model_parts = wire.CLIENT.encode_response(gen, plain)["candidates"][0]["content"]["parts"]
    assert "gAAAA-enc" not in json.dumps(model_parts)
    history = {"contents": [user("x"), {"role": "model", "parts": model_parts}, {"role": "user", "parts": [
        {"functionResponse": {"id": "call_1", "name": "w", "response": {"output": "ok"}}}]}]}
    assert item in decode(history).messages[1].parts
    target = TARGET.replace(protocol="openai_responses", provider="resp")
    sent = openai_responses.PROVIDER.encode_request(decode(history), target, stream=False)
    reasoning = [i for i in sent["input"] if i.get("type") == "reasoning"]
    assert reasoning == [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-enc"}]
    assert "gAAAA-enc" not in json.dumps(wire.PROVIDER.encode_request(decode(history), TARGET, stream=False))


@pytest.mark.parametrize("thinking,effort,budget", [
    ({"thinkingBudget": 0}, "none", None), ({"thinkingBudget": -1}, "medium", None),
    ({"thinkingBudget": 3000}, "medium", 3000), ({"thinkingLevel": "HIGH"}, "high", None),
])
def test_thinking_config_becomes_effort_and_budget(thinking: Dict[str, Any], effort: str, budget: Any) -> None:
    p = decode({"contents": [user("x")], "generationConfig": {"thinkingConfig": thinking}})
    assert (p.params.reasoning_effort, p.params.reasoning_budget) == (effort, budget)


def test_text_bound_candidate_fields_are_dropped_when_a_hook_rewrote_the_text() -> None:
    """logprobsResult holds the answer's tokens, groundingMetadata quotes its segments: after a redaction
    (a hook rewriting the text) they would show the original secret to a Gemini client."""
    secret = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"
    body = {"candidates": [{
        "content": {"role": "model", "parts": [{"text": f"Your key is {secret} ok"}]}, "finishReason": "STOP",
        "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
        "avgLogprobs": -0.1,
        "logprobsResult": {"chosenCandidates": [{"token": secret, "logProbability": -0.1}]},
        "groundingMetadata": {"groundingSupports": [{"segment": {"text": f"Your key is {secret} ok"}}]},
        "citationMetadata": {"citationSources": [{"startIndex": 0, "endIndex": 12, "uri": "https://x.test"}]}}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8}}
    gen = wire.PROVIDER.decode_response(body, TARGET)
    prompt = decode({"contents": [user("x")]})
    same = wire.CLIENT.encode_response(gen, prompt)["candidates"][0]
    assert {"logprobsResult", "groundingMetadata", "citationMetadata", "avgLogprobs", "safetyRatings"} <= set(same)
    redacted = dataclasses.replace(gen, parts=(TextPart("Your key is [REDACTED:api_key] ok"),))
    cand = wire.CLIENT.encode_response(redacted, prompt)["candidates"][0]
    assert secret not in json.dumps(cand)
    assert "safetyRatings" in cand and not {"logprobsResult", "groundingMetadata", "citationMetadata"} & set(cand)
