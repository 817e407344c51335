"""Thousands of client-chosen names: /metrics and /admin/metrics stay a bounded set of series and rows."""

from __future__ import annotations

import re
from typing import Any, List

from routeplane.app import build_app
from routeplane.config import parse_config

NAMES = 300


def build(tmp_path: Any) -> Any:
    config = parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/card.db"},
        "server": {"stats_flush_seconds": 3600},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "plugins": {"observe": {"prometheus_public": True}, "request_log": {"enabled": False}},
    })
    app = build_app(config)
    app.pipeline.observers.inline = True
    return app


def spray(client: Any) -> None:
    """Unknown routes (404), direct provider:model names (200), and direct names that fail upstream (503)."""
    for i in range(NAMES):
        for model in (f"nope-{i}", f"mock:echo-{i}", f"mock:fail-503-{i}"):
            r = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code in (200, 404, 502, 503), (model, r.status_code)


def test_prometheus_scrape_reads_and_writes_a_bounded_set(tmp_path: Any) -> None:
    app = build(tmp_path)
    client = app.flask_app().test_client()
    spray(client)
    fetched: List[int] = []
    execute = app.store.execute

    def counting(sql: str, params: Any = ()) -> Any:
        rows = execute(sql, params)
        fetched.append(len(rows))
        return rows

    app.store.execute = counting  # type: ignore[method-assign]
    text = client.get("/metrics").get_data(as_text=True)
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) < 100, "\n".join(series)
    assert not re.search(r"nope-|echo-\d|fail-503-", text)
    # The database folds the names: no query hands the scrape a row per name a client made up.
    assert max(fetched) < 20, fetched


def test_admin_metrics_is_bounded_too(tmp_path: Any) -> None:
    app = build(tmp_path)
    client = app.flask_app().test_client()
    spray(client)
    doc = client.get("/admin/metrics").get_json()
    routes = doc["requests"]["routes"]
    assert {r["route"] for r in routes} <= {"default", "other"}
    assert all(len(r["endpoints"]) < 10 for r in routes)
    assert doc["requests"]["totals"]["requests"] == 3 * NAMES
    assert len(str(doc["breakers"])) < 5000


def test_cost_counter_is_row_order_independent_with_folded_names() -> None:
    """test_hunt_auth_metrics' row-order check, against the folded query (its fake store needs `param`)."""
    from routeplane_observe.labels import Labels
    from routeplane_observe.prometheus import render

    labels = Labels(frozenset({"mock-echo"}), frozenset({"mock"}), frozenset({"echo"}))
    rows = [("mock-echo", "mock", "echo", outcome, 1, 1, 1, micro)
            for outcome, micro in (("success", 100000), ("upstream_error", 200000), ("aborted", 300000))]

    def scrape(ordered: List[Any]) -> str:
        class Store:
            dialect, param = "postgresql", "%s"

            def execute(self, sql: str, params: Any = ()) -> List[Any]:
                return list(ordered) if "GROUP BY route, provider, model, outcome" in sql else []

        class App:
            store = Store()

        return render(App(), labels)  # type: ignore[arg-type]

    one, other = scrape(rows), scrape(rows[::-1])
    assert one == other
    assert next(s for s in one.splitlines() if s.startswith("routeplane_cost_usd_total{")).endswith(" 0.6")
