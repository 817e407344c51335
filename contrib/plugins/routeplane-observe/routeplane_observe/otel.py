"""OpenTelemetry export: spans and metrics built from frozen RequestEndEvents, shipped over OTLP/HTTP (protobuf)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from routeplane.hooks.language_model import ObserveHook
from routeplane.logs import redact

from .labels import Labels
from .tracecontext import META, new_span_id, new_trace_id

log = logging.getLogger("routeplane.observe")

SCOPE = InstrumentationScope("routeplane_observe", "0.1.0")
_NS = 1_000_000_000


class ExportStats:
    """Exporter outcomes of this worker (reported through the plugin's `stats()`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = {"spans_exported": 0, "spans_failed": 0, "metric_exports": 0,
                                       "metric_exports_failed": 0, "events": 0, "event_errors": 0}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)


class _CountingSpanExporter(OTLPSpanExporter):
    """An OTLP/HTTP span exporter whose failures (and exceptions) are counted, never raised."""

    def __init__(self, stats: ExportStats, **kw: Any) -> None:
        super().__init__(**kw)
        self._stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = super().export(spans)
        except Exception as exc:
            log.warning("OTLP span export failed: %s", type(exc).__name__)
            result = SpanExportResult.FAILURE
        self._stats.add("spans_exported" if result is SpanExportResult.SUCCESS else "spans_failed", len(spans))
        return result


class _CountingMetricExporter(OTLPMetricExporter):
    def __init__(self, stats: ExportStats, **kw: Any) -> None:
        super().__init__(**kw)
        self._stats = stats

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> MetricExportResult:
        try:
            result = super().export(metrics_data, timeout_millis=timeout_millis, **kw)
        except Exception as exc:
            log.warning("OTLP metric export failed: %s", type(exc).__name__)
            result = MetricExportResult.FAILURE
        self._stats.add("metric_exports" if result is MetricExportResult.SUCCESS else "metric_exports_failed")
        return result


class Telemetry:
    """The OpenTelemetry pipeline of one worker process, built on first use after the fork.

    Spans go to a BatchSpanProcessor (bounded queue: spans past `max_queue`
    are dropped), metrics to a PeriodicExportingMetricReader; both export on
    their own threads with a timeout, so a slow or dead collector costs
    requests nothing.
    """

    def __init__(self, options: Mapping[str, Any], labels: Labels) -> None:
        self.options = options
        self.labels = labels
        self.stats = ExportStats()
        self.resource = Resource.create({"service.name": options["service_name"]})
        self._lock = threading.Lock()
        self._pid = 0
        self._spans: Optional[BatchSpanProcessor] = None
        self._meters: Optional[MeterProvider] = None
        self._instruments: Dict[str, Any] = {}

    # --- lifecycle --------------------------------------------------------------------------------------------------

    def _ensure(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            base = self.options["otlp_endpoint"].rstrip("/")
            common = {"headers": dict(self.options["otlp_headers"]), "timeout": self.options["otlp_timeout_seconds"]}
            timeout_ms = self.options["otlp_timeout_seconds"] * 1000
            self._spans = self._meters = None
            # One series per worker process: cumulative counters from several workers with the same
            # resource would collide in the backend, which sums instances instead.
            self.resource = Resource.create({"service.name": self.options["service_name"],
                                             "service.instance.id": uuid.uuid4().hex,
                                             "host.name": socket.gethostname(), "process.pid": pid})
            if self.options["traces"]:
                self._spans = BatchSpanProcessor(
                    _CountingSpanExporter(self.stats, endpoint=base + "/v1/traces", **common),
                    max_queue_size=self.options["max_queue"], schedule_delay_millis=500,
                    max_export_batch_size=min(512, self.options["max_queue"]), export_timeout_millis=timeout_ms)
            if self.options["metrics"]:
                reader = PeriodicExportingMetricReader(
                    _CountingMetricExporter(self.stats, endpoint=base + "/v1/metrics", **common),
                    export_interval_millis=self.options["metrics_interval_seconds"] * 1000,
                    export_timeout_millis=timeout_ms)
                self._meters = MeterProvider(resource=self.resource, metric_readers=[reader], shutdown_on_exit=False)
                meter = self._meters.get_meter(SCOPE.name, SCOPE.version)
                self._instruments = {
                    "requests": meter.create_counter("routeplane.requests", "{request}", "Requests served"),
                    "duration": meter.create_histogram("gen_ai.client.operation.duration", "s",
                                                       "Request duration at the gateway"),
                    "tokens": meter.create_histogram("gen_ai.client.token.usage", "{token}", "Tokens per request"),
                    "cost": meter.create_counter("routeplane.cost", "USD", "Cost of served requests"),
                }
            self._pid = pid

    def flush(self, timeout_seconds: float = 5.0) -> None:
        if self._pid != os.getpid():
            return
        if self._spans is not None:
            self._spans.force_flush(int(timeout_seconds * 1000))
        if self._meters is not None:
            self._meters.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        if self._pid != os.getpid():
            return
        try:
            if self._spans is not None:
                self._spans.shutdown()
            if self._meters is not None:
                self._meters.shutdown(timeout_millis=self.options["otlp_timeout_seconds"] * 1000)
        except Exception:
            log.exception("observe: telemetry shutdown failed")

    # --- recording --------------------------------------------------------------------------------------------------

    def record(self, event: Any) -> None:
        self._ensure()
        self.stats.add("events")
        if self._spans is not None:
            spans = request_spans(event, self.resource, self.labels)
            for span in spans:
                self._spans.on_end(span)
        if self._meters is not None:
            self._record_metrics(event)

    def _record_metrics(self, event: Any) -> None:
        lab = self.labels
        attrs: Dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": lab.provider(event.provider),
            "gen_ai.request.model": lab.route(event.route),
            "gen_ai.response.model": lab.model(event.model),
            "routeplane.outcome": lab.outcome(event.outcome),
        }
        if not event.success:
            attrs["error.type"] = getattr(event, "error_class", None) or "other"
        ins = self._instruments
        ins["requests"].add(1, attrs)
        ins["duration"].record(event.latency_ms / 1000.0, attrs)
        u = event.usage
        ins["tokens"].record(u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                             {**attrs, "gen_ai.token.type": "input"})
        ins["tokens"].record(u.output_tokens + u.reasoning_tokens, {**attrs, "gen_ai.token.type": "output"})
        if event.cost_micro_usd:
            ins["cost"].add(event.cost_micro_usd / 1_000_000, attrs)


def request_spans(event: Any, resource: Resource, labels: Labels) -> List[ReadableSpan]:
    """A SERVER span for the request and a CLIENT span (its child) per upstream attempt, after the fact.

    Ids come from the request's metadata when the traceparent route hook ran
    (so upstreams saw the same trace), else are drawn here. An unsampled
    inbound parent means no spans. Client-chosen strings (route, model,
    request id) are redacted: a client that swapped its settings sends its key
    as the model name. Span names use the bounded labels (`labels`), since
    tracing backends group and index by span name.
    """
    meta = dict((getattr(event, "metadata", None) or {}).get(META) or {})
    if meta and not meta.get("sampled", True):
        return []
    trace_id = meta.get("trace_id") or new_trace_id()
    server_id = meta.get("span_id") or new_span_id()
    attempt_ids: Dict[str, str] = dict(meta.get("attempt_spans") or {})
    flags = TraceFlags(TraceFlags.SAMPLED)
    tid = int(trace_id, 16)
    server_ctx = SpanContext(tid, int(server_id, 16), is_remote=False, trace_flags=flags)
    parent = meta.get("parent_span_id")
    parent_ctx = SpanContext(tid, int(parent, 16), is_remote=True, trace_flags=flags) if parent else None
    start = int(event.started_at * _NS)
    end = start + int(event.latency_ms * 1_000_000)
    u = event.usage
    attrs: Dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": redact(event.route or ""),
        "gen_ai.usage.input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
        "gen_ai.usage.output_tokens": u.output_tokens + u.reasoning_tokens,
        "http.response.status_code": event.status,
        "routeplane.request_id": redact(event.request_id),
        "routeplane.wire": event.inbound_protocol,
        "routeplane.streamed": event.streamed,
        "routeplane.outcome": event.outcome,
        "routeplane.attempts": len(event.attempts),
        "routeplane.usage.cache_read_tokens": u.cache_read_tokens,
        "routeplane.usage.cache_write_tokens": u.cache_write_tokens,
        "routeplane.usage.reasoning_tokens": u.reasoning_tokens,
        "routeplane.usage.estimated": not u.reported,
    }
    if event.provider:
        attrs["gen_ai.provider.name"] = event.provider
        attrs["gen_ai.system"] = event.provider  # the older name of the same attribute
    if event.model:
        attrs["gen_ai.response.model"] = redact(event.model)
    if event.account_id:
        attrs["routeplane.account_id"] = event.account_id
    if event.ttft_ms is not None:
        attrs["routeplane.ttft_ms"] = float(event.ttft_ms)
    if event.cost_micro_usd is not None:
        attrs["routeplane.cost_usd"] = event.cost_micro_usd / 1_000_000
    status = Status(StatusCode.OK)
    if not event.success:
        attrs["error.type"] = event.error_type or "other"
        if getattr(event, "error_class", None):
            attrs["routeplane.error_class"] = event.error_class
        status = Status(StatusCode.ERROR, event.outcome)
    spans = [ReadableSpan(f"chat {labels.route(event.route)}", context=server_ctx, parent=parent_ctx, resource=resource,
                          attributes=attrs, kind=SpanKind.SERVER, status=status, start_time=start, end_time=end,
                          instrumentation_scope=SCOPE)]
    used: set = set()
    last = len(event.attempts) - 1
    for i, a in enumerate(event.attempts):
        label = f"{a.provider}:{a.model}"
        span_id = attempt_ids.get(label) if label not in used else None
        used.add(label)
        a_start = start + int((a.offset_ms or 0.0) * 1_000_000)
        a_end = a_start + int(a.latency_ms * 1_000_000)
        if i == last and a.ok and event.streamed:
            a_end = max(a_end, end)  # the attempt's latency stops at the first part; the stream ran to the end
        a_attrs: Dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": a.provider, "gen_ai.system": a.provider,
            "gen_ai.request.model": redact(a.model), "routeplane.attempt": i, "routeplane.wire": a.protocol,
        }
        if a.status is not None:
            a_attrs["http.response.status_code"] = a.status
        a_status = Status(StatusCode.OK)
        if not a.ok:
            a_attrs["error.type"] = a.error_type or "other"
            a_status = Status(StatusCode.ERROR, a.error_type or "failed")
        ctx = SpanContext(tid, int(span_id or new_span_id(), 16), is_remote=False, trace_flags=flags)
        spans.append(ReadableSpan(f"chat {labels.model(a.model)}", context=ctx, parent=server_ctx, resource=resource,
                                  attributes=a_attrs, kind=SpanKind.CLIENT, status=a_status, start_time=a_start,
                                  end_time=a_end, instrumentation_scope=SCOPE))
    return spans


class TelemetryObserver(ObserveHook):
    """Hands each finished request to the Telemetry (on the observer pool, never the request thread)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def on_request_end(self, event: Any) -> None:
        try:
            self.telemetry.record(event)
        except Exception:
            self.telemetry.stats.add("event_errors")
            raise
