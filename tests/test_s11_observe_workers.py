"""Real gunicorn, 2 workers recycled by max_requests and by HUP: /metrics counters never go back nor count twice."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

import pytest
import requests

from tests.test_observability import parse_prometheus

pytestmark = pytest.mark.e2e

BODY = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
WATCHED = {
    "requests": ("routeplane_requests_total", (("route", "alpha"), ("provider", "mock"), ("model", "echo"),
                                               ("outcome", "success"))),
    "route_hook": ("routeplane_plugin_hook_invocations_total", (("plugin", "observe"), ("stage", "route"))),
    "observed": ("routeplane_observer_events_delivered_total", (("pipeline", "language_model"),)),
}


def scrape(url: str) -> Dict[str, float]:
    with requests.get(url + "/metrics", timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        samples = parse_prometheus(resp.text)
    return {name: sum(v for (metric, pairs), v in samples.items() if metric == want and set(labels) <= set(pairs))
            for name, (want, labels) in WATCHED.items()}


def send(url: str, n: int) -> None:
    def one(_i: int) -> int:
        with requests.post(url + "/v1/chat/completions", json=BODY, timeout=30) as resp:
            return resp.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(one, range(n))) == {200}


def test_counters_stay_monotonic_and_exact_through_recycles_and_hup(gateway_process: Any, tmp_path: Any) -> None:
    config = {
        "database": {"url": f"sqlite:///{tmp_path}/workers.db"},
        "server": {"stats_flush_seconds": 0.2},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"alpha": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "plugins": {"observe": {"prometheus_public": True}},
    }
    # Every worker retires after about 12 HTTP requests (scrapes included): many recycles in one run.
    gw = gateway_process(config, workers=2, threads=4, env={"ROUTEPLANE_MAX_REQUESTS": "12"})
    sent = 0
    seen: List[Dict[str, float]] = []
    for round_ in range(10):
        send(gw.url, 6)
        sent += 6
        if round_ == 4:
            gw.signal(signal.SIGHUP)  # a reload: every worker replaced
        seen.append(scrape(gw.url))
    for before, after in zip(seen, seen[1:]):
        for name in WATCHED:
            assert after[name] >= before[name], (name, seen)
    # The spend log counts at once; the flushed counters catch up within a flush interval of the last worker.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        last = scrape(gw.url)
        if all(v == sent for v in last.values()):
            break
        time.sleep(0.3)
    assert last == {name: sent for name in WATCHED}, (last, seen)
    assert all(s["requests"] == sum(6 for _ in range(i + 1)) for i, s in enumerate(seen))
