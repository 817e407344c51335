"""The Store: a peewee database from a URL, one connection per thread, reopened lazily after a fork."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import peewee
from playhouse.pool import MaxConnectionsExceeded

DIALECTS = ("sqlite", "postgresql", "mysql")

# SQLite: WAL lets readers run beside the one writer; busy_timeout makes a second
# writer (another gunicorn worker) wait instead of failing; NORMAL is durable in WAL.
SQLITE_PRAGMAS: Tuple[Tuple[str, Any], ...] = (
    ("busy_timeout", 10000),
    ("journal_mode", "wal"),
    ("synchronous", "normal"),
    ("foreign_keys", 1),
)


class StoreError(Exception):
    """A store URL or connection problem; the message never holds a password."""


class StoreUnavailable(StoreError):
    """The database could not be opened or reached (a server that is down, a path that does not exist)."""


@dataclass(frozen=True)
class DatabaseURL:
    dialect: str
    database: str  # a file path (SQLite) or a database name
    host: Optional[str] = None
    port: Optional[int] = None
    user: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    options: Tuple[Tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> "DatabaseURL":
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower().split("+", 1)[0]  # tolerate SQLAlchemy-style "postgresql+psycopg2"
        if not sep:
            raise StoreError(f"database url {redact(url)!r} has no scheme: use sqlite:///path, postgresql://… or mysql://…")
        if scheme == "sqlite":
            # sqlite:///relative/path, sqlite:////absolute/path, sqlite:///:memory:
            path, _, query = rest.partition("?")
            if not path.startswith("/") or len(path) < 2:
                raise StoreError(f"database url {url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
            return cls("sqlite", path[1:], options=tuple(parse_qsl(query)))
        if scheme in ("postgresql", "postgres", "mysql"):
            try:
                parts = urlsplit(url)
            except ValueError as exc:  # an unbalanced "[" ("Invalid IPv6 URL")
                raise StoreError(f"database url {redact(url)!r} cannot be parsed: {exc}") from None
            name = unquote(parts.path.lstrip("/"))
            if not name:
                raise StoreError(f"database url {redact(url)!r} names no database (…/dbname)")
            try:
                port = parts.port
            except ValueError:
                raise StoreError(f"database url {redact(url)!r} has an invalid port") from None
            return cls(
                "mysql" if scheme == "mysql" else "postgresql", name, parts.hostname, port,
                unquote(parts.username) if parts.username else None,
                unquote(parts.password) if parts.password else None,
                tuple(parse_qsl(parts.query)),
            )
        raise StoreError(f"database url {redact(url)!r}: unsupported scheme {scheme!r} (sqlite, postgresql, mysql)")


# A password given as a URL option, which libpq (`password`, `sslpassword`) and PyMySQL (`passwd`,
# `ssl_key_password`) accept too.
_PASSWORD_OPTION = re.compile(r"([?&][a-z_]*(?:password|passwd)=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    url = _PASSWORD_OPTION.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def _int_option(options: Dict[str, str], name: str, default: int) -> int:
    try:
        return int(options.pop(name, default))
    except ValueError:
        raise StoreError(f"database url option {name} must be an integer") from None


def make_database(url: DatabaseURL, read_only: bool = False) -> peewee.Database:
    """A fresh, unconnected peewee Database for the URL (thread-local connections).

    `read_only` (SQLite): opened with `mode=ro`, so a reader (`routeplane spend`)
    never creates a missing file nor changes the journal mode.
    """
    options = dict(url.options)
    if url.dialect == "sqlite":
        if read_only and url.database not in ("", ":memory:"):
            uri = "file:" + quote(os.path.abspath(url.database)) + "?mode=ro"
            return peewee.SqliteDatabase(uri, uri=True, pragmas=[("busy_timeout", 10000)], timeout=10)
        return peewee.SqliteDatabase(url.database, pragmas=list(SQLITE_PRAGMAS), timeout=10)
    from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase

    # A pool per worker process: a connection goes back to it when a thread closes
    # it, so short writes from many gthread threads share a few server sessions.
    pool = {
        "max_connections": _int_option(options, "max_connections", 32),
        "stale_timeout": _int_option(options, "stale_timeout", 300),
        "timeout": _int_option(options, "pool_timeout", 10),
    }
    conn: Dict[str, Any] = {k: v for k, v in (("host", url.host), ("port", url.port), ("user", url.user),
                                               ("password", url.password)) if v is not None}
    if url.dialect == "postgresql":
        conn.update(options)  # libpq's own names and strings
        try:
            _attach_psycopg2()
        except ImportError:
            raise StoreError("postgresql:// needs psycopg2: pip install 'routeplane[postgres]'") from None
        conn.setdefault("connect_timeout", 10)
        for name, value in _pg_socket_defaults():
            conn.setdefault(name, value)
        # Text goes over the wire as UTF-8 whatever the database's encoding: psycopg2 otherwise encodes with
        # the server's, ASCII for a SQL_ASCII database (initdb under LANG=C), refusing any other character.
        conn.setdefault("client_encoding", "UTF8")
        return PooledPostgresqlDatabase(url.database, **pool, **conn)
    try:
        import pymysql
    except ImportError:
        raise StoreError("mysql:// needs pymysql: pip install 'routeplane[mysql]'") from None
    if getattr(peewee, "mysql", None) is None:  # not loaded with peewee (store/__init__.py)
        peewee.mysql = pymysql
    conn.update(_mysql_options(options))
    conn.setdefault("charset", "utf8mb4")
    return PooledMySQLDatabase(url.database, **pool, **conn)


# PyMySQL's connection options a URL can carry, by the type PyMySQL wants (libpq takes strings; PyMySQL
# compared `connect_timeout="5"` with an int, a TypeError at every connect, and refuses unknown names).
_MYSQL_INTS = ("connect_timeout", "read_timeout", "write_timeout", "max_allowed_packet", "client_flag", "port")
_MYSQL_BOOLS = ("local_infile", "compress", "ssl_disabled", "ssl_verify_cert", "ssl_verify_identity",
                "binary_prefix", "use_unicode")
_MYSQL_TEXTS = ("user", "password", "charset", "collation", "sql_mode", "init_command", "program_name",
                "bind_address", "unix_socket", "read_default_file", "read_default_group", "ssl_ca", "ssl_cert",
                "ssl_key", "ssl_key_password", "server_public_key")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _mysql_options(options: Dict[str, str]) -> Dict[str, Any]:
    """The URL's options as PyMySQL takes them; a StoreError names one it would refuse."""
    out: Dict[str, Any] = {}
    for name, value in options.items():
        if name in _MYSQL_INTS:
            out[name] = _int_option({name: value}, name, 0)
            if name.endswith("_timeout") and out[name] <= 0:  # PyMySQL refuses it at every connect
                raise StoreError(f"database url option {name} must be a number of seconds > 0")
        elif name in _MYSQL_BOOLS:
            if value.strip().lower() not in _BOOLS:
                raise StoreError(f"database url option {name} must be true or false")
            out[name] = _BOOLS[value.strip().lower()]
        elif name in _MYSQL_TEXTS:
            out[name] = value
        else:
            raise StoreError(f"database url option {name!r} is not a MySQL connection option "
                             f"(the pool's: max_connections, stale_timeout, pool_timeout; PyMySQL's: "
                             f"{', '.join(_MYSQL_INTS + _MYSQL_BOOLS + _MYSQL_TEXTS)})")
    return out


def _pg_socket_defaults() -> Tuple[Tuple[str, Any], ...]:
    """libpq keepalive and TCP user-timeout defaults (a URL option overrides each).

    A query has no client-side timeout in libpq: across a network partition or a failover that drops
    packets, a spend write (and with it every request of the worker waiting on that commit) hung for
    the kernel's retransmission limit, about 15 minutes, or on an idle pooled connection for the 2-hour
    keepalive default. With these, a dead peer is noticed in about a minute and the row is spooled.
    """
    defaults: Tuple[Tuple[str, Any], ...] = (
        ("keepalives", 1), ("keepalives_idle", 30), ("keepalives_interval", 10), ("keepalives_count", 3))
    if getattr(peewee.psycopg2, "__libpq_version__", 0) >= 120000:  # tcp_user_timeout is libpq 12's
        defaults += (("tcp_user_timeout", 60000),)
    return defaults


def _attach_psycopg2() -> None:
    """Hand psycopg2 to a peewee that was imported without it (store/__init__.py).

    peewee binds the driver when it is imported: the module globals its
    PostgreSQL code reads (3.17: `psycopg2`, `pg_extensions`, `pg_errors`;
    4.x: `psycopg2`, `pg_extensions`, `Json_pg2` and three class attributes of
    `Psycopg2Adapter`), and UUIDs registered as a type. This sets the same.
    """
    import psycopg2
    from psycopg2 import extensions, extras

    if getattr(peewee, "psycopg2", None) is not None:
        return
    peewee.pg_extensions = extensions
    if hasattr(peewee, "pg_errors"):
        from psycopg2 import errors

        peewee.pg_errors = errors
    if hasattr(peewee, "Json_pg2"):
        peewee.Json_pg2 = extras.Json
    adapter = getattr(peewee, "Psycopg2Adapter", None)
    if adapter is not None:
        adapter.txn_idle = extensions.TRANSACTION_STATUS_IDLE
        adapter.txn_inerror = extensions.TRANSACTION_STATUS_INERROR
        adapter.txn_unknown = extensions.TRANSACTION_STATUS_UNKNOWN
    extras.register_uuid()
    peewee.psycopg2 = psycopg2


class Store:
    """The gateway's database. Lives on the App; every thread gets its own connection.

    A Store is fork-safe by construction: it remembers the pid that opened its
    database, and a child process builds a new one on first use instead of
    sharing the parent's sockets (the parent's are never closed from the child,
    which would end the parent's server sessions).
    """

    def __init__(self, url: str, factory: Optional[Callable[[], peewee.Database]] = None,
                 read_only: bool = False) -> None:
        self.url = url
        self.parsed = DatabaseURL.parse(url)
        self.dialect = self.parsed.dialect
        self._factory = factory or (lambda: make_database(self.parsed, read_only))
        # A check still owed before the store counts as ready (a worker that booted while it was
        # unreachable verifies its migrations here); `ping()` runs it until it passes.
        self._owed_check: Optional[Callable[[], None]] = None
        self._db: Optional[peewee.Database] = None
        self._pid = 0
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._inherited: List[peewee.Database] = []  # kept referenced so the GC never closes them in a child
        # SQLite: keep each thread's connection open. Closing the last connection to a
        # WAL database checkpoints and removes the WAL (about 10 ms a write instead of
        # well under one), and a :memory: database dies with its connection. Pooled
        # servers get theirs back from the pool instead.
        self._keep_open = self.dialect == "sqlite"

    @classmethod
    def from_url(cls, url: str, read_only: bool = False) -> "Store":
        return cls(url, read_only=read_only)

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"

    @property
    def display_url(self) -> str:
        return redact(self.url)

    @property
    def database(self) -> peewee.Database:
        pid = os.getpid()
        db = self._db
        if db is not None and self._pid == pid:
            return db
        if self._lock_pid != pid:
            # A lock some parent thread held at fork time would never be released in this child.
            self._lock, self._lock_pid = threading.Lock(), pid
        with self._lock:
            if self._db is None or self._pid != pid:
                if self._db is not None:
                    self._inherited.append(self._db)
                self._db = self._factory()
                self._pid = pid
            return self._db

    @property
    def param(self) -> str:
        """The driver's placeholder for raw SQL (`?` for SQLite, `%s` for the others)."""
        return self.database.param

    @contextlib.contextmanager
    def connection(self) -> Iterator[peewee.Database]:
        """This thread's connection, opened if needed and closed (or returned to the pool) after.

        A connection that was already open (by the request, say) is used and
        left open; one opened here is closed here.
        """
        db = self.database
        opened = db.is_closed()
        if opened:
            for attempt in range(5):
                try:
                    db.connect(reuse_if_open=True)
                    break
                except peewee.OperationalError as exc:
                    # Switching a fresh SQLite file to WAL can answer "database is locked"
                    # without waiting on busy_timeout while another connection sets it up.
                    if self.dialect == "sqlite" and "locked" in str(exc) and attempt < 4:
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    raise StoreUnavailable(f"cannot connect to {self.display_url}: {_first_line(exc)}") from None
                except peewee.DatabaseError as exc:  # reached, but not a database ("file is not a database")
                    raise StoreError(f"cannot open {self.display_url}: {_first_line(exc)}") from None
                except MaxConnectionsExceeded:
                    # A ValueError: callers must not take a busy pool for data the database refused
                    # (the spend log dropped such a row instead of spooling it).
                    raise StoreUnavailable(f"{self.display_url}: every pooled connection stayed in use past "
                                           "pool_timeout") from None
                except (ValueError, TypeError) as exc:
                    # The driver refused a connection option (PyMySQL: `connect_timeout` not > 0): the store's
                    # fault, not the data's (the spend log takes a ValueError for a row the database refused).
                    raise StoreError(f"cannot connect to {self.display_url}: {_first_line(exc)}") from None
        try:
            yield db
        finally:
            if opened and not self._keep_open:
                db.close()

    def execute(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        """Run one statement on this thread's connection; rows if it returns any."""
        with self.connection() as db:
            cursor = db.execute_sql(sql, params)
            try:
                return list(cursor.fetchall()) if cursor.description else []
            finally:
                cursor.close()

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (readiness checks), and any check
        still owed (`owe_check`) passes once it does."""
        self.execute("SELECT 1")
        check = self._owed_check
        if check is not None:
            check()
            self._owed_check = None

    def owe_check(self, check: Callable[[], None]) -> None:
        """Make `ping()` (so `/ready`) fail until `check` has passed once."""
        self._owed_check = check

    @property
    def check_owed(self) -> bool:
        return self._owed_check is not None

    def table_exists(self, name: str) -> bool:
        with self.connection() as db:
            return db.table_exists(name)

    def close(self) -> None:
        """Close this process's connections (pools included). Call before forking, or at exit."""
        db = self._db
        if db is None or self._pid != os.getpid():
            return
        close_all = getattr(db, "close_all", None)
        if close_all is not None:
            close_all()
        elif not db.is_closed():
            db.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
