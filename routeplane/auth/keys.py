"""Opaque API keys `rpk_<id>_<secret>`: shown once, stored as a SHA-256 hash, checked in constant time.

SHA-256 (not bcrypt/argon2) is enough because the secret is 32 random bytes:
slow hashes protect low-entropy passwords from guessing, and 2^256 cannot be
guessed at any speed. A fast hash keeps the per-request check cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Optional, Sequence, Tuple

from .globs import valid_patterns
from .store import ApiKeyRow, AuthStore
from .window import MAX_BUDGET, BudgetWindow, valid_budget

PREFIX = "rpk_"
_KEY = re.compile(r"rpk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")  # fullmatch: `$` allows a final newline


class KeyError_(Exception):
    """A key was refused; the message is safe for the client (it never echoes the key)."""


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_key(key: str) -> Optional[Tuple[str, str]]:
    m = _KEY.fullmatch(key)
    return (m.group(1), m.group(2)) if m else None


def new_key() -> Tuple[str, str]:
    """(key id, full key). The id is public (lists, logs); the rest is the secret."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def default_account(key_id: str) -> str:
    return f"key_{key_id}"


def create_key(store: AuthStore, *, name: str = "", account_id: Optional[str] = None, scope: str = "api",
               models: Optional[Sequence[str]] = None, budget_micro_usd: Optional[int] = None,
               budget_scope: str = "account", budget_window: Optional[BudgetWindow] = None,
               expires_at: Optional[float] = None, now: Optional[float] = None) -> Tuple[ApiKeyRow, str]:
    """Store a new key's hash; returns the row and the full key (never stored, never shown again).

    `models`: None allows every model (stored as `["*"]`); an empty list allows none.
    """
    if scope not in ("api", "admin"):
        raise ValueError("scope must be api or admin")
    if budget_scope not in ("account", "session"):
        raise ValueError("budget scope must be account or session")
    models = ("*",) if models is None else tuple(models)
    if not valid_patterns(models):
        raise ValueError("model patterns must be non-empty strings")
    if account_id is not None and not 0 < len(account_id) <= 128:
        raise ValueError("an account id is 1 to 128 characters")
    if len(name) > 200:
        raise ValueError("a key name is at most 200 characters")
    if budget_micro_usd is not None and not valid_budget(budget_micro_usd):
        raise ValueError(f"a budget is a whole number of micro-USD from 0 to {MAX_BUDGET}")
    key_id, key = new_key()
    row = ApiKeyRow(
        id=key_id, key_hash=hash_secret(key), name=name, account_id=account_id or default_account(key_id),
        scope=scope, models=tuple(models), budget_micro_usd=budget_micro_usd, budget_scope=budget_scope,
        budget_window=budget_window.to_json() if budget_window else None, created_at=now or time.time(),
        expires_at=expires_at, revoked_at=None,
    )
    store.insert_key(row)
    return row, key


def check_key(store: AuthStore, key: str, now: Optional[float] = None) -> ApiKeyRow:
    """The key's row if the key is valid, else KeyError_. Store errors propagate (the caller fails closed)."""
    parts = split_key(key)
    if parts is None:
        raise KeyError_("The API key is not valid.")
    row = store.get_key(parts[0])
    # Compare hashes in constant time, and compare even when there is no row, so
    # timing does not tell an unknown id from a wrong secret.
    expected = row.key_hash if row is not None else "0" * 64
    if not hmac.compare_digest(expected, hash_secret(key)) or row is None:
        raise KeyError_("The API key is not valid.")
    now = time.time() if now is None else now
    if row.revoked_at is not None:
        raise KeyError_("The API key has been revoked.")
    if row.expires_at is not None and now >= row.expires_at:
        raise KeyError_("The API key has expired.")
    return row
