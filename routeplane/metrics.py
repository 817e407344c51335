"""Gateway metrics from the shared store: per-route/endpoint request stats and merged per-plugin stats."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

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

def request_metrics(store: "Store", window: str = DEFAULT_WINDOW, now: Optional[float] = None) -> Dict[str, Any]:
    """Per-route stats with a per-endpoint (provider:model) breakdown over the window, from the spend log.

    Every worker and every host writes its rows to the one spend log, so the
    numbers do not depend on which worker answers.
    """
    seconds = WINDOWS[window]
    now = time.time() if now is None else now
    since = now - seconds
    p = store.param
    rows = store.execute(
        "SELECT route, provider, model, COUNT(*),"
        " SUM(CASE WHEN outcome = 'success' THEN 0 ELSE 1 END),"
        " SUM(input_tokens + cache_read_tokens + cache_write_tokens),"
        " SUM(output_tokens + reasoning_tokens),"
        " SUM(CASE WHEN streamed THEN 1 ELSE 0 END),"
        " MAX(started_at)"
        f" FROM {_SPEND} WHERE started_at >= {p} GROUP BY route, provider, model",
        (since,),
    )
    routes: Dict[str, Dict[str, Any]] = {}
    for route, provider, model, n, errors, tin, tout, streamed, last in rows:
        r = routes.setdefault(route, _empty(route))
        endpoint = f"{provider}:{model}" if provider is not None else None
        e = _stats(int(n), int(errors or 0), int(tin or 0), int(tout or 0), int(streamed or 0), float(last))
        e["endpoint"], e["provider"], e["model"] = endpoint, provider, model
        r["endpoints"].append(e)
        _add(r, e)
    pct = _percentiles(store, since)
    for name, r in routes.items():
        _finish(r)
        r.update(pct.get((name,), _no_latency()))
        for e in r["endpoints"]:
            _finish(e)
            e.update(pct.get((name, e["provider"] or "", e["model"] or ""), _no_latency()))
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


def _no_latency() -> Dict[str, Any]:
    return {"latency_ms": {name: None for name, _q in PERCENTILES}}


def _totals(routes: List[Dict[str, Any]]) -> Dict[str, Any]:
    t = _stats(0, 0, 0, 0, 0, None)
    for r in routes:
        _add(t, r)
    _finish(t)
    return t


def nearest_rank(n: int, q: float) -> int:
    """1-based nearest-rank index of quantile q among n sorted values."""
    return max(1, min(n, math.ceil(q * n)))


def _percentiles(store: "Store", since: float) -> Dict[Tuple[str, ...], Dict[str, Any]]:
    """Latency p50/p99 per route (key `(route,)`) and per endpoint (`(route, provider, model)`), nearest-rank.

    PostgreSQL computes them in one grouped query (percentile_disc is
    nearest-rank); elsewhere each is one indexed `ORDER BY ... LIMIT 1 OFFSET
    k-1` query, so no worker ever loads a window's latencies into memory.
    """
    p = store.param
    out: Dict[Tuple[str, ...], Dict[str, Any]] = {}
    if store.dialect == "postgresql":
        cols = ", ".join(f"percentile_disc({q}) WITHIN GROUP (ORDER BY latency_ms)" for _n, q in PERCENTILES)
        for group, key_len in (("route", 1), ("route, COALESCE(provider, ''), COALESCE(model, '')", 3)):
            for row in store.execute(f"SELECT {group}, {cols} FROM {_SPEND} WHERE started_at >= {p} GROUP BY {group}",
                                     (since,)):
                out[tuple(row[:key_len])] = {"latency_ms": {
                    name: _round(v) for (name, _q), v in zip(PERCENTILES, row[key_len:])}}
        return out
    groups = store.execute(
        f"SELECT route, COALESCE(provider, ''), COALESCE(model, ''), COUNT(*) FROM {_SPEND}"
        f" WHERE started_at >= {p} GROUP BY route, COALESCE(provider, ''), COALESCE(model, '')", (since,))
    per_route: Dict[str, int] = {}
    for route, provider, model, n in groups:
        per_route[route] = per_route.get(route, 0) + int(n)
        where = f"route = {p} AND COALESCE(provider, '') = {p} AND COALESCE(model, '') = {p}"
        out[(route, provider, model)] = _ranked(store, since, where, (route, provider, model), int(n))
    for route, n in per_route.items():
        out[(route,)] = _ranked(store, since, f"route = {p}", (route,), n)
    return out


def _ranked(store: "Store", since: float, where: str, params: Tuple[Any, ...], n: int) -> Dict[str, Any]:
    p = store.param
    values: Dict[str, Any] = {}
    for name, q in PERCENTILES:
        rows = store.execute(
            f"SELECT latency_ms FROM {_SPEND} WHERE started_at >= {p} AND {where}"
            f" ORDER BY latency_ms LIMIT 1 OFFSET {nearest_rank(n, q) - 1}", (since,) + params)
        values[name] = _round(rows[0][0]) if rows else None
    return {"latency_ms": values}


def _round(v: Any) -> Optional[float]:
    return None if v is None else round(float(v), 3)


# --- plugin stats: flushed per worker, summed on read ------------------------------------------------------------

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

    @property
    def worker(self) -> str:
        self.ensure_running()
        return self._worker

    def ensure_running(self) -> None:
        if self._pid == os.getpid() or self.app.store is None:
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
            self.flush_now()
            self._pid = -1

    def flush_now(self, only_if_changed: bool = False) -> bool:
        """Write the snapshot now (the loop, the /admin/metrics view and shutdown call this); False if it failed."""
        store = self.app.store
        if store is None:
            return False
        with self._flush_lock:  # one writer per process: two replaces of the same rows would collide
            return self._flush(self.worker, store, only_if_changed)

    def _flush(self, worker: str, store: "Store", only_if_changed: bool) -> bool:
        snapshot = self.app.plugin_stats.snapshot()
        plugin_values = plugin_counters(self.app)
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
    rows = store.execute(
        "SELECT plugin, stage, hook, SUM(invocations), SUM(errors), SUM(denies), SUM(timeouts), SUM(total_ms),"
        f" COUNT(*), MAX(updated_at) FROM {STATS_TABLE} GROUP BY plugin, stage, hook")
    hooks = []
    for plugin, stage, hook, n, errors, denies, timeouts, total, workers, updated in rows:
        n, total = int(n or 0), float(total or 0.0)
        hooks.append({"plugin": plugin, "stage": stage, "hook": hook, "invocations": n, "errors": int(errors or 0),
                      "denies": int(denies or 0), "timeouts": int(timeouts or 0), "total_ms": round(total, 3),
                      "average_ms": round(total / n, 4) if n else 0.0, "workers": int(workers),
                      "updated_at": float(updated)})
    hooks.sort(key=lambda h: (h["plugin"], h["stage"], h["hook"]))
    counters: Dict[str, Any] = {}
    for plugin, name, value in store.execute(
            f"SELECT plugin, name, SUM(value) FROM {COUNTERS_TABLE} GROUP BY plugin, name"):
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


def metrics_document(app: "App", window: str) -> Dict[str, Any]:
    """The JSON of GET /admin/metrics (docs/operations.md, "Metrics")."""
    store = app.store
    flusher = getattr(app, "stats_flusher", None)
    if store is None:
        return {"window": window, "store": None, "requests": None,
                "plugins": {"hooks": app.plugin_stats.snapshot(), "counters": {}, "workers": None,
                            "source": "this worker only (no store configured)"}}
    if flusher is not None:
        flusher.flush_now()  # this worker's numbers fresh; the others' lag by at most their flush interval
    out: Dict[str, Any] = {"store": store.dialect, "requests": request_metrics(store, window)}
    out["answered_by"] = {"host": socket.gethostname(), "pid": os.getpid()}
    plugins = plugin_metrics(store)
    plugins["source"] = "store"
    plugins["flush_interval_seconds"] = flusher.interval if flusher is not None else None
    out["plugins"] = plugins
    out["observers"] = {"delivered": app.pipeline.observers.delivered, "errors": app.pipeline.observers.errors,
                        "dropped": app.pipeline.observers.dropped, "scope": "this worker"}
    return out
