"""The store: peewee over a database URL, migrations, and the spend log."""

from __future__ import annotations

import sys

# peewee imports every driver it finds when it is first imported: PyMySQL (with `cryptography`) adds
# ~17 MB to every worker whose store is not MySQL, psycopg2 ~5 MB to every worker whose store is not
# PostgreSQL. Each is loaded when a store of its dialect is opened (database.py hands it to peewee
# then). Only when nothing imported peewee yet, and only the drivers nothing imported yet.
if "peewee" not in sys.modules:
    _blocked = [name for name in ("pymysql", "MySQLdb", "psycopg2", "psycopg2cffi", "psycopg") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(_blocked))  # a None entry makes `import name` raise ImportError
    try:
        import peewee  # noqa: F401
    finally:
        for _name in _blocked:
            del sys.modules[_name]

from .database import DatabaseURL, Store, StoreError, StoreUnavailable, redact
from .migrations import Migration, MigrationError, MigrationState, Migrator, migrate, verify

__all__ = [
    "DatabaseURL", "Migration", "MigrationError", "MigrationState", "Migrator", "Store", "StoreError", "StoreUnavailable",
    "migrate", "redact", "verify",
]
