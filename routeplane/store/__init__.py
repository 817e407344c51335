"""The store: peewee over a database URL, migrations, and the spend log."""

from __future__ import annotations

from .database import DatabaseURL, Store, StoreError, StoreUnavailable, redact
from .migrations import Migration, MigrationError, MigrationState, Migrator, migrate, verify

__all__ = [
    "DatabaseURL", "Migration", "MigrationError", "MigrationState", "Migrator", "Store", "StoreError", "StoreUnavailable",
    "migrate", "redact", "verify",
]
