"""A bad memory limit does not stop a worker's boot; /ready logs a store problem when it starts and ends, not per poll."""

from __future__ import annotations

import logging
from typing import Any, Optional

import pytest

from routeplane import worker_memory
from routeplane.app import build_app
from routeplane.config import parse_config
from routeplane.web import health


@pytest.mark.parametrize("raw", ["1.5", "lots", "-3"])
def test_a_bad_memory_limit_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture, raw: str) -> None:
    monkeypatch.setenv(worker_memory.ENV, raw)  # the worker class used without gunicorn_conf.py's check
    with caplog.at_level(logging.WARNING, logger="routeplane.worker_memory"):
        assert worker_memory.limit_from_env() == worker_memory.DEFAULT_MB  # before: ValueError, no worker boots
    assert worker_memory.ENV in caplog.text and repr(raw) in caplog.text


def test_a_good_memory_limit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(worker_memory.ENV, " 300 ")
    assert worker_memory.limit_from_env() == 300


def test_ready_logs_a_read_only_store_once_per_change(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(parse_config({"providers": {"mock": {"protocol": "mock"}},
                                  "models": {"m": {"targets": [{"provider": "mock", "model": "echo"}]}},
                                  "database": {"url": f"sqlite:///{tmp_path}/routeplane.db"}}, "<test>"))
    client = app.flask_app().test_client()
    problem: Optional[str] = "store is read-only (this process cannot write the SQLite file or its directory)"
    monkeypatch.setattr(health, "read_only_problem", lambda store: problem)
    with caplog.at_level(logging.INFO, logger="routeplane.web.health"):
        for _ in range(5):  # a load balancer polling
            assert client.get("/ready").status_code == 503
        problem = None
        for _ in range(3):
            assert client.get("/ready").status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "routeplane.web.health"]
    assert [r.levelname for r in caplog.records if r.name == "routeplane.web.health"] == ["WARNING", "INFO"], messages
    assert "read-only" in messages[0] and "usable again" in messages[1]
