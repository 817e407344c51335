"""The store: peewee over a database URL, migrations, and the spend log."""

from __future__ import annotations

import sys


# peewee imports every driver it finds when it is first imported: PyMySQL (with `cryptography`) adds
# ~17 MB to every worker whose store is not MySQL, psycopg2 ~5 MB to every worker whose store is not
# PostgreSQL. Each is loaded when a store of its dialect is opened (database.py hands it to peewee
# then). Only when nothing imported peewee yet, and only the drivers nothing imported yet. (psycopg2cffi,
# on PyPy, registers itself as psycopg2 while peewee is imported: that registration is kept.)
def _import_peewee_without_drivers() -> None:
    blocked = [name for name in ("pymysql", "MySQLdb", "psycopg2") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))  # a None entry makes `import name` raise ImportError
    try:
        import peewee  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


if "peewee" not in sys.modules:
    _import_peewee_without_drivers()

from .database import DatabaseURL, Store, StoreError, StoreUnavailable, redact  # noqa: E402 (peewee first)
from .migrations import Migration, MigrationError, MigrationState, Migrator, migrate, verify  # noqa: E402

__all__ = [
    "DatabaseURL", "Migration", "MigrationError", "MigrationState", "Migrator", "Store", "StoreError", "StoreUnavailable",
    "migrate", "redact", "verify",
]
