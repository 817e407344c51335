"""The store, migrations and the spend log probed as a hostile user and a careful operator would: a spool torn by a
full disk or a crash, a drainer killed mid-replay, a PostgreSQL database that is not UTF-8, an upstream that
reports absurd token counts. Every accepted request keeps its spend row."""

from __future__ import annotations

import json
import os
import resource
import signal
import time
import uuid
from typing import Any, Dict, Iterator, List

import pytest

from routeplane.language_model.settlement import Settlement
from routeplane.language_model.types import Usage
from routeplane.store import MigrationError, Store, migrate
from routeplane.store.spend_log import SpendLogPlugin, SpendRecorder, spend_row, spend_rows, spend_totals
from routeplane.store.spool import Spool


def settlement(rid: str, **kw: Any) -> Settlement:
    return Settlement(rid, time.time(), "openai_chat", "r", False, "success", **{"cost_micro_usd": 1, **kw})


@pytest.fixture
def sqlite_store(tmp_path: Any) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path}/spend.db")
    migrate(store, [SpendLogPlugin(store)])
    yield store
    store.close()


def _in_child(run: Any) -> int:
    """Run `run()` in a forked child (which never returns into pytest); its exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            code = int(run())
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# --- the spool ------------------------------------------------------------------------------------------------


def test_a_torn_spool_line_strands_no_row_before_or_after_it(sqlite_store: Store, tmp_path: Any) -> None:
    """A crash (or a full disk) in the middle of an append leaves half a line in the spool. Every later drain
    failed on it (JSONDecodeError), so the rows before it never reached the store, and the next append glued
    its row onto the fragment, so that row was unreadable too."""
    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([spend_row(settlement("before-torn"))])
    with open(spool.path, "a", encoding="utf-8") as fh:
        fh.write('{"id":"sp_torn","request_id":"to')  # what a killed writer left behind
    spool.append([spend_row(settlement("after-torn"))])
    SpendRecorder(sqlite_store, spool=spool).record(settlement("live"))  # a successful write replays the spool
    assert sorted(r["request_id"] for r in spend_rows(sqlite_store)) == ["after-torn", "before-torn", "live"]
    assert not spool.pending()
    with open(spool.path + ".rejected", encoding="utf-8") as fh:
        assert [json.loads(line) for line in fh] == [{"unparseable": '{"id":"sp_torn","request_id":"to'}]


def test_a_spool_append_that_hits_a_full_disk_leaves_no_partial_line(sqlite_store: Store, tmp_path: Any) -> None:
    """The disk fills up in the middle of an append: the writer hears of it (its row is counted as lost), and the
    rows already spooled must stay readable, as must rows spooled once there is room again."""
    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([spend_row(settlement("spooled-first"))])
    before = os.path.getsize(spool.path)

    def append_on_a_full_disk() -> int:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (before + 100, resource.RLIM_INFINITY))
        try:
            Spool(spool.path).append([spend_row(settlement("no-room"))])
        except OSError:
            return 0
        return 1

    assert _in_child(append_on_a_full_disk) == 0  # the append failed, and said so
    assert os.path.getsize(spool.path) == before  # nothing of the row that did not fit stayed behind
    spool.append([spend_row(settlement("spooled-later"))])
    SpendRecorder(sqlite_store, spool=spool).record(settlement("live"))
    assert sorted(r["request_id"] for r in spend_rows(sqlite_store)) == ["live", "spooled-first", "spooled-later"]
    assert not os.path.exists(spool.path + ".rejected")


def test_a_drainer_killed_mid_replay_loses_no_spooled_row(sqlite_store: Store, tmp_path: Any) -> None:
    """The drainer emptied the spool (and fsynced it) before writing its rows to the store: a worker killed in
    between (gunicorn's SIGKILL after graceful_timeout, the OOM killer) lost every spooled row."""
    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([spend_row(settlement("spooled-1")), spend_row(settlement("spooled-2"))])

    def killed_while_writing(rows: List[Dict[str, Any]]) -> None:
        os._exit(0)  # SIGKILL-like: no finally, no except runs

    assert _in_child(lambda: Spool(spool.path).drain(killed_while_writing) or 1) == 0
    SpendRecorder(sqlite_store, spool=spool).record(settlement("live"))
    assert sorted(r["request_id"] for r in spend_rows(sqlite_store)) == ["live", "spooled-1", "spooled-2"]
    assert not spool.pending()


def test_a_second_drainer_neither_waits_for_the_first_nor_doubles_its_rows(tmp_path: Any) -> None:
    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([{"id": "a"}, {"id": "b"}])
    inner: List[int] = []
    written: List[str] = []

    def write(rows: List[Dict[str, Any]]) -> None:
        inner.append(Spool(spool.path).drain(lambda more: written.extend(r["id"] for r in more)))
        written.extend(r["id"] for r in rows)

    assert spool.drain(write) == 2
    assert inner == [0] and written == ["a", "b"] and not spool.pending()


def test_a_drainer_rejecting_a_row_while_an_appender_waits_does_not_deadlock(tmp_path: Any) -> None:
    """The drainer holds the spool's flock while it writes; an appender of the same process waits for it
    holding the spool's thread lock. Rejecting a refused row must not need that lock."""
    import threading

    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([{"id": "poison"}])
    rejected = threading.Event()

    def write(rows: List[Dict[str, Any]]) -> None:
        appender = threading.Thread(target=spool.append, args=([{"id": "late"}],), daemon=True)
        appender.start()
        deadline = time.monotonic() + 5
        while appender.is_alive() and not spool._lock.locked() and time.monotonic() < deadline:
            time.sleep(0.001)
        rejecter = threading.Thread(target=lambda: (spool.reject(rows), rejected.set()), daemon=True)
        rejecter.start()
        rejecter.join(5)

    spool.drain(write)
    assert rejected.is_set()
    seen: List[Dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        spool.drain(seen.extend)
    assert [r["id"] for r in seen] == ["late"]


def test_an_appender_never_waits_for_a_drainer_writing_to_the_store(tmp_path: Any) -> None:
    """The drainer held the spool's flock for the whole of write_rows (its retries, a connect timeout, a hung
    connection). A worker that had to spool meanwhile (the store is down: exactly then) waited in append with
    its group-commit writer role, so every request of that worker waited at settlement, for as long as the
    drainer's database call took, without bound."""
    import threading

    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([{"id": "old"}])
    entered, release = threading.Event(), threading.Event()
    written: List[str] = []

    def hung_store(rows: List[Dict[str, Any]]) -> None:
        entered.set()
        release.wait(30)
        written.extend(r["id"] for r in rows)

    drainer = threading.Thread(target=spool.drain, args=(hung_store,), daemon=True)
    drainer.start()
    try:
        assert entered.wait(5)
        appender = threading.Thread(target=Spool(spool.path).append, args=([{"id": "new"}],), daemon=True)
        appender.start()  # another worker of the host, as far as flock is concerned (its own open file)
        appender.join(2)
        assert not appender.is_alive(), "an append waited for the drainer's database write"
        assert Spool(spool.path).drain(lambda rows: pytest.fail("a second drainer")) == 0
    finally:
        release.set()
        drainer.join(5)
    assert written == ["old"] and spool.pending()  # the row appended meanwhile is still there, for the next drain
    later: List[str] = []
    assert spool.drain(lambda rows: later.extend(r["id"] for r in rows)) == 1
    assert later == ["new"] and not spool.pending()


def test_a_drainer_killed_after_moving_the_lines_loses_none_and_doubles_none(sqlite_store: Store,
                                                                              tmp_path: Any) -> None:
    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([spend_row(settlement("moved-1"))])

    def killed_while_writing(rows: List[Dict[str, Any]]) -> None:
        os._exit(0)

    assert _in_child(lambda: Spool(spool.path).drain(killed_while_writing) or 1) == 0
    assert spool.pending()  # the rows wait in .draining
    spool.append([spend_row(settlement("spooled-after"))])
    SpendRecorder(sqlite_store, spool=spool).record(settlement("live"))
    assert sorted(r["request_id"] for r in spend_rows(sqlite_store)) == ["live", "moved-1", "spooled-after"]
    assert not spool.pending() and not os.path.exists(spool.path + ".rejected")


# --- PostgreSQL databases that are not UTF-8 -------------------------------------------------------------------


def _pg_database(cluster: Any, encoding: str) -> str:
    """A fresh database of `encoding` (C locale) on the cluster; its URL."""
    import psycopg2

    name = f"enc_{encoding.lower()}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(cluster.url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    finally:
        conn.close()
    return cluster.url.rsplit("/", 1)[0] + "/" + name


NAMES = ["plain", "Zoë", "客户-1", "🚀 team"]


def test_a_sql_ascii_postgresql_database_keeps_every_spend_row(postgres_cluster: Any) -> None:
    """initdb under LANG=C (a bare container) makes SQL_ASCII databases. psycopg2 then encoded text as ASCII,
    so the spend row of every request with a non-ASCII account, route or model was refused, and lost."""
    store = Store.from_url(_pg_database(postgres_cluster, "SQL_ASCII"))
    try:
        migrate(store, [SpendLogPlugin(store)])
        recorder = SpendRecorder(store)
        for name in NAMES:
            recorder.record(settlement(f"rid-{NAMES.index(name)}", account_id=name, model=name))
        assert sorted((r["account_id"], r["model"]) for r in spend_rows(store)) == sorted((n, n) for n in NAMES)
        assert sorted(t.key for t in spend_totals(store, 0, by="account")) == sorted(NAMES)
    finally:
        store.close()


def test_migrate_refuses_a_postgresql_database_whose_encoding_loses_text(postgres_cluster: Any) -> None:
    """A LATIN1 database cannot hold CJK or emoji: those spend rows would be refused. Refuse to create tables
    there, as for a MySQL database that is not utf8mb4, naming the fix."""
    store = Store.from_url(_pg_database(postgres_cluster, "LATIN1"))
    try:
        with pytest.raises(MigrationError, match=r"LATIN1.*UTF8"):
            migrate(store, [SpendLogPlugin(store)])
        assert not store.table_exists("spend_log") and not store.table_exists("routeplane_migrations")
    finally:
        store.close()


def test_postgresql_connections_notice_a_dead_peer_in_about_a_minute(postgres_cluster: Any) -> None:
    """libpq has no query timeout: across a partition a spend write (and every request of the worker waiting
    on that commit) hung for the kernel's retransmission limit, ~15 min, or 2 h on an idle pooled connection.
    Keepalives and tcp_user_timeout are on by default; a URL option still overrides each."""
    for url, user_timeout, idle in ((postgres_cluster.url, "60000", "30"),
                                    (postgres_cluster.url + "?keepalives_idle=5&tcp_user_timeout=1000", "1000", "5")):
        store = Store.from_url(url)
        try:
            with store.connection() as db:
                params = db.connection().get_dsn_parameters()
            assert (params.get("keepalives"), params.get("keepalives_idle"), params.get("keepalives_count")) == \
                ("1", idle, "3"), params
            assert params.get("tcp_user_timeout") == user_timeout, params
        finally:
            store.close()


# --- exactness --------------------------------------------------------------------------------------------------


def test_absurd_token_counts_from_an_upstream_still_leave_a_spend_row(dialect_store: Store) -> None:
    """An upstream that reports `prompt_tokens: 1e20` (a bug, a hostile relay) was served and answered 200, but its
    spend row overflowed the BIGINT columns and was refused: the request went unrecorded. The counts are capped
    (as the cost is), so the row is kept and the totals still add up on every dialect."""
    store = dialect_store
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)
    huge = Usage(input_tokens=10 ** 20, cache_read_tokens=2 ** 63, cache_write_tokens=2 ** 64, output_tokens=10 ** 30,
                 reasoning_tokens=2 ** 70)
    for i in range(3):
        recorder.record(settlement(f"huge-{i}", usage=huge, account_id="acct"))
    recorder.record(settlement("small", usage=Usage(input_tokens=7, output_tokens=3), account_id="acct"))
    rows = {r["request_id"]: r for r in spend_rows(store)}
    assert sorted(rows) == ["huge-0", "huge-1", "huge-2", "small"]
    cap = rows["huge-0"]["input_tokens"]
    assert 10 ** 12 <= cap < 2 ** 53
    assert all(rows["huge-0"][k] == cap for k in ("cache_read_tokens", "cache_write_tokens", "output_tokens",
                                                   "reasoning_tokens"))
    [total] = spend_totals(store, 0, by="account")
    assert (total.requests, total.input_tokens, total.output_tokens) == (4, 3 * 3 * cap + 7, 3 * 2 * cap + 3)


# --- a server store under pressure -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["postgres_cluster", "mariadb_server"])
def test_a_spend_write_that_finds_the_pool_exhausted_is_spooled_not_refused(
        request: pytest.FixtureRequest, fixture: str, tmp_path: Any) -> None:
    """With every pooled connection busy past `pool_timeout`, peewee raises MaxConnectionsExceeded, a ValueError:
    the recorder took it for the database refusing the row's data, logged "refused" and dropped the row (and a
    spool replay moved spooled rows to .rejected for good). The store is busy, not the row wrong: spool it."""
    import threading

    server = request.getfixturevalue(fixture)
    store = Store.from_url(server.create_database("t_" + uuid.uuid4().hex[:12]) + "?max_connections=1&pool_timeout=1")
    try:
        migrate(store, [SpendLogPlugin(store)])
        spool = Spool(str(tmp_path / "spend.spool"))
        recorder = SpendRecorder(store, retries=0, spool=spool)
        held, release = threading.Event(), threading.Event()

        def hold_the_only_connection() -> None:
            with store.connection():
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_only_connection, daemon=True)
        holder.start()
        assert held.wait(5)
        try:
            recorder.record(settlement("while-busy"))  # returns: the row is spooled
        finally:
            release.set()
            holder.join(5)
        assert spool.pending()
        recorder.record(settlement("after"))  # the pool is free again: the spooled row follows
        assert sorted(r["request_id"] for r in spend_rows(store)) == ["after", "while-busy"]
        assert not os.path.exists(spool.path + ".rejected")
    finally:
        store.close()


# --- the same report on every dialect ------------------------------------------------------------------------------


def test_the_spend_report_keeps_names_apart_that_differ_only_in_case_or_trailing_spaces(dialect_store: Store) -> None:
    """`routeplane spend --by model` on MariaDB merged `gpt-x`, `GPT-x` and `gpt-x ` into one line (its collation
    compares them equal), where SQLite, PostgreSQL and the dashboard on MariaDB itself list three models. A
    client's 404 for `PRICED ` landed on the route `priced`'s line."""
    store = dialect_store
    migrate(store, [SpendLogPlugin(store)])
    recorder = SpendRecorder(store)
    names = ["gpt-x", "GPT-x", "gpt-x "]
    for i, name in enumerate(names):
        for j in range(i + 1):
            recorder.record(settlement(f"r{i}-{j}", model=name, account_id=name, cost_micro_usd=10 ** i))
    for by in ("model", "account"):
        totals = spend_totals(store, 0, by=by)
        assert [(t.key, t.requests, t.cost_micro_usd) for t in totals] == [("gpt-x ", 3, 300), ("GPT-x", 2, 20),
                                                                          ("gpt-x", 1, 1)], by


# --- secrets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "mysql://rp@db.internal/spend?ssl_key=/etc/k.pem&ssl_key_password=s3cret-Pw",
    "mysql://rp@db.internal/spend?SSL_KEY_PASSWORD=s3cret-Pw&ssl_ca=/etc/ca.pem",
])
def test_every_password_option_the_store_accepts_is_redacted(url: str) -> None:
    """`ssl_key_password` is one of the PyMySQL options the URL may carry (database._MYSQL_TEXTS), but redact()
    only knew `password`, `passwd` and `sslpassword`: the key's passphrase was printed wherever the store is named."""
    from routeplane.store.database import redact

    assert "s3cret" not in redact(url) and "s3cret" not in Store.from_url(url).display_url
    assert "ssl_" in redact(url)  # the other options stay readable


@pytest.mark.parametrize("url", [
    "postgresql://rp@127.0.0.1:{port}/db?connect_timeout=2&password=s3cret-Pw",
    "mysql://rp@127.0.0.1:{port}/db?password=s3cret-Pw&connect_timeout=2",
    "postgresql://rp:other@127.0.0.1:{port}/db?sslmode=disable&sslpassword=s3cret-Pw",
])
def test_a_password_given_as_a_url_option_never_reaches_a_message(url: str, capsys: pytest.CaptureFixture) -> None:
    """libpq and PyMySQL take `password=` as a URL option, and routeplane passes options on: such a
    password worked, but redact() only hid the `user:password@` form, so it was printed in every message that
    names the store (the store unreachable at boot, a failed migration, `routeplane migrate`)."""
    from routeplane.cli import main
    from tests.support.gateway import free_port

    url = url.format(port=free_port())  # nothing listens there: the store is unreachable
    store = Store.from_url(url)
    assert "s3cret" not in store.display_url and "s3cret" not in repr(store)
    with pytest.raises(MigrationError) as failed:
        migrate(store, [SpendLogPlugin(store)])
    assert "s3cret" not in str(failed.value) and "cannot connect to" in str(failed.value)
    assert main(["migrate", "--database", url]) == 1
    err = capsys.readouterr().err
    assert "routeplane:" in err and "s3cret" not in err


# --- URL options --------------------------------------------------------------------------------------------------


def test_mysql_url_options_are_typed_for_pymysql(mariadb_server: Any, tmp_path: Any,
                                                  capsys: pytest.CaptureFixture) -> None:
    """docs: MySQL takes "the same URL options" as PostgreSQL (`connect_timeout=5`, ...). PyMySQL wants numbers and
    booleans, not the URL's strings, and refuses names it does not know: every connect was a TypeError (a traceback
    from `routeplane migrate`, and the spend log took it for a refused row). Typed, and an unknown option is one
    `database.url` line from `routeplane check`, before anything starts."""
    from routeplane.cli import main

    url = mariadb_server.create_database("t_" + uuid.uuid4().hex[:12])
    store = Store.from_url(url + "?connect_timeout=5&read_timeout=30&write_timeout=30&local_infile=false")
    try:
        migrate(store, [SpendLogPlugin(store)])
        SpendRecorder(store).record(settlement("typed-options"))
        assert [r["request_id"] for r in spend_rows(store)] == ["typed-options"]
    finally:
        store.close()
    for query, complaint in (("sslmode=require", "sslmode"), ("connect_timeout=soon", "connect_timeout"),
                             ("compress=maybe", "compress")):
        config = tmp_path / "routeplane.yaml"
        config.write_text(json.dumps({"database": {"url": f"{url}?{query}"}, "providers": {"mock": {"protocol": "mock"}},
                                      "models": {"m": {"targets": [{"provider": "mock", "model": "echo"}]}}}))
        assert main(["check", str(config)]) == 1
        err = capsys.readouterr().err
        assert "database.url" in err and complaint in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["connect_timeout=0", "read_timeout=-1", "write_timeout=0"])
def test_a_mysql_timeout_pymysql_refuses_spools_the_row_instead_of_dropping_it(tmp_path: Any, option: str) -> None:
    """PyMySQL raises ValueError at every connect for a timeout that is not > 0, and the spend log takes a
    ValueError for a row the database refused: every request's row was dropped (not spooled), as for
    `connect_timeout="5"` before the options were typed."""
    from routeplane.store.database import StoreError

    store = Store.from_url(f"mysql://rp@127.0.0.1:9/db?{option}")
    with pytest.raises(StoreError) as err:
        store.execute("SELECT 1")
    assert option.split("=")[0] in str(err.value)
    spool = Spool(str(tmp_path / "spend.spool"))
    SpendRecorder(store, retries=0, spool=spool).record(settlement("kept"))  # spooled: record() returns
    assert spool.pending()


def test_long_names_are_cut_to_their_columns_not_refused(dialect_store: Store) -> None:
    """A plugin's error kind (`RouteplaneError(kind=...)`) past 64 characters made PostgreSQL and MariaDB (strict)
    refuse the whole spend row: a served request went unrecorded. Every text column is cut to its width."""
    store = dialect_store
    migrate(store, [SpendLogPlugin(store)])
    long_kind = "policy_" + "k" * 100
    recorder = SpendRecorder(store)
    recorder.record(Settlement("r" * 200, time.time(), "openai_chat", "🚀" * 300, False, "error", account_id="é" * 300,
                               model="m" * 300, provider="p" * 300, session_id="s" * 300, error_type=long_kind,
                               status=500, cost_micro_usd=0))
    [row] = spend_rows(store)
    assert row["error_type"] == long_kind[:64] and row["request_id"] == "r" * 128
    assert (row["route"], row["account_id"], row["model"]) == ("🚀" * 255, "é" * 255, "m" * 255)
