"""An answer's own ending fields (Anthropic `stop_details`, `container`) are scanned like its other fields.

A streamed Anthropic answer carries them on its Finish (message_delta), an unstreamed one in
Generation.extras: a real local fake upstream speaks the wire, the gateway decodes it, and the
client (the official SDK where it reads the field) gets them back redacted, or the wire's error.
"""

from __future__ import annotations

from typing import Any, Dict, List

import anthropic
import httpx2
import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream, Reply

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"
REDACT: Dict[str, Any] = {"downgoing": {"api_keys": "redact"}}
BLOCK: Dict[str, Any] = {"downgoing": {"api_keys": "block"}}
# An id the client sends back on the next turn: read as in a provider's block, never (a detector for it here).
IDS: Dict[str, Any] = {"custom_patterns": [{"name": "box", "regex": r"container_\w+"}],
                       "custom_downgoing": {"box": "redact"}}
CONTAINER = {"id": "container_011CX", "expires_at": "2026-11-23T12:20:00Z"}
DETAILS = {"type": "refusal", "category": "cyber", "explanation": f"The prompt held {KEY}."}
BODY = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "go"}]}
USAGE = {"input_tokens": 3, "output_tokens": 2}


def sse(**ending: Any) -> Reply:
    """A streamed refusal whose message_delta carries `ending` (stop_details, container)."""
    start = {"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}
    return Reply.anthropic_sse([
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "I can't help."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None, **ending},
         "usage": {"output_tokens": 2}},
        {"type": "message_stop"}])


def whole(**ending: Any) -> Reply:
    return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up",
                       "content": [{"type": "text", "text": "I can't help."}], "stop_reason": "refusal",
                       "stop_sequence": None, "usage": USAGE, **ending})


def gateway(up: FakeUpstream, options: Dict[str, Any]) -> Gateway:
    config = {"providers": {"an": {"protocol": "anthropic_messages", "base_url": up.url, "api_key": "k-an"}},
              "models": {"claude": {"targets": [{"provider": "an", "model": "claude-up"}]}}}
    return Gateway(config=config, executor=HttpExecutor(), plugins=[GuardrailsPlugin(**options)])


def sdk(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url="http://gateway", api_key="client-key", max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))


def message_delta(events: List[Any]) -> Dict[str, Any]:
    return next(e for e in events if isinstance(e, dict) and e.get("type") == "message_delta")


def test_a_streams_stop_details_reach_the_sdk_redacted(upstream: FakeUpstream) -> None:
    upstream.enqueue(sse(stop_details=DETAILS))
    gw = gateway(upstream, REDACT)
    with sdk(gw).messages.stream(**BODY) as stream:  # type: ignore[arg-type]
        message = stream.get_final_message()
    assert message.stop_reason == "refusal" and message.content[0].text == "I can't help."
    assert message.stop_details is not None and message.stop_details.category == "cyber"
    assert message.stop_details.explanation == f"The prompt held {RED}."
    upstream.enqueue(sse(stop_details=DETAILS))
    raw = gw.request({**BODY, "stream": True}, path="/v1/messages")
    assert KEY.encode() not in raw.body
    assert raw.settlements[0].metadata["guardrails"] == {"downgoing.api_keys.redact": 1}


def test_a_streams_stop_details_block_with_the_wires_error_frame(upstream: FakeUpstream) -> None:
    upstream.enqueue(sse(stop_details=DETAILS))
    result = gateway(upstream, BLOCK).request({**BODY, "stream": True}, path="/v1/messages")
    assert KEY.encode() not in result.body
    assert not any(isinstance(e, dict) and e.get("type") == "message_delta" for e in result.sse)
    errors = [e for e in result.sse if isinstance(e, dict) and e.get("type") == "error"]
    assert errors and errors[0]["error"]["message"] == (
        "The response was blocked by a guardrail (api_keys in response stop_details).")
    assert result.text == "I can't help." and result.settlements[0].outcome == "aborted"


def test_an_answers_stop_details_are_redacted_or_block(upstream: FakeUpstream) -> None:
    upstream.enqueue(whole(stop_details=DETAILS))
    message = sdk(gateway(upstream, REDACT)).messages.create(**BODY)  # type: ignore[arg-type]
    assert message.stop_details is not None and message.stop_details.explanation == f"The prompt held {RED}."
    upstream.enqueue(whole(stop_details=DETAILS))
    result = gateway(upstream, BLOCK).request(BODY, path="/v1/messages")
    assert result.status == 400 and KEY.encode() not in result.body
    assert result.json["error"]["message"] == (
        "The response was blocked by a guardrail (api_keys in response stop_details).")


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_containers_id_passes_unread_as_in_a_providers_block(upstream: FakeUpstream, stream: bool) -> None:
    # Its expiry is text: scanned (a match there is redacted); its id goes back up on the next turn.
    container = {**CONTAINER, "expires_at": "container_x will expire"}
    upstream.enqueue(sse(container=container) if stream else whole(container=container))
    result = gateway(upstream, IDS).request({**BODY, "stream": stream}, path="/v1/messages")
    got = message_delta(result.sse)["delta"]["container"] if stream else result.json["container"]
    assert got == {"id": "container_011CX", "expires_at": "[REDACTED:box] will expire"}


def test_a_stream_for_another_wires_client_is_not_stopped_by_fields_it_never_gets(upstream: FakeUpstream) -> None:
    upstream.enqueue(sse(stop_details=DETAILS))
    result = gateway(upstream, BLOCK).request({"model": "claude", "stream": True,
                                               "messages": [{"role": "user", "content": "go"}]})
    assert result.status == 200 and result.text == "I can't help." and KEY.encode() not in result.body
    assert result.settlements[0].outcome == "success"
