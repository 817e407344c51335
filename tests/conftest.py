"""Shared fixtures: a scriptable fake upstream server and a real gunicorn gateway process."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, NoReturn, Tuple

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.mariadb import MariaDBServer, find_binaries
from tests.support.postgres import PostgresCluster, find_bindir
from tests.support.upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[Tuple[FakeUpstream, FakeUpstream]]:
    """Two fake upstreams (a target and its fallback) shared by a module's tests: stopping one costs ~0.5 s."""
    a, b = FakeUpstream().start(), FakeUpstream().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def ups(servers: Tuple[FakeUpstream, FakeUpstream]) -> Iterator[Tuple[FakeUpstream, FakeUpstream]]:
    """The module's two upstreams, with empty scripts and request logs for this test."""
    a, b = servers
    with a.script(), b.script():
        yield a, b


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    """One fake upstream shared by a module's tests, answering any wire unscripted (tests/support/wires.py)."""
    from tests.support.wires import weather_upstream

    up = FakeUpstream().start()
    up.default = weather_upstream
    yield up
    up.stop()


@pytest.fixture
def up(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    """The module's `fake` upstream with an empty script and request log for this test."""
    with fake.script() as scripted:
        yield scripted


# The official SDKs as clients of a module's `gateway` fixture (a GatewayProcess), no retries.


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> Iterator[Any]:
    import openai

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def claude(gateway: GatewayProcess) -> Iterator[Any]:
    import anthropic

    client = anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0, timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gclient(gateway: GatewayProcess) -> Any:
    from google import genai
    from google.genai import types as genai_types

    return genai.Client(api_key="client-key", http_options=genai_types.HttpOptions(base_url=gateway.url))


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


def _start_postgres(request: pytest.FixtureRequest) -> PostgresCluster:
    bindir = find_bindir()
    if bindir is None:
        _missing_server(request, "PostgreSQL server binaries (initdb, pg_ctl) not found: PostgreSQL tests are SKIPPED. "
                                 "Run scripts/test-services as root (Debian: apt-get install postgresql) to run them.")
    return PostgresCluster(bindir).start()


@pytest.fixture(scope="session")
def postgres_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL server for the session; skipped loudly without binaries, failed on CI (CI=true)."""
    cluster = _start_postgres(request)
    yield cluster
    cluster.stop()


@pytest.fixture
def private_postgres_cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A PostgreSQL server of the test's own, which it may stop and start again (an outage)."""
    cluster = _start_postgres(request)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mariadb_server(request: pytest.FixtureRequest) -> Iterator[MariaDBServer]:
    """A throwaway MariaDB server for the session (the mysql:// store); skipped loudly without it, failed on CI."""
    binaries = find_binaries()
    if binaries is None:
        _missing_server(request, "MariaDB server binaries (mariadbd, mariadb-install-db) not found: MariaDB tests are "
                                 "SKIPPED. Run scripts/test-services as root (Debian: apt-get install mariadb-server) "
                                 "to run them.")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        _missing_server(request, "PyMySQL is not installed: MariaDB tests are SKIPPED. "
                                 "pip install -e '.[mysql]' (make test does) to run them.")
    server = MariaDBServer(*binaries).start()
    yield server
    server.stop()


def _missing_server(request: pytest.FixtureRequest, message: str) -> NoReturn:
    """Skip loudly; on CI (CI=true) a database leg that cannot run is a failure."""
    import os

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " CI=true, so this is a failure.")
    # -ra lists the reason in the summary; the banner (past output capture) makes it hard to miss in a log.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n" + "!" * 10 + " " + message + " " + "!" * 10, red=True, bold=True)
    pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def dialect_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """An empty store on each dialect: SQLite in tmp_path, a fresh database on the session's PostgreSQL
    and MariaDB servers."""
    import uuid

    from routeplane.store import Store

    if request.param == "sqlite":
        s = Store.from_url(f"sqlite:///{tmp_path}/store.db")
    else:
        server = request.getfixturevalue("postgres_cluster" if request.param == "postgresql" else "mariadb_server")
        s = Store.from_url(server.create_database("t_" + uuid.uuid4().hex[:12]))
    yield s
    s.close()

