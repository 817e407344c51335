"""Where the store's dialects differ, on SQLite, a real PostgreSQL and a real MariaDB: the budget lock under
concurrency, a migration that fails after DDL has run, MySQL's character set, the migration lock's scope."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, List

import pytest

from routeplane.app import MigrationItem, Plugin, PluginId
from routeplane.auth.store import MIGRATIONS, AuthStore, BudgetRule
from routeplane.language_model.settlement import Settlement
from routeplane.store import MigrationError, Migrator, Store, migrate
from routeplane.store.spend_log import SpendLogPlugin, SpendRecorder, spend_rows


class Migrations(Plugin):
    """A plugin that is only its migrations."""

    def __init__(self, plugin_id: str, items: List[MigrationItem]) -> None:
        self.id = PluginId(plugin_id)
        self.items = items

    def migrations(self) -> List[MigrationItem]:
        return list(self.items)

    def install(self, app: Any) -> None:
        return None


@pytest.fixture
def store(dialect_store: Store) -> Store:
    return dialect_store


@pytest.fixture
def auth_store(store: Store) -> AuthStore:
    migrate(store, [Migrations("auth", MIGRATIONS)])  # the auth plugin's tables (the plugin needs a config)
    return AuthStore(store)


# --- budget admission -------------------------------------------------------------


def _admit_at_once(auth: AuthStore, account: str, threads: int, rounds: int, amount: int, limit: int) -> List[Any]:
    """`threads` threads ask `rounds` times each for `amount` against `limit`, all starting at the same moment;
    one result per admission: admitted (True), refused (False) or the error."""
    rules = [BudgetRule(limit, "account", account)]
    start = threading.Barrier(threads)
    results: List[Any] = []

    def one() -> None:
        start.wait(10)
        for _ in range(rounds):
            try:
                verdict = auth.admit(uuid.uuid4().hex, account, None, amount, rules, time.time(), 300.0)
                results.append(verdict.denied_by is None)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                results.append(exc)

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return results


@pytest.mark.parametrize("lock_row", ["new", "existing"])
def test_a_burst_on_one_account_is_admitted_one_at_a_time_without_errors(auth_store: AuthStore, lock_row: str) -> None:
    # Whether the burst creates the account's lock row or finds it, every admission waits for the one
    # before it and none fails: on MySQL, INSERT IGNORE took a shared lock on the existing row and
    # FOR UPDATE then wanted it exclusive, so two admissions deadlocked (most of a burst failed with
    # "Deadlock found"). Exactly as many reservations as the limit covers are admitted.
    account = "acct-" + lock_row
    if lock_row == "existing":
        assert _admit_at_once(auth_store, account, 1, 1, 0, 10) == [True]
    threads, rounds, amount = 16, 10, 100
    results = _admit_at_once(auth_store, account, threads, rounds, amount, 120 * amount)
    assert [r for r in results if not isinstance(r, bool)] == []
    assert (results.count(True), results.count(False)) == (120, threads * rounds - 120)
    assert auth_store.ledger_total(account) == 120 * amount


def test_bursts_on_many_new_accounts_do_not_deadlock_each_other(auth_store: AuthStore) -> None:
    # First admissions of different accounts insert neighbouring lock rows at the same moment.
    results: List[Any] = []
    start = threading.Barrier(16)

    def one(i: int) -> None:
        start.wait(10)
        for r in range(5):
            account = f"acct-{r}-{i:02d}"
            try:
                verdict = auth_store.admit(uuid.uuid4().hex, account, None, 1, [BudgetRule(10, "account", account)],
                                           time.time(), 300.0)
                results.append(verdict.denied_by is None)
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                results.append(exc)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert results == [True] * 80


# --- a migration that fails halfway --------------------------------------------------

WIDGETS = MigrationItem(1, "widgets", "CREATE TABLE widgets (id INTEGER PRIMARY KEY, name VARCHAR(50));",
                        tables=("widgets",))


def _columns(store: Store, table: str) -> List[str]:
    with store.connection() as db:
        return sorted(c.name for c in db.get_columns(table))


def _indexes(store: Store, table: str) -> List[str]:
    with store.connection() as db:
        return sorted(i.name for i in db.get_indexes(table) if i.name.lower() != "primary" and "pkey" not in i.name
                      and not i.name.startswith("sqlite_autoindex"))


def test_what_a_failed_migration_created_is_gone_and_it_can_run_once_fixed(store: Store) -> None:
    # MySQL commits each CREATE as it runs, so the transaction's rollback left the tables, the
    # view and the index behind, and the fixed migration then failed on "table already exists".
    migrate(store, [Migrations("widgets", [WIDGETS])])
    tables = ("widgets", "widgets_parts", "widgets_named")
    sql = ("CREATE TABLE widgets_parts (id INTEGER PRIMARY KEY, widget INTEGER NOT NULL);\n"
           "CREATE INDEX widgets_parts_widget ON widgets_parts (widget);\n"
           "CREATE INDEX widgets_by_name ON widgets (name);\n"
           "CREATE VIEW widgets_named AS SELECT id, name FROM widgets;\n"
           "INSERT INTO widgets_parts (id, widget) VALUES (1, 1);\n")
    broken = MigrationItem(2, "parts", sql + "INSERT INTO widgets_parts (nope) VALUES (1);", tables=tables)
    with pytest.raises(MigrationError, match="widgets 0002_parts failed") as failed:
        migrate(store, [Migrations("widgets", [WIDGETS, broken])])
    assert "stayed applied" not in str(failed.value)
    with store.connection() as db:
        assert sorted(db.get_tables()) == ["routeplane_breakers", "routeplane_meta", "routeplane_migrations",
                                           "routeplane_plugin_counters", "routeplane_plugin_stats", "widgets"]
        assert db.get_views() == []
    assert _indexes(store, "widgets") == []
    fixed = MigrationItem(2, "parts", sql, tables=tables)
    assert [m.label for m in migrate(store, [Migrations("widgets", [WIDGETS, fixed])])] == ["widgets 0002_parts"]
    assert store.execute("SELECT id, widget FROM widgets_parts") == [(1, 1)]


def test_a_failed_migration_rolls_back_or_names_what_stayed_applied(store: Store) -> None:
    migrate(store, [Migrations("widgets", [WIDGETS])])
    store.execute("INSERT INTO widgets (id, name) VALUES (1, 'kept')")
    broken = MigrationItem(2, "colour", "CREATE TABLE IF NOT EXISTS widgets (id INTEGER PRIMARY KEY);\n"
                                        "ALTER TABLE widgets ADD COLUMN colour VARCHAR(20);\n"
                                        "INSERT INTO widgets (nope) VALUES (1);", tables=("widgets",))
    with pytest.raises(MigrationError, match="widgets 0002_colour failed") as failed:
        migrate(store, [Migrations("widgets", [WIDGETS, broken])])
    # IF NOT EXISTS created nothing here: the table that was already there, and its rows, are never dropped.
    assert store.execute("SELECT id, name FROM widgets") == [(1, "kept")]
    if store.dialect == "mysql":  # DDL cannot be rolled back there: the error says what to undo by hand
        assert _columns(store, "widgets") == ["colour", "id", "name"]
        assert str(failed.value).endswith("stayed applied (undo them by hand before it runs again): "
                                          "CREATE TABLE IF NOT EXISTS widgets (id INTEGER PRIMARY KEY); "
                                          "ALTER TABLE widgets ADD COLUMN colour VARCHAR(20)")
    else:
        assert _columns(store, "widgets") == ["id", "name"]
        assert "stayed applied" not in str(failed.value)


def test_mysql_creates_no_table_in_a_database_whose_character_set_loses_text(
        request: pytest.FixtureRequest) -> None:
    # A latin1 database (MariaDB's default before 11.6 unless its config says otherwise) refused
    # a spend row whose x-request-id or account held an emoji or CJK: that request went unrecorded.
    server = request.getfixturevalue("mariadb_server")
    name = "l1_" + uuid.uuid4().hex[:12]
    store = Store.from_url(server.create_database(name, charset="latin1"))
    try:
        with pytest.raises(MigrationError, match=rf"character set latin1.*ALTER DATABASE `{name}` CHARACTER SET "
                                                 "utf8mb4; then migrate again"):
            migrate(store, [SpendLogPlugin(store)])
        with store.connection() as db:
            assert db.get_tables() == []
        store.execute(f"ALTER DATABASE {name} CHARACTER SET utf8mb4")
        migrate(store, [SpendLogPlugin(store)])
        SpendRecorder(store).record(Settlement("请求-🚀", time.time(), "openai_chat", "r", False, "success",
                                               account_id="用户 🚀"))
        assert [(r["request_id"], r["account_id"]) for r in spend_rows(store)] == [("请求-🚀", "用户 🚀")]
    finally:
        store.close()


@pytest.mark.parametrize("fixture", ["postgres_cluster", "mariadb_server"])
def test_migrating_one_database_does_not_wait_for_a_run_on_another(request: pytest.FixtureRequest,
                                                                   fixture: str) -> None:
    # The run lock serializes runs on one database only (MySQL's GET_LOCK name was server-wide:
    # a run on another database of the server waited up to 120 s, then failed).
    server = request.getfixturevalue(fixture)
    busy = Store.from_url(server.create_database("a_" + uuid.uuid4().hex[:12]))
    other = Store.from_url(server.create_database("b_" + uuid.uuid4().hex[:12]))
    done: List[Any] = []
    worker = threading.Thread(target=lambda: done.append(migrate(other, [])))
    try:
        with busy.connection() as db, Migrator(busy, [])._run_lock(db):  # a run under way on `busy`
            worker.start()
            worker.join(10)
            finished_meanwhile = bool(done)
        worker.join(130)
        assert finished_meanwhile, "the run on another database waited for the lock"
        assert other.table_exists("routeplane_meta")
    finally:
        if worker.is_alive():  # the run is still waiting: let it finish before its store closes
            worker.join(130)
        busy.close()
        other.close()
