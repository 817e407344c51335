"""Routing strategies measured over many requests, direct routing, unknown models, cooldown and backoff."""

from __future__ import annotations

import collections
import math
import random

import pytest

from routeplane.config import parse_config
from routeplane.errors import UpstreamStatusError, UpstreamTimeout
from routeplane.language_model.cooldown import CooldownPolicy, CooldownTracker, FallbackSettings
from routeplane.language_model.routing import StaticRoutingTable
from routeplane.language_model.url_safety import UnsafeURL, URLPolicy, check_base_url
from routeplane.testing import Gateway


def three_mocks(strategy: str, weights=(1, 1, 1)) -> dict:
    return {
        "providers": {"a": {"protocol": "mock"}, "b": {"protocol": "mock"}, "c": {"protocol": "mock"}},
        "models": {"m": {"strategy": strategy, "targets": [
            {"provider": p, "model": "echo", "weight": w} for p, w in zip("abc", weights)]}},
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def served_by(g: Gateway, n: int, model: str = "m") -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for _ in range(n):
        r = g.chat("x", model=model)
        assert r.status == 200
        [s] = r.settlements
        counts[s.provider] += 1
    return counts


def test_round_robin_rotates_the_head_evenly():
    g = Gateway(config=three_mocks("round_robin"))
    counts = served_by(g, 300)
    print("round_robin 300 requests:", dict(counts))
    assert counts == {"a": 100, "b": 100, "c": 100}


def test_round_robin_keeps_the_rest_as_fallbacks():
    cfg = parse_config(three_mocks("round_robin"), "t", env={})
    table = StaticRoutingTable(cfg.routes, cfg.providers)
    chains = [[t.provider for t in table.resolve("m")] for _ in range(3)]
    assert chains == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]


def test_weighted_head_follows_the_weights_with_a_seeded_rng():
    cfg = parse_config(three_mocks("weighted", (1, 3, 6)), "t", env={})
    table = StaticRoutingTable(cfg.routes, cfg.providers, rng=random.Random(20261122))
    n = 6000
    heads = collections.Counter(table.resolve("m")[0].provider for _ in range(n))
    print("weighted 1:3:6 over", n, "draws:", dict(heads))
    for provider, weight in zip("abc", (1, 3, 6)):
        p = weight / 10
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(heads[provider] - n * p) < 4 * sigma, (provider, heads)
    # every chain still holds every target once (the rest are fallbacks)
    assert sorted(t.provider for t in table.resolve("m")) == ["a", "b", "c"]


def test_weighted_through_the_gateway_and_zero_weight_never_leads():
    g = Gateway(config=three_mocks("weighted", (1, 1, 0)))
    g.app.pipeline.routing_table = StaticRoutingTable(g.app.config.routes, g.app.config.providers,
                                                      rng=random.Random(5))
    counts = served_by(g, 400)
    print("weighted 1:1:0 over 400 requests:", dict(counts))
    assert counts["c"] == 0 and abs(counts["a"] - 200) < 4 * math.sqrt(100)


def test_priority_is_declared_order():
    g = Gateway(config=three_mocks("priority"))
    assert served_by(g, 20) == {"a": 20}


def test_provider_model_direct_routing_and_registry_prices():
    config = {"providers": {"mock": {"protocol": "mock"},
                            "openai": {"base_url": "https://api.openai.com/v1", "api_key": "sk-test"}},
              "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}}
    g = Gateway(config=config)
    r = g.chat("hi", model="mock:anything-at-all")
    assert r.status == 200 and r.settlements[0].provider == "mock" and r.settlements[0].model == "anything-at-all"
    [t] = g.app.pipeline.routing_table.resolve("openai:gpt-4.1-mini")
    assert (t.provider, t.model, t.protocol) == ("openai", "gpt-4.1-mini", "openai_chat")
    assert t.prices.input == 0.40 and t.prices.output == 1.60  # from the shipped registry
    [t] = g.app.pipeline.routing_table.resolve("openai:some-future-model")
    assert t.prices.input is None  # unknown price stays unknown, never zero


@pytest.mark.parametrize("model", ["nope", "nosuchprovider:x", "anthropic:claude-sonnet-4-5", "mock:"])
def test_unknown_model_is_404_in_the_openai_shape(model, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    g = Gateway()
    r = g.chat("hi", model=model)
    assert r.status == 404, r.body
    err = r.json["error"]
    assert err["code"] == "model_not_found" and "GET /v1/models" in err["message"]
    assert r.settlements and r.settlements[0].status == 404  # a routed request is settled, even a 404


def _rules(g: Gateway) -> set:
    return {rule.rule for rule in g.flask.url_map.iter_rules()}


def test_unknown_model_is_404_in_the_anthropic_shape():
    g = Gateway()
    if "/v1/messages" not in _rules(g):
        pytest.skip("the Anthropic blueprint is not registered")
    r = g.request({"model": "nope", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                  path="/v1/messages")
    assert r.status == 404
    assert r.json["type"] == "error" and r.json["error"]["type"] == "not_found_error"


def test_unknown_model_is_404_in_the_gemini_shape():
    g = Gateway()
    path = "/v1beta/models/nope:generateContent"
    r = g.request({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, path=path)
    if r.status == 404 and "error" in r.json and r.json["error"].get("status") is None:
        pytest.skip("the Gemini blueprint is not registered")
    assert r.status == 404
    assert r.json["error"]["code"] == 404 and r.json["error"]["status"] == "NOT_FOUND"


def test_models_endpoint_lists_routes_and_active_providers_models(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    g = Gateway(config=three_mocks("priority"))
    ids = [m["id"] for m in g.client.get("/v1/models").get_json()["data"]]
    assert ids[0] == "m"
    assert "groq:llama-3.3-70b-versatile" in ids  # turned on by its key env var
    assert not any(i.startswith("mistral:") for i in ids)


# --- cooldown (circuit breaker) ---------------------------------------------


def boom(status: int = 503, retry_after=None) -> UpstreamStatusError:
    return UpstreamStatusError("down", provider="a", upstream_status=status, status=503, retry_after=retry_after)


def test_breaker_opens_after_n_failures_then_half_open_probe():
    clock = FakeClock()
    t = CooldownTracker(FallbackSettings(cooldown=CooldownPolicy(failures=3, seconds=30)), clock)
    for _ in range(2):
        assert t.acquire("a:m")
        t.record_failure("a:m", boom())
    assert t.acquire("a:m")  # two failures: still closed
    t.record_failure("a:m", boom())
    assert not t.acquire("a:m") and t.states()[0].state == "open"
    clock.now += 29.9
    assert not t.acquire("a:m")
    clock.now += 0.2
    assert t.acquire("a:m")  # the probe
    assert not t.acquire("a:m")  # one probe at a time
    t.record_failure("a:m", boom())  # failed probe: open again for a full period
    assert not t.acquire("a:m")
    clock.now += 30.1
    assert t.acquire("a:m")
    t.record_success("a:m")
    assert t.acquire("a:m") and t.acquire("a:m") and t.states() == ()


def test_retry_after_feeds_the_cooldown_capped():
    clock = FakeClock()
    t = CooldownTracker(FallbackSettings(retry_after_max=10, cooldown=CooldownPolicy(failures=0)), clock)
    t.record_failure("a:m", boom(429, retry_after=3600))
    assert not t.acquire("a:m")
    clock.now += 10.01
    assert t.acquire("a:m")  # capped at retry_after_max, not an hour


def test_a_4xx_means_the_target_is_alive():
    t = CooldownTracker(FallbackSettings(cooldown=CooldownPolicy(failures=2)), FakeClock())
    t.record_failure("a:m", boom())
    t.record_failure("a:m", UpstreamStatusError("bad", provider="a", upstream_status=400, status=400,
                                                retriable=False))
    t.record_failure("a:m", boom())
    assert t.acquire("a:m")  # the 400 reset the count


def test_cooling_targets_are_skipped_and_all_cooling_tries_the_head():
    config = three_mocks("priority")
    config["fallback"] = {"cooldown": {"failures": 2, "seconds": 30}}
    clock = FakeClock()
    g = Gateway(config=config)
    pipeline = g.app.pipeline
    pipeline.cooldown = CooldownTracker(pipeline.fallback, clock)
    for _ in range(2):
        g.executor.push(boom(), provider="a")
    for _ in range(2):
        r = g.chat("x", model="m")
        assert r.status == 200 and [a.provider for a in r.settlements[0].attempts] == ["a", "b"]
    before = len(g.executor.calls)
    r = g.chat("x", model="m")
    assert r.status == 200 and [a.provider for a in r.settlements[0].attempts] == ["b"]  # a skipped: no call
    assert [c.target.provider for c in g.executor.calls[before:]] == ["b"]
    assert r.settlements[0].metadata["routeplane.routing"]["cooling_down"] == ["a:echo"]

    # every target cooling down: the head is still tried (and its success closes its breaker)
    for p in "bc":
        for _ in range(2):
            pipeline.cooldown.record_failure(f"{p}:echo", boom())
    r = g.chat("x", model="m")
    assert r.status == 200 and [a.provider for a in r.settlements[0].attempts] == ["a"]
    assert r.settlements[0].metadata["routeplane.routing"]["cooling_down"] == ["a:echo", "b:echo", "c:echo"]
    clock.now += 31
    r = g.chat("x", model="m")
    assert [a.provider for a in r.settlements[0].attempts] == ["a"]


def test_backoff_between_hops_uses_the_schedule():
    config = three_mocks("priority")
    config["fallback"] = {"backoff": [0.25, 1.5], "cooldown": {"failures": 0}}
    g = Gateway(config=config, per_provider={"a": [boom()], "b": [UpstreamTimeout("slow", provider="b")]})
    slept = []
    g.app.pipeline._sleep = slept.append
    r = g.chat("x", model="m")
    assert r.status == 200 and [a.provider for a in r.settlements[0].attempts] == ["a", "b", "c"]
    assert slept == [0.25, 1.5]
    assert FallbackSettings(backoff=(0.25, 1.5)).backoff_before(5) == 1.5


# --- URL safety ---------------------------------------------------------------


@pytest.mark.parametrize("url, policy, ok", [
    ("https://api.openai.com/v1", URLPolicy(), True),
    ("http://127.0.0.1:11434/v1", URLPolicy(), True),
    ("http://localhost:8000/v1", URLPolicy(), True),
    ("http://[::1]:8000/v1", URLPolicy(), True),
    ("http://api.example.com/v1", URLPolicy(), False),
    ("http://api.example.com/v1", URLPolicy(allow_insecure_http=True), True),
    ("ftp://api.example.com/", URLPolicy(), False),
    ("file:///etc/passwd", URLPolicy(), False),
    ("http://169.254.169.254/latest/meta-data", URLPolicy(True, True), False),
    ("https://169.254.169.254/", URLPolicy(True, True), False),
    ("http://[fd00:ec2::254]/", URLPolicy(True, True), False),
    ("http://metadata.google.internal/computeMetadata/v1", URLPolicy(True, True), False),
    ("https://169.254.10.1/", URLPolicy(True, True), False),  # link-local
    ("https://[fe80::1]/", URLPolicy(True, True), False),
    ("https://[::ffff:169.254.169.254]/", URLPolicy(True, True), False),  # v4-mapped metadata
    ("https://10.1.2.3/v1", URLPolicy(), False),
    ("https://10.1.2.3/v1", URLPolicy(allow_private_network=True), True),
    ("https://192.168.1.10/v1", URLPolicy(), False),
    ("https://100.64.0.1/v1", URLPolicy(), False),  # CGNAT
    ("https://llm.internal/v1", URLPolicy(), False),
    ("https://user:pw@api.example.com/v1", URLPolicy(), False),
    ("https://0.0.0.0/v1", URLPolicy(True, True), False),
])
def test_url_policy(url, policy, ok):
    if ok:
        check_base_url(url, policy)
    else:
        with pytest.raises(UnsafeURL):
            check_base_url(url, policy)
