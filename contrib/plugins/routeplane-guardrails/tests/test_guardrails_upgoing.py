"""Upgoing (user → model): every text of the prompt is scanned before the upstream sees it."""

from __future__ import annotations

import json
from typing import Any, Dict, List

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
