"""Honest accounting, probed with real traffic: token buckets and cost per upstream wire, budget reservations."""

from __future__ import annotations

import contextlib
import copy
import io
import threading
import time
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import pytest
import requests

from routeplane.auth.budget import BudgetPlugin
from routeplane.auth.plugin import AuthSettings, StoreHandle
from routeplane.cli import main
from routeplane.config import parse_config
from routeplane.language_model.provider_registry import load_registry, parse_registry
from routeplane.language_model.routing import Prices
from routeplane.language_model.settlement import cost_micro_usd
from routeplane.language_model.types import Usage
from routeplane.protocols import openai_chat
from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion, running_upstream

# USD per million tokens = micro-USD per token: every bucket has its own price, so a token in the
# wrong bucket changes the cost.
PRICES = {"input": 1.0, "cache_read": 0.1, "cache_write": 1.25, "output": 10.0, "reasoning": 20.0}


def cost(inp: int = 0, read: int = 0, write: int = 0, out: int = 0, reasoning: int = 0, write_1h: int = 0) -> int:
    return round(inp * 1.0 + read * 0.1 + write * 1.25 + write_1h * 2 * 1.0 + out * 10.0 + reasoning * 20.0)


# --- unit: cost and the registry -----------------------------------------------------------------------------


def test_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    """Anthropic's `cache_creation` splits writes by TTL: a 1-hour write costs 2x input, not the 5-minute
    `cache_write` price (registry: "1-hour writes cost 2x input"); they were all billed as 5-minute writes."""
    # (under 200K input tokens: past them Sonnet has its long-context prices)
    sonnet = load_registry().get("anthropic").model_prices["claude-sonnet-4-5"]  # type: ignore[union-attr]
    raw = {"input_tokens": 40, "cache_creation_input_tokens": 30_000, "cache_read_input_tokens": 2000,
           "cache_creation": {"ephemeral_5m_input_tokens": 10_000, "ephemeral_1h_input_tokens": 20_000},
           "output_tokens": 120}
    usage = Usage(input_tokens=40, cache_read_tokens=2000, cache_write_tokens=30_000, output_tokens=120, raw=raw)
    assert cost_micro_usd(usage, sonnet) == round(40 * 3.0 + 2000 * 0.3 + 10_000 * 3.75 + 20_000 * 6.0 + 120 * 15.0)
    # Only 5-minute writes (or no breakdown): the cache_write price, as before.
    five = dict(raw, cache_creation={"ephemeral_5m_input_tokens": 30_000, "ephemeral_1h_input_tokens": 0})
    assert cost_micro_usd(Usage(cache_write_tokens=30_000, raw=five), sonnet) == 30_000 * 3.75
    assert cost_micro_usd(Usage(cache_write_tokens=30_000), sonnet) == 30_000 * 3.75
    # A lying breakdown never bills more tokens than were written; an unknown input price stays unknown.
    liar = {"cache_creation": {"ephemeral_1h_input_tokens": 10 ** 9}}
    assert cost_micro_usd(Usage(cache_write_tokens=10, raw=liar), sonnet) == 10 * 6.0
    assert cost_micro_usd(Usage(cache_write_tokens=10, raw=liar), Prices(cache_write=3.75)) is None


def test_registry_entries_may_carry_long_context_tiers() -> None:
    """`_prices` called float() on every field, so a `tiers` list in a registry file was a TypeError at load."""
    reg = parse_registry({"providers": {"g": {"protocol": "gemini", "models": {"pro": {
        "input": 1.25, "cache_read": 0.125, "output": 10.0,
        "tiers": [{"above_input_tokens": 200000, "input": 2.5, "cache_read": 0.25, "output": 15.0}]}}}}})
    prices = reg.get("g").model_prices["pro"]  # type: ignore[union-attr]
    assert cost_micro_usd(Usage(input_tokens=1000, output_tokens=10), prices) == 1250 + 100
    assert cost_micro_usd(Usage(input_tokens=300_000, output_tokens=10), prices) == 750_000 + 150


# --- unit: the budget's worst case ---------------------------------------------------------------------------


def budget_plugin(tmp_path: Any) -> BudgetPlugin:
    config = parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/b.db"},
        "providers": {
            "up": {"protocol": "openai_chat", "base_url": "http://127.0.0.1:9/v1", "api_key": "k",
                   "model_prices": {"big": {"input": 1000.0, "output": 1000.0}}},
            "free": {"protocol": "mock"},
            "mock": {"protocol": "mock", "prices": {"input": 1000.0, "output": 1000.0}},
        },
        "models": {"mixed": {"targets": [{"provider": "free", "model": "echo"}, {"provider": "mock", "model": "echo"}]}},
        "auth": {"mode": "api_keys", "budget": {"unknown_price_reservation_micro_usd": 10000}},
    })
    return BudgetPlugin(AuthSettings.from_config(config.auth).budget, StoreHandle(), config)


def worst(plugin: BudgetPlugin, model: str, max_tokens: int) -> int:
    prompt = openai_chat.CLIENT.decode_request({"model": model, "max_tokens": max_tokens,
                                                "messages": [{"role": "user", "content": "hi"}]})
    return plugin.worst_case(SimpleNamespace(prompt=prompt))  # type: ignore[arg-type]


def test_direct_route_reserves_the_models_price(tmp_path: Any) -> None:
    """`provider:model` was reserved at the provider's default price (unset: the unknown-price 10000) even
    though the routing table, and so the settlement, price it with the model's own price."""
    assert worst(budget_plugin(tmp_path), "up:big", 1000) == (1 + 1000) * 1000


def test_an_unpriced_target_does_not_hide_a_pricier_one(tmp_path: Any) -> None:
    """The first unpriced target of a route returned the unknown-price reservation, ignoring that a later
    (fallback) target costs more: the reservation is the most expensive target, as documented."""
    plugin = budget_plugin(tmp_path)
    assert worst(plugin, "mixed", 1000) == (1 + 1000) * 1000
    assert worst(plugin, "mixed", 1) == 10000  # the unknown-price reservation is still the floor


# --- e2e under gunicorn ------------------------------------------------------------------------------------


upstream = pytest.fixture(scope="module", name="upstream")(running_upstream)


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    db = f"sqlite:///{tmp_path_factory.mktemp('hunt-accounting')}/rp.db"
    url = upstream.url
    config: Dict[str, Any] = {
        "database": {"url": db},
        "providers": {
            "an": {"protocol": "anthropic_messages", "base_url": url, "api_key": "k", "prices": PRICES},
            "oc": {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "k", "prices": PRICES},
            "ge": {"protocol": "gemini", "base_url": url, "api_key": "k", "prices": PRICES},
            "orr": {"protocol": "openai_responses", "base_url": url + "/v1", "api_key": "k", "prices": PRICES},
            "half": {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "k", "prices": {"input": 1.0}},
            "bad": {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "k", "prices": PRICES},
            "priced": {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "k",
                       "model_prices": {"big": {"input": 1000.0, "output": 1000.0}}},
        },
        "models": {name: {"targets": [{"provider": name, "model": f"{name}-model"}]}
                   for name in ("an", "oc", "ge", "orr", "half")},
        "auth": {"mode": "api_keys"},
    }
    config["models"]["fb"] = {"targets": [{"provider": "bad", "model": "b"}, {"provider": "oc", "model": "oc-model"}]}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    gw.db_url = db  # type: ignore[attr-defined]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["keys", "create", "--config", gw.config_path or "", "--name", "free"]) == 0
    gw.key = buf.getvalue().strip()  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def chat(gw: GatewayProcess, key: str, model: str, stream: bool = False, **extra: Any) -> requests.Response:
    body: Dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    body.update(extra)
    return requests.post(gw.url + "/v1/chat/completions", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {key}"})


def buckets(row: Dict[str, Any]) -> List[int]:
    return [row[k] for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                             "reasoning_tokens")]


AN_USAGE = {"input_tokens": 40, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 2000,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "output_tokens": 120}
OC_USAGE = {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 800}, "completion_tokens_details": {"reasoning_tokens": 200}}


def an_message() -> Dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "an-model",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": AN_USAGE}


def an_stream() -> Reply:
    start_usage = {k: v for k, v in AN_USAGE.items() if k != "output_tokens"}
    return Reply.anthropic_sse([
        {"type": "message_start", "message": dict(an_message(), content=[], stop_reason=None,
                                                  usage=dict(start_usage, output_tokens=1))},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello there"}},
        {"type": "content_block_stop", "index": 0},
        # message_delta repeats the (cumulative) input counts: they must overwrite, never add.
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": AN_USAGE},
        {"type": "message_stop"}])


def gemini_chunk(text: str, usage: Dict[str, Any], finish: bool = False) -> Dict[str, Any]:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        cand["finishReason"] = "STOP"
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": "ge-model"}


GE_FIRST = {"promptTokenCount": 1000, "cachedContentTokenCount": 600, "candidatesTokenCount": 5,
            "thoughtsTokenCount": 50, "toolUsePromptTokenCount": 30, "totalTokenCount": 1085}
GE_LAST = dict(GE_FIRST, candidatesTokenCount=20, totalTokenCount=1100)
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "orr-model",
            "output": [{"type": "message", "id": "m1", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "yo", "annotations": []}]}],
            "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 800}, "output_tokens": 300,
                      "output_tokens_details": {"reasoning_tokens": 200}, "total_tokens": 1300}}

# case → (route, stream, upstream reply, expected buckets [in, read, write, out, reasoning], expected cost)
CASES: Dict[str, Any] = {
    "anthropic": ("an", False, lambda: Reply.json(an_message()), [40, 2000, 300, 120, 0],
                  cost(40, 2000, 100, 120, write_1h=200)),
    "anthropic-stream": ("an", True, an_stream, [40, 2000, 300, 120, 0], cost(40, 2000, 100, 120, write_1h=200)),
    "openai": ("oc", False, lambda: Reply.json(openai_completion("yo", usage=OC_USAGE)), [200, 800, 0, 100, 200],
               cost(200, 800, 0, 100, 200)),
    "openai-stream": ("oc", True, lambda: Reply.sse([
        openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "yo"}), openai_chunk({}, "stop"),
        openai_chunk(None, usage=OC_USAGE)]), [200, 800, 0, 100, 200], cost(200, 800, 0, 100, 200)),
    "gemini": ("ge", False, lambda: Reply.json(gemini_chunk("ab", GE_LAST, True)), [430, 600, 0, 20, 50],
               cost(430, 600, 0, 20, 50)),
    "gemini-stream": ("ge", True, lambda: Reply.sse([gemini_chunk("a", GE_FIRST), gemini_chunk("b", GE_LAST, True)],
                                                    done=None), [430, 600, 0, 20, 50], cost(430, 600, 0, 20, 50)),
    "responses": ("orr", False, lambda: Reply.json(RESPONSE), [200, 800, 0, 100, 200], cost(200, 800, 0, 100, 200)),
    "unpriced-output": ("half", False, lambda: Reply.json(openai_completion("yo")), [10, 0, 0, 5, 0], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_wire_settles_disjoint_buckets_and_their_cost(gateway: GatewayProcess, upstream: FakeUpstream,
                                                           case: str) -> None:
    route, stream, reply, expected, expected_cost = CASES[case]
    upstream.enqueue(reply())
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    r = chat(gateway, gateway.key, route, stream, **extra)  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    row = spend_row(gateway.db_url, r.headers["x-request-id"])
    assert (buckets(row), row["cost_micro_usd"], row["outcome"], bool(row["usage_reported"])) == \
        (expected, expected_cost, "success", True)


def test_an_anthropic_stream_cut_after_message_delta_settles_on_the_reported_usage(gateway: GatewayProcess,
                                                                                   upstream: FakeUpstream) -> None:
    """message_delta holds the provider's final counts; a stream that ends before message_stop (a failure)
    must settle on them, not on a character estimate of the text seen."""
    full = an_stream()
    upstream.enqueue(Reply(full.status, full.headers, chunks=full.chunks[:-1]))  # everything but message_stop
    r = chat(gateway, gateway.key, "an", True)  # type: ignore[attr-defined]
    assert r.status_code == 200 and "error" in r.text
    row = spend_row(gateway.db_url, r.headers["x-request-id"])
    assert (buckets(row), bool(row["usage_reported"])) == ([40, 2000, 300, 120, 0], True)
    assert row["outcome"] != "success"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_sees_the_estimate_that_is_billed_when_the_upstream_reports_no_usage(
        gateway: GatewayProcess, upstream: FakeUpstream, stream: bool) -> None:
    """An OpenAI-compatible server that sends no usage: the spend row holds an estimate; the client got
    0 tokens when not streaming (a stream already showed the estimate)."""
    body = openai_completion("a reply of some length")
    del body["usage"]
    if stream:
        upstream.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "a reply of some length"}),
                                    openai_chunk({}, "stop")]))
    else:
        upstream.enqueue(Reply.json(body))
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    r = chat(gateway, gateway.key, "oc", stream, **extra)  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    if stream:
        import json as _json

        frames = [_json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        usage = [f["usage"] for f in frames if f.get("usage")][-1]
    else:
        usage = r.json()["usage"]
    row = spend_row(gateway.db_url, r.headers["x-request-id"])
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (row["input_tokens"], row["output_tokens"])
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0 and not row["usage_reported"]


def test_fallback_is_one_row_with_the_serving_target(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply.json({"error": {"message": "down", "type": "server_error"}}, 503),
                     Reply.json(openai_completion("yo")))
    r = chat(gateway, gateway.key, "fb")  # type: ignore[attr-defined]
    assert r.status_code == 200
    row = spend_row(gateway.db_url, r.headers["x-request-id"])
    assert (row["provider"], row["attempts"], row["cost_micro_usd"]) == ("oc", 2, cost(10, out=5))


def test_count_tokens_writes_no_spend_row(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply.json({"input_tokens": 12}))
    r = requests.post(gateway.url + "/v1/messages/count_tokens", timeout=10,
                      headers={"Authorization": f"Bearer {gateway.key}"},  # type: ignore[attr-defined]
                      json={"model": "an", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200 and r.json() == {"input_tokens": 12}
    time.sleep(0.3)
    store = Store.from_url(gateway.db_url)  # type: ignore[attr-defined]
    try:
        assert spend_rows(store, "WHERE request_id = " + store.param, (r.headers["x-request-id"],)) == []
    finally:
        store.close()


def test_concurrent_direct_route_requests_cannot_overspend(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """Two parallel `priced:big` requests, each worth more than the whole budget: the first reservation must
    close the budget. Reserved at the unknown-price 10000 instead, both were admitted (and both spent)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["keys", "create", "--config", gateway.config_path or "", "--budget", "100000"]) == 0
    key = buf.getvalue().strip()
    slow = copy.deepcopy(openai_completion("yo", usage={"prompt_tokens": 10, "completion_tokens": 500,
                                                        "total_tokens": 510}))
    upstream.enqueue(Reply.json(slow, delay=1.0), Reply.json(slow, delay=1.0))
    codes: List[int] = []

    def one() -> None:
        codes.append(chat(gateway, key, "priced:big", max_tokens=1000).status_code)

    first = threading.Thread(target=one)
    first.start()
    time.sleep(0.4)  # the first is admitted and waiting on the upstream
    one()
    first.join()
    assert sorted(codes) == [200, 402], codes
    # The queue is shared with the other tests: leave it as it was.
    with upstream._lock:  # noqa: SLF001 - test support
        upstream._queue.clear()  # noqa: SLF001
