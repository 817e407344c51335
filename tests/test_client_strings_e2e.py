"""E2E under gunicorn: client-chosen model names are bounded, on one line, and safe in a response header.

A `provider:model` direct route takes any model name. A newline in it made Flask refuse the
`x-routeplane-target` header and a character outside latin-1 made gunicorn refuse it: the client got
a 500 while the spend log recorded a billed success. A 1 MB name was written whole into the request
log and echoed whole in the 404, on every request.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Iterator
from urllib.parse import unquote

import anthropic
import pytest
import requests

from tests.support.gateway import GatewayProcess


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    db = tmp_path_factory.mktemp("names") / "rp.db"
    g = GatewayProcess({"database": {"url": f"sqlite:///{db}"},
                        "providers": {"mock": {"protocol": "mock", "prices": {"input": 1000, "output": 3000}}},
                        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}},
                       workers=1, threads=4).start()
    g.db = str(db)  # type: ignore[attr-defined]
    yield g
    g.stop()


def _row(gw: GatewayProcess, rid: str) -> tuple:
    for _ in range(50):
        with sqlite3.connect(gw.db) as db:  # type: ignore[attr-defined]
            row = db.execute("SELECT outcome, status FROM spend_log WHERE request_id = ?", (rid,)).fetchone()
        if row is not None:
            return row
        time.sleep(0.1)
    return ()


def test_a_model_outside_latin_1_is_served_and_named_in_the_header(gw: GatewayProcess) -> None:
    r = requests.post(gw.url + "/v1/chat/completions", headers={"x-request-id": "req-names-cjk"},
                      json={"model": "mock:模型", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 200, r.text
    assert unquote(r.headers["x-routeplane-target"]) == "mock:模型"
    assert _row(gw, "req-names-cjk") == ("success", 200)


@pytest.mark.parametrize("model", ["mock:new\nline", "mock:tab\there", "m" * 257])
def test_a_model_name_with_control_characters_or_too_long_is_a_400(gw: GatewayProcess, model: str) -> None:
    r = requests.post(gw.url + "/v1/chat/completions", headers={"x-request-id": "req-names-bad"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text[:200]
    assert len(r.content) < 1000
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_a_huge_model_name_does_not_reach_the_log(gw: GatewayProcess) -> None:
    r = requests.post(gw.url + "/v1/chat/completions",
                      json={"model": "m" * 1_000_000, "messages": [{"role": "user", "content": "x"}]}, timeout=30)
    assert r.status_code == 400 and len(r.content) < 1000
    time.sleep(0.3)
    assert max(len(line) for line in gw.logs().splitlines()) < 4096
