"""`routeplane migrate` and `routeplane spend`: the store's command-line side."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from typing import Any, List, Optional, Tuple

import peewee

from ..config import ConfigError, load_config
from .database import Store, StoreError
from .migrations import MigrationError, Migrator

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: Optional[float] = None) -> float:
    """`now`, `24h`, `30m`, `7d` (ago) or an ISO date/time (UTC unless it says otherwise) → unix seconds."""
    now = time.time() if now is None else now
    if text.strip().lower() == "now":  # what `--until`'s help names as its default
        return now
    m = _DURATION.match(text.strip())
    if m:
        return _in_range(text, now - float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither now, a duration (24h, 30m, 7d) nor an ISO date (2026-11-01T00:00)") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    try:
        return _in_range(text, when.timestamp())
    except OverflowError:  # before year 1 in UTC (0001-01-01T00:00+01:00)
        raise ValueError(f"{text!r} is out of range (years 1 to 9999, UTC)") from None


def _in_range(text: str, ts: float) -> float:
    """`ts` if it is an instant of years 1 to 9999 (UTC), which the report can print."""
    try:
        dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{text!r} is out of range (years 1 to 9999, UTC)") from None
    return ts


def parse_window(since_text: str, until_text: Optional[str]) -> Tuple[float, Optional[float]]:
    """(since, until or None for now) of `--since`/`--until`, both read at one instant; a window that does
    not start before it ends is a ValueError naming both values (it used to print an empty report)."""
    now = time.time()
    since = parse_when(since_text, now)
    until = parse_when(until_text, now) if until_text else None
    if since >= (now if until is None else until):
        until_shown = until_text or "now"
        raise ValueError(f"--since {since_text!r} ({_iso(since)}) is not before --until {until_shown!r} "
                         f"({_iso(now if until is None else until)}): the window is empty")
    return since, until


def _open(args: argparse.Namespace, read_only: bool = False) -> Tuple[Any, Store]:
    """(config, Store) of `--database`, else of the config's database.url.

    With `--database` nothing of the config's environment is needed: an unset `${VAR}` (a provider key
    the service has and an operator's shell lacks) stays as written instead of failing the command."""
    path = getattr(args, "config", None) or os.environ.get("ROUTEPLANE_CONFIG") or None
    config = load_config(path, unset_ok=bool(getattr(args, "database", None)))
    url = getattr(args, "database", None) or config.database_url
    if not url:
        raise ConfigError(f"{config.source}: database.url is empty; there is no store")
    store = Store.from_url(url, read_only=read_only)
    if read_only and store.dialect == "sqlite" and store.parsed.database not in ("", ":memory:") \
            and not os.path.isfile(store.parsed.database):
        raise StoreError(f"{store.display_url}: no such database file")
    return config, store


def _database_error(store: Optional[Store], exc: peewee.DatabaseError) -> str:
    """One line for a driver error that escaped the store (a file that is not a database, say)."""
    lines = str(exc).strip().splitlines()
    where = store.display_url if store is not None else "the database"
    return f"{where}: {lines[0] if lines else type(exc).__name__}"


def cmd_migrate(args: argparse.Namespace) -> int:
    store: Optional[Store] = None
    try:
        config, store = _open(args)
        from ..app import build_app

        app = build_app(config, store=store)
        migrator = Migrator(store, app.plugins)
        if args.status:
            states = migrator.status()
            width = max([len(s.plugin) for s in states] + [6])
            print(f"{'plugin':<{width}}  version  state    name")
            for s in states:
                print(f"{s.plugin:<{width}}  {s.version:>7}  {s.state:<7}  {s.name}")
            bad = [s for s in states if s.state in ("changed", "pending")]
            return 1 if any(s.state == "changed" for s in bad) else 0
        done = migrator.migrate()
    except (ConfigError, MigrationError, StoreError) as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 1
    except peewee.DatabaseError as exc:
        print(f"routeplane: {_database_error(store, exc)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
    if not args.quiet or done:
        for m in done:
            print(f"applied {m.label}", file=sys.stderr if args.quiet else sys.stdout)
        if not args.quiet:
            print(f"{store.display_url}: up to date ({len(migrator.plan)} migrations, {len(done)} applied now)")
    return 0


def cmd_spend(args: argparse.Namespace) -> int:
    from .spend_log import TABLE, spend_totals

    try:
        since, until = parse_window(args.since, args.until)
    except ValueError as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 2
    store: Optional[Store] = None
    try:
        _config, store = _open(args, read_only=True)  # a report never creates nor changes a database
        if not store.table_exists(TABLE):
            print(f"routeplane: {store.display_url} has no spend log yet: run `routeplane migrate`", file=sys.stderr)
            return 1
        totals = spend_totals(store, since, until, args.by)
    except (ConfigError, StoreError) as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 1
    except peewee.DatabaseError as exc:
        print(f"routeplane: {_database_error(store, exc)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.close()
    rows = [t.as_dict() for t in totals]
    grand = {k: sum(r[k] for r in rows) for k in ("requests", "failed", "input_tokens", "output_tokens",
                                                   "cost_micro_usd", "unpriced_requests")}
    grand["cost_usd"] = grand["cost_micro_usd"] / 1_000_000
    if args.json:
        json.dump({"since": since, "until": until, "by": args.by, "rows": rows, "total": grand}, sys.stdout, indent=2)
        print()
        return 0
    _print_table(args.by, rows, grand, since, until)
    return 0


def cost_cell(totals: dict) -> str:
    """The cost of a line as far as it is known: requests of unknown price are never shown as free.

    "unknown" when every request of the line is unpriced, "≥x" (a lower bound) when some are."""
    unpriced = totals["unpriced_requests"]
    if unpriced and unpriced >= totals["requests"]:
        return "unknown"
    return f"{'≥' if unpriced else ''}{totals['cost_usd']:.6f}"


def _iso(ts: float) -> str:
    when = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return f"{when.year:04d}-{when:%m-%d %H:%M:%S}Z"  # %Y is not zero-padded before year 1000


def _print_table(by: str, rows: List[dict], grand: dict, since: float, until: Optional[float]) -> None:
    print(f"spend by {by}, {_iso(since)} → {_iso(until) if until else 'now'}")
    header = (by, "requests", "failed", "input tok", "output tok", "cost USD", "unpriced")
    lines = [header] + [
        (str(r["key"]) if r["key"] is not None else "-", str(r["requests"]), str(r["failed"]), str(r["input_tokens"]),
         str(r["output_tokens"]), cost_cell(r), str(r["unpriced_requests"]))
        for r in rows
    ] + [("TOTAL", str(grand["requests"]), str(grand["failed"]), str(grand["input_tokens"]),
          str(grand["output_tokens"]), cost_cell(grand), str(grand["unpriced_requests"]))]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0 or n == len(lines) - 2:
            print("  ".join("-" * w for w in widths))


def add_parsers(sub: Any) -> None:
    """Register `migrate` and `spend` on the `routeplane` command's subparsers."""
    migrate = sub.add_parser("migrate", help="apply pending database migrations (core and plugins)")
    migrate.add_argument("--config", help="config file (default: $ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in)")
    migrate.add_argument("--database", help="database URL (default: the config's database.url)")
    migrate.add_argument("--status", action="store_true", help="list migrations and their state; change nothing")
    migrate.add_argument("--quiet", action="store_true", help="print only what was applied")
    migrate.set_defaults(func=cmd_migrate)
    spend = sub.add_parser("spend", help="spend totals from the spend log")
    spend.add_argument("--config", help="config file (default: $ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in)")
    spend.add_argument("--database", help="database URL (default: the config's database.url)")
    spend.add_argument("--since", default="24h", help="window start: 24h, 30m, 7d (ago) or an ISO date (default 24h)")
    spend.add_argument("--until", help="window end: now, 24h, 30m, 7d (ago) or an ISO date (default: now)")
    spend.add_argument("--by", choices=["account", "model", "provider", "route"], default="account")
    spend.add_argument("--json", action="store_true", help="JSON instead of a table")
    spend.set_defaults(func=cmd_spend)
