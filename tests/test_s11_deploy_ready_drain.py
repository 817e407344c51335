"""/ready on a draining worker: 503 when the server stops, still ready when a HUP only replaces the worker."""

from __future__ import annotations

import http.client
import json
import signal
import time
from typing import Any, Tuple

import pytest

from routeplane.app import build_app
from routeplane.config import parse_config
from tests.test_deploy_e2e import upstream_config

pytestmark = pytest.mark.e2e

# A stopping worker keeps an idle kept-alive connection this long (nginx's upstream pool holds such
# connections): the test asks /ready on one while the worker drains.
LINGER = {"ROUTEPLANE_STOP_KEEPALIVE_LINGER": "5", "ROUTEPLANE_GRACEFUL_TIMEOUT": "10"}


def _ready(conn: http.client.HTTPConnection) -> Tuple[int, Any, str]:
    conn.request("GET", "/ready")
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read()), resp.getheader("Connection", "")


def _kept_alive(gw: Any) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.connect()
    conn.auto_open = 0  # never a new connection: every answer below comes from the first worker
    assert _ready(conn)[0] == 200
    return conn


def _answer_while_draining(conn: http.client.HTTPConnection) -> Tuple[int, Any]:
    """Ask /ready on the kept-alive connection until the worker answers as a stopping one does
    (`Connection: close`): that answer is the draining worker's."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body, connection = _ready(conn)
        if connection.lower() == "close":
            return status, body
        time.sleep(0.1)
    raise AssertionError("the worker never started draining")


def test_a_worker_replaced_by_a_hup_still_answers_ready(gateway_process: Any, upstream: Any) -> None:
    gw = gateway_process(upstream_config(upstream.url), workers=1, threads=4, env=LINGER)
    conn = _kept_alive(gw)
    gw.signal(signal.SIGHUP)  # the master checks the file, starts a new worker, then drains this one
    status, body = _answer_while_draining(conn)
    assert status == 200 and body["problems"] == [], body


def test_a_stopping_server_says_not_ready_on_a_kept_alive_connection(gateway_process: Any, upstream: Any) -> None:
    gw = gateway_process(upstream_config(upstream.url), workers=1, threads=4, env=LINGER)
    conn = _kept_alive(gw)
    gw.signal(signal.SIGTERM)
    status, body = _answer_while_draining(conn)
    assert status == 503 and body["problems"] == ["draining: the worker is shutting down"], body


def test_without_gunicorn_every_drain_is_a_stop() -> None:
    app = build_app(parse_config({"providers": {"mock": {"protocol": "mock"}},
                                  "models": {"m": {"targets": [{"provider": "mock", "model": "echo"}]}}}, "<test>"))
    client = app.flask_app().test_client()
    app.lifecycle.begin_drain(close_after=None)
    assert client.get("/ready").status_code == 503
    app.lifecycle.server_stopping = lambda: False  # what gunicorn_conf.py says during a HUP
    assert client.get("/ready").status_code == 200
