"""One structured log line per request (text or JSON), written by an ordinary observer plugin."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict

from marshmallow import Schema, fields, validate

from .app import AppBuilder, Plugin, PluginId
from .hooks.language_model import ObserveHook

log = logging.getLogger("routeplane.requests")


def request_fields(event: Any) -> Dict[str, Any]:
    """What a request's log line says: never prompt text, never a credential."""
    u = event.usage
    return {
        "request_id": event.request_id,
        "wire": event.inbound_protocol,
        "route": event.route,
        "provider": event.provider,
        "model": event.model,
        "account": event.account_id,
        "stream": event.streamed,
        "status": event.status,
        "outcome": event.outcome,
        "error_type": event.error_type,
        "error_class": getattr(event, "error_class", None),
        "latency_ms": round(event.latency_ms, 1),
        "ttft_ms": None if event.ttft_ms is None else round(event.ttft_ms, 1),
        "input_tokens": u.input_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "output_tokens": u.output_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "usage_estimated": not u.reported,
        "cost_micro_usd": event.cost_micro_usd,
        "attempts": len(event.attempts),
    }


def _text_value(value: Any) -> str:
    # Client-chosen strings (model names) are quoted when they could forge a field or a line.
    if isinstance(value, str) and (not value or any(c in value for c in ' ="\\') or not value.isprintable()):
        return json.dumps(value)
    return str(value)


class RequestLogObserver(ObserveHook):
    def __init__(self, fmt: str = "text") -> None:
        self.fmt = fmt

    def on_request_end(self, event: Any) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        data = request_fields(event)
        if self.fmt == "json":
            log.info(json.dumps(data, separators=(",", ":")))
        else:
            log.info(" ".join(f"{k}={_text_value(v)}" for k, v in data.items() if v is not None))


class RequestLogOptions(Schema):
    format = fields.String(load_default="text", validate=validate.OneOf(["text", "json"]))


class RequestLogPlugin(Plugin):
    """Built in and on by default; `plugins: {request_log: {format: json}}` or `{enabled: false}`."""

    id = PluginId("request_log")
    options_schema = RequestLogOptions

    def __init__(self, format: str = "text") -> None:
        self.format = format

    def install(self, app: AppBuilder) -> None:
        app.language_model_builder().observe_hook(RequestLogObserver(self.format))
