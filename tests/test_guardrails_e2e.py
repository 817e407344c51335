"""The guardrails plugin, loaded by entry point from `plugins.guardrails` in the config, under a real gunicorn."""

from __future__ import annotations

import json
from typing import Iterator, Tuple

import anthropic
import openai
import pytest
import requests
from openai import OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
EMAIL = "jane.doe@example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[GatewayProcess, FakeUpstream, OpenAI]]:
    upstream = FakeUpstream().start()
    db = tmp_path_factory.mktemp("guardrails-e2e") / "routeplane.db"
    config = {
        "database": {"url": f"sqlite:///{db}"},
        "server": {"stats_flush_seconds": 0.3},
        "providers": {"mock": {"protocol": "mock"},
                      "up": {"protocol": "openai_chat", "base_url": upstream.url + "/v1", "api_key": "sk-upstream"},
                      "anth": {"protocol": "anthropic_messages", "base_url": upstream.url, "api_key": "sk-ant-up"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]},
                   "up": {"targets": [{"provider": "up", "model": "up-model"}]},
                   "claude": {"targets": [{"provider": "anth", "model": "claude-up"}]}},
        "plugins": {"guardrails": {
            "upgoing": {"api_keys": "block", "ip_addresses": "redact"},
            "downgoing": {"api_keys": "block", "pii_emails": "redact", "credentials": "redact"},
            "block_message": {"include_details": True},
        }},
    }
    gw = GatewayProcess(config).start()
    client = OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    try:
        yield gw, upstream, client
    finally:
        client.close()
        gw.stop()
        upstream.stop()


def _sse(pieces: list) -> Reply:
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                      *[openai_chunk({"content": p}) for p in pieces], openai_chunk({}, "stop")])


def test_upgoing_block_is_a_400_guardrail_error(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": f"use {KEY}"}])
    assert info.value.status_code == 400
    assert info.value.code == "guardrail_violation"
    assert "api_keys" in info.value.message and KEY[:12] not in info.value.message
    assert len(upstream.requests) == before  # never reached the upstream


def test_email_split_across_upstream_chunks_is_redacted_in_the_stream(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(_sse(["Write to jane.d", "oe@exam", "ple.c", "om any time."]))
    stream = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "contact?"}],
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Write to [REDACTED:email] any time."


def test_key_in_the_upstream_stream_ends_it_with_an_error(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(_sse(["Here: " + KEY[:10], KEY[10:30], KEY[30:] + " bye"]))
    got = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="up", messages=[{"role": "user", "content": "key?"}],
                                                    stream=True):
            got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "blocked by a guardrail" in str(info.value)
    assert KEY[:8] not in got


def test_non_streaming_reply_is_redacted_and_logs_never_hold_the_secret(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    assert r.choices[0].message.content == "You said: mail [REDACTED:email]"
    logs = gw.logs()
    assert "guardrail" in logs and "pii_emails" in logs
    assert EMAIL not in logs and KEY[:12] not in logs


def test_upgoing_redaction_is_what_the_real_upstream_receives(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(_sse(["ok"]))
    stream = client.chat.completions.create(
        model="up", stream=True, messages=[{"role": "system", "content": "db host 10.20.30.40"},
                                           {"role": "user", "content": "connect to 172.16.5.9 please"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"
    sent = upstream.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["db host [REDACTED:ip_address]", "connect to [REDACTED:ip_address] please"]


def test_counters_reach_admin_metrics(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": f"key {KEY}"}])
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    with requests.get(gw.url + "/admin/metrics", timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        counters = resp.json()["plugins"]["counters"]["guardrails"]
    assert counters["upgoing"]["api_keys"]["block"] >= 1
    assert counters["downgoing"]["pii_emails"]["redact"] >= 1


def test_anthropic_count_tokens_never_sends_what_the_guardrail_stops(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    """Claude Code and the anthropic SDK count a prompt before sending it: the count goes through the same
    upgoing checks, so a blocked secret never reaches the provider and a redacted one is counted redacted."""
    gw, upstream, _client = stack
    claude = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    blocked = [{"role": "user", "content": f"deploy with {KEY} please"}]
    before = len(upstream.requests)
    with pytest.raises(anthropic.BadRequestError) as sent:
        claude.messages.create(model="claude", max_tokens=10, messages=blocked)
    with pytest.raises(anthropic.BadRequestError) as counted:
        claude.messages.count_tokens(model="claude", messages=blocked)
    assert counted.value.body["error"] == sent.value.body["error"]  # each names its own request_id beside it
    assert counted.value.body["error"]["type"] == "invalid_request_error"
    assert counted.value.body["request_id"] != sent.value.body["request_id"]
    assert "api_keys" in counted.value.message and KEY[:12] not in counted.value.message
    assert len(upstream.requests) == before  # neither reached the upstream
    upstream.enqueue(Reply.json({"input_tokens": 17}))
    assert claude.messages.count_tokens(model="claude", system="db host 10.20.30.40", messages=[
        {"role": "user", "content": "connect to 172.16.5.9"}]).input_tokens == 17
    forwarded = upstream.requests[-1]
    assert forwarded.path == "/v1/messages/count_tokens" and forwarded.headers["x-api-key"] == "sk-ant-up"
    assert b"10.20.30.40" not in forwarded.body and b"172.16.5.9" not in forwarded.body
    assert forwarded.json["messages"][0]["content"][0]["text"] == "connect to [REDACTED:ip_address]"


# --- tool-call arguments stay JSON when redacted ------------------------------------------

# {"cmd": "mysql -e \"SET PASSWORD=hunter22\"", "note": "mail:\njane.doe@example.com"}: the password's
# value ends at an escaped quote, the email starts right after an escaped line break.
TOOL_ARGS = json.dumps({"cmd": 'mysql -e "SET PASSWORD=hunter22"', "note": f"mail:\n{EMAIL}"})
REDACTED_TOOL_ARGS = {"cmd": 'mysql -e "SET PASSWORD=[REDACTED:credential]"', "note": "mail:\n[REDACTED:email]"}
SHELL_TOOL = [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]
SHELL_CALL = [{"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": TOOL_ARGS}}]


def test_redacted_tool_call_arguments_parse_in_the_openai_sdk(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(Reply.json(openai_completion(None, tool_calls=SHELL_CALL, finish="tool_calls")))
    r = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "x"}], tools=SHELL_TOOL)
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == REDACTED_TOOL_ARGS


def test_redacted_streamed_tool_call_arguments_parse_in_the_openai_sdk(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    head = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "shell", "arguments": ""}}]}
    pieces = [TOOL_ARGS[i:i + 5] for i in range(0, len(TOOL_ARGS), 5)]  # backslashes and secrets straddle chunks
    upstream.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": None}), openai_chunk(head),
                                *[openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                                  for p in pieces], openai_chunk({}, "tool_calls")]))
    args = ""
    for chunk in client.chat.completions.create(model="up", messages=[{"role": "user", "content": "x"}],
                                                tools=SHELL_TOOL, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args += tc.function.arguments or ""
    assert json.loads(args) == REDACTED_TOOL_ARGS


def test_redacted_tool_input_reaches_the_anthropic_sdk_as_an_object(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, _client = stack
    upstream.enqueue(Reply.json(openai_completion(None, tool_calls=SHELL_CALL, finish="tool_calls")))
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0) as claude:
        msg = claude.messages.create(model="up", max_tokens=50, messages=[{"role": "user", "content": "x"}],
                                     tools=[{"name": "shell", "input_schema": {"type": "object"}}])
    block = next(b for b in msg.content if b.type == "tool_use")
    assert block.input == REDACTED_TOOL_ARGS  # not {"_raw": "..."}


# --- upgoing: tool definitions and request fields are scanned like message text ---------------


def test_tool_definitions_and_request_fields_are_redacted_before_the_upstream(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(Reply.json(openai_completion("ok")))
    tools = [{"type": "function", "function": {
        "name": "ssh", "description": "Connects to 10.20.30.40",
        "parameters": {"type": "object", "properties": {"host": {"type": "string", "enum": ["172.16.5.9"]}}}}}]
    r = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "go to 10.1.1.1"}],
                                       tools=tools, user="10.9.8.7", metadata={"origin": "192.168.7.7"},
                                       store=False, stop=["at 10.2.2.2"])
    assert r.choices[0].message.content == "ok"
    sent = upstream.requests[-1].json
    assert sent["messages"][0]["content"] == "go to [REDACTED:ip_address]"
    assert sent["tools"][0]["function"]["description"] == "Connects to [REDACTED:ip_address]"
    assert sent["tools"][0]["function"]["parameters"]["properties"]["host"]["enum"] == ["[REDACTED:ip_address]"]
    assert sent["user"] == "[REDACTED:ip_address]" and sent["metadata"] == {"origin": "[REDACTED:ip_address]"}
    assert sent["stop"] in (["at [REDACTED:ip_address]"], "at [REDACTED:ip_address]")


def test_a_key_in_a_tool_description_is_blocked_before_the_upstream(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    before = len(upstream.requests)
    tools = [{"type": "function", "function": {"name": "deploy", "description": f"uses {KEY}",
                                               "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": "deploy"}], tools=tools)
    assert info.value.code == "guardrail_violation" and "tools[0] description" in info.value.message
    assert len(upstream.requests) == before
