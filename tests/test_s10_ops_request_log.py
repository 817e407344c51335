"""The request log names every upstream attempt of a request that fell back (`tried=`), never a secret:
through the official SDK against the gateway under gunicorn, with scripted upstreams."""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any, Dict, List

import openai
import pytest

from routeplane.app import build_app
from routeplane.config import parse_config
from tests.support.gateway import GatewayProcess, free_port
from tests.support.upstream import FakeUpstream, Reply, openai_completion, running_upstream

pytestmark = pytest.mark.e2e

KEY = "sk-s10-upstream-secret-0123456789"
FAST = {"connect": 1.0, "read": 2.0}


upstream = pytest.fixture(scope="module", name="upstream")(running_upstream)


def _config(url: str, fmt: str) -> Dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: a connect failure
    provider = {"protocol": "openai_chat", "api_key": KEY, "timeouts": dict(FAST)}
    return {
        "database": {"url": ""},
        "providers": {"dead": {**provider, "base_url": dead}, "flaky": {**provider, "base_url": url + "/v1"},
                      "good": {**provider, "base_url": url + "/v1"}},
        "models": {"chain": {"targets": [{"provider": "dead", "model": "m1"}, {"provider": "flaky", "model": "m2"},
                                         {"provider": "good", "model": "m3"}]},
                   "direct": {"targets": [{"provider": "good", "model": "m3"}]}},
        "fallback": {"cooldown": {"failures": 0}},
        "plugins": {"request_log": {"format": fmt}},
    }


def _lines(logs: str) -> List[str]:
    return [line.split(" routeplane.requests ", 1)[1] for line in logs.splitlines() if " routeplane.requests " in line]


def _fields(line: str) -> Dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(line))


# The upstream's error message quotes the key it was sent: the log line must not carry it.
LEAKY_500 = Reply.json({"error": {"message": f"boom, key {KEY} rejected", "type": "server_error"}}, 500)


def test_text_line_lists_every_attempt_of_a_fallback(upstream: FakeUpstream) -> None:
    with upstream.script():
        upstream.enqueue(LEAKY_500, Reply.json(openai_completion("fine")), Reply.json(openai_completion("one")))
        with GatewayProcess(_config(upstream.url, "text")) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-secret-abc", max_retries=0)
            fell_back = client.chat.completions.with_raw_response.create(
                model="chain", messages=[{"role": "user", "content": "secret prompt words"}])
            assert fell_back.parse().choices[0].message.content == "fine"
            direct = client.chat.completions.with_raw_response.create(
                model="direct", messages=[{"role": "user", "content": "hi"}])
            gw.stop()
            logs = gw.logs()
    lines = {_fields(line)["request_id"]: line for line in _lines(logs)}
    line = lines[fell_back.headers["x-request-id"]]
    fields = _fields(line)
    # Which target failed how (no answer at all; an HTTP 500), and which one answered.
    assert fields["tried"] == "dead:connect,flaky:500,good:200"
    assert fields["attempts"] == "3" and fields["provider"] == "good" and fields["status"] == "200"
    assert _fields(lines[direct.headers["x-request-id"]])["tried"] == "good:200"
    for secret in (KEY, "sk-client-secret", "secret prompt", "boom"):
        assert secret not in logs


def test_json_line_lists_every_attempt_when_all_fail(upstream: FakeUpstream,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(parse_config(_config(upstream.url, "json")))
    app.pipeline.observers.inline = True
    client = app.flask_app().test_client()
    with upstream.script(), caplog.at_level(logging.INFO, logger="routeplane.requests"):
        upstream.enqueue(LEAKY_500, Reply.json({"error": {"message": "busy"}}, 429))
        r = client.post("/v1/chat/completions", json={"model": "chain", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "routeplane.requests"]
    data = json.loads(line)
    assert data["attempts"] == 3 and data["outcome"] == "upstream_error"
    assert [(a["provider"], a["model"], a["status"], a["failure"]) for a in data["tried"]] == [
        ("dead", "m1", None, "connect"), ("flaky", "m2", 500, "http_status"), ("good", "m3", 429, "http_status")]
    assert all(a["latency_ms"] >= 0 for a in data["tried"])
    assert KEY not in line and "boom" not in line
