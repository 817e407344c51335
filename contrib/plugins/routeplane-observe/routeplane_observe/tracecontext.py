"""W3C trace context: parse an inbound `traceparent`, and a RouteHook that sends one to every upstream target."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from routeplane.hooks.language_model import RouteHook

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
META = "observe"  # the plugin's ctx.plugin_metadata key (also its plugin id)


@dataclass(frozen=True)
class Parent:
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    sampled: bool


def parse_traceparent(value: Optional[str]) -> Optional[Parent]:
    """The parent in a `traceparent` header, or None if absent or invalid (then a new trace starts)."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return Parent(trace_id, span_id, bool(int(flags, 16) & 1))


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def trace_ids(ctx: Any) -> Dict[str, Any]:
    """The request's trace ids, drawn once and kept in its metadata (they reach the RequestEndEvent)."""
    meta = ctx.plugin_metadata(META)
    if "trace_id" not in meta:
        parent = parse_traceparent(ctx.headers.get("traceparent"))
        meta["trace_id"] = parent.trace_id if parent else new_trace_id()
        meta["parent_span_id"] = parent.span_id if parent else None
        meta["sampled"] = parent.sampled if parent else True
        meta["span_id"] = new_span_id()  # the server span's id
        meta["attempt_spans"] = {}
    return meta


class TraceparentRouteHook(RouteHook):
    """Adds `traceparent` to each target's headers: same trace id as the server span, the parent
    being the client span that the observer will later build for that target's attempt."""

    def resolve(self, chain: List[Any], ctx: Any) -> List[Any]:
        meta = trace_ids(ctx)
        spans: Dict[str, str] = meta["attempt_spans"]
        out = []
        for target in chain:
            span_id = spans.setdefault(target.label, new_span_id())
            header = traceparent(meta["trace_id"], span_id, meta["sampled"])
            out.append(target.replace(headers={**target.headers, "traceparent": header}))
        return out
