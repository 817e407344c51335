"""The auth tables (API keys, budget ledger, token revocations) and their queries, on the gateway's Store (any dialect)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..app import MigrationItem

if TYPE_CHECKING:  # pragma: no cover
    from ..store.database import Store

KEYS = "auth_api_keys"
LEDGER = "auth_budget_ledger"
LOCKS = "auth_budget_locks"
REVOKED = "auth_token_revocations"
CUTOFFS = "auth_account_cutoffs"

# DOUBLE PRECISION / BIGINT / VARCHAR mean the same on SQLite, PostgreSQL and MySQL.
MIGRATIONS = [
    MigrationItem(1, "api_keys", f"""
CREATE TABLE {KEYS} (
    id VARCHAR(32) PRIMARY KEY,
    key_hash CHAR(64) NOT NULL,
    name VARCHAR(200) NOT NULL,
    account_id VARCHAR(128) NOT NULL,
    scope VARCHAR(16) NOT NULL,
    models TEXT NOT NULL,
    budget_micro_usd BIGINT,
    budget_scope VARCHAR(16) NOT NULL,
    budget_window VARCHAR(64),
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
);
""", tables=(KEYS,)),
    MigrationItem(2, "budget_ledger", f"""
CREATE TABLE {LEDGER} (
    id VARCHAR(40) PRIMARY KEY,
    account_id VARCHAR(128) NOT NULL,
    session_id VARCHAR(128),
    amount_micro_usd BIGINT NOT NULL,
    state VARCHAR(16) NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX {LEDGER}_account ON {LEDGER} (account_id, created_at);
CREATE INDEX {LEDGER}_session ON {LEDGER} (session_id, created_at);
CREATE TABLE {LOCKS} (
    account_id VARCHAR(128) PRIMARY KEY
);
""", tables=(LEDGER, LOCKS)),
    # A revoked JWT is keyed on its session id (routeplane.auth.revocation): a hash of the account and the
    # jti, so another account reusing the jti names another row. Hex keys, so no dialect's collation
    # (MySQL's case-insensitive one) can make two tokens one.
    MigrationItem(3, "token_revocations", f"""
CREATE TABLE {REVOKED} (
    session_id VARCHAR(40) PRIMARY KEY,
    account_id VARCHAR(128) NOT NULL,
    jti VARCHAR(128),
    expires_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX {REVOKED}_account ON {REVOKED} (account_id, revoked_at);
CREATE TABLE {CUTOFFS} (
    account_id VARCHAR(128) PRIMARY KEY,
    not_before DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
""", tables=(REVOKED, CUTOFFS)),
    # A key created without a model list used to store `[]` and `[]` meant "every model". From here on
    # every model is `["*"]` (and no model `[""]`, see _models_column): the old rows keep their meaning.
    MigrationItem(4, "api_key_models_all", f"""
UPDATE {KEYS} SET models = '["*"]' WHERE models = '[]';
""", tables=(KEYS,)),
]

# A revocation row outlives its token's exp by this much (more than any leeway_seconds allows) before
# it is pruned: past that the token is refused as expired anyway.
REVOCATION_GRACE_SECONDS = 86400

# Ledger states: a reservation in flight, a settled actual cost, a request whose price
# is unknown (its worst-case reservation keeps counting: never a silent zero), or a
# refused request (zero; it only moves "last N requests" windows).
PENDING, SETTLED, UNKNOWN, DENIED = "pending", "settled", "unknown", "denied"


@dataclass(frozen=True)
class ApiKeyRow:
    id: str
    key_hash: str
    name: str
    account_id: str
    scope: str
    models: Tuple[str, ...]
    budget_micro_usd: Optional[int]
    budget_scope: str
    budget_window: Optional[dict]
    created_at: float
    expires_at: Optional[float]
    revoked_at: Optional[float]


@dataclass(frozen=True)
class RevokedToken:
    session_id: str
    account_id: str
    jti: Optional[str]  # None: a token without jti, named by the hash of its signed header.payload
    expires_at: Optional[float]
    revoked_at: float

    def to_json(self) -> Dict[str, Any]:
        return {"session_id": self.session_id, "account_id": self.account_id, "jti": self.jti,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class AccountCutoff:
    """Tokens of `account_id` issued (iat) before `not_before` are refused."""

    account_id: str
    not_before: float
    updated_at: float

    def to_json(self) -> Dict[str, Any]:
        return {"account_id": self.account_id, "not_before": self.not_before, "updated_at": self.updated_at}


@dataclass(frozen=True)
class BudgetRule:
    """One limit a request must fit: over an account or a session, in a window."""

    limit_micro_usd: int
    scope: str  # "account" | "session"
    key: str  # the account or session id
    rounds: Optional[int] = None
    since: Optional[float] = None  # unix seconds; None = all time
    label: str = "budget"


@dataclass(frozen=True)
class Admission:
    """The budget verdict: refused by `denied_by` (with `used`), or admitted with `headroom` left (None = no limit)."""

    denied_by: Optional[BudgetRule] = None
    used: int = 0
    headroom: Optional[int] = None


class AuthStore:
    """Every query the auth plugin runs; placeholders follow the Store's driver."""

    def __init__(self, store: "Store") -> None:
        self.store = store

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.store.param)

    # --- API keys -------------------------------------------------------------

    _KEY_COLUMNS = ("id, key_hash, name, account_id, scope, models, budget_micro_usd, budget_scope, budget_window, "
                    "created_at, expires_at, revoked_at")

    def insert_key(self, row: ApiKeyRow) -> None:
        self.store.execute(self._sql(f"INSERT INTO {KEYS} ({self._KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), (
            row.id, row.key_hash, row.name, row.account_id, row.scope, _models_column(row.models),
            row.budget_micro_usd, row.budget_scope, json.dumps(row.budget_window) if row.budget_window else None,
            row.created_at, row.expires_at, row.revoked_at))

    def get_key(self, key_id: str) -> Optional[ApiKeyRow]:
        rows = self.store.execute(self._sql(f"SELECT {self._KEY_COLUMNS} FROM {KEYS} WHERE id = ?"), (key_id,))
        return _key_row(rows[0]) if rows else None

    def list_keys(self) -> List[ApiKeyRow]:
        return [_key_row(r) for r in self.store.execute(f"SELECT {self._KEY_COLUMNS} FROM {KEYS} ORDER BY created_at")]

    def revoke_key(self, key_id: str, now: Optional[float] = None) -> bool:
        with self.store.connection() as db:
            cursor = db.execute_sql(self._sql(f"UPDATE {KEYS} SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"),
                                    (now or time.time(), key_id))
            changed = cursor.rowcount
            cursor.close()
        return bool(changed)

    # --- token revocations ------------------------------------------------------

    def _insert_ignore(self, table: str, columns: str, count: int) -> str:
        """An INSERT that leaves an existing row (same primary key) as it is, on every dialect; its
        row count is 1 only when it inserted. Not MySQL's INSERT IGNORE, which also turns strict-mode
        errors (a value too long, a NULL) into warnings and stores a clipped row."""
        key = columns.split(",")[0].strip()
        tail = (f" ON DUPLICATE KEY UPDATE {key} = {key}" if self.store.dialect == "mysql"
                else " ON CONFLICT DO NOTHING")  # SQLite 3.24+ and PostgreSQL
        return self._sql(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * count)}){tail}")

    def revoke_token(self, row: RevokedToken) -> bool:
        """Record the revocation; False when the session was already revoked (the first row stays)."""
        with self.store.connection() as db:
            db.execute_sql(self._sql(f"DELETE FROM {REVOKED} WHERE expires_at < ?"),
                           (row.revoked_at - REVOCATION_GRACE_SECONDS,)).close()
            cursor = db.execute_sql(self._insert_ignore(REVOKED, "session_id, account_id, jti, expires_at, revoked_at", 5),
                                    (row.session_id, row.account_id, row.jti, row.expires_at, row.revoked_at))
            changed = cursor.rowcount
            cursor.close()
        return changed == 1

    def revoke_before(self, account_id: str, not_before: float, now: float) -> float:
        """Refuse the account's tokens issued before `not_before`; the cut-off only ever moves later
        (a late or repeated call cannot un-revoke). Returns the cut-off in force."""
        with self.store.connection() as db:
            db.execute_sql(self._insert_ignore(CUTOFFS, "account_id, not_before, updated_at", 3),
                           (account_id, not_before, now)).close()
            db.execute_sql(self._sql(f"UPDATE {CUTOFFS} SET not_before = ?, updated_at = ? "
                                     "WHERE account_id = ? AND not_before < ?"),
                           (not_before, now, account_id, not_before)).close()
            cursor = db.execute_sql(self._sql(f"SELECT not_before FROM {CUTOFFS} WHERE account_id = ?"), (account_id,))
            row = cursor.fetchone()
            cursor.close()
        return float(row[0])

    def revocation_state(self, session_id: str, account_id: str) -> Tuple[Optional[float], Optional[float]]:
        """(the session's revoked_at, the account's not_before) in one round trip; None where there is none."""
        rows = self.store.execute(self._sql(
            f"SELECT (SELECT revoked_at FROM {REVOKED} WHERE session_id = ?), "
            f"(SELECT not_before FROM {CUTOFFS} WHERE account_id = ?)"), (session_id, account_id))
        revoked_at, not_before = rows[0]
        return (None if revoked_at is None else float(revoked_at), None if not_before is None else float(not_before))

    def revocation_snapshot(self, now: float) -> Tuple[List[str], List[Tuple[str, float]]]:
        """Every revoked session still in force and every account cut-off (a worker's snapshot)."""
        sessions = self.store.execute(self._sql(
            f"SELECT session_id FROM {REVOKED} WHERE expires_at IS NULL OR expires_at >= ?"),
            (now - REVOCATION_GRACE_SECONDS,))
        cutoffs = self.store.execute(self._sql(f"SELECT account_id, not_before FROM {CUTOFFS}"))
        return [str(r[0]) for r in sessions], [(str(r[0]), float(r[1])) for r in cutoffs]

    def list_revocations(self, account_id: Optional[str] = None,
                         limit: Optional[int] = None) -> Tuple[List[RevokedToken], List[AccountCutoff]]:
        """Revoked tokens (newest first, at most `limit`) and account cut-offs, of one account or all."""
        where, params = ("WHERE account_id = ?", (account_id,)) if account_id is not None else ("", ())
        cap = f" LIMIT {int(limit)}" if limit is not None else ""
        tokens = self.store.execute(self._sql(f"SELECT session_id, account_id, jti, expires_at, revoked_at FROM {REVOKED} "
                                              f"{where} ORDER BY revoked_at DESC{cap}"), params)
        cutoffs = self.store.execute(self._sql(f"SELECT account_id, not_before, updated_at FROM {CUTOFFS} {where} "
                                               f"ORDER BY updated_at DESC{cap}"), params)
        return ([RevokedToken(str(r[0]), r[1], r[2], None if r[3] is None else float(r[3]), float(r[4]))
                 for r in tokens],
                [AccountCutoff(r[0], float(r[1]), float(r[2])) for r in cutoffs])

    # --- budget ledger ----------------------------------------------------------

    @contextlib.contextmanager
    def _account_lock(self, account_id: str) -> Iterator[Any]:
        """A transaction that holds the account's budget lock: admissions of one account run one at a time."""
        with self.store.connection() as db:
            dialect = self.store.dialect
            if dialect == "sqlite":
                # BEGIN IMMEDIATE takes SQLite's single write lock before reading the sums.
                with db.atomic(lock_type="IMMEDIATE"):
                    yield db
                return
            with db.atomic():
                if dialect == "postgresql":
                    # The sums below must see every reservation committed while this one waited for
                    # the lock. A database whose default isolation is REPEATABLE READ (or SERIALIZABLE)
                    # would read them from a snapshot taken before the wait (admitting a whole queue of
                    # requests against one request's room), or fail them as serialization errors.
                    db.execute_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").close()
                # MySQL: not INSERT IGNORE, which takes a shared lock on an existing row; two admissions
                # holding it both wanted it exclusive below, and InnoDB killed one as a deadlock.
                # ON DUPLICATE KEY UPDATE locks the row exclusively at once.
                tail = ("ON CONFLICT DO NOTHING" if dialect == "postgresql"
                        else "ON DUPLICATE KEY UPDATE account_id = account_id")
                db.execute_sql(self._sql(f"INSERT INTO {LOCKS} (account_id) VALUES (?) {tail}"), (account_id,)).close()
                db.execute_sql(self._sql(f"SELECT account_id FROM {LOCKS} WHERE account_id = ? FOR UPDATE"),
                               (account_id,)).close()
                yield db

    def used(self, db: Any, rule: BudgetRule, now: float, ttl: float) -> int:
        """Micro-USD counted against `rule`: settled costs, unknown-price reservations, live reservations."""
        column = "account_id" if rule.scope == "account" else "session_id"
        live = f"(state <> '{PENDING}' OR created_at >= ?)"
        params: List[Any] = [rule.key, now - ttl]
        if rule.rounds is not None:
            sql = (f"SELECT amount_micro_usd, state, created_at FROM {LEDGER} WHERE {column} = ? "
                   f"ORDER BY created_at DESC LIMIT {int(rule.rounds)}")
            cursor = db.execute_sql(self._sql(sql), (rule.key,))
            rows = cursor.fetchall()
            cursor.close()
            return sum(int(a) for a, state, created in rows if state != PENDING or float(created) >= now - ttl)
        sql = f"SELECT COALESCE(SUM(amount_micro_usd), 0) FROM {LEDGER} WHERE {column} = ? AND {live}"
        if rule.since is not None:
            sql += " AND created_at >= ?"
            params.append(rule.since)
        cursor = db.execute_sql(self._sql(sql), tuple(params))
        row = cursor.fetchone()
        cursor.close()
        return int(row[0] or 0)

    def admit(self, entry_id: str, account_id: str, session_id: Optional[str], amount: int,
              rules: Sequence[BudgetRule], now: float, ttl: float) -> Admission:
        """Check every rule and record the reservation, in one transaction under the account's lock."""
        insert = self._sql(f"INSERT INTO {LEDGER} (id, account_id, session_id, amount_micro_usd, state, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)")
        if not rules:  # nothing to enforce: record the request (it counts for later limits) without the lock
            self.store.execute(insert, (entry_id, account_id, session_id, amount, PENDING, now))
            return Admission()
        with self._account_lock(account_id) as db:
            result = self._evaluate(db, rules, now, ttl)
            if result.denied_by is not None:
                if any(r.rounds is not None for r in rules):
                    # A refused request still counts as a round (at zero cost); otherwise a
                    # "last N requests" window would never move again once it is full.
                    db.execute_sql(insert, (entry_id, account_id, session_id, 0, DENIED, now)).close()
                return result
            db.execute_sql(insert, (entry_id, account_id, session_id, amount, PENDING, now)).close()
        return result

    def _evaluate(self, db: Any, rules: Sequence[BudgetRule], now: float, ttl: float) -> Admission:
        headroom: Optional[int] = None
        for rule in rules:
            used = self.used(db, rule, now, ttl)
            if used >= rule.limit_micro_usd:
                return Admission(rule, used, 0)
            left = rule.limit_micro_usd - used
            headroom = left if headroom is None else min(headroom, left)
        return Admission(None, 0, headroom)

    def over_budget(self, rules: Sequence[BudgetRule], now: float, ttl: float) -> Admission:
        """The same verdict as admit(), read-only and unlocked (for dry runs)."""
        with self.store.connection() as db:
            return self._evaluate(db, rules, now, ttl)

    def settle(self, entry_id: str, amount: Optional[int]) -> None:
        """The actual cost replaces the reservation; an unknown cost keeps the reservation, marked unknown."""
        if amount is None:
            sql = f"UPDATE {LEDGER} SET state = ? WHERE id = ? AND state = ?"
            params: Tuple[Any, ...] = (UNKNOWN, entry_id, PENDING)
        else:
            sql = f"UPDATE {LEDGER} SET amount_micro_usd = ?, state = ? WHERE id = ? AND state = ?"
            params = (int(amount), SETTLED, entry_id, PENDING)
        self.store.execute(self._sql(sql), params)

    def record_spent(self, rows: Sequence[Dict[str, Any]]) -> None:
        """Settlements the store missed (`{id, account_id, session_id, amount, state, created_at}`), in one
        transaction: a reservation still pending is settled; a request admitted while the store was down
        (no row) gets its row. A second write of a row changes nothing, so a replay may repeat."""
        update = self._sql(f"UPDATE {LEDGER} SET amount_micro_usd = ?, state = ? WHERE id = ? AND state = ?")
        insert = self._insert_ignore(LEDGER, "id, account_id, session_id, amount_micro_usd, state, created_at", 6)
        with self.store.connection() as db, db.atomic():
            for r in rows:
                db.execute_sql(update, (int(r["amount"]), r["state"], r["id"], PENDING)).close()
                db.execute_sql(insert, (r["id"], r["account_id"], r["session_id"], int(r["amount"]), r["state"],
                                        float(r["created_at"]))).close()

    def ledger_total(self, account_id: str) -> int:
        rows = self.store.execute(self._sql(f"SELECT COALESCE(SUM(amount_micro_usd), 0) FROM {LEDGER} "
                                            "WHERE account_id = ?"), (account_id,))
        return int(rows[0][0] or 0)


# A key that allows no model is stored as `[""]`, not `[]`: releases before the distinction read `[]` as
# "every model", and one may still share the table (hosts not yet upgraded on one PostgreSQL, a rollback, a
# provisioning job on the old CLI). `""` is no valid pattern (valid_patterns) and matches no model name
# under every release's glob, so such a key allows none everywhere; and `[]`, whoever wrote it, keeps
# meaning what every release that wrote it meant: every model.
_NO_MODEL = [""]


def _models_column(models: Sequence[str]) -> str:
    return json.dumps(list(models) or _NO_MODEL)


def _models_of(column: str) -> Tuple[str, ...]:
    models = json.loads(column)
    if models == _NO_MODEL:
        return ()
    return tuple(models) if models else ("*",)


def _key_row(r: Sequence[Any]) -> ApiKeyRow:
    return ApiKeyRow(
        id=r[0], key_hash=str(r[1]).strip(), name=r[2], account_id=r[3], scope=r[4], models=_models_of(r[5]),
        budget_micro_usd=None if r[6] is None else int(r[6]), budget_scope=r[7],
        budget_window=json.loads(r[8]) if r[8] else None, created_at=float(r[9]),
        expires_at=None if r[10] is None else float(r[10]), revoked_at=None if r[11] is None else float(r[11]),
    )
