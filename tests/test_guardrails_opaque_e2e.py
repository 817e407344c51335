"""The guardrails on a provider's server-side tool blocks and citations, end to end: an Anthropic upstream's
web_fetch_tool_result and citations holding a secret, through the gateway under gunicorn, to the anthropic SDK
(streamed and not), and the same blocks sent back up in the next turn's history."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"

USE = {"type": "server_tool_use", "id": "srvtoolu_01Fetch", "name": "web_fetch",
       "input": {"url": "https://example.com/notes"}}
FETCH = {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_01Fetch",
         "content": {"type": "web_fetch_result", "url": "https://example.com/notes",
                     "retrieved_at": "2026-01-01T00:00:00Z",
                     "content": {"type": "document", "title": "Notes",
                                 "source": {"type": "text", "media_type": "text/plain",
                                            "data": f"deploy notes\nAPI_KEY={KEY}\n"}}}}
CITATION = {"type": "char_location", "cited_text": f"API_KEY={KEY}", "document_index": 0,
            "document_title": "Notes", "start_char_index": 13, "end_char_index": 69}
CITED = {"type": "text", "text": "The notes hold an API key.", "citations": [CITATION]}
USAGE = {"input_tokens": 10, "output_tokens": 20, "server_tool_use": {"web_fetch_requests": 1}}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"database": {"url": f"sqlite:///{tmp_path_factory.mktemp('guardrails-opaque')}/rp.db"},
              "providers": {"an": {"protocol": "anthropic_messages", "base_url": fake.url, "api_key": "sk-up",
                                   "timeouts": {"connect": 2.0, "read": 5.0}}},
              "models": {"claude": {"targets": [{"provider": "an", "model": "claude-up"}]}},
              "plugins": {"guardrails": {"downgoing": {"api_keys": "redact"}, "upgoing": {"api_keys": "redact"}}}}
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


def _message(content: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up", "content": content,
            "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE}


def _sse(content: List[Dict[str, Any]]) -> Reply:
    """The answer as Anthropic streams it: blocks with `input` open empty and get it as one input_json_delta,
    result blocks open whole, text gets its citations as citations_delta."""
    events: List[Dict[str, Any]] = [{"type": "message_start", "message": {**_message([]), "stop_reason": None,
                                                                          "usage": {"input_tokens": 10,
                                                                                    "output_tokens": 0}}}]
    for i, block in enumerate(content):
        if block["type"] == "server_tool_use":
            events += [{"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}]
        elif block["type"] == "text":
            events.append({"type": "content_block_start", "index": i,
                           "content_block": {"type": "text", "text": "", "citations": []}})
            events += [{"type": "content_block_delta", "index": i, "delta": {"type": "citations_delta",
                                                                             "citation": c}}
                       for c in block.get("citations", [])]
            events.append({"type": "content_block_delta", "index": i,
                           "delta": {"type": "text_delta", "text": block["text"]}})
        else:
            events.append({"type": "content_block_start", "index": i, "content_block": block})
        events.append({"type": "content_block_stop", "index": i})
    events += [{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 20, "server_tool_use": {"web_fetch_requests": 1}}},
               {"type": "message_stop"}]
    return Reply.anthropic_sse(events)


def _check(blocks: List[Any]) -> None:
    use, fetch, text = blocks
    assert (use.type, use.name, use.input) == ("server_tool_use", "web_fetch", USE["input"])
    assert fetch.type == "web_fetch_tool_result" and fetch.tool_use_id == "srvtoolu_01Fetch"
    assert fetch.content.content.source.data == f"deploy notes\nAPI_KEY={RED}\n"
    assert fetch.content.url == "https://example.com/notes"
    assert text.text == CITED["text"]
    (citation,) = text.citations
    assert citation.cited_text == f"API_KEY={RED}" and citation.document_title == "Notes"


def test_streamed_web_fetch_result_and_citation_are_redacted(up: FakeUpstream, claude: Any) -> None:
    up.enqueue(_sse([USE, FETCH, CITED]))
    with claude.messages.stream(model="claude", max_tokens=64,
                                messages=[{"role": "user", "content": "read my notes"}]) as stream:
        message = stream.get_final_message()
    _check(message.content)
    assert message.stop_reason == "end_turn"


def test_web_fetch_result_and_citation_are_redacted(up: FakeUpstream, claude: Any) -> None:
    up.enqueue(Reply.json(_message([USE, FETCH, CITED])))
    message = claude.messages.create(model="claude", max_tokens=64,
                                     messages=[{"role": "user", "content": "read my notes"}])
    _check(message.content)


def test_history_sent_back_is_redacted_before_the_upstream(up: FakeUpstream, claude: Any) -> None:
    up.enqueue(Reply.json(_message([{"type": "text", "text": "ok"}])))
    history = [{"role": "user", "content": "read my notes"},
               {"role": "assistant", "content": copy.deepcopy([USE, FETCH, CITED])},
               {"role": "user", "content": "thanks"}]
    assert claude.messages.create(model="claude", max_tokens=64, messages=history).content[0].text == "ok"
    sent = up.requests[-1].json["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["server_tool_use", "web_fetch_tool_result", "text"]
    assert sent[0] == USE
    assert sent[1]["content"]["content"]["source"]["data"] == f"deploy notes\nAPI_KEY={RED}\n"
    assert sent[2]["citations"][0]["cited_text"] == f"API_KEY={RED}"
    assert KEY not in up.requests[-1].body.decode()
