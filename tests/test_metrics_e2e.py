"""Real gunicorn with 3 workers: /admin/metrics and /metrics count exactly what was sent, whichever worker answers."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from tests.test_observability import OTLPReceiver, attrs, parse_prometheus

pytestmark = pytest.mark.e2e

PROMPT = "count me in please"  # 18 characters: the mock bills ceil(18/4) = 5 input tokens
IN_TOKENS = 5
OUT_TOKENS = (len("You said: " + PROMPT) + 3) // 4

# kind → (route, stream, expected ok, count)
MIX: Dict[str, Tuple[str, bool, bool, int]] = {
    "plain": ("alpha", False, True, 12),
    "stream": ("alpha", True, True, 8),
    "other_route": ("beta", False, True, 6),
    "broken": ("broken", False, False, 5),
    "broken_stream": ("broken", True, False, 3),
    "fallback": ("fallback", True, True, 6),
}


def gateway_config(database_url: str, otlp: str) -> Dict[str, Any]:
    return {
        "database": {"url": database_url},
        "server": {"stats_flush_seconds": 0.3},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {
            "alpha": {"targets": [{"provider": "mock", "model": "echo"}]},
            "beta": {"targets": [{"provider": "mock", "model": "echo-b"}]},
            "broken": {"targets": [{"provider": "mock", "model": "fail-503"}]},
            "fallback": {"targets": [{"provider": "mock", "model": "fail-503"}, {"provider": "mock", "model": "echo"}]},
        },
        "plugins": {"observe": {"prometheus": True, "otlp_endpoint": otlp, "metrics": False}},
    }


def send(base: str, route: str, stream: bool) -> int:
    body = {"model": route, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    with requests.post(base + "/v1/chat/completions", json=body, stream=stream, timeout=30) as resp:
        resp.content  # noqa: B018 - read it all
        return resp.status_code


def get_metrics(base: str) -> Dict[str, Any]:
    with requests.get(base + "/admin/metrics", params={"window": "1h"}, timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/metrics.db"
    else:
        server = request.getfixturevalue("postgres_cluster" if request.param == "postgresql" else "mariadb_server")
        yield server.create_database("metrics_" + uuid.uuid4().hex[:12])


def test_three_workers_metrics_equal_what_was_sent(gateway_process: Any, database_url: str) -> None:
    receiver = OTLPReceiver()
    try:
        run_burst(gateway_process, database_url, receiver)
    finally:
        receiver.stop()


def run_burst(gateway_process: Any, database_url: str, receiver: OTLPReceiver) -> None:
    gw = gateway_process(gateway_config(database_url, receiver.url), workers=3, threads=4)
    jobs: List[Tuple[str, bool]] = [(route, stream) for route, stream, _ok, n in MIX.values() for _ in range(n)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda job: send(gw.url, *job), jobs))
    # A streamed failure before the first byte is still a plain error status.
    expected_ok = [ok for _route, _stream, ok, n in MIX.values() for _ in range(n)]
    assert [s == 200 for s in statuses] == expected_ok, statuses
    total = len(jobs)

    sent: Dict[str, Dict[str, int]] = {}
    for route, stream, ok, n in MIX.values():
        s = sent.setdefault(route, {"requests": 0, "errors": 0, "streamed": 0, "ok": 0})
        s["requests"] += n
        s["errors"] += 0 if ok else n
        s["ok"] += n if ok else 0
        s["streamed"] += n if stream else 0

    # Ask many times over fresh connections: the answers come from different workers and must agree.
    # Parallel batches: one idle worker can win every sequential accept on a loaded box.
    docs: List[Dict[str, Any]] = []
    # The kernel hands each connection to whichever worker's accept wins, and a fast endpoint
    # lets one worker win many batches in a row: keep asking (bounded) until two have answered.
    with ThreadPoolExecutor(max_workers=12) as pool:
        for _batch in range(40):
            docs.extend(pool.map(lambda _i: get_metrics(gw.url), range(12)))
            if len({d["answered_by"]["pid"] for d in docs}) >= 2:
                break
            time.sleep(0.05)
    answered_by = {d["answered_by"]["pid"] for d in docs}
    assert len(answered_by) >= 2, "every /admin/metrics answer came from one worker"
    for doc in docs:
        req = doc["requests"]
        assert req["totals"]["requests"] == total
        routes = {r["route"]: r for r in req["routes"]}
        assert set(routes) == set(sent)
        for name, s in sent.items():
            r = routes[name]
            assert (r["requests"], r["errors"], r["streamed"]) == (s["requests"], s["errors"], s["streamed"]), name
            assert r["error_rate"] == pytest.approx(s["errors"] / s["requests"])
            assert r["latency_ms"]["p50"] is not None and r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
            assert r["last_used"] is not None
            if s["ok"]:
                # Every successful request (streams included) billed the same mock usage.
                assert r["avg_input_tokens"] == pytest.approx(IN_TOKENS * s["ok"] / s["requests"])
                assert r["avg_output_tokens"] == pytest.approx(OUT_TOKENS * s["ok"] / s["requests"])
        endpoints = {e["endpoint"]: e for e in routes["fallback"]["endpoints"]}
        assert endpoints == {"mock:echo": endpoints["mock:echo"]} and endpoints["mock:echo"]["requests"] == 6
        assert {e["endpoint"] for e in routes["broken"]["endpoints"]} == {"mock:fail-503"}

    # Per-plugin stats: every worker flushes its own; the sum covers every request once flushed.
    deadline = time.monotonic() + 15
    hooks: Dict[Tuple[str, str], Dict[str, Any]] = {}
    while time.monotonic() < deadline:
        hooks = {(h["plugin"], h["stage"]): h for h in get_metrics(gw.url)["plugins"]["hooks"]}
        log_hook = hooks.get(("request_log", "observe"))
        if log_hook and log_hook["invocations"] == total:
            break
        time.sleep(0.3)
    assert hooks[("request_log", "observe")]["invocations"] == total, hooks
    assert hooks[("spend_log", "settlement")]["invocations"] == total
    assert hooks[("spend_log", "settlement")]["errors"] == 0
    # Route hooks run once per routed request: the traceparent hook of the observe plugin.
    assert hooks[("observe", "route")]["invocations"] == total
    assert hooks[("observe", "route")]["workers"] >= 2, "the burst should have reached several workers"

    with requests.get(gw.url + "/metrics", timeout=30) as resp:
        assert resp.status_code == 200
        samples = parse_prometheus(resp.text)
    by_route: Dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "routeplane_requests_total":
            by_route[dict(labels)["route"]] = by_route.get(dict(labels)["route"], 0) + value
    assert by_route == {k: float(v["requests"]) for k, v in sent.items()}
    invocations = samples[("routeplane_plugin_hook_invocations_total",
                           (("hook", "TraceparentRouteHook"), ("plugin", "observe"), ("stage", "route")))]
    assert invocations == total
    # Spans from every worker (the OTel pipeline is built after the fork): one server span per request.
    deadline = time.monotonic() + 15
    server_spans: List[Any] = []
    while time.monotonic() < deadline:
        server_spans = [s for _r, s in list(receiver.spans) if s.kind == 2]  # SPAN_KIND_SERVER
        if len(server_spans) >= total:
            break
        time.sleep(0.2)
    assert len(server_spans) == total and len({s.trace_id for s in server_spans}) == total
    by_route_spans: Dict[str, int] = {}
    for s in server_spans:
        route = attrs(s)["gen_ai.request.model"]
        by_route_spans[route] = by_route_spans.get(route, 0) + 1
    assert by_route_spans == {k: v["requests"] for k, v in sent.items()}
    print(f"\n[metrics e2e] {total} requests over 3 workers; {len(docs)} /admin/metrics answers from "
          f"{len(answered_by)} workers, all with identical counts")
