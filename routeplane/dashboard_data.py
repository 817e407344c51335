"""Queries behind the admin dashboard: window summaries, time buckets, spend groups and recent requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .logs import redact
from .metrics import PERCENTILES, NameBounds, exact, grouped_percentiles, grouping, nearest_rank

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store

_SPEND = "spend_log"

# The overview's "last hour / day / week"; spend may also look back 30 days.
SUMMARY_WINDOWS: Tuple[Tuple[str, str, float], ...] = (
    ("1h", "Last hour", 3600.0), ("24h", "Last day", 86400.0), ("7d", "Last week", 7 * 86400.0))
WINDOWS: Dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
WINDOW_LABELS = {"1h": "last hour", "24h": "last day", "7d": "last week", "30d": "last 30 days"}
# Buckets per window for the time charts: a fixed count bounds every chart whatever the traffic.
BUCKETS = {"1h": (12, 300.0), "24h": (24, 3600.0), "7d": (28, 6 * 3600.0), "30d": (30, 86400.0)}
SPEND_GROUPS: Dict[str, Tuple[str, ...]] = {
    "account": ("account_id",), "provider": ("provider",), "model": ("provider", "model"), "route": ("route",)}
MAX_RECENT = 500

_AGG = (
    "COUNT(*),"
    " SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END),"
    " SUM(input_tokens + cache_read_tokens + cache_write_tokens),"
    " SUM(output_tokens + reasoning_tokens),"
    " SUM(cost_micro_usd),"
    " SUM(CASE WHEN cost_micro_usd IS NULL THEN 1 ELSE 0 END)"
)


def shown(value: Any) -> Any:
    """A client-chosen name as the dashboard may show it: an API key or a JWT in it is `[redacted]`.

    A client that sends its key as the model name (the two settings swapped) leaves it in the spend log's
    route; every admin reading the pages or the CSV could then spend as that client.
    """
    return redact(value) if isinstance(value, str) else value


def _agg(row: Sequence[Any]) -> Dict[str, Any]:
    n, errors, tin, tout, cost, unknown = (row[i] for i in range(6))
    n, errors = int(n or 0), int(errors or 0)
    return {"requests": n, "errors": errors, "error_rate": (errors / n) if n else 0.0,
            "input_tokens": int(tin or 0), "output_tokens": int(tout or 0),
            # Rows of unknown price (NULL) are counted apart: a sum over them would read as free.
            "cost_micro_usd": int(cost or 0), "unknown_cost": int(unknown or 0)}


def percentiles(store: "Store", since: float, where: str = "", params: Tuple[Any, ...] = (),
                n: Optional[int] = None) -> Dict[str, Optional[float]]:
    """Nearest-rank latency percentiles (ms) of the rows started since `since` matching `where`, one indexed query
    per percentile (the same definition as /admin/metrics)."""
    p = store.param
    cond = f"started_at >= {p}" + (f" AND {where}" if where else "")
    if n is None:
        n = int(store.execute(f"SELECT COUNT(*) FROM {_SPEND} WHERE {cond}", (since,) + params)[0][0] or 0)
    out: Dict[str, Optional[float]] = {}
    for name, q in PERCENTILES:
        rows = store.execute(f"SELECT latency_ms FROM {_SPEND} WHERE {cond} ORDER BY latency_ms"
                             f" LIMIT 1 OFFSET {nearest_rank(n, q) - 1}", (since,) + params) if n else []
        out[name] = round(float(rows[0][0]), 3) if rows else None
    return out


def window_summary(store: "Store", seconds: float, now: float) -> Dict[str, Any]:
    since = now - seconds
    row = store.execute(f"SELECT {_AGG} FROM {_SPEND} WHERE started_at >= {store.param}", (since,))[0]
    out = _agg(row)
    source, params = NameBounds().source(store, since, ())
    out["latency_ms"] = grouped_percentiles(store, source, params, [()])[0].get(
        (), {name: None for name, _q in PERCENTILES}) if out["requests"] else {name: None for name, _q in PERCENTILES}
    return out


def grouped(store: "Store", columns: Sequence[str], since: float, with_latency: bool = True,
            names: Optional[NameBounds] = None) -> List[Dict[str, Any]]:
    """Rows grouped by `columns` (trusted names from this module) over the window, most requests first.

    With `names`, the routes, providers and models the config does not name are one group, `other` (whose row's
    `names` counts the distinct raw names in it). Latency percentiles: one query for all groups.
    """
    source, params = (names or NameBounds()).source(store, since, columns)
    keys, group = grouping(store, [f"k{i}" for i in range(len(columns))])
    # The group of unconfigured names (route tables only) says how many raw names it stands for.
    other = names.other(columns[0]) if names is not None and len(columns) == 1 \
        and names.known.get(columns[0]) is not None else None
    folded = f"COUNT(DISTINCT {exact(store, columns[0])})" if other is not None else "0"
    rows = store.execute(f"SELECT {keys}, {_AGG}, {folded} FROM ({source}) s GROUP BY {group}", params)
    latency = grouped_percentiles(store, source, params, [[f"k{i}" for i in range(len(columns))]])[0] \
        if with_latency and rows else {}
    out = []
    for row in rows:
        key = tuple(row[:len(columns)])
        d = _agg(row[len(columns):])
        d["key"] = tuple(shown(v) for v in key)
        d["names"] = int(row[-1] or 0) if other is not None and key[0] == other else 0
        if with_latency:
            d["latency_ms"] = latency.get(key, {name: None for name, _q in PERCENTILES})
        out.append(d)
    out.sort(key=lambda d: (-d["requests"], -d["cost_micro_usd"], tuple("" if v is None else str(v) for v in d["key"])))
    return out


def time_buckets(store: "Store", window: str, now: float) -> Dict[str, Any]:
    """Requests, errors and spend per fixed-width bucket over the window (oldest first), bucketed in SQL."""
    count, width = BUCKETS[window]
    since = now - count * width
    p = store.param
    # SQLite's CAST truncates (the offsets are positive); PostgreSQL and MySQL round a CAST, so FLOOR there.
    index = (f"CAST((started_at - {p}) / {p} AS INTEGER)" if store.dialect == "sqlite"
             else f"FLOOR((started_at - {p}) / {p})")
    rows = store.execute(f"SELECT {index} AS b, {_AGG} FROM {_SPEND} WHERE started_at >= {p} GROUP BY b",
                         (since, width, since))
    buckets = [{"start": since + i * width, "end": since + (i + 1) * width, **_agg((0, 0, 0, 0, 0, 0))}
               for i in range(count)]
    for row in rows:
        i = min(count - 1, max(0, int(row[0])))  # a row started at `now` itself lands in the last bucket
        d = _agg(row[1:])
        for k in ("requests", "errors", "input_tokens", "output_tokens", "cost_micro_usd", "unknown_cost"):
            buckets[i][k] += d[k]
    return {"window": window, "width_seconds": width, "since": since, "until": now, "buckets": buckets}


def overview(store: "Store", window: str, now: Optional[float] = None,
             names: Optional[NameBounds] = None) -> Dict[str, Any]:
    """The overview page's numbers; `names` (NameBounds.from_config) bounds the per-route and per-provider tables."""
    now = time.time() if now is None else now
    since = now - WINDOWS[window]
    return {
        "now": now, "window": window,
        "summaries": [dict(window_summary(store, seconds, now), window=w, label=label)
                      for w, label, seconds in SUMMARY_WINDOWS],
        "routes": grouped(store, ("route",), since, names=names),
        "providers": grouped(store, ("provider",), since, names=names),
        "series": time_buckets(store, window, now),
    }


def spend(store: "Store", window: str, by: str, now: Optional[float] = None) -> Dict[str, Any]:
    now = time.time() if now is None else now
    since = now - WINDOWS[window]
    rows = grouped(store, SPEND_GROUPS[by], since, with_latency=False)
    total = _agg(store.execute(f"SELECT {_AGG} FROM {_SPEND} WHERE started_at >= {store.param}", (since,))[0])
    return {"window": window, "by": by, "columns": SPEND_GROUPS[by], "since": since, "until": now,
            "rows": rows, "total": total}


RECENT_COLUMNS = ("request_id", "started_at", "status", "outcome", "error_type", "route", "provider", "model",
                  "account_id", "streamed", "latency_ms", "ttft_ms", "input_tokens", "output_tokens",
                  "cost_micro_usd", "attempts")


def recent(store: "Store", limit: int = 50, status: str = "", route: str = "", account: str = "") -> List[Dict[str, Any]]:
    """The latest `limit` rows (never prompt text: the spend log holds none), filtered.

    `status`: "" (any), "ok" (outcome success), "error" (any other outcome) or an HTTP status code.
    """
    p = store.param
    where: List[str] = []
    params: List[Any] = []
    if status == "ok":
        where.append("outcome = 'success'")
    elif status == "error":
        where.append("outcome <> 'success'")
    elif status.isascii() and status.isdigit():
        where.append(f"status = {p}")
        params.append(int(status))
    if route:
        where.append(f"route = {p}")
        params.append(route)
    if account:
        where.append(f"account_id = {p}")
        params.append(account)
    limit = max(1, min(MAX_RECENT, int(limit)))
    cols = ("request_id, started_at, status, outcome, error_type, route, provider, model, account_id, streamed,"
            " latency_ms, ttft_ms, input_tokens + cache_read_tokens + cache_write_tokens,"
            " output_tokens + reasoning_tokens, cost_micro_usd, attempts")
    sql = (f"SELECT {cols} FROM {_SPEND}" + (" WHERE " + " AND ".join(where) if where else "")
           + f" ORDER BY started_at DESC LIMIT {limit}")
    return [{name: shown(v) for name, v in zip(RECENT_COLUMNS, row)} for row in store.execute(sql, tuple(params))]


def filter_choices(store: "Store", since: float) -> Dict[str, List[Any]]:
    """Distinct statuses and routes seen over the window, for the filter form's menus (bounded)."""
    p = store.param
    statuses = [int(r[0]) for r in store.execute(
        f"SELECT DISTINCT status FROM {_SPEND} WHERE started_at >= {p} ORDER BY status LIMIT 50", (since,))]
    routes = [shown(r[0]) for r in store.execute(
        f"SELECT DISTINCT route FROM {_SPEND} WHERE started_at >= {p} ORDER BY route LIMIT 200", (since,))]
    return {"statuses": statuses, "routes": routes}
