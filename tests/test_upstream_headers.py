"""What reaches an upstream's headers: never framing headers or fields a client smuggled into the body."""

from __future__ import annotations

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import Reply, openai_completion

ANTHROPIC_ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 3, "output_tokens": 1}}


def config(url: str, protocol: str, headers: dict = None) -> dict:
    provider = {"protocol": protocol, "base_url": url + "/v1", "api_key": "sk-up-aaaaaaaaaaaa"}
    if headers:
        provider["headers"] = headers
    return {"providers": {"up": provider}, "models": {"m": {"targets": [{"provider": "up", "model": "x"}]}}}


SMUGGLED = {"Host": "evil.example", "X-Injected": "1", "Transfer-Encoding": "chunked", "x-api-key": "sk-attacker"}


def test_underscore_fields_from_a_client_body_never_become_upstream_headers(upstream):
    gw = Gateway(executor=HttpExecutor(), config=config(upstream.url, "anthropic_messages"))
    for wire, path, body in (
        ("anthropic_messages", "/v1/messages", {"model": "m", "max_tokens": 5, "_anthropic_headers": SMUGGLED,
                                                 "messages": [{"role": "user", "content": "hi"}]}),
        ("openai_chat", "/v1/chat/completions", {"model": "m", "_anthropic_headers": SMUGGLED,
                                                 "messages": [{"role": "user", "content": "hi"}]}),
    ):
        upstream.enqueue(Reply.json(ANTHROPIC_ANSWER))
        r = gw.request(body, wire=wire, path=path)
        assert r.status == 200, r.body
        sent = {k.lower(): v for k, v in upstream.requests[-1].headers.items()}
        assert "x-injected" not in sent and sent["host"].startswith("127.0.0.1")
        assert sent["x-api-key"] == "sk-up-aaaaaaaaaaaa" and "transfer-encoding" not in sent
        assert "_anthropic_headers" not in (upstream.requests[-1].json or {})


def test_configured_framing_headers_are_not_sent_and_a_folded_value_is_refused(upstream):
    gw = Gateway(executor=HttpExecutor(), config=config(upstream.url, "openai_chat", {
        "Host": "other.example", "Content-Length": "1", "Connection": "close", "X-Team": "blue"}))
    upstream.enqueue(Reply.json(openai_completion("ok")))
    r = gw.chat("hi", model="m")
    assert r.status == 200, r.body
    sent = {k.lower(): v for k, v in upstream.requests[-1].headers.items()}
    assert sent["x-team"] == "blue" and sent["host"].startswith("127.0.0.1") and sent["content-length"] != "1"
    assert sent.get("connection", "").lower() != "close"

    before = len(upstream.requests)
    gw = Gateway(executor=HttpExecutor(), config=config(upstream.url, "openai_chat", {
        "X-Team": "blue\r\n X-Injected: 1"}))
    r = gw.chat("hi", model="m")
    assert r.status == 502 and "not a valid HTTP header" in r.body.decode()
    assert len(upstream.requests) == before  # nothing was sent


def test_an_upstream_redirect_is_not_followed_and_says_so(upstream):
    gw = Gateway(executor=HttpExecutor(), config=config(upstream.url, "openai_chat"))
    upstream.enqueue(Reply(307, {"Location": "http://127.0.0.1:9/elsewhere"}))
    r = gw.chat("hi", model="m")
    assert r.status == 502 and "redirect (HTTP 307)" in r.body.decode()
    assert len(upstream.requests) == 1  # the Location was not visited
