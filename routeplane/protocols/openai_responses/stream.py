"""OpenAI Responses SSE to a client: canonical parts → named events (the provider side: stream_decode.py)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...errors import RouteplaneError
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
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    TokenLogprobs,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from ..base import StreamEncoder
from ..openai_chat.citations import CHAT, responses_citation
from ..scores import Scores
from ..sse import frame
from .echo import upstream_tier
from .reasoning import is_summary_break, unpack_reasoning_signature
from .request import PROTOCOL
from .response import (
    CUTTABLE,
    CallIds,
    content_part,
    custom_call_item,
    failed_code,
    function_call_item,
    is_cut,
    message_item,
    new_id,
    reasoning_identity,
    reasoning_item,
    reasoning_summary,
    response_id,
    response_object,
    status_of,
)
from .response import error_body as _error_body


@dataclass
class _Item:
    kind: str  # message | function_call | custom_tool_call | reasoning | opaque (a hosted tool's whole item)
    output_index: int = -1  # -1: not announced yet (reasoning is announced lazily)
    id: str = ""
    text: List[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    provider: Optional[str] = None
    redacted: Optional[str] = None
    signature: Optional[str] = None
    part_open: bool = False
    refusal: bool = False  # a message whose one content part is the model's refusal
    notes: List[Dict[str, Any]] = field(default_factory=list)  # a message's output_text annotations
    logprobs: List[Any] = field(default_factory=list)  # a message's output_text logprobs, as released
    # A message continued by the next text block: its finished content parts (and their logprobs), and
    # each block's content_index. The fields above are the part being written, at len(earlier).
    earlier: List[Tuple[TextPart, List[Any]]] = field(default_factory=list)
    earlier_notes: Dict[int, List[Dict[str, Any]]] = field(default_factory=dict)  # late ones, by content_index
    positions: Dict[int, int] = field(default_factory=dict)
    fields: Optional[Mapping[str, Any]] = None  # a message's own fields (its phase: TextPart.part_fields)
    summary: List[str] = field(default_factory=list)  # reasoning streamed live: its parts, the last open if part_open

    def part(self) -> TextPart:
        return TextPart("".join(self.text), refusal=self.refusal, annotations=tuple(self.notes),
                        annotations_protocol=PROTOCOL, part_fields=self.fields,
                        part_fields_protocol=PROTOCOL if self.fields else None)


def _ends_an_object(fragments: List[str]) -> bool:
    """Can the text these fragments make be a JSON object, which ends with `}`?"""
    for piece in reversed(fragments):
        tail = piece.rstrip()
        if tail:
            return tail.endswith("}")
    return False


class ResponsesStreamEncoder(StreamEncoder):
    """Items are emitted one after another (a new block closes the open ones), so
    deltas of two items never interleave; every event carries the next
    `sequence_number`; the terminal event carries the whole response.

    The last item's `output_item.done` waits for the next item or the end: only the
    end tells whether a max_output_tokens stop cut it, which makes it `incomplete`.

    Reasoning streams as it arrives. OpenAI's own keeps its item id, which must match between
    `output_item.added`, `.done` and `response.completed` (the SDK checks it): the upstream's stream gives
    it ahead of the text, and where each summary part begins (reasoning.py). Without it (the upstream's
    done item was its first word) the item is held to its end, whose signature holds both."""

    def __init__(self, prompt: Prompt) -> None:
        self._prompt = prompt
        self._seq = 0
        self._id = new_id("resp")
        self._created = int(time.time())
        self._started = False
        self._open: Dict[int, _Item] = {}
        self._closed: Dict[int, _Item] = {}
        self._queued: Dict[int, List[StreamPart]] = {}
        self._output: Dict[int, Dict[str, Any]] = {}
        # Done items that late parts changed (a message's annotations, a call's arguments): their final item is
        # rebuilt once, when next read (rebuilding it for each part cost quadratic time on thousands of citations).
        self._stale: Dict[int, _Item] = {}
        self._next_index = 0
        self._held: Optional[int] = None  # the output_index whose output_item.done waits (_release)
        # A call closed without arguments, and the blank text it streamed: its `.done` waits too (_bare_done).
        self._bare: Optional[Tuple[int, str]] = None
        self._usage: Optional[Usage] = None
        self._finish: Optional[FinishReason] = None
        self._ended = False
        self._scores: Dict[int, Scores] = {}  # text block index → its pending log probabilities
        self._call_ids = CallIds()
        self._tier: Optional[str] = None  # the service tier the upstream said it served on
        # The output as `output_chars()` weighs an unstreamed answer, for an estimate when no usage comes:
        # (ASCII characters, UTF-8 bytes of the others), summed over the parts and weighed once.
        self._weight = (0, 0)

    # --- framing ---

    def _event(self, out: List[bytes], kind: str, **payload: Any) -> None:
        out.append(frame({"type": kind, "sequence_number": self._seq, **payload}, event=kind))
        self._seq += 1

    def _response(self, status: str, **kw: Any) -> Dict[str, Any]:
        self._refresh()
        output = [self._output[i] for i in sorted(self._output)]
        return response_object(self._id, self._prompt, self._created, status, output, kw.pop("usage", None), **kw,
                               served_tier=self._tier)

    def _start(self, out: List[bytes]) -> None:
        if not self._started:
            self._started = True
            self._event(out, "response.created", response=self._response("in_progress"))
            self._event(out, "response.in_progress", response=self._response("in_progress"))

    # --- parts ---

    def encode(self, part: StreamPart) -> bytes:
        out: List[bytes] = []
        if isinstance(part, ResponseStart):
            if not self._started:
                self._tier = upstream_tier(part.wire, part.extras)  # an OpenAI Chat upstream's, from its start
                if part.id:
                    self._id = response_id(part.id)
                if part.created:
                    self._created = part.created
            self._start(out)
            return b"".join(out)
        self._start(out)
        self._count(part)
        if isinstance(part, UsageUpdate):
            self._usage = part.usage
        elif isinstance(part, Finish):
            self._finish = part.reason
            self._tier = upstream_tier(part.wire, part.extras) or self._tier
        elif isinstance(part, OpaqueBlock) and part.protocol != PROTOCOL:
            # Another wire's server-tool block: this wire has no form for it, but it still ends the message
            # (text after it is a message of its own), as in the non-streamed answer.
            for other in list(self._open):
                self._close(out, other)
            self._release(out)
        elif isinstance(part, TextAnnotation) and part.protocol == CHAT:
            note = responses_citation(part.annotation, part.protocol)  # a Chat URL citation, in this wire's shape
            if note is not None:
                self._route(replace(part, protocol=PROTOCOL, annotation=note), out)
        elif isinstance(part, (TextAnnotation, TokenLogprobs)) and part.protocol != PROTOCOL:
            pass  # another wire's citation or log probabilities: this wire has no form for them
        elif isinstance(part, TokenLogprobs):
            # Kept by block, whatever item it is in now: released with the delta completing their text.
            self._scores.setdefault(part.index, Scores()).add(part.entries, part.text)
        else:
            self._route(part, out)
        return b"".join(out)

    def _count(self, part: StreamPart) -> None:
        """Adds what the part carries to the output's weight (`_weight`), as the pipeline's accumulator counts it."""
        if isinstance(part, (TextDelta, ReasoningDelta)):
            text = part.text
        elif isinstance(part, ToolCallStart):
            text = part.name
        elif isinstance(part, ToolCallDelta):
            text = part.arguments
        elif isinstance(part, OpaqueBlock):
            text = opaque_text(part.block)  # billed whichever wire it is kept for, as unstreamed
        else:
            return
        ascii_chars, other_bytes = text_weight(text)
        self._weight = (self._weight[0] + ascii_chars, self._weight[1] + other_bytes)

    # A block that starts while a function call is still taking arguments waits
    # in a queue (Chat upstreams may interleave fragments of parallel calls):
    # the live call ends first, so its item is complete when it is closed.

    def _route(self, part: StreamPart, out: List[bytes]) -> None:
        index = part.index  # type: ignore[union-attr]
        if index in self._queued:
            self._queued[index].append(part)
            return
        new_block = index not in self._open and not (index in self._closed and isinstance(part, (
            TextEnd, ReasoningEnd, ToolCallEnd, ToolCallDelta, ReasoningDelta, TextAnnotation)))
        if new_block and not self._live_closable():
            self._queued[index] = [part]
            return
        self._apply(part, out)
        self._drain(out)

    def _live_closable(self) -> bool:
        for item in self._open.values():
            if item.kind == "function_call":
                if not _ends_an_object(item.text):  # parsing all of them at each fragment was quadratic
                    return False
                try:
                    return isinstance(json.loads("".join(item.text) or "null"), dict)
                except (ValueError, RecursionError):  # RecursionError: nested too deep
                    return False
            if item.kind == "custom_tool_call":
                return False  # free text is never visibly complete: the call's end closes it
        return True

    def _drain(self, out: List[bytes]) -> None:
        while self._queued and self._live_closable():
            index = next(iter(self._queued))
            for part in self._queued.pop(index):
                self._apply(part, out)

    def _apply(self, part: StreamPart, out: List[bytes]) -> None:
        if isinstance(part, TextStart):
            fields = part.part_fields if part.part_fields_protocol == PROTOCOL else None
            self._text_item(out, part.index, part.refusal, fields)
        elif isinstance(part, TextDelta):
            item = self._text_item(out, part.index)
            if item is not None and part.text:
                item.text.append(part.text)
                if item.refusal:
                    self._event(out, "response.refusal.delta", item_id=item.id, output_index=item.output_index,
                                content_index=len(item.earlier), delta=part.text)
                else:
                    scores = self._scores.get(part.index)
                    entries = [dict(x) for x in scores.matched(part.text) or ()] if scores is not None else []
                    item.logprobs.extend(entries)
                    self._event(out, "response.output_text.delta", item_id=item.id, output_index=item.output_index,
                                content_index=len(item.earlier), delta=part.text, logprobs=entries)
        elif isinstance(part, TextAnnotation):
            self._annotate(out, part)
        elif isinstance(part, OpaqueBlock):
            self._opaque(out, part)
        elif isinstance(part, (TextEnd, ReasoningEnd, ToolCallEnd)):
            if isinstance(part, ReasoningEnd) and part.index in self._open and part.signature:
                self._open[part.index].signature = part.signature
            self._close(out, part.index)
        elif isinstance(part, ReasoningStart):
            self._begin(out, part.index, _Item("reasoning", provider=part.provider, redacted=part.redacted))
        elif isinstance(part, ReasoningDelta):
            item = self._open.get(part.index)
            if item is None and part.index not in self._closed:
                item = self._begin(out, part.index, _Item("reasoning"))
            if item is not None and item.kind == "reasoning":
                if part.signature:
                    item.signature = (item.signature or "") + part.signature
                if part.text:
                    first = not item.text
                    item.text.append(part.text)
                    if item.output_index >= 0 and is_summary_break(part):
                        self._summary_break(out, item)
                    elif item.output_index >= 0 or (first and self._live(item)):
                        self._reasoning_delta(out, item, part.text)
        elif isinstance(part, ToolCallStart):
            call_id = self._call_ids.unique(part.id)
            if part.custom:
                item = _Item("custom_tool_call", call_id=call_id, name=part.name, id=f"ctc_{call_id}")
                added = {"type": "custom_tool_call", "id": item.id, "call_id": item.call_id, "name": item.name,
                         "input": "", "status": "in_progress"}
            else:
                item = _Item("function_call", call_id=call_id, name=part.name, id=f"fc_{call_id}")
                added = {"type": "function_call", "id": item.id, "call_id": item.call_id, "name": item.name,
                         "arguments": "", "status": "in_progress"}
            self._begin(out, part.index, item)
            self._announce(out, item, added)
        elif isinstance(part, ToolCallDelta):
            item = self._open.get(part.index) or self._closed.get(part.index)
            if item is not None and item.kind == "function_call" and part.arguments:
                item.text.append(part.arguments)
                if part.index in self._open:
                    self._event(out, "response.function_call_arguments.delta", item_id=item.id,
                                output_index=item.output_index, delta=part.arguments)
                else:  # a late fragment of a closed call (legal in Chat, rare): fix the final item only
                    self._stale[item.output_index] = item
            elif item is not None and item.kind == "custom_tool_call" and part.arguments:
                item.text.append(part.arguments)
                if part.index in self._open:
                    self._event(out, "response.custom_tool_call_input.delta", item_id=item.id,
                                output_index=item.output_index, delta=part.arguments)
                else:
                    self._stale[item.output_index] = item

    def _begin(self, out: List[bytes], index: int, item: _Item) -> _Item:
        for other in list(self._open):
            if other != index:
                self._close(out, other)
        self._open[index] = item
        return item

    def _announce(self, out: List[bytes], item: _Item, added: Dict[str, Any]) -> None:
        self._release(out)
        item.output_index = self._next_index
        self._next_index += 1
        self._event(out, "response.output_item.added", output_index=item.output_index, item=added)

    def _text_item(self, out: List[bytes], index: int, refusal: bool = False,
                   fields: Optional[Mapping[str, Any]] = None) -> Optional[_Item]:
        item = self._open.get(index)
        if item is not None:
            return item if item.kind == "message" else None
        late = self._closed.pop(index, None)  # late text for a closed block continues in a new message item
        refusal = refusal or (late is not None and late.refusal)
        for other in list(self._open):
            self._close(out, other)
        item = self._held_message()
        if item is not None and item.fields == fields:
            # Text right after text is the same message's next content part, as the non-streamed answer
            # groups it (Anthropic's cited text comes as many blocks; a Responses message may have parts).
            self._held = None
            item.earlier.append((item.part(), item.logprobs))
            item.text, item.notes, item.logprobs, item.refusal = [], [], [], refusal
            self._open[index] = item
        else:
            item = self._begin(out, index, _Item("message", id=new_id("msg"), refusal=refusal, fields=fields))
            self._announce(out, item, {"type": "message", "id": item.id, "role": "assistant",
                                       "status": "in_progress", "content": [], **(fields or {})})
        item.positions[index] = len(item.earlier)
        self._event(out, "response.content_part.added", item_id=item.id, output_index=item.output_index,
                    content_index=len(item.earlier), part=content_part("", refusal))
        return item

    def _held_message(self) -> Optional[_Item]:
        """The message whose `output_item.done` waits, if it is the answer's last item."""
        if self._held is None:
            return None
        return next((i for i in self._closed.values() if i.kind == "message" and i.output_index == self._held), None)

    def _annotate(self, out: List[bytes], part: TextAnnotation) -> None:
        item = self._open.get(part.index)
        late = item is None and part.index in self._closed
        if item is None:
            item = self._closed[part.index] if late else self._text_item(out, part.index)
        if item is None or item.kind != "message":
            return
        note = dict(part.annotation)
        k = item.positions.get(part.index, len(item.earlier))
        if k < len(item.earlier):  # a part the message has moved past: only the final item can carry it
            if not item.earlier[k][0].refusal:
                item.earlier_notes.setdefault(k, []).append(note)
                self._stale[item.output_index] = item
            return
        if item.refusal:
            return  # a refusal part has no annotations
        item.notes.append(note)
        if late and part.index not in self._open:  # the item is done: only the terminal response can carry it
            self._stale[item.output_index] = item
            return
        self._event(out, "response.output_text.annotation.added", item_id=item.id, output_index=item.output_index,
                    content_index=k, annotation_index=len(item.notes) - 1, annotation=note)

    def _opaque(self, out: List[bytes], part: OpaqueBlock) -> None:
        """A hosted tool's whole item: added (in progress, as OpenAI announces it) then done at once."""
        for other in list(self._open):
            self._close(out, other)
        item = _Item("opaque", id=str(part.block.get("id") or ""))
        self._closed[part.index] = item
        done = dict(part.block)
        self._announce(out, item, {**done, "status": "in_progress"} if "status" in done else done)
        self._output[item.output_index] = done
        self._event(out, "response.output_item.done", output_index=item.output_index, item=done)

    def _message(self, item: _Item) -> Dict[str, Any]:
        parts = item.earlier + [(item.part(), item.logprobs)]
        texts = [replace(p, annotations=p.annotations + tuple(item.earlier_notes[k]), annotations_protocol=PROTOCOL)
                 if k in item.earlier_notes else p for k, (p, _) in enumerate(parts)]
        return message_item(item.id, texts, logprobs=[scores for _, scores in parts])

    def _refresh(self) -> None:
        """The final items late parts changed (`_stale`), rebuilt."""
        for index, item in self._stale.items():
            if item.kind == "message":
                self._output[index] = self._message(item)
            else:
                call = ToolCallPart(item.call_id, item.name, "".join(item.text), custom=item.kind == "custom_tool_call")
                self._output[index] = (custom_call_item if call.custom else function_call_item)(item.id, call)
        self._stale.clear()

    @staticmethod
    def _live(item: _Item) -> bool:
        """Can the reasoning stream from its first text? Another vendor's gets an id of ours (when
        announced); OpenAI's only once its own is known, which is then the item's."""
        if item.provider != PROTOCOL:
            return True
        item.id = unpack_reasoning_signature(item.signature)[0] or ""
        return bool(item.id)

    def _reasoning_delta(self, out: List[bytes], item: _Item, text: str) -> None:
        if item.output_index < 0:
            if not item.id:
                item.id = new_id("rs")
            self._announce(out, item, {"type": "reasoning", "id": item.id, "summary": []})
        if not item.part_open:
            self._summary_part_added(out, item)
        item.summary[-1] += text
        self._event(out, "response.reasoning_summary_text.delta", item_id=item.id, output_index=item.output_index,
                    summary_index=len(item.summary) - 1, delta=text)

    def _summary_part_added(self, out: List[bytes], item: _Item) -> None:
        item.part_open = True
        item.summary.append("")
        self._event(out, "response.reasoning_summary_part.added", item_id=item.id, output_index=item.output_index,
                    summary_index=len(item.summary) - 1, part={"type": "summary_text", "text": ""})

    def _summary_break(self, out: List[bytes], item: _Item) -> None:
        """The upstream's next summary part begins: the one being written is done."""
        if item.part_open:
            self._summary_part_done(out, item, len(item.summary) - 1, item.summary[-1])
        self._summary_part_added(out, item)

    def _summary_part(self, out: List[bytes], item: _Item, k: int, text: str) -> None:
        ids = {"item_id": item.id, "output_index": item.output_index, "summary_index": k}
        self._event(out, "response.reasoning_summary_part.added", **ids, part={"type": "summary_text", "text": ""})
        self._event(out, "response.reasoning_summary_text.delta", **ids, delta=text)
        self._summary_part_done(out, item, k, text)

    def _summary_part_done(self, out: List[bytes], item: _Item, k: int, text: str) -> None:
        ids = {"item_id": item.id, "output_index": item.output_index, "summary_index": k}
        self._event(out, "response.reasoning_summary_text.done", **ids, text=text)
        self._event(out, "response.reasoning_summary_part.done", **ids, part={"type": "summary_text", "text": text})

    def _close(self, out: List[bytes], index: int) -> None:
        item = self._open.pop(index, None)
        if item is None:
            return
        self._closed[index] = item
        text = "".join(item.text)
        if item.kind == "message":
            k = len(item.earlier)
            if item.refusal:
                self._event(out, "response.refusal.done", item_id=item.id, output_index=item.output_index,
                            content_index=k, refusal=text)
            else:
                self._event(out, "response.output_text.done", item_id=item.id, output_index=item.output_index,
                            content_index=k, text=text, logprobs=list(item.logprobs))
            self._event(out, "response.content_part.done", item_id=item.id, output_index=item.output_index,
                        content_index=k, part=content_part(text, item.refusal, item.notes, item.logprobs))
            done = self._message(item)
        elif item.kind == "function_call":
            if text.strip():
                self._event(out, "response.function_call_arguments.done", item_id=item.id,
                            output_index=item.output_index, arguments=text)
            else:
                self._bare = (item.output_index, text)
            done = function_call_item(item.id, ToolCallPart(item.call_id, item.name, text))
        elif item.kind == "custom_tool_call":
            self._event(out, "response.custom_tool_call_input.done", item_id=item.id,
                        output_index=item.output_index, input=text)
            done = custom_call_item(item.id, ToolCallPart(item.call_id, item.name, text, custom=True))
        else:
            reasoning = ReasoningPart(text, item.signature, item.redacted, item.provider)
            item_id, encrypted = reasoning_identity(reasoning)
            summary = reasoning_summary(reasoning)
            if item.output_index < 0:  # held to its end: its summary parts are known, each streams whole
                if not text and not encrypted:
                    return  # nothing a Responses client could read or send back
                item.id = item_id
                self._announce(out, item, {"type": "reasoning", "id": item.id, "summary": []})
                for k, piece in enumerate(summary):
                    self._summary_part(out, item, k, piece)
            else:  # streamed live: the parts its deltas went to
                if item.part_open:
                    self._summary_part_done(out, item, len(item.summary) - 1, item.summary[-1])
                summary = item.summary
            done = reasoning_item(item.id, summary, encrypted)
        self._output[item.output_index] = done
        self._stale.pop(item.output_index, None)
        self._release(out)
        self._held = item.output_index

    def _release(self, out: List[bytes]) -> None:
        """The held item's `output_item.done`, as the terminal response will hold it."""
        if self._held is not None:
            self._refresh()
            index, self._held = self._held, None
            if self._bare is not None and self._bare[0] == index:
                self._bare_done(out, index, self._bare[1])
            self._event(out, "response.output_item.done", output_index=index, item=self._output[index])

    def _bare_done(self, out: List[bytes], index: int, streamed: str) -> None:
        """The arguments of a call closed without any: "{}" for a whole call (Anthropic's empty input, a Chat
        call with no fragments), as the non-streamed answer has it. A call the end cut (`incomplete`) keeps
        what it had, as OpenAI's does: "{}" would read as a call a client may run with no arguments."""
        self._bare = None
        done = self._output[index]
        arguments = done["arguments"]  # late fragments included (_refresh)
        delta = arguments[len(streamed):]
        if not arguments.strip() and done["status"] != "incomplete":
            arguments = delta = "{}"
        if delta:
            self._event(out, "response.function_call_arguments.delta", item_id=done["id"], output_index=index,
                        delta=delta)
        self._event(out, "response.function_call_arguments.done", item_id=done["id"], output_index=index,
                    arguments=arguments)
        self._output[index] = {**done, "arguments": arguments}

    def close(self) -> bytes:
        out: List[bytes] = []
        self._start(out)
        for index in list(self._open):
            self._close(out, index)
        while self._queued:
            index = next(iter(self._queued))
            for part in self._queued.pop(index):
                self._apply(part, out)
            for open_index in list(self._open):
                self._close(out, open_index)
        status, incomplete = status_of(self._finish or FinishReason.STOP)
        self._refresh()
        if self._held is not None and is_cut(self._output[self._held], incomplete):
            self._output[self._held] = {**self._output[self._held], "status": "incomplete"}
        self._release(out)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._ended = True
        # An upstream that reported no usage: the client still gets the gateway's estimate, non-Latin text
        # weighed by its bytes as for the same answer unstreamed (pipeline `_with_usage`).
        usage = self._usage or estimate_usage(self._prompt, weighed_chars(*self._weight))
        self._event(out, kind, response=self._response(status, usage=usage, incomplete=incomplete))
        return b"".join(out)

    def _close_cut(self, out: List[bytes]) -> None:
        """Before a failure, the items being written are closed (their done events, as OpenAI sends them)
        and marked `incomplete`: the failed response holds what was streamed, and a client must not run a
        call whose arguments were cut. Parts still queued were never announced: they are left out."""
        for index in list(self._open):
            item = self._open[index]
            self._close(out, index)
            done = self._output.get(item.output_index) if item.output_index >= 0 else None
            if done is not None and done.get("type") in CUTTABLE:
                self._output[item.output_index] = {**done, "status": "incomplete"}
        self._queued.clear()

    def error(self, err: RouteplaneError) -> bytes:
        out: List[bytes] = []
        self._start(out)
        if not self._ended:
            self._close_cut(out)
        self._release(out)
        body = _error_body(err)["error"]
        # The code is the OpenAI error type ("server_error", "rate_limit_exceeded", ...).
        self._event(out, "error", code=body["type"], message=body["message"], param=body.get("param"))
        if not self._ended:
            # A failed response's error.code is a closed set (openai.types.responses.ResponseError):
            # the gateway's own type stays readable in `type`.
            self._event(out, "response.failed", response=self._response(
                "failed", usage=self._usage,
                error={"code": failed_code(err), "message": body["message"], "type": body["type"]}))
        return b"".join(out)
