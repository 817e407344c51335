"""HttpExecutor unit tests against `responses` (requests' transport mocked): what is sent, what comes back,
how transport failures map to gateway errors. End-to-end behaviour is tested against real servers elsewhere."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from routeplane.errors import UpstreamConnectionError, UpstreamError, UpstreamStatusError, UpstreamTimeout
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.executor import HttpExecutor
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import Message, Prompt, TextDelta, TextPart, UsageUpdate
from tests.support.upstream import openai_chunk, openai_completion

BASE = "https://api.example.test/v1"
URL = BASE + "/chat/completions"
TARGET = RoutingTarget(provider="up", model="up-model", protocol="openai_chat", base_url=BASE,
                       api_key="sk-unit-aaaaaaaaaaaa", headers={"X-Team": "blue"})


def ctx(stream: bool = False) -> PipelineContext:
    prompt = Prompt(model="m", messages=(Message("user", (TextPart("hi"),)),), stream=stream)
    return PipelineContext("req-unit-1", "openai_chat", prompt, {})


@responses.activate
def test_a_completion_sends_one_well_formed_post_and_decodes_the_answer() -> None:
    responses.add(responses.POST, URL, json=openai_completion("Hello!", usage={
        "prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}))
    c = ctx()
    gen = HttpExecutor().complete(TARGET, c.prompt, c)
    assert gen.text() == "Hello!" and (gen.usage.input_tokens, gen.usage.output_tokens) == (4, 2)
    [call] = responses.calls
    sent = call.request
    assert sent.method == "POST" and sent.url == URL
    assert sent.headers["Authorization"] == "Bearer sk-unit-aaaaaaaaaaaa"
    assert sent.headers["X-Team"] == "blue" and sent.headers["X-Request-Id"] == "req-unit-1"
    assert int(sent.headers["Content-Length"]) == len(sent.body)
    body = json.loads(sent.body)
    assert body["model"] == "up-model" and body["messages"] == [{"role": "user", "content": "hi"}]


@responses.activate
def test_upstream_cookies_are_never_sent_back() -> None:
    responses.add(responses.POST, URL, json=openai_completion("a"), headers={"Set-Cookie": "session=abc; Path=/"})
    responses.add(responses.POST, URL, json=openai_completion("b"))
    executor = HttpExecutor()
    for _ in range(2):
        c = ctx()
        executor.complete(TARGET, c.prompt, c)
    assert "Cookie" not in responses.calls[1].request.headers


@responses.activate
def test_an_error_status_keeps_the_upstreams_retry_after() -> None:
    responses.add(responses.POST, URL, status=429, headers={"Retry-After": "7"},
                  json={"error": {"message": "slow down", "type": "rate_limit_error"}})
    c = ctx()
    with pytest.raises(UpstreamStatusError) as info:
        HttpExecutor().complete(TARGET, c.prompt, c)
    assert info.value.upstream_status == 429 and info.value.retry_after == 7.0 and info.value.retriable


@pytest.mark.parametrize("failure, expected", [
    (requests.exceptions.ConnectionError("refused"), UpstreamConnectionError),
    (requests.exceptions.ConnectTimeout("slow"), UpstreamTimeout),
    (requests.exceptions.ReadTimeout("slow"), UpstreamTimeout),
])
@responses.activate
def test_transport_failures_become_gateway_errors_without_the_key(failure: Exception, expected: type) -> None:
    responses.add(responses.POST, URL, body=failure)
    c = ctx()
    with pytest.raises(expected) as info:
        HttpExecutor().complete(TARGET, c.prompt, c)
    assert "sk-unit" not in str(info.value) and info.value.provider == "up"


@responses.activate
def test_a_redirect_is_refused_not_followed() -> None:
    responses.add(responses.POST, URL, status=302, headers={"Location": "https://elsewhere.example.test/v1"})
    c = ctx()
    with pytest.raises(UpstreamError, match="redirect") as info:
        HttpExecutor().complete(TARGET, c.prompt, c)
    assert not info.value.retriable and len(responses.calls) == 1


@responses.activate
def test_a_stream_yields_canonical_parts() -> None:
    events = [openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "Hel"}),
              openai_chunk({"content": "lo"}), openai_chunk({}, "stop"),
              openai_chunk(None, usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    responses.add(responses.POST, URL, body=body, content_type="text/event-stream")
    c = ctx(stream=True)
    parts = list(HttpExecutor().stream(TARGET, c.prompt, c))
    assert "".join(p.text for p in parts if isinstance(p, TextDelta)) == "Hello"
    usage = [p.usage for p in parts if isinstance(p, UsageUpdate)][-1]
    assert (usage.input_tokens, usage.output_tokens) == (4, 2)
    assert json.loads(responses.calls[0].request.body)["stream"] is True
