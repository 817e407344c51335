"""The ObservePlugin: traceparent route hook, OpenTelemetry observer, Prometheus blueprint."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from routeplane.app import AppBuilder, Plugin, PluginId

from .labels import Labels
from .options import ObserveOptionsSchema
from .tracecontext import META, TraceparentRouteHook


class ObservePlugin(Plugin):
    """`plugins: {observe: {otlp_endpoint: http://collector:4318}}`; see docs/observability.md."""

    id = PluginId(META)
    options_schema = ObserveOptionsSchema

    def __init__(self, **options: Any) -> None:
        self.options: Dict[str, Any] = ObserveOptionsSchema().load(options)
        self.telemetry: Optional[Any] = None
        self.labels = Labels()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ObservePlugin":
        return cls(**dict(options))

    def install(self, app: AppBuilder) -> None:
        o = self.options
        self.labels = Labels.from_config(app.current_config)
        lm = app.language_model_builder()
        if o["propagate"]:
            lm.route_hook(TraceparentRouteHook())
        if o["otlp_endpoint"] and (o["traces"] or o["metrics"]):
            from .otel import Telemetry, TelemetryObserver

            self.telemetry = Telemetry(o, self.labels)
            lm.observe_hook(TelemetryObserver(self.telemetry))
            app.on_shutdown(self.telemetry.shutdown)
        if o["prometheus"]:
            from .prometheus import make_blueprint

            labels, public = self.labels, o["prometheus_public"]
            app.blueprint(lambda a: make_blueprint(a, labels, public))

    def stats(self) -> Dict[str, int]:
        """This worker's exporter counters (merged across workers in GET /admin/metrics)."""
        return self.telemetry.stats.snapshot() if self.telemetry is not None else {}

    def flush(self, timeout_seconds: float = 5.0) -> None:
        """Export what is queued now (tests; shutdown does it too)."""
        if self.telemetry is not None:
            self.telemetry.flush(timeout_seconds)
