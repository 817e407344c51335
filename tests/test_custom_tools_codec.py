"""OpenAI custom (freeform) tools through the codecs as pure functions.

Same wire (Responses→Responses, Chat→Chat) they round-trip losslessly; between the two OpenAI
wires they stay custom tools; Anthropic and Gemini upstreams get a function of one string
(`protocols/custom_tools.py`) and the model's calls of it come back as custom calls. Payload
shapes are checked against the official SDK's types (`openai.types.responses.CustomTool`,
`ResponseCustomToolCall`, `ResponseCustomToolCallInputDeltaEvent`, `openai.types.chat.
ChatCompletionMessageCustomToolCall`, ...).
"""

from __future__ import annotations

import json
import random
from typing import Any, Dict, Iterator, List

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageCustomToolCall
from openai.types.responses import (
    CustomTool,
    Response,
    ResponseCustomToolCall,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseCustomToolCallInputDoneEvent,
    ToolChoiceCustom,
)

from routeplane.errors import InvalidRequest
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator, generation_to_parts
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    Prompt,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from routeplane.protocols import anthropic_messages, gemini, openai_chat, openai_responses
from routeplane.protocols.custom_tools import _StreamedInput, custom_input, function_form, restore_calls, restore_stream
from routeplane.protocols.sse import iter_events

GRAMMAR = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?'
PATCH = '*** Begin Patch\n*** Add File: hello.py\n+print("héllo \\"world\\"")\n*** End Patch'
DESCRIPTION = "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON."
# The tool Codex CLI sends on the Responses wire.
RESP_TOOL = {"type": "custom", "name": "apply_patch", "description": DESCRIPTION,
             "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR}}
CHAT_TOOL = {"type": "custom", "custom": {"name": "apply_patch", "description": DESCRIPTION,
                                          "format": {"type": "grammar",
                                                     "grammar": {"definition": GRAMMAR, "syntax": "lark"}}}}
FUNCTION_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def target(protocol: str) -> RoutingTarget:
    return RoutingTarget("up", "up-model", protocol, base_url="http://127.0.0.1:9", api_key="sk-up-secret")


def responses_prompt(**body: Any) -> Prompt:
    return openai_responses.CLIENT.decode_request({"model": "m", **body})


def chat_prompt(**body: Any) -> Prompt:
    return openai_chat.CLIENT.decode_request({"model": "m", "messages": [{"role": "user", "content": "go"}], **body})


RESP_HISTORY = [
    {"role": "user", "content": "Add hello.py"},
    {"type": "custom_tool_call", "call_id": "call_p1", "name": "apply_patch", "input": PATCH},
    {"type": "custom_tool_call_output", "call_id": "call_p1", "output": "Done!"},
]
CHAT_HISTORY = [
    {"role": "user", "content": "Add hello.py"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_p1", "type": "custom", "custom": {"name": "apply_patch", "input": PATCH}}]},
    {"role": "tool", "tool_call_id": "call_p1", "content": "Done!"},
]


# --- the fixtures are the SDK's shapes -------------------------------------------


def test_fixtures_validate_against_the_sdk_types() -> None:
    CustomTool.model_validate(RESP_TOOL)
    ResponseCustomToolCall.model_validate(RESP_HISTORY[1])
    ChatCompletionMessageCustomToolCall.model_validate(CHAT_HISTORY[1]["tool_calls"][0])


# --- Responses client ------------------------------------------------------------


def test_responses_custom_tool_call_and_output_decode() -> None:
    p = responses_prompt(input=RESP_HISTORY, tools=[RESP_TOOL, FUNCTION_TOOL],
                         tool_choice={"type": "custom", "name": "apply_patch"})
    tool = p.tools[0]
    assert tool.custom and tool.name == "apply_patch" and tool.description == DESCRIPTION
    assert tool.format == RESP_TOOL["format"]
    assert not p.tools[1].custom
    call = p.messages[1].parts[0]
    assert call == ToolCallPart("call_p1", "apply_patch", PATCH, custom=True)
    result = p.messages[2].parts[0]
    assert result.tool_call_id == "call_p1" and result.text() == "Done!"
    assert p.tool_choice.mode == "tool" and p.tool_choice.name == "apply_patch"


@pytest.mark.parametrize("fmt", [None, {"type": "text"}, RESP_TOOL["format"]])
def test_responses_same_wire_round_trip_is_lossless(fmt: Any) -> None:
    tool = {k: v for k, v in RESP_TOOL.items() if k != "format"}
    if fmt is not None:
        tool["format"] = fmt
    body = {"model": "m", "input": RESP_HISTORY, "tools": [tool, dict(FUNCTION_TOOL, strict=False)],
            "tool_choice": {"type": "custom", "name": "apply_patch"}}
    sent = openai_responses.PROVIDER.encode_request(openai_responses.CLIENT.decode_request(body),
                                                    target("openai_responses"), False)
    assert sent["input"] == RESP_HISTORY
    assert sent["tools"] == [tool, dict(FUNCTION_TOOL, strict=False)]
    assert sent["tool_choice"] == {"type": "custom", "name": "apply_patch"}


def test_responses_output_and_response_object() -> None:
    prompt = responses_prompt(input="go", tools=[RESP_TOOL], tool_choice={"type": "custom", "name": "apply_patch"})
    gen = Generation("resp_1", "m", (ToolCallPart("call_p1", "apply_patch", PATCH, custom=True),),
                     FinishReason.TOOL_CALLS, Usage(input_tokens=3, output_tokens=2))
    body = openai_responses.CLIENT.encode_response(gen, prompt)
    resp = Response.model_validate(body)
    item = resp.output[0]
    assert isinstance(item, ResponseCustomToolCall)
    assert (item.call_id, item.name, item.input) == ("call_p1", "apply_patch", PATCH)
    assert isinstance(resp.tools[0], CustomTool) and resp.tools[0].format.definition == GRAMMAR
    assert isinstance(resp.tool_choice, ToolChoiceCustom)
    # ... and a Responses upstream's custom_tool_call output decodes back to the same part.
    back = openai_responses.PROVIDER.decode_response(body, target("openai_responses"))
    assert back.parts == gen.parts and back.finish_reason is FinishReason.TOOL_CALLS


def responses_events(parts: List[StreamPart], prompt: Prompt) -> List[Dict[str, Any]]:
    enc = openai_responses.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(ev.data) for ev in iter_events([raw])]


def test_responses_stream_emits_custom_tool_call_input_events() -> None:
    prompt = responses_prompt(input="go", tools=[RESP_TOOL])
    parts = [ResponseStart("r1", "m"), TextStart(0), TextDelta(0, "Patching."), TextEnd(0),
             ToolCallStart(1, "call_p1", "apply_patch", custom=True), ToolCallDelta(1, PATCH[:20]),
             ToolCallDelta(1, PATCH[20:]), ToolCallEnd(1), Finish(FinishReason.TOOL_CALLS)]
    events = responses_events(parts, prompt)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events if e.get("output_index") == 1]
    assert kinds == ["response.output_item.added", "response.custom_tool_call_input.delta",
                     "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
                     "response.output_item.done"]
    added = next(e for e in events if e["type"] == "response.output_item.added" and e["output_index"] == 1)["item"]
    assert added["type"] == "custom_tool_call" and added["input"] == "" and added["call_id"] == "call_p1"
    deltas = [ResponseCustomToolCallInputDeltaEvent.model_validate(e) for e in events
              if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(d.delta for d in deltas) == PATCH and {d.item_id for d in deltas} == {added["id"]}
    done = ResponseCustomToolCallInputDoneEvent.model_validate(
        next(e for e in events if e["type"] == "response.custom_tool_call_input.done"))
    assert done.input == PATCH
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed"
    assert isinstance(final.output[1], ResponseCustomToolCall) and final.output[1].input == PATCH


def test_responses_stream_round_trips_through_the_upstream_decoder() -> None:
    prompt = responses_prompt(input="go", tools=[RESP_TOOL, FUNCTION_TOOL])
    gen = Generation("resp_x", "m", (ToolCallPart("call_f", "get_weather", '{"city":"Paris"}'),
                                     ToolCallPart("call_p1", "apply_patch", PATCH, custom=True),
                                     ToolCallPart("call_p2", "apply_patch", "", custom=True)),
                     FinishReason.TOOL_CALLS, Usage(input_tokens=8, output_tokens=5))
    enc = openai_responses.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in generation_to_parts(gen)) + enc.close()
    dec = openai_responses.PROVIDER.stream_decoder(target("openai_responses"))
    acc = GenerationAccumulator()
    for ev in iter_events([raw]):
        for part in dec.feed(ev):
            acc.add(part)
    back = acc.generation()
    assert back.parts == gen.parts  # an empty custom input stays empty, not "{}"
    assert back.finish_reason is FinishReason.TOOL_CALLS


def test_responses_stream_decoder_reads_done_only_custom_calls() -> None:
    item = {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_p1", "name": "apply_patch", "input": ""}
    events = [
        {"type": "response.created", "response": {"id": "r", "model": "m"}},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.custom_tool_call_input.done", "item_id": "ctc_1", "output_index": 0, "input": PATCH},
        {"type": "response.output_item.done", "output_index": 0, "item": dict(item, input=PATCH)},
        {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": []}},
    ]
    dec = openai_responses.PROVIDER.stream_decoder(target("openai_responses"))
    raw = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    acc = GenerationAccumulator()
    for ev in iter_events([raw]):
        for part in dec.feed(ev):
            acc.add(part)
    assert acc.generation().parts == (ToolCallPart("call_p1", "apply_patch", PATCH, custom=True),)


@pytest.mark.parametrize("tools, input_items, param", [
    ([{"type": "custom", "description": "no name"}], "x", "tools[0].name"),
    ([{"type": "custom", "name": ""}], "x", "tools[0].name"),
    ([{"type": "custom", "name": "t", "format": "lark"}], "x", "tools[0].format"),
    ([{"type": "custom", "name": "t", "format": {"syntax": "lark"}}], "x", "tools[0].format.type"),
    ([], [{"type": "custom_tool_call_output", "output": "ok"}], "input[0].call_id"),
    ([], [{"type": "custom_tool_call", "call_id": "c", "name": "t"}], "input[0].input"),
    ([], [{"type": "custom_tool_call", "call_id": "c", "input": "x"}], "input[0].name"),
])
def test_responses_malformed_custom_tools_are_a_400_naming_the_field(tools: Any, input_items: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        responses_prompt(input=input_items, tools=tools)
    assert exc.value.param == param and exc.value.status == 400


def test_hosted_tools_are_kept_for_a_responses_upstream_with_their_places() -> None:
    from routeplane.protocols.openai_responses.tools import HOSTED_TOOLS_KEY

    p = responses_prompt(input="x", tools=[{"type": "web_search"}, RESP_TOOL, {"type": "apply_patch"}])
    assert [t.name for t in p.tools] == ["apply_patch"] and p.tools[0].custom
    assert p.extras[HOSTED_TOOLS_KEY] == [[0, {"type": "web_search"}], [2, {"type": "apply_patch"}]]
    for bad in ({"type": 3}, {"type": ""}, {"name": "no type"}):
        with pytest.raises(InvalidRequest) as exc:
            responses_prompt(input="x", tools=[bad])
        assert exc.value.param == "tools[0].type"


# --- Chat client -----------------------------------------------------------------


def test_chat_custom_tool_history_and_choice_decode_to_the_canonical_form() -> None:
    p = chat_prompt(messages=CHAT_HISTORY, tools=[CHAT_TOOL],
                    tool_choice={"type": "custom", "custom": {"name": "apply_patch"}})
    assert p.tools[0].custom and p.tools[0].format == RESP_TOOL["format"]  # one spelling: the Responses one
    assert p.messages[1].parts[0] == ToolCallPart("call_p1", "apply_patch", PATCH, custom=True)
    assert p.tool_choice.name == "apply_patch"
    narrowed = chat_prompt(tools=[CHAT_TOOL, {"type": "function", "function": {"name": "f"}}],
                           tool_choice={"type": "allowed_tools", "allowed_tools": {
                               "mode": "required", "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]}})
    assert [t.name for t in narrowed.tools] == ["apply_patch"]


def test_chat_same_wire_round_trip_is_lossless() -> None:
    body = {"model": "m", "messages": CHAT_HISTORY, "tools": [CHAT_TOOL],
            "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}}}
    sent = openai_chat.PROVIDER.encode_request(openai_chat.CLIENT.decode_request(body), target("openai_chat"), False)
    assert sent["messages"] == CHAT_HISTORY
    assert sent["tools"] == [CHAT_TOOL]
    assert sent["tool_choice"] == body["tool_choice"]


def test_chat_response_custom_tool_calls_both_ways() -> None:
    prompt = chat_prompt(tools=[CHAT_TOOL])
    gen = Generation("chatcmpl-1", "m", (ToolCallPart("call_p1", "apply_patch", PATCH, custom=True),),
                     FinishReason.TOOL_CALLS, Usage(input_tokens=3, output_tokens=2))
    body = openai_chat.CLIENT.encode_response(gen, prompt)
    msg = ChatCompletion.model_validate(body).choices[0].message
    call = msg.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageCustomToolCall) and call.custom.input == PATCH
    back = openai_chat.PROVIDER.decode_response(body, target("openai_chat"))
    assert back.parts == gen.parts and back.finish_reason is FinishReason.TOOL_CALLS


def chat_chunks(parts: List[StreamPart], prompt: Prompt) -> List[Dict[str, Any]]:
    enc = openai_chat.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(ev.data) for ev in iter_events([raw]) if ev.data != "[DONE]"]


def test_chat_stream_custom_call_deltas_and_decoder() -> None:
    prompt = chat_prompt(tools=[CHAT_TOOL, {"type": "function", "function": {"name": "f"}}])
    parts = [ResponseStart("x", "m"), ToolCallStart(0, "call_f", "f"), ToolCallDelta(0, "{}"),
             ToolCallStart(1, "call_p1", "apply_patch", custom=True), ToolCallDelta(1, PATCH[:9]),
             ToolCallDelta(1, PATCH[9:]), ToolCallEnd(0), ToolCallEnd(1), Finish(FinishReason.TOOL_CALLS)]
    chunks = chat_chunks(parts, prompt)
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    # OpenAI's shape; the SDK's chunk type knows only function deltas (the spec gap
    # openai/openai-openapi#576) and keeps `custom` as an extra field (tests/test_e2e_custom_tools.py).
    assert calls[2] == {"index": 1, "id": "call_p1", "type": "custom", "custom": {"name": "apply_patch", "input": ""}}
    assert calls[3:] == [{"index": 1, "custom": {"input": PATCH[:9]}}, {"index": 1, "custom": {"input": PATCH[9:]}}]
    # Decoded back (as a Chat upstream's stream), with an empty `custom: {}` some servers echo on
    # function fragments: `function` wins there.
    calls[1]["custom"] = {}
    dec = openai_chat.PROVIDER.stream_decoder(target("openai_chat"))
    raw = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    acc = GenerationAccumulator()
    for ev in iter_events([raw]):
        for part in dec.feed(ev):
            acc.add(part)
    assert acc.generation().parts == (ToolCallPart("call_f", "f", "{}"),
                                      ToolCallPart("call_p1", "apply_patch", PATCH, custom=True))


@pytest.mark.parametrize("tool, param", [
    ({"type": "custom"}, "tools[0].custom"),
    ({"type": "custom", "custom": {"description": "x"}}, "tools[0].custom.name"),
    ({"type": "custom", "custom": {"name": "t", "format": []}}, "tools[0].custom.format"),
])
def test_chat_malformed_custom_tool_is_a_400(tool: Dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        chat_prompt(messages=[{"role": "user", "content": "x"}], tools=[tool])
    assert exc.value.param == param


def test_chat_custom_call_without_input_is_a_400() -> None:
    history = [{"role": "user", "content": "x"},
               {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "t"}}]}]
    with pytest.raises(InvalidRequest) as exc:
        chat_prompt(messages=history)
    assert exc.value.param == "messages[1].tool_calls[0].custom.input"


# --- between the two OpenAI wires ------------------------------------------------


def test_chat_client_to_responses_upstream_and_back() -> None:
    prompt = chat_prompt(messages=CHAT_HISTORY, tools=[CHAT_TOOL],
                         tool_choice={"type": "custom", "custom": {"name": "apply_patch"}})
    sent = openai_responses.PROVIDER.encode_request(prompt, target("openai_responses"), False)
    assert sent["tools"] == [RESP_TOOL] and sent["input"] == RESP_HISTORY
    assert sent["tool_choice"] == {"type": "custom", "name": "apply_patch"}


def test_responses_client_to_chat_upstream() -> None:
    prompt = responses_prompt(input=RESP_HISTORY, tools=[RESP_TOOL],
                              tool_choice={"type": "custom", "name": "apply_patch"})
    sent = openai_chat.PROVIDER.encode_request(prompt, target("openai_chat"), False)
    assert sent["tools"] == [CHAT_TOOL] and sent["messages"] == CHAT_HISTORY
    assert sent["tool_choice"] == {"type": "custom", "custom": {"name": "apply_patch"}}


# --- wires without custom tools: a function of one string ------------------------


def test_anthropic_upstream_gets_a_function_with_one_string_parameter() -> None:
    prompt = responses_prompt(input=RESP_HISTORY, tools=[RESP_TOOL, FUNCTION_TOOL],
                              tool_choice={"type": "custom", "name": "apply_patch"})
    # the executor turns custom tools into functions for a wire without them (native_custom_tools)
    sent = anthropic_messages.PROVIDER.encode_request(function_form(prompt), target("anthropic_messages"), False)
    tool = sent["tools"][0]
    assert tool["name"] == "apply_patch" and tool["description"].startswith(DESCRIPTION)
    assert "`input`" in tool["description"]
    schema = tool["input_schema"]
    assert schema["required"] == ["input"] and schema["properties"]["input"]["type"] == "string"
    assert "lark grammar" in schema["properties"]["input"]["description"]
    assert GRAMMAR in schema["properties"]["input"]["description"]  # the model sees the grammar
    assert sent["tools"][1]["name"] == "get_weather"
    assert sent["tool_choice"] == {"type": "tool", "name": "apply_patch"}
    use = sent["messages"][1]["content"][0]
    assert use == {"type": "tool_use", "id": "call_p1", "name": "apply_patch", "input": {"input": PATCH}}
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "call_p1", "content": "Done!"}


def test_gemini_upstream_gets_a_function_with_one_string_parameter() -> None:
    prompt = chat_prompt(messages=CHAT_HISTORY, tools=[{"type": "custom", "custom": {"name": "apply_patch"}}])
    sent = gemini.PROVIDER.encode_request(function_form(prompt), target("gemini"), False)
    decl = sent["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "apply_patch" and decl["parametersJsonSchema"]["required"] == ["input"]
    assert "free-form text" in decl["parametersJsonSchema"]["properties"]["input"]["description"]
    call = sent["contents"][1]["parts"][0]["functionCall"]
    assert call["name"] == "apply_patch" and call["args"] == {"input": PATCH}
    assert sent["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": "Done!"}


def anthropic_tool_use(arguments: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "Patching."},
                        {"type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": arguments},
                        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5}}


@pytest.mark.parametrize("arguments, text", [
    ({"input": PATCH}, PATCH),
    ({"patch": PATCH}, PATCH),  # the model named the one string otherwise
    ({}, ""),
    ({"input": 3, "x": 1}, '{"input":3,"x":1}'),  # no string to take: the arguments as they are
])
def test_calls_of_the_function_form_come_back_as_custom_calls(arguments: Dict[str, Any], text: str) -> None:
    prompt = responses_prompt(input="go", tools=[RESP_TOOL, FUNCTION_TOOL])
    gen = anthropic_messages.PROVIDER.decode_response(anthropic_tool_use(arguments), target("anthropic_messages"))
    back = restore_calls(gen, prompt)
    custom = back.parts[1]
    assert custom.custom and custom.name == "apply_patch" and custom.id == "toolu_1"
    assert custom.arguments == text
    assert back.parts[2] == gen.parts[2] and not back.parts[2].custom  # function calls untouched
    body = openai_responses.CLIENT.encode_response(back, prompt)
    assert [o["type"] for o in body["output"]] == ["message", "custom_tool_call", "function_call"]


def anthropic_stream(fragments: List[str]) -> bytes:
    events: List[Dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
                                              "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "apply_patch", "input": {}}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": f}}
          for f in fragments),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def anthropic_parts(raw: bytes) -> Iterator[StreamPart]:
    dec = anthropic_messages.PROVIDER.stream_decoder(target("anthropic_messages"))
    for ev in iter_events([raw]):
        yield from dec.feed(ev)
    yield from dec.finish()


def test_streamed_function_form_calls_become_custom_call_deltas_as_they_arrive() -> None:
    args = json.dumps({"input": PATCH})
    fragments = [args[i:i + 7] for i in range(0, len(args), 7)]
    prompt = responses_prompt(input="go", tools=[RESP_TOOL])
    parts = list(restore_stream(anthropic_parts(anthropic_stream(fragments)), prompt))
    start = next(p for p in parts if isinstance(p, ToolCallStart))
    assert start.custom and start.name == "apply_patch"
    deltas = [p.arguments for p in parts if isinstance(p, ToolCallDelta)]
    assert "".join(deltas) == PATCH
    assert len(deltas) > len(fragments) // 2  # streamed, not held to the end
    events = responses_events(parts, prompt)
    assert "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta") == PATCH
    assert events[-1]["response"]["output"][0]["input"] == PATCH


def test_a_prompt_without_custom_tools_keeps_its_stream_untouched() -> None:
    parts = iter([ResponseStart("r", "m"), UsageUpdate(Usage()), Finish(FinishReason.STOP)])
    assert restore_stream(parts, responses_prompt(input="go", tools=[FUNCTION_TOOL])) is parts


def test_closing_the_restored_stream_closes_the_upstream_one() -> None:
    closed: List[bool] = []

    def upstream() -> Iterator[StreamPart]:
        try:
            yield ResponseStart("r", "m")
            yield ToolCallStart(0, "c", "apply_patch")
            yield ToolCallDelta(0, '{"input": "ab')
        finally:
            closed.append(True)

    restored = restore_stream(upstream(), responses_prompt(input="go", tools=[RESP_TOOL]))
    assert isinstance(next(restored), ResponseStart)
    restored.close()
    assert closed == [True]


def test_a_stream_cut_inside_a_call_flushes_what_it_has_at_the_finish() -> None:
    parts = [ResponseStart("r", "m"), ToolCallStart(0, "c", "apply_patch"), ToolCallDelta(0, '{"pat'),
             ToolCallDelta(0, 'ch": "x\\ny"}'), Finish(FinishReason.TOOL_CALLS)]
    out = list(restore_stream(iter(parts), responses_prompt(input="go", tools=[RESP_TOOL])))
    assert [p.arguments for p in out if isinstance(p, ToolCallDelta)] == ["x\ny"]
    assert isinstance(out[-1], Finish)


@pytest.mark.parametrize("text", [PATCH, "emoji 😀 \\u escapes \u2028 and \"quotes\"", "", "\\"])
def test_streamed_input_is_exact_for_any_fragmentation(text: str) -> None:
    rng = random.Random(7)
    for args in (json.dumps({"input": text}), json.dumps({"input": text}, ensure_ascii=False, indent=2),
                 json.dumps({"other": [1], "input": text}), json.dumps({"named": text})):
        for _ in range(100):
            cuts = sorted(rng.sample(range(len(args) + 1), min(len(args) + 1, rng.randint(0, 10))))
            fragments = [args[a:b] for a, b in zip([0, *cuts], [*cuts, len(args)])]
            streamed = _StreamedInput()
            assert "".join(streamed.feed(f) for f in fragments) + streamed.finish() == text


def test_custom_input_keeps_text_that_is_not_json() -> None:
    assert custom_input("*** Begin Patch") == "*** Begin Patch"
    assert custom_input("") == ""


def test_the_mock_provider_calls_a_custom_tool_with_free_text() -> None:
    from routeplane.language_model.mock_provider import MockProvider

    prompt = responses_prompt(input="add hello.py", tools=[RESP_TOOL])
    gen = MockProvider().complete(target("mock"), prompt)
    assert gen.parts[0].custom and gen.parts[0].arguments == "add hello.py"
    acc = GenerationAccumulator()
    for part in MockProvider().stream(target("mock"), prompt):
        acc.add(part)
    assert acc.generation().parts == gen.parts


def test_only_providers_known_to_take_custom_tools_get_them_as_they_are(tmp_path: Any) -> None:
    """OpenAI-compatible Chat servers (vLLM, DeepSeek, Groq, ...) take function tools only: before, they
    got `{"type": "custom"}` tools and answered 400. The registry's openai entry says custom_tools: true."""
    from routeplane.config import ConfigError, load_config
    from routeplane.language_model.executor import native_custom_tools
    from routeplane.protocols import openai_chat, openai_responses

    path = tmp_path / "routeplane.yaml"
    path.write_text("providers:\n  openai: {api_key: sk-x}\n  vllm: {base_url: 'http://127.0.0.1:8000/v1'}\n"
                    "  resp: {protocol: openai_responses, base_url: 'https://example.com/v1', api_key: k}\n"
                    "models:\n  m: {targets: [{provider: openai, model: gpt-5}]}\n")
    providers = load_config(str(path)).providers
    assert native_custom_tools(openai_chat.PROVIDER, providers["openai"]) is True
    assert native_custom_tools(openai_chat.PROVIDER, providers["vllm"]) is False
    assert native_custom_tools(openai_responses.PROVIDER, providers["resp"]) is True
    path.write_text("providers:\n  vllm: {base_url: 'http://127.0.0.1:8000/v1', options: {custom_tools: 'yes'}}\n"
                    "models:\n  m: {targets: [{provider: vllm, model: x}]}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    assert "custom_tools" in str(exc.value)
