"""routeplane-observe: OpenTelemetry traces and metrics over OTLP/HTTP, traceparent propagation, Prometheus text."""

from __future__ import annotations

from .plugin import ObservePlugin

__version__ = "0.1.0"

__all__ = ["ObservePlugin", "__version__"]
