"""E2E under gunicorn: OpenAI custom (freeform) tools — Codex CLI's `apply_patch` — with the official `openai` SDK.

A Responses client's custom tool reaches a Responses upstream as itself and comes back as a
`custom_tool_call` (streamed as `response.custom_tool_call_input.*` events); an Anthropic or
Gemini upstream gets a function taking one string `input` and its call comes back to the client
as a custom call with that string as input. A Chat client's custom tool works the same way.
Before, every custom tool was a 400.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest
from openai import BadRequestError, OpenAI
from openai.types.chat import ChatCompletionMessageCustomToolCall
from openai.types.responses import ResponseCustomToolCall

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk
from tests.support.wires import gemini_sse, responses_sse

pytestmark = pytest.mark.e2e

PATCH = ('*** Begin Patch\n*** Update File: app.py\n@@ def greet():\n-    print("hi")\n'
         '+    print("héllo, \\"world\\"")\n*** End Patch')
GRAMMAR = ('start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\n'
           'end_patch: "*** End Patch" LF?\nhunk: add_hunk | update_hunk\n%import common.LF')
DESCRIPTION = "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON."
# As Codex CLI declares it on the Responses wire.
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": DESCRIPTION,
               "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR}}
CHAT_APPLY_PATCH = {"type": "custom", "custom": {"name": "apply_patch", "description": DESCRIPTION,
                                                 "format": {"type": "grammar",
                                                            "grammar": {"definition": GRAMMAR, "syntax": "lark"}}}}
DONE = "Applied."
USAGE = {"input_tokens": 20, "output_tokens": 9, "total_tokens": 29}


def _pieces(text: str, size: int = 11) -> List[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


# --- the upstream: a custom call (or its function form) first, then text after the result ---


def _responses(body: Dict[str, Any], stream: bool) -> Reply:
    answered = body["input"][-1].get("type") == "custom_tool_call_output"
    if answered:
        item: Dict[str, Any] = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed",
                                "content": [{"type": "output_text", "text": DONE, "annotations": []}]}
    else:
        item = {"type": "custom_tool_call", "id": "ctc_up", "call_id": "call_up", "name": "apply_patch",
                "input": PATCH, "status": "completed"}
    final = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
             "output": [item], "usage": USAGE}
    if not stream:
        return Reply.json(final)
    shell = dict(final, status="in_progress", output=[], usage=None)
    events: List[Dict[str, Any]] = [{"type": "response.created", "response": shell}]
    ids = {"item_id": item["id"], "output_index": 0}
    if answered:
        events += [{"type": "response.output_item.added", "output_index": 0, "item": dict(item, content=[])},
                   {"type": "response.content_part.added", **ids, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}},
                   {"type": "response.output_text.delta", **ids, "content_index": 0, "delta": DONE},
                   {"type": "response.output_text.done", **ids, "content_index": 0, "text": DONE}]
    else:
        events += [{"type": "response.output_item.added", "output_index": 0,
                    "item": dict(item, input="", status="in_progress")},
                   *({"type": "response.custom_tool_call_input.delta", **ids, "delta": piece}
                     for piece in _pieces(PATCH)),
                   {"type": "response.custom_tool_call_input.done", **ids, "input": PATCH}]
    events += [{"type": "response.output_item.done", "output_index": 0, "item": item},
               {"type": "response.completed", "response": final}]
    return responses_sse(events)


def _anthropic(body: Dict[str, Any], stream: bool) -> Reply:
    last = body["messages"][-1]["content"]
    answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    usage = {"input_tokens": 20, "output_tokens": 9}
    block = ({"type": "text", "text": DONE} if answered else
             {"type": "tool_use", "id": "toolu_up", "name": "apply_patch", "input": {"input": PATCH}})
    stop = "end_turn" if answered else "tool_use"
    if not stream:
        return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "up", "content": [block],
                           "stop_reason": stop, "stop_sequence": None, "usage": usage})
    events: List[Dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "up", "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": dict(usage, output_tokens=1)}}]
    if answered:
        events += [{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": DONE}}]
    else:
        events.append({"type": "content_block_start", "index": 0, "content_block": dict(block, input={})})
        events += [{"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}
                   for piece in _pieces(json.dumps({"input": PATCH}), 9)]
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
               {"type": "message_stop"}]
    return Reply.anthropic_sse(events)


def _gemini(body: Dict[str, Any], stream: bool) -> Reply:
    answered = any("functionResponse" in p for p in body["contents"][-1]["parts"])
    part = {"text": DONE} if answered else {"functionCall": {"name": "apply_patch", "args": {"input": PATCH}}}
    chunk = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
             "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 9, "totalTokenCount": 29},
             "modelVersion": "up"}
    return gemini_sse([chunk]) if stream else Reply.json(chunk)


def _chat(body: Dict[str, Any], stream: bool) -> Reply:
    """A Chat upstream calling apply_patch: as a custom tool, or, when it was offered a function (an
    OpenAI-compatible server, which has no custom tools), as a function with `{"input": ...}`."""
    answered = body["messages"][-1]["role"] == "tool"
    usage = {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}
    if body["tools"][0]["type"] == "function":
        kind, payload, text = "function", "arguments", json.dumps({"input": PATCH})
    else:
        kind, payload, text = "custom", "input", PATCH
    call = {"id": "call_up", "type": kind, kind: {"name": "apply_patch", payload: text}}
    if not stream:
        msg: Dict[str, Any] = ({"role": "assistant", "content": DONE} if answered else
                               {"role": "assistant", "content": None, "tool_calls": [call]})
        return Reply.json({"id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": "up",
                           "choices": [{"index": 0, "message": msg,
                                        "finish_reason": "stop" if answered else "tool_calls"}], "usage": usage})
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    if answered:
        chunks += [openai_chunk({"content": DONE}), openai_chunk({}, "stop")]
    else:
        chunks.append(openai_chunk({"tool_calls": [dict(call, index=0, **{kind: {"name": "apply_patch", payload: ""}})]}))
        chunks += [openai_chunk({"tool_calls": [{"index": 0, kind: {payload: piece}}]}) for piece in _pieces(text)]
        chunks.append(openai_chunk({}, "tool_calls"))
    chunks.append(openai_chunk(None, usage=usage))
    return Reply.sse(chunks)


def patching_upstream(req: RecordedRequest) -> Reply:
    body = req.json
    if req.path.startswith("/v1/responses"):
        return _responses(body, bool(body.get("stream")))
    if req.path.startswith("/v1/messages"):
        return _anthropic(body, bool(body.get("stream")))
    if req.path.endswith("/chat/completions"):
        return _chat(body, bool(body.get("stream")))
    return _gemini(body, ":streamGenerateContent" in req.path)


WIRES = ("openai_responses", "anthropic_messages", "gemini", "openai_chat", "openai_compat")
# openai_compat: an OpenAI-compatible Chat server (vLLM, DeepSeek, ...), which takes function tools only


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = patching_upstream
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    base = {"openai_chat": upstream.url + "/v1", "anthropic_messages": upstream.url,
            "openai_responses": upstream.url + "/v1", "gemini": upstream.url, "openai_compat": upstream.url + "/compat/v1"}
    providers: Dict[str, Any] = {f"up_{w}": {"protocol": w, "base_url": base[w], "api_key": f"sk-up-{w}"} for w in WIRES}
    providers["up_openai_compat"]["protocol"] = "openai_chat"
    providers["up_openai_chat"]["options"] = {"custom_tools": True}  # as the registry's openai entry says
    gw = GatewayProcess({
        "providers": providers,
        "models": {f"via-{w}": {"targets": [{"provider": f"up_{w}", "model": f"up-{w}"}]} for w in WIRES},
    }).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> Iterator[OpenAI]:
    client = OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)
    yield client
    client.close()


def _sent(up: FakeUpstream, wire: str) -> Dict[str, Any]:
    if wire == "gemini":
        return [r for r in up.requests if "Content" in r.path][-1].json
    prefix = {"openai_chat": "/v1/chat/completions", "anthropic_messages": "/v1/messages",
              "openai_responses": "/v1/responses", "openai_compat": "/compat/v1/chat/completions"}[wire]
    return [r for r in up.requests if r.path.startswith(prefix)][-1].json


def _check_tool_offered(sent: Dict[str, Any], wire: str) -> None:
    """What the upstream was offered for apply_patch: itself on the OpenAI wires, else a function of one string."""
    if wire == "openai_responses":
        assert sent["tools"] == [APPLY_PATCH]
        return
    if wire == "openai_chat":
        assert sent["tools"] == [CHAT_APPLY_PATCH]
        return
    if wire == "anthropic_messages":
        (tool,) = sent["tools"]
        schema = tool["input_schema"]
    elif wire == "openai_compat":
        ((kind, tool),) = [(t["type"], t["function"]) for t in sent["tools"]]
        assert kind == "function"
        schema = tool["parameters"]
    else:
        (tool,) = sent["tools"][0]["functionDeclarations"]
        schema = tool["parametersJsonSchema"]
    assert tool["name"] == "apply_patch" and tool["description"].startswith(DESCRIPTION)
    assert schema["type"] == "object" and schema["required"] == ["input"]
    assert schema["properties"]["input"]["type"] == "string"
    assert GRAMMAR in schema["properties"]["input"]["description"]


def _check_history_sent(sent: Dict[str, Any], wire: str, call_id: str) -> None:
    """The call and its result went back upstream in the upstream's own dialect."""
    if wire == "openai_responses":
        assert sent["input"][-2:] == [
            {"type": "custom_tool_call", "call_id": call_id, "name": "apply_patch", "input": PATCH},
            {"type": "custom_tool_call_output", "call_id": call_id, "output": "Success. Updated app.py"}]
    elif wire == "anthropic_messages":
        assert sent["messages"][-2]["content"] == [
            {"type": "tool_use", "id": call_id, "name": "apply_patch", "input": {"input": PATCH}}]
        assert sent["messages"][-1]["content"] == [
            {"type": "tool_result", "tool_use_id": call_id, "content": "Success. Updated app.py"}]
    elif wire == "openai_compat":
        (call,) = sent["messages"][-2]["tool_calls"]
        assert (call["id"], call["type"], call["function"]["name"]) == (call_id, "function", "apply_patch")
        assert json.loads(call["function"]["arguments"]) == {"input": PATCH}
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": "Success. Updated app.py"}
    elif wire == "gemini":
        assert sent["contents"][-2]["parts"][0]["functionCall"]["args"] == {"input": PATCH}
        assert sent["contents"][-1]["parts"][0]["functionResponse"]["response"] == {
            "output": "Success. Updated app.py"}
    else:
        assert sent["messages"][-2]["tool_calls"] == [
            {"id": call_id, "type": "custom", "custom": {"name": "apply_patch", "input": PATCH}}]
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": "Success. Updated app.py"}


# --- Responses client (Codex CLI's shape) ----------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
def test_responses_apply_patch_json_round_trip(oai: OpenAI, upstream: FakeUpstream, wire: str) -> None:
    history: List[Any] = [{"role": "user", "content": "Make greet() say héllo."}]
    first = oai.responses.create(model=f"via-{wire}", input=history, tools=[APPLY_PATCH])
    _check_tool_offered(_sent(upstream, wire), wire)
    assert first.status == "completed"
    (call,) = first.output
    assert isinstance(call, ResponseCustomToolCall)
    assert call.name == "apply_patch" and call.input == PATCH and call.call_id
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history.append({"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Success. Updated app.py"})
    second = oai.responses.create(model=f"via-{wire}", input=history, tools=[APPLY_PATCH])
    assert second.output_text == DONE
    _check_history_sent(_sent(upstream, wire), wire, call.call_id)


@pytest.mark.parametrize("wire", WIRES)
def test_responses_apply_patch_stream(oai: OpenAI, upstream: FakeUpstream, wire: str) -> None:
    deltas: List[str] = []
    kinds: List[str] = []
    with oai.responses.stream(model=f"via-{wire}", input="Make greet() say héllo.", tools=[APPLY_PATCH],
                              tool_choice={"type": "custom", "name": "apply_patch"}) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.custom_tool_call_input.delta":
                deltas.append(event.delta)
            elif event.type == "response.custom_tool_call_input.done":
                assert event.input == PATCH
        final = stream.get_final_response()
    assert "".join(deltas) == PATCH
    assert kinds.count("response.custom_tool_call_input.done") == 1
    assert "response.function_call_arguments.delta" not in kinds
    (call,) = final.output
    assert isinstance(call, ResponseCustomToolCall) and call.input == PATCH and call.name == "apply_patch"
    assert final.tool_choice.type == "custom" and final.tools[0].type == "custom"
    sent = _sent(upstream, wire)
    _check_tool_offered(sent, wire)
    if wire == "anthropic_messages":
        assert sent["tool_choice"] == {"type": "tool", "name": "apply_patch"}
    elif wire == "openai_responses":
        assert sent["tool_choice"] == {"type": "custom", "name": "apply_patch"}


# --- Chat client ------------------------------------------------------------------------


CHAT_WIRES = ("openai_chat", "openai_compat", "openai_responses", "anthropic_messages")


@pytest.mark.parametrize("wire", CHAT_WIRES)
def test_chat_custom_tool_json_round_trip(oai: OpenAI, upstream: FakeUpstream, wire: str) -> None:
    messages: List[Any] = [{"role": "user", "content": "Make greet() say héllo."}]
    first = oai.chat.completions.create(model=f"via-{wire}", messages=messages, tools=[CHAT_APPLY_PATCH])
    _check_tool_offered(_sent(upstream, wire), wire)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageCustomToolCall)
    assert call.custom.name == "apply_patch" and call.custom.input == PATCH
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Success. Updated app.py"})
    second = oai.chat.completions.create(model=f"via-{wire}", messages=messages, tools=[CHAT_APPLY_PATCH])
    assert second.choices[0].message.content == DONE
    _check_history_sent(_sent(upstream, wire), wire, call.id)


@pytest.mark.parametrize("wire", CHAT_WIRES)
def test_chat_custom_tool_stream(oai: OpenAI, upstream: FakeUpstream, wire: str) -> None:
    chunks = list(oai.chat.completions.create(model=f"via-{wire}", messages=[{"role": "user", "content": "go"}],
                                              tools=[CHAT_APPLY_PATCH], stream=True))
    # The SDK types chunk tool calls as function calls only (openai/openai-openapi#576);
    # `custom` reaches the client as the call's extra field, as it does from OpenAI.
    fragments = [tc.to_dict() for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert fragments[0]["type"] == "custom" and fragments[0]["id"]
    assert fragments[0]["custom"]["name"] == "apply_patch"
    assert all(f["index"] == 0 and "function" not in f for f in fragments)
    assert "".join(f["custom"].get("input", "") for f in fragments) == PATCH
    assert sum("id" in f for f in fragments) == 1  # id and name once: the SDK concatenates repeats
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    _check_tool_offered(_sent(upstream, wire), wire)


# --- malformed input: a clear 400 in the client's shape -----------------------------------


@pytest.mark.parametrize("kwargs, param", [
    ({"input": "x", "tools": [{"type": "custom", "description": "no name"}]}, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "custom", "name": "apply_patch", "format": "lark"}]}, "tools[0].format"),
    ({"input": [{"role": "user", "content": "x"}, {"type": "custom_tool_call_output", "output": "ok"}]},
     "input[1].call_id"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "apply_patch"}]}, "input[0].input"),
])
def test_responses_malformed_custom_tools_are_a_clear_400(oai: OpenAI, kwargs: Dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as exc:
        oai.responses.create(model="via-openai_responses", **kwargs)
    assert exc.value.status_code == 400
    assert exc.value.body["type"] == "invalid_request_error" and exc.value.body["param"] == param
    assert param in exc.value.message


def test_chat_custom_tool_without_a_name_is_a_clear_400(oai: OpenAI) -> None:
    with pytest.raises(BadRequestError) as exc:
        oai.chat.completions.create(model="via-openai_chat", messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "custom", "custom": {"description": "no name"}}])
    assert exc.value.body["param"] == "tools[0].custom.name" and exc.value.body["type"] == "invalid_request_error"


def test_hosted_tools_reach_a_responses_upstream_and_are_a_400_elsewhere(oai: OpenAI, upstream: FakeUpstream) -> None:
    """Hosted tools were a 400 on every wire, a Responses upstream's included: a Responses client could
    not use web search or an MCP server through the gateway."""
    hosted = [{"type": "web_search"}, {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example/",
                                       "require_approval": "never"}]
    oai.responses.create(model="via-openai_responses", input="x", tools=[hosted[0], APPLY_PATCH, hosted[1]],
                         tool_choice={"type": "mcp", "server_label": "docs"})
    sent = _sent(upstream, "openai_responses")
    assert sent["tools"] == [hosted[0], APPLY_PATCH, hosted[1]]
    assert sent["tool_choice"] == {"type": "mcp", "server_label": "docs"}
    assert not any(k.startswith("_") for k in sent)
    for wire in ("anthropic_messages", "openai_chat", "gemini"):
        with pytest.raises(BadRequestError) as exc:
            oai.responses.create(model=f"via-{wire}", input="x", tools=[APPLY_PATCH, hosted[0]])
        assert exc.value.body["param"] == "tools[1]" and "'web_search'" in exc.value.message
        with pytest.raises(BadRequestError) as exc:
            oai.responses.create(model=f"via-{wire}", input="x", tool_choice={"type": "file_search"})
        assert exc.value.body["param"] == "tool_choice"
