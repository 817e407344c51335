"""Prometheus text at GET /metrics, rendered from the shared store so every worker and host answers the same."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from flask import Blueprint, Response

from routeplane.metrics import grouping

from .labels import Labels

if TYPE_CHECKING:  # pragma: no cover
    from routeplane.app import App

log = logging.getLogger("routeplane.observe.prometheus")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request duration buckets, seconds (LLM calls: tens of ms to minutes).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) and not float(v).is_integer() else str(int(v))


def render(app: "App", labels: Labels) -> str:
    """Counters since the spend log began (Prometheus handles the drop if old rows are pruned)."""
    store = app.store
    assert store is not None
    out: List[str] = []
    Key = Tuple[str, str, str]
    requests: Dict[Tuple[str, str, str, str], int] = {}
    tokens: Dict[Tuple[str, str, str, str], int] = {}
    # Integer micro-USD, divided once: a float sum would depend on the order the database groups rows in,
    # and a scrape reading 1 ulp less than the one before is a counter reset to Prometheus.
    micro_usd: Dict[Key, int] = {}
    source, params = _folded(store, labels, ("route", "provider", "model"))
    keys, group = grouping(store, ("route", "provider", "model", "outcome"))
    for route, provider, model, outcome, n, tin, tout, micro in store.execute(
            f"SELECT {keys}, COUNT(*),"
            " SUM(input_tokens + cache_read_tokens + cache_write_tokens), SUM(output_tokens + reasoning_tokens),"
            f" SUM(cost_micro_usd) FROM ({source}) s GROUP BY {group}", params):
        key = (labels.route(route), labels.provider(provider), labels.model(model))
        okey = key + (labels.outcome(outcome),)
        requests[okey] = requests.get(okey, 0) + int(n)
        tokens[key + ("input",)] = tokens.get(key + ("input",), 0) + int(tin or 0)
        tokens[key + ("output",)] = tokens.get(key + ("output",), 0) + int(tout or 0)
        micro_usd[key] = micro_usd.get(key, 0) + int(micro or 0)
    out += ["# HELP routeplane_requests_total Requests served, all workers and hosts (from the spend log).",
            "# TYPE routeplane_requests_total counter"]
    for (r, p, m, o), n in sorted(requests.items()):
        out.append(f"routeplane_requests_total{_labels(route=r, provider=p, model=m, outcome=o)} {n}")
    out += ["# HELP routeplane_tokens_total Tokens (input: every input bucket; output: visible + reasoning).",
            "# TYPE routeplane_tokens_total counter"]
    for (r, p, m, t), n in sorted(tokens.items()):
        out.append(f"routeplane_tokens_total{_labels(route=r, provider=p, model=m, type=t)} {n}")
    out += ["# HELP routeplane_cost_usd_total Cost of served requests with a known price, USD.",
            "# TYPE routeplane_cost_usd_total counter"]
    for (r, p, m), micro in sorted(micro_usd.items()):
        out.append(f"routeplane_cost_usd_total{_labels(route=r, provider=p, model=m)} {micro / 1_000_000!r}")
    out += _duration(store, labels)
    out += _plugins(store)
    out += _breakers(app)
    return "\n".join(out) + "\n"


def _folded(store: Any, labels: Labels, columns: Tuple[str, ...]) -> Tuple[str, Tuple[Any, ...]]:
    """A SELECT of the spend log with `columns` as their bounded names, folded by the database.

    Clients choose route and model names: grouping by the raw ones would hand
    every scrape a row per name ever sent (a million 404s, a million rows),
    though the labels fold them into `other` afterwards anyway.
    """
    from routeplane.metrics import NameBounds

    bounds = NameBounds(labels.routes, labels.providers, labels.models)
    exprs: List[str] = []
    params: Tuple[Any, ...] = ()
    for column in columns:
        sql, ps = bounds.label(store, column)
        exprs.append(f"{sql} AS {column}")
        params += ps
    return f"SELECT {', '.join(exprs)}, {_ROW_COLUMNS} FROM spend_log", params


_ROW_COLUMNS = ("outcome, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,"
                " cost_micro_usd, latency_ms")


def _duration(store: Any, labels: Labels) -> List[str]:
    cases = ", ".join(f"SUM(CASE WHEN latency_ms <= {b * 1000.0!r} THEN 1 ELSE 0 END)" for b in BUCKETS)
    hist: Dict[str, List[int]] = {}
    latency_ms: Dict[str, List[float]] = {}  # per label, the groups' sums: fsum'd, so the row order cannot matter
    source, params = _folded(store, labels, ("route",))
    keys, group = grouping(store, ("route",))
    for row in store.execute(f"SELECT {keys}, {cases}, COUNT(*), SUM(latency_ms) FROM ({source}) s GROUP BY {group}",
                             params):
        route = labels.route(row[0])
        acc = hist.setdefault(route, [0] * (len(BUCKETS) + 1))
        for i, v in enumerate(row[1:len(BUCKETS) + 2]):
            acc[i] += int(v or 0)
        latency_ms.setdefault(route, []).append(float(row[-1] or 0))
    out = ["# HELP routeplane_request_duration_seconds Request latency at the gateway (whole stream for streams).",
           "# TYPE routeplane_request_duration_seconds histogram"]
    for route, acc in sorted(hist.items()):
        for b, n in zip(BUCKETS, acc):
            out.append(f"routeplane_request_duration_seconds_bucket{_labels(route=route, le=repr(b))} {int(n)}")
        count, total_ms = acc[len(BUCKETS)], math.fsum(latency_ms[route])
        out.append(f"routeplane_request_duration_seconds_bucket{_labels(route=route, le='+Inf')} {int(count)}")
        out.append(f"routeplane_request_duration_seconds_sum{_labels(route=route)} {total_ms / 1000.0!r}")
        out.append(f"routeplane_request_duration_seconds_count{_labels(route=route)} {int(count)}")
    return out


def _plugins(store: Any) -> List[str]:
    from routeplane.metrics import plugin_metrics

    try:
        merged = plugin_metrics(store)
    except Exception:  # the plugin stats table comes with core migration 0002; absent on an old schema
        return []
    hooks = merged["hooks"]
    out = _observers(merged["counters"])
    for name, field, help_ in (("invocations", "invocations", "Hook calls"), ("errors", "errors", "Hook errors"),
                               ("denies", "denies", "Hook denies/blocks"), ("timeouts", "timeouts", "Hook timeouts")):
        metric = f"routeplane_plugin_hook_{name}_total"
        out += [f"# HELP {metric} {help_}, summed over workers (lags by their flush interval).",
                f"# TYPE {metric} counter"]
        for h in hooks:
            out.append(f"{metric}{_labels(plugin=h['plugin'], stage=h['stage'], hook=h['hook'])} {h[field]}")
    out += ["# HELP routeplane_plugin_hook_seconds_total Time spent in hooks, summed over workers.",
            "# TYPE routeplane_plugin_hook_seconds_total counter"]
    for h in hooks:
        out.append(f"routeplane_plugin_hook_seconds_total{_labels(plugin=h['plugin'], stage=h['stage'], hook=h['hook'])}"
                   f" {h['total_ms'] / 1000.0!r}")
    return out


def _observers(counters: Dict[str, Any]) -> List[str]:
    """The observer dispatchers' counters, summed over workers (routeplane.metrics.observer_counters)."""
    from routeplane.metrics import CORE_COUNTERS

    per_pipeline = (counters.get(CORE_COUNTERS) or {}).get("observers") or {}
    out: List[str] = []
    for metric, name, help_ in (
            ("routeplane_observer_events_delivered_total", "delivered", "Events handed to the observers"),
            ("routeplane_observer_errors_total", "errors", "Observer calls that raised"),
            ("routeplane_observer_events_dropped_total", "dropped", "Events dropped on a full observer queue")):
        out += [f"# HELP {metric} {help_}, summed over workers (lags by their flush interval).",
                f"# TYPE {metric} counter"]
        for pipeline, values in sorted(per_pipeline.items()):
            out.append(f"{metric}{_labels(pipeline=pipeline)} {int(values.get(name, 0))}")
    return out


def _breakers(app: "App") -> List[str]:
    """Gauges of the workers' circuit breakers (routeplane/breaker_view.py): a sample per target and scope
    with any breaker not closed, and 0 for every configured target's own breaker (alerts need the series)."""
    from routeplane.breaker_view import app_view

    try:
        targets = app_view(app, flush=False)["targets"]  # the view flushed this worker's already
    except Exception:  # the table comes with core migration 0003; absent on an old schema
        return []
    counts: Dict[Tuple[str, str], Tuple[int, int]] = {
        (t.label, "target"): (0, 0) for r in app.config.routes for t in r.targets}
    for b in targets:
        counts[(b["target"], b["scope"])] = (b["open"], b["half_open"])
    out: List[str] = []
    for i, (name, help_) in enumerate((
            ("open", "breakers open (the target is skipped)"),
            ("half_open", "breakers half-open (the next request probes the target)"))):
        metric = f"routeplane_breaker_{name}"
        out += [f"# HELP {metric} Circuit {help_}, over the workers that reported recently; scope target: one "
                "per worker, credential/endpoint: a route hook's tenant keys or base URLs, counted.",
                f"# TYPE {metric} gauge"]
        for (target, scope), n in sorted(counts.items()):
            out.append(f"{metric}{_labels(target=target, scope=scope)} {n[i]}")
    return out


def make_blueprint(app: "App", labels: Labels, public: bool) -> Blueprint:
    from routeplane.auth.guard import require_admin

    bp = Blueprint("routeplane_observe_prometheus", __name__)

    def metrics() -> Response:
        if app.store is None:
            return Response("# /metrics needs the store (database.url): it renders from the shared spend log\n",
                            status=503, content_type=CONTENT_TYPE)
        from routeplane.metrics import is_store_error

        try:
            if app.stats_flusher is not None:
                app.stats_flusher.flush_now()
            return Response(render(app, labels), content_type=CONTENT_TYPE)
        except Exception as exc:
            if not is_store_error(exc):
                raise
            log.warning("/metrics: the store is unavailable (%s)", type(exc).__name__)
            return Response("# /metrics: the store is unavailable; try again\n", status=503,
                            content_type=CONTENT_TYPE)

    view = metrics if public else require_admin(app)(metrics)
    bp.add_url_rule("/metrics", "metrics", view, methods=["GET"])
    return bp
