"""Dashboard queries and views in process: time buckets, percentiles, filters, masking, CSV, auth and bad input."""

from __future__ import annotations

import copy
import csv
import io
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional

import pytest

from routeplane import dashboard_data as data
from routeplane.app import build_app
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.metrics import request_metrics
from routeplane.store.spend_log import SpendRecorder
from routeplane.web.dashboard import _csv_cell, bar_chart, line_chart, mask_key

NOW = 1_800_000_000.0


def row(started_at: float, *, route: str = "r", provider: Optional[str] = "mock", model: str = "echo",
        account: Optional[str] = "acct", status: int = 200, outcome: str = "success", cost: Optional[int] = 100,
        latency: float = 10.0, tin: int = 3, tout: int = 5) -> Dict[str, Any]:
    return {"id": "sp_" + uuid.uuid4().hex, "request_id": "req_" + uuid.uuid4().hex, "started_at": started_at,
            "recorded_at": started_at, "account_id": account, "session_id": None, "route": route,
            "provider": provider, "model": model, "inbound_protocol": "openai_chat", "streamed": False,
            "input_tokens": tin, "cache_read_tokens": 0, "cache_write_tokens": 0, "output_tokens": tout,
            "reasoning_tokens": 0, "usage_reported": True, "cost_micro_usd": cost, "latency_ms": latency,
            "ttft_ms": None, "attempts": 1, "attempts_json": "[]", "outcome": outcome,
            "error_type": None if outcome == "success" else "upstream", "status": status}


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def gw(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    if request.param == "sqlite":
        c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    else:  # PostgreSQL and MySQL bucket with FLOOR, SQLite with CAST: each is checked
        server = request.getfixturevalue("postgres_cluster" if request.param == "postgresql" else "mariadb_server")
        c["database"] = {"url": server.create_database("dash_" + uuid.uuid4().hex[:10])}
    c["providers"]["remote"] = {"protocol": "openai_chat", "base_url": "https://api.example.com/v1",
                                "api_key": "sk-proj-0123456789abcdefWXYZ", "headers": {"x-secret": "hidden-value"}}
    app = build_app(parse_config(c))
    flask_app = app.flask_app()
    try:
        yield app, flask_app.test_client()
    finally:
        app.shutdown()
        app.store.close()


def write(app: Any, rows: List[Dict[str, Any]]) -> None:
    SpendRecorder(app.store).write_rows(rows)


def test_buckets_place_rows_and_bound_the_chart(gw: Any) -> None:
    app, _client = gw
    write(app, [row(NOW - 10), row(NOW - 10, outcome="upstream_error", status=502, cost=None),
                row(NOW - 3599), row(NOW), row(NOW - 4000)])  # the last is outside the hour
    series = data.time_buckets(app.store, "1h", NOW)
    counts = [b["requests"] for b in series["buckets"]]
    assert len(counts) == 12 and counts[0] == 1 and counts[-1] == 3 and sum(counts) == 4
    assert series["buckets"][-1]["errors"] == 1 and series["buckets"][-1]["unknown_cost"] == 1
    assert series["buckets"][-1]["cost_micro_usd"] == 200
    bars = bar_chart(series, "requests", "Requests", "errors")
    assert [b["value"] for b in bars["bars"]] == counts and bars["part_total"] == 1
    assert bars["bars"][-1]["h"] > bars["bars"][0]["h"] > 0 == bars["bars"][1]["h"]
    line = line_chart(series, "cost_micro_usd", "Spend")
    assert len(line["points"]) == 12 and line["total"] == 300
    assert len(data.time_buckets(app.store, "7d", NOW)["buckets"]) == 28


def test_summary_percentiles_agree_with_admin_metrics(gw: Any) -> None:
    app, _client = gw
    write(app, [row(NOW - 60, latency=float(ms)) for ms in range(1, 101)])
    s = data.window_summary(app.store, 3600, NOW)
    m = request_metrics(app.store, "1h", now=NOW)["routes"][0]
    assert s["latency_ms"] == m["latency_ms"] == {"p50": 50.0, "p99": 99.0}
    assert s["requests"] == 100 and s["input_tokens"] == 300 and s["cost_micro_usd"] == 10000


def test_spend_groups_and_recent_filters(gw: Any) -> None:
    app, _client = gw
    write(app, [row(NOW - 5, account="a", cost=7), row(NOW - 4, account="a", cost=None, provider="free"),
                row(NOW - 3, account=None, cost=11, route="other"),
                row(NOW - 2, account="b", status=502, outcome="upstream_error", cost=0)])
    sp = data.spend(app.store, "24h", "account", NOW)
    by = {r["key"][0]: r for r in sp["rows"]}
    assert by["a"]["cost_micro_usd"] == 7 and by["a"]["unknown_cost"] == 1 and by[None]["cost_micro_usd"] == 11
    assert sp["total"]["requests"] == 4 and sp["total"]["cost_micro_usd"] == 18
    assert [r["key"] for r in data.spend(app.store, "24h", "model", NOW)["rows"]][0] == ("mock", "echo")
    assert [r["account_id"] for r in data.recent(app.store)] == ["b", None, "a", "a"]  # newest first
    assert [r["status"] for r in data.recent(app.store, status="error")] == [502]
    assert len(data.recent(app.store, status="ok")) == 3 and len(data.recent(app.store, status="200")) == 3
    assert [r["route"] for r in data.recent(app.store, route="other")] == ["other"]
    assert len(data.recent(app.store, account="a", limit=1)) == 1


def test_masking_and_csv_cells() -> None:
    assert mask_key("sk-proj-0123456789abcdefWXYZ") == "sk-…WXYZ"
    assert mask_key("AIzaSyD0123456789abcdefgh") == "…efgh"
    assert mask_key("short-key") == "…" and mask_key(None) == ""
    assert _csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _csv_cell("key_ab") == "key_ab" and _csv_cell(None) == ""


def test_pages_render_and_refuse(gw: Any) -> None:
    app, client = gw
    write(app, [row(time.time() - 5, account="=cmd|x", cost=5)])
    write(app, [row(time.time() - 50, account="<script>alert(1)</script>", route="<img src=x>")])  # escaped
    for path in ("/admin/", "/admin/?window=7d", "/admin/spend?by=route&window=30d", "/admin/requests?status=200",
                 "/admin/config"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["Cache-Control"] == "no-store" and r.mimetype == "text/html"
        assert "<script" not in r.get_data(as_text=True)
    cfg = client.get("/admin/config").get_data(as_text=True)
    assert "sk-…WXYZ" in cfg and "0123456789abcdef" not in cfg and "hidden-value" not in cfg and "x-secret" in cfg
    got = client.get("/admin/spend.csv?window=1h&by=account")
    rows = [r for r in csv.DictReader(io.StringIO(got.get_data(as_text=True))) if r["account_id"] == "'=cmd|x"]
    assert rows == [dict(rows[0], cost_micro_usd="5", cost_usd="0.000005")]
    page = client.get("/admin/requests").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<img src=x>" not in page
    assert "attachment" in got.headers["Content-Disposition"]
    for bad in ("/admin/?window=2h", "/admin/spend?by=session", "/admin/spend.csv?window=1y",
                "/admin/requests?status=teapot", "/admin/requests?limit=0", "/admin/requests?limit=9999"):
        r = client.get(bad)
        assert r.status_code == 400 and r.mimetype == "text/html", bad
    # Auth off: loopback only; another host gets the HTML 403 page.
    r = client.get("/admin/", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 403 and "<h1>403" in r.get_data(as_text=True)


def test_pages_without_a_store() -> None:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": ""}
    app = build_app(parse_config(c))
    assert app.store is None
    client = app.flask_app().test_client()
    try:
        for path in ("/admin/", "/admin/spend", "/admin/requests", "/admin/config"):
            r = client.get(path)
            assert r.status_code == 200 and "No store is configured" in r.get_data(as_text=True), path
        assert client.get("/admin/spend.csv").status_code == 409
    finally:
        app.shutdown()


def test_a_failing_store_is_a_503_page(gw: Any) -> None:
    app, client = gw
    app.store.execute("DROP TABLE spend_log")  # every dashboard query now fails
    r = client.get("/admin/")
    assert r.status_code == 503 and "Store unavailable" in r.get_data(as_text=True) and r.mimetype == "text/html"
