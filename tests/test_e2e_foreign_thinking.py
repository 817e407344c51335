"""E2E under gunicorn: an Anthropic client that turned thinking on, served by an OpenAI Responses upstream.

OpenAI's reasoning items often carry no summary (only `encrypted_content`). The
streamed answer used to open an empty `thinking` block for them that the
non-streaming answer did not have; both now show the same block. The reasoning
comes back to the client in the block's signature (protocols/carried.py), so
the next turn of a tool loop sends OpenAI its reasoning item again, as OpenAI
asks of stateless callers; without encrypted content there is nothing to carry
and nothing to show.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import anthropic
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply
from tests.support.wires import responses_sse

USAGE = {"input_tokens": 7, "output_tokens": 20, "total_tokens": 27, "output_tokens_details": {"reasoning_tokens": 12}}


CALL = {"type": "function_call", "id": "fc_up", "call_id": "call_up", "name": "lookup", "arguments": '{"q":"x"}',
        "status": "completed"}


def _reply(summary: List[str], stream: bool, encrypted: bool = True, call: bool = False) -> Reply:
    reasoning: Dict[str, Any] = {"type": "reasoning", "id": "rs_up",
                                 "summary": [{"type": "summary_text", "text": t} for t in summary]}
    if encrypted:
        reasoning["encrypted_content"] = "gAAAA-opaque"
    text_part = {"type": "output_text", "text": "42.", "annotations": []}
    message = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed", "content": [text_part]}
    second = CALL if call else message
    done = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
            "output": [reasoning, second], "usage": USAGE}
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
    events.append({"type": "response.output_item.done", "output_index": 0, "item": reasoning})
    if call:
        events += [
            {"type": "response.output_item.added", "output_index": 1, "item": dict(CALL, arguments="",
                                                                                    status="in_progress")},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_up", "output_index": 1,
             "delta": CALL["arguments"]},
            {"type": "response.output_item.done", "output_index": 1, "item": CALL},
        ]
    else:
        events += [
            {"type": "response.output_item.added", "output_index": 1, "item": dict(message, status="in_progress",
                                                                                    content=[])},
            {"type": "response.content_part.added", "item_id": "msg_up", "output_index": 1, "content_index": 0,
             "part": dict(text_part, text="")},
            {"type": "response.output_text.delta", "item_id": "msg_up", "output_index": 1, "content_index": 0,
             "delta": "42."},
            {"type": "response.output_item.done", "output_index": 1, "item": message},
        ]
    events.append({"type": "response.completed", "response": done})
    return responses_sse(events)


def upstream(req: RecordedRequest) -> Reply:
    model = req.json.get("model")
    summary = ["Thinking it over."] if model == "with-summary" else []
    return _reply(summary, bool(req.json.get("stream")), encrypted=model != "plain", call=model == "tools")


UP = FakeUpstream()


@pytest.fixture(scope="module")
def client() -> Iterator[anthropic.Anthropic]:
    up = UP.start()
    up.default = upstream
    config = {
        "providers": {"resp": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "sk-up"}},
        "models": {"bare": {"targets": [{"provider": "resp", "model": "bare"}]},
                   "plain": {"targets": [{"provider": "resp", "model": "plain"}]},
                   "tools": {"targets": [{"provider": "resp", "model": "tools"}]},
                   "summarised": {"targets": [{"provider": "resp", "model": "with-summary"}]}},
    }
    gw = GatewayProcess(config).start()
    with anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0) as c:
        yield c
    gw.stop()
    up.stop()


THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
HI: Any = [{"role": "user", "content": "The answer?"}]


def _message(client: anthropic.Anthropic, model: str, stream: bool, messages: Any = HI) -> Any:
    if stream:
        with client.messages.stream(model=model, max_tokens=2048, thinking=THINKING, messages=messages) as s:
            events = list(s)
            msg = s.get_final_message()
        starts = [e.content_block.type for e in events if e.type == "content_block_start"]
        assert starts == [b.type for b in msg.content]
        return msg
    return client.messages.create(model=model, max_tokens=2048, thinking=THINKING, messages=messages)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_without_encrypted_content_or_summary_is_no_thinking_block(client: anthropic.Anthropic,
                                                                            stream: bool) -> None:
    msg = _message(client, "plain", stream)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "42."


def test_reasoning_without_a_summary_is_an_empty_thinking_block_the_same_streamed_or_not(
        client: anthropic.Anthropic) -> None:
    whole, streamed = _message(client, "bare", False), _message(client, "bare", True)
    for msg in (whole, streamed):
        assert [b.type for b in msg.content] == ["thinking", "text"] and msg.content[1].text == "42."
        assert msg.content[0].thinking == "" and msg.content[0].signature
    assert whole.content[0].signature == streamed.content[0].signature


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_sends_openai_its_reasoning_item_back(client: anthropic.Anthropic, stream: bool) -> None:
    """OpenAI continues a tool loop from its reasoning only when the reasoning item (its id and
    encrypted_content) precedes the function call again; a stateless caller must send it back."""
    first = _message(client, "tools", stream)
    assert [b.type for b in first.content] == ["thinking", "tool_use"] and first.stop_reason == "tool_use"
    turn: Any = [b.model_dump(exclude_none=True) for b in first.content]
    history: Any = HI + [{"role": "assistant", "content": turn},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id,
                                                       "content": "found"}]}]
    sent = len(UP.requests)
    _message(client, "tools", stream, history)
    items = UP.requests[sent].json["input"]
    kinds = [i.get("type", "message") for i in items]
    assert kinds == ["message", "reasoning", "function_call", "function_call_output"], items
    assert items[1]["id"] == "rs_up" and items[1]["encrypted_content"] == "gAAAA-opaque"
    assert items[2]["call_id"] == "call_up"
    assert "reasoning.encrypted_content" in UP.requests[sent].json.get("include", [])


@pytest.mark.parametrize("stream", [False, True])
def test_a_summary_is_shown_as_thinking_when_asked_for(client: anthropic.Anthropic, stream: bool) -> None:
    msg = _message(client, "summarised", stream)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Thinking it over." and msg.content[1].text == "42."


def test_reasoning_is_not_shown_to_a_client_that_did_not_ask_for_thinking(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="bare", max_tokens=2048, messages=HI)
    assert [b.type for b in msg.content] == ["text"]
