"""Metrics queries on a real SQLite store: windows, nearest-rank percentiles, merged plugin stats; error classes."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from routeplane.errors import (
    AllTargetsFailed,
    Forbidden,
    GuardrailViolation,
    InternalError,
    PaymentRequired,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from routeplane.language_model.events import error_class
from routeplane.language_model.settlement import Settlement
from routeplane.language_model.types import Usage
from routeplane.metrics import STATS_TABLE, nearest_rank, plugin_metrics, request_metrics
from routeplane.store import Store
from routeplane.store.migrations import migrate
from routeplane.store.spend_log import SpendLogPlugin, spend_row


@pytest.fixture()
def store(tmp_path: Any) -> Iterator[Store]:
    s = Store.from_url(f"sqlite:///{tmp_path}/m.db")
    migrate(s, [SpendLogPlugin(s)])
    yield s
    s.close()


def settle(store: Store, route: str, latency: float, *, started: float, ok: bool = True, model: str = "m",
           tokens: int = 10) -> None:
    s = Settlement(request_id="r", started_at=started, inbound_protocol="openai_chat", route=route, streamed=False,
                   outcome="success" if ok else "upstream_error", provider="p", model=model,
                   usage=Usage(input_tokens=tokens, output_tokens=2 * tokens), latency_ms=latency)
    row = spend_row(s)
    cols = ", ".join(row)
    store.execute(f"INSERT INTO spend_log ({cols}) VALUES ({', '.join([store.param] * len(row))})",
                  tuple(row.values()))


def test_nearest_rank() -> None:
    assert [nearest_rank(100, q) for q in (0.5, 0.99)] == [50, 99]
    assert [nearest_rank(1, q) for q in (0.5, 0.99)] == [1, 1]
    assert [nearest_rank(3, q) for q in (0.5, 0.99)] == [2, 3]
    # ceil(q * n) in integers, as the grouped SQL computes it: 0.07 * 100 is 7.000000000000001 in floats.
    assert [nearest_rank(100, q) for q in (0.07, 0.29, 0.57, 0.999)] == [7, 29, 57, 100]
    assert nearest_rank(1000, 0.999) == 999 and nearest_rank(0, 0.5) == 1


def test_window_percentiles_errors_and_endpoints(store: Store) -> None:
    now = time.time()
    for i in range(1, 101):  # latencies 1..100 ms, shuffled insert order
        lat = float((i * 37) % 100 + 1)
        settle(store, "r", lat, started=now - 60, ok=lat % 10 != 0, model="a" if lat <= 60 else "b")
    settle(store, "r", 5000.0, started=now - 2 * 3600)  # outside 1h, inside 24h
    doc = request_metrics(store, "1h", now=now)
    (route,) = doc["routes"]
    assert (route["requests"], route["errors"]) == (100, 10) and route["error_rate"] == 0.1
    assert route["latency_ms"] == {"p50": 50.0, "p99": 99.0}
    assert route["avg_input_tokens"] == 10 and route["avg_output_tokens"] == 20
    eps = {e["endpoint"]: e for e in route["endpoints"]}
    assert eps["p:a"]["requests"] == 60 and eps["p:a"]["latency_ms"] == {"p50": 30.0, "p99": 60.0}
    assert eps["p:b"]["requests"] == 40 and eps["p:b"]["latency_ms"] == {"p50": 80.0, "p99": 100.0}
    day = request_metrics(store, "24h", now=now)
    assert day["routes"][0]["requests"] == 101 and day["routes"][0]["latency_ms"]["p99"] == 100.0
    assert day["totals"]["requests"] == 101


def test_plugin_stats_rows_sum_over_workers(store: Store) -> None:
    cols = "worker, host, pid, plugin, stage, hook, invocations, errors, denies, timeouts, total_ms, updated_at"
    for worker, n in (("w1", 3), ("w2", 4)):
        store.execute(f"INSERT INTO {STATS_TABLE} ({cols}) VALUES (?, 'h', 1, 'g', 'pre_request', 'Check', ?, 1, 2,"
                      " 0, ?, ?)", (worker, n, n * 2.0, time.time()))
    (hook,) = plugin_metrics(store)["hooks"]
    assert (hook["invocations"], hook["errors"], hook["denies"], hook["workers"]) == (7, 2, 4, 2)
    assert hook["average_ms"] == 2.0


@pytest.mark.parametrize("err, expected", [
    (UpstreamTimeout("t"), "transport"),
    (UpstreamConnectionError("c"), "transport"),
    (UpstreamStatusError("s", upstream_status=500), "provider"),
    (AllTargetsFailed("a", errors=[UpstreamTimeout("t"), UpstreamConnectionError("c")]), "transport"),
    (AllTargetsFailed("a", errors=[UpstreamTimeout("t"), UpstreamStatusError("s")]), "provider"),
    (Forbidden("no"), "access_denied"),
    (PaymentRequired("no"), "budget"),
    (GuardrailViolation("no"), "guardrail"),
    (InternalError(), "internal"),
    ("authentication", "access_denied"),
    ("custom", "policy"),
    (None, None),
])
def test_error_class(err: Any, expected: Any) -> None:
    assert error_class(err) == expected


def test_error_class_of_a_client_that_left() -> None:
    assert error_class(None, "client_disconnected") == "client_disconnected"


def test_admin_metrics_merges_guardrail_counters_and_hook_denies(tmp_path: Any) -> None:
    from routeplane.app import build_app
    from routeplane.config import parse_config

    app = build_app(parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/g.db"},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "plugins": {"guardrails": {"upgoing": {"api_keys": "block"}}},
    }, "t"))
    client = app.flask_app().test_client()
    key = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
    for text in ("hello", f"my key is {key}", "again " + key):
        client.post("/v1/chat/completions", json={"model": "default",
                                                  "messages": [{"role": "user", "content": text}]}).close()
    resp = client.get("/admin/metrics")
    doc = resp.get_json()
    resp.close()
    hooks = {(h["plugin"], h["stage"]): h for h in doc["plugins"]["hooks"]}
    assert hooks[("guardrails", "pre_request")]["invocations"] == 3
    assert hooks[("guardrails", "pre_request")]["denies"] == 2
    counters = doc["plugins"]["counters"]["guardrails"]
    assert sum(a.get("block", 0) for d in counters.values() for a in d.values()) == 2, counters
    assert key not in str(doc)
    # Denied requests are not settled, so the spend-log counts hold only the served one.
    assert doc["requests"]["totals"]["requests"] == 1
    app.shutdown()


def test_a_failing_stats_flush_is_counted_and_never_touches_requests(tmp_path: Any) -> None:
    from routeplane.app import build_app
    from routeplane.config import parse_config

    app = build_app(parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/f.db"},
        "server": {"stats_flush_seconds": 0.05},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
    }, "t"))
    client = app.flask_app().test_client()
    app.store.execute(f"DROP TABLE {STATS_TABLE}")  # a broken store, as far as the flusher can tell
    for _ in range(5):
        resp = client.post("/v1/chat/completions", json={"model": "default",
                                                         "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200
        resp.close()
        time.sleep(0.06)
    flusher = app.stats_flusher
    deadline = time.monotonic() + 5
    while flusher.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flusher.failures >= 1 and flusher.flush_now() is False
    flusher._pid = -1  # end the loop without the final flush
    app.store.close()


def test_admin_metrics_groups_route_names_the_config_does_not_list(tmp_path: Any) -> None:
    """Any client may name models that do not exist (each a 404, each settled under its own route): /admin/metrics
    counts them as one route, `other`, whose endpoints are bounded too (direct routing picks the model)."""
    from routeplane.app import build_app
    from routeplane.config import parse_config

    app = build_app(parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/o.db"},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
    }, "t"))
    client = app.flask_app().test_client()
    try:
        sent = {}
        for model in ["default"] * 3 + [f"no-such-model-{i}" for i in range(40)] + ["mock:made-up-1", "mock:echo"]:
            resp = client.post("/v1/chat/completions", json={"model": model,
                                                             "messages": [{"role": "user", "content": "hi"}]})
            sent[model] = resp.status_code
            resp.close()
        assert sent["default"] == 200 and sent["no-such-model-0"] == 404
        resp = client.get("/admin/metrics?window=1h")
        doc = resp.get_json()
        resp.close()
        routes = {r["route"]: r for r in doc["requests"]["routes"]}
        assert set(routes) == {"default", "other"} and routes["default"]["requests"] == 3
        assert routes["other"]["requests"] == 42 and routes["other"]["latency_ms"]["p99"] is not None
        endpoints = {e["endpoint"] for e in routes["other"]["endpoints"]}
        assert endpoints == {None, "mock:other", "mock:echo"}, endpoints
        assert doc["requests"]["totals"]["requests"] == 45 and "no-such-model" not in str(doc)
    finally:
        app.shutdown()
        app.store.close()
