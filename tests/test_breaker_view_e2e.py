"""Real gunicorn, 2 workers, an upstream that answers 503: the operator sees the breaker open in /metrics and on the
dashboard (whichever worker answers), and closed again once the upstream recovered and the cooldown passed."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_completion
from tests.test_dashboard_e2e import create_key
from tests.test_observability import parse_prometheus

pytestmark = pytest.mark.e2e

UPSTREAM_KEY = "sk-upstream-secret-never-shown-1234"
COOLDOWN = 1.5
OPEN = ("routeplane_breaker_open", (("scope", "target"), ("target", "up:gpt-x")))
HALF_OPEN = ("routeplane_breaker_half_open", (("scope", "target"), ("target", "up:gpt-x")))


def overloaded(req: RecordedRequest) -> Reply:
    return Reply.json({"error": {"message": f"overloaded (key {UPSTREAM_KEY})", "type": "server_error"}}, 503)


def healthy(req: RecordedRequest) -> Reply:
    return Reply.json(openai_completion("from up", model="gpt-x"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[GatewayProcess, FakeUpstream, str]]:
    up = FakeUpstream().start()
    up.default = overloaded
    config: Dict[str, Any] = {
        "database": {"url": f"sqlite:///{tmp_path_factory.mktemp('breakers')}/rp.db"},
        "server": {"stats_flush_seconds": 0.2},
        "auth": {"mode": "api_keys"},
        "providers": {
            "up": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": UPSTREAM_KEY,
                   "timeouts": {"connect": 2.0, "read": 5.0}},
            "local": {"protocol": "mock"},
        },
        "models": {"main": {"targets": [{"provider": "up", "model": "gpt-x"}, {"provider": "local", "model": "echo"}]}},
        "fallback": {"cooldown": {"failures": 2, "seconds": COOLDOWN}},
        "plugins": {"observe": {"prometheus": True}},
    }
    try:
        with GatewayProcess(config, workers=2, threads=4) as gw:
            assert gw.config_path is not None
            yield gw, up, create_key(gw.config_path, "--name", "ops", "--scope", "admin")
    finally:
        up.stop()


def ask(gw: GatewayProcess, key: str, n: int) -> list:
    def one(_i: int) -> int:
        body = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
        with requests.post(gw.url + "/v1/chat/completions", json=body, timeout=20,
                           headers={"Authorization": f"Bearer {key}"}) as r:
            return r.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:  # new connections, concurrent: both workers get some
        return list(pool.map(one, range(n)))


def metrics(gw: GatewayProcess, key: str) -> Dict[Any, float]:
    with requests.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=20) as r:
        assert r.status_code == 200, r.text
        assert UPSTREAM_KEY not in r.text
        return parse_prometheus(r.text)


def until(check: Callable[[], bool], act: Callable[[], Any], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        act()
        time.sleep(0.1)


def dashboard(gw: GatewayProcess, key: str) -> str:
    """The overview page as a browser signed in through the login form gets it (a cookie, no header)."""
    with requests.Session() as s:
        r = s.post(gw.url + "/admin/login", data={"credential": key}, allow_redirects=False, timeout=20)
        assert r.status_code == 303 and r.cookies.get("routeplane_admin")
        r = s.get(gw.url + "/admin/", timeout=20)
        assert r.status_code == 200, r.text
        return r.text


def test_an_open_breaker_shows_in_metrics_and_on_the_dashboard_then_closes(
        gateway: Tuple[GatewayProcess, FakeUpstream, str]) -> None:
    gw, up, key = gateway
    assert metrics(gw, key)[OPEN] == 0
    assert "All closed" in dashboard(gw, key)
    statuses: list = []
    # Every request still succeeds (the fallback answers): only the breaker view shows what happened.
    until(lambda: metrics(gw, key)[OPEN] >= 1, lambda: statuses.extend(ask(gw, key, 8)))
    assert set(statuses) == {200}
    open_on = metrics(gw, key)[OPEN]
    page = dashboard(gw, key)
    row = re.search(r'<tr data-target="up:gpt-x" data-scope="target" data-state="(open|half_open)">(.*?)</tr>',
                    page, re.S)
    assert row is not None, page
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(2), re.S)]
    assert cells[0] == "up:gpt-x" and cells[5] == "UpstreamStatusError 503", cells
    assert int(cells[2]) >= 1 and int(cells[3]) >= 2  # workers; consecutive failures
    assert "All closed" not in page and UPSTREAM_KEY not in page and open_on >= 1
    # The upstream recovers; once the cooldown passed, each worker's next request probes it and closes its breaker.
    up.default = healthy
    time.sleep(COOLDOWN)
    until(lambda: (lambda m: m[OPEN] == 0 and m[HALF_OPEN] == 0)(metrics(gw, key)), lambda: ask(gw, key, 8))
    page = dashboard(gw, key)
    assert "All closed" in page and 'data-target="up:gpt-x"' not in page

