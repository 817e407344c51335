"""An upstream's 4xx reaches an OpenAI client with its own `code` and `param` (agents read
`context_length_exceeded` to compact their history); the gateway's credential errors and 5xx do not
carry them, and nothing key-shaped leaves in them."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import Reply

KEY = "sk-upstream-secret-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]
TOO_LONG = {"error": {"message": "This model's maximum context length is 128000 tokens.",
                      "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}


def _gateway(url: str, protocol: str = "openai_chat") -> Gateway:
    config: Dict[str, Any] = {
        "providers": {"up": {"protocol": protocol, "base_url": url + ("/v1" if protocol != "gemini" else ""),
                             "api_key": KEY}},
        "models": {"m": {"targets": [{"provider": "up", "model": "gpt-4o"}]}}}
    return Gateway(config=config, executor=HttpExecutor())


@pytest.mark.parametrize("wire, body", [
    ("openai_chat", {"model": "m", "messages": HI}),
    ("openai_responses", {"model": "m", "input": "hi"}),
])
def test_an_upstream_4xx_keeps_its_code_and_param(up: Any, wire: str, body: Dict[str, Any]) -> None:
    up.enqueue(Reply.json(TOO_LONG, status=400))
    r = _gateway(up.url).request(body, wire=wire)
    assert r.status == 400
    err = r.json["error"]
    assert (err["code"], err["param"], err["type"]) == ("context_length_exceeded", "messages", "invalid_request_error")
    assert "maximum context length" in err["message"]


def test_the_fields_are_scrubbed_and_not_kept_for_the_gateways_own_faults(up: Any) -> None:
    gw = _gateway(up.url)
    leaky = {"error": {"message": "bad", "type": "invalid_request_error", "param": f"key {KEY}",
                       "code": {"nested": "object"}}}
    up.enqueue(Reply.json(leaky, status=400))
    r = gw.request({"model": "m", "messages": HI})
    assert r.status == 400 and KEY not in r.body.decode()
    assert r.json["error"]["code"] is None and r.json["error"]["param"] == "key [redacted]"
    # The gateway's credential rejected: the client's 502 names no upstream field.
    up.enqueue(Reply.json({"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                                     "param": None, "code": "invalid_api_key"}}, status=401))
    r = gw.request({"model": "m", "messages": HI})
    assert r.status == 502 and r.json["error"]["code"] != "invalid_api_key" and r.json["error"]["param"] is None


def test_an_anthropic_client_gets_its_own_shape(up: Any) -> None:
    up.enqueue(Reply.json(TOO_LONG, status=400))
    r = _gateway(up.url).request({"model": "m", "max_tokens": 8, "messages": HI}, wire="anthropic_messages")
    assert r.status == 400 and r.json == {"type": "error", "error": {"type": "invalid_request_error",
                                                                     "message": r.json["error"]["message"]},
                                          "request_id": r.headers["request-id"]}


def test_count_tokens_sends_the_key_in_the_providers_configured_header(up: Any) -> None:
    """A provider whose key goes in its own header (`auth_header`, e.g. a proxy in front of Anthropic)
    is counted with it, as its messages are; before, count_tokens sent the default x-api-key only."""
    config = {"providers": {"an": {"protocol": "anthropic_messages", "base_url": up.url, "api_key": KEY,
                                   "auth_header": "api-key", "auth_prefix": ""}},
              "models": {"m": {"targets": [{"provider": "an", "model": "claude-x"}]}}}
    up.enqueue(Reply.json({"input_tokens": 7}))
    r = Gateway(config=config, executor=HttpExecutor()).request(
        {"model": "m", "messages": HI}, path="/v1/messages/count_tokens")
    assert r.status == 200 and r.json == {"input_tokens": 7}
    [sent] = up.requests
    assert sent.path == "/v1/messages/count_tokens" and sent.headers["api-key"] == KEY
    assert "x-api-key" not in {k.lower() for k in sent.headers}


def test_a_gemini_prompt_over_the_window_is_context_length_exceeded_for_an_openai_client(up: Any) -> None:
    up.enqueue(Reply.json({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                                     "The input token count (1200000) exceeds the maximum number of tokens "
                                     "allowed (1048576)."}}, status=400))
    r = _gateway(up.url, protocol="gemini").request({"model": "m", "messages": HI})
    assert r.status == 400 and r.json["error"]["code"] == "context_length_exceeded"
    up.enqueue(Reply.json({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad field"}}, status=400))
    r = _gateway(up.url, protocol="gemini").request({"model": "m", "messages": HI})
    assert r.status == 400 and r.json["error"]["code"] is None
