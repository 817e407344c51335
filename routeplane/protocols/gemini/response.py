"""Gemini GenerateContentResponse, usageMetadata, finish reasons and errors, both directions."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from ...errors import RouteplaneError, UpstreamError
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
from ..base import bad_upstream, in_band_error, in_band_status, upstream_status_error
from ..carried import carry
from .request import PROTOCOL, is_synthetic, parse_args, synthetic_id

FINISH_TO_WIRE = {
    FinishReason.STOP: "STOP",
    FinishReason.STOP_SEQUENCE: "STOP",
    FinishReason.LENGTH: "MAX_TOKENS",
    FinishReason.TOOL_CALLS: "STOP",  # Gemini has no tool-call finish reason
    FinishReason.CONTENT_FILTER: "SAFETY",
    FinishReason.PAUSE: "OTHER",
    FinishReason.OTHER: "OTHER",
}
_FILTERED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE", "MODEL_ARMOR", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "IMAGE_RECITATION", "NO_IMAGE",
})

# error kind → (HTTP status, google.rpc status) when the gateway speaks Gemini.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "FAILED_PRECONDITION", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def finish_from_wire(reason: Any, parts: List[ContentPart]) -> FinishReason:
    if not isinstance(reason, str):
        reason = None  # a hostile upstream's dict/list would not even hash
    if reason == "MAX_TOKENS":
        return FinishReason.LENGTH
    if reason in _FILTERED:
        return FinishReason.CONTENT_FILTER
    if reason == "OTHER":
        return FinishReason.OTHER
    # Tool calls end with STOP: their presence is the signal.
    if any(isinstance(p, ToolCallPart) for p in parts):
        return FinishReason.TOOL_CALLS
    return FinishReason.STOP


def encode_usage(u: Usage) -> Dict[str, Any]:
    """candidatesTokenCount excludes thoughts; promptTokenCount includes cached (translation.md §9).

    A Gemini upstream's own report keeps its split: the server-side tools' prompt
    (`toolUsePromptTokenCount`, input in the canonical buckets) comes out of
    promptTokenCount again, and the per-modality details are kept. Only Gemini's
    own field names are read from the raw usage, so another wire's never leak in."""
    raw = u.raw if isinstance(u.raw, Mapping) and "promptTokenCount" in u.raw else {}
    tool_prompt = min(_int(raw.get("toolUsePromptTokenCount")), u.input_tokens)
    prompt = u.total_input - tool_prompt
    meta: Dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": u.output_tokens,
                            "totalTokenCount": prompt + tool_prompt + u.total_output}
    if u.cache_read_tokens:
        meta["cachedContentTokenCount"] = u.cache_read_tokens
    if tool_prompt:
        meta["toolUsePromptTokenCount"] = tool_prompt
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    meta.update({k: raw[k] for k in _USAGE_DETAILS if isinstance(raw.get(k), list)})
    return meta


# usageMetadata's per-modality breakdowns ([{modality, tokenCount}]), kept from a Gemini upstream.
_USAGE_DETAILS = ("promptTokensDetails", "cacheTokensDetails", "candidatesTokensDetails",
                  "toolUsePromptTokensDetails")


def decode_usage(raw: Any) -> Optional[Usage]:
    if not isinstance(raw, dict):
        return None
    prompt = _int(raw.get("promptTokenCount"))
    cached = min(_int(raw.get("cachedContentTokenCount")), prompt)
    # Server-side tool results are billed as input.
    tool_prompt = _int(raw.get("toolUsePromptTokenCount"))
    return Usage(
        input_tokens=prompt - cached + tool_prompt,
        cache_read_tokens=cached,
        output_tokens=_int(raw.get("candidatesTokenCount")),
        reasoning_tokens=_int(raw.get("thoughtsTokenCount")),
        reported=True,
        raw=raw,
    )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


class GroundingCalls:
    """The grounding Google bills by the call (Usage.tool_calls, priced by Prices.per_call), read from the
    candidates' `groundingMetadata`. Grounding with Google Search is billed per grounded prompt on Gemini 2.x
    and per search query on Gemini 3, so both are counted and the prices say which costs: one
    `google_search_prompt` for an answer that ran a search, and `google_search_query` for each distinct
    non-empty query in `webSearchQueries` (Google ignores the empty ones). An answer grounded in Google
    Maps (a `maps` grounding chunk) is one `google_maps_prompt`. URL context reports `web` chunks too, but
    costs only its tokens, so chunks alone count nothing. Fed every chunk of a stream: metadata repeated
    in later chunks is not counted twice."""

    def __init__(self) -> None:
        self._queries: Set[str] = set()
        self._maps = False

    def add(self, candidates: Any) -> None:
        for cand in candidates if isinstance(candidates, list) else ():
            meta = cand.get("groundingMetadata") if isinstance(cand, dict) else None
            if not isinstance(meta, dict):
                continue
            queries = meta.get("webSearchQueries")
            if isinstance(queries, list):
                self._queries.update(q for q in queries if isinstance(q, str) and q.strip())
            chunks = meta.get("groundingChunks")
            if isinstance(chunks, list) and any(isinstance(c, dict) and c.get("maps") for c in chunks):
                self._maps = True

    def calls(self) -> Tuple[Tuple[str, int], ...]:
        counts = {"google_search_prompt": 1 if self._queries else 0, "google_search_query": len(self._queries),
                  "google_maps_prompt": 1 if self._maps else 0}
        return tuple(sorted((kind, n) for kind, n in counts.items() if n))

    def on(self, usage: Usage) -> Usage:
        """The usage with these calls."""
        calls = self.calls()
        return usage if usage.tool_calls == calls else replace(usage, tool_calls=calls)


def shows_thoughts(prompt: Prompt) -> bool:
    """Gemini returns thought text only to a client that set thinkingConfig.includeThoughts;
    another vendor's reasoning is shown on the same terms."""
    gen = prompt.extras.get("generationConfig") if prompt.extras_protocol == PROTOCOL else None
    thinking = gen.get("thinkingConfig") if isinstance(gen, dict) else None
    return isinstance(thinking, dict) and thinking.get("includeThoughts") is True


def encode_parts(parts: Tuple[ContentPart, ...], show_thoughts: bool = True) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, ReasoningPart):
            own = p.provider == PROTOCOL
            # Gemini's own signature, or another vendor's carried opaquely (protocols/carried.py).
            sig = p.signature if own else carry(p)
            if p.text and (show_thoughts or own):
                part: Dict[str, Any] = {"text": p.text, "thought": True}
                if sig:
                    part["thoughtSignature"] = sig
                out.append(part)
            elif sig and not own:
                out.append({"text": "", "thought": True, "thoughtSignature": sig})
            elif sig:
                prev = out[-1] if out else None
                if prev is not None and "text" in prev and not prev.get("thought") and "thoughtSignature" not in prev:
                    prev["thoughtSignature"] = sig
                else:
                    out.append({"text": "", "thoughtSignature": sig})
        elif isinstance(p, ToolCallPart):
            out.append(function_call_part(p.id, p.name, p.arguments,
                                          p.signature if p.signature_provider in (PROTOCOL, None) else None))
        elif isinstance(p, OpaquePart) and p.protocol == PROTOCOL:
            out.append(dict(p.block))  # another wire's server-side blocks mean nothing here
    return out


def function_call_part(call_id: str, name: str, arguments: str, signature: Optional[str]) -> Dict[str, Any]:
    call: Dict[str, Any] = {"name": name, "args": parse_args(arguments)}
    if call_id and not is_synthetic(call_id):
        call["id"] = call_id
    part: Dict[str, Any] = {"functionCall": call}
    if signature:
        part["thoughtSignature"] = signature
    return part


# What a Gemini upstream's answer holds beyond the canonical model, kept for a Gemini client.
KEEP_CANDIDATE = ("safetyRatings", "citationMetadata", "groundingMetadata", "urlContextMetadata", "avgLogprobs",
                   "logprobsResult", "finishMessage")
# Of those, what quotes or indexes the answer's text (tokens, grounded segments, cited spans): kept
# only while the text is what the upstream sent, so a hook's rewrite (a redaction) cannot show
# through. `TEXT_KEY` in the extras holds that text.
_ABOUT_TEXT = ("citationMetadata", "groundingMetadata", "avgLogprobs", "logprobsResult")
TEXT_KEY = "_text"


def _answer_text(parts: Any) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))


def kept_candidate(extras: Mapping[str, Any], text: str) -> Dict[str, Any]:
    """A Gemini upstream's candidate fields (extras["candidate"]) for a Gemini client whose answer text is
    `text`: what quotes or indexes the text only while it is still the text the upstream sent."""
    kept = extras.get("candidate")
    if not isinstance(kept, Mapping):
        return {}
    unchanged = extras.get(TEXT_KEY) == text
    return {k: v for k, v in kept.items() if k in KEEP_CANDIDATE and (unchanged or k not in _ABOUT_TEXT)}


def answers_enum(prompt: Prompt) -> bool:
    """The client asked for `text/x.enum`: Gemini answers with the bare value (`happy`), where the other
    wires' structured output is JSON (`"happy"`)."""
    gen = prompt.extras.get("generationConfig") if prompt.extras_protocol == PROTOCOL else None
    return isinstance(gen, dict) and gen.get("responseMimeType") == "text/x.enum"


def bare_enum(text: str) -> str:
    """A JSON string's value (`"happy"` → `happy`); any other text as it is."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, str) else text


def encode_response(gen: Generation, prompt: Prompt) -> Dict[str, Any]:
    parts = gen.parts
    if answers_enum(prompt) and gen.extras_protocol != PROTOCOL:
        parts = tuple(replace(p, text=bare_enum(p.text)) if isinstance(p, TextPart) else p for p in parts)
    cand: Dict[str, Any] = {
        "content": {"role": "model", "parts": encode_parts(parts, shows_thoughts(prompt))},
        "finishReason": FINISH_TO_WIRE[gen.finish_reason],
        "index": 0,
    }
    body: Dict[str, Any] = {"candidates": [cand]}
    if gen.extras_protocol == PROTOCOL:
        # Same wire: RECITATION stays RECITATION (not the canonical SAFETY), safety ratings and a
        # blocked prompt's promptFeedback (no candidates, as Gemini sends it) go back as they came.
        raw = gen.extras.get("finishReason")
        if isinstance(raw, str) and finish_from_wire(raw, list(gen.parts)) is gen.finish_reason:
            cand["finishReason"] = raw
        cand.update(kept_candidate(gen.extras, _answer_text(gen.parts)))
        feedback = gen.extras.get("promptFeedback")
        if isinstance(feedback, dict):
            body["promptFeedback"] = feedback
            if feedback.get("blockReason") and not gen.parts and gen.finish_reason is FinishReason.CONTENT_FILTER:
                del body["candidates"]
    body.update({"usageMetadata": encode_usage(gen.usage), "modelVersion": prompt.model,
                 "responseId": gen.id or "routeplane"})
    return body


def decode_parts(parts: Any, target: RoutingTarget) -> List[ContentPart]:
    out: List[ContentPart] = []
    if parts is not None and not isinstance(parts, list):
        raise bad_upstream(target, "content.parts is not an array")
    for raw in parts or []:
        if not isinstance(raw, dict):
            raise bad_upstream(target, "a part is not an object")
        wrong = mistyped_part(raw)
        if wrong:
            raise bad_upstream(target, wrong)
        sig = raw.get("thoughtSignature") if isinstance(raw.get("thoughtSignature"), str) else None
        call = raw.get("functionCall")
        if isinstance(call, dict):
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else synthetic_id()
            args = call.get("args") if call.get("args") is not None else {}
            out.append(ToolCallPart(call_id, str(call.get("name") or ""), json.dumps(args, separators=(",", ":")),
                                    sig, PROTOCOL if sig else None))
        elif isinstance(raw.get("text"), str):
            if raw.get("thought"):
                out.append(thought_part(out, raw["text"], sig))
                continue
            if raw["text"]:
                out.append(TextPart(raw["text"]))
            if sig:
                out.append(ReasoningPart("", sig, provider=PROTOCOL))
        elif is_opaque(raw):
            out.append(OpaquePart(PROTOCOL, raw))
        elif sig:
            out.append(ReasoningPart("", sig, provider=PROTOCOL))
    return _merge_text(out)


# Keys of a part that qualify its data rather than being it.
_QUALIFIERS = frozenset({"thought", "thoughtSignature", "thought_signature", "partMetadata", "part_metadata"})


def mistyped_part(raw: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with a part whose `text` or `functionCall` has the wrong JSON type, or None. Such a
    part is no kind this gateway does not know (is_opaque would keep it whole): relayed to a Gemini
    client, the SDK fails validating it instead of reporting an error."""
    if raw.get("text") is not None and not isinstance(raw["text"], str):
        return "a part's text is not a string"
    if raw.get("functionCall") is not None and not isinstance(raw["functionCall"], dict):
        return "a part's functionCall is not an object"
    return None


def is_opaque(raw: Mapping[str, Any]) -> bool:
    """An answer's part that is neither text nor a function call nor a bare signature: `executableCode`,
    `codeExecutionResult`, a server-side `toolCall`/`toolResponse`, generated media, or a kind newer than
    this gateway. It has no canonical form, so it is kept whole (its `thoughtSignature` with it) for a
    Gemini client, in place, and left out for the others."""
    return any(k not in _QUALIFIERS for k in raw)


def thought_part(previous: List[ContentPart], text: str, sig: Optional[str]) -> ReasoningPart:
    """A thought part; an empty one carrying only a signature signs the unsigned thoughts before it."""
    if not text and sig:
        for i in range(len(previous) - 1, -1, -1):
            p = previous[i]
            if isinstance(p, ReasoningPart) and p.provider == PROTOCOL and p.text and not p.signature:
                previous[i] = ReasoningPart(p.text, sig, provider=PROTOCOL)
                return ReasoningPart("", None, provider=PROTOCOL)  # dropped below: nothing left to carry
    return ReasoningPart(text, sig, provider=PROTOCOL)


def _merge_text(parts: List[ContentPart]) -> List[ContentPart]:
    merged: List[ContentPart] = []
    for p in parts:
        if isinstance(p, ReasoningPart) and not p.text and not p.signature and not p.redacted:
            continue
        if isinstance(p, TextPart) and merged and isinstance(merged[-1], TextPart):
            merged[-1] = TextPart(merged[-1].text + p.text)
        else:
            merged.append(p)
    return merged


def decode_response(body: Any, target: RoutingTarget) -> Generation:
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        raise bad_upstream(target, "the body is not a JSON object")
    if isinstance(body.get("error"), dict):
        raise error_in_body(body["error"], target)
    usage = decode_usage(body.get("usageMetadata")) or Usage(reported=False)
    rid = str(body.get("responseId") or "")
    model = str(body.get("modelVersion") or target.model)
    candidates = body.get("candidates")
    feedback = body.get("promptFeedback")
    extras: Dict[str, Any] = {"promptFeedback": feedback} if isinstance(feedback, dict) else {}
    if not candidates:
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            # A blocked prompt is HTTP 200 with no candidates: a refusal, not a crash.
            return Generation(rid, model, (), FinishReason.CONTENT_FILTER, usage, int(time.time()),
                              extras=extras, extras_protocol=PROTOCOL)
        raise bad_upstream(target, "no candidates")
    if not isinstance(candidates, list):
        raise bad_upstream(target, "candidates is not an array")
    cand = candidates[0]
    if not isinstance(cand, dict):
        raise bad_upstream(target, "a candidate is not an object")
    grounding = GroundingCalls()
    grounding.add(candidates)
    usage = grounding.on(usage)
    content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
    parts = decode_parts(content.get("parts"), target)
    if isinstance(cand.get("finishReason"), str):
        extras["finishReason"] = cand["finishReason"]
    kept = {k: cand[k] for k in KEEP_CANDIDATE if cand.get(k) is not None}
    if kept:
        extras["candidate"] = kept
        extras[TEXT_KEY] = _answer_text(parts)
    return Generation(rid, model, tuple(parts), finish_from_wire(cand.get("finishReason"), parts), usage,
                      int(time.time()), extras=extras, extras_protocol=PROTOCOL)


def error_body(err: RouteplaneError) -> Dict[str, Any]:
    status = err.status
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    if err.kind == "budget":
        name = "RESOURCE_EXHAUSTED"
    body: Dict[str, Any] = {"code": status, "message": err.message, "status": name}
    if err.retry_after is not None and math.isfinite(err.retry_after):
        # Google's own form of Retry-After (gemini.md §5), beside the header.
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{max(0, math.ceil(err.retry_after))}s"}]
    return {"error": body}


def decode_error(status: int, body: bytes, headers: Mapping[str, str], target: RoutingTarget) -> UpstreamError:
    # Gemini says "invalid key" with HTTP 400 + reason API_KEY_INVALID: that is the
    # gateway's credential, not the client's request (translation.md §10).
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        details = err.get("details") if isinstance(err.get("details"), list) else []
        if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
            status = 401
        delay = _retry_delay(details)
        if delay is not None and not any(k.lower() in ("retry-after", "retry-after-ms") for k in headers):
            # Gemini says when to retry in the body (google.rpc.RetryInfo), not in a header.
            headers = {**dict(headers), "retry-after": delay}
    return upstream_status_error(status, body, headers, target)


def error_in_body(err: Dict[str, Any], target: RoutingTarget, mid_stream: bool = False) -> UpstreamError:
    """A google.rpc Status in a 200 answer or a stream chunk, classified as decode_error classifies an error
    status: by its numeric code, else its status name (RESOURCE_EXHAUSTED is a 429 without one); an
    invalid key is the gateway's credential; RetryInfo is the Retry-After."""
    details = err.get("details") if isinstance(err.get("details"), list) else []
    status = in_band_status(err.get("code"), err.get("status"))
    if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
        status = 401
    delay = _retry_delay(details)
    message = err.get("message") if isinstance(err.get("message"), str) else "error in stream"
    return in_band_error(status, message, target, retry_after=float(delay) if delay is not None else None,
                         mid_stream=mid_stream)


def _retry_delay(details: List[Any]) -> Optional[str]:
    """`RetryInfo.retryDelay` (a proto Duration in JSON: "37s", "1.5s") as seconds text."""
    for d in details:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = d.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return str(float(delay[:-1]))
                except ValueError:
                    return None
    return None
