"""One structured log line per request (text or JSON), written by an ordinary observer plugin."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional

from marshmallow import Schema, fields, validate

from .app import AppBuilder, Plugin, PluginId
from .hooks.language_model import ObserveHook
from .logs import redact

log = logging.getLogger("routeplane.requests")

# An attempt that got no HTTP answer to show, by its error class (an Attempt keeps the class name).
_NO_ANSWER = {
    "UpstreamTimeout": "timeout",
    "UpstreamConnectionError": "connect",
    "InvalidUpstreamResponse": "bad_response",
    "UnsafeUpstreamURL": "unsafe_url",
}


def attempt_fields(attempt: Any) -> Dict[str, Any]:
    """One upstream attempt as the log shows it: `status` is the upstream's HTTP status (None when it gave
    none to show), `failure` what went wrong (None if it answered). Never the upstream's error message:
    it may quote the prompt or echo a credential."""
    failure: Optional[str] = None
    status: Optional[int] = attempt.status
    if not attempt.ok:
        failure = _NO_ANSWER.get(attempt.error_type or "")
        if failure is None:
            failure = "http_status" if attempt.error_type == "UpstreamStatusError" else (attempt.error_type or "error")
        else:
            status = None  # the gateway's own 502/504 for it, not something the upstream said
    return {"provider": attempt.provider, "model": _shown(attempt.model), "status": status, "failure": failure,
            "latency_ms": round(attempt.latency_ms, 1)}


def tried_text(attempts: List[Dict[str, Any]]) -> Optional[str]:
    """`provider:<status or failure>` per attempt, in order, comma-separated: `oc-a:500,oc-b:timeout,oc-c:200`.
    Provider names come from the config, never from a client, so they cannot forge an entry."""
    if not attempts:
        return None
    return ",".join(f"{a['provider']}:{a['status'] if a['status'] is not None else a['failure']}" for a in attempts)


def request_fields(event: Any) -> Dict[str, Any]:
    """What a request's log line says: never prompt text, never a credential."""
    u = event.usage
    return {
        "request_id": _shown(event.request_id),  # a client's x-request-id when it looks sane
        "wire": event.inbound_protocol,
        "route": _shown(event.route),
        "provider": event.provider,
        "model": _shown(event.model),
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
        "tried": [attempt_fields(a) for a in event.attempts],
    }


def _shown(name: Optional[str]) -> Optional[str]:
    """A client-chosen string (route, model, request id) as the log may print it: a client that swapped its settings sends
    its key there, and the log line goes to handlers the gateway does not own (a mounting app's, say)."""
    return redact(name) if isinstance(name, str) else name


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
            data["tried"] = tried_text(data["tried"])
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
