"""Upgoing (user → model): every text of the prompt is scanned before the upstream sees it."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.types import Role, TextPart, ToolCallPart, ToolResultPart
from routeplane.testing import Gateway

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
GH = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"


def conversation() -> List[Dict[str, Any]]:
    return [
        {"role": "system", "content": f"Deploy with token {GH}."},
        {"role": "user", "content": "Deploy the app, my email is ops@example.com"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "deploy", "arguments": json.dumps({"password": "hunter2!x", "host": "10.2.3.4"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"deployed; key {KEY} rotated"},
        {"role": "user", "content": "thanks"},
    ]


def test_every_text_of_the_prompt_is_redacted_before_the_upstream() -> None:
    plugin = GuardrailsPlugin(upgoing={"api_keys": "redact", "pii_emails": "redact", "credentials": "redact",
                                       "ip_addresses": "redact"})
    gw = Gateway(plugins=[plugin])
    assert gw.request({"model": "default", "messages": conversation()}).status == 200
    prompt = gw.executor.calls[-1].prompt
    assert prompt.system_text() == "Deploy with token [REDACTED:api_key]."
    user, assistant, tool, last = prompt.messages
    assert user.text() == "Deploy the app, my email is [REDACTED:email]"
    (call,) = [p for p in assistant.parts if isinstance(p, ToolCallPart)]
    assert json.loads(call.arguments) == {"password": "[REDACTED:credential]", "host": "[REDACTED:ip_address]"}
    assert tool.role is Role.TOOL
    (result,) = [p for p in tool.parts if isinstance(p, ToolResultPart)]
    assert result.text() == "deployed; key [REDACTED:api_key] rotated"
    assert last.parts == (TextPart("thanks"),)
    assert plugin.stats()["upgoing"] == {"api_keys": {"redact": 2}, "credentials": {"redact": 1},
                                         "ip_addresses": {"redact": 1}, "pii_emails": {"redact": 1}}


def test_block_denies_with_400_before_any_upstream_call() -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "block", "pii_emails": "redact"})])
    result = gw.request({"model": "default", "messages": conversation()})
    assert result.status == 400
    assert result.json["error"]["code"] == "guardrail_violation"
    assert result.json["error"]["type"] == "invalid_request_error"
    assert result.json["error"]["message"] == "The request was blocked by a guardrail (api_keys in system text)."
    assert gw.executor.calls == [] and result.settlements == []
    assert KEY.encode() not in result.body and GH.encode() not in result.body


def test_block_also_applies_to_streaming_requests() -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"credentials": "block"})])
    result = gw.request({"model": "default", "stream": True,
                         "messages": [{"role": "user", "content": "postgres://app:S3cret99@db.internal/prod"}]})
    assert result.status == 400 and result.json["error"]["code"] == "guardrail_violation"
    assert gw.executor.calls == []


def test_clean_prompt_reaches_the_upstream_unchanged() -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "redact"})])
    body = {"model": "default", "messages": [{"role": "user", "content": "hello there"}]}
    plain = Gateway()
    plain.request(body)
    gw.request(body)
    assert gw.executor.calls[-1].prompt == plain.executor.calls[-1].prompt


# --- everything else of the request the upstream reads -----------------------------------

EMAIL = "ops@example.com"


def chat_with_fields() -> Dict[str, Any]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": "deploy it"}],
        "tools": [{"type": "function", "function": {
            "name": "deploy", "description": f"Deploys with token {KEY}",
            "parameters": {"type": "object", "properties": {
                "token": {"type": "string", "description": f"defaults to {GH}", "enum": ["dev", f"prod {KEY}"]},
                f"notify {EMAIL}": {"type": "boolean"}}}}}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "out", "schema": {"type": "object", "description": f"reply to {EMAIL}"}}},
        "stop": [f"END {KEY}", "STOP"],
        "user": EMAIL,
        "metadata": {"note": f"rotated {KEY}", "team": "infra"},
        "store": False,
        "prediction": {"type": "content", "content": f"token = '{GH}'"},
    }


def test_tool_definitions_and_request_fields_are_redacted_before_the_upstream() -> None:
    plugin = GuardrailsPlugin(upgoing={"api_keys": "redact", "pii_emails": "redact"})
    gw = Gateway(plugins=[plugin])
    assert gw.request(chat_with_fields()).status == 200
    prompt = gw.executor.calls[-1].prompt
    (tool,) = prompt.tools
    assert tool.name == "deploy" and tool.description == "Deploys with token [REDACTED:api_key]"
    assert tool.parameters == {"type": "object", "properties": {
        "token": {"type": "string", "description": "defaults to [REDACTED:api_key]",
                  "enum": ["dev", "prod [REDACTED:api_key]"]},
        "notify [REDACTED:email]": {"type": "boolean"}}}
    assert prompt.response_format is not None
    assert prompt.response_format.schema == {"type": "object", "description": "reply to [REDACTED:email]"}
    assert prompt.params.stop == ("END [REDACTED:api_key]", "STOP")
    assert prompt.params.user == "[REDACTED:email]"
    assert prompt.extras["metadata"] == {"note": "rotated [REDACTED:api_key]", "team": "infra"}
    assert prompt.extras["prediction"] == {"type": "content", "content": "token = '[REDACTED:api_key]'"}
    assert prompt.extras["store"] is False
    assert plugin.stats()["upgoing"] == {"api_keys": {"redact": 6}, "pii_emails": {"redact": 3}}


def test_a_key_in_a_tool_description_blocks_and_names_the_field() -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "block"})])
    body = chat_with_fields()
    body.update(stop=None, metadata=None, prediction=None)
    result = gw.request(body)
    assert result.status == 400 and result.json["error"]["code"] == "guardrail_violation"
    assert result.json["error"]["message"] == "The request was blocked by a guardrail (api_keys in tools[0] description)."
    assert gw.executor.calls == []


@pytest.mark.parametrize("field,value,where", [
    ("user", f"key {KEY}", "user"),
    ("stop", [f"{KEY}"], "stop sequences"),
    ("metadata", {"k": KEY}, "metadata"),
], ids=["user", "stop", "metadata"])
def test_a_key_in_a_request_field_blocks(field: str, value: Any, where: str) -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "block"})])
    result = gw.request({"model": "default", "messages": [{"role": "user", "content": "hi"}], field: value})
    assert result.status == 400, result.body
    assert result.json["error"]["message"].endswith(f"(api_keys in {where}).")
    assert gw.executor.calls == []


def test_anthropic_tools_metadata_and_stop_sequences_are_redacted() -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "redact", "pii_emails": "redact"})])
    body = {"model": "default", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "deploy", "description": f"token {KEY}",
                       "input_schema": {"type": "object", "properties": {"to": {"type": "string", "default": EMAIL}}}}],
            "metadata": {"user_id": EMAIL}, "stop_sequences": [f"{GH}"],
            # A credential handed to the provider on purpose is left alone.
            "mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "gh",
                             "authorization_token": GH}]}
    assert gw.request(body, path="/v1/messages").status == 200
    prompt = gw.executor.calls[-1].prompt
    assert prompt.tools[0].description == "token [REDACTED:api_key]"
    assert prompt.tools[0].parameters["properties"]["to"]["default"] == "[REDACTED:email]"
    assert prompt.params.user == "[REDACTED:email]" and prompt.params.stop == ("[REDACTED:api_key]",)
    assert prompt.extras["mcp_servers"][0]["authorization_token"] == GH


def test_responses_metadata_and_custom_tool_grammar_are_redacted() -> None:
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "redact"})])
    body = {"model": "default", "input": "hi", "metadata": {"deploy_key": KEY},
            "tools": [{"type": "custom", "name": "sql", "description": "runs SQL",
                       "format": {"type": "grammar", "syntax": "lark", "definition": f'start: "{KEY}"'}}]}
    assert gw.request(body, path="/v1/responses").status == 200
    prompt = gw.executor.calls[-1].prompt
    assert prompt.extras["metadata"] == {"deploy_key": "[REDACTED:api_key]"}
    assert prompt.tools[0].format == {"type": "grammar", "syntax": "lark", "definition": 'start: "[REDACTED:api_key]"'}


def test_clean_fields_reach_the_upstream_as_the_same_objects() -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": "hello"}], "user": "u-42", "stop": ["END"],
            "metadata": {"team": "infra"}, "store": False,
            "tools": [{"type": "function", "function": {"name": "f", "description": "does f", "parameters": {
                "type": "object", "properties": {"x": {"type": "integer", "description": "version 1.2.3.4"}}}}}]}
    plain = Gateway()
    plain.request(body)
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "block", "ip_addresses": "redact"})])
    assert gw.request(body).status == 200
    assert gw.executor.calls[-1].prompt == plain.executor.calls[-1].prompt
