"""Anthropic Messages SSE: canonical parts → named events (client), events → parts (provider).

Tool input from another wire's upstream is held and sent as one `input_json_delta` when its block ends,
as `response.tool_input` settles it: a JSON object as such, anything else (a custom tool's free text, an
array, arguments cut off by the end of the stream or broken, `{"a": 1`) as {"_raw": "<text>"}, all-blank
as nothing (`{}`). The SDK parses the concatenated fragments after every delta, so fragments streamed as
they came could not be taken back: a cut object would end as its partial parse, broken JSON would make the
SDK raise. The client so gets the input a non-streamed answer has; Anthropic's own API (without its
fine-grained tool streaming) also sends tool input only in validated chunks. The held text is the call's
arguments, which the encoder keeps anyway. An Anthropic upstream's fragments stream as they come.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ...errors import RouteplaneError
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
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from ..base import StreamEncoder
from ..carried import carry
from ..sse import frame
from .response import (
    BESIDE_DELTA,
    PROTOCOL,
    error_body,
    kept_extras,
    kept_usage,
    message_id,
    own_stop_reason,
    tool_input,
    wants_thinking,
    wire_stop_reason,
)
from .server_blocks import block_events

log = logging.getLogger("routeplane.protocols.anthropic")
# While another wire's tool input is held, a `ping` at most this often (as Anthropic's API sends them): a
# long call (a whole file for a Write tool) must not look like a dead connection to a proxy or client.
HELD_PING_SECONDS = 10.0

# OpaqueBlock is a whole block: it starts (and ends) one, in sequence with the others.
_START_TYPES = (TextStart, ReasoningStart, ToolCallStart, OpaqueBlock)
_KINDS = {TextStart: "text", ReasoningStart: "thinking", ToolCallStart: "tool", OpaqueBlock: "opaque"}


def _event(data: Dict[str, Any]) -> bytes:
    # The SDK skips events without an `event:` line: always name them.
    return frame(data, event=data["type"])


@dataclass
class _Block:
    """One canonical content block on its way to becoming one Anthropic block."""

    kind: str  # text | thinking | tool | opaque
    start: StreamPart
    pending: List[StreamPart] = field(default_factory=list)  # parts held while another block is live
    ended: bool = False
    wire_index: Optional[int] = None  # set once content_block_start went out
    args: List[str] = field(default_factory=list)
    signature_sent: Optional[str] = None
    raw_args: Optional[bool] = None  # an Anthropic upstream's input that is not a JSON object, as {"_raw": "..."}
    thought: List[str] = field(default_factory=list)  # another vendor's reasoning text (carried with its signature)


class MessagesStreamEncoder(StreamEncoder):
    """Canonical parts → message_start, content blocks, message_delta, message_stop.

    Anthropic blocks never overlap: exactly one is live at a time. When a new
    block starts while a tool call is live and its arguments are not yet a
    complete JSON object (OpenAI may interleave fragments of parallel calls),
    the new block is held and replayed once the live one completes, so no
    argument fragment is ever dropped or misplaced. A complete JSON object
    cannot legally grow, so in the usual case every block streams live.
    Text blocks open lazily on their first non-empty delta: Anthropic rejects
    empty text blocks when a client sends the history back.
    """

    def __init__(self, prompt: Prompt, request_id: Optional[str] = None) -> None:
        self._request_id = request_id  # for the `error` event's body
        self._model = prompt.model
        self._show_foreign_reasoning = wants_thinking(prompt)
        self._id = message_id("")  # unique even when the upstream gives no id
        self._started = False
        self._input_usage: Optional[Usage] = None
        self._usage: Optional[Usage] = None
        self._finish: Optional[Finish] = None
        self._blocks: Dict[int, _Block] = {}
        self._live: Optional[int] = None
        self._queue: List[int] = []  # canonical indices waiting for the live block to end
        self._next_wire = 0
        self._refused = False  # a refusal text block went out (see response.wire_stop_reason)
        self._live_args = False  # an Anthropic upstream: tool input streams as it comes (module docstring)
        self._pinged = time.monotonic()  # the last ping while tool input was held

    # --- public ------------------------------------------------------------

    def encode(self, part: StreamPart) -> bytes:
        out: List[bytes] = []
        if isinstance(part, ResponseStart):
            if part.id:
                self._id = message_id(part.id)
            self._input_usage = part.usage
            self._live_args = part.wire == PROTOCOL
            self._ensure_started(out)
        elif isinstance(part, UsageUpdate):
            self._usage = part.usage
        elif isinstance(part, Finish):
            self._finish = part
        elif isinstance(part, _START_TYPES):
            self._ensure_started(out)
            self._on_start(part, out)
        else:
            self._ensure_started(out)
            self._route(part, out)
        return b"".join(out)

    def close(self) -> bytes:
        out: List[bytes] = []
        self._ensure_started(out)
        self._flush_all(out)
        usage = self._usage or self._input_usage or Usage(reported=False)
        finish = self._finish or Finish(FinishReason.STOP)
        own = finish.extras if finish.wire == PROTOCOL else {}  # an Anthropic upstream's container, stop_details
        reason = own_stop_reason(wire_stop_reason(finish.reason, self._refused), finish.reason, own)
        kept = kept_extras(own)
        beside = {k: kept.pop(k) for k in BESIDE_DELTA if k in kept}
        out.append(_event({
            "type": "message_delta",
            "delta": {"stop_reason": reason,
                      "stop_sequence": finish.stop_sequence if reason == "stop_sequence" else None,
                      **kept},
            "usage": kept_usage(usage),
            **beside,
        }))
        out.append(_event({"type": "message_stop"}))
        return b"".join(out)

    def error(self, err: RouteplaneError) -> bytes:
        return _event(error_body(err, self._request_id))

    # --- block scheduling --------------------------------------------------

    def _ensure_started(self, out: List[bytes]) -> None:
        if self._started:
            return
        self._started = True
        usage = kept_usage(self._input_usage or Usage())
        # message_start carries input usage; output is reported in message_delta.
        usage["output_tokens"] = min(usage["output_tokens"], 1)
        usage.pop("output_tokens_details", None)
        out.append(_event({
            "type": "message_start",
            "message": {"id": self._id, "type": "message", "role": "assistant", "model": self._model,
                        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage},
        }))

    def _on_start(self, part: StreamPart, out: List[bytes]) -> None:
        index = part.index  # type: ignore[union-attr]
        if isinstance(part, ReasoningStart) and part.provider != PROTOCOL and not self._show_foreign_reasoning:
            return  # reasoning the client did not ask for is not shown
        if isinstance(part, OpaqueBlock) and part.protocol != PROTOCOL:
            return  # another wire's server-tool block has no form here
        kind = _KINDS[type(part)]
        if index in self._blocks and not self._blocks[index].ended:
            return  # a repeated start marker
        self._blocks[index] = _Block(kind, part, ended=kind == "opaque")
        if self._live is not None and not self._closable(self._blocks[self._live]):
            self._queue.append(index)
            return
        self._end_live(out)
        self._queue.append(index)
        self._drain(out)

    def _route(self, part: StreamPart, out: List[bytes]) -> None:
        index = part.index  # type: ignore[union-attr]
        block = self._blocks.get(index)
        if block is None:
            if isinstance(part, TextDelta) or (isinstance(part, TextAnnotation) and part.protocol == PROTOCOL):
                # a delta (or citation) without its start marker
                self._on_start(TextStart(index), out)
                block = self._blocks.get(index)
            if block is None:
                return
        if index == self._live:
            self._apply(block, part, out)
            if self._live is not None and self._queue and self._closable(block):
                self._end_live(out)
            self._drain(out)
        elif index in self._queue:
            if isinstance(part, (TextEnd, ReasoningEnd, ToolCallEnd)):
                block.ended = True
            block.pending.append(part)
        elif isinstance(part, TextDelta) and part.text:
            # Late text for a block already closed: text can continue in a new block.
            self._blocks.pop(index)
            self._on_start(TextStart(index), out)
            self._route(part, out)
        elif isinstance(part, ToolCallDelta) and part.arguments.strip():
            log.warning("dropping a tool-argument fragment that arrived after its call was complete")

    def _closable(self, block: _Block) -> bool:
        """Can the live block end now without risking a later fragment for it?"""
        if block.ended or block.kind != "tool":
            return True
        text = "".join(block.args)
        if not text.strip():
            return False
        try:
            return isinstance(json.loads(text), dict)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return False

    def _go_live(self, index: int, out: List[bytes]) -> None:
        block = self._blocks[index]
        self._live = index
        if block.kind == "opaque":
            self._opaque(block, out)
            return
        if block.kind != "text" and not _foreign_thinking(block):
            self._open_wire(block, out)  # text and foreign thinking open lazily, on their first non-empty delta
        pending, block.pending = block.pending, []
        for p in pending:
            if self._live != index:
                break
            self._apply(block, p, out)

    def _drain(self, out: List[bytes]) -> None:
        """Make queued blocks live, in order, while the live one may end."""
        while self._queue:
            if self._live is not None:
                if not self._closable(self._blocks[self._live]):
                    return
                self._end_live(out)
            self._go_live(self._queue.pop(0), out)

    def _flush_all(self, out: List[bytes]) -> None:
        while self._live is not None or self._queue:
            self._end_live(out)
            if self._queue:
                self._go_live(self._queue.pop(0), out)

    def _open_wire(self, block: _Block, out: List[bytes]) -> None:
        block.wire_index = self._next_wire
        self._next_wire += 1
        start = block.start
        if isinstance(start, ToolCallStart):
            cb: Dict[str, Any] = {"type": "tool_use", "id": start.id, "name": start.name, "input": {}}
        elif isinstance(start, ReasoningStart) and start.redacted is not None:
            cb = {"type": "redacted_thinking", "data": start.redacted}
        elif isinstance(start, ReasoningStart):
            cb = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            cb = {"type": "text", "text": ""}
        out.append(_event({"type": "content_block_start", "index": block.wire_index, "content_block": cb}))

    def _opaque(self, block: _Block, out: List[bytes]) -> None:
        """A whole server-tool block: its start, its input as one delta, its stop."""
        assert isinstance(block.start, OpaqueBlock)
        start, delta = block_events(block.start.block)
        block.wire_index = self._next_wire
        self._next_wire += 1
        out.append(_event({"type": "content_block_start", "index": block.wire_index, "content_block": start}))
        if delta is not None:
            self._delta(block, delta, out)
        self._end_live(out)

    def _apply(self, block: _Block, part: StreamPart, out: List[bytes]) -> None:
        if isinstance(part, (TextEnd, ReasoningEnd, ToolCallEnd)):
            if isinstance(part, ReasoningEnd) and part.signature:
                if _foreign_thinking(block):
                    self._carry(block, part.signature, out)
                else:
                    self._signature(block, part.signature, out)
            self._end_live(out)
            return
        if isinstance(part, TextDelta):
            if not part.text:
                return
            if isinstance(block.start, TextStart) and block.start.refusal:
                self._refused = True
            if block.wire_index is None:
                self._open_wire(block, out)
            self._delta(block, {"type": "text_delta", "text": part.text}, out)
        elif isinstance(part, TextAnnotation):
            # Anthropic sends a citation before the text it supports: the text block opens for it.
            if part.protocol == PROTOCOL and block.kind == "text":
                if block.wire_index is None:
                    self._open_wire(block, out)
                self._delta(block, {"type": "citations_delta", "citation": dict(part.annotation)}, out)
        elif isinstance(part, ReasoningDelta):
            start = block.start
            if isinstance(start, ReasoningStart) and start.redacted is not None:
                return
            if part.text:
                if block.wire_index is None:
                    self._open_wire(block, out)
                if _foreign_thinking(block):
                    block.thought.append(part.text)
                self._delta(block, {"type": "thinking_delta", "thinking": part.text}, out)
            if part.signature:
                self._signature(block, part.signature, out)
        elif isinstance(part, ToolCallDelta):
            if part.arguments:
                block.args.append(part.arguments)
                self._tool_fragment(block, part.arguments, out)

    def _tool_fragment(self, block: _Block, fragment: str, out: List[bytes]) -> None:
        """An Anthropic upstream's arguments as `input_json_delta`s the SDK can parse; another wire's
        are held in `block.args` until the block ends (_settle_args).

        The SDK partial-parses the concatenated fragments after every delta and raises on text
        that cannot become JSON. Input that does not start as an object is streamed wrapped as
        {"_raw": "<text>"}, the same value a non-streaming answer gets (response.tool_input).
        """
        if not self._live_args:
            now = time.monotonic()
            if now - self._pinged >= HELD_PING_SECONDS:
                self._pinged = now
                out.append(_event({"type": "ping"}))
            return
        if block.raw_args is None:
            held = "".join(block.args)
            if not held.strip():
                return  # leading whitespace: undecided yet (all-blank input is `{}`, as unstreamed)
            block.raw_args = not held.lstrip().startswith("{")
            fragment = held
            if block.raw_args:
                fragment = '{"_raw": "' + _json_chars(held)
        elif block.raw_args:
            fragment = _json_chars(fragment)
        self._delta(block, {"type": "input_json_delta", "partial_json": fragment}, out)

    def _settle_args(self, block: _Block, out: List[bytes]) -> None:
        """Another wire's whole tool input as one delta: the object a non-streamed answer has."""
        text = "".join(block.args)
        if text.strip():
            settled = json.dumps(tool_input(text), separators=(",", ":"), ensure_ascii=False)
            self._delta(block, {"type": "input_json_delta", "partial_json": _scrub_surrogates(settled)}, out)

    def _carry(self, block: _Block, signature: str, out: List[bytes]) -> None:
        """Another vendor's signature at the end of its reasoning, carried opaquely (protocols/carried.py):
        the block opens here if it had no text, as Anthropic's own with display "omitted"."""
        start = block.start
        assert isinstance(start, ReasoningStart)
        carried = carry(ReasoningPart("".join(block.thought), signature, None, start.provider))
        if carried:
            if block.wire_index is None:
                self._open_wire(block, out)
            self._delta(block, {"type": "signature_delta", "signature": carried}, out)

    def _signature(self, block: _Block, signature: str, out: List[bytes]) -> None:
        start = block.start
        # Only Anthropic's own signatures mean anything to an Anthropic client.
        if not isinstance(start, ReasoningStart) or start.provider != PROTOCOL or start.redacted is not None:
            return
        if signature != block.signature_sent:
            block.signature_sent = signature
            self._delta(block, {"type": "signature_delta", "signature": signature}, out)

    def _delta(self, block: _Block, delta: Dict[str, Any], out: List[bytes]) -> None:
        out.append(_event({"type": "content_block_delta", "index": block.wire_index, "delta": delta}))

    def _end_live(self, out: List[bytes]) -> None:
        if self._live is None:
            return
        block = self._blocks[self._live]
        block.ended = True
        if block.wire_index is not None:
            if block.kind == "tool" and not self._live_args:
                self._settle_args(block, out)
            elif block.raw_args:
                self._delta(block, {"type": "input_json_delta", "partial_json": '"}'}, out)
            out.append(_event({"type": "content_block_stop", "index": block.wire_index}))
        self._live = None


def _json_chars(text: str) -> str:
    """`text` escaped for the inside of a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _scrub_surrogates(text: str) -> str:
    """`text` with lone UTF-16 surrogates (a `\\ud800` in the upstream's JSON) as U+FFFD: the SDK encodes
    each fragment as UTF-8, which they make it raise. A pair split across fragments is joined."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _foreign_thinking(block: _Block) -> bool:
    """Reasoning from another vendor: without text (an OpenAI reasoning item without a summary)
    it has nothing to show, and an empty `thinking` block is what Anthropic never sends."""
    start = block.start
    return isinstance(start, ReasoningStart) and start.provider != PROTOCOL and start.redacted is None
