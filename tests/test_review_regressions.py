"""Regressions found by a cold review of the request path: each test failed before its fix."""

from __future__ import annotations

import pytest

from routeplane.errors import GuardrailViolation, UpstreamStatusError, UpstreamTimeout, merge_failures
from routeplane.hooks.language_model import ExecutionHook, PreRequestHook, StreamAction, StreamHook
from routeplane.language_model.executor import HttpExecutor
from routeplane.language_model.types import Generation, TextPart, Usage
from routeplane.protocols.base import retry_after_seconds
from routeplane.testing import Gateway
from tests.support.upstream import Reply, openai_completion

PRICED = {"providers": {"p": {"protocol": "mock", "prices": {"input": 1.0, "output": 2.0}}},
          "models": {"default": {"targets": [{"provider": "p", "model": "echo"}]}}}


def upstream_config(url):
    provider = {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "sk-test-aaaaaaaaaaaa"}
    return {"providers": {"a": dict(provider), "b": dict(provider)},
            "models": {"m": {"targets": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "y"}]},
                       "one": {"targets": [{"provider": "a", "model": "x"}]}}}


class BlockAll(ExecutionHook):
    def on_success(self, ctx, result):
        raise GuardrailViolation("response blocked")


def test_a_response_blocked_after_the_upstream_answered_is_still_billed():
    answer = Generation("id1", "echo", (TextPart("secret answer"),), usage=Usage(input_tokens=1000, output_tokens=500))
    gw = Gateway(hooks=[BlockAll()], config=PRICED, script=[answer])
    r = gw.chat("hi")
    assert r.status == 400
    [s] = r.settlements
    assert (s.usage.input_tokens, s.usage.output_tokens) == (1000, 500)
    assert s.cost_micro_usd == 1000 * 1 + 500 * 2


@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "soon"}, None), ({"Retry-After": "inf"}, None), ({"retry-after-ms": "nan"}, None),
    ({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "1500"}, 1.5), ({"Retry-After": "99999999"}, 86400.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
])
def test_provider_retry_after_is_untrusted_input(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_a_garbage_retry_after_still_falls_back_and_inf_is_a_clean_429(upstream):
    err = {"error": {"message": "slow down", "type": "rate_limit_error"}}
    gw = Gateway(executor=HttpExecutor(), config=upstream_config(upstream.url))
    upstream.enqueue(Reply.json(err, 429, headers={"Retry-After": "soon"}), Reply.json(openai_completion("from b")))
    r = gw.chat("hi", model="m")
    assert r.status == 200 and r.json["choices"][0]["message"]["content"] == "from b"
    upstream.enqueue(Reply.json(err, 429, headers={"Retry-After": "inf"}))
    r = gw.chat("hi", model="one")
    assert r.status == 429 and "Retry-After" not in r.headers and r.json["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_deeply_nested_upstream_json_is_a_502_that_falls_back(upstream, stream):
    deep = b"[" * 100_000 + b"]" * 100_000
    gw = Gateway(executor=HttpExecutor(), config=upstream_config(upstream.url))
    upstream.enqueue(Reply(200, {"Content-Type": "application/json"}, deep), Reply.json(openai_completion("ok")))
    r = gw.chat("hi", model="m", stream=stream)
    assert r.status == 200
    assert [a.ok for a in r.settlements[0].attempts] == [False, True]


class BrokenInterest(StreamHook):
    def interest(self):
        raise RuntimeError("bug in plugin")

    def on_part(self, ctx, part):
        return StreamAction.pass_()


def test_a_stream_hook_that_crashes_before_streaming_is_a_settled_500():
    gw = Gateway(hooks=[BrokenInterest()])
    r = gw.chat("hi", stream=True)
    assert r.status == 500 and "error" in r.json
    assert [s.outcome for s in r.settlements] == ["error"]


class Crash(PreRequestHook):
    def check(self, ctx):
        raise KeyError("bug")


def test_a_crashing_pre_request_hook_still_ends_with_an_event():
    gw = Gateway(hooks=[Crash()])
    r = gw.chat("hi")
    assert r.status == 500 and r.settlements == []
    ends = gw.events.named("on_request_end")
    assert len(ends) == 1 and ends[0].status == 500 and ends[0].outcome == "error"


def test_all_provider_timeouts_merge_to_504():
    errors = [UpstreamStatusError("a 504", provider="a", upstream_status=504, status=504, kind="timeout"),
              UpstreamTimeout("b timed out", provider="b")]
    assert merge_failures(errors).status == 504


def test_a_merged_failure_names_each_provider_once():
    errors = [UpstreamTimeout("openai: connection timed out", provider="openai"),
              UpstreamStatusError("Upstream returned 500", provider="backup", upstream_status=500, status=502)]
    assert merge_failures(errors).message == ("All 2 upstream targets failed (openai: connection timed out; "
                                              "backup: Upstream returned 500)")


def test_non_finite_numbers_are_refused_not_forwarded():
    gw = Gateway()
    r = gw.request(b'{"model": "default", "temperature": 1e400, "messages": [{"role": "user", "content": "x"}]}')
    assert r.status == 400 and gw.executor.calls == []


def test_provider_account_ids_and_url_credentials_are_not_echoed():
    from routeplane.config import ConfigError, parse_config
    from routeplane.protocols.base import scrub

    assert "org-Ab12Cd34Ef56" not in scrub("Rate limit reached in organization org-Ab12Cd34Ef56 on tokens")
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"p": {"protocol": "openai_chat",
                                          "base_url": "https://svc:sk-live-SECRET123456@api.example.com/v1"}},
                      "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}})
    assert "SECRET123456" not in str(info.value) and "credentials" in str(info.value)


def test_a_stream_the_gateway_cuts_is_settled_as_aborted_not_as_a_client_that_left():
    from routeplane.errors import RouteplaneError
    from routeplane.language_model.context import PipelineContext
    from routeplane.protocols.openai_chat import CLIENT

    gw = Gateway()
    prompt = CLIENT.decode_request({"model": "default", "stream": True,
                                    "messages": [{"role": "user", "content": "a few words to stream"}]})
    stream = gw.app.pipeline.run(PipelineContext("req_cut", "openai_chat", prompt, {}))
    next(iter(stream))
    stream.close(RouteplaneError("shutting down", status=503, kind="overloaded", code="shutting_down"))
    [s] = gw.settlements.items
    assert (s.outcome, s.status, s.error_type) == ("aborted", 503, "overloaded")
