"""The /v1/messages blueprint: Anthropic-shaped errors for every failure, auth pass-through, streams, count_tokens."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, List

import pytest

from routeplane.errors import UpstreamError, UpstreamStatusError
from routeplane.hooks.language_model import HookDecision, PreRequestHook, RouteHook
from routeplane.language_model.types import Finish, FinishReason, ResponseStart, TextDelta, TextStart
from routeplane.testing import Gateway

BODY = {"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}


def _error(result: Any) -> dict:
    body = result.json
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return body["error"]


class RecordCredential(PreRequestHook):
    def __init__(self) -> None:
        self.seen: List[Any] = []

    def check(self, ctx: Any) -> HookDecision:
        self.seen.append((ctx.credential, ctx.inbound_protocol, "x-api-key" in ctx.headers))
        return HookDecision.allow()


def test_plain_message_and_credential_from_x_api_key_or_bearer():
    hook = RecordCredential()
    gw = Gateway(hooks=[hook])
    r = gw.request(BODY, path="/v1/messages", headers={"x-api-key": "k1"})
    assert r.status == 200 and r.json["content"] == [{"type": "text", "text": "You said: hello"}]
    assert r.json["stop_reason"] == "end_turn" and r.headers["request-id"] == r.headers["x-request-id"]
    gw.request(BODY, path="/v1/messages", headers={"Authorization": "Bearer k2"})
    # The credential reaches auth hooks; the secret header itself is never copied into the context.
    assert hook.seen == [("k1", "anthropic_messages", False), ("k2", "anthropic_messages", False)]
    assert r.settlements[0].inbound_protocol == "anthropic_messages"


@pytest.mark.parametrize("raw, content_type, status, etype", [
    (b"{not json", "application/json", 400, "invalid_request_error"),
    (b"\xff\xfe", "application/json", 400, "invalid_request_error"),
    (b"[]", "application/json", 400, "invalid_request_error"),
    (json.dumps(BODY).encode(), "text/plain", 415, "invalid_request_error"),
    (b"", "application/json", 400, "invalid_request_error"),
])
def test_bad_bodies_are_anthropic_errors(raw, content_type, status, etype):
    gw = Gateway()
    resp = gw.client.post("/v1/messages", data=raw, content_type=content_type)
    assert resp.status_code == status
    body = resp.get_json()
    assert body["type"] == "error" and body["error"]["type"] == etype
    resp.close()


def test_oversized_body_is_413_request_too_large():
    gw = Gateway(config={"server": {"max_body_bytes": 2048}, "providers": {"mock": {"protocol": "mock"}},
                         "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}})
    big = dict(BODY, messages=[{"role": "user", "content": "x" * 5000}])
    r = gw.request(big, path="/v1/messages")
    assert r.status == 413 and _error(r)["type"] == "request_too_large"


@pytest.mark.parametrize("method, path, status, etype", [
    ("get", "/v1/messages", 405, "invalid_request_error"),
    ("post", "/v1/messages/batches/nope", 404, "not_found_error"),
    ("get", "/v1/messages/count_tokens", 405, "invalid_request_error"),
])
def test_unrouted_paths_under_messages_answer_in_anthropic_shape(method, path, status, etype):
    gw = Gateway()
    resp = getattr(gw.client, method)(path)
    assert resp.status_code == status and resp.get_json()["error"]["type"] == etype
    resp.close()


def test_unknown_model_is_not_found_error():
    r = Gateway().request(dict(BODY, model="nope"), path="/v1/messages")
    assert r.status == 404 and _error(r)["type"] == "not_found_error"


def test_upstream_overload_is_529_and_rate_limit_keeps_retry_after():
    overloaded = UpstreamStatusError("busy", provider="mock", upstream_status=503, retriable=False, status=503,
                                     kind="overloaded")
    limited = UpstreamStatusError("slow", provider="mock", upstream_status=429, retriable=False, status=429,
                                  kind="rate_limit", retry_after=4.2)
    gw = Gateway(script=[overloaded, limited])
    r = gw.request(BODY, path="/v1/messages")
    assert r.status == 529 and _error(r)["type"] == "overloaded_error"
    r = gw.request(BODY, path="/v1/messages")
    assert r.status == 429 and _error(r)["type"] == "rate_limit_error" and r.headers["Retry-After"] == "5"


def test_mid_stream_failure_is_an_error_event_after_200():
    parts = [ResponseStart("r1", "m"), TextStart(0), TextDelta(0, "par"),
             UpstreamError("cut", provider="mock", kind="upstream")]
    gw = Gateway(script=[parts])
    r = gw.request(dict(BODY, stream=True), path="/v1/messages")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = r.sse
    assert events[0]["type"] == "message_start"
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "cut"},
                          "request_id": r.headers["request-id"]}
    assert b"event: error\n" in r.body and b"message_stop" not in r.body


def test_stream_with_pause_turn_and_usage():
    parts = [ResponseStart("r1", "m"), TextStart(0), TextDelta(0, "wait"), Finish(FinishReason.PAUSE)]
    r = Gateway(script=[parts]).request(dict(BODY, stream=True), path="/v1/messages")
    delta = [e for e in r.sse if e["type"] == "message_delta"][0]
    assert delta["delta"]["stop_reason"] == "pause_turn" and "output_tokens" in delta["usage"]
    assert r.sse[-1] == {"type": "message_stop"}


def test_count_tokens_estimate_for_a_non_anthropic_route():
    r = Gateway().request({"model": "default", "messages": [{"role": "user", "content": "abcd" * 25}]},
                          path="/v1/messages/count_tokens")
    assert r.status == 200 and r.json == {"input_tokens": 25} and r.headers["x-routeplane-estimate"] == "true"
    bad = Gateway().request({"model": "default"}, path="/v1/messages/count_tokens")
    assert bad.status == 400 and _error(bad)["type"] == "invalid_request_error"


def test_anthropic_529_is_retriable_and_falls_back_to_the_next_target(upstream):
    from routeplane.language_model.executor import HttpExecutor
    from tests.support.upstream import Reply, openai_completion

    config = {
        "providers": {"an": {"protocol": "anthropic_messages", "base_url": upstream.url, "api_key": "k-an"},
                      "oc": {"protocol": "openai_chat", "base_url": upstream.url + "/v1", "api_key": "k-oc"}},
        "models": {"m": {"targets": [{"provider": "an", "model": "claude-up"}, {"provider": "oc", "model": "gpt-up"}]}},
    }
    upstream.enqueue(Reply.json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                                status=529),
                     Reply.json(openai_completion("from the fallback")))
    r = Gateway(config=config, executor=HttpExecutor()).request(dict(BODY, model="m"), path="/v1/messages")
    assert r.status == 200 and r.json["content"][0]["text"] == "from the fallback"
    assert [req.path for req in upstream.requests] == ["/v1/messages", "/v1/chat/completions"]
    assert [a.ok for a in r.settlements[0].attempts] == [False, True]


def test_models_list_in_anthropic_shape_for_anthropic_clients():
    gw = Gateway()
    resp = gw.client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    page = resp.get_json()
    resp.close()
    assert page["has_more"] is False and page["first_id"] == page["data"][0]["id"] == "default"
    assert set(page["data"][0]) == {"type", "id", "display_name", "created_at"} and page["data"][0]["type"] == "model"
    resp = gw.client.get("/v1/models")
    assert resp.get_json()["object"] == "list"  # OpenAI clients keep their shape
    resp.close()
    resp = gw.client.get("/v1/models/default", headers={"anthropic-version": "2023-06-01"})
    assert resp.get_json()["type"] == "model"
    resp.close()


def test_the_plugin_test_kit_speaks_the_anthropic_wire():
    from routeplane.testing import run_request

    r = run_request(BODY, wire="anthropic_messages")
    assert r.status == 200 and r.json["type"] == "message" and len(r.settlements) == 1


# --- count_tokens runs the same checks as /v1/messages before anything reaches an upstream -------------------


class RedactOrBlock(PreRequestHook):
    """A guardrail in miniature: blocks "SECRET", rewrites "jane@example.com"; records what it saw."""

    def __init__(self) -> None:
        self.dry_runs: List[bool] = []

    def check(self, ctx: Any) -> HookDecision:
        from routeplane.hooks.language_model import DenyReason
        from routeplane.language_model.types import Message, TextPart

        self.dry_runs.append(ctx.dry_run)
        texts = [p.text for m in ctx.prompt.messages for p in m.parts if isinstance(p, TextPart)]
        if any("SECRET" in t for t in texts):
            return HookDecision.deny(DenyReason.guardrail_violation("The prompt holds a secret."))
        if any("jane@example.com" in t for t in texts):
            messages = tuple(Message(m.role, tuple(TextPart(p.text.replace("jane@example.com", "[EMAIL]"))
                                                   if isinstance(p, TextPart) else p for p in m.parts))
                             for m in ctx.prompt.messages)
            ctx.replace_prompt(ctx.prompt.replace(messages=messages))
        return HookDecision.allow()


def _anthropic_route(upstream: Any) -> dict:
    return {"providers": {"an": {"protocol": "anthropic_messages", "base_url": upstream.url, "api_key": "k-an"},
                          "mock": {"protocol": "mock"}},
            "models": {"claude": {"targets": [{"provider": "an", "model": "claude-up"}]},
                       "default": {"targets": [{"provider": "mock", "model": "echo"}]}}}


def _count(gw: Gateway, text: str, model: str = "claude") -> Any:
    return gw.request({"model": model, "messages": [{"role": "user", "content": text}]},
                      path="/v1/messages/count_tokens", headers={"anthropic-version": "2023-06-01"})


def test_count_tokens_is_denied_like_the_message_and_sends_nothing(upstream):
    from tests.support.upstream import Reply

    upstream.default = lambda req: Reply.json({"input_tokens": 7})
    hook = RedactOrBlock()
    gw = Gateway(config=_anthropic_route(upstream), hooks=[hook])
    sent = gw.request(dict(BODY, model="claude", messages=[{"role": "user", "content": "deploy SECRET"}]),
                      path="/v1/messages")
    counted = _count(gw, "deploy SECRET")
    assert sent.status == counted.status == 400
    assert _error(counted) == _error(sent) == {"type": "invalid_request_error", "message": "The prompt holds a secret."}
    assert counted.headers["request-id"] and upstream.requests == [] and counted.settlements == []
    assert _count(gw, "deploy SECRET", model="default").status == 400  # the local estimate is refused too
    assert hook.dry_runs[1:] == [True, True]  # count_tokens is a dry run: budgets reserve nothing


def test_count_tokens_sends_the_prompt_a_hook_rewrote(upstream):
    from tests.support.upstream import Reply

    upstream.default = lambda req: Reply.json({"input_tokens": 7})
    gw = Gateway(config=_anthropic_route(upstream), hooks=[RedactOrBlock()])
    r = gw.request({"model": "claude", "system": "Be terse.", "messages": [
        {"role": "user", "content": "mail jane@example.com"}]}, path="/v1/messages/count_tokens")
    assert r.status == 200 and r.json == {"input_tokens": 7}
    body = upstream.requests[-1].json
    assert b"jane@example.com" not in upstream.requests[-1].body
    assert body["model"] == "claude-up" and body["system"] == "Be terse." and "max_tokens" not in body
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "mail [EMAIL]"}]}]
    assert _count(gw, "hello").status == 200
    assert upstream.requests[-1].json["messages"] == [{"role": "user", "content": "hello"}]  # untouched: as sent


class DropAll(RouteHook):
    def resolve(self, chain: List[Any], ctx: Any) -> List[Any]:
        return []


class Respond(PreRequestHook):
    def check(self, ctx: Any) -> HookDecision:
        from routeplane.language_model.types import Generation, TextPart

        return HookDecision.respond(Generation("cached-1", ctx.prompt.model, (TextPart("cached"),)))


def test_count_tokens_follows_the_route_hooks_and_local_answers(upstream):
    from routeplane.language_model.routing import RoutingTarget

    class ToMock(RouteHook):
        def resolve(self, chain: List[RoutingTarget], ctx: Any) -> List[RoutingTarget]:
            return [dataclasses.replace(chain[0], provider="mock", protocol="mock")]

    config = _anthropic_route(upstream)
    gw = Gateway(config=config, hooks=[DropAll()])
    dropped, sent = _count(gw, "hi"), gw.request(dict(BODY, model="claude"), path="/v1/messages")
    assert dropped.status == sent.status == 529 and _error(dropped) == _error(sent)  # no target: what /v1/messages says
    moved = _count(Gateway(config=config, hooks=[ToMock()]), "abcd" * 10)
    assert moved.status == 200 and moved.json == {"input_tokens": 10} and moved.headers["x-routeplane-estimate"]
    answered = _count(Gateway(config=config, hooks=[Respond()]), "abcd" * 10)
    assert answered.status == 200 and answered.headers["x-routeplane-estimate"] == "true"
    assert upstream.requests == []
