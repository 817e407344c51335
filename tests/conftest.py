"""Shared fixtures: a scriptable fake upstream server and a real gunicorn gateway process."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.postgres import PostgresCluster, find_bindir
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


@pytest.fixture(scope="session")
def postgres_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL server for the session; skipped loudly without binaries, failed on CI (CI=true)."""
    import os

    bindir = find_bindir()
    if bindir is None:
        message = ("PostgreSQL server binaries (initdb, pg_ctl) not found: PostgreSQL tests are SKIPPED. "
                   "Run scripts/test-services as root (Debian: apt-get install postgresql) to run them.")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " CI=true, so this is a failure.")
        # -ra lists the reason in the summary; the banner (past output capture) makes it hard to miss in a log.
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("\n" + "!" * 10 + " " + message + " " + "!" * 10, red=True, bold=True)
        pytest.skip(message)
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.stop()
