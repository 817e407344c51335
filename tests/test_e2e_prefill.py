"""E2E under gunicorn: an Anthropic client's prefill (a trailing assistant message) is honoured or refused.

Anthropic continues a trailing assistant message; OpenAI Chat, OpenAI Responses and Gemini read it
as a finished turn and answer anew (translation.md §2, §12.29). Before, the prefill went to those
upstreams as ordinary history, so a client that prefilled `{` to force JSON got an answer that was
neither a continuation nor asked for.
"""

from __future__ import annotations

from typing import Iterator

import anthropic
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply

PREFILL = [{"role": "user", "content": "Give me a JSON object with one key."},
           {"role": "assistant", "content": "{"}]


def _anthropic_reply(req: RecordedRequest) -> Reply:
    assert req.path == "/v1/messages", req.path
    return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "up",
                       "content": [{"type": "text", "text": '"a": 1}'}], "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 5}})


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = _anthropic_reply
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    providers = {
        "chat": {"protocol": "openai_chat", "base_url": upstream.url + "/v1", "api_key": "sk-up-chat"},
        "resp": {"protocol": "openai_responses", "base_url": upstream.url + "/v1", "api_key": "sk-up-resp"},
        "gem": {"protocol": "gemini", "base_url": upstream.url, "api_key": "up-gem"},
        "anth": {"protocol": "anthropic_messages", "base_url": upstream.url, "api_key": "sk-up-anth"},
    }
    models = {f"via-{p}": {"targets": [{"provider": p, "model": "up"}]} for p in providers}
    models["chat-then-anth"] = {"targets": [{"provider": "chat", "model": "up"}, {"provider": "anth", "model": "up"}]}
    models["anth-then-chat"] = {"targets": [{"provider": "anth", "model": "up"}, {"provider": "chat", "model": "up"}]}
    config = {"providers": providers, "models": models}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["via-chat", "via-resp", "via-gem"])
def test_prefill_to_a_wire_that_cannot_continue_it_is_a_400(client: anthropic.Anthropic, upstream: FakeUpstream,
                                                            model: str, stream: bool) -> None:
    before = len(upstream.requests)
    with pytest.raises(anthropic.BadRequestError) as exc:
        if stream:
            with client.messages.stream(model=model, max_tokens=50, messages=PREFILL) as s:
                s.get_final_message()
        else:
            client.messages.create(model=model, max_tokens=50, messages=PREFILL)
    body = exc.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "assistant prefill" in body["error"]["message"] and "Anthropic upstream" in body["error"]["message"]
    assert len(upstream.requests) == before, "nothing may reach an upstream that would answer something else"


def test_prefill_to_anthropic_is_continued(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    out = client.messages.create(model="via-anth", max_tokens=50, messages=PREFILL)
    assert out.content[0].text == '"a": 1}'
    sent = upstream.requests[-1].json["messages"]
    assert sent[-1]["role"] == "assistant" and sent[-1]["content"] in ("{", [{"type": "text", "text": "{"}])


def test_a_conversation_ending_with_the_user_still_crosses_wires(client: anthropic.Anthropic,
                                                                 upstream: FakeUpstream) -> None:
    history = PREFILL + [{"role": "user", "content": "Now another one."}]
    upstream.enqueue(Reply.json({"id": "c1", "object": "chat.completion", "created": 1, "model": "up",
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}))
    out = client.messages.create(model="via-chat", max_tokens=50, messages=history)
    assert out.content[0].text == "{}"
    assert [m["role"] for m in upstream.requests[-1].json["messages"]] == ["user", "assistant", "user"]


def test_a_fallback_that_cannot_continue_a_prefill_is_skipped(client: anthropic.Anthropic,
                                                               upstream: FakeUpstream) -> None:
    """Before, the Chat target of [chat, anth] refused the whole request (no call at all), and the
    Chat fallback of [anth, chat] turned Anthropic's 529 into a non-retryable 400."""
    before = len(upstream.requests)
    out = client.messages.create(model="chat-then-anth", max_tokens=50, messages=PREFILL)
    assert out.content[0].text == '"a": 1}'
    assert [r.path for r in upstream.requests[before:]] == ["/v1/messages"]

    upstream.enqueue(Reply.json({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                                status=529))
    before = len(upstream.requests)
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model="anth-then-chat", max_tokens=50, messages=PREFILL)
    assert exc.value.status_code == 529 and exc.value.body["error"]["type"] == "overloaded_error"
    assert [r.path for r in upstream.requests[before:]] == ["/v1/messages"], "the Chat fallback is never called"

