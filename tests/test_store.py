"""The store suite on SQLite, a real PostgreSQL and a real MariaDB: migrations, the spend log, cost, fork safety."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from typing import Any, List

import peewee
import pytest

from routeplane.app import MigrationItem, Plugin, PluginId
from routeplane.language_model.routing import Prices
from routeplane.language_model.settlement import Attempt, Settlement, cost_micro_usd
from routeplane.language_model.types import Usage
from routeplane.store import MigrationError, Migrator, Store, migrate, verify
from routeplane.store.migrations import HISTORY, core_migrations
from routeplane.store.spend_log import SpendLogPlugin, SpendRecorder, spend_row, spend_rows, spend_totals
from routeplane.testing import Gateway

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRICED = {"input": 1000.0, "output": 3000.0}  # USD per million tokens → micro-USD per token
CONFIG = {
    "providers": {
        "mock": {"protocol": "mock", "prices": PRICED, "api_key": "sk-secret-never-logged"},
        "free": {"protocol": "mock"},  # no prices: cost unknown
    },
    "models": {
        "priced": {"targets": [{"provider": "mock", "model": "echo"}]},
        "unpriced": {"targets": [{"provider": "free", "model": "echo"}]},
        "fallback": {"targets": [{"provider": "mock", "model": "fail-503"}, {"provider": "mock", "model": "echo"}]},
        "broken": {"targets": [{"provider": "mock", "model": "fail-503"}]},
    },
}


@pytest.fixture
def store(dialect_store: Store) -> Store:
    return dialect_store


class WidgetPlugin(Plugin):
    id = PluginId("widgets")

    def __init__(self, items: List[MigrationItem]) -> None:
        self.items = items

    def migrations(self) -> List[MigrationItem]:
        return list(self.items)

    def install(self, app: Any) -> None:
        return None


WIDGETS_V1 = MigrationItem(1, "widgets", "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL);",
                           tables=("widgets",))
WIDGETS_V2 = MigrationItem(2, "widget_colour",
                           "ALTER TABLE widgets ADD COLUMN colour VARCHAR(20);\n"
                           "INSERT INTO widgets (id, name, colour) VALUES (1, 'first; not a split', 'red');",
                           tables=("widgets",))


def history(store: Store) -> List[tuple]:
    return sorted((r[0], int(r[1]), r[2].strip()) for r in store.execute(f"SELECT plugin, version, checksum FROM {HISTORY}"))


# --- migrations ----------------------------------------------------------------


def test_fresh_database_gets_core_and_plugin_schema_with_checksums(store: Store) -> None:
    applied = migrate(store, [SpendLogPlugin(store)])
    core = [("routeplane", m.version) for m in core_migrations(store.dialect)]
    assert core[0] == ("routeplane", 1)
    assert [(m.plugin, m.version) for m in applied] == core + [("spend_log", 1), ("spend_log", 2)]
    assert store.table_exists("routeplane_meta") and store.table_exists("spend_log")
    core_sql = open(os.path.join(ROOT, "sql", "0001_core.sql"), encoding="utf-8").read()
    rows = history(store)
    assert rows[0] == ("routeplane", 1, hashlib.sha256(core_sql.encode()).hexdigest())
    assert rows[-1][:2] == ("spend_log", 2)
    verify(store, [SpendLogPlugin(store)])  # nothing pending, nothing changed


def test_rerun_is_a_noop(store: Store) -> None:
    plugins = [SpendLogPlugin(store)]
    migrate(store, plugins)
    before = history(store)
    assert migrate(store, plugins) == []
    assert history(store) == before
    assert {s.state for s in Migrator(store, plugins).status()} == {"applied"}


def test_plugin_adds_a_table_then_a_column(store: Store) -> None:
    migrate(store, [WidgetPlugin([WIDGETS_V1])])
    assert store.table_exists("widgets")
    applied = migrate(store, [WidgetPlugin([WIDGETS_V1, WIDGETS_V2])])
    assert [(m.plugin, m.version) for m in applied] == [("widgets", 2)]
    assert store.execute("SELECT id, name, colour FROM widgets") == [(1, "first; not a split", "red")]


def test_pending_migration_fails_verification(store: Store) -> None:
    migrate(store, [WidgetPlugin([WIDGETS_V1])])
    with pytest.raises(MigrationError, match=r"widgets 0002_widget_colour pending.*routeplane migrate"):
        verify(store, [WidgetPlugin([WIDGETS_V1, WIDGETS_V2])])


@pytest.mark.parametrize("sql, tables, message", [
    ("CREATE TABLE gadgets (id INTEGER);", ("widgets",), "gadgets"),
    ("CREATE TABLE widgets (id INTEGER); DROP TABLE spend_log;", ("widgets",), "spend_log"),
    ("INSERT INTO routeplane_migrations VALUES ('x', 1, 'x', 'x', 0);", ("widgets",), "routeplane_migrations"),
    ("CREATE TABLE widgets (id INTEGER); UPDATE spend_log SET cost_micro_usd = 0;", ("widgets",), "spend_log"),
    ("CREATE INDEX widgets_x ON spend_log (request_id);", ("widgets",), "spend_log"),
    ("ALTER TABLE widgets RENAME TO spend_log_old;", ("widgets",), "spend_log_old"),
    ("CREATE TRIGGER t AFTER INSERT ON widgets BEGIN DELETE FROM spend_log; END;", ("widgets",), "not allowed"),
    ("CREATE TABLE routeplane_x (id INTEGER);", ("routeplane_x",), "reserved"),
])
def test_plugin_touching_an_undeclared_table_is_refused_before_anything_runs(
        store: Store, sql: str, tables: tuple, message: str) -> None:
    bad = WidgetPlugin([MigrationItem(1, "bad", sql, tables=tables)])
    with pytest.raises(MigrationError, match=message):
        migrate(store, [bad])
    assert not store.table_exists(HISTORY)  # refused while planning: the database was not touched
    assert not store.table_exists("widgets")


def test_two_plugins_cannot_claim_one_table(store: Store) -> None:
    class Other(WidgetPlugin):
        id = PluginId("other")

    with pytest.raises(MigrationError, match="belongs to plugin 'widgets'"):
        migrate(store, [WidgetPlugin([WIDGETS_V1]), Other([WIDGETS_V1])])


def test_tampered_checksum_is_refused(store: Store) -> None:
    migrate(store, [WidgetPlugin([WIDGETS_V1])])
    edited = MigrationItem(1, "widgets", WIDGETS_V1.sql.replace("VARCHAR(50)", "VARCHAR(60)"), tables=("widgets",))
    with pytest.raises(MigrationError, match=r"changed since they ran: widgets 0001_widgets"):
        migrate(store, [WidgetPlugin([edited, WIDGETS_V2])])
    with pytest.raises(MigrationError, match="changed"):
        verify(store, [WidgetPlugin([edited])])
    assert [s.state for s in Migrator(store, [WidgetPlugin([edited])]).status() if s.plugin == "widgets"] == ["changed"]
    assert not any(r[0] == "widgets" and r[1] == 2 for r in history(store))  # nothing applied after the refusal
    # The core schema's history is checked the same way.
    p = store.param
    store.execute(f"UPDATE {HISTORY} SET checksum = {p} WHERE plugin = {p}", ("0" * 64, "routeplane"))
    with pytest.raises(MigrationError, match="routeplane 0001_core"):
        migrate(store, [])


def test_a_failing_migration_is_rolled_back_whole(store: Store) -> None:
    broken = MigrationItem(1, "half", "CREATE TABLE widgets (id INTEGER);\nINSERT INTO widgets (nope) VALUES (1);",
                           tables=("widgets",))
    with pytest.raises(MigrationError, match="widgets 0001_half failed"):
        migrate(store, [WidgetPlugin([broken])])
    assert not store.table_exists("widgets")  # the CREATE went with the failed INSERT
    assert not any(r[0] == "widgets" for r in history(store))
    assert migrate(store, [WidgetPlugin([WIDGETS_V1])])  # the fixed migration applies cleanly


def test_dialect_variant_replaces_the_generic_migration(store: Store) -> None:
    generic = MigrationItem(1, "w", "CREATE TABLE widgets (id INTEGER, kind VARCHAR(10));", tables=("widgets",))
    own = MigrationItem(1, "w", "CREATE TABLE widgets (id INTEGER, kind VARCHAR(10), mine INTEGER);",
                        tables=("widgets",), dialect=store.dialect)
    other = "postgresql" if store.dialect == "mysql" else "mysql"
    foreign = MigrationItem(2, "w2", "DROP TABLE widgets;", tables=("widgets",), dialect=other)
    migrate(store, [WidgetPlugin([generic, own, foreign])])
    store.execute("INSERT INTO widgets (id, kind, mine) VALUES (1, 'a', 2)")  # the variant's column exists
    assert store.table_exists("widgets")  # the other dialect's DROP did not run


def test_concurrent_migrate_runs_do_not_race(store: Store) -> None:
    plugins = [SpendLogPlugin(store), WidgetPlugin([WIDGETS_V1, WIDGETS_V2])]
    results: List[Any] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        own = Store.from_url(store.url)  # a separate connection per runner, as separate processes would have
        try:
            barrier.wait(timeout=10)
            results.append([m.label for m in migrate(own, plugins)])
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(isinstance(r, Exception) for r in results), results
    applied = sorted(label for r in results for label in r)
    assert applied == sorted([m.label for m in core_migrations(store.dialect)] + [
        "spend_log 0001_spend_log", "spend_log 0002_spend_log_metadata", "widgets 0001_widgets",
        "widgets 0002_widget_colour"])  # each applied exactly once, by one runner
    assert store.execute("SELECT COUNT(*) FROM widgets") == [(1,)]


# --- fork safety ------------------------------------------------------------------


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(store: Store) -> None:
    migrate(store, [])
    server_pid = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
    pid_sql = server_pid.get(store.dialect, "SELECT 1")
    db = store.database
    db.connect(reuse_if_open=True)  # the parent holds an open connection across the fork
    parent_conn = db.connection()
    parent_backend = db.execute_sql(pid_sql).fetchone()[0]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            assert store.database is not db
            backend = store.execute(pid_sql)[0][0]
            store.execute("INSERT INTO routeplane_meta (name, value, updated_at) VALUES ('child', 'x', 0)")
            store.close()
            os.write(write, json.dumps({"backend": backend}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    got = json.loads(os.read(read, 1000) or b"{}")
    os.close(read)
    assert os.WEXITSTATUS(status) == 0
    if store.dialect != "sqlite":
        assert got["backend"] != parent_backend
    assert store.database is db and db.connection() is parent_conn
    assert db.execute_sql("SELECT value FROM routeplane_meta WHERE name = 'child'").fetchone()[0] == "x"
    db.close()


# --- spend log ------------------------------------------------------------------


def _gateway(store: Store) -> Gateway:
    migrate(store, [SpendLogPlugin(store)])
    return Gateway(plugins=[SpendLogPlugin(store)], config=CONFIG)


def hand_cost(prompt: str) -> int:
    """The mock provider: input = ceil(len(prompt)/4) tokens, output = ceil(len("You said: " + prompt)/4)."""
    tokens_in = max(1, (len(prompt) + 3) // 4)
    tokens_out = (len("You said: " + prompt) + 3) // 4
    return tokens_in * int(PRICED["input"]) + tokens_out * int(PRICED["output"])


def test_spend_rows_for_success_stream_fallback_failure_and_unknown_price(store: Store) -> None:
    gw = _gateway(store)
    ok = gw.chat("hello world", model="priced", user="u1")
    assert ok.status == 200
    streamed = gw.chat("stream me please", model="priced", stream=True)
    assert streamed.status == 200
    fell_back = gw.chat("fall back", model="fallback")
    assert fell_back.status == 200
    failed = gw.chat("no luck", model="broken")
    assert failed.status >= 500
    unknown = gw.chat("what does it cost", model="unpriced")
    assert unknown.status == 200

    rows = {r["request_id"]: r for r in spend_rows(store)}
    assert len(rows) == 5
    by_id = {s.request_id: s for s in gw.settlements.items}
    assert set(rows) == set(by_id)
    for rid, row in rows.items():
        s = by_id[rid]
        assert row["cost_micro_usd"] == s.cost_micro_usd
        assert row["route"] == s.route and row["outcome"] == s.outcome and row["attempts"] == len(s.attempts)
        assert bool(row["streamed"]) == s.streamed
    by_route = {r["route"]: r for r in rows.values()}
    assert by_route["priced"]["cost_micro_usd"] in (hand_cost("hello world"), hand_cost("stream me please"))
    costs = sorted(r["cost_micro_usd"] for r in rows.values() if r["route"] == "priced")
    assert costs == sorted([hand_cost("hello world"), hand_cost("stream me please")])
    fb = by_route["fallback"]
    assert fb["cost_micro_usd"] == hand_cost("fall back") and fb["attempts"] == 2 and fb["outcome"] == "success"
    assert [a["ok"] for a in json.loads(fb["attempts_json"])] == [False, True]
    assert by_route["broken"]["outcome"] == "upstream_error" and by_route["broken"]["error_type"]
    assert by_route["unpriced"]["cost_micro_usd"] is None  # unknown price: NULL, never 0
    assert by_route["unpriced"]["output_tokens"] > 0
    assert by_route["priced"]["input_tokens"] > 0 and by_route["priced"]["latency_ms"] >= 0


def test_client_disconnect_mid_stream_is_recorded_once(store: Store) -> None:
    gw = _gateway(store)
    resp = gw.client.post("/v1/chat/completions", buffered=False, json={
        "model": "priced", "stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]})
    assert resp.status_code == 200
    next(iter(resp.response))  # the first chunk, then the client goes away
    resp.close()
    rows = spend_rows(store)
    assert len(rows) == 1 and rows[0]["outcome"] == "client_disconnected" and rows[0]["streamed"]


def test_write_is_idempotent_and_carries_no_secret_or_prompt(store: Store) -> None:
    migrate(store, [SpendLogPlugin(store)])
    prompt = "my secret prompt text"
    s = Settlement(
        request_id="req-1", started_at=1_700_000_000.0, inbound_protocol="openai_chat", route="priced",
        streamed=False, outcome="success", provider="mock", model="echo", account_id="acct", session_id="sess",
        usage=Usage(input_tokens=10, cache_read_tokens=5, cache_write_tokens=2, output_tokens=7, reasoning_tokens=3),
        cost_micro_usd=123, latency_ms=12.5, ttft_ms=3.0,
        attempts=(Attempt("mock", "fail", "mock", False, 1.0, 503, "UpstreamStatusError", f"echo of {prompt}"),
                  Attempt("mock", "echo", "mock", True, 2.0, 200)),
        metadata={"guard": {"prompt": prompt}},
    )
    recorder = SpendRecorder(store)
    row = spend_row(s)
    recorder.write(row)
    recorder.write(row)  # a retried write (the first reply was lost) cannot count the request twice
    rows = spend_rows(store)
    assert len(rows) == 1
    row = rows[0]
    # A client may reuse an x-request-id; the second request is still a row of its own.
    recorder.record(s)
    assert len(spend_rows(store)) == 2
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"], row["output_tokens"],
            row["reasoning_tokens"]) == (10, 5, 2, 7, 3)
    assert row["account_id"] == "acct" and row["session_id"] == "sess" and row["ttft_ms"] == 3.0
    dumped = json.dumps(row, default=str)
    assert prompt not in dumped and "sk-" not in dumped


def test_rows_wait_in_the_spool_while_the_store_is_down_and_are_written_once_after(store: Store, tmp_path: Any) -> None:
    from routeplane.store.spool import Spool

    migrate(store, [SpendLogPlugin(store)])
    spool = Spool(str(tmp_path / "spend.spool"))
    recorder = SpendRecorder(store, retries=0, spool=spool)

    def settle(rid: str) -> None:
        recorder.record(Settlement(rid, time.time(), "openai_chat", "r", False, "success", cost_micro_usd=1))

    settle("one")
    store.execute("ALTER TABLE spend_log RENAME TO spend_log_away")  # the store cannot take spend rows
    settle("two")
    settle("three")
    assert spool.pending()
    store.execute("ALTER TABLE spend_log_away RENAME TO spend_log")
    settle("four")  # a successful write replays the spool
    assert not spool.pending()
    assert sorted(r["request_id"] for r in spend_rows(store)) == ["four", "one", "three", "two"]
    with pytest.raises(peewee.IntegrityError):
        SpendRecorder(store, retries=0).write_rows([{"id": "x", "nonsense": 1}])  # without a spool, errors surface


def _settle_in_threads(recorder: SpendRecorder, store: Store, n: int, check_committed: bool,
                       cost: Any = lambda i: i) -> List[Any]:
    """`n` threads settle at once; each reports its error, or whether its row was in the store on return."""
    start = threading.Barrier(n)
    results: List[Any] = [None] * n

    def one(i: int) -> None:
        start.wait(10)
        try:
            recorder.record(Settlement(f"gc-{i}", time.time(), "openai_chat", "r", False, "success",
                                       cost_micro_usd=cost(i)))
            results[i] = (not check_committed) or any(r["request_id"] == f"gc-{i}" for r in spend_rows(store))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_settlements_share_transactions_and_return_only_once_committed(store: Store) -> None:
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)
    write_rows = recorder.write_rows

    def slow_write(rows: List[Any]) -> None:  # a slow store: settlements pile up behind the writer
        time.sleep(0.02)
        write_rows(rows)

    recorder.write_rows = slow_write  # type: ignore[method-assign]
    n = 24
    results = _settle_in_threads(recorder, store, n, check_committed=True)
    assert results == [True] * n  # every record() returned after its own row was committed
    rows = spend_rows(store)
    assert sorted(r["request_id"] for r in rows) == sorted(f"gc-{i}" for i in range(n))
    assert sum(r["cost_micro_usd"] for r in rows) == sum(range(n))
    assert 2 <= recorder.batches < n  # grouped, not one transaction per row


def test_the_writer_role_passes_from_batch_to_batch_without_losing_or_stranding_a_row(store: Store) -> None:
    # Many threads settling again and again: the role is handed on from each batch's writer to
    # the oldest row that arrived meanwhile. Every record() must return (none left waiting with
    # no writer), after its own row is in the store, and rows must share transactions.
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)
    write_rows = recorder.write_rows

    def slow_write(rows: List[Any]) -> None:
        time.sleep(0.002)
        write_rows(rows)

    recorder.write_rows = slow_write  # type: ignore[method-assign]
    threads, rounds = 16, 15
    failures: List[Any] = []

    def settle_many(t: int) -> None:
        for r in range(rounds):
            rid = f"hand-{t}-{r}"
            try:
                recorder.record(Settlement(rid, time.time(), "openai_chat", "r", False, "success", cost_micro_usd=1))
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    workers = [threading.Thread(target=settle_many, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not any(w.is_alive() for w in workers), "a settlement was left waiting"
    assert failures == []
    rows = spend_rows(store)
    assert len(rows) == threads * rounds and len({r["request_id"] for r in rows}) == threads * rounds
    assert recorder.batches < threads * rounds
    assert not recorder._writing and recorder._waiting == []


def test_a_failed_group_write_reaches_every_row_owner_or_the_spool(store: Store, tmp_path: Any) -> None:
    from routeplane.store.spool import Spool

    migrate(store, [SpendLogPlugin(store)])
    store.execute("ALTER TABLE spend_log RENAME TO spend_log_away")
    try:
        results = _settle_in_threads(SpendRecorder(store, retries=0), store, 12, check_committed=False)
        assert all(isinstance(r, Exception) for r in results), results  # no spool: each owner sees the failure
        spool = Spool(str(tmp_path / "gc.spool"))
        results = _settle_in_threads(SpendRecorder(store, retries=0, spool=spool), store, 12, check_committed=False)
        assert results == [True] * 12
        with open(spool.path) as fh:
            spooled = [json.loads(line)["request_id"] for line in fh]
        assert sorted(spooled) == sorted(f"gc-{i}" for i in range(12))
    finally:
        store.execute("ALTER TABLE spend_log_away RENAME TO spend_log")


def test_a_driver_error_on_the_direct_insert_path_is_retried(store: Store) -> None:
    # write_rows calls the driver directly: its errors must still arrive as peewee's
    # OperationalError, which the retry handles (SQLite: "database is locked", "no such table").
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL and MySQL report a missing table as ProgrammingError, which is not retried")
    migrate(store, [SpendLogPlugin(store)])
    store.execute("ALTER TABLE spend_log RENAME TO spend_log_away")
    timer = threading.Timer(0.02, lambda: store.execute("ALTER TABLE spend_log_away RENAME TO spend_log"))
    timer.start()
    SpendRecorder(store, retries=3).record(
        Settlement("retried", time.time(), "openai_chat", "r", False, "success", cost_micro_usd=1))
    timer.join()
    assert [r["request_id"] for r in spend_rows(store)] == ["retried"]


def test_a_row_the_database_refuses_fails_alone_not_with_its_batch(store: Store) -> None:
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)
    write_rows = recorder.write_rows

    def slow_write(rows: List[Any]) -> None:  # settlements pile up, so the bad row shares a batch
        time.sleep(0.02)
        write_rows(rows)

    recorder.write_rows = slow_write  # type: ignore[method-assign]
    n, bad = 12, 5
    # A cost past a 64-bit column on every backend.
    results = _settle_in_threads(recorder, store, n, check_committed=False,
                                 cost=lambda i: 2 ** 70 if i == bad else i)
    assert isinstance(results[bad], Exception)
    assert [r for i, r in enumerate(results) if i != bad] == [True] * (n - 1)
    assert sorted(r["request_id"] for r in spend_rows(store)) == sorted(f"gc-{i}" for i in range(n) if i != bad)


def test_a_refused_spooled_row_goes_aside_and_does_not_block_the_spool(store: Store, tmp_path: Any) -> None:
    from routeplane.store.spool import Spool

    migrate(store, [SpendLogPlugin(store)])
    spool = Spool(str(tmp_path / "spend.spool"))
    good = spend_row(Settlement("spooled-good", time.time(), "openai_chat", "r", False, "success", cost_micro_usd=1))
    poison = spend_row(Settlement("spooled-bad", time.time(), "openai_chat", "r", False, "success",
                                  cost_micro_usd=2 ** 70))
    spool.append([good, poison])
    recorder = SpendRecorder(store, spool=spool)
    recorder.record(Settlement("live", time.time(), "openai_chat", "r", False, "success", cost_micro_usd=1))
    assert sorted(r["request_id"] for r in spend_rows(store)) == ["live", "spooled-good"]
    assert not spool.pending()
    with open(spool.path + ".rejected") as fh:
        assert [json.loads(line)["request_id"] for line in fh] == ["spooled-bad"]


def test_cost_matches_hand_computation_for_every_bucket() -> None:
    usage = Usage(input_tokens=1000, cache_read_tokens=2000, cache_write_tokens=300, output_tokens=400,
                  reasoning_tokens=50)
    prices = Prices(input=3.0, cache_read=0.3, cache_write=3.75, output=15.0, reasoning=15.0)
    assert cost_micro_usd(usage, prices) == 1000 * 3 + 2000 * 0.3 + 300 * 3.75 + 400 * 15 + 50 * 15
    assert cost_micro_usd(usage, Prices(input=3.0)) is None  # output used but unpriced → unknown
    assert cost_micro_usd(Usage(input_tokens=10), Prices(input=3.0)) == 30


def test_tiered_prices_apply_to_the_whole_request_above_the_threshold() -> None:
    from routeplane.config import parse_config

    config = parse_config({"providers": {"g": {"protocol": "mock", "prices": {
        "input": 1.25, "cache_read": 0.31, "output": 10.0,
        "tiers": [{"above_input_tokens": 200_000, "input": 2.5, "output": 15.0},
                  {"above_input_tokens": 1_000_000, "input": 5.0}]}}},
        "models": {"m": {"targets": [{"provider": "g", "model": "x"}]}}})
    prices = config.routes[0].targets[0].prices
    assert cost_micro_usd(Usage(input_tokens=200_000, output_tokens=100), prices) == 200_000 * 1.25 + 100 * 10
    # cache reads count toward the threshold; the tier leaves cache_read at its base price
    assert cost_micro_usd(Usage(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=100), prices) == \
        150_000 * 2.5 + 60_000 * 0.31 + 100 * 15
    # a higher tier inherits what it does not set from the tier below (output 15, not the base 10)
    assert cost_micro_usd(Usage(input_tokens=1_000_001, output_tokens=1), prices) == 1_000_001 * 5 + 15


def test_spend_totals_by_account_model_provider(store: Store) -> None:
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)

    def settle(rid: str, account: str, provider: str, model: str, cost: Any, outcome: str = "success") -> None:
        recorder.record(Settlement(rid, 1_700_000_100.0, "openai_chat", "r", False, outcome, provider=provider,
                                   model=model, account_id=account, usage=Usage(input_tokens=10, output_tokens=5),
                                   cost_micro_usd=cost))

    settle("a", "alice", "p1", "m1", 100)
    settle("b", "alice", "p2", "m2", 50)
    settle("c", "bob", "p1", "m1", None)
    settle("d", "bob", "p1", "m1", 0, outcome="upstream_error")
    totals = {t.key: t for t in spend_totals(store, 1_700_000_000.0, 1_700_000_200.0, "account")}
    assert (totals["alice"].requests, totals["alice"].cost_micro_usd, totals["alice"].unpriced) == (2, 150, 0)
    assert (totals["bob"].requests, totals["bob"].cost_micro_usd, totals["bob"].unpriced, totals["bob"].failed) == \
        (2, 0, 1, 1)
    assert totals["alice"].input_tokens == 20 and totals["alice"].output_tokens == 10
    by_provider = {t.key: t.cost_micro_usd for t in spend_totals(store, 1_700_000_000.0, 1_700_000_200.0, "provider")}
    assert by_provider == {"p1": 100, "p2": 50}
    by_model = [t.key for t in spend_totals(store, 1_700_000_000.0, 1_700_000_200.0, "model")]
    assert by_model == ["m1", "m2"]
    assert spend_totals(store, 1_700_000_150.0, 1_700_000_200.0, "account") == []  # outside the window


def test_cli_migrate_status_and_spend_json(store: Store, tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    import yaml

    from routeplane.cli import main

    config = tmp_path / "routeplane.yaml"
    config.write_text(yaml.safe_dump(dict(CONFIG, database={"url": store.url})))
    assert main(["migrate", "--config", str(config)]) == 0
    n = len(core_migrations(store.dialect)) + 2  # spend_log 1 and 2
    assert f"up to date ({n} migrations, {n} applied now)" in capsys.readouterr().out
    assert main(["migrate", "--config", str(config), "--status"]) == 0
    status = capsys.readouterr().out
    assert "routeplane        1  applied  core" in status and "spend_log         1  applied  spend_log" in status
    SpendRecorder(store).record(Settlement("x", time.time(), "openai_chat", "r", False, "success",
                                           provider="mock", model="echo", account_id="acct", cost_micro_usd=2_500_000,
                                           usage=Usage(input_tokens=1)))
    assert main(["spend", "--config", str(config), "--by", "provider", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["key"] == "mock" and out["total"]["cost_usd"] == 2.5 and out["total"]["requests"] == 1
    assert main(["spend", "--config", str(config), "--since", "7d"]) == 0
    table = capsys.readouterr().out
    assert "acct" in table and "2.500000" in table
    # A request of unknown price is never shown as free: "unknown" for a line of only such requests, a
    # lower bound where some are (it read 0.000000 and 2.500000).
    for rid, account, cost in (("y", "free-acct", None), ("z", "acct", None)):
        SpendRecorder(store).record(Settlement(rid, time.time(), "openai_chat", "r", False, "success", provider="mock",
                                               model="echo", account_id=account, cost_micro_usd=cost,
                                               usage=Usage(input_tokens=1)))
    assert main(["spend", "--config", str(config), "--since", "7d"]) == 0
    cells = {line.split()[0]: line.split()[5] for line in capsys.readouterr().out.splitlines()[2:] if line[:1] != "-"}
    assert cells == {"acct": "≥2.500000", "free-acct": "unknown", "TOTAL": "≥2.500000"}, cells
    store.execute(f"UPDATE {HISTORY} SET checksum = 'x' WHERE plugin = 'spend_log'")
    assert main(["migrate", "--config", str(config), "--status"]) == 1
    assert "changed" in capsys.readouterr().out
    assert main(["migrate", "--config", str(config)]) == 1
    assert "changed since they ran" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["postgres_cluster", "mariadb_server"])
def test_spend_writes_survive_a_server_restart(request: pytest.FixtureRequest, fixture: str) -> None:
    server = request.getfixturevalue(fixture)
    store = Store.from_url(server.create_database("t_" + uuid.uuid4().hex[:12]))
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)
    recorder.record(Settlement("before", time.time(), "openai_chat", "r", False, "success"))
    server.restart()  # the pooled connection is now dead
    recorder.record(Settlement("after", time.time(), "openai_chat", "r", False, "success"))
    assert sorted(r["request_id"] for r in spend_rows(store)) == ["after", "before"]
    store.close()


def test_chosen_plugins_metadata_reaches_the_spend_row_and_no_other(store: Store) -> None:
    migrate(store, [SpendLogPlugin(store)])
    s = Settlement("req-m", time.time(), "openai_chat", "r", False, "success", provider="mock", model="echo",
                   metadata={"attestation": {"verdicts": [{"provider": "tee", "verified": True}]},
                             "chatty": {"prompt": "do not store me"}})
    SpendRecorder(store).record(s)
    [row] = spend_rows(store)
    assert json.loads(row["metadata_json"]) == {"attestation": {"verdicts": [{"provider": "tee", "verified": True}]}}
