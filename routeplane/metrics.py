"""Gateway metrics from the shared store: per-route/endpoint request stats and merged per-plugin stats."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .app import App
    from .store import Store

log = logging.getLogger("routeplane.metrics")

WINDOWS = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}
DEFAULT_WINDOW = "1h"
PERCENTILES = (("p50", 0.50), ("p99", 0.99))
STATS_TABLE = "routeplane_plugin_stats"
COUNTERS_TABLE = "routeplane_plugin_counters"
_SPEND = "spend_log"


# --- requests: per route, per endpoint --------------------------------------------------------------------------

def request_metrics(store: "Store", window: str = DEFAULT_WINDOW, now: Optional[float] = None,
                    names: Optional["NameBounds"] = None) -> Dict[str, Any]:
    """Per-route stats with a per-endpoint (provider:model) breakdown over the window, from the spend log.

    Every worker and every host writes its rows to the one spend log, so the
    numbers do not depend on which worker answers. `names` (the configured
    names, `NameBounds.from_config`) folds every other route, provider and
    model into `other`: clients choose route names, so the raw ones are not a
    bounded set (metrics_document always passes them).
    """
    seconds = WINDOWS[window]
    now = time.time() if now is None else now
    since = now - seconds
    source, params = (names or NameBounds()).source(store, since, ("route", "provider", "model"))
    keys, group = grouping(store, ("k0", "k1", "k2"))
    rows = store.execute(
        f"SELECT {keys}, COUNT(*),"
        " SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END),"
        " SUM(input_tokens + cache_read_tokens + cache_write_tokens),"
        " SUM(output_tokens + reasoning_tokens),"
        " SUM(CASE WHEN streamed THEN 1 ELSE 0 END),"
        f" MAX(started_at) FROM ({source}) s GROUP BY {group}", params)
    routes: Dict[str, Dict[str, Any]] = {}
    for route, provider, model, n, errors, tin, tout, streamed, last in rows:
        r = routes.setdefault(route, _empty(route))
        endpoint = f"{provider}:{model}" if provider is not None else None
        e = _stats(int(n), int(errors or 0), int(tin or 0), int(tout or 0), int(streamed or 0), float(last))
        e["endpoint"], e["provider"], e["model"] = endpoint, provider, model
        r["endpoints"].append(e)
        _add(r, e)
    per_route, per_endpoint = grouped_percentiles(store, source, params, (("k0",), ("k0", "k1", "k2")))
    for name, r in routes.items():
        _finish(r)
        r["latency_ms"] = per_route.get((name,), _no_latency())
        for e in r["endpoints"]:
            _finish(e)
            e["latency_ms"] = per_endpoint.get((name, e["provider"], e["model"]), _no_latency())
        r["endpoints"].sort(key=lambda e: (-e["requests"], e["endpoint"] or ""))
    return {
        "window": window, "window_seconds": int(seconds), "since": since, "until": now,
        "routes": sorted(routes.values(), key=lambda r: (-r["requests"], r["route"])),
        "totals": _totals(list(routes.values())),
    }


def _empty(route: str) -> Dict[str, Any]:
    out = _stats(0, 0, 0, 0, 0, None)
    out["route"], out["endpoints"] = route, []
    return out


def _stats(n: int, errors: int, tin: int, tout: int, streamed: int, last: Optional[float]) -> Dict[str, Any]:
    return {"requests": n, "errors": errors, "streamed": streamed, "input_tokens": tin, "output_tokens": tout,
            "last_used": last}


def _add(into: Dict[str, Any], e: Dict[str, Any]) -> None:
    for k in ("requests", "errors", "streamed", "input_tokens", "output_tokens"):
        into[k] += e[k]
    if e["last_used"] is not None and (into["last_used"] is None or e["last_used"] > into["last_used"]):
        into["last_used"] = e["last_used"]


def _finish(d: Dict[str, Any]) -> None:
    n = d["requests"]
    d["error_rate"] = round(d["errors"] / n, 6) if n else 0.0
    d["avg_input_tokens"] = round(d["input_tokens"] / n, 3) if n else 0.0
    d["avg_output_tokens"] = round(d["output_tokens"] / n, 3) if n else 0.0


def _no_latency() -> Dict[str, Optional[float]]:
    return {name: None for name, _q in PERCENTILES}


def _totals(routes: List[Dict[str, Any]]) -> Dict[str, Any]:
    t = _stats(0, 0, 0, 0, 0, None)
    for r in routes:
        _add(t, r)
    _finish(t)
    return t


def nearest_rank(n: int, q: float) -> int:
    """1-based nearest-rank index of quantile q among n sorted values: ceil(q * n), in integers (q to 1/10000), so
    the SQL of grouped_percentiles computes the very same rank."""
    a = round(q * _RANK_SCALE)
    return max(1, min(n, -(-n * a // _RANK_SCALE)))


_RANK_SCALE = 10000


def grouped_percentiles(store: "Store", source: str, params: Tuple[Any, ...],
                        levels: Sequence[Sequence[str]]) -> List[Dict[Tuple[Any, ...], Dict[str, Optional[float]]]]:
    """Nearest-rank latency percentiles (ms) of every group, one query per grouping in `levels`.

    `source` is a trusted SELECT (with `params`) yielding `latency_ms` and the
    columns named in `levels`. Window functions (SQLite >= 3.25, PostgreSQL,
    MySQL 8 / MariaDB 10.2) number each group's rows by latency; only the rows
    at a percentile's rank come back (`rn * 10000 >= n * q10000 > (rn - 1) *
    10000` is `rn = ceil(q * n)` in integers, on every dialect), so the cost
    is one sort of the window's rows, not a query per group and percentile,
    and no worker loads a window's latencies. One query per level: MariaDB
    10.11 numbers rows wrongly when one query has windows partitioned by a
    column and by that column and more. On MySQL the partitions are by the
    keys' bytes (`grouping`). One dict per level: group key (a tuple, NULL as
    None) -> {"p50": ms, "p99": ms}.
    """
    return [_level_percentiles(store, source, params, list(level)) for level in levels]


def _level_percentiles(store: "Store", source: str, params: Tuple[Any, ...],
                       level: List[str]) -> Dict[Tuple[Any, ...], Dict[str, Optional[float]]]:
    part = f"PARTITION BY {', '.join(exact(store, c) for c in level)}" if level else ""
    picks = " OR ".join(f"(rn * {_RANK_SCALE} >= n * {a} AND (rn - 1) * {_RANK_SCALE} < n * {a})"
                        for a in sorted({round(q * _RANK_SCALE) for _name, q in PERCENTILES}))
    keys = "".join(f"{c}, " for c in level)
    rows = store.execute(
        f"SELECT {keys}latency_ms, rn, n FROM (SELECT {keys}latency_ms,"
        f" ROW_NUMBER() OVER ({part} ORDER BY latency_ms) AS rn, COUNT(*) OVER ({part}) AS n"
        f" FROM ({source}) src) ranked WHERE {picks}", params)
    out: Dict[Tuple[Any, ...], Dict[str, Optional[float]]] = {}
    width = len(level)
    for row in rows:
        rn, n = int(row[width + 1]), int(row[width + 2])
        for name, q in PERCENTILES:
            if rn == nearest_rank(n, q):
                out.setdefault(tuple(row[:width]), _no_latency())[name] = _round(row[width])
    return out


# --- bounded group names -----------------------------------------------------------------------------------------

OTHER = "other"
_SOURCE_COLUMNS = ("route, provider, model, account_id, outcome, streamed, started_at, input_tokens,"
                   " cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_micro_usd, latency_ms")


def exact(store: "Store", column: str) -> str:
    """`column` compared as written: MySQL compares strings case- and trailing-space-insensitively (`Default ` would
    be the route `default`), so there it is compared as bytes."""
    return f"CAST({column} AS BINARY)" if store.dialect == "mysql" else column


def grouping(store: "Store", columns: Sequence[str]) -> Tuple[str, str]:
    """(select list, GROUP BY list) grouping by `columns` as written: on MySQL by their bytes (its collation would
    merge `Other` with `other`, or `a` with `a `), each group's text being the one value all its rows share."""
    if store.dialect != "mysql":
        return ", ".join(columns), ", ".join(columns)
    return ", ".join(f"MIN({c})" for c in columns), ", ".join(exact(store, c) for c in columns)


class NameBounds:
    """The route, provider and model names the admin views group by: the configured ones, everything else `other`.

    A client chooses the route name (any unknown model is a cheap 404 that
    still gets its own spend-log row; direct `provider:model` routing picks
    the model too), so grouping by the raw names would let any caller
    multiply the groups of the overview and /admin/metrics (the observe
    plugin bounds its Prometheus labels the same way). A dimension given as
    None is not bounded (account ids: issued by the gateway). NULL stays NULL.
    """

    def __init__(self, routes: Optional[Iterable[str]] = None, providers: Optional[Iterable[str]] = None,
                 models: Optional[Iterable[str]] = None) -> None:
        self.known: Dict[str, Optional[FrozenSet[str]]] = {
            "route": None if routes is None else frozenset(routes),
            "provider": None if providers is None else frozenset(providers),
            "model": None if models is None else frozenset(models)}

    @classmethod
    def from_config(cls, config: Any) -> "NameBounds":
        routes = list(config.routes)
        return cls((r.name for r in routes), config.providers, (t.model for r in routes for t in r.targets if t.model))

    def other(self, column: str) -> str:
        """The label of the folded names: `other`, unless the config itself uses that name."""
        label, known = OTHER, self.known.get(column) or frozenset()
        while label in known:
            label = f"({label})"
        return label

    def name(self, column: str, value: Optional[str]) -> Optional[str]:
        """`value`'s group name, folded in Python (for rows read whole: the breakers)."""
        known = self.known.get(column)
        return value if known is None or value is None or value in known else self.other(column)

    def label(self, store: "Store", column: str) -> Tuple[str, Tuple[Any, ...]]:
        """SQL for `column`'s group name, and its parameters."""
        known = self.known.get(column)
        if known is None:
            return column, ()
        p = store.param
        names = tuple(sorted(known))
        when = f" WHEN {exact(store, column)} IN ({', '.join([p] * len(names))}) THEN {column}" if names else ""
        return f"CASE WHEN {column} IS NULL THEN NULL{when} ELSE {p} END", names + (self.other(column),)

    def source(self, store: "Store", since: float, columns: Sequence[str]) -> Tuple[str, Tuple[Any, ...]]:
        """A SELECT of the window's rows with `columns`' group names as k0, k1, ... (and the raw columns)."""
        exprs: List[str] = []
        params: Tuple[Any, ...] = ()
        for i, column in enumerate(columns):
            sql, ps = self.label(store, column)
            exprs.append(f"{sql} AS k{i}")
            params += ps
        return (f"SELECT {''.join(e + ', ' for e in exprs)}{_SOURCE_COLUMNS} FROM {_SPEND}"
                f" WHERE started_at >= {store.param}", params + (since,))


def _round(v: Any) -> Optional[float]:
    return None if v is None else round(float(v), 3)


# --- plugin stats: flushed per worker, summed on read ------------------------------------------------------------

_STOPPED = -1  # StatsFlusher._pid once its worker stopped: it never starts again


class StatsFlusher:
    """Writes this worker's plugin stats (and plugins' own `stats()` counters) to the store.

    The request path only calls `ensure_running()` (a pid comparison): it
    starts, once per worker process, a daemon thread that writes the snapshot
    every `interval` seconds when it changed. So a slow or broken database
    never holds a request, and the stored numbers lag by at most one interval
    (plus the write). Counters are totals since the worker started; each
    process draws its own worker id after the fork.
    """

    def __init__(self, app: "App", interval: float) -> None:
        self.app = app
        self.interval = interval
        self.host = socket.gethostname()[:255]
        self.failures = 0
        self.flushes = 0
        self._lock = threading.Lock()
        self._pid = 0
        self._worker = ""
        self._last: Any = None
        self._flush_lock = threading.Lock()
        self._stopping = False
        from .breaker_view import BreakerPublisher, configured_labels, stale_after

        self.breakers = BreakerPublisher(app.pipeline.cooldown, configured_labels(app.config),
                                         expire_after=stale_after(interval))

    @property
    def worker(self) -> str:
        self.ensure_running()
        return self._worker

    def ensure_running(self) -> None:
        if self._pid == os.getpid() or self.app.store is None or self._pid == _STOPPED:
            return
        with self._lock:
            pid = os.getpid()
            if self._pid == pid:
                return
            self._worker, self._pid, self._last = uuid.uuid4().hex, pid, None
            # The thread holds the flusher weakly: an App dropped without shutdown() ends its loop.
            threading.Thread(target=_flush_loop, args=(weakref.ref(self), pid, self.interval),
                             name="routeplane-stats-flush", daemon=True).start()

    maybe_flush = ensure_running  # the name the request path uses

    def stop(self) -> None:
        """Write the final numbers and end the loop (worker shutdown)."""
        if self._pid == os.getpid():
            self._stopping = True  # its breakers go with it: no reader may count them as open any more
            store = self.app.store
            with self._flush_lock:
                if store is not None:
                    self._flush(self.worker, store, False)
                # Under the lock: a flush waiting for it (the loop woke, an admin page) finds the flusher
                # stopped, rather than drawing a new worker id that would store this worker's totals twice.
                self._pid = _STOPPED

    def flush_now(self, only_if_changed: bool = False) -> bool:
        """Write the snapshot now (the loop, the /admin/metrics view and shutdown call this); False if it failed
        or the flusher stopped."""
        store = self.app.store
        if store is None:
            return False
        with self._flush_lock:  # one writer per process: two replaces of the same rows would collide
            if self._pid == _STOPPED:
                return False
            return self._flush(self.worker, store, only_if_changed)

    def _flush(self, worker: str, store: "Store", only_if_changed: bool) -> bool:
        stats_ok = self._flush_stats(worker, store, only_if_changed)
        return self._publish_breakers(worker, store) and stats_ok

    def _publish_breakers(self, worker: str, store: "Store") -> bool:
        """This worker's open breakers (breaker_view.py): rewritten on every flush while any is open."""
        try:
            self.breakers.publish(store, worker, self.host, os.getpid(), final=self._stopping)
            return True
        except Exception as exc:  # like the stats: never a request's problem; counted and logged
            self.failures += 1
            log.warning("circuit breaker publish failed (%s): %s", type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
            return False

    def _flush_stats(self, worker: str, store: "Store", only_if_changed: bool) -> bool:
        snapshot = self.app.plugin_stats.snapshot()
        plugin_values = plugin_counters(self.app) + observer_counters(self.app)
        key = (tuple(tuple(sorted(s.items())) for s in snapshot), tuple(plugin_values))
        if only_if_changed and key == self._last:
            return True
        now = time.time()
        pid = os.getpid()
        stats = [(worker, self.host, pid, s["plugin"][:100], s["stage"][:32], s["hook"][:200], s["invocations"],
                  s["errors"], s["denies"], s["timeouts"], float(s["total_ms"]), now) for s in snapshot]
        counters = [(worker, self.host, pid, pid_[:100], name[:255], value, now) for pid_, name, value in plugin_values]
        try:
            with store.connection() as db:
                p = db.param
                with db.atomic():
                    # Replace this worker's rows: portable (no dialect-specific upsert) and idempotent.
                    for table, rows, width in ((STATS_TABLE, stats, 12), (COUNTERS_TABLE, counters, 7)):
                        db.execute_sql(f"DELETE FROM {table} WHERE worker = {p}", (worker,)).close()
                        cols = _STATS_COLS if table == STATS_TABLE else _COUNTER_COLS
                        for row in rows:
                            db.execute_sql(f"INSERT INTO {table} ({cols}) VALUES ({', '.join([p] * width)})",
                                           row).close()
            self.flushes += 1
            self._last = key
            return True
        except Exception as exc:  # never a request's problem; counted and logged once per failure
            self.failures += 1
            log.warning("plugin stats flush failed (%s): %s", type(exc).__name__, str(exc).splitlines()[0][:200]
                        if str(exc) else "")
            return False


def _flush_loop(ref: "weakref.ReferenceType[StatsFlusher]", pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        flusher = ref()
        if flusher is None or flusher._pid != pid:
            return
        try:
            flusher.flush_now(only_if_changed=True)
            _close_thread_connection(flusher.app.store)
        except Exception:  # pragma: no cover - flush_now swallows; the loop must survive anyway
            log.exception("plugin stats flush loop")
        del flusher


def _close_thread_connection(store: Any) -> None:
    """SQLite keeps each thread's connection open; this thread writes rarely, so it gives its own back."""
    db = store.database if store is not None else None
    if db is not None and not db.is_closed():
        db.close()


_STATS_COLS = "worker, host, pid, plugin, stage, hook, invocations, errors, denies, timeouts, total_ms, updated_at"
_COUNTER_COLS = "worker, host, pid, plugin, name, value, updated_at"


def plugin_counters(app: "App") -> List[Tuple[str, str, int]]:
    """(plugin id, dotted name, value) for every plugin with a `stats()` of nested dicts of ints."""
    out: List[Tuple[str, str, int]] = []
    for plugin in app.plugins:
        stats = getattr(plugin, "stats", None)
        if not callable(stats):
            continue
        try:
            data = stats()
        except Exception:
            log.exception("plugin %s: stats() failed", plugin.id)
            continue
        for name, value in _flatten(data, ""):
            out.append((str(plugin.id), name, value))
    return out


CORE_COUNTERS = "routeplane"  # the plugin id the gateway's own counters are stored under


def observer_counters(app: "App") -> List[Tuple[str, str, int]]:
    """This worker's observer dispatchers (delivered, errors, dropped per pipeline), stored beside the plugins'
    counters so /admin/metrics and /metrics sum them over every worker: a full queue drops events in one worker
    while the next scrape may be answered by another."""
    dispatchers = (("language_model", app.pipeline.observers),
                   ("mcp", getattr(getattr(app.mcp, "pipeline", None), "observers", None)),
                   ("acp", getattr(app.acp, "observers", None)))
    return [(CORE_COUNTERS, f"observers.{pipeline}.{name}", int(getattr(d, name)))
            for pipeline, d in dispatchers if d is not None and d.active for name in ("delivered", "errors", "dropped")]


def _flatten(data: Any, prefix: str) -> List[Tuple[str, int]]:
    if isinstance(data, dict):
        out: List[Tuple[str, int]] = []
        for k, v in data.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(data, (int, float)) and not isinstance(data, bool) and prefix:
        return [(prefix, int(data))]
    return []


def plugin_metrics(store: "Store") -> Dict[str, Any]:
    """Per-hook stats summed over every worker row, plus plugins' own counters (nested again)."""
    keys, group = grouping(store, ("plugin", "stage", "hook"))
    rows = store.execute(
        f"SELECT {keys}, SUM(invocations), SUM(errors), SUM(denies), SUM(timeouts), SUM(total_ms),"
        f" COUNT(*), MAX(updated_at) FROM {STATS_TABLE} GROUP BY {group}")
    hooks = []
    for plugin, stage, hook, n, errors, denies, timeouts, total, workers, updated in rows:
        n, total = int(n or 0), float(total or 0.0)
        hooks.append({"plugin": plugin, "stage": stage, "hook": hook, "invocations": n, "errors": int(errors or 0),
                      "denies": int(denies or 0), "timeouts": int(timeouts or 0), "total_ms": round(total, 3),
                      "average_ms": round(total / n, 4) if n else 0.0, "workers": int(workers),
                      "updated_at": float(updated)})
    hooks.sort(key=lambda h: (h["plugin"], h["stage"], h["hook"]))
    counters: Dict[str, Any] = {}
    keys, group = grouping(store, ("plugin", "name"))
    for plugin, name, value in store.execute(f"SELECT {keys}, SUM(value) FROM {COUNTERS_TABLE} GROUP BY {group}"):
        node = counters.setdefault(plugin, {})
        parts = name.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = int(value or 0)
    workers = store.execute(f"SELECT COUNT(DISTINCT worker), MIN(updated_at), MAX(updated_at) FROM {STATS_TABLE}")
    w = workers[0] if workers else (0, None, None)
    return {"hooks": hooks, "counters": counters,
            "workers": {"reported": int(w[0] or 0), "oldest_flush": w[1], "newest_flush": w[2]}}


def is_store_error(exc: BaseException) -> bool:
    """Whether `exc` means the store failed (down, refused, out of pooled connections), not the code reading it."""
    import peewee
    from playhouse.pool import MaxConnectionsExceeded

    from .store import StoreError

    return isinstance(exc, (peewee.PeeweeException, StoreError, MaxConnectionsExceeded))


def metrics_document(app: "App", window: str) -> Dict[str, Any]:
    """The JSON of GET /admin/metrics (docs/operations.md, "Metrics")."""
    store = app.store
    flusher = getattr(app, "stats_flusher", None)
    from .breaker_view import app_view

    if store is None:
        return {"window": window, "store": None, "requests": None,
                "plugins": {"hooks": app.plugin_stats.snapshot(), "counters": {}, "workers": None,
                            "source": "this worker only (no store configured)"},
                "breakers": app_view(app)}
    if flusher is not None:
        flusher.flush_now()  # this worker's numbers fresh; the others' lag by at most their flush interval
    requests = request_metrics(store, window, names=NameBounds.from_config(app.config))
    out: Dict[str, Any] = {"store": store.dialect, "requests": requests}
    out["answered_by"] = {"host": socket.gethostname(), "pid": os.getpid()}
    plugins = plugin_metrics(store)
    plugins["source"] = "store"
    plugins["flush_interval_seconds"] = flusher.interval if flusher is not None else None
    out["plugins"] = plugins
    out["breakers"] = app_view(app, flush=False)  # flushed above
    out["observers"] = {"delivered": app.pipeline.observers.delivered, "errors": app.pipeline.observers.errors,
                        "dropped": app.pipeline.observers.dropped, "scope": "this worker"}
    return out
