"""The store: peewee over a database URL, migrations, and the spend log."""

from __future__ import annotations

import sys

# peewee imports every driver it finds when it is first imported; PyMySQL (with `cryptography`) adds
# ~17 MB to every worker whose store is not MySQL. It is loaded when a mysql:// store is opened
# (database.py hands it to peewee then). Only when nothing imported peewee or PyMySQL already.
if "peewee" not in sys.modules and "pymysql" not in sys.modules and "MySQLdb" not in sys.modules:
    sys.modules["pymysql"] = sys.modules["MySQLdb"] = None  # type: ignore[assignment]
    try:
        import peewee  # noqa: F401
    finally:
        del sys.modules["pymysql"], sys.modules["MySQLdb"]

from .database import DatabaseURL, Store, StoreError, StoreUnavailable, redact
from .migrations import Migration, MigrationError, MigrationState, Migrator, migrate, verify

__all__ = [
    "DatabaseURL", "Migration", "MigrationError", "MigrationState", "Migrator", "Store", "StoreError", "StoreUnavailable",
    "migrate", "redact", "verify",
]
