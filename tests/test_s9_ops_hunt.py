"""S9 hunt of the operations surface: /admin/metrics and /metrics when the store fails, /ready with a provider
keyed by a header, the spend chart's axis, and whether every view agrees with the spend log after a mixed load
(successes, upstream errors, fallbacks, client disconnects, denials) on two gunicorn workers."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import sqlite3
import time
from typing import Any, Dict, Iterator, List, Tuple

import peewee
import pytest
import requests

from routeplane.app import build_app
from routeplane.config import parse_config
from routeplane.store.spend_log import SpendRecorder
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.test_dashboard_e2e import create_key
from tests.test_dashboard_units import row
from tests.test_observability import parse_prometheus

SECRET_PATH = "/srv/secret-store/rp.db"


def in_process(tmp_path: Any, **extra: Any) -> Any:
    config = {
        "database": {"url": f"sqlite:///{tmp_path}/ops.db"},
        "providers": {"mock": {"protocol": "mock", "prices": {"input": 1.0, "output": 2.0}}},
        "models": {"fast": {"targets": [{"provider": "mock", "model": "echo"}]}},
        **extra,
    }
    return build_app(parse_config(config, "test"))


@pytest.fixture()
def gateway(tmp_path: Any) -> Iterator[Tuple[Any, Any]]:
    app = in_process(tmp_path, plugins={"observe": {"prometheus": True, "prometheus_public": True}})
    try:
        yield app, app.flask_app().test_client()
    finally:
        app.shutdown()
        app.store.close()


def break_store(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_args: Any, **_kw: Any) -> Any:
        raise peewee.OperationalError(f"unable to open database file {SECRET_PATH}")

    monkeypatch.setattr(app.store, "execute", down)


# --- the JSON admin API answers in JSON, whatever fails -------------------------------------------------------------

def test_admin_metrics_answers_a_store_outage_with_a_json_503(gateway: Tuple[Any, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app, client = gateway
    break_store(app, monkeypatch)
    resp = client.get("/admin/metrics")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 503 and resp.content_type == "application/json", body
    err = json.loads(body)["error"]
    assert err["code"] == "store_unavailable" and err["type"] == "server_error"
    assert SECRET_PATH not in body and resp.headers["x-request-id"]


def test_an_admin_metrics_bug_is_a_json_500(gateway: Tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _app, client = gateway

    def bug(*_args: Any, **_kw: Any) -> Any:
        raise ZeroDivisionError("a bug, not an outage")

    monkeypatch.setattr("routeplane.metrics.request_metrics", bug)
    resp = client.get("/admin/metrics")
    assert resp.status_code == 500 and resp.content_type == "application/json"
    assert resp.get_json()["error"]["type"] == "server_error" and "Traceback" not in resp.get_data(as_text=True)


def test_prometheus_metrics_answer_a_store_outage_with_a_503(gateway: Tuple[Any, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    app, client = gateway
    break_store(app, monkeypatch)
    resp = client.get("/metrics")
    assert resp.status_code == 503 and resp.content_type.startswith("text/plain")


def test_a_provider_called_none_is_not_the_missing_provider(tmp_path: Any) -> None:
    app = in_process(tmp_path, providers={"none": {"protocol": "mock"}},
                     models={"nn": {"targets": [{"provider": "none", "model": "echo"}]}},
                     plugins={"observe": {"prometheus": True, "prometheus_public": True}})
    try:
        client = app.flask_app().test_client()
        for model in ("nn", "no-such-model"):
            client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})
        samples = parse_prometheus(client.get("/metrics").get_data(as_text=True))
        routes = {dict(labels)["route"] for (name, labels) in samples
                  if name == "routeplane_requests_total" and dict(labels)["provider"] == "none"}
        assert routes == {"nn"}
    finally:
        app.shutdown()
        app.store.close()


# --- /ready: a provider keyed by a header is usable -------------------------------------------------------------------

@pytest.mark.parametrize("protocol, base_url, header", [
    ("openai_chat", "https://api.openai.com/v1", "Authorization"),
    ("anthropic_messages", "https://api.anthropic.com", "x-api-key"),
    ("gemini", "https://generativelanguage.googleapis.com", "X-Goog-Api-Key"),
])
def test_ready_counts_a_provider_whose_key_is_a_header(protocol: str, base_url: str, header: str) -> None:
    # `headers` replace the api_key's header (protocols/base.py), and a URL credential is refused with
    # "use api_key or headers": such a provider answers, so a load balancer must not take the host out.
    config = {"database": {"url": ""},
              "providers": {"p": {"protocol": protocol, "base_url": base_url, "headers": {header: "k-0123456789"}}},
              "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}
    app = build_app(parse_config(config, "test"))
    resp = app.flask_app().test_client().get("/ready")
    assert resp.status_code == 200 and resp.get_json()["providers"] == ["p"], resp.get_json()
    assert "k-0123456789" not in resp.get_data(as_text=True)


def test_ready_still_refuses_an_official_host_with_no_credential_header() -> None:
    config = {"database": {"url": ""},
              "providers": {"p": {"protocol": "openai_chat", "base_url": "https://api.openai.com/v1",
                                  "headers": {"OpenAI-Organization": "org-1", "Authorization": ""}}},
              "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}
    app = build_app(parse_config(config, "test"))
    resp = app.flask_app().test_client().get("/ready")
    assert resp.status_code == 503 and "no usable provider" in json.dumps(resp.get_json()["problems"])


# --- the dashboard's spend chart ----------------------------------------------------------------------------------

def test_the_spend_chart_of_a_fraction_of_a_dollar_is_not_a_flat_line(gateway: Tuple[Any, Any]) -> None:
    app, client = gateway
    SpendRecorder(app.store).write_rows([row(time.time() - 10, cost=345)])  # $0.000345
    page = client.get("/admin/?window=1h").get_data(as_text=True)
    svg = page.split('id="spend-chart"')[1].split("</svg>")[0]
    base = float(re.search(r'class="axis" x1="[\d.]+" x2="[\d.]+" y1="([\d.]+)"', svg).group(1))
    points = {int(v): float(y) for y, v in re.findall(r'<circle class="point" cx="[\d.]+" cy="([\d.]+)" r="3" '
                                                      r'data-value="(\d+)"', svg)}
    assert points[345] < base - 50, (points, base)  # drawn in the chart's upper part, not on the axis
    assert "$0.000345" in svg


# --- every view agrees with the spend log after a mixed load on two workers ----------------------------------------

def slow_upstream(req: Any) -> Reply:
    def chunk(delta: Dict[str, Any], finish: Any = None) -> Dict[str, Any]:
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    usage = {"prompt_tokens": 3, "completion_tokens": 20, "total_tokens": 23}
    if (req.json or {}).get("stream"):
        return Reply.sse([chunk({"content": "a"}) for _ in range(20)] + [chunk({}, "stop"),
                         {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                          "usage": usage}], chunk_delay=0.1)
    return Reply.json({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "usage": usage,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}]})


def hang_up_mid_stream(port: int, key: str) -> None:
    body = json.dumps({"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\n\r\n" + body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)


@pytest.mark.e2e
def test_two_workers_every_view_agrees_with_the_spend_log(tmp_path: Any) -> None:
    up = FakeUpstream().start()
    up.default = slow_upstream
    db = f"{tmp_path}/rp.db"
    provider_key = "sk-upstream-0123456789abcdefSECRET"
    config = {
        "database": {"url": f"sqlite:///{db}"},
        "server": {"stats_flush_seconds": 0.3},
        "auth": {"mode": "api_keys"},
        "providers": {"mock": {"protocol": "mock", "prices": {"input": 1.0, "output": 2.0}},
                      "up": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": provider_key,
                             "prices": {"input": 1.0, "output": 2.0}}},
        "models": {"fast": {"targets": [{"provider": "mock", "model": "echo"}]},
                   "down": {"targets": [{"provider": "mock", "model": "fail-503"}]},
                   "fb": {"targets": [{"provider": "mock", "model": "fail-500"}, {"provider": "mock", "model": "echo"}]},
                   "slow": {"targets": [{"provider": "up", "model": "m"}]}},
        "plugins": {"observe": {"prometheus": True}},
    }
    gw = GatewayProcess(config, workers=2, threads=8).start()
    try:
        assert gw.config_path is not None
        admin = create_key(gw.config_path, "--name", "ops", "--scope", "admin")
        user = create_key(gw.config_path, "--name", "user")
        tiny = create_key(gw.config_path, "--name", "tiny", "--budget", "1")
        only_fast = create_key(gw.config_path, "--name", "narrow", "--models", "fast")
        keys = (admin, user, tiny, only_fast)
        statuses = mixed_load(gw, user, tiny, only_fast)
        served = sum(n for s, n in statuses.items() if s not in (401, 402, 403))
        assert statuses[401] == 2 and statuses[403] == 1 and statuses[402] == 2, statuses

        rows = wait_for_rows(db, served)
        by_outcome = dict(rows.execute("SELECT outcome, COUNT(*) FROM spend_log GROUP BY outcome").fetchall())
        assert by_outcome == {"success": 9, "upstream_error": 2, "client_disconnected": 2, "error": 1}, by_outcome
        micro = rows.execute("SELECT SUM(cost_micro_usd) FROM spend_log").fetchone()[0]
        seen = check_prometheus(gw, admin, served, by_outcome, micro, statuses)
        seen += check_admin_views(gw, admin, served, by_outcome, micro)
        for key in keys + (provider_key,):
            assert key not in seen, "a credential in an operations view"
    finally:
        gw.stop()
        up.stop()


def mixed_load(gw: GatewayProcess, user: str, tiny: str, only_fast: str) -> Dict[int, int]:
    def send(key: str, model: str, stream: bool = False) -> int:
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]}
        with requests.post(gw.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                           stream=stream, timeout=30) as resp:
            resp.content  # noqa: B018 - read it all
            return resp.status_code

    out: List[int] = []
    out += [send(user, "fast") for _ in range(3)] + [send(user, "fast", True) for _ in range(2)]
    out += [send(user, "down"), send(user, "down", True), send(user, "fb"), send(user, "fb", True)]
    out += [send(user, "slow"), send(user, "no-such-model")]
    out += [send(tiny, "fast") for _ in range(3)]  # admitted while under the limit, then 402
    out += [send("sk-not-a-key-0123456789", "fast") for _ in range(2)] + [send(only_fast, "down")]
    for _ in range(2):
        hang_up_mid_stream(gw.port, user)
    counts: Dict[int, int] = {}
    for status in out:
        counts[status] = counts.get(status, 0) + 1
    counts[200] += 2  # the streams the client hung up on were answered 200
    return counts


def wait_for_rows(db: str, n: int) -> sqlite3.Connection:
    con = sqlite3.connect(db)
    deadline = time.monotonic() + 20
    while con.execute("SELECT COUNT(*) FROM spend_log").fetchone()[0] < n and time.monotonic() < deadline:
        time.sleep(0.1)
    assert con.execute("SELECT COUNT(*) FROM spend_log").fetchone()[0] == n
    return con


def check_prometheus(gw: GatewayProcess, admin: str, served: int, by_outcome: Dict[str, int], micro: int,
                     statuses: Dict[int, int]) -> str:
    """Parsed strictly, equal to the spend log, counters never going down across flushes; returns every text."""
    texts: List[str] = []
    previous: Dict[Any, float] = {}
    deadline = time.monotonic() + 20
    while True:
        resp = requests.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        texts.append(resp.text)
        samples = parse_prometheus(resp.text)
        check_families(resp.text, samples)
        for key, value in previous.items():
            if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
                assert samples.get(key, -1.0) >= value, key
        previous = samples
        denies = {dict(k[1])["plugin"]: v for k, v in samples.items()
                  if k[0] == "routeplane_plugin_hook_denies_total" and dict(k[1])["stage"] == "pre_request"}
        if denies == {"auth": statuses[401] + statuses[403], "budget": statuses[402]} and len(texts) >= 4:
            break  # every worker flushed its denials, and the counters were read across several flushes
        assert time.monotonic() < deadline, denies
        time.sleep(0.3)
    requests_total = {k: v for k, v in previous.items() if k[0] == "routeplane_requests_total"}
    assert sum(requests_total.values()) == served
    for outcome, n in by_outcome.items():
        assert sum(v for k, v in requests_total.items() if dict(k[1])["outcome"] == outcome) == n, outcome
    cost = sum(v for k, v in previous.items() if k[0] == "routeplane_cost_usd_total")
    assert cost == pytest.approx(micro / 1e6)
    return "\n".join(texts)


def check_families(text: str, samples: Dict[Any, float]) -> None:
    """HELP and TYPE once per family, before its samples; histograms cumulative, ending at +Inf == _count."""
    declared: Dict[str, Tuple[str, ...]] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            kind, name = line.split()[1:3]
            declared.setdefault(name, ())
            assert kind not in declared[name], f"second {kind} for {name}"
            declared[name] += (kind,)
    assert all(v == ("HELP", "TYPE") for v in declared.values()), declared
    buckets: Dict[Tuple[Any, ...], List[Tuple[float, float]]] = {}
    for (name, labels), value in samples.items():
        if name.endswith("_bucket"):
            rest = tuple(kv for kv in labels if kv[0] != "le")
            buckets.setdefault((name[:-len("_bucket")], rest), []).append((float(dict(labels)["le"]), value))
    assert buckets
    for (base, rest), series in buckets.items():
        counts = [v for _le, v in sorted(series)]
        assert counts == sorted(counts) and sorted(series)[-1][0] == float("inf")
        assert counts[-1] == samples[(base + "_count", rest)] and (base + "_sum", rest) in samples


def check_admin_views(gw: GatewayProcess, admin: str, served: int, by_outcome: Dict[str, int], micro: int) -> str:
    headers = {"Authorization": f"Bearer {admin}"}
    errors = served - by_outcome["success"]
    doc = requests.get(gw.url + "/admin/metrics", headers=headers, timeout=30).json()
    assert (doc["requests"]["totals"]["requests"], doc["requests"]["totals"]["errors"]) == (served, errors)
    page = requests.get(gw.url + "/admin/?window=1h", headers=headers, timeout=30).text
    card = dict(re.findall(r'data-k="(\w+)"[^>]*>([^<]*)<', page.split('id="summary-1h"')[1].split("</section>")[0]))
    assert (card["requests"], card["errors"], card["spend"]) == (str(served), str(errors), f"${micro / 1e6:,.6f}")
    table = requests.get(gw.url + "/admin/spend.csv?window=1h&by=route", headers=headers, timeout=30).text
    lines = list(csv.DictReader(io.StringIO(table)))
    assert sum(int(r["requests"]) for r in lines) == served and sum(int(r["errors"]) for r in lines) == errors
    assert sum(int(r["cost_micro_usd"]) for r in lines) == micro
    recent = requests.get(gw.url + "/admin/requests?limit=500", headers=headers, timeout=30).text
    assert recent.count("data-request-id=") == served
    return json.dumps(doc) + page + table + recent
