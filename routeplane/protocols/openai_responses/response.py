"""OpenAI Responses objects, usage and errors, both directions."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
from ..base import as_list, bad_upstream, in_band_error, in_band_status
from ..carried import carry
from ..openai_chat.citations import responses_citation
from ..openai_chat.response import error_body as chat_error_body
from .echo import echoed, upstream_tier
from .layout import echoed_instructions
from .reasoning import JOIN, pack_reasoning_signature, split_summary, summary_texts, unpack_reasoning_signature
from .request import (
    MESSAGE_FIELDS,
    PROTOCOL,
    own_fields,
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{new_hex()}"


def response_id(gen_id: str) -> str:
    if gen_id.startswith("resp_"):
        return gen_id
    return f"resp_{gen_id}" if gen_id else new_id("resp")


def status_of(reason: FinishReason) -> Tuple[str, Optional[Dict[str, Any]]]:
    """Responses has no finish reason: it is a status plus incomplete_details."""
    if reason is FinishReason.LENGTH:
        return "incomplete", {"reason": "max_output_tokens"}
    if reason is FinishReason.CONTENT_FILTER:
        return "incomplete", {"reason": "content_filter"}
    if reason is FinishReason.PAUSE:
        return "incomplete", None
    return "completed", None


def encode_usage(u: Usage) -> Dict[str, Any]:
    total_in, total_out = u.total_input, u.total_output
    return {
        "input_tokens": total_in,
        # cache_write_tokens is a required int in SDK 3.54's types.
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": total_out,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": total_in + total_out,
    }


# Hosted tools OpenAI bills by the call (Usage.tool_calls, priced by Prices.per_call): the output items
# that record a call, by kind. MCP and computer calls cost their tokens only.
_BILLED_CALLS = {"web_search_call": "web_search", "file_search_call": "file_search",
                 "code_interpreter_call": "code_interpreter", "image_generation_call": "image_generation"}


def tool_calls(output: Any, tools: Any = None) -> Tuple[Tuple[str, int], ...]:
    """(("web_search", 2),) from a response's output items. `tools`: the response's own copy of the
    request's tools; when they hold the older `web_search_preview` (or a dated variant), its searches
    count as `web_search_preview`, billed apart from the GA `web_search` (per model: $25 per 1,000 on
    gpt-4o and gpt-4.1, $10 on reasoning models). A `web_search_call` item does not say which tool made it,
    so with both offered every search counts as the preview's (the dearer: a budget is not under-charged)."""
    search = "web_search_preview" if _offers_search_preview(tools) else "web_search"
    counts: Dict[str, int] = {}
    for item in output if isinstance(output, list) else ():
        kind = _BILLED_CALLS.get(item.get("type")) if isinstance(item, dict) and isinstance(item.get("type"), str) else None
        if kind == "web_search":
            kind = search
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return tuple(sorted(counts.items()))


def _offers_search_preview(tools: Any) -> bool:
    return any(isinstance(t, dict) and isinstance(t.get("type"), str) and t["type"].startswith("web_search_preview")
               for t in (tools if isinstance(tools, list) else ()))


def decode_usage(raw: Any, output: Any = None, tools: Any = None) -> Optional[Usage]:
    """A response's usage, with the hosted-tool calls its `output` items record (`tools`: its tools)."""
    if not isinstance(raw, dict):
        return None
    inp, out = _int(raw.get("input_tokens")), _int(raw.get("output_tokens"))
    idet = raw.get("input_tokens_details") if isinstance(raw.get("input_tokens_details"), dict) else {}
    odet = raw.get("output_tokens_details") if isinstance(raw.get("output_tokens_details"), dict) else {}
    cached, written = _int(idet.get("cached_tokens")), _int(idet.get("cache_write_tokens"))
    reasoning = min(_int(odet.get("reasoning_tokens")), out) if out else _int(odet.get("reasoning_tokens"))
    return Usage(
        input_tokens=max(0, inp - cached - written),
        cache_read_tokens=cached,
        cache_write_tokens=written,
        output_tokens=max(0, out - reasoning),
        reasoning_tokens=reasoning,
        reported=True,
        raw=raw,
        tool_calls=tool_calls(output, tools),
    )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


# --- output items ----------------------------------------------------------


# Generation.extras: each output_text's `logprobs` (asked for with include "message.output_text.logprobs")
# and, under a `_`-key, its text as it came (hooks leave those alone, docs/plugins.md), in order; written
# back only beside the same text (a hook that rewrote it, e.g. a redaction, must not leave the original
# tokens showing).
LOGPROBS_KEY, LOGPROBS_TEXT_KEY = "logprobs", "_logprobs_text"
Scored = Sequence[Tuple[str, Sequence[Any]]]

# Output item types the canonical model has a form for; every other item (web_search_call, mcp_call,
# image_generation_call, ...) is an OpaquePart, kept verbatim for a Responses client.
CANONICAL_ITEMS = frozenset({"message", "function_call", "custom_tool_call", "reasoning"})


def content_part(text: str, refusal: bool = False, annotations: Any = (), logprobs: Any = ()) -> Dict[str, Any]:
    """A message's content part: the model's text, or its refusal (kept apart: the SDK's parse() relies on it)."""
    if refusal:
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [dict(a) for a in annotations],
            "logprobs": [dict(x) for x in logprobs]}


def own_annotations(p: TextPart) -> Tuple[Any, ...]:
    """The part's annotations if this wire made them, or a Chat upstream's URL citations in this wire's shape
    (the others' citations have no form here)."""
    if p.annotations_protocol == PROTOCOL:
        return p.annotations
    return tuple(n for n in (responses_citation(a, p.annotations_protocol) for a in p.annotations) if n is not None)


def message_item(item_id: str, parts: List[TextPart], status: str = "completed",
                 logprobs: Sequence[Sequence[Any]] = ()) -> Dict[str, Any]:
    """`logprobs`: each part's, in order (none for a part past its end)."""
    return {
        "type": "message", "id": item_id, "role": "assistant", "status": status,
        "content": [content_part(p.text, p.refusal, own_annotations(p), logprobs[k] if k < len(logprobs) else ())
                    for k, p in enumerate(parts)],
        **((own_fields(parts[0]) or {}) if parts else {}),  # its phase
    }


def function_call_item(item_id: str, call: ToolCallPart, status: str = "completed") -> Dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name,
            "arguments": call.arguments, "status": status}


def custom_call_item(item_id: str, call: ToolCallPart, status: str = "completed") -> Dict[str, Any]:
    return {"type": "custom_tool_call", "id": item_id, "call_id": call.id, "name": call.name,
            "input": call.arguments, "status": status}


def call_item_id(call: ToolCallPart) -> str:
    return f"ctc_{call.id}" if call.custom else f"fc_{call.id}"


class CallIds:
    """The `call_id`s of one response, made unique. Some upstreams give parallel calls one id (DeepSeek,
    GLM and Kimi reuse it; a Chat server may send none): the SDK's stream accumulator then fails
    ("conflicting output identities"), and a client could not tell the calls' outputs apart. A repeat
    gets a suffix, `call_1_2`, the same streamed or not."""

    def __init__(self) -> None:
        self._used: set = set()
        self._suffix: Dict[str, int] = {}  # by id, the last suffix given: the next repeat starts above it

    def unique(self, call_id: str) -> str:
        base = call_id or new_id("call")
        out, n = base, self._suffix.get(base, 1)
        while out in self._used:
            n += 1
            out = f"{base}_{n}"
        self._used.add(out)
        self._suffix[base] = n
        return out


def reasoning_item(item_id: str, summary: List[str], encrypted: Optional[str]) -> Dict[str, Any]:
    item: Dict[str, Any] = {"type": "reasoning", "id": item_id,
                            "summary": [{"type": "summary_text", "text": t} for t in summary]}
    if encrypted:
        item["encrypted_content"] = encrypted
    return item


def reasoning_identity(part: ReasoningPart) -> Tuple[str, Optional[str]]:
    """(item id, encrypted content): OpenAI's own when it made the reasoning, else a fresh id
    and, for Anthropic thinking, its signature carried opaquely (protocols/carried.py)."""
    if part.provider == PROTOCOL:
        item_id, encrypted = unpack_reasoning_signature(part.signature)
        if item_id:
            return item_id, encrypted
        return new_id("rs"), None
    return new_id("rs"), carry(part)


def reasoning_summary(part: ReasoningPart) -> List[str]:
    """The reasoning's summary parts: an OpenAI upstream's as it sent them, else the text as one."""
    return split_summary(part.text, part.signature if part.provider == PROTOCOL else None)


def encode_output(parts: Tuple[ContentPart, ...], scored: Scored = ()) -> List[Dict[str, Any]]:
    """`scored`: the upstream's output_text texts and logprobs, in order (LOGPROBS_KEY); each text part
    gets its logprobs only if its text is still the one they scored."""
    out: List[Dict[str, Any]] = []
    texts: List[TextPart] = []
    logprobs: List[Sequence[Any]] = []
    k = 0  # output_text parts so far
    call_ids = CallIds()

    def flush() -> None:
        if texts:
            out.append(message_item(new_id("msg"), list(texts), logprobs=list(logprobs)))
            texts.clear()
            logprobs.clear()

    for p in parts:
        if isinstance(p, TextPart):
            if texts and own_fields(texts[-1]) != own_fields(p):
                flush()  # another phase: another message
            texts.append(p)
            own = scored[k] if not p.refusal and k < len(scored) else None
            logprobs.append(own[1] if own is not None and own[0] == p.text else ())
            k += 0 if p.refusal else 1
        elif isinstance(p, ToolCallPart):
            flush()
            p = replace(p, id=call_ids.unique(p.id))
            out.append((custom_call_item if p.custom else function_call_item)(call_item_id(p), p))
        elif isinstance(p, ReasoningPart):
            flush()
            item_id, encrypted = reasoning_identity(p)
            out.append(reasoning_item(item_id, reasoning_summary(p), encrypted))
        elif isinstance(p, OpaquePart):
            flush()  # another wire's block is left out, but still ends a message, as it does streamed
            if p.protocol == PROTOCOL:
                out.append(dict(p.block))  # a hosted tool's item, as the upstream sent it
    flush()
    return out


def response_object(rid: str, prompt: Prompt, created: int, status: str, output: List[Dict[str, Any]],
                    usage: Optional[Usage], incomplete: Optional[Dict[str, Any]] = None,
                    error: Optional[Dict[str, Any]] = None, served_tier: Optional[str] = None) -> Dict[str, Any]:
    """`served_tier`: the service tier the upstream said it served the answer on."""
    tc = prompt.tool_choice
    body: Dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": prompt.model,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": echoed_instructions(prompt),
        "output": output,
        "parallel_tool_calls": tc.parallel if tc is not None and tc.parallel is not None else True,
        **echoed(prompt, served_tier),
        "temperature": prompt.params.temperature,
        "top_p": prompt.params.top_p,
        "max_output_tokens": prompt.params.max_tokens,
        "metadata": dict(prompt.extras.get("metadata") or {}) if prompt.extras_protocol == PROTOCOL else {},
        "usage": encode_usage(usage) if usage is not None else None,
    }
    return body


def encode_response(gen: Generation, prompt: Prompt) -> Dict[str, Any]:
    status, incomplete = status_of(gen.finish_reason)
    scored: Scored = ()
    if gen.extras_protocol == PROTOCOL and LOGPROBS_KEY in gen.extras:
        scored = list(zip(gen.extras.get(LOGPROBS_TEXT_KEY) or (), gen.extras[LOGPROBS_KEY]))
    output = encode_output(gen.parts, scored)
    if output and is_cut(output[-1], incomplete):
        output[-1]["status"] = "incomplete"
    for item in output:
        if item.get("type") == "function_call" and not str(item.get("arguments")).strip() \
                and item.get("status") != "incomplete":
            item["arguments"] = "{}"  # a whole call without arguments; a cut one keeps what it had (stream.py)
    return response_object(response_id(gen.id), prompt, gen.created or int(time.time()), status, output,
                           gen.usage, incomplete, served_tier=upstream_tier(gen.extras_protocol, gen.extras))


def is_cut(item: Dict[str, Any], incomplete: Optional[Dict[str, Any]]) -> bool:
    """Whether `item`, the answer's last, is what a max_output_tokens or content_filter stop cut off: OpenAI
    marks that message or call `incomplete` (a client must not run a call whose arguments were cut). A
    paused turn (no reason) cut nothing; a hosted tool's item keeps the status it came with."""
    return bool(incomplete and incomplete.get("reason")) and item.get("type") in CUTTABLE


CUTTABLE = frozenset({"message", "function_call", "custom_tool_call"})


def decode_output(items: Any, target: RoutingTarget) -> List[ContentPart]:
    if not isinstance(items, list):
        raise bad_upstream(target, "'output' is not an array")
    parts: List[ContentPart] = []
    for item in items:
        if not isinstance(item, dict):
            raise bad_upstream(target, "an output item is not an object")
        kind = item.get("type")
        if kind == "message":
            fields = upstream_fields(item)
            for c in as_list(item.get("content")):
                if isinstance(c, dict) and c.get("type") == "output_text" and isinstance(c.get("text"), str):
                    parts.append(text_part(c["text"], c.get("annotations"), fields))
                elif isinstance(c, dict) and c.get("type") == "refusal" and isinstance(c.get("refusal"), str):
                    parts.append(TextPart(c["refusal"], refusal=True, part_fields=fields,
                                          part_fields_protocol=PROTOCOL if fields else None))
        elif kind == "function_call":
            # A call the end cut keeps what it had, possibly nothing: "{}" would be a call to run.
            arguments = item.get("arguments")
            cut = item.get("status") == "incomplete" and isinstance(arguments, str)
            parts.append(ToolCallPart(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""),
                                      arguments if cut else str(arguments or "{}")))
        elif kind == "custom_tool_call":
            parts.append(ToolCallPart(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""),
                                      item["input"] if isinstance(item.get("input"), str) else "", custom=True))
        elif kind == "reasoning":
            texts = summary_texts(item)
            parts.append(ReasoningPart(_reasoning_text(item), pack_reasoning_signature(
                str(item.get("id") or ""), item.get("encrypted_content"), texts), provider=PROTOCOL))
        elif isinstance(kind, str):
            # A hosted tool's call or result: a Responses client gets it back as it is, another wire's skips it.
            parts.append(OpaquePart(PROTOCOL, item))
    return parts


def text_part(text: str, annotations: Any, fields: Optional[Dict[str, Any]] = None) -> TextPart:
    """An output_text's text and its citations (url_citation, file_citation, ...), kept for this wire, with
    its message's own fields (`phase`)."""
    notes = tuple(a for a in annotations if isinstance(a, dict)) if isinstance(annotations, list) else ()
    return TextPart(text, annotations=notes, annotations_protocol=PROTOCOL if notes else None,
                    part_fields=fields, part_fields_protocol=PROTOCOL if fields else None)


def upstream_fields(item: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """An upstream message item's own fields kept for a Responses client (`phase`), or None."""
    fields = {k: item[k] for k in MESSAGE_FIELDS if isinstance(item.get(k), str)}
    return fields or None


def _reasoning_text(item: Dict[str, Any]) -> str:
    texts = summary_texts(item)
    if not texts:
        texts = [c["text"] for c in as_list(item.get("content")) if isinstance(c, dict) and isinstance(c.get("text"), str)]
    return JOIN.join(texts)


def incomplete_reason(incomplete: Any) -> FinishReason:
    reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
    if reason == "content_filter":
        return FinishReason.CONTENT_FILTER
    if reason is None:
        return FinishReason.PAUSE  # unfinished for no stated reason (what a paused turn becomes)
    return FinishReason.LENGTH


def finish_of(status: Any, incomplete: Any, parts: List[ContentPart]) -> FinishReason:
    if status == "incomplete":
        return incomplete_reason(incomplete)
    if any(isinstance(p, ToolCallPart) for p in parts):
        return FinishReason.TOOL_CALLS
    return FinishReason.STOP


def failed_error(body: Dict[str, Any], target: RoutingTarget) -> UpstreamError:
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = err.get("message") if isinstance(err.get("message"), str) else "the response failed"
    return failure(err, message, target)


def failure(err: Dict[str, Any], message: str, target: RoutingTarget, mid_stream: bool = False) -> UpstreamError:
    """A failed response or an in-stream `error` event, classified by its code (or original type): an
    invalid_prompt is the request's 400, not a server error to retry on the next target. A code of the
    SDK's closed set is kept, so a Responses client sees the upstream's own (failed_code)."""
    code, etype = err.get("code"), err.get("type")
    out = in_band_error(in_band_status(code, etype), message, target, code=code if isinstance(code, str) else etype,
                        mid_stream=mid_stream)
    if isinstance(code, str) and code in FAILED_CODES:
        out.code = code
    return out


def decode_response(body: Any, target: RoutingTarget) -> Generation:
    if not isinstance(body, dict):
        raise bad_upstream(target, "the body is not a JSON object")
    status = body.get("status")
    if status == "failed":
        raise failed_error(body, target)
    if status in ("queued", "in_progress"):
        # A background response: its output comes later, from a retrieve this gateway never makes.
        raise bad_upstream(target, f"the response is still {status} (background mode is not supported)")
    parts = decode_output(body.get("output"), target)
    scored = _scored(body["output"])
    extras: Dict[str, Any] = {LOGPROBS_TEXT_KEY: [t for t, _ in scored], LOGPROBS_KEY: [e for _, e in scored]} if scored else {}
    if isinstance(body.get("service_tier"), str):
        extras["service_tier"] = body["service_tier"]  # the tier it was served on, for a Responses client
    return Generation(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or target.model),
        parts=tuple(parts),
        finish_reason=finish_of(status, body.get("incomplete_details"), parts),
        usage=decode_usage(body.get("usage"), body.get("output"), body.get("tools")) or Usage(reported=False),
        created=body["created_at"] if isinstance(body.get("created_at"), int) else int(time.time()),
        extras=extras,
        extras_protocol=PROTOCOL if extras else None,
    )


def _scored(items: List[Any]) -> List[Tuple[str, List[Any]]]:
    """Each output_text's (text, logprobs), in the order decode_output makes their text parts; [] if none has any."""
    scored = [(c["text"], [x for x in c["logprobs"] if isinstance(x, dict)] if isinstance(c.get("logprobs"), list)
               else []) for item in items if isinstance(item, dict) and item.get("type") == "message"
              for c in as_list(item.get("content"))
              if isinstance(c, dict) and c.get("type") == "output_text" and isinstance(c.get("text"), str)]
    return scored if any(entries for _, entries in scored) else []


# `ResponseError.code` of the SDK (a closed set: openai/types/responses/response_error.py).
FAILED_CODES = frozenset({
    "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch", "bio_policy",
    "misalignment_policy_violation", "vector_store_timeout", "invalid_image", "invalid_image_format",
    "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small", "image_parse_error",
    "image_content_policy_violation", "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type",
    "empty_image_file", "failed_to_download_image", "image_file_not_found"})


def failed_code(err: RouteplaneError) -> str:
    """`error.code` of a failed response: one of the SDK's codes (`ResponseError.code` is a closed set)."""
    if err.code in FAILED_CODES:
        return err.code  # an upstream Responses failure's own code (an image policy, say)
    if err.kind in ("rate_limit", "budget") or err.status == 429:
        return "rate_limit_exceeded"
    if 400 <= err.status < 500 and err.status not in (408,):
        return "invalid_prompt"  # a guardrail or other refusal of the request's content mid-stream
    return "server_error"


def error_body(err: RouteplaneError) -> Dict[str, Any]:
    # Same envelope as Chat Completions (openai-responses.md: "same error envelope").
    return chat_error_body(err)
