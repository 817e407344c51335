"""OpenAI Chat Completions SSE: canonical parts → chunks (client), chunks → parts (provider)."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from ...errors import RouteplaneError
from ...ids import new_hex
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    Finish,
    FinishReason,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    ResponseStart,
    StreamPart,
    TextAnnotation,
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
from ..scores import Scores
from ..sse import SSEEvent, dumps
from .citations import chat_citation
from .response import (
    FAILED_FINISH,
    FINISH_FROM_WIRE,
    FINISH_TO_WIRE,
    KEEP_EXTRAS,
    PROTOCOL,
    decode_usage,
    encode_usage,
    error_body,
    error_in_body,
    finish_error,
    legacy_functions,
    synthetic_call_id,
    with_search_calls,
)

_DONE = b"data: [DONE]\n\n"


class ChatStreamEncoder(StreamEncoder):
    """Emits `id`, `type` and `function.name` once per tool call: the OpenAI SDK's
    accumulator concatenates repeated strings (\"call_acall_a\")."""

    def __init__(self, prompt: Prompt, reasoning_field: Optional[str] = None) -> None:
        self._reasoning_field = reasoning_field  # opted in (server.openai_chat_reasoning), else reasoning is left out
        self._model = prompt.model
        self._include_usage = prompt.include_usage
        self._id = f"chatcmpl-{new_hex()}"  # an upstream without an id (ResponseStart.id "") still gets a unique one
        self._created = int(time.time())
        self._started = False
        self._tool_index: Dict[int, int] = {}  # canonical block index → OpenAI tool_calls index
        self._custom_index: Dict[int, int] = {}  # the same for custom tool calls (their deltas differ)
        self._refusals: Set[int] = set()  # canonical text blocks that are the model's refusal
        self._usage: Optional[Usage] = None
        self._finished = False
        # A legacy `functions` client: the (one) call streams as delta.function_call.
        self._legacy = legacy_functions(prompt)
        self._function_call: Optional[int] = None  # its canonical block index
        self._scores: Dict[int, Scores] = {}  # text block index → its pending log probabilities
        self._extras: Dict[str, Any] = {}  # a Chat upstream's service_tier / system_fingerprint, for every chunk
        # Where each text block starts in `content`: a Responses citation indexes its own part, a Chat one the content.
        self._content_chars = 0
        self._bases: Dict[int, int] = {}
        self._notes: List[Dict[str, Any]] = []  # citations, sent together before the finish chunk
        self._said = False  # content (even ""), a refusal or a call went out: else the finish chunk sets ""
        self._no_args: Set[int] = set()  # function calls (canonical index) whose arguments have not begun

    def _chunk(self, delta: Dict[str, Any], finish: Optional[str] = None, logprobs: Any = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        if self._extras:
            chunk.update(self._extras)
        return b"data: " + dumps(chunk).encode() + b"\n\n"

    def _start(self, out: List[bytes], content: Optional[str]) -> None:
        """The role chunk, sent with the first thing the client sees (the pipeline holds a stream's opening
        until then anyway). Its `content` is "" before text, null before a call, a refusal or reasoning, as
        OpenAI's (DeepSeek's) are: the SDK's stream accumulator keeps that first value, and a "" before calls
        made their answer's content "" where the unstreamed one has null."""
        if not self._started:
            self._started = True
            self._said = self._said or content is not None
            out.append(self._chunk({"role": "assistant", "content": content, "refusal": None}))

    def encode(self, part: StreamPart) -> bytes:
        out: List[bytes] = []
        if isinstance(part, ResponseStart):
            if part.id:
                self._id = part.id if part.id.startswith("chatcmpl") else f"chatcmpl-{part.id}"
            if part.created:
                self._created = part.created
            if part.wire == PROTOCOL and part.extras:
                self._extras = {k: part.extras[k] for k in KEEP_EXTRAS if k in part.extras}
        elif isinstance(part, TextStart):
            if part.refusal:
                self._refusals.add(part.index)
            else:
                self._bases[part.index] = self._content_chars
        elif isinstance(part, TextDelta):
            if part.text:
                if part.index in self._refusals:
                    key = "refusal"
                else:
                    key = "content"
                    self._content_chars += len(part.text)
                self._start(out, "" if key == "content" else None)
                scores = self._scores.get(part.index)
                entries = scores.matched(part.text) if scores is not None else None
                logprobs = None if entries is None else {"content": None, "refusal": None, key: entries}
                self._said = True
                out.append(self._chunk({key: part.text}, logprobs=logprobs))
        elif isinstance(part, TokenLogprobs):
            if part.protocol == PROTOCOL:
                self._scores.setdefault(part.index, Scores()).add(part.entries, part.text)
        elif isinstance(part, TextAnnotation):
            note = None if part.index in self._refusals else chat_citation(
                part.annotation, part.protocol, self._bases.get(part.index, 0))
            if note is not None:
                self._notes.append(note)
        elif isinstance(part, ReasoningDelta):
            if self._reasoning_field is not None and part.text:
                self._start(out, None)
                out.append(self._chunk({self._reasoning_field: part.text}))
        elif isinstance(part, ToolCallStart) and self._legacy and not part.custom:
            self._start(out, None)
            if self._function_call is None:  # one call a turn: later ones have no legacy form
                self._function_call = part.index
                self._said = True
                self._no_args.add(part.index)
                out.append(self._chunk({"function_call": {"name": part.name, "arguments": ""}}))
        elif isinstance(part, ToolCallDelta) and self._legacy and part.index == self._function_call:
            if part.arguments:
                self._no_args.discard(part.index)
                out.append(self._chunk({"function_call": {"arguments": part.arguments}}))
        elif isinstance(part, ToolCallStart):
            self._start(out, None)
            k = len(self._tool_index) + len(self._custom_index)
            if part.custom:
                k = self._custom_index.setdefault(part.index, k)
                call = {"index": k, "id": part.id, "type": "custom", "custom": {"name": part.name, "input": ""}}
            else:
                k = self._tool_index.setdefault(part.index, k)
                call = {"index": k, "id": part.id, "type": "function", "function": {"name": part.name, "arguments": ""}}
                self._no_args.add(part.index)
            self._said = True
            out.append(self._chunk({"tool_calls": [call]}))
        elif isinstance(part, ToolCallDelta):
            k = self._tool_index.get(part.index)
            if k is not None and part.arguments:
                self._no_args.discard(part.index)
                out.append(self._chunk({"tool_calls": [{"index": k, "function": {"arguments": part.arguments}}]}))
            elif k is None and part.arguments and part.index in self._custom_index:
                k = self._custom_index[part.index]
                out.append(self._chunk({"tool_calls": [{"index": k, "custom": {"input": part.arguments}}]}))
        elif isinstance(part, ToolCallEnd):
            self._empty_arguments(out, part.index)
        elif isinstance(part, UsageUpdate):
            self._usage = part.usage
        elif isinstance(part, Finish):
            self._start(out, "")
            self._finished = True
            self._empty_arguments(out)
            self._send_notes(out)
            reason = FINISH_TO_WIRE[part.reason]
            if reason == "tool_calls" and self._function_call is not None:
                reason = "function_call"
            out.append(self._last_chunk(reason))
        # Block markers have no Chat Completions form; reasoning is shown only when opted in.
        return b"".join(out)

    def _empty_arguments(self, out: List[bytes], *indexes: int) -> None:
        """A function call that ended without arguments (a call of a tool without parameters: Anthropic,
        Responses and Chat upstreams stream none) gets "{}", as the unstreamed answer's does: the SDK
        parses a strict tool's arguments as JSON, and "" is not."""
        for i in indexes or sorted(self._no_args):
            if i not in self._no_args:
                continue
            self._no_args.discard(i)
            if i == self._function_call:
                out.append(self._chunk({"function_call": {"arguments": "{}"}}))
            elif i in self._tool_index:
                out.append(self._chunk({"tool_calls": [{"index": self._tool_index[i], "function": {"arguments": "{}"}}]}))

    def _last_chunk(self, reason: str) -> bytes:
        """The finish chunk; for an answer of only (shown) reasoning, with the `content: ""` the unstreamed one has."""
        return self._chunk({} if self._said else {"content": ""}, reason)

    def _send_notes(self, out: List[bytes]) -> None:
        """The citations as OpenAI streams a search model's: one chunk of `delta.annotations` after the text.
        One only: the OpenAI SDK's stream accumulator merges a second list by an `index` its entries lack."""
        if self._notes:
            out.append(self._chunk({"annotations": self._notes}))
            self._notes = []

    def close(self) -> bytes:
        out: List[bytes] = []
        if not self._finished:
            self._start(out, "")
            self._empty_arguments(out)
            self._send_notes(out)
            out.append(self._last_chunk("stop"))
        if self._include_usage:
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": encode_usage(self._usage or Usage(reported=False)),
                **self._extras,
            }
            out.append(b"data: " + dumps(chunk).encode() + b"\n\n")
        out.append(_DONE)
        return b"".join(out)

    def error(self, err: RouteplaneError) -> bytes:
        # A `data:` object with an `error` key makes the OpenAI SDK raise APIError.
        return b"data: " + dumps(error_body(err)).encode() + b"\n\n"


def _custom_fragment(frag: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
    """A tool call fragment without `function`: a custom call's `custom` and its text field."""
    custom = frag.get("custom")
    if isinstance(custom, dict) or frag.get("type") == "custom":
        return (custom if isinstance(custom, dict) else {}), "input"
    return {}, "arguments"


def _complete_json(text: str) -> bool:
    """Are a call's arguments so far a whole JSON object (so that more text cannot belong to them)?"""
    if not text.rstrip().endswith("}"):  # cheap: a server may repeat the name on every fragment
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _logprobs(scores: Optional[Dict[str, Any]], key: str, index: int, text: str) -> List[StreamPart]:
    """A chunk's `logprobs.content` (or `.refusal`) entries for its text, as a TokenLogprobs."""
    entries = scores.get(key) if scores is not None else None
    if not isinstance(entries, list) or not entries:
        return []
    return [TokenLogprobs(index, PROTOCOL, tuple(entries), text)]


class ChatStreamDecoder(StreamDecoder):
    """Provider chunks → parts. Finish is held until `[DONE]` so that the usage
    chunk (which OpenAI sends after finish_reason) comes before it."""

    def __init__(self, target: RoutingTarget) -> None:
        self._target = target
        self._started = False
        self._done = False
        self._next_block = 0
        self._text_block: Optional[int] = None
        self._last_text: Optional[int] = None  # the text block opened last, open or not, for late annotations
        self._refusal_block: Optional[int] = None
        self._reasoning_block: Optional[int] = None
        self._tools: Dict[int, int] = {}  # OpenAI tool index → canonical block index
        self._tool_ids: Dict[int, str] = {}  # OpenAI tool index → the id its first fragment carried
        self._tool_args: Dict[int, str] = {}  # OpenAI tool index → its call's arguments so far
        self._tool_blocks: List[int] = []  # every tool block opened, to close them all at the end
        self._finish: Optional[FinishReason] = None
        self._usage: Optional[Usage] = None
        self._sent_usage: Any = None  # the raw usage last passed on as a UsageUpdate

    def feed(self, event: SSEEvent) -> List[StreamPart]:
        if self._done:
            return []
        data = event.data.strip()
        if not data:
            return []
        if data == "[DONE]":
            self._done = True
            return self._close_all() + self._tail()
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise bad_upstream(self._target, "a stream chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise bad_upstream(self._target, "a stream chunk is not an object")
        if chunk.get("error"):
            raise error_in_body(chunk["error"], self._target, mid_stream=True)
        out: List[StreamPart] = []
        choices = chunk.get("choices")
        first = [c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0] if isinstance(choices, list) else ()
        if not self._started and (first or chunk.get("id")):
            # Started by the first chunk that says something of the answer: Azure opens with one that does
            # not (no id, no choices, only its prompt_filter_results). The answer's own fields are read here,
            # once: OpenAI repeats them on every chunk.
            self._started = True
            extras = {k: chunk[k] for k in KEEP_EXTRAS if k in chunk}
            out.append(ResponseStart(str(chunk.get("id") or ""), str(chunk.get("model") or self._target.model),
                                     chunk.get("created") if isinstance(chunk.get("created"), int) else 0,
                                     wire=PROTOCOL if extras else None, extras=extras))
        raw_usage = chunk.get("usage")
        if raw_usage is None and first and "usage" in first[0]:
            raw_usage = first[0]["usage"]  # Moonshot (Kimi) sends it inside the last chunk's choice
        usage = decode_usage(raw_usage) if raw_usage is not None else None
        if usage is not None:
            self._usage = with_search_calls(usage, chunk.get("model"), self._target.model)
        for choice in first:
            out.extend(self._choice(choice))
        if usage is not None and self._started and raw_usage != self._sent_usage:
            # Passed on as it comes, not held for [DONE]: a server that reports usage on every chunk (vLLM's
            # continuous_usage_stats) has told the real counts by then, and a stream cut or left before its
            # end is billed by them rather than by an estimate. Encoders keep the last one they are given.
            self._sent_usage = raw_usage
            out.append(UsageUpdate(self._usage))
        return out

    def _choice(self, choice: Dict[str, Any]) -> List[StreamPart]:
        out: List[StreamPart] = []
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self._reasoning_block is None:
                out.extend(self._close_text() + self._close_refusal())
                self._reasoning_block = self._block()
                out.append(ReasoningStart(self._reasoning_block, PROTOCOL))
            out.append(ReasoningDelta(self._reasoning_block, reasoning))
        scores = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else None
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self._text_block is None:
                out.extend(self._close_reasoning() + self._close_refusal())
                self._text_block = self._last_text = self._block()
                out.append(TextStart(self._text_block))
            out.extend(_logprobs(scores, "content", self._text_block, content))
            out.append(TextDelta(self._text_block, content))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            if self._refusal_block is None:
                out.extend(self._close_reasoning() + self._close_text())
                self._refusal_block = self._block()
                out.append(TextStart(self._refusal_block, refusal=True))
            out.extend(_logprobs(scores, "refusal", self._refusal_block, refusal))
            out.append(TextDelta(self._refusal_block, refusal))
        notes = delta.get("annotations")
        if notes:
            out.extend(self._notes(notes))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for frag in calls:
                out.extend(self._tool_fragment(frag))
        reason = choice.get("finish_reason")
        if reason in FAILED_FINISH:
            raise finish_error(choice, self._target, mid_stream=True)
        if isinstance(reason, str) and reason:
            self._finish = FINISH_FROM_WIRE.get(reason, FinishReason.STOP)
        return out

    def _tool_fragment(self, frag: Any) -> List[StreamPart]:
        if not isinstance(frag, dict):
            raise bad_upstream(self._target, "malformed tool call fragment")
        idx = frag.get("index")
        unindexed = idx is None  # some compatible servers leave it out (or null) on every fragment
        idx = 0 if unindexed else idx
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise bad_upstream(self._target, "a tool call fragment without an integer index")
        fn = frag.get("function")
        key = "arguments"
        if not isinstance(fn, dict):  # a custom tool call's fragment carries `custom: {name, input}`
            fn, key = _custom_fragment(frag)
        call_id = frag.get("id") if isinstance(frag.get("id"), str) else ""
        seen_id = self._tool_ids.get(idx, "")
        out: List[StreamPart] = []
        # Some OpenAI-compatible servers send every parallel call with index 0: a new id on a known
        # index starts a new call instead of merging arguments. Others send each call whole, with no
        # index and no id: a named fragment after arguments that are already complete JSON is the next call.
        if (idx not in self._tools or (call_id and seen_id and call_id != seen_id)
                or (unindexed and key == "arguments" and fn.get("name") and not (call_id and call_id == seen_id)
                    and _complete_json(self._tool_args.get(idx, "")))):
            out.extend(self._close_text() + self._close_refusal() + self._close_reasoning())
            self._tools[idx] = self._block()
            self._tool_blocks.append(self._tools[idx])
            self._tool_ids[idx] = call_id
            self._tool_args[idx] = ""
            out.append(ToolCallStart(self._tools[idx], call_id or synthetic_call_id(),
                                     str(fn.get("name") or ""), custom=key == "input"))
        args = fn.get(key)
        if isinstance(args, (dict, list)) and key == "arguments":
            args = json.dumps(args)  # some compatible servers stream the arguments as an object
        if isinstance(args, str) and args:
            self._tool_args[idx] += args
            out.append(ToolCallDelta(self._tools[idx], args))
        return out

    def _notes(self, notes: Any) -> List[StreamPart]:
        """A search model's `delta.annotations` (OpenAI sends them after the text, in a chunk without content):
        on the text block open, else the last one. They index the whole content, as unstreamed."""
        block = self._text_block if self._text_block is not None else self._last_text
        if block is None or not isinstance(notes, list):
            return []
        return [TextAnnotation(block, PROTOCOL, n) for n in notes if isinstance(n, dict)]

    def _block(self) -> int:
        self._next_block += 1
        return self._next_block - 1

    def _close_text(self) -> List[StreamPart]:
        if self._text_block is None:
            return []
        i, self._text_block = self._text_block, None
        return [TextEnd(i)]

    def _close_refusal(self) -> List[StreamPart]:
        if self._refusal_block is None:
            return []
        i, self._refusal_block = self._refusal_block, None
        return [TextEnd(i)]

    def _close_reasoning(self) -> List[StreamPart]:
        if self._reasoning_block is None:
            return []
        i, self._reasoning_block = self._reasoning_block, None
        return [ReasoningEnd(i)]

    def _close_all(self) -> List[StreamPart]:
        out = self._close_reasoning() + self._close_text() + self._close_refusal()
        out.extend(ToolCallEnd(i) for i in self._tool_blocks)
        return out

    def _tail(self) -> List[StreamPart]:
        out: List[StreamPart] = []
        if not self._started:
            self._started = True
            out.append(ResponseStart("", self._target.model))
        if self._usage is not None and self._sent_usage is None:
            out.append(UsageUpdate(self._usage))
        reason = self._finish or FinishReason.STOP
        if self._tools and reason is FinishReason.STOP:
            reason = FinishReason.TOOL_CALLS
        out.append(Finish(reason))
        return out

    def finish(self) -> List[StreamPart]:
        if not self._done:
            raise bad_upstream(self._target, "the stream ended without its [DONE] terminator")
        return []
