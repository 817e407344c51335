"""Shared fixtures: a scriptable fake upstream server and a real gunicorn gateway process."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def gateway_process() -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: `gateway_process(config_dict, workers=2)` → a started GatewayProcess, stopped after the test."""
    started: List[GatewayProcess] = []

    def start(config: Any = None, **kw: Any) -> GatewayProcess:
        gw = GatewayProcess(config, **kw).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
