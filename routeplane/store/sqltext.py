"""Splits migration SQL into statements and names the tables each statement writes (or creates)."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple


class SQLCheckError(ValueError):
    """A statement a plugin migration may not run (unknown kind, or a table it did not declare)."""


def split_statements(sql: str) -> List[Tuple[str, str]]:
    """(statement as written, normalized form) per `;`-terminated statement.

    The normalized form drops comments, empties string literals and unquotes
    identifiers, so keywords and table names can be matched without being
    fooled by a `;` or a table name inside a string or a comment.
    """
    out: List[Tuple[str, str]] = []
    raw: List[str] = []
    norm: List[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        two = sql[i : i + 2]
        if two == "--":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            raw.append(sql[i:j])
            norm.append(" ")
            i = j
        elif two == "/*":
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            raw.append(sql[i:j])
            norm.append(" ")
            i = j
        elif c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if sql[j + 1 : j + 2] == c:  # doubled quote escapes itself
                        j += 2
                        continue
                    break
                if c == "'" and sql[j] == "\\" and j + 1 < n:
                    j += 2  # MySQL-style backslash escape; harmless elsewhere for our purposes
                    continue
                j += 1
            raw.append(sql[i : j + 1])
            norm.append("''" if c == "'" else sql[i + 1 : j].replace(c + c, c))
            i = j + 1
        elif c == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])):
            tag = m.group(0)
            j = sql.find(tag, i + len(tag))
            j = n if j < 0 else j + len(tag)
            raw.append(sql[i:j])
            norm.append("''")
            i = j
        elif c == ";":
            _flush(out, raw, norm)
            raw, norm = [], []
            i += 1
        else:
            raw.append(c)
            norm.append(c)
            i += 1
    _flush(out, raw, norm)
    return out


def _flush(out: List[Tuple[str, str]], raw: List[str], norm: List[str]) -> None:
    normalized = " ".join("".join(norm).split())
    if normalized:
        out.append(("".join(raw).strip(), normalized))


_ID = r"([A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?)"
_IDS = _ID[:-1] + r"(?:\s*,\s*[A-Za-z_][A-Za-z0-9_$.]*)*)"

# (pattern, kind); group 1 is the written table (or a comma list for DROP/TRUNCATE).
_WRITES = [
    (rf"^CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP\s+|TEMPORARY\s+|UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_ID}",
     "create table"),
    (rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\b.*?\bON\s+(?:ONLY\s+)?{_ID}", "create index"),
    (rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+|TEMPORARY\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?{_ID}", "create view"),
    (rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_ID}", "alter table"),
    (rf"^DROP\s+(?:TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?{_IDS}", "drop table"),
    (rf"^DROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?{_ID}(?:\s+ON\s+{_ID})?", "drop index"),
    (rf"^(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?(?:IGNORE\s+)?INTO\s+{_ID}", "insert"),
    (rf"^UPDATE\s+(?:OR\s+\w+\s+)?(?:ONLY\s+)?{_ID}", "update"),
    (rf"^DELETE\s+FROM\s+(?:ONLY\s+)?{_ID}", "delete"),
    (rf"^TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{_IDS}", "truncate"),
]
_RENAME = re.compile(rf"\bRENAME\s+TO\s+{_ID}", re.I)


def written_tables(normalized: str) -> Tuple[str, List[str]]:
    """(statement kind, tables it creates or changes), lower-case. Raises SQLCheckError for any other kind.

    Only statements whose targets can be named are allowed in a plugin
    migration; triggers, functions, DO blocks, PRAGMA, ATTACH, GRANT, SELECT
    (which can call functions with side effects) and CTE-wrapped writes are refused.
    """
    for pattern, kind in _WRITES:
        m = re.match(pattern, normalized, re.I | re.S)
        if not m:
            continue
        if kind == "drop index":
            # An index names no table; by convention it must start with its table's name.
            tables = [m.group(2)] if m.group(2) else []
            return kind, [t.lower() for t in tables] or ["index:" + m.group(1).lower()]
        tables = [t.strip().lower() for t in m.group(1).split(",")]
        if kind == "alter table":
            rename = _RENAME.search(normalized)
            if rename:
                tables.append(rename.group(1).lower())
        return kind, tables
    head = " ".join(normalized.split()[:3])
    raise SQLCheckError(f"statement {head!r}… is not allowed in a plugin migration (allowed: CREATE TABLE/INDEX/VIEW, "
                        "ALTER TABLE, DROP TABLE/VIEW/INDEX, INSERT, UPDATE, DELETE, TRUNCATE)")


def check_tables(sql: str, declared: Tuple[str, ...]) -> None:
    """Raise SQLCheckError unless every statement writes only to `declared` tables."""
    allowed = {t.lower() for t in declared}
    for _raw, normalized in split_statements(sql):
        kind, tables = written_tables(normalized)
        for table in tables:
            if table.startswith("index:"):
                index = table[6:]
                if not any(index == t or index.startswith(t + "_") for t in allowed):
                    raise SQLCheckError(f"DROP INDEX {index}: an index name must start with a declared table's name "
                                        f"(declared: {sorted(allowed) or 'none'})")
            elif table not in allowed:
                raise SQLCheckError(f"{kind} {table}: table {table!r} is not among the migration's declared tables "
                                    f"({sorted(allowed) or 'none'})")


_CREATED = [
    (re.compile(rf"^CREATE\s+TABLE\s+{_ID}", re.I), "table"),
    (re.compile(rf"^CREATE\s+VIEW\s+{_ID}", re.I), "view"),
    (re.compile(rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+{_ID}\s+ON\s+{_ID}", re.I), "index"),
]


def created_object(normalized: str) -> Optional[Tuple[str, str, Optional[str]]]:
    """(kind, name, table for an index) of an object the statement certainly creates anew, else None;
    names as written (unquoted), since MySQL table names can be case-sensitive.

    `IF NOT EXISTS`, `OR REPLACE` and temporary tables do not count: the object may have been there
    before the statement ran, so dropping it would not undo the statement.
    """
    for pattern, kind in _CREATED:
        m = pattern.match(normalized)
        if m and m.group(1).upper() != "IF":
            return kind, m.group(1), m.group(2) if kind == "index" else None
    return None


def commits_implicitly(normalized: str) -> bool:
    """Whether MySQL ends the open transaction (commits it) around this statement: anything but data
    manipulation (CREATE, ALTER, DROP, RENAME, TRUNCATE, ...)."""
    head = normalized.split(None, 1)[0].upper() if normalized else ""
    return head not in ("INSERT", "UPDATE", "DELETE", "REPLACE", "SELECT", "WITH", "SET", "DO", "CALL")
