"""Dashboard queries and views in process: time buckets, percentiles, filters, masking, CSV, auth and bad input."""

from __future__ import annotations

import copy
import csv
import io
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from routeplane import dashboard_data as data
from routeplane.app import build_app
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.metrics import (
    COUNTERS_TABLE,
    STATS_TABLE,
    NameBounds,
    grouped_percentiles,
    nearest_rank,
    plugin_metrics,
    request_metrics,
)
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
    assert mask_key("sk-proj-0123456789abcdefWXYZ") == "sk-proj-…WXYZ"
    assert mask_key("AIzaSyD0123456789abcdefgh") == "AIza…efgh"
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
    assert "sk-proj-…WXYZ" in cfg and "0123456789abcdef" not in cfg and "hidden-value" not in cfg and "x-secret" in cfg
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


@pytest.mark.parametrize("key, shown", [
    ("Xk9bQ2z-R7tU9vW1xY3zA5bC7dE9fG1h", "…fG1h"),  # a '-' early in a random key is no kind prefix
    ("ab-" + "R7tU9vW1xY3zA5bC7dE9fG1h", "…fG1h"),
    ("sk-ant-api03-" + "x" * 40 + "WXYZ", "sk-ant-…WXYZ"),
    ("sk-upstream-secret-never-shown-wxyz", "sk-…wxyz"),
    ("xai-" + "q" * 40 + "abcd", "xai-…abcd"),
    ("gsk_" + "q" * 40 + "abcd", "gsk_…abcd"),
    ("rpk_0123456789abcdef_" + "s" * 39 + "wxyz", "rpk_…wxyz"),
    ("sk-ant-" + "x" * 12, "…"),  # too little past the prefix to show anything
])
def test_mask_key_shows_only_a_known_kind_prefix_and_four(key: str, shown: str) -> None:
    assert mask_key(key) == shown


def counting(store: Any, monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Every statement the store runs from now on."""
    seen: List[str] = []
    real = store.execute

    def execute(sql: str, params: Any = ()) -> Any:
        seen.append(sql)
        return real(sql, params)

    monkeypatch.setattr(store, "execute", execute)
    return seen


def nearest(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    return {"p50": ordered[nearest_rank(len(ordered), 0.5) - 1], "p99": ordered[nearest_rank(len(ordered), 0.99) - 1]}


def test_unconfigured_route_names_are_one_group_in_a_fixed_number_of_queries(
        gw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients choose route names (each unknown model is a 404 with its own spend-log row): the overview and
    /admin/metrics group every name the config does not list as `other`, with a fixed number of queries."""
    app, client = gw
    names = NameBounds.from_config(app.config)
    write(app, [row(NOW - 60, route="default", latency=float(ms)) for ms in range(1, 11)])
    bogus = [f"no-such-model-{i}" for i in range(30)] + ["DEFAULT", "default "]  # case and padding: not `default`
    write(app, [row(NOW - 30, route=r, provider=None, model=None, latency=100.0 + i) for i, r in enumerate(bogus)])
    # Direct `provider:model` routing: the model is the client's choice too.
    write(app, [row(NOW - 20, route=f"mock:made-up-{i}", model=f"made-up-{i}", latency=500.0 + i) for i in range(8)])
    other = [100.0 + i for i in range(len(bogus))] + [500.0 + i for i in range(8)]

    def views() -> Tuple[Dict[str, Any], Dict[str, Any], int]:
        seen = counting(app.store, monkeypatch)
        ov = data.overview(app.store, "24h", NOW, names=names)
        doc = request_metrics(app.store, "24h", now=NOW, names=names)
        monkeypatch.undo()
        return ov, doc, len(seen)

    ov, doc, queries = views()
    routes = {r["key"][0]: r for r in ov["routes"]}
    assert set(routes) == {"default", "other"}
    assert routes["other"]["requests"] == len(other) and routes["other"]["names"] == len(bogus) + 8
    assert routes["other"]["latency_ms"] == nearest(other) and routes["default"]["names"] == 0
    assert routes["default"]["latency_ms"] == {"p50": 5.0, "p99": 10.0}
    assert {r["key"][0] for r in ov["providers"]} == {"mock", None}
    by_route = {r["route"]: r for r in doc["routes"]}
    assert [r["route"] for r in doc["routes"]] == ["other", "default"]
    assert by_route["other"]["latency_ms"] == nearest(other) and by_route["default"]["latency_ms"]["p99"] == 10.0
    endpoints = {e["endpoint"]: e for e in by_route["other"]["endpoints"]}
    assert set(endpoints) == {None, "mock:other"}  # made-up models are `other` too
    assert endpoints["mock:other"]["latency_ms"] == nearest([500.0 + i for i in range(8)])
    assert endpoints[None]["latency_ms"] == nearest([100.0 + i for i in range(len(bogus))])
    # Twenty times the names: the same statements, not one (or two) per name.
    write(app, [row(NOW - 10, route=f"more-{i}", provider=None, model=None) for i in range(600)])
    ov2, doc2, queries2 = views()
    assert queries2 == queries <= 20, (queries, queries2)
    assert len(ov2["routes"]) == 2 and len(doc2["routes"]) == 2
    assert {r["key"][0]: r for r in ov2["routes"]}["other"]["names"] == len(bogus) + 8 + 600
    page = client.get("/admin/?window=24h").get_data(as_text=True)
    assert "no-such-model" not in page and "not in the config" in page


def test_grouped_percentiles_are_nearest_rank_in_every_group(gw: Any) -> None:
    app, _client = gw
    groups: Dict[Tuple[Any, Any], List[float]] = {}
    rows = []
    for i in range(300):  # uneven group sizes (1 to ~100 rows), ties, and a NULL provider
        route, provider = f"r{i % 7}" if i % 11 else "solo", None if i % 5 == 0 else f"p{i % 3}"
        latency = float((i * 37) % 53)
        if route == "solo" and (route, provider) in groups:
            continue
        groups.setdefault((route, provider), []).append(latency)
        rows.append(row(NOW - 5, route=route, provider=provider, latency=latency))
    write(app, rows)
    source, params = NameBounds().source(app.store, NOW - 60, ("route", "provider"))
    per_route, per_pair = grouped_percentiles(app.store, source, params, [("k0",), ("k0", "k1")])
    assert per_pair == {key: nearest(values) for key, values in groups.items()}
    by_route: Dict[Tuple[Any, ...], List[float]] = {}
    for (route, _p), values in groups.items():
        by_route.setdefault((route,), []).extend(values)
    assert per_route == {key: nearest(values) for key, values in by_route.items()}
    assert {k: v for k, v in per_route.items()} == {
        (r,): data.percentiles(app.store, NOW - 60, f"route = {app.store.param}", (r,)) for (r,) in by_route}


def test_names_differing_only_in_case_or_padding_stay_apart_on_every_dialect(gw: Any) -> None:
    """MySQL compares strings case- and trailing-space-insensitively: the groups, their percentiles and the
    plugin counters are by the names as written there too (`Other` is not the folded `other`)."""
    app, _client = gw
    names = NameBounds(routes=["Other", "Mixed", "mixed", "default"], providers=["mock"], models=["echo", "Echo"])
    latencies = {"Other": [1.0, 2.0, 3.0], "Mixed": [10.0, 20.0], "mixed": [30.0, 40.0, 50.0, 60.0],
                 "other": [900.0 + i for i in range(6)]}
    rows = [row(NOW - 10, route=r, latency=ms) for r in ("Other", "Mixed") for ms in latencies[r]]
    rows += [row(NOW - 10, route="mixed", model="Echo" if ms > 40 else "echo", latency=ms) for ms in latencies["mixed"]]
    rows += [row(NOW - 10, route=r, latency=900.0 + i) for i, r in enumerate(
        [f"made-up-{i}" for i in range(4)] + ["Mixed ", "other"])]  # padded or unconfigured: `other`
    write(app, rows)
    expected = {r: (len(v), nearest(v)) for r, v in latencies.items()}
    doc = request_metrics(app.store, "24h", now=NOW, names=names)
    assert {r["route"]: (r["requests"], r["latency_ms"]) for r in doc["routes"]} == expected
    mixed = {e["endpoint"]: (e["requests"], e["latency_ms"]) for r in doc["routes"] if r["route"] == "mixed"
             for e in r["endpoints"]}
    assert mixed == {"mock:echo": (2, nearest([30.0, 40.0])), "mock:Echo": (2, nearest([50.0, 60.0]))}
    ov = data.overview(app.store, "24h", NOW, names=names)
    assert {r["key"][0]: (r["requests"], r["latency_ms"]) for r in ov["routes"]} == expected
    assert {r["key"][0]: r["names"] for r in ov["routes"]} == {"Other": 0, "Mixed": 0, "mixed": 0, "other": 6}
    p = app.store.param
    for plugin, name, value in (("g", "Hits.x", 1), ("g", "hits.x", 2), ("G", "hits.x", 4), ("g", "hits.x ", 8)):
        app.store.execute(f"INSERT INTO {STATS_TABLE} (worker, host, pid, plugin, stage, hook, invocations, errors,"
                          f" denies, timeouts, total_ms, updated_at) VALUES ({p}, 'h', 1, {p}, 'pre', {p}, {p}, 0, 0,"
                          f" 0, 1.0, {p})", (f"w{value}", plugin, name, value, NOW))
        app.store.execute(f"INSERT INTO {COUNTERS_TABLE} (worker, host, pid, plugin, name, value, updated_at)"
                          f" VALUES ({p}, 'h', 1, {p}, {p}, {p}, {p})", (f"w{value}", plugin, name, value, NOW))
    plugins = plugin_metrics(app.store)
    assert plugins["counters"] == {"g": {"Hits": {"x": 1}, "hits": {"x": 2, "x ": 8}}, "G": {"hits": {"x": 4}}}
    assert {(h["plugin"], h["hook"]): h["invocations"] for h in plugins["hooks"]} == {
        ("g", "Hits.x"): 1, ("g", "hits.x"): 2, ("G", "hits.x"): 4, ("g", "hits.x "): 8}


def test_a_configured_route_called_other_keeps_its_name() -> None:
    bounds = NameBounds(routes=["other", "(other)", "a"])
    assert bounds.other("route") == "((other))" and NameBounds(routes=["a"]).other("route") == "other"
    assert NameBounds().other("route") == "other"


@pytest.mark.parametrize("query", ["limit=%C2%B2", "limit=%E2%91%A0", "limit=" + "1" * 4400, "limit=-5",
                                   "limit=%EF%BC%95", "status=%C2%B2%C2%B2%C2%B2", "status=%D9%A2%D9%A0%D9%A0",
                                   "status=2000", "status=099", "route=%00", "account=" + "a" * 256])
def test_bad_recent_requests_parameters_are_a_400(gw: Any, query: str) -> None:
    # "²", "①", "５" and Arabic-Indic digits pass str.isdigit(), which int() refuses or reads otherwise; more than
    # 4300 digits is past int()'s limit; NUL is refused by PostgreSQL. None of it is a store outage.
    _app, client = gw
    r = client.get(f"/admin/requests?{query}")
    assert r.status_code == 400 and "Store unavailable" not in r.get_data(as_text=True), (query, r.status_code)
    assert client.get("/admin/requests?limit=0007&status=200").status_code == 200


def test_a_bug_is_a_500_page_not_a_store_outage(gw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _app, client = gw

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ValueError("not the store's fault")

    monkeypatch.setattr(data, "recent", broken)
    r = client.get("/admin/requests")
    text = r.get_data(as_text=True)
    assert r.status_code == 500 and "Internal error" in text and "Store unavailable" not in text
    assert "not the store" not in text and r.mimetype == "text/html"


@pytest.fixture
def signed_in(tmp_path: Any) -> Iterator[Tuple[Any, str]]:
    """A gateway with auth.mode api_keys (the test client's host is `localhost`) and an admin key."""
    from routeplane.auth.keys import create_key
    from routeplane.auth.store import AuthStore

    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{tmp_path}/auth.db"}
    c["auth"] = {"mode": "api_keys"}
    app = build_app(parse_config(c))
    try:
        yield app.flask_app().test_client(), create_key(AuthStore(app.store), scope="admin")[1]
    finally:
        app.shutdown()
        app.store.close()


CROSS_SITE = [{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
              {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.localhost"},  # a sibling host: not ours
              {"Sec-Fetch-Site": "cross-site"},
              {"Origin": "https://evil.example"},  # an older browser: no Sec-Fetch-*, Origin is another host
              {"Origin": "http://localhost:8443"},  # another port is another origin
              {"Origin": "null"}]  # a sandboxed frame or a file: page
SAME_SITE = [{"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
             {"Sec-Fetch-Site": "none"},  # the user's own navigation
             {"Origin": "http://localhost"},
             {"Origin": "https://gw.example", "X-Forwarded-Host": "gw.example"},  # behind a proxy
             {}]  # curl, scripts: no browser, no CSRF


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_login_and_logout_refuse_cross_site_posts(signed_in: Tuple[Any, str], headers: Dict[str, str]) -> None:
    # A cross-site form POST may set a SameSite=Strict cookie: without this check any page could sign a visitor's
    # browser in with a credential of the attacker's choosing (login CSRF), or sign them out.
    client, admin = signed_in
    r = client.post("/admin/login", data={"credential": admin}, headers=headers)
    assert r.status_code == 403 and "Set-Cookie" not in r.headers, (headers, r.status_code, r.headers)
    assert "another site" in r.get_data(as_text=True) and admin not in r.get_data(as_text=True)
    out = client.post("/admin/logout", headers=headers)
    assert out.status_code == 403 and "Set-Cookie" not in out.headers


@pytest.mark.parametrize("headers", SAME_SITE)
def test_login_and_logout_from_the_dashboard_itself(signed_in: Tuple[Any, str], headers: Dict[str, str]) -> None:
    client, admin = signed_in
    r = client.post("/admin/login", data={"credential": admin}, headers=headers)
    assert r.status_code == 303 and "routeplane_admin=" in r.headers["Set-Cookie"], (headers, r.status_code)
    assert client.get("/admin/").status_code == 200  # the cookie signs the pages in
    out = client.post("/admin/logout", headers=headers)
    assert out.status_code == 303 and "routeplane_admin=;" in out.headers["Set-Cookie"]
