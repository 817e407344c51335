"""Anthropic Messages responses, usage, stop reasons and errors, both directions."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...errors import RouteplaneError, UpstreamError
from ...ids import new_hex
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    ContentPart,
    FinishReason,
    Generation,
    OpaquePart,
    Prompt,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    Usage,
)
from ..base import bad_upstream, in_band_error, in_band_status
from ..carried import carry
from .server_blocks import cited_text, opaque_in_answer, own_block, own_tool_use, with_citations

PROTOCOL = "anthropic_messages"

STOP_TO_WIRE = {
    FinishReason.STOP: "end_turn",
    FinishReason.STOP_SEQUENCE: "stop_sequence",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
    FinishReason.PAUSE: "pause_turn",
    FinishReason.OTHER: "end_turn",
}
STOP_FROM_WIRE = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP_SEQUENCE,
    "max_tokens": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "pause_turn": FinishReason.PAUSE,
    "refusal": FinishReason.CONTENT_FILTER,
    # Distinct on Anthropic, but every other wire calls it "length"; the raw
    # value is kept in Generation.extras for an Anthropic client.
    "model_context_window_exceeded": FinishReason.LENGTH,
}

# Response fields and usage fields an Anthropic client gets back from an Anthropic upstream. A stream's
# message_delta has `context_management` (the beta context editing's applied_edits) beside its `delta`,
# which holds the others.
_KEEP_EXTRAS = ("stop_details", "container", "context_management")
BESIDE_DELTA = ("context_management",)
_KEEP_USAGE = ("cache_creation", "server_tool_use", "service_tier", "inference_geo", "speed")

# error kind → Anthropic error `type` (anthropic-messages.md §5)
ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "request_too_large": "request_too_large",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "budget": "billing_error",
    "rate_limit": "rate_limit_error",
    "guardrail": "invalid_request_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
    "upstream": "api_error",
    "internal": "api_error",
}


def error_in_body(payload: Dict[str, Any], target: RoutingTarget, mid_stream: bool = False) -> UpstreamError:
    """An error body in a 200 answer or an `error` event, classified as the HTTP status its type stands for
    (invalid_request_error is the request's 400, not to be retried on the next target; overloaded_error
    stays a retriable 529), as decode_error classifies an error status."""
    err = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    etype = str(err.get("type") or "api_error")
    message = f"({etype}) {err.get('message') or 'error in stream'}"
    return provider_error(in_band_error(in_band_status(None, etype), message, target, mid_stream=mid_stream))


# `error.details.error_code` values the SDK acts on. Its tool runner (SDK 2.12) sends `thread`: told
# "thread_unsupported_request" (the gateway's 400 for a thread bound for another wire) it sends the whole
# conversation again without one; told an Anthropic upstream lost the thread, it replays it under a new one.
PARAM_ERROR_CODES = {"thread": "thread_unsupported_request"}
RELAYED_ERROR_CODES = frozenset({"thread_not_found", "thread_already_continued", "thread_continue_in_flight",
                                 "thread_unsupported_request", "thread_fingerprint_mismatch"})


def provider_error(err: UpstreamError, body: bytes = b"") -> UpstreamError:
    """An Anthropic upstream's error, from its status or its error event alike: billing_error (402) is
    this provider's account out of credit, and another target's may not be. A client error keeps the
    `error.details.error_code` its client acts on (a lost message thread), rendered again by error_body."""
    if err.upstream_status == 402:
        err.kind, err.status, err.retriable = "budget", 402, True
    code = _details_code(body)
    if code in RELAYED_ERROR_CODES and 400 <= err.status < 500:
        err.code = code
    return err


def _details_code(body: bytes) -> Optional[str]:
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    err = data.get("error") if isinstance(data, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    code = details.get("error_code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


def error_status(err: RouteplaneError) -> int:
    """The HTTP status an Anthropic client expects: overload is 529 (not 503), no credit is 402."""
    return {"overloaded": 529, "budget": 402}.get(err.kind, err.status)


# The statuses Anthropic answers with one error `type` only (anthropic-messages.md §5): an error whose kind
# names no such type (another wire's upstream 402, a hook's custom 429 or 529) gets the status's own.
STATUS_TYPES = {
    401: "authentication_error", 402: "billing_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error",
}

def error_body(err: RouteplaneError, request_id: Optional[str] = None) -> Dict[str, Any]:
    """Anthropic's error shape, over HTTP and as a stream's `error` event; with the request's id when known
    (its own errors carry `request_id` beside `error`, as the `request-id` header). The `type` agrees with
    the status the client gets (error_status)."""
    status = error_status(err)
    kind = STATUS_TYPES.get(status) or ERROR_TYPES.get(err.kind, "invalid_request_error" if status < 500 else "api_error")
    body: Dict[str, Any] = {"type": "error", "error": {"type": kind, "message": err.message}}
    code = PARAM_ERROR_CODES.get(err.param or "") if status == 400 else None
    if code is None and err.code in RELAYED_ERROR_CODES:
        code = err.code
    if code is not None:
        body["error"]["details"] = {"error_code": code}
    if request_id:
        body["request_id"] = request_id
    return body


# --- usage -----------------------------------------------------------------


def encode_usage(u: Usage) -> Dict[str, Any]:
    """Anthropic input_tokens EXCLUDES cache reads and writes (translation.md §9)."""
    out: Dict[str, Any] = {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.total_output,  # includes thinking, as Anthropic bills it
    }
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


def kept_usage(u: Usage) -> Dict[str, Any]:
    """encode_usage plus the Anthropic-only fields an Anthropic upstream reported (service_tier, ...).

    Only Anthropic's own field names are copied from the raw usage, so another
    wire's raw usage never leaks into an Anthropic answer.
    """
    out = encode_usage(u)
    out.update({k: v for k, v in (u.raw or {}).items() if k in _KEEP_USAGE and k not in out})
    return out


def decode_usage(raw: Any, base: Optional[Usage] = None) -> Optional[Usage]:
    """Anthropic usage → disjoint buckets; fields present overwrite `base` (stream usage is cumulative)."""
    if not isinstance(raw, dict):
        return None
    b = base or Usage()
    details = raw.get("output_tokens_details") if isinstance(raw.get("output_tokens_details"), dict) else {}
    if "output_tokens" in raw:
        total_out = _int(raw.get("output_tokens"))
    else:
        total_out = b.total_output
    if "thinking_tokens" in details:
        reasoning = min(_int(details.get("thinking_tokens")), total_out)
    else:
        reasoning = min(b.reasoning_tokens, total_out)
    merged_raw = dict(b.raw or {})
    merged_raw.update(raw)
    return Usage(
        input_tokens=_int(raw["input_tokens"]) if "input_tokens" in raw else b.input_tokens,
        cache_read_tokens=(_int(raw["cache_read_input_tokens"]) if "cache_read_input_tokens" in raw
                           else b.cache_read_tokens),
        cache_write_tokens=(_int(raw["cache_creation_input_tokens"]) if "cache_creation_input_tokens" in raw
                            else b.cache_write_tokens),
        output_tokens=total_out - reasoning,
        reasoning_tokens=reasoning,
        reported=True,
        reasoning_known="thinking_tokens" in details or (base is not None and base.reasoning_known),
        raw=merged_raw,
        tool_calls=_tool_calls(merged_raw.get("server_tool_use")),
    )


def _tool_calls(counters: Any) -> Tuple[Tuple[str, int], ...]:
    """`server_tool_use: {web_search_requests: 3, web_fetch_requests: 0}` → (("web_search", 3),)."""
    if not isinstance(counters, dict):
        return ()
    return tuple((name[:-len("_requests")], _int(n)) for name, n in sorted(counters.items())
                 if isinstance(name, str) and name.endswith("_requests") and _int(n) > 0)


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


# --- client side -----------------------------------------------------------


def message_id(raw_id: str) -> str:
    """The answer's id; an upstream that gave none (a Gemini answer without responseId, a compatible
    server) still gets a unique one, as on the OpenAI wires, so clients keying on it keep answers apart."""
    if not raw_id:
        return f"msg_{new_hex()}"
    return raw_id if raw_id.startswith("msg_") else f"msg_{raw_id}"


def wants_thinking(prompt: Prompt) -> bool:
    """Did the Anthropic client turn thinking on? Foreign reasoning is shown only then."""
    thinking = prompt.extras.get("thinking") if prompt.extras_protocol == PROTOCOL else None
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")


def tool_input(arguments: str) -> Dict[str, Any]:
    """Tool arguments as the object Anthropic clients expect.

    An upstream model can emit arguments that are not a JSON object; they are
    kept, not dropped, as {"_raw": "<text>"} (translation.md §6 allows either).
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def wire_stop_reason(reason: FinishReason, refused: bool) -> str:
    """The stop_reason for a finish. A model's refusal that another wire reports as a normal
    stop (OpenAI: `message.refusal` with finish_reason "stop") is Anthropic's `refusal`."""
    wire = STOP_TO_WIRE[reason]
    return "refusal" if refused and wire == "end_turn" else wire


def own_stop_reason(stop_reason: str, finish: FinishReason, own: Mapping[str, Any]) -> str:
    """The upstream's own stop_reason kept in `own` (an Anthropic answer's extras) when it means `finish`
    (model_context_window_exceeded, not the max_tokens of every other wire), else `stop_reason`."""
    raw = own.get("stop_reason")
    return raw if isinstance(raw, str) and STOP_FROM_WIRE.get(raw) is finish else stop_reason


def kept_extras(own: Mapping[str, Any]) -> Dict[str, Any]:
    """The answer fields of an Anthropic upstream its client gets back (`container`, `stop_details`,
    `context_management`)."""
    return {k: own[k] for k in _KEEP_EXTRAS if own.get(k) is not None}


def ending_extras(raw_stop: Any, fields: Mapping[str, Any]) -> Dict[str, Any]:
    """What a streamed Anthropic answer keeps for its client beyond the canonical model, as an unstreamed one
    keeps it in Generation.extras: `container` and `stop_details` (from message_start and message_delta), and
    a stop_reason no other wire has a word for. Empty in the usual case, so the Finish stays plain.
    `fields` holds message_delta's `context_management` too (from beside its `delta`)."""
    extras = kept_extras(fields)
    if isinstance(raw_stop, str) and raw_stop in STOP_FROM_WIRE and STOP_TO_WIRE[STOP_FROM_WIRE[raw_stop]] != raw_stop:
        extras["stop_reason"] = raw_stop
    return extras


def encode_response(gen: Generation, prompt: Prompt) -> Dict[str, Any]:
    show_foreign = wants_thinking(prompt)
    content: List[Dict[str, Any]] = []
    for p in gen.parts:
        if isinstance(p, TextPart):
            if p.text:
                content.append(with_citations({"type": "text", "text": p.text}, p))
        elif isinstance(p, ReasoningPart):
            if p.provider == PROTOCOL and p.redacted is not None:
                content.append({"type": "redacted_thinking", "data": p.redacted})
            elif p.provider == PROTOCOL:
                content.append({"type": "thinking", "thinking": p.text, "signature": p.signature or ""})
            elif show_foreign:
                # Another vendor's signature is carried opaquely (protocols/carried.py), so its
                # reasoning can continue a tool loop; the block may have no text (OpenAI's
                # reasoning without a summary), as Anthropic's own with display "omitted".
                carried = carry(p)
                if p.text or carried:
                    content.append({"type": "thinking", "thinking": p.text, "signature": carried or ""})
        elif isinstance(p, ToolCallPart):
            content.append({"type": "tool_use", "id": p.id, "name": p.name, "input": tool_input(p.arguments)})
        elif isinstance(p, OpaquePart):
            block = own_block(p)  # another wire's server-tool block has no form here
            if block is not None:
                content.append(block)
    own = gen.extras if gen.extras_protocol == PROTOCOL else {}
    refused = any(isinstance(p, TextPart) and p.refusal for p in gen.parts)
    stop_reason = own_stop_reason(wire_stop_reason(gen.finish_reason, refused), gen.finish_reason, own)
    body: Dict[str, Any] = {
        "id": message_id(gen.id),
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": gen.stop_sequence if stop_reason == "stop_sequence" else None,
        "usage": encode_usage(gen.usage),
    }
    if gen.extras_protocol == PROTOCOL:
        # Same wire: what the canonical model does not carry goes back as it came.
        body.update(kept_extras(gen.extras))
        body["usage"] = kept_usage(gen.usage)
    return body


# --- provider side ---------------------------------------------------------


def decode_response(body: Any, target: RoutingTarget) -> Generation:
    if not isinstance(body, dict):
        raise bad_upstream(target, "the body is not a JSON object")
    if body.get("type") == "error":
        raise error_in_body(body, target)
    content = body.get("content")
    if not isinstance(content, list):
        raise bad_upstream(target, "no content array")
    parts: List[ContentPart] = []
    for block in content:
        if not isinstance(block, dict):
            raise bad_upstream(target, "a content block is not an object")
        kind = block.get("type")
        if kind == "text":
            parts.append(cited_text(str(block.get("text") or ""), block))
        elif kind == "thinking":
            parts.append(ReasoningPart(str(block.get("thinking") or ""), block.get("signature") or None,
                                       provider=PROTOCOL))
        elif kind == "redacted_thinking":
            parts.append(ReasoningPart(redacted=str(block.get("data") or ""), provider=PROTOCOL))
        elif kind == "tool_use" and not own_tool_use(block):
            tool_in = block.get("input")
            parts.append(ToolCallPart(
                str(block.get("id") or ""), str(block.get("name") or ""),
                json.dumps(tool_in if isinstance(tool_in, dict) else {}, separators=(",", ":"), ensure_ascii=False),
            ))
        elif opaque_in_answer(kind) or kind == "tool_use":
            # Server-tool blocks (server_tool_use, web_search_tool_result, mcp_tool_use, …), types newer than
            # this code, and own_tool_use calls: kept verbatim for a client of this wire, which sends them back.
            parts.append(OpaquePart(PROTOCOL, block))
    raw_stop = body.get("stop_reason")
    finish = STOP_FROM_WIRE.get(str(raw_stop), FinishReason.OTHER if raw_stop else FinishReason.STOP)
    stop_sequence = body.get("stop_sequence") if isinstance(body.get("stop_sequence"), str) else None
    extras: Dict[str, Any] = {k: body[k] for k in _KEEP_EXTRAS if body.get(k) is not None}
    if isinstance(raw_stop, str):
        extras["stop_reason"] = raw_stop
    return Generation(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or target.model),
        parts=tuple(parts),
        finish_reason=finish,
        usage=decode_usage(body.get("usage")) or Usage(reported=False),
        stop_sequence=stop_sequence,
        extras=extras,
        extras_protocol=PROTOCOL,
    )
