"""Store pieces without a server: database URLs, SQL splitting and table checks, shipped SQL files, app wiring."""

from __future__ import annotations

import filecmp
import os
from typing import Any

import pytest

from routeplane.app import build_app
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.store import DatabaseURL, Store, StoreError, redact
from routeplane.store.commands import parse_when
from routeplane.store.migrations import SQL_DIR, core_migrations
from routeplane.store.spend_log import SpendLogPlugin
from routeplane.store.sqltext import SQLCheckError, check_tables, split_statements, written_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- URLs -----------------------------------------------------------------------


@pytest.mark.parametrize("url, dialect, database", [
    ("sqlite:///routeplane.db", "sqlite", "routeplane.db"),
    ("sqlite:///data/rp.db", "sqlite", "data/rp.db"),
    ("sqlite:////var/lib/rp.db", "sqlite", "/var/lib/rp.db"),
    ("sqlite:///:memory:", "sqlite", ":memory:"),
    ("postgresql://u:p%40ss@db.example:6543/rp", "postgresql", "rp"),
    ("postgres://u@db/rp?sslmode=require", "postgresql", "rp"),
    ("mysql://u:pw@127.0.0.1/rp", "mysql", "rp"),
])
def test_database_urls(url: str, dialect: str, database: str) -> None:
    parsed = DatabaseURL.parse(url)
    assert (parsed.dialect, parsed.database) == (dialect, database)


def test_postgres_url_parts_and_redaction() -> None:
    parsed = DatabaseURL.parse("postgresql://app:s3cr%40t@db.example:6543/rp?sslmode=require&max_connections=8")
    assert (parsed.host, parsed.port, parsed.user, parsed.password) == ("db.example", 6543, "app", "s3cr@t")
    assert dict(parsed.options) == {"sslmode": "require", "max_connections": "8"}
    assert "s3cr" not in repr(parsed)
    store = Store.from_url("postgresql://app:s3cr%40t@db.example:6543/rp")
    assert "s3cr" not in repr(store) and "s3cr" not in store.display_url
    assert redact("postgresql://app:pw@h/db") == "postgresql://app:***@h/db"


@pytest.mark.parametrize("url, message", [
    ("routeplane.db", "no scheme"),
    ("sqlite://relative.db", "sqlite:///relative/path"),
    ("oracle://u:pw@h/db", "unsupported scheme"),
    ("postgresql://u:topsecret@h/", "names no database"),
])
def test_bad_database_urls_say_what_to_write_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        DatabaseURL.parse(url)
    assert "topsecret" not in str(info.value)


def test_sqlite_store_uses_wal_busy_timeout_and_normal_sync(tmp_path: Any) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/x.db")
    assert store.execute("PRAGMA journal_mode") == [("wal",)]
    assert store.execute("PRAGMA busy_timeout") == [(10000,)]
    assert store.execute("PRAGMA synchronous") == [(1,)]  # NORMAL
    conn = store.database.connection()
    store.execute("SELECT 1")
    assert store.database.connection() is conn  # kept per thread: closing checkpoints the WAL every write
    store.close()
    assert store.database.is_closed()


def test_memory_store_keeps_its_connection(tmp_path: Any) -> None:
    store = Store.from_url("sqlite:///:memory:")
    store.execute("CREATE TABLE t (x INTEGER)")
    store.execute("INSERT INTO t VALUES (1)")
    assert store.execute("SELECT x FROM t") == [(1,)]
    store.database.close()


# --- SQL text ---------------------------------------------------------------------


def test_split_respects_strings_comments_and_dollar_quotes() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT 'semi;colon');
    /* block; comment */ INSERT INTO a VALUES ('it''s; fine');
    CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql
    """
    parts = split_statements(sql)
    assert len(parts) == 3
    assert parts[0][1] == "CREATE TABLE a (x TEXT DEFAULT '')"
    assert parts[1][0].endswith("VALUES ('it''s; fine')")
    assert parts[2][1].startswith("CREATE FUNCTION f()")


@pytest.mark.parametrize("sql, kind, tables", [
    ("CREATE TABLE IF NOT EXISTS w (x int)", "create table", ["w"]),
    ('CREATE TABLE "W" (x int)', "create table", ["w"]),
    ("CREATE UNIQUE INDEX w_x ON w (x)", "create index", ["w"]),
    ("CREATE INDEX ON public.w (x)", "create index", ["public.w"]),
    ("ALTER TABLE w ADD COLUMN y int", "alter table", ["w"]),
    ("ALTER TABLE w RENAME TO w2", "alter table", ["w", "w2"]),
    ("DROP TABLE IF EXISTS w, w2", "drop table", ["w", "w2"]),
    ("DROP INDEX w_x ON w", "drop index", ["w"]),
    ("INSERT OR IGNORE INTO w VALUES (1)", "insert", ["w"]),
    ("UPDATE w SET x = 1 WHERE x IN (SELECT x FROM other)", "update", ["w"]),
    ("DELETE FROM w", "delete", ["w"]),
    ("TRUNCATE TABLE w", "truncate", ["w"]),
])
def test_written_tables(sql: str, kind: str, tables: list) -> None:
    assert written_tables(split_statements(sql)[0][1]) == (kind, tables)


@pytest.mark.parametrize("sql", [
    "PRAGMA writable_schema = 1", "ATTACH DATABASE 'x.db' AS x", "WITH d AS (SELECT 1) DELETE FROM spend_log",
    "SELECT setval('spend_log_id_seq', 1)", "DO $$ BEGIN DELETE FROM spend_log; END $$", "GRANT ALL ON w TO public",
    "CREATE TRIGGER t AFTER INSERT ON w BEGIN SELECT 1; END",
])
def test_statements_with_unknowable_targets_are_refused(sql: str) -> None:
    with pytest.raises(SQLCheckError, match="not allowed"):
        check_tables(sql, ("w",))


def test_drop_index_must_name_a_declared_tables_index() -> None:
    check_tables("DROP INDEX w_x", ("w",))
    with pytest.raises(SQLCheckError, match="index name must start"):
        check_tables("DROP INDEX spend_log_started_at", ("w",))


# --- shipped SQL -------------------------------------------------------------------


def test_packaged_sql_mirrors_the_top_level_sql_directory() -> None:
    """Canonical migrations live in sql/; routeplane/sql/ is the copy an installed package reads."""
    top = os.path.join(ROOT, "sql")
    assert os.path.realpath(SQL_DIR) == os.path.join(ROOT, "routeplane", "sql")

    def tree(base: str) -> list:
        return sorted(os.path.relpath(os.path.join(d, f), base) for d, _, fs in os.walk(base) for f in fs
                      if f.endswith(".sql"))

    assert tree(top) == tree(SQL_DIR), "copy sql/ to routeplane/sql/ (cp -r sql/. routeplane/sql/)"
    for rel in tree(top):
        assert filecmp.cmp(os.path.join(top, rel), os.path.join(SQL_DIR, rel), shallow=False), rel


def test_core_migrations_prefer_a_dialect_file(tmp_path: Any) -> None:
    (tmp_path / "postgresql").mkdir()
    (tmp_path / "0001_core.sql").write_text("CREATE TABLE a (x INTEGER);")
    (tmp_path / "0002_more.sql").write_text("CREATE TABLE b (x INTEGER);")
    (tmp_path / "postgresql" / "0002_more.sql").write_text("CREATE TABLE b (x BIGINT);")
    (tmp_path / "README").write_text("not a migration")
    assert [(m.version, m.name, m.sql) for m in core_migrations("postgresql", str(tmp_path))] == [
        (1, "core", "CREATE TABLE a (x INTEGER);"), (2, "more", "CREATE TABLE b (x BIGINT);")]
    assert core_migrations("sqlite", str(tmp_path))[1].sql == "CREATE TABLE b (x INTEGER);"


# --- wiring ----------------------------------------------------------------------


def test_build_app_installs_the_spend_log_without_connecting(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/lazy.db"
    app = build_app(parse_config(dict(DEFAULT_CONFIG, database={"url": url})))
    assert app.store is not None and app.store.url == url
    assert any(isinstance(p, SpendLogPlugin) for p in app.plugins)
    assert not os.path.exists(tmp_path / "lazy.db")  # nothing opened until a write


def test_spend_log_can_be_switched_off_and_no_url_means_no_store() -> None:
    off = build_app(parse_config(dict(DEFAULT_CONFIG, database={"url": "sqlite:///:memory:"},
                                      plugins={"spend_log": {"enabled": False}})))
    assert off.store is not None and not any(isinstance(p, SpendLogPlugin) for p in off.plugins)
    none = build_app(parse_config(dict(DEFAULT_CONFIG, database={"url": ""})))
    assert none.store is None and not any(isinstance(p, SpendLogPlugin) for p in none.plugins)


def test_parse_when() -> None:
    assert parse_when("24h", now=100000.0) == 100000.0 - 86400
    assert parse_when("30m", now=10000.0) == 10000.0 - 1800
    assert parse_when("2026-11-01T00:00") == 1793491200.0
    with pytest.raises(ValueError, match="neither now, a duration"):
        parse_when("yesterday")


def test_prepare_for_serving_migrates_alone_and_only_verifies_under_the_gunicorn_master(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from routeplane.store.migrations import MIGRATED_ENV, MigrationError, prepare_for_serving

    monkeypatch.setenv(MIGRATED_ENV, "1")  # what the gunicorn master sets before forking workers
    store = Store.from_url(f"sqlite:///{tmp_path}/w.db")
    with pytest.raises(MigrationError, match="not migrated"):
        prepare_for_serving(store, [SpendLogPlugin(store)])
    assert not store.table_exists("spend_log")  # a worker never migrates
    monkeypatch.delenv(MIGRATED_ENV)
    prepare_for_serving(store, [SpendLogPlugin(store)])  # alone (tests, a mounted app, another server): migrate
    assert store.table_exists("spend_log")
    store.close()


def test_a_worker_boots_with_an_unreachable_store_and_is_ready_once_it_is_back_and_verified(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under gunicorn a worker that exits at boot makes the master halt the whole server: a store
    # that is down (PostgreSQL restarting) must not do that. Here: a SQLite file whose directory is missing.
    from routeplane.store.migrations import MIGRATED_ENV, MigrationError, migrate, prepare_for_serving

    monkeypatch.setenv(MIGRATED_ENV, "1")
    url = f"sqlite:///{tmp_path}/later/w.db"
    cfg = dict(DEFAULT_CONFIG, database={"url": url}, plugins={"request_log": {"enabled": False}})
    app = build_app(parse_config(cfg, "<test>"))
    client = app.flask_app().test_client()  # verifies: the store is unreachable, so it boots without it
    assert client.post("/v1/chat/completions", json={"model": "default", "messages": [
        {"role": "user", "content": "hi"}]}).status_code == 200
    assert app.store is not None and app.store.check_owed
    assert client.get("/ready").status_code == 503
    os.mkdir(tmp_path / "later")  # the store is back, but not migrated: still not ready (workers never migrate)
    assert client.get("/ready").status_code == 503 and app.store.check_owed
    migrate(Store.from_url(url), app.plugins)  # what the master does on the next start or HUP
    assert client.get("/ready").status_code == 200 and not app.store.check_owed
    # Not under the gunicorn master (a mounted app, App.serve): an unreachable store still stops the start.
    monkeypatch.delenv(MIGRATED_ENV)
    elsewhere = Store.from_url(f"sqlite:///{tmp_path}/missing/w.db")
    with pytest.raises(MigrationError, match="cannot connect"):
        prepare_for_serving(elsewhere, [SpendLogPlugin(elsewhere)])
    app.store.close()


def test_mysql_without_its_driver_says_which_extra_to_install() -> None:
    try:
        import pymysql  # noqa: F401
    except ImportError:
        with pytest.raises(StoreError, match=r"routeplane\[mysql\]"):
            Store.from_url("mysql://u:pw@127.0.0.1:1/rp").database  # noqa: B018 - the property raises
    else:  # pragma: no cover - the extra is installed: the handle builds without connecting
        assert Store.from_url("mysql://u:pw@127.0.0.1:1/rp").database.is_closed()


def test_spool_defaults_next_to_the_sqlite_file(tmp_path: Any) -> None:
    from routeplane.store.spend_log import default_spool_path

    assert default_spool_path(Store.from_url(f"sqlite:///{tmp_path}/rp.db")) == f"{tmp_path}/rp.db.spend-spool"
    assert default_spool_path(Store.from_url("sqlite:///:memory:")) is None
    assert default_spool_path(Store.from_url("postgresql://u@h/db")) == "routeplane-spend.spool"
    off = SpendLogPlugin.from_options({"spool": ""})
    assert off.spool_path == ""


def test_spool_survives_concurrent_writers_and_a_drainer(tmp_path: Any) -> None:
    import threading

    from routeplane.store.spool import Spool

    path = str(tmp_path / "s.spool")
    drained: list = []
    writers = [threading.Thread(target=lambda k=k: [Spool(path).append([{"id": f"{k}-{i}"}]) for i in range(200)])
               for k in range(4)]
    for t in writers:
        t.start()
    drainer = Spool(path)
    while any(t.is_alive() for t in writers):
        drainer.drain(drained.extend)
    for t in writers:
        t.join(10)
    drainer.drain(drained.extend)
    ids = [r["id"] for r in drained]
    assert len(ids) == 800 and len(set(ids)) == 800  # none lost, none twice


def test_the_mysql_driver_is_loaded_only_for_a_mysql_store() -> None:
    """peewee imports every driver it finds; PyMySQL (and the cryptography it pulls in) cost ~17 MB of
    RSS in every worker, also with the default SQLite store, once the venv had the mysql extra."""
    import subprocess
    import sys

    code = ("import sys, routeplane.app, routeplane.store as s\n"
            "print('pymysql' in sys.modules)\n"
            "s.Store('mysql://u:p@127.0.0.1:1/db')\n"
            "import peewee\n"
            "print(peewee.mysql is sys.modules.get('pymysql'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"], out.stdout


def test_the_postgresql_driver_is_loaded_only_for_a_postgresql_store(postgres_cluster: Any) -> None:
    """psycopg2 costs ~5 MB of RSS in every worker; peewee imports it with itself unless routeplane holds it
    back. A fresh interpreter (nothing imported psycopg2 first) must not load it for SQLite, and must hand
    it to peewee when a PostgreSQL store opens, leaving peewee as an eager import would have: the same
    driver globals and adapter constants, UUIDs registered; then migrations, an error, a UUID round trip."""
    import subprocess
    import sys
    import uuid

    url = postgres_cluster.create_database("t_" + uuid.uuid4().hex[:12])
    # What peewee holds of the driver, by name: the same after a lazy attach as after an eager import.
    fingerprint = ("import peewee, uuid, psycopg2.extensions as ext\n"
                   "names = ('psycopg2', 'pg_extensions', 'pg_errors', 'Json_pg2')\n"
                   "g = [getattr(getattr(peewee, n, None), '__name__', repr(getattr(peewee, n, '-'))) for n in names]\n"
                   "a = getattr(peewee, 'Psycopg2Adapter', None)\n"
                   "g += [getattr(a, k, '-') for k in ('txn_idle', 'txn_inerror', 'txn_unknown')]\n"
                   "g.append(uuid.UUID in ext.adapters.values() or any(k[0] is uuid.UUID for k in ext.adapters))\n"
                   "print('FP', g)\n")
    eager = "import psycopg2, routeplane.store\n" + fingerprint
    lazy = ("import sys, routeplane.app, routeplane.store as s\n"
            "from routeplane.store.spend_log import SpendLogPlugin\n"
            "print('psycopg2' in sys.modules)\n"
            f"st = s.Store({url!r})\n"
            "s.migrate(st, [SpendLogPlugin(st)])\n"
            "import peewee\n"
            "print(peewee.psycopg2 is sys.modules.get('psycopg2'))\n"
            "st.execute('CREATE TABLE t (k TEXT PRIMARY KEY, u UUID)')\n"
            "import uuid\n"
            "st.execute('INSERT INTO t VALUES (%s, %s)', ('a', uuid.UUID(int=7)))\n"
            "try:\n"
            "    st.execute('INSERT INTO t VALUES (%s, NULL)', ('a',))\n"
            "except peewee.IntegrityError:\n"
            "    print('integrity')\n"
            "print(st.execute('SELECT u FROM t')[0][0] == uuid.UUID(int=7))\n"
            "st.close()\n" + fingerprint)
    outs = []
    for code in (eager, lazy):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        outs.append(out.stdout.splitlines())
    assert outs[1][:4] == ["False", "True", "integrity", "True"], outs[1]
    assert outs[1][4] == outs[0][0] and "None" not in outs[0][0], outs
