"""Tool, function and message names are identifiers: a secret in one is found, but a name is never rewritten (a
placeholder would break the call), so `redact` acts as `block` on names (counted as `block`); `warn` stays `warn`."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ResponseStart,
    StreamPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
)
from routeplane.testing import Gateway, run_request

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"  # 48 characters: a valid function name
AWS = "AKIAIOSFODNN7EXAMPLE"
CHAT = {"model": "default", "messages": [{"role": "user", "content": "go"}]}


def call_stream(name: str) -> List[StreamPart]:
    return [ResponseStart("chatcmpl-fixed", "m", 1700000000), ToolCallStart(0, "call_1", name),
            ToolCallDelta(0, '{"a": '), ToolCallDelta(0, "1}"), ToolCallEnd(0), Finish(FinishReason.TOOL_CALLS)]


def call_generation(name: str) -> Generation:
    return Generation("gen-1", "m", (ToolCallPart("call_1", name, '{"a": 1}'),), FinishReason.TOOL_CALLS)


def streamed_calls(result: Any) -> Dict[str, str]:
    names, args = "", ""
    for c in result.sse:
        if isinstance(c, dict) and c.get("choices"):
            for call in c["choices"][0]["delta"].get("tool_calls") or ():
                names += call["function"].get("name") or ""
                args += call["function"].get("arguments") or ""
    return {"name": names, "arguments": args}


def test_a_secret_in_a_response_tool_name_is_counted_as_warn_and_left_as_is_under_warn() -> None:
    plugin = GuardrailsPlugin(downgoing={"api_keys": "warn"})
    result = run_request(CHAT, plugins=[plugin], script=[call_generation(KEY)])
    assert result.status == 200
    (call,) = result.json["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": KEY, "arguments": '{"a": 1}'}
    streamed = run_request({**CHAT, "stream": True}, plugins=[plugin], script=[call_stream(KEY)])
    assert streamed_calls(streamed) == {"name": KEY, "arguments": '{"a": 1}'}
    assert plugin.stats() == {"downgoing": {"api_keys": {"warn": 2}}}


def test_redact_on_a_streamed_tool_name_stops_the_stream_before_the_name_leaves() -> None:
    # A model can put a key in a tool name (`^[a-zA-Z0-9_-]{1,64}$` fits one); it cannot be rewritten, so it is stopped.
    plugin = GuardrailsPlugin(**{"downgoing": {"api_keys": "redact", "pii_emails": "redact", "credentials": "redact"}})
    streamed = run_request({**CHAT, "stream": True}, plugins=[plugin], script=[call_stream(KEY)])
    errors = [c["error"] for c in streamed.sse if isinstance(c, dict) and "error" in c]
    assert [e["code"] for e in errors] == ["guardrail_violation"]
    assert errors[0]["message"].endswith("(api_keys in tool call 0 name).")
    assert streamed_calls(streamed) == {"name": "", "arguments": ""}  # nothing of the call reached the client
    assert KEY.encode() not in streamed.body and b"sk-proj" not in streamed.body
    assert plugin.stats() == {"downgoing": {"api_keys": {"block": 1}}}


@pytest.mark.parametrize("action", ["redact", "block"])
def test_a_secret_in_a_response_tool_name_blocks(action: str) -> None:
    plugin = GuardrailsPlugin(downgoing={"api_keys": action})
    result = run_request(CHAT, plugins=[plugin], script=[call_generation(KEY)])
    assert result.status == 400 and result.json["error"]["code"] == "guardrail_violation"
    assert result.json["error"]["message"] == \
        "The response was blocked by a guardrail (api_keys in response tool call name)."
    streamed = run_request({**CHAT, "stream": True}, plugins=[plugin], script=[call_stream(AWS)])
    errors = [c["error"] for c in streamed.sse if isinstance(c, dict) and "error" in c]
    assert [e["code"] for e in errors] == ["guardrail_violation"]
    assert errors[0]["message"].endswith("(api_keys in tool call 0 name).")
    assert AWS.encode() not in streamed.body  # stopped before the call's name left
    assert plugin.stats() == {"downgoing": {"api_keys": {"block": 2}}}


def test_anthropic_stream_is_stopped_at_the_tool_name() -> None:
    body = {"model": "default", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    result = Gateway(plugins=[GuardrailsPlugin(downgoing={"api_keys": "block"})],
                     script=[call_stream(KEY)]).request(body, path="/v1/messages")
    assert KEY.encode() not in result.body
    assert [e for e in result.sse if isinstance(e, dict) and e.get("type") == "error"]


def conversation(name: str) -> Dict[str, Any]:
    return {
        "model": "default",
        "messages": [
            {"role": "user", "content": "run it", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"}],
        "tools": [{"type": "function", "function": {"name": name, "description": "runs",
                                                    "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": name}},
    }


def test_upgoing_names_are_counted_as_warn_under_warn_and_reach_the_upstream_unchanged() -> None:
    plugin = GuardrailsPlugin(upgoing={"api_keys": "warn"})
    gw = Gateway(plugins=[plugin])
    assert gw.request(conversation(KEY)).status == 200
    prompt = gw.executor.calls[-1].prompt
    assert prompt.tools[0].name == KEY and prompt.tool_choice is not None and prompt.tool_choice.name == KEY
    (call,) = [p for p in prompt.messages[1].parts if isinstance(p, ToolCallPart)]
    assert call.name == KEY and json.loads(call.arguments) == {}
    # The assistant's call, the tool definition and the tool choice.
    assert plugin.stats() == {"upgoing": {"api_keys": {"warn": 3}}}


@pytest.mark.parametrize("body,where", [
    (conversation(KEY), "messages[1] (assistant) tool call name"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": AWS, "parameters": {"type": "object"}}}]},
     "tools[0] name"),
    ({"model": "default", "messages": [{"role": "user", "content": "hi", "name": AWS}]}, "messages[0] (user) name"),
], ids=["tool-call", "tool-definition", "message-name"])
@pytest.mark.parametrize("action", ["redact", "block"])
def test_a_secret_in_an_upgoing_name_blocks(body: Dict[str, Any], where: str, action: str) -> None:
    plugin = GuardrailsPlugin(upgoing={"api_keys": action})
    gw = Gateway(plugins=[plugin])
    result = gw.request(body)
    assert result.status == 400, result.body
    assert result.json["error"]["message"] == f"The request was blocked by a guardrail (api_keys in {where})."
    assert gw.executor.calls == []
    assert plugin.stats() == {"upgoing": {"api_keys": {"block": 1}}}


def test_clean_names_are_not_counted() -> None:
    plugin = GuardrailsPlugin(upgoing={"api_keys": "block"}, downgoing={"api_keys": "block"})
    gw = Gateway(plugins=[plugin], script=[call_stream("get_weather")])
    assert gw.request({**conversation("get_weather"), "stream": True}).status == 200
    assert plugin.stats() == {}
