"""Migrations: core files from `sql/`, plugin migrations, a checksummed history, one run at a time."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import peewee

from .database import Store, StoreError, StoreUnavailable
from .sqltext import SQLCheckError, check_tables, commits_implicitly, created_object, split_statements, written_tables

CORE = "routeplane"  # the plugin id the core schema is recorded under
HISTORY = "routeplane_migrations"
log = logging.getLogger("routeplane.store")
SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql")
_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
# One fixed key for every routeplane migrate run against a PostgreSQL database.
_PG_LOCK_KEY = zlib.crc32(b"routeplane.migrate")

_HISTORY_DDL = (
    f"CREATE TABLE IF NOT EXISTS {HISTORY} ("
    " plugin VARCHAR(100) NOT NULL,"
    " version INTEGER NOT NULL,"
    " name VARCHAR(200) NOT NULL,"
    " checksum CHAR(64) NOT NULL,"
    " applied_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (plugin, version))"
)


class MigrationError(Exception):
    """The schema cannot be brought up to date, or has drifted from the code; start-up must stop."""


@dataclass(frozen=True)
class Migration:
    plugin: str
    version: int
    name: str
    sql: str
    tables: Tuple[str, ...] = ()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.plugin} {self.version:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationState:
    plugin: str
    version: int
    name: str
    state: str  # "applied" | "pending" | "changed" | "unknown" (applied, but no installed code has it)
    applied_at: Optional[float] = None


def core_migrations(dialect: str, sql_dir: str = SQL_DIR) -> List[Migration]:
    """`sql/NNNN_name.sql`, with `sql/<dialect>/NNNN_name.sql` replacing a file where that dialect differs."""
    found: Dict[int, Tuple[str, str]] = {}
    for directory in (sql_dir, os.path.join(sql_dir, dialect)):
        if not os.path.isdir(directory):
            continue
        for fname in sorted(os.listdir(directory)):
            m = _FILE.match(fname)
            if m:
                found[int(m.group(1))] = (m.group(2), os.path.join(directory, fname))
    out = []
    for version in sorted(found):
        name, path = found[version]
        with open(path, "r", encoding="utf-8") as fh:
            out.append(Migration(CORE, version, name, fh.read()))
    return out


# The built-in plugins' tables, owned whether or not the plugin is enabled in this config: another
# plugin may neither declare them nor drop their indexes.
BUILTIN_TABLES = {"spend_log": "spend_log", "auth_api_keys": "auth", "auth_budget_ledger": "auth",
                  "auth_budget_locks": "auth", "auth_token_revocations": "auth", "auth_account_cutoffs": "auth",
                  "mcp_gateway_secret": "mcp", "mcp_revoked_sessions": "mcp"}


def plugin_migrations(plugins: Iterable[Any], dialect: str) -> List[Migration]:
    """Every installed plugin's migrations for this dialect, validated against the tables each declares."""
    out: List[Migration] = []
    owners: Dict[str, str] = dict(BUILTIN_TABLES)
    for plugin in plugins:
        pid = str(plugin.id)
        if pid == CORE:
            raise MigrationError(f"plugin id {CORE!r} is reserved for the core schema")
        chosen: Dict[int, Any] = {}
        for item in plugin.migrations():
            if item.dialect is not None and item.dialect not in ("sqlite", "postgresql", "mysql"):
                raise MigrationError(f"plugin {pid!r} migration {item.version}: unknown dialect {item.dialect!r}")
            if item.dialect not in (None, dialect):
                continue
            current = chosen.get(item.version)
            if current is not None and (current.dialect is not None) == (item.dialect is not None):
                raise MigrationError(f"plugin {pid!r} has two migrations numbered {item.version} for {dialect}")
            if current is None or item.dialect is not None:  # a dialect's own variant wins
                chosen[item.version] = item
        for version in sorted(chosen):
            item = chosen[version]
            if version < 1:
                raise MigrationError(f"plugin {pid!r} migration versions start at 1 (got {version})")
            tables = tuple(t.lower() for t in item.tables)
            for table in tables:
                if table == CORE or table.startswith(f"{CORE}_"):
                    raise MigrationError(f"plugin {pid!r} migration {version}: table {table!r} is reserved for the core")
                if owners.setdefault(table, pid) != pid:
                    raise MigrationError(f"plugin {pid!r} migration {version}: table {table!r} belongs to plugin "
                                         f"{owners[table]!r}")
            try:
                check_tables(item.sql, tables)
            except SQLCheckError as exc:
                raise MigrationError(f"plugin {pid!r} migration {version} ({item.name}) refused: {exc}") from None
            out.append(Migration(pid, version, item.name, item.sql, tables))
    for m in out:
        _check_dropped_indexes(m, owners)
    return out


def _check_dropped_indexes(m: Migration, owners: Dict[str, str]) -> None:
    """An index a migration drops must be on one of its own tables: the longest table name it
    starts with (`spend_log_x` is spend_log's, even beside a table `spend`) decides, and a
    `routeplane_` index is the core's."""
    for _raw, normalized in split_statements(m.sql):
        for entry in written_tables(normalized)[1]:
            if not entry.startswith("index:"):
                continue
            index = entry[6:]
            if index.startswith(f"{CORE}_"):
                raise MigrationError(f"plugin {m.plugin!r} migration {m.version}: index {index!r} belongs to the core")
            table = max((t for t in owners if index == t or index.startswith(t + "_")), key=len, default=None)
            if table is not None and owners[table] != m.plugin:
                raise MigrationError(f"plugin {m.plugin!r} migration {m.version}: index {index!r} is on table "
                                     f"{table!r} of plugin {owners[table]!r}")


def planned(store: Store, plugins: Iterable[Any] = ()) -> List[Migration]:
    return core_migrations(store.dialect) + plugin_migrations(plugins, store.dialect)


class Migrator:
    """Applies and inspects migrations on one Store."""

    def __init__(self, store: Store, plugins: Sequence[Any] = ()) -> None:
        self.store = store
        self.plan = planned(store, plugins)

    def status(self) -> List[MigrationState]:
        with self.store.connection():
            applied = self._applied() if self.store.table_exists(HISTORY) else {}
        return _states(self.plan, applied)

    def verify(self) -> None:
        """Raise MigrationError if any migration is pending or an applied one changed (workers call this)."""
        states = self.status()
        _raise_changed(states, self.plan)
        pending = [s for s in states if s.state == "pending"]
        if pending:
            names = ", ".join(f"{s.plugin} {s.version:04d}_{s.name}" for s in pending)
            raise MigrationError(f"the database {self.store.display_url} is not migrated ({names} pending): "
                                 "run `routeplane migrate`")

    def migrate(self) -> List[Migration]:
        """Apply every pending migration, each in its own transaction; returns those applied by this run."""
        done: List[Migration] = []
        with self.store.connection() as db, self._run_lock(db):
            if self.store.dialect == "mysql":
                self._check_charset(db)
            elif self.store.dialect == "postgresql":
                self._check_encoding(db)
            self._ensure_history(db)
            _raise_changed(_states(self.plan, self._applied()), self.plan)
            for migration in self.plan:
                if self._apply(db, migration):
                    done.append(migration)
        return done

    # --- internals ------------------------------------------------------------

    def _applied(self) -> Dict[Tuple[str, int], Tuple[str, str, float]]:
        rows = self.store.execute(f"SELECT plugin, version, name, checksum, applied_at FROM {HISTORY}")
        return {(r[0], int(r[1])): (r[2], r[3].strip(), float(r[4])) for r in rows}

    def _ensure_history(self, db: Any) -> None:
        with self._transaction(db):
            db.execute_sql(_HISTORY_DDL)

    def _apply(self, db: Any, migration: Migration) -> bool:
        p = db.param
        with self._transaction(db):
            # Re-read under the write lock: a concurrent run may have applied it meanwhile.
            cursor = db.execute_sql(f"SELECT checksum FROM {HISTORY} WHERE plugin = {p} AND version = {p}",
                                    (migration.plugin, migration.version))
            row = cursor.fetchone()
            cursor.close()
            if row is not None:
                if row[0].strip() != migration.checksum:
                    raise MigrationError(_changed_message([migration]))
                return False
            ran: List[str] = []  # the normalized statements that succeeded
            for statement, normalized in split_statements(migration.sql):
                try:
                    db.execute_sql(statement)
                except Exception as exc:
                    raise MigrationError(f"{migration.label} failed on {self.store.display_url}: "
                                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                                         f"{self._undo_committed(db, ran)}") from exc
                ran.append(normalized)
            db.execute_sql(f"INSERT INTO {HISTORY} (plugin, version, name, checksum, applied_at) "
                           f"VALUES ({p}, {p}, {p}, {p}, {p})",
                           (migration.plugin, migration.version, migration.name, migration.checksum, time.time()))
        return True

    def _check_charset(self, db: Any) -> None:
        """MySQL: a new table takes the database's default character set. With latin1 (MariaDB's
        default before 11.6 where no config sets one) or utf8mb3, text that does not fit (an
        x-request-id or account id with an emoji or CJK) made the database refuse the spend row,
        so the request went unrecorded. Refuse before creating any table instead."""
        if not self._pending():
            return  # nothing to create: an existing database is left as it is
        cursor = db.execute_sql("SELECT @@character_set_database, DATABASE()")
        charset, name = cursor.fetchone()
        cursor.close()
        if charset != "utf8mb4":
            raise MigrationError(f"the database {self.store.display_url} has the default character set {charset}; "
                                 f"routeplane's tables need utf8mb4 (text {charset} cannot hold is refused, and a "
                                 f"spend row holding it lost). Run: ALTER DATABASE `{name}` CHARACTER SET utf8mb4; "
                                 "then migrate again")

    def _check_encoding(self, db: Any) -> None:
        """PostgreSQL: a database in LATIN1 (or any encoding but UTF8) cannot hold CJK or emoji, so a
        spend row with such an account id or model name would be refused, and the request go unrecorded.
        Refuse before creating any table, as for MySQL. SQL_ASCII stores the UTF-8 bytes it is sent as
        they are (the connection is UTF8): it holds every text."""
        if not self._pending():
            return
        cursor = db.execute_sql("SELECT pg_encoding_to_char(encoding), datname FROM pg_database "
                                "WHERE datname = current_database()")
        encoding, name = cursor.fetchone()
        cursor.close()
        if encoding not in ("UTF8", "SQL_ASCII"):
            raise MigrationError(f"the database {self.store.display_url} has the encoding {encoding}; routeplane's "
                                 f"tables need UTF8 (text {encoding} cannot hold is refused, and a spend row holding "
                                 f"it lost). Create it again with CREATE DATABASE \"{name}\" ENCODING 'UTF8' "
                                 "TEMPLATE template0; then migrate")

    def _pending(self) -> bool:
        applied = self._applied() if self.store.table_exists(HISTORY) else {}
        return any(s.state == "pending" for s in _states(self.plan, applied))

    def _undo_committed(self, db: Any, ran: List[str]) -> str:
        """What the error adds after undoing what a failed migration left committed.

        MySQL commits DDL as it runs (and the connection autocommits after it), so
        the rollback undoes nothing once a CREATE or ALTER has run. Left alone, a
        fixed migration could not run either (its CREATE TABLE finds the table).
        The tables, views and indexes it certainly created are dropped, newest
        first; any other statement that stayed applied is named.
        """
        if self.store.dialect != "mysql" or not any(commits_implicitly(n) for n in ran):
            return ""  # SQLite and PostgreSQL roll DDL back; so does MySQL before the first DDL
        created = [created_object(n) for n in ran]
        gone = {c[1].lower() for c in created if c is not None and c[0] != "index"}
        kept: List[str] = []
        for normalized, obj in reversed(list(zip(ran, created))):
            if obj is None:
                if not _writes_only(normalized, gone):
                    kept.append(_short(normalized))
                continue
            kind, name, table = obj
            if kind == "index" and table is not None and table.lower() in gone:
                continue  # dropped with its table
            if kind == "index":
                undo = f"DROP INDEX {_quoted(name)} ON {_quoted(table or '')}"
            else:
                undo = f"DROP {kind.upper()} {_quoted(name)}"
            try:
                db.execute_sql(undo).close()
            except Exception:  # noqa: BLE001 - named in the error instead
                kept.append(_short(normalized))
        if not kept:
            return "; MySQL had committed its DDL, and what it created was dropped again"
        return ("; MySQL commits DDL as it runs, so these statements stayed applied (undo them by hand before it "
                "runs again): " + "; ".join(reversed(kept)))

    def _transaction(self, db: Any) -> Any:
        if self.store.dialect == "sqlite":
            # IMMEDIATE takes the write lock up front, so two runs queue instead of both applying.
            return db.atomic(lock_type="IMMEDIATE")
        return db.atomic()

    @contextlib.contextmanager
    def _run_lock(self, db: Any) -> Iterator[None]:
        dialect = self.store.dialect
        if dialect == "postgresql":
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_LOCK_KEY,)).close()
            try:
                yield
            finally:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (_PG_LOCK_KEY,)).close()
        elif dialect == "mysql":
            # GET_LOCK names are server-wide, where PostgreSQL's advisory locks are per database: the
            # database's name goes into the lock's (hashed: MySQL caps a name at 64 characters), or runs
            # against other databases on the server would wait for each other.
            name = "CONCAT('routeplane_migrate_', MD5(DATABASE()))"
            cursor = db.execute_sql(f"SELECT GET_LOCK({name}, 120)")
            got = cursor.fetchone()
            cursor.close()
            if not got or got[0] != 1:
                raise MigrationError("another `routeplane migrate` held the lock for 120 s")
            try:
                yield
            finally:
                db.execute_sql(f"SELECT RELEASE_LOCK({name})").close()
        else:
            yield  # SQLite: each migration's BEGIN IMMEDIATE serializes runs


def _writes_only(normalized: str, tables: Set[str]) -> bool:
    """Whether the statement writes nothing but some of `tables` (lower-case)."""
    try:
        written = written_tables(normalized)[1]
    except SQLCheckError:
        return False
    return bool(written) and all(t in tables for t in written)


def _short(statement: str) -> str:
    return statement if len(statement) <= 80 else statement[:77] + "..."


def _quoted(name: str) -> str:
    return ".".join(f"`{part}`" for part in name.split("."))


def _states(plan: List[Migration], applied: Dict[Tuple[str, int], Tuple[str, str, float]]) -> List[MigrationState]:
    out = []
    known = set()
    for m in plan:
        key = (m.plugin, m.version)
        known.add(key)
        row = applied.get(key)
        if row is None:
            out.append(MigrationState(m.plugin, m.version, m.name, "pending"))
        else:
            out.append(MigrationState(m.plugin, m.version, m.name, "applied" if row[1] == m.checksum else "changed",
                                      row[2]))
    for key, row in sorted(applied.items()):
        if key not in known:
            out.append(MigrationState(key[0], key[1], row[0], "unknown", row[2]))
    return out


def _changed_message(changed: Sequence[Any]) -> str:
    names = ", ".join(f"{m.plugin} {m.version:04d}_{m.name}" for m in changed)
    return (f"applied migration(s) changed since they ran: {names}. A migration that has run must never be edited; "
            "add a new numbered migration instead (or restore the original text)")


def _raise_changed(states: List[MigrationState], plan: List[Migration]) -> None:
    changed = [s for s in states if s.state == "changed"]
    if changed:
        raise MigrationError(_changed_message(changed))


MIGRATED_ENV = "ROUTEPLANE_MIGRATED"


def prepare_for_serving(store: Store, plugins: Sequence[Any] = ()) -> bool:
    """Make the store ready before an app serves; False when it was unreachable and is owed a check.

    Under routeplane's gunicorn config the master has migrated and set
    ROUTEPLANE_MIGRATED=1, so a worker only verifies (pending or changed →
    MigrationError; workers never migrate). A worker that cannot reach the
    store (PostgreSQL restarting, a failover) boots anyway instead of making
    gunicorn halt the whole server: it serves, the spend log spools its rows,
    and `store.ping()` (so `/ready`) fails until the store answers and the
    verification has passed. Anywhere else (a single-process server, an app
    mounted into another Flask app, tests) this migrates, under the same lock
    `routeplane migrate` takes, so concurrent starts cannot race; an
    unreachable store stops it there.
    """
    if os.environ.get(MIGRATED_ENV) != "1":
        migrate(store, plugins)
        return True
    try:
        Migrator(store, plugins).verify()
    except _UNREACHABLE as exc:
        log.error("the store is unreachable (%s): serving without it; spend rows are spooled and "
                  "/ready answers 503 until it is back and its migrations are verified", _reason(exc))
        store.owe_check(_owed_verification(store, plugins))
        return False
    except StoreError as exc:
        raise MigrationError(str(exc)) from None
    return True


# A connection that cannot be opened, or one lost mid-query: the store is down, not wrong.
_UNREACHABLE = (StoreUnavailable, peewee.OperationalError, peewee.InterfaceError)


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _owed_verification(store: Store, plugins: Sequence[Any]) -> Any:
    """The check `ping()` runs once the store answers again; a failure is logged once per message."""
    reported: Set[str] = set()

    def check() -> None:
        try:
            Migrator(store, plugins).verify()
        except (MigrationError, StoreError, peewee.DatabaseError) as exc:
            message = _reason(exc)
            if message not in reported:
                reported.add(message)
                log.error("the store answers again but is not ready: %s", message)
            raise MigrationError(message) from None
        log.warning("the store is back and its migrations are verified")

    return check


def migrate(store: Store, plugins: Sequence[Any] = ()) -> List[Migration]:
    try:
        return Migrator(store, plugins).migrate()
    except StoreError as exc:
        raise MigrationError(str(exc)) from None


def verify(store: Store, plugins: Sequence[Any] = ()) -> None:
    try:
        Migrator(store, plugins).verify()
    except StoreError as exc:
        raise MigrationError(str(exc)) from None
