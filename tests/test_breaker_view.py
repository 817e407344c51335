"""Operators see the circuit breakers: each worker publishes its non-closed breakers to the store with its
periodic flush, rows of workers that stopped reporting expire, and every view (/admin/metrics, /metrics, the
dashboard) merges the workers' rows, with per-credential and per-endpoint breakers folded to their target."""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import pytest

from routeplane.breaker_view import BREAKERS_TABLE, BreakerPublisher, breaker_view, scrub_reason
from routeplane.errors import UpstreamStatusError, UpstreamTimeout
from routeplane.language_model.cooldown import CooldownPolicy, CooldownTracker, FallbackSettings
from routeplane.language_model.routing import RoutingTarget
from routeplane.metrics import NameBounds
from routeplane.store import Store
from routeplane.store.migrations import migrate
from tests.test_observability import parse_prometheus

SECRET = "sk-proj-SECRETSECRETSECRETSECRET0123456789"
CONFIGURED = RoutingTarget("p", "m", "openai_chat", api_key="sk-configured-key-1")
VERTEX = RoutingTarget("v", "claude@20240620", "anthropic_messages")  # a model id that looks like `@` + 8 hex
NAMES = NameBounds(["r"], ["p", "v"], ["m", "claude@20240620"])
LABELS = frozenset({"p:m", "v:claude@20240620"})
STALE = 15.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tracker() -> Tuple[CooldownTracker, FakeClock]:
    clock = FakeClock(1000.0)
    return CooldownTracker(FallbackSettings(cooldown=CooldownPolicy(failures=2, seconds=30)), clock), clock


def down() -> UpstreamStatusError:
    return UpstreamStatusError(f"upstream said: bad key {SECRET}", provider="p", upstream_status=503, status=503)


def rate_limited() -> UpstreamStatusError:
    return UpstreamStatusError(f"429 for {SECRET}", provider="p", upstream_status=429, status=429, kind="rate_limit")


@pytest.fixture()
def store(tmp_path: Any) -> Iterator[Store]:
    s = Store.from_url(f"sqlite:///{tmp_path}/b.db")
    migrate(s)
    yield s
    s.close()


def publisher(t: CooldownTracker, wall: FakeClock) -> BreakerPublisher:
    return BreakerPublisher(t, LABELS, clock=wall, expire_after=STALE)


def view(store: Store, now: float) -> Any:
    return breaker_view(store, NAMES, STALE, now=now)


# --- what a breaker says ----------------------------------------------------------------------------

def test_the_reason_names_the_failure_and_never_carries_its_message() -> None:
    t, _ = tracker()
    t.record_failure("p:m", down())
    t.record_failure("p:m", UpstreamTimeout(f"timed out calling https://u:{SECRET}@h/v1", provider="p"))
    t.record_failure("p:m", down())
    (state,) = t.states()
    assert state.reason == "UpstreamStatusError 503" and SECRET not in repr(state)


@pytest.mark.parametrize("raw, shown", [
    ("UpstreamStatusError 503", "UpstreamStatusError 503"),
    ("InvalidUpstreamResponse", "InvalidUpstreamResponse"),
    (f"Bad key {SECRET} for https://user:pw@host/x?key=abc", "Bad"),
    (SECRET, "unknown"),
    ("x" * 500, "unknown"),
    ("", "unknown"),
    ("Error\nInjected: 1", "Error"),
])
def test_a_published_reason_is_scrubbed_to_a_short_name(raw: str, shown: str) -> None:
    assert scrub_reason(raw) == shown


# --- publishing, closing, expiry ---------------------------------------------------------------------

def test_a_worker_publishes_its_open_breakers_and_removes_them_when_they_close(store: Store) -> None:
    t, mono = tracker()
    wall = FakeClock(50_000.0)
    pub = publisher(t, wall)
    assert pub.publish(store, "w1", "h", 1) is False  # nothing open, nothing ever published: no write at all
    t.record_failure("p:m", down())
    t.record_failure("v:claude@20240620", down())  # one failure: counting, still closed, not shown
    pub.publish(store, "w1", "h", 1)
    assert view(store, wall.now)["targets"] == []
    t.record_failure("p:m", down())
    pub.publish(store, "w1", "h", 1)
    (row,) = view(store, wall.now + 1)["targets"]
    assert row == {"target": "p:m", "provider": "p", "model": "m", "scope": "target", "state": "open",
                   "workers": 1, "open": 1, "half_open": 0, "failures": 2, "reopens_in": 29.0,
                   "reason": "UpstreamStatusError 503"}
    mono.now += 31
    wall.now += 31  # the period passed: the next request probes it
    pub.publish(store, "w1", "h", 1)
    (row,) = view(store, wall.now)["targets"]
    assert (row["state"], row["open"], row["half_open"], row["reopens_in"]) == ("half_open", 0, 1, 0.0)
    t.record_success("p:m")  # the probe succeeded
    assert pub.publish(store, "w1", "h", 1) is True  # the last rows go
    assert view(store, wall.now)["targets"] == [] and store.execute(f"SELECT COUNT(*) FROM {BREAKERS_TABLE}")[0][0] == 0
    assert pub.publish(store, "w1", "h", 1) is False  # and an idle worker writes nothing


def test_an_open_row_reads_as_half_open_once_its_period_passed(store: Store) -> None:
    t, _ = tracker()
    wall = FakeClock(50_000.0)
    for _ in range(2):
        t.record_failure("p:m", down())
    publisher(t, wall).publish(store, "w1", "h", 1)
    (row,) = view(store, wall.now + 10)["targets"]
    assert (row["state"], row["reopens_in"]) == ("open", 20.0)
    # Not republished since (a worker flushing every 20 s, say): the reader sees the period ended.
    (row,) = breaker_view(store, NAMES, 60.0, now=wall.now + 30.5)["targets"]
    assert (row["state"], row["open"], row["half_open"], row["reopens_in"]) == ("half_open", 0, 1, 0.0)


def test_rows_of_a_worker_that_stopped_reporting_expire(store: Store) -> None:
    wall = FakeClock(50_000.0)
    (t1, _), (t2, _) = tracker(), tracker()
    for t in (t1, t2):
        for _ in range(2):
            t.record_failure("p:m", down())
    publisher(t1, wall).publish(store, "dead", "h", 1)
    wall.now += 10
    p2 = publisher(t2, wall)
    p2.publish(store, "alive", "h", 2)
    assert view(store, wall.now)["targets"][0]["workers"] == 2
    wall.now += STALE - 5  # `dead` last wrote STALE seconds ago: it no longer counts
    p2.publish(store, "alive", "h", 2)  # a live worker refreshes its rows (a heartbeat) while any is open
    (row,) = view(store, wall.now + 0.5)["targets"]
    assert row["workers"] == 1
    # The writers sweep rows long past expiry, so a dead worker's rows do not stay in the table forever.
    assert store.execute(f"SELECT worker FROM {BREAKERS_TABLE}") == [("alive",)]


def test_the_last_flush_of_a_stopping_worker_removes_its_rows(store: Store) -> None:
    t, _ = tracker()
    wall = FakeClock(50_000.0)
    for _ in range(2):
        t.record_failure("p:m", down())
    pub = publisher(t, wall)
    pub.publish(store, "w1", "h", 1)
    pub.publish(store, "w1", "h", 1, final=True)
    assert view(store, wall.now)["targets"] == []


# --- merging workers, folding labels -----------------------------------------------------------------

def test_workers_merge_and_tenant_and_endpoint_breakers_fold_to_their_target(store: Store) -> None:
    wall = FakeClock(50_000.0)
    (t1, _), (t2, _) = tracker(), tracker()
    tenant_a = CONFIGURED.replace(api_key="sk-tenant-a").breaker_key
    tenant_b = CONFIGURED.replace(api_key="sk-tenant-b").breaker_key
    endpoint = CONFIGURED.replace(base_url="https://tenant.example/v1").breaker_key
    for _ in range(2):
        t1.record_failure("p:m", down())
        t1.record_failure(tenant_a, rate_limited())
        t1.record_failure(tenant_b, rate_limited())
        t1.record_failure("v:claude@20240620", down())
        t2.record_failure("p:m", down())
        t2.record_failure(endpoint, down())
        t2.record_failure("p:made-up-model", down())  # direct routing to a model the config does not name
    t2.record_failure("p:m", down())
    publisher(t1, wall).publish(store, "w1", "h", 1)
    publisher(t2, wall).publish(store, "w2", "h", 2)
    doc = view(store, wall.now)
    rows = {(r["target"], r["scope"]): r for r in doc["targets"]}
    assert set(rows) == {("p:m", "target"), ("p:m", "credential"), ("p:m", "endpoint"), ("p:other", "target"),
                         ("v:claude@20240620", "target")}
    assert (rows["p:m", "target"]["workers"], rows["p:m", "target"]["open"], rows["p:m", "target"]["failures"]) \
        == (2, 2, 3)
    assert (rows["p:m", "credential"]["workers"], rows["p:m", "credential"]["open"]) == (1, 2)
    assert rows["p:m", "credential"]["reason"] == "UpstreamStatusError 429"
    assert (rows["p:m", "endpoint"]["workers"], rows["p:m", "endpoint"]["open"]) == (1, 1)
    stored = repr(store.execute(f"SELECT * FROM {BREAKERS_TABLE}"))
    for secret in (SECRET, "tenant.example", tenant_a.split("#")[1], endpoint.split("@")[1]):
        assert secret not in stored and secret not in repr(doc)  # neither keys nor fingerprints
    assert "made-up-model" not in repr(doc)  # labels are bounded by the config (stored raw, like the spend log)


@pytest.mark.parametrize("dialect_store", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_publishing_and_merging_on_every_dialect(dialect_store: Store) -> None:
    migrate(dialect_store)
    wall = FakeClock(50_000.0)
    (t1, _), (t2, _) = tracker(), tracker()
    for t in (t1, t2):
        for _ in range(2):
            t.record_failure("p:m", down())
            t.record_failure(CONFIGURED.replace(api_key="sk-tenant").breaker_key, rate_limited())
    p1, p2 = publisher(t1, wall), publisher(t2, wall)
    p1.publish(dialect_store, "w1", "h", 1)
    p2.publish(dialect_store, "w2", "h", 2)
    p1.publish(dialect_store, "w1", "h", 1)  # a heartbeat replaces the worker's rows
    rows = {(r["target"], r["scope"]): (r["workers"], r["open"]) for r in view(dialect_store, wall.now)["targets"]}
    assert rows == {("p:m", "target"): (2, 2), ("p:m", "credential"): (2, 2)}
    t1.record_success("p:m")
    p1.publish(dialect_store, "w1", "h", 1)
    rows = {(r["target"], r["scope"]): (r["workers"], r["open"]) for r in view(dialect_store, wall.now)["targets"]}
    assert rows == {("p:m", "target"): (1, 1), ("p:m", "credential"): (2, 2)}


# --- through the app: the periodic flush, /admin/metrics, /metrics, the dashboard ---------------------------

def app_config(db: str) -> Any:
    from routeplane.config import parse_config

    return parse_config({
        "database": {"url": db},
        "fallback": {"cooldown": {"failures": 2, "seconds": 30}},
        "providers": {"mock": {"protocol": "mock", "api_key": SECRET}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"},
                                           {"provider": "mock", "model": "echo-b"}]}},
        "plugins": {"observe": {"prometheus": True}},
    }, "t")


def test_the_flush_publishes_and_every_admin_view_shows_the_breakers(tmp_path: Any) -> None:
    from routeplane.app import build_app

    app = build_app(app_config(f"sqlite:///{tmp_path}/g.db"))
    client = app.flask_app().test_client()
    try:
        page = client.get("/admin/").get_data(as_text=True)
        assert "Circuit breakers" in page and "All closed" in page
        metrics = parse_prometheus(client.get("/metrics").get_data(as_text=True))
        assert metrics[("routeplane_breaker_open", (("scope", "target"), ("target", "mock:echo")))] == 0
        for _ in range(2):
            app.pipeline.cooldown.record_failure("mock:echo", down())
        doc = client.get("/admin/metrics").get_json()  # flushes this worker's numbers first, as the pages do
        (row,) = doc["breakers"]["targets"]
        assert (row["target"], row["state"], row["workers"], row["failures"]) == ("mock:echo", "open", 1, 2)
        metrics = parse_prometheus(client.get("/metrics").get_data(as_text=True))
        assert metrics[("routeplane_breaker_open", (("scope", "target"), ("target", "mock:echo")))] == 1
        assert metrics[("routeplane_breaker_open", (("scope", "target"), ("target", "mock:echo-b")))] == 0
        page = client.get("/admin/").get_data(as_text=True)
        assert 'id="breakers-table"' in page and "mock:echo" in page and "UpstreamStatusError 503" in page
        assert "All closed" not in page and SECRET not in page
        app.pipeline.cooldown.record_success("mock:echo")
        page = client.get("/admin/").get_data(as_text=True)
        assert "All closed" in page and 'id="breakers-table"' not in page
        for _ in range(2):
            app.pipeline.cooldown.record_failure("mock:echo-b", down())
        client.get("/admin/metrics").close()
        assert app.store.execute(f"SELECT COUNT(*) FROM {BREAKERS_TABLE}")[0][0] == 1
    finally:
        app.shutdown()  # a stopping worker takes its breakers with it
    assert app.store.execute(f"SELECT COUNT(*) FROM {BREAKERS_TABLE}")[0][0] == 0
    app.store.close()


def test_without_a_store_the_dashboard_shows_this_workers_breakers() -> None:
    from routeplane.app import build_app
    from routeplane.config import parse_config

    app = build_app(parse_config({
        "database": {"url": ""},
        "fallback": {"cooldown": {"failures": 1, "seconds": 30}},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
    }, "t"))
    client = app.flask_app().test_client()
    try:
        app.pipeline.cooldown.record_failure("mock:echo", down())
        page = client.get("/admin/").get_data(as_text=True)
        assert 'id="breakers-table"' in page and "mock:echo" in page and "this worker only" in page
    finally:
        app.shutdown()
