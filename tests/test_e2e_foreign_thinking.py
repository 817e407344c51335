"""E2E under gunicorn: an Anthropic client that turned thinking on, served by an OpenAI Responses upstream.

OpenAI's reasoning items often carry no summary (only `encrypted_content`). The
streamed answer used to open an empty `thinking` block for them, which the
non-streaming answer (and Anthropic itself) never has.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import anthropic
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply
from tests.support.wires import responses_sse

USAGE = {"input_tokens": 7, "output_tokens": 20, "total_tokens": 27, "output_tokens_details": {"reasoning_tokens": 12}}


def _reply(summary: List[str], stream: bool) -> Reply:
    reasoning = {"type": "reasoning", "id": "rs_up", "encrypted_content": "gAAAA-opaque",
                 "summary": [{"type": "summary_text", "text": t} for t in summary]}
    text_part = {"type": "output_text", "text": "42.", "annotations": []}
    message = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed", "content": [text_part]}
    done = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
            "output": [reasoning, message], "usage": USAGE}
    if not stream:
        return Reply.json(done)
    events: List[Dict[str, Any]] = [
        {"type": "response.created", "response": dict(done, status="in_progress", output=[], usage=None)},
        {"type": "response.output_item.added", "output_index": 0, "item": dict(reasoning, summary=[])},
    ]
    for i, t in enumerate(summary):
        events += [
            {"type": "response.reasoning_summary_part.added", "item_id": "rs_up", "output_index": 0,
             "summary_index": i, "part": {"type": "summary_text", "text": ""}},
            {"type": "response.reasoning_summary_text.delta", "item_id": "rs_up", "output_index": 0,
             "summary_index": i, "delta": t},
        ]
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
        {"type": "response.output_item.added", "output_index": 1, "item": dict(message, status="in_progress",
                                                                                content=[])},
        {"type": "response.content_part.added", "item_id": "msg_up", "output_index": 1, "content_index": 0,
         "part": dict(text_part, text="")},
        {"type": "response.output_text.delta", "item_id": "msg_up", "output_index": 1, "content_index": 0,
         "delta": "42."},
        {"type": "response.output_item.done", "output_index": 1, "item": message},
        {"type": "response.completed", "response": done},
    ]
    return responses_sse(events)


def upstream(req: RecordedRequest) -> Reply:
    summary = ["Thinking it over."] if req.json.get("model") == "with-summary" else []
    return _reply(summary, bool(req.json.get("stream")))


@pytest.fixture(scope="module")
def client() -> Iterator[anthropic.Anthropic]:
    up = FakeUpstream().start()
    up.default = upstream
    config = {
        "providers": {"resp": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "sk-up"}},
        "models": {"bare": {"targets": [{"provider": "resp", "model": "bare"}]},
                   "summarised": {"targets": [{"provider": "resp", "model": "with-summary"}]}},
    }
    gw = GatewayProcess(config).start()
    with anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0) as c:
        yield c
    gw.stop()
    up.stop()


THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
HI: Any = [{"role": "user", "content": "The answer?"}]


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_without_a_summary_is_no_thinking_block(client: anthropic.Anthropic, stream: bool) -> None:
    if stream:
        with client.messages.stream(model="bare", max_tokens=2048, thinking=THINKING, messages=HI) as s:
            events = list(s)
            msg = s.get_final_message()
        starts = [e.content_block.type for e in events if e.type == "content_block_start"]
        assert starts == ["text"]
    else:
        msg = client.messages.create(model="bare", max_tokens=2048, thinking=THINKING, messages=HI)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "42."


@pytest.mark.parametrize("stream", [False, True])
def test_a_summary_is_shown_as_thinking_when_asked_for(client: anthropic.Anthropic, stream: bool) -> None:
    if stream:
        with client.messages.stream(model="summarised", max_tokens=2048, thinking=THINKING, messages=HI) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(model="summarised", max_tokens=2048, thinking=THINKING, messages=HI)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Thinking it over." and msg.content[1].text == "42."
