"""The observe plugin's options (`plugins: {observe: {...}}`), validated by marshmallow."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates


class ObserveOptionsSchema(Schema):
    # Base URL of an OTLP/HTTP receiver (a collector: http://collector:4318); traces go to
    # <endpoint>/v1/traces and metrics to <endpoint>/v1/metrics. None: no export.
    otlp_endpoint = fields.String(load_default=None, allow_none=True)
    otlp_headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    otlp_timeout_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.05, max=60))
    service_name = fields.String(load_default="routeplane", validate=validate.Length(min=1, max=200))
    traces = fields.Boolean(load_default=True)
    metrics = fields.Boolean(load_default=True)
    metrics_interval_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=3600))
    max_queue = fields.Integer(load_default=2048, validate=validate.Range(min=16, max=1_000_000))
    propagate = fields.Boolean(load_default=True)  # add `traceparent` to upstream requests
    prometheus = fields.Boolean(load_default=True)  # GET /metrics
    prometheus_public = fields.Boolean(load_default=False)  # False: /metrics needs admin credentials

    @validates("otlp_endpoint")
    def _endpoint(self, value: object, **_kw: object) -> None:
        if value is not None and not str(value).startswith(("http://", "https://")):
            raise ValidationError("must be an http:// or https:// URL (the OTLP/HTTP receiver's base URL)")
