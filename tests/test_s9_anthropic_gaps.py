"""Anthropic's beta context editing (`context_management`) through a real gateway, with the official SDK as
the client of scripted fake upstreams: the request field and its beta header reach an Anthropic upstream,
the answer's `applied_edits` come back (unstreamed, and beside `delta` in a stream's message_delta), and a
request bound for another wire is a 400 naming the field, its fallback of another wire skipped. Also the
relay of an `mcp_tool_use` block's streamed input, as Anthropic sends it."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.test_anthropic_server_tools import _answer, _sse

pytestmark = pytest.mark.e2e

BETA = "context-management-2025-06-27"
QUESTION = {"role": "user", "content": "What did the searches find?"}
EDITS = {"edits": [{"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 30000},
                    "keep": {"type": "tool_uses", "value": 3}, "clear_at_least": {"type": "input_tokens",
                                                                                   "value": 5000}},
                   {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}}]}
APPLIED = {"applied_edits": [{"type": "clear_tool_uses_20250919", "cleared_tool_uses": 4,
                              "cleared_input_tokens": 41000}]}
TEXT = [{"type": "text", "text": "They found three papers."}]


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    a, b = servers
    config = {
        "providers": {
            "an": {"protocol": "anthropic_messages", "base_url": a.url, "api_key": "sk-up-anth"},
            "chat": {"protocol": "openai_chat", "base_url": b.url + "/v1", "api_key": "sk-up-chat"},
        },
        "models": {
            "claude": {"targets": [{"provider": "an", "model": "claude-up"}]},
            "gpt": {"targets": [{"provider": "chat", "model": "gpt-up"}]},
            "gpt-then-claude": {"targets": [{"provider": "chat", "model": "gpt-up"},
                                            {"provider": "an", "model": "claude-up"}]},
        },
    }
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


def _events(raw: bytes) -> List[Dict[str, Any]]:
    from routeplane.protocols.sse import iter_events

    return [json.loads(e.data) for e in iter_events([raw])]


def _edited_stream(content: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Anthropic's events for `content`; the edits applied ride in message_delta, beside `delta` and `usage`
    (BetaRawMessageDeltaEvent.context_management), and message_start's message has them null."""
    events = _sse(copy.deepcopy(content))
    events[0]["message"]["context_management"] = None
    events[-2]["context_management"] = APPLIED
    return events


def _sent_beta(sent: Any) -> str:
    return str(sent.headers.get("anthropic-beta") or "")


def test_context_management_reaches_anthropic_and_its_applied_edits_come_back(ups: Any,
                                                                              claude: anthropic.Anthropic) -> None:
    a, _ = ups
    a.enqueue(Reply.json({**_answer(copy.deepcopy(TEXT)), "context_management": APPLIED}))
    message = claude.beta.messages.create(model="claude", max_tokens=100, messages=[QUESTION],
                                          context_management=EDITS, betas=[BETA])  # type: ignore[arg-type]
    assert message.context_management is not None
    assert message.context_management.model_dump() == APPLIED
    sent = a.requests[-1]
    assert sent.json["context_management"] == EDITS and BETA in _sent_beta(sent)


def test_a_streamed_answer_keeps_its_applied_edits(ups: Any, claude: anthropic.Anthropic,
                                                   gateway: GatewayProcess) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_edited_stream(TEXT)))
    with claude.beta.messages.stream(model="claude", max_tokens=100, messages=[QUESTION],
                                     context_management=EDITS, betas=[BETA]) as stream:  # type: ignore[arg-type]
        message = stream.get_final_message()
    assert message.content[0].text == TEXT[0]["text"]  # type: ignore[union-attr]
    assert message.context_management is not None and message.context_management.model_dump() == APPLIED
    assert a.requests[-1].json["context_management"] == EDITS and BETA in _sent_beta(a.requests[-1])

    # On the wire: beside `delta`, where Anthropic puts it, not inside it.
    a.enqueue(Reply.anthropic_sse(_edited_stream(TEXT)))
    raw = requests.post(gateway.url + "/v1/messages", timeout=30, json={
        "model": "claude", "max_tokens": 100, "messages": [QUESTION], "context_management": EDITS, "stream": True,
    }, headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01", "anthropic-beta": BETA}).content
    delta = [e for e in _events(raw) if e["type"] == "message_delta"]
    assert len(delta) == 1 and delta[0]["context_management"] == APPLIED
    assert "context_management" not in delta[0]["delta"]


def test_an_answer_without_edits_has_none(ups: Any, claude: anthropic.Anthropic) -> None:
    a, _ = ups
    a.enqueue(Reply.json(_answer(copy.deepcopy(TEXT))))
    message = claude.beta.messages.create(model="claude", max_tokens=100, messages=[QUESTION])
    assert message.context_management is None
    assert "context_management" not in a.requests[-1].json


@pytest.mark.parametrize("stream", [False, True])
def test_context_management_bound_for_another_wire_is_a_400_naming_it(ups: Any, claude: anthropic.Anthropic,
                                                                      stream: bool) -> None:
    """It was dropped silently: the Chat upstream answered over the whole, unedited context."""
    a, b = ups
    kw: Dict[str, Any] = dict(model="gpt", max_tokens=100, messages=[QUESTION], context_management=EDITS,
                              betas=[BETA])
    with pytest.raises(anthropic.BadRequestError) as info:
        if stream:
            with claude.beta.messages.stream(**kw) as s:
                s.get_final_message()
        else:
            claude.beta.messages.create(**kw)
    error = info.value.body["error"]
    assert error["type"] == "invalid_request_error" and "'context_management'" in error["message"]
    assert not a.requests and not b.requests


def test_a_fallback_of_another_wire_is_skipped(ups: Any, claude: anthropic.Anthropic) -> None:
    a, b = ups
    a.enqueue(Reply.json({**_answer(copy.deepcopy(TEXT)), "context_management": APPLIED}))
    message = claude.beta.messages.create(model="gpt-then-claude", max_tokens=100, messages=[QUESTION],
                                          context_management=EDITS, betas=[BETA])  # type: ignore[arg-type]
    assert not b.requests and a.requests[-1].json["context_management"] == EDITS
    assert message.context_management is not None and message.context_management.model_dump() == APPLIED


MCP_USE = {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "echo", "server_name": "s", "input": {"a": 1}}


def test_an_mcp_tool_use_input_streams_as_anthropic_sends_it(ups: Any, claude: anthropic.Anthropic,
                                                               gateway: GatewayProcess) -> None:
    """Reported: the non-beta SDK's accumulator ends an mcp_tool_use block with `input == {}`. Anthropic starts
    the block with `"input": {}` and sends the input as input_json_delta; that SDK folds those deltas into
    tool_use and server_tool_use blocks only (it has no mcp_tool_use type), the beta SDK into mcp_tool_use
    too. The gateway relays the same: the beta client gets the input, the non-beta one what Anthropic gives."""
    a, _ = ups
    upstream = _sse([copy.deepcopy(MCP_USE)])
    a.enqueue(Reply.anthropic_sse(upstream))
    raw = requests.post(gateway.url + "/v1/messages", timeout=30, json={
        "model": "claude", "max_tokens": 100, "messages": [QUESTION], "stream": True,
    }, headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"}).content
    relayed = [e for e in _events(raw) if e["type"].startswith("content_block")]
    assert relayed[0]["content_block"] == {**MCP_USE, "input": {}}
    assert json.loads("".join(e["delta"]["partial_json"] for e in relayed[1:-1])) == MCP_USE["input"]
    assert [e["delta"]["type"] for e in relayed[1:-1]] == ["input_json_delta"] * (len(relayed) - 2)

    a.enqueue(Reply.anthropic_sse(copy.deepcopy(upstream)))
    with claude.beta.messages.stream(model="claude", max_tokens=100, messages=[QUESTION]) as stream:
        assert stream.get_final_message().content[0].input == MCP_USE["input"]  # type: ignore[union-attr]
