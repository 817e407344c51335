"""E2E under gunicorn: OpenAI Chat clients see a model's reasoning only when the operator opted in.

Chat Completions has no reasoning field (translation.md §7.5). With `server.openai_chat_reasoning`
set, reasoning from any upstream wire goes out in the field DeepSeek/vLLM clients read
(`reasoning_content`) or the one OpenRouter clients read (`reasoning`); unset, it is left out.
Before, there was no way to show it: a DeepSeek-style upstream's reasoning_content was dropped.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest
from openai import OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk

THOUGHT = "The user greets; greet back."
USAGE = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}


def _anthropic(stream: bool) -> Reply:
    blocks = [{"type": "thinking", "thinking": THOUGHT, "signature": "sig-1"}, {"type": "text", "text": "Hello!"}]
    if not stream:
        return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "up", "content": blocks,
                           "stop_reason": "end_turn", "stop_sequence": None,
                           "usage": {"input_tokens": 5, "output_tokens": 9}})
    start = {"id": "msg_up", "type": "message", "role": "assistant", "model": "up", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}
    return Reply.anthropic_sse([
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": THOUGHT[:10]}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": THOUGHT[10:]}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-1"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello!"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ])


def _deepseek(stream: bool) -> Reply:
    if not stream:
        msg = {"role": "assistant", "content": "Hello!", "reasoning_content": THOUGHT}
        return Reply.json({"id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": "up",
                           "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}], "usage": USAGE})
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                      openai_chunk({"reasoning_content": THOUGHT[:10]}),
                      openai_chunk({"reasoning_content": THOUGHT[10:]}),
                      openai_chunk({"content": "Hello!"}), openai_chunk({}, "stop"), openai_chunk(None, usage=USAGE)])


def answer(req: RecordedRequest) -> Reply:
    stream = bool(req.json.get("stream"))
    return _anthropic(stream) if req.path == "/v1/messages" else _deepseek(stream)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = answer
    yield up
    up.stop()


def _gateway(upstream: FakeUpstream, shown: str) -> GatewayProcess:
    config: Dict[str, Any] = {
        "server": {"openai_chat_reasoning": shown},
        "providers": {"an": {"protocol": "anthropic_messages", "base_url": upstream.url, "api_key": "sk-up-an"},
                      "ds": {"protocol": "openai_chat", "base_url": upstream.url + "/v1", "api_key": "sk-up-ds"}},
        "models": {"via-an": {"targets": [{"provider": "an", "model": "up"}]},
                   "via-ds": {"targets": [{"provider": "ds", "model": "up"}]}},
    }
    return GatewayProcess(config).start()


@pytest.fixture(scope="module", params=["reasoning_content", "reasoning", "none"])
def shown(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[Any]:
    gw = _gateway(upstream, request.param)
    client = OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0)
    yield request.param, client
    client.close()
    gw.stop()


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("model", ["via-an", "via-ds"])
def test_json_answer_shows_reasoning_in_the_chosen_field(shown: Any, model: str) -> None:
    field, client = shown
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI, reasoning_effort="low")
    message = json.loads(raw.text)["choices"][0]["message"]
    assert message["content"] == "Hello!"
    if field == "none":
        assert "reasoning_content" not in message and "reasoning" not in message
    else:
        assert message[field] == THOUGHT
        assert raw.parse().choices[0].message.model_extra[field] == THOUGHT  # what an SDK user reads


@pytest.mark.parametrize("model", ["via-an", "via-ds"])
def test_stream_shows_reasoning_deltas_before_the_text(shown: Any, model: str) -> None:
    field, client = shown
    chunks = list(client.chat.completions.create(model=model, messages=HI, reasoning_effort="low", stream=True))
    deltas: List[Dict[str, Any]] = [c.choices[0].delta.model_dump(exclude_none=True) for c in chunks if c.choices]
    reasoning = "".join(d.get(field, "") for d in deltas) if field != "none" else ""
    text = "".join(d.get("content", "") for d in deltas)
    assert text == "Hello!" and reasoning == (THOUGHT if field != "none" else "")
    if field == "none":
        assert not any("reasoning_content" in d or "reasoning" in d for d in deltas)
    else:
        first_text = next(i for i, d in enumerate(deltas) if d.get("content"))
        assert all(i < first_text for i, d in enumerate(deltas) if d.get(field))


def test_history_with_shown_reasoning_goes_back_without_it(shown: Any, upstream: FakeUpstream) -> None:
    """A client that echoes the whole assistant message back (reasoning field included) must not send
    it upstream: DeepSeek answers 400 to reasoning_content in input messages."""
    field, client = shown
    field = "reasoning_content" if field == "none" else field  # a client may echo it even when not shown
    history = HI + [{"role": "assistant", "content": "Hello!", field: THOUGHT}, {"role": "user", "content": "again"}]
    client.chat.completions.create(model="via-ds", messages=history)
    sent = upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert all("reasoning_content" not in m and "reasoning" not in m for m in sent)
