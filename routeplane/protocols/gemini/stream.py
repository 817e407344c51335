"""Gemini streaming: canonical parts → `data:` chunks (client), chunks → parts (provider)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ...errors import RouteplaneError
from ...language_model.routing import RoutingTarget
from ...language_model.stream import estimate_usage, opaque_text, text_weight, weighed_chars
from ...language_model.types import (
    Finish,
    FinishReason,
    OpaqueBlock,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    ReasoningStart,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextStart,
    TokenLogprobs,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from ..base import StreamDecoder, StreamEncoder, bad_upstream
from ..carried import carry
from ..scores import Scores
from ..sse import SSEEvent, dumps
from .request import PROTOCOL, synthetic_id
from .response import (
    FINISH_TO_WIRE,
    KEEP_CANDIDATE,
    TEXT_KEY,
    GroundingCalls,
    answers_enum,
    bare_enum,
    decode_usage,
    encode_usage,
    error_body,
    error_in_body,
    finish_from_wire,
    function_call_part,
    is_opaque,
    kept_candidate,
    mistyped_part,
    shows_thoughts,
)


class GeminiStreamEncoder(StreamEncoder):
    """Frames are exactly `data: {json}` + blank line: google-genai fails on any
    other line (no `event:`, no comments, no keep-alives). Tool calls go out whole,
    once their arguments are complete; the finishReason chunk is held until the
    end so it can carry the final usage. With `sse=False` the same chunks form
    one streamed JSON array (the `streamGenerateContent` form without `alt=sse`)."""

    def __init__(self, prompt: Prompt, sse: bool = True) -> None:
        self._model = prompt.model
        self._sse = sse
        self._id = "routeplane"
        self._usage: Optional[Usage] = None
        # usageMetadata goes on every chunk once known (as Gemini sends it): encoded once per report.
        self._usage_meta: Tuple[Optional[Usage], Dict[str, Any]] = (None, {})
        self._finish: Optional[FinishReason] = None
        self._wire_finish: Optional[str] = None  # a Gemini upstream's own finishReason, when it maps to _finish
        self._tools: Dict[int, Dict[str, Any]] = {}
        self._reasoning: Dict[int, Dict[str, Any]] = {}
        self._emitted = False
        self._closed = False
        self._held: Optional[List[Dict[str, Any]]] = None
        self._held_scores: Dict[str, Any] = {}  # the held chunk's logprobsResult and avgLogprobs
        self._scores: Dict[int, Scores] = {}  # text block index → its pending log probabilities
        self._prompt = prompt
        # Output and reasoning as `output_chars()` weighs an unstreamed answer: (ASCII characters, other
        # UTF-8 bytes), summed over the deltas and weighed once, so both estimates agree.
        self._weight = (0, 0)
        self._show_thoughts = shows_thoughts(prompt)
        self._answer: List[str] = []  # the answer's text as sent, for the kept fields that index it
        self._kept: Mapping[str, Any] = {}  # a Gemini upstream's fields of the answer as a whole (Finish.extras)
        self._same_wire = False
        # A text/x.enum answer that came as a JSON string (another wire's structured output) is held
        # whole, to go out bare as Gemini's own (`happy`, not `"happy"`); None: not held.
        self._enum: Optional[List[str]] = [] if answers_enum(prompt) else None

    def _frame(self, obj: Dict[str, Any]) -> bytes:
        payload = dumps(obj).encode()
        if self._sse:
            self._emitted = True
            return b"data: " + payload + b"\r\n\r\n"
        prefix = b",\r\n" if self._emitted else b"["
        self._emitted = True
        return prefix + payload

    def _chunk(self, parts: List[Dict[str, Any]], scores: Optional[Dict[str, Any]] = None) -> bytes:
        """Queue a chunk; out goes the one before it. The last content chunk is held
        so it can carry the finishReason: google-genai's chat drops a whole turn from
        its history when any chunk has no parts. Calls in a row share one chunk, as
        Gemini streams parallel calls: the chat keeps each chunk as a content of its own,
        and only the first call of a content carries the turn's signature."""
        # (A held list of calls only grows by calls: its last part tells, without a scan per call.)
        if self._held and not scores and _calls(self._held[-1:]) and _calls(parts):
            self._held.extend(parts)
            return b""
        out = self._flush() if self._held is not None else b""
        self._held, self._held_scores = parts, scores or {}
        return out

    def _flush(self) -> bytes:
        parts, self._held = self._held, None
        return self._frame(self._body(parts or [{"text": ""}], None, self._held_scores))

    def _body(self, parts: List[Dict[str, Any]], finish: Optional[str] = None,
              fields: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        cand.update(fields or {})
        body: Dict[str, Any] = {"candidates": [cand]}
        if self._usage is not None:
            if self._usage_meta[0] is not self._usage:
                self._usage_meta = (self._usage, encode_usage(self._usage))
            body["usageMetadata"] = self._usage_meta[1]
        body["modelVersion"] = self._model
        body["responseId"] = self._id
        return body

    def encode(self, part: StreamPart) -> bytes:
        if isinstance(part, ResponseStart):
            if part.id:
                self._id = part.id
            if part.usage is not None:
                self._usage = part.usage
        elif isinstance(part, TextDelta):
            if part.text:
                self._count(part.text)
                if self._enum is not None and (self._enum or part.text.startswith('"')):
                    self._enum.append(part.text)
                    return b""
                self._enum = None
                self._answer.append(part.text)
                scores = self._scores.get(part.index)
                entries = scores.matched(part.text) if scores is not None else None
                return self._chunk([{"text": part.text}], merged_scores(entries) if entries else None)
        elif isinstance(part, TokenLogprobs):
            if part.protocol == PROTOCOL:  # another wire's entries have another shape
                self._scores.setdefault(part.index, Scores()).add(part.entries, part.text)
        elif isinstance(part, ReasoningStart):
            self._reasoning[part.index] = {"provider": part.provider, "sig": "", "text": False, "all": [],
                                           "redacted": part.redacted}
        elif isinstance(part, ReasoningDelta):
            r = self._reasoning.setdefault(part.index, {"provider": None, "sig": "", "text": False, "all": [],
                                                        "redacted": None})
            if part.signature:
                r["sig"] += part.signature
            if part.text:
                r["all"].append(part.text)
                self._count(part.text)
                if self._show_thoughts or r["provider"] == PROTOCOL:
                    r["text"] = True
                    return self._chunk([{"text": part.text, "thought": True}])
        elif isinstance(part, ReasoningEnd):
            r = self._reasoning.pop(part.index, None)
            if r is not None:
                sig = part.signature or r["sig"] or None
                if r["provider"] == PROTOCOL:
                    if sig:
                        p: Dict[str, Any] = {"text": "", "thoughtSignature": sig}
                        if r["text"]:
                            p["thought"] = True
                        return self._chunk([p])
                else:
                    # Another vendor's signature is carried opaquely (protocols/carried.py).
                    carried = carry(ReasoningPart("".join(r["all"]), sig, r["redacted"], r["provider"]))
                    if carried:
                        return self._chunk([{"text": "", "thought": True, "thoughtSignature": carried}])
        elif isinstance(part, ToolCallStart):
            self._tools[part.index] = {"id": part.id, "name": part.name, "args": [], "sig": part.signature}
            self._count(part.name)
        elif isinstance(part, ToolCallDelta):
            if part.index in self._tools:
                self._tools[part.index]["args"].append(part.arguments)
                self._count(part.arguments)
        elif isinstance(part, ToolCallEnd):
            call = self._tools.pop(part.index, None)
            if call is not None:
                return self._chunk([self._call_part(call)])
        elif isinstance(part, OpaqueBlock):
            self._count(opaque_text(part.block))  # billed whichever wire it is kept for, as unstreamed
            if part.protocol == PROTOCOL:  # another wire's server-side blocks mean nothing here
                return self._chunk([dict(part.block)])
        elif isinstance(part, UsageUpdate):
            self._usage = part.usage
        elif isinstance(part, Finish):
            self._finish = part.reason
            wire_reason = part.wire_reason or part.extras.get("finishReason")
            if (part.wire == PROTOCOL and isinstance(wire_reason, str)
                    and part.reason is finish_from_wire(wire_reason, [])):
                self._wire_finish = wire_reason  # RECITATION stays RECITATION, not the canonical SAFETY
            if part.wire == PROTOCOL:
                self._same_wire = True
                self._kept = part.extras
        return b""

    def _count(self, text: str) -> None:
        ascii_chars, other_bytes = text_weight(text)
        self._weight = (self._weight[0] + ascii_chars, self._weight[1] + other_bytes)

    def _estimate(self) -> Usage:
        # An upstream that reported no usage: the client still gets the gateway's estimate, non-Latin
        # text weighed by its bytes as for the same answer unstreamed (pipeline `_with_usage`).
        return estimate_usage(self._prompt, weighed_chars(*self._weight))

    @staticmethod
    def _call_part(call: Dict[str, Any]) -> Dict[str, Any]:
        return function_call_part(call["id"], call["name"], "".join(call["args"]), call["sig"])

    def _held_enum(self) -> bytes:
        """The held text/x.enum answer as one chunk, bare when it is a JSON string."""
        text, self._enum = "".join(self._enum or ()), None
        if not text:
            return b""
        if not self._same_wire:  # a Gemini upstream's own answer is already bare
            text = bare_enum(text)
        self._answer.append(text)
        return self._chunk([{"text": text}])

    def close(self) -> bytes:
        out: List[bytes] = [self._held_enum()]
        unfinished = [self._call_part(self._tools.pop(i)) for i in sorted(self._tools)]
        if unfinished:
            out.append(self._chunk(unfinished))
        reason = self._finish or FinishReason.STOP
        if self._usage is None:
            self._usage = self._estimate()
        kept = kept_candidate(self._kept, "".join(self._answer))
        feedback = self._kept.get("promptFeedback")
        body = self._body(self._held or [{"text": ""}], self._wire_finish or FINISH_TO_WIRE[reason],
                          {**self._held_scores, **kept})
        if isinstance(feedback, Mapping):
            body["promptFeedback"] = feedback
            if feedback.get("blockReason") and not self._emitted and not self._held \
                    and reason is FinishReason.CONTENT_FILTER:
                del body["candidates"]  # a blocked prompt: no candidates, as Gemini sends it
        self._held = None
        out.append(self._frame(body))
        if not self._sse:
            out.append(b"]")
        self._closed = True
        return b"".join(out)

    def error(self, err: RouteplaneError) -> bytes:
        # google-genai raises ClientError/ServerError on a chunk whose JSON is {"error": …}.
        enum = "".join(self._enum or ())
        self._enum = None
        before = self._chunk([{"text": enum}]) if enum else b""  # what came of the answer, as it came
        held = self._frame(self._body(self._held, None, self._held_scores)) if self._held else b""
        self._held = None
        frame = before + held + self._frame(error_body(err))
        return frame + (b"]" if not self._sse and not self._closed else b"")


_SCORES = ("logprobsResult", "avgLogprobs")
# A Gemini upstream's candidate fields kept for a Gemini client, from a stream: the scores go with their chunk.
_KEPT_STREAMED = tuple(k for k in KEEP_CANDIDATE if k not in _SCORES)


def _calls(parts: List[Dict[str, Any]]) -> bool:
    return bool(parts) and all("functionCall" in p for p in parts)


def _keep(kept: Dict[str, Any], cand: Mapping[str, Any], cited: Dict[str, Set[str]]) -> None:
    """A chunk's candidate fields into `kept`: the latest of each, but a chunk's citations add to the
    earlier chunks' (each cites its own stretch of the text). `cited`: the JSON of the citations kept so
    far, by list: a chunk's are checked against it, not against the list (quadratic over a long stream)."""
    for key in _KEPT_STREAMED:
        value = cand.get(key)
        if value is None:
            continue
        before = kept.get(key)
        if key == "citationMetadata" and isinstance(value, dict) and isinstance(before, dict):
            merged = {}
            for k, v in value.items():
                if isinstance(v, list) and isinstance(before.get(k), list):
                    if k not in cited:
                        cited[k] = {_cite_key(c) for c in before[k]}
                    merged[k] = _cited(before[k], v, cited[k])
                else:
                    cited.pop(k, None)  # replaced by this chunk's value
            value = {**before, **value, **merged}
        elif key == "citationMetadata":
            cited.clear()
        kept[key] = value


def _cited(before: List[Any], new: List[Any], seen: Set[str]) -> List[Any]:
    """`before`, and the citations of `new` that are not in it (`seen`, their JSON), which `seen` then holds."""
    added = [c for c in new if _cite_key(c) not in seen]
    seen.update(_cite_key(c) for c in added)
    return before + added


def _cite_key(citation: Any) -> str:
    try:
        return json.dumps(citation, sort_keys=True)
    except (RecursionError, ValueError):  # nested too deep to compare: one of its own
        return f"#{id(citation)}"


def merged_scores(entries: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The candidate fields for a chunk whose text several upstream chunks scored (a hook joined their
    text): their tokens in order, the sum of their log probabilities, the average over all tokens."""
    if len(entries) == 1:
        return dict(entries[0])
    results = [e.get("logprobsResult") for e in entries]
    if not all(isinstance(r, dict) for r in results):
        return {}
    merged: Dict[str, Any] = {}
    for key in ("topCandidates", "chosenCandidates"):
        if all(isinstance(r.get(key), list) for r in results):
            merged[key] = [c for r in results for c in r[key]]
    sums = [r.get("logProbabilitySum") for r in results]
    if all(isinstance(v, (int, float)) for v in sums):
        merged["logProbabilitySum"] = sum(sums)
    out: Dict[str, Any] = {"logprobsResult": merged}
    counts = [len(r.get("chosenCandidates") or ()) for r in results]
    avgs = [e.get("avgLogprobs") for e in entries]
    if all(isinstance(v, (int, float)) for v in avgs) and sum(counts):
        out["avgLogprobs"] = sum(a * n for a, n in zip(avgs, counts)) / sum(counts)
    return out


class GeminiStreamDecoder(StreamDecoder):
    """No terminator exists on this wire: a clean close after a finishReason is
    success, a close without one is an upstream failure. usageMetadata counts are
    running totals, so the last one wins."""

    def __init__(self, target: RoutingTarget) -> None:
        self._target = target
        self._started = False
        self._next_block = 0
        self._text: Optional[int] = None
        self._reasoning: Optional[int] = None
        self._reasoning_sig: Optional[str] = None
        self._reasoning_held = False  # thoughts ended, their ReasoningEnd waits for a late signature
        self._finish: Optional[str] = None
        self._blocked = False
        self._usage: Optional[Usage] = None
        self._usage_raw: Any = None
        self._grounding = GroundingCalls()  # over all chunks: the metadata often comes in the last ones
        self._tools = False
        # For a Gemini client (Finish.extras, as an unstreamed answer's Generation.extras): the candidate's
        # fields of the answer as a whole, the latest of each (they come on the last chunks), the
        # answer's text they may index, and the prompt's feedback.
        self._kept: Dict[str, Any] = {}
        self._cited: Dict[str, Set[str]] = {}  # the JSON of the kept citations, by list (_keep)
        self._answer: List[str] = []
        self._feedback: Optional[Dict[str, Any]] = None

    def feed(self, event: SSEEvent) -> List[StreamPart]:
        data = event.data.strip()
        if not data:
            return []
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise bad_upstream(self._target, "a stream chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise bad_upstream(self._target, "a stream chunk is not an object")
        if isinstance(chunk.get("error"), dict):
            raise error_in_body(chunk["error"], self._target, mid_stream=True)
        out: List[StreamPart] = []
        # usageMetadata may come on every chunk, cumulative (last wins). The first chunk's goes out
        # with the start (input known up front), a changed one after the chunk's parts, so a client
        # and the settlement of a stream cut short see the upstream's counts so far.
        raw_usage = chunk.get("usageMetadata")
        usage = decode_usage(raw_usage) if raw_usage != self._usage_raw else None
        self._grounding.add(chunk.get("candidates"))
        if usage is not None:
            self._usage_raw = raw_usage
        elif self._usage is not None and self._usage.tool_calls != self._grounding.calls():
            usage = self._usage  # grounding after the last counts: the same tokens, more calls
        if usage is not None:
            self._usage = usage = self._grounding.on(usage)
        if not self._started:
            self._started = True
            out.append(ResponseStart(str(chunk.get("responseId") or ""),
                                     str(chunk.get("modelVersion") or self._target.model), usage=usage))
            usage = None
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, dict):
            self._feedback = feedback
            if feedback.get("blockReason"):
                self._blocked = True
        candidates = chunk.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            cand = candidates[0]
            content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
            parts = content.get("parts")
            start = len(out)
            for raw in parts if isinstance(parts, list) else []:
                if isinstance(raw, dict):
                    out.extend(self._part(raw))
            _score(out, start, {k: cand[k] for k in _SCORES if cand.get(k) is not None})
            _keep(self._kept, cand, self._cited)
            if isinstance(cand.get("finishReason"), str):
                self._finish = cand["finishReason"]
        if usage is not None:
            out.append(UsageUpdate(usage))
        return out

    def _block(self) -> int:
        self._next_block += 1
        return self._next_block - 1

    def _part(self, raw: Dict[str, Any]) -> List[StreamPart]:
        wrong = mistyped_part(raw)
        if wrong:
            raise bad_upstream(self._target, wrong)
        out: List[StreamPart] = []
        sig = raw.get("thoughtSignature") if isinstance(raw.get("thoughtSignature"), str) else None
        call = raw.get("functionCall")
        if isinstance(call, dict):
            out.extend(self._close_text() + self._pause_reasoning())
            block = self._block()
            self._tools = True
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else synthetic_id()
            args = call.get("args") if call.get("args") is not None else {}
            out.append(ToolCallStart(block, call_id, str(call.get("name") or ""), sig))
            out.append(ToolCallDelta(block, json.dumps(args, separators=(",", ":"))))
            out.append(ToolCallEnd(block))
            return out
        if not isinstance(raw.get("text"), str) and is_opaque(raw):
            # A chunk's parts are whole: an executableCode or codeExecutionResult goes out at once, as
            # its own block between the text before and after it.
            out.extend(self._close_text() + self._pause_reasoning())
            out.append(OpaqueBlock(self._block(), PROTOCOL, raw))
            return out
        text = raw.get("text") if isinstance(raw.get("text"), str) else ""
        if raw.get("thought"):
            if not text and sig and self._reasoning is not None:
                # The signature of the thoughts often comes last, on an empty thought part.
                self._reasoning_sig = sig
                if self._reasoning_held:
                    out.extend(self._close_reasoning())
                return out
            if self._reasoning is None or self._reasoning_held:
                out.extend(self._close_reasoning() + self._close_text())
                self._reasoning = self._block()
                out.append(ReasoningStart(self._reasoning, PROTOCOL))
            if text:
                out.append(ReasoningDelta(self._reasoning, text))
            if sig:
                self._reasoning_sig = sig
            return out
        if self._reasoning is not None and self._reasoning_sig is None:
            # Hold the end of unsigned thoughts: their signature may still come.
            self._reasoning_held = True
        else:
            out.extend(self._close_reasoning())
        if text:
            if self._text is None:
                self._text = self._block()
                out.append(TextStart(self._text))
            out.append(TextDelta(self._text, text))
            self._answer.append(text)
        if sig:
            # A signature on a text part: a signature-only reasoning block after it.
            out.extend(self._close_text())
            block = self._block()
            out.extend([ReasoningStart(block, PROTOCOL), ReasoningEnd(block, sig)])
        return out

    def _pause_reasoning(self) -> List[StreamPart]:
        """Thoughts end where a call or a server-side part begins; unsigned ones are held open
        (their end waits), since their signature may come in a later empty thought part."""
        if self._reasoning is not None and self._reasoning_sig is None:
            self._reasoning_held = True
            return []
        return self._close_reasoning()

    def _close_text(self) -> List[StreamPart]:
        if self._text is None:
            return []
        block, self._text = self._text, None
        return [TextEnd(block)]

    def _close_reasoning(self) -> List[StreamPart]:
        if self._reasoning is None:
            return []
        block, sig = self._reasoning, self._reasoning_sig
        self._reasoning = self._reasoning_sig = None
        self._reasoning_held = False
        return [ReasoningEnd(block, sig)]

    def finish(self) -> List[StreamPart]:
        if self._finish is None and not self._blocked:
            raise bad_upstream(self._target, "the stream closed before a finishReason arrived")
        out: List[StreamPart] = self._close_reasoning() + self._close_text()
        if not self._started:
            out.insert(0, ResponseStart("", self._target.model))
        if self._usage is not None:
            out.append(UsageUpdate(self._usage))
        if self._blocked and self._finish is None:
            reason = FinishReason.CONTENT_FILTER
        else:
            reason = finish_from_wire(self._finish, [])
            if self._tools and reason is FinishReason.STOP:
                reason = FinishReason.TOOL_CALLS
        extras: Dict[str, Any] = {}
        if self._kept:
            extras = {"candidate": dict(self._kept), TEXT_KEY: "".join(self._answer)}
        if self._feedback is not None:
            extras["promptFeedback"] = self._feedback
        out.append(Finish(reason, wire_reason=self._finish, wire=PROTOCOL, extras=extras))
        return out


def _score(out: List[StreamPart], start: int, scores: Dict[str, Any]) -> None:
    """A chunk's logprobsResult / avgLogprobs (asked for with responseLogprobs) score its answer text: a
    TokenLogprobs just before the first TextDelta of that text. Scores of text a call or a server-side
    part split into two blocks are left out: no one block's text is theirs."""
    if not isinstance(scores.get("logprobsResult"), dict):
        return
    deltas = [(i, p) for i, p in enumerate(out[start:], start) if isinstance(p, TextDelta)]
    if not deltas or len({p.index for _, p in deltas}) != 1:
        return
    first, block = deltas[0][0], deltas[0][1].index
    out.insert(first, TokenLogprobs(block, PROTOCOL, (scores,), "".join(p.text for _, p in deltas)))
