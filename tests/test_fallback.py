"""Fault injection against real local upstreams: status, body, fallback and exactly-once settlement per fault."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from routeplane.hooks.language_model import ExecutionHook, FallbackDecision, RouteHook
from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.gateway import free_port
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

FAST = {"connect": 1.0, "read": 0.6}


@pytest.fixture
def ups(servers: Tuple[FakeUpstream, FakeUpstream]) -> Tuple[FakeUpstream, FakeUpstream]:
    """The module's two upstreams with empty scripts (shared: stopping a server costs ~0.5 s)."""
    for up in servers:
        with up._lock:
            up._queue.clear()
            up.requests.clear()
    return servers


def config(a_url: str, b_url: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    providers = {"a": {"protocol": "openai_chat", "base_url": a_url + "/v1", "api_key": "sk-a-secret-key-123",
                       "timeouts": dict(FAST)}}
    targets = [{"provider": "a", "model": "model-a"}]
    if b_url is not None:
        providers["b"] = {"protocol": "openai_chat", "base_url": b_url + "/v1", "timeouts": dict(FAST)}
        targets.append({"provider": "b", "model": "model-b"})
    return {"providers": providers, "models": {"m": {"targets": targets}}, **extra}


@pytest.fixture
def gateways() -> Iterator[Any]:
    made: List[Gateway] = []

    def make(cfg: Dict[str, Any], **kw: Any) -> Gateway:
        g = Gateway(executor=HttpExecutor(), config=cfg, **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.executor.close()


def stream_reply(*texts: str, first: str = "", **kw: Any) -> Reply:
    chunks = [openai_chunk({"role": "assistant", "content": first})] + [openai_chunk({"content": t}) for t in texts]
    chunks += [openai_chunk({}, "stop"),
               openai_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})]
    return Reply.sse(chunks, **kw)


def providers_tried(r: Any) -> List[Tuple[str, bool]]:
    [s] = r.settlements  # settled exactly once
    return [(a.provider, a.ok) for a in s.attempts]


def error_frames(r: Any) -> List[dict]:
    return [e for e in r.sse if isinstance(e, dict) and "error" in e]


def text_of(r: Any) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in r.sse
                   if isinstance(c, dict) and c.get("choices"))


# --- non-streaming: each fault on the head target, a healthy fallback behind it ----------


FAULTS = {
    "500": Reply.json({"error": {"message": "boom"}}, 500),
    "503": Reply.json({"error": {"message": "overloaded"}}, 503),
    "429": Reply.json({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "7"}),
    "408": Reply.json({"error": {"message": "timeout"}}, 408),
    "hang": Reply(hang=2.0),
    "reset": Reply(reset=True),
    "invalid_json": Reply(200, {"Content-Type": "application/json"}, b'{"id": "x", "choices": [tru'),
    "empty_200": Reply(200, {"Content-Type": "application/json"}, b""),
}

# fault → (status the client sees when it is the only target, error code in that body)
ALONE = {
    "500": (502, "upstream"),
    "503": (503, "overloaded"),
    "429": (429, "rate_limit_exceeded"),
    "408": (504, "timeout"),
    "hang": (504, "timeout"),
    "reset": (502, "upstream"),
    "invalid_json": (502, "upstream"),
    "empty_200": (502, "upstream"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_on_head_falls_back(fault, ups, gateways):
    a, b = ups
    a.enqueue(FAULTS[fault])
    b.enqueue(Reply.json(openai_completion("from b")))
    g = gateways(config(a.url, b.url))
    r = g.chat("hi", model="m")
    assert r.status == 200, r.body
    assert r.json["choices"][0]["message"]["content"] == "from b"
    assert providers_tried(r) == [("a", False), ("b", True)]
    assert len(a.requests) == 1 and len(b.requests) == 1
    assert r.headers["x-routeplane-target"] == "b:model-b"


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_on_the_only_target(fault, ups, gateways):
    a, _ = ups
    a.enqueue(FAULTS[fault])
    g = gateways(config(a.url))
    t0 = time.monotonic()
    r = g.chat("hi", model="m")
    status, etype = ALONE[fault]
    assert (r.status, r.json["error"]["code"]) == (status, etype), r.body
    assert "sk-a-secret-key-123" not in r.body.decode()
    assert providers_tried(r) == [("a", False)]
    [s] = r.settlements
    assert s.status == status and s.outcome == "upstream_error"
    if fault == "hang":
        assert time.monotonic() - t0 < 1.8  # the 0.6 s read timeout fired, not the 2 s hang
    if fault == "429":
        assert r.headers["Retry-After"] == "7"


def test_connection_refused_falls_back(ups, gateways):
    _, b = ups
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    b.enqueue(Reply.json(openai_completion("from b")))
    g = gateways(config(closed, b.url))
    r = g.chat("hi", model="m")
    assert r.status == 200 and providers_tried(r) == [("a", False), ("b", True)]
    [s] = r.settlements
    assert s.attempts[0].error_type == "UpstreamConnectionError"
    r = gateways(config(closed)).chat("hi", model="m")
    assert r.status == 502 and r.json["error"]["code"] == "upstream"
    assert providers_tried(r) == [("a", False)]


def test_400_fails_fast_without_fallback(ups, gateways):
    a, b = ups
    a.enqueue(Reply.json({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}, 400))
    g = gateways(config(a.url, b.url))
    r = g.chat("hi", model="m")
    assert r.status == 400 and "max_tokens is too large" in r.json["error"]["message"]
    assert providers_tried(r) == [("a", False)]
    assert len(b.requests) == 0


def test_a_moderation_403_is_the_clients_400_not_a_key_problem(ups, gateways):
    """OpenRouter answers flagged input with 403 and the categories: it read as "check the provider's
    api_key" (a 502), sending operators after a key that works."""
    a, b = ups
    flagged = {"error": {"code": 403, "message": "Your input was flagged for \"harassment\"",
                         "metadata": {"reasons": ["harassment"], "flagged_input": "...", "provider_name": "x"}}}
    a.enqueue(Reply.json(flagged, 403))
    g = gateways(config(a.url, b.url))
    r = g.chat("hi", model="m")
    assert r.status == 400, r.json
    assert "flagged" in r.json["error"]["message"] and "api_key" not in r.json["error"]["message"]
    assert providers_tried(r) == [("a", False)] and len(b.requests) == 0
    # A plain 403 is still the gateway's credential (DESIGN.md: not retriable).
    a.enqueue(Reply.json({"error": {"message": "forbidden", "type": "permission_error"}}, 403))
    r = g.chat("hi", model="m")
    assert r.status == 502 and "api_key" in r.json["error"]["message"]


def test_all_429_merge_to_429_with_the_earliest_retry_after(ups, gateways):
    a, b = ups
    a.enqueue(Reply.json({"error": {"message": "rl"}}, 429, headers={"Retry-After": "20"}))
    b.enqueue(Reply.json({"error": {"message": "rl"}}, 429, headers={"Retry-After": "3"}))
    g = gateways(config(a.url, b.url))
    r = g.chat("hi", model="m")
    assert r.status == 429 and r.headers["Retry-After"] == "3"
    assert r.json["error"]["code"] == "rate_limit_exceeded"
    assert providers_tried(r) == [("a", False), ("b", False)]
    # Retry-After is honoured by sidelining each target for that long (capped by retry_after_max)
    states = {s.label: s for s in g.app.pipeline.cooldown.states()}
    assert states["a:model-a"].state == "open" and 19 < states["a:model-a"].retry_in <= 20
    assert states["b:model-b"].state == "open" and 2 < states["b:model-b"].retry_in <= 3


def test_all_timeouts_merge_to_504_and_mixed_to_502(ups, gateways):
    a, b = ups
    a.enqueue(Reply(hang=1.5))
    b.enqueue(Reply(hang=1.5))
    r = gateways(config(a.url, b.url)).chat("hi", model="m")
    assert r.status == 504 and r.json["error"]["code"] == "timeout"
    assert providers_tried(r) == [("a", False), ("b", False)]
    a.enqueue(Reply(reset=True))
    b.enqueue(Reply.json({"error": {"message": "x"}}, 500))
    r = gateways(config(a.url, b.url)).chat("hi", model="m")
    assert r.status == 502 and "All 2 upstream targets failed" in r.json["error"]["message"]


def test_total_timeout_caps_a_trickling_non_stream_body(ups, gateways):
    a, _ = ups
    body = b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}'
    a.enqueue(Reply(200, {"Content-Type": "application/json"}, chunks=[body[i:i + 8] for i in range(0, len(body), 8)],
                    chunk_delay=0.2))  # each read well inside the 0.6 s idle timeout; ~2 s in total
    cfg = config(a.url)
    cfg["providers"]["a"]["timeouts"]["total"] = 0.8
    t0 = time.monotonic()
    r = gateways(cfg).chat("hi", model="m")
    assert r.status == 504 and "total timeout" in r.json["error"]["message"]
    assert time.monotonic() - t0 < 1.5


def test_global_timeouts_section_applies_when_the_provider_sets_none(ups, gateways):
    a, _ = ups
    a.enqueue(Reply(hang=2.0))
    cfg = config(a.url, timeouts={"read": 0.3})
    del cfg["providers"]["a"]["timeouts"]
    g = gateways(cfg)
    assert g.app.config.providers["a"].timeouts.read == 0.3
    t0 = time.monotonic()
    assert g.chat("hi", model="m").status == 504
    assert time.monotonic() - t0 < 1.2


# --- streaming ---------------------------------------------------------------------------


def test_stream_falls_back_before_the_first_byte(ups, gateways):
    a, b = ups
    a.enqueue(Reply.json({"error": {"message": "boom"}}, 503))
    b.enqueue(stream_reply("hel", "lo"))
    r = gateways(config(a.url, b.url)).chat("hi", model="m", stream=True)
    assert r.status == 200 and text_of(r) == "hello" and r.sse[-1] == "[DONE]"
    assert providers_tried(r) == [("a", False), ("b", True)]


def test_stream_cut_after_the_first_part_does_not_fall_back(ups, gateways):
    a, b = ups
    a.enqueue(stream_reply("one", "two", "three", reset_after=2))  # role chunk + "one", then RST
    b.enqueue(stream_reply("never"))
    g = gateways(config(a.url, b.url))
    r = g.chat("hi", model="m", stream=True)
    assert r.status == 200  # the 200 went out with the first part
    assert text_of(r) == "one"
    [frame] = error_frames(r)
    assert frame["error"]["code"] == "upstream"
    assert "[DONE]" not in r.sse
    assert len(b.requests) == 0  # never spliced onto another upstream
    [s] = r.settlements
    assert s.outcome == "upstream_error" and s.status == 502 and [x.provider for x in s.attempts] == ["a"]


def test_stream_without_done_is_an_upstream_failure_not_a_finish(ups, gateways):
    a, b = ups
    a.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "partial"})],
                        done=None))
    r = gateways(config(a.url, b.url)).chat("hi", model="m", stream=True)
    assert r.status == 200 and text_of(r) == "partial"
    assert error_frames(r) and "[DONE]" not in r.sse
    assert len(b.requests) == 0
    [s] = r.settlements
    assert s.outcome == "upstream_error"


def test_stalled_stream_mid_way_gets_an_error_frame(ups, gateways):
    a, _ = ups
    a.enqueue(stream_reply("two", first="one", chunk_delay=2.0))  # after the first text, 2 s > the 0.6 s idle timeout
    t0 = time.monotonic()
    r = gateways(config(a.url)).chat("hi", model="m", stream=True)
    assert time.monotonic() - t0 < 1.8
    assert r.status == 200
    [frame] = error_frames(r)
    assert frame["error"]["code"] == "timeout"
    [s] = r.settlements
    assert s.outcome == "upstream_error" and s.status == 504


def test_stream_stalled_before_the_first_part_is_504_or_falls_back(ups, gateways):
    a, b = ups
    stall = dict(chunk_delay=2.0)
    a.enqueue(Reply.sse([b": keepalive\n\n", openai_chunk({"role": "assistant", "content": "late"})], **stall))
    r = gateways(config(a.url)).chat("hi", model="m", stream=True)
    assert r.status == 504 and r.json["error"]["code"] == "timeout"  # no byte had reached the client
    assert providers_tried(r) == [("a", False)]
    a.enqueue(Reply.sse([b": keepalive\n\n", openai_chunk({"role": "assistant", "content": "late"})], **stall))
    b.enqueue(stream_reply("fallback"))
    r = gateways(config(a.url, b.url)).chat("hi", model="m", stream=True)
    assert r.status == 200 and text_of(r) == "fallback"
    assert providers_tried(r) == [("a", False), ("b", True)]


def test_total_timeout_ends_a_long_stream(ups, gateways):
    a, _ = ups
    a.enqueue(stream_reply(*[f"w{i} " for i in range(20)], chunk_delay=0.15))  # ~3.5 s of steady tokens
    cfg = config(a.url)
    cfg["providers"]["a"]["timeouts"]["total"] = 1.0
    t0 = time.monotonic()
    r = gateways(cfg).chat("hi", model="m", stream=True)
    assert time.monotonic() - t0 < 2.0
    assert r.status == 200 and text_of(r).startswith("w0 ")
    [frame] = error_frames(r)
    assert frame["error"]["code"] == "timeout" and "total timeout" in frame["error"]["message"]
    [s] = r.settlements
    assert s.outcome == "upstream_error"


# --- hooks, URL safety, auth header -------------------------------------------------------


class NoFallback(ExecutionHook):
    def on_failure(self, ctx: Any, error: Any) -> FallbackDecision:
        return FallbackDecision.fail()


def test_execution_hook_vetoes_fallback(ups, gateways):
    a, b = ups
    a.enqueue(Reply.json({"error": {"message": "boom"}}, 500))
    r = gateways(config(a.url, b.url), hooks=[NoFallback()]).chat("hi", model="m")
    assert r.status == 502 and providers_tried(r) == [("a", False)] and len(b.requests) == 0


class PointAtMetadata(RouteHook):
    def resolve(self, chain: Any, ctx: Any) -> Any:
        return [chain[0].replace(base_url="http://169.254.169.254/latest")] + chain[1:]


def test_route_hook_cannot_point_at_cloud_metadata(ups, gateways):
    a, b = ups
    r = gateways(config(a.url, b.url), hooks=[PointAtMetadata()]).chat("hi", model="m")
    assert r.status == 502 and "URL safety policy" in r.json["error"]["message"]
    assert "169.254" not in r.body.decode()
    assert providers_tried(r) == [("a", False)]
    assert len(a.requests) == 0 and len(b.requests) == 0  # no connection at all


def test_registry_auth_header_is_used(ups, gateways, monkeypatch):
    a, _ = ups
    a.enqueue(Reply.json(openai_completion("ok")))
    cfg = config(a.url)
    cfg["providers"]["a"].update(auth_header="api-key", auth_prefix="")
    assert gateways(cfg).chat("hi", model="m").status == 200
    headers = a.requests[0].headers
    assert headers["api-key"] == "sk-a-secret-key-123" and "authorization" not in headers


def test_config_rejects_unsafe_base_urls():
    from routeplane.config import ConfigError, parse_config

    for url, key in [("http://169.254.169.254/v1", "metadata"), ("http://api.example.com/v1", "plain http"),
                     ("https://10.0.0.5/v1", "private network")]:
        with pytest.raises(ConfigError) as info:
            parse_config({"providers": {"x": {"protocol": "openai_chat", "base_url": url}},
                          "models": {"m": {"targets": [{"provider": "x", "model": "y"}]}}}, "f.yaml", env={})
        assert "f.yaml" in str(info.value) and "providers.x.base_url" in str(info.value) and key in str(info.value)
    cfg = parse_config({"providers": {"x": {"protocol": "openai_chat", "base_url": "https://10.0.0.5/v1",
                                            "allow_private_network": True}},
                        "models": {"m": {"targets": [{"provider": "x", "model": "y"}]}}}, "f.yaml", env={})
    assert cfg.providers["x"].url_policy.allow_private_network


def test_auth_header_swap_touches_only_the_credential_header():
    from routeplane.language_model.executor import with_auth
    from routeplane.language_model.routing import RoutingTarget

    t = RoutingTarget("p", "m", "openai_chat", api_key="x", auth_header="api-key")
    out = with_auth({"Authorization": "Bearer x", "Accept": "application/json, text/event-stream"}, t)
    assert out == {"Accept": "application/json, text/event-stream", "api-key": "x"}
    assert with_auth({"Authorization": "Bearer x"}, t.replace(auth_header=None)) == {"Authorization": "Bearer x"}


def test_mid_stream_failures_feed_the_cooldown(ups, gateways):
    a, b = ups
    cfg = config(a.url, b.url, fallback={"cooldown": {"failures": 2, "seconds": 60}})
    g = gateways(cfg)
    for _ in range(2):
        a.enqueue(stream_reply("one", "two", reset_after=2))
        r = g.chat("hi", model="m", stream=True)
        assert error_frames(r) and providers_tried(r) == [("a", True)]  # no fallback mid-stream
    b.enqueue(stream_reply("from b"))
    r = g.chat("hi", model="m", stream=True)
    assert text_of(r) == "from b" and providers_tried(r) == [("b", True)]  # a is cooling down: skipped
    assert len(a.requests) == 2


def test_every_account_out_of_credit_merges_to_a_billing_error_not_a_rate_limit(ups, gateways):
    """OpenAI's insufficient_quota shares 429 with rate limiting; merged from every target it was a
    retryable 429 rate_limit_error, which the SDKs retry for nothing. It stays a billing error."""
    a, b = ups
    quota = {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                       "code": "insufficient_quota"}}
    a.enqueue(Reply.json(quota, 429), Reply.json(quota, 429))
    b.enqueue(Reply.json(quota, 429), Reply.json(quota, 429))
    g = gateways(config(a.url, b.url))
    r = g.chat("hi", model="m")
    assert r.status == 429 and r.json["error"]["code"] == "insufficient_quota"
    r = g.request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                  wire="anthropic_messages")
    assert r.status == 402 and r.json["error"]["type"] == "billing_error"


def test_a_retry_that_cannot_help_is_named_so_alone_or_merged():
    from routeplane.errors import AllTargetsFailed, UnsafeUpstreamURL, UpstreamStatusError, retry_cannot_help

    refused = UpstreamStatusError("a rejected the gateway's credentials", provider="a", upstream_status=401, status=502)
    flaky = UpstreamStatusError("b failed", provider="b", upstream_status=500, status=502)
    forbidden = UnsafeUpstreamURL("c's URL points at a cloud metadata endpoint", provider="c")
    assert retry_cannot_help(refused) and retry_cannot_help(forbidden) and not retry_cannot_help(flaky)
    assert retry_cannot_help(AllTargetsFailed("x", errors=[refused, forbidden], status=502))
    assert not retry_cannot_help(AllTargetsFailed("x", errors=[flaky, refused], status=502))

