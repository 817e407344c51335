"""Anthropic Messages SSE from an upstream: named events → canonical parts."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ...errors import InvalidUpstreamResponse
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    Finish,
    FinishReason,
    OpaqueBlock,
    ReasoningDelta,
    ReasoningEnd,
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
from ..base import StreamDecoder, bad_upstream
from ..sse import SSEEvent
from .response import (
    BESIDE_DELTA,
    PROTOCOL,
    STOP_FROM_WIRE,
    decode_usage,
    ending_extras,
    error_in_body,
    kept_extras,
)
from .server_blocks import Gathered, citations, opaque_in_answer, own_tool_use


class MessagesStreamDecoder(StreamDecoder):
    """Provider events → parts. `ping` and unknown events are ignored; an `error`
    event raises; a stream that ends before `message_stop` is an upstream failure."""

    def __init__(self, target: RoutingTarget) -> None:
        self._target = target
        self._started = False
        self._done = False
        self._usage: Optional[Usage] = None
        self._stop: Optional[str] = None
        self._stop_sequence: Optional[str] = None
        self._kinds: Dict[int, str] = {}
        self._signatures: Dict[int, str] = {}
        self._start_input: Dict[int, Any] = {}
        self._saw_args: Dict[int, bool] = {}
        self._gathering: Dict[int, Gathered] = {}  # opaque blocks until their content_block_stop
        self._ending: Dict[str, Any] = {}  # message_delta's container, stop_details, ..., for the Finish

    def feed(self, event: SSEEvent) -> List[StreamPart]:
        if self._done:
            return []
        data = event.data.strip()
        if not data:
            return []
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            raise bad_upstream(self._target, "a stream event is not JSON") from None
        if not isinstance(payload, dict):
            raise bad_upstream(self._target, "a stream event is not an object")
        name = payload.get("type") or event.event
        if name == "error":
            raise error_in_body(payload, self._target, mid_stream=True)
        handler = getattr(self, f"_on_{name}", None) if isinstance(name, str) else None
        if handler is None:
            return []  # ping and event types this gateway does not know
        return handler(payload)

    def finish(self) -> List[StreamPart]:
        if not self._done:
            raise InvalidUpstreamResponse(
                f"{self._target.provider} ended the stream without message_stop", provider=self._target.provider
            )
        return []

    # --- events ------------------------------------------------------------

    def _on_message_start(self, payload: Dict[str, Any]) -> List[StreamPart]:
        msg = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        self._usage = decode_usage(msg.get("usage"))
        self._ending.update(kept_extras(msg))
        self._started = True
        return [ResponseStart(str(msg.get("id") or ""), str(msg.get("model") or self._target.model), usage=self._usage,
                              wire=PROTOCOL)]

    def _preamble(self) -> List[StreamPart]:
        if self._started:
            return []
        self._started = True
        return [ResponseStart("", self._target.model, wire=PROTOCOL)]

    def _on_content_block_start(self, payload: Dict[str, Any]) -> List[StreamPart]:
        out = self._preamble()
        index = payload.get("index")
        block = payload.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            raise bad_upstream(self._target, "content_block_start without index or block")
        kind = block.get("type")
        if kind == "text":
            self._kinds[index] = "text"
            out.append(TextStart(index))
            out.extend(TextAnnotation(index, PROTOCOL, c) for c in citations(block))
            if block.get("text"):
                out.append(TextDelta(index, str(block["text"])))
        elif kind == "thinking":
            self._kinds[index] = "thinking"
            out.append(ReasoningStart(index, PROTOCOL))
            if block.get("thinking"):
                out.append(ReasoningDelta(index, str(block["thinking"])))
            if block.get("signature"):
                self._signatures[index] = str(block["signature"])
        elif kind == "redacted_thinking":
            self._kinds[index] = "thinking"
            out.append(ReasoningStart(index, PROTOCOL, redacted=str(block.get("data") or "")))
        elif kind == "tool_use" and not own_tool_use(block):
            self._kinds[index] = "tool"
            self._start_input[index] = block.get("input")
            out.append(ToolCallStart(index, str(block.get("id") or ""), str(block.get("name") or "")))
        elif opaque_in_answer(kind) or kind == "tool_use":
            # A server-tool block (server_tool_use, web_search_tool_result, …, an own_tool_use call): gathered,
            # and sent on whole at its content_block_stop. Until then nothing leaves, so the first-content hold
            # still stands.
            self._kinds[index] = "opaque"
            self._gathering[index] = Gathered(block)
        return out

    def _on_content_block_delta(self, payload: Dict[str, Any]) -> List[StreamPart]:
        index = payload.get("index")
        delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
        kind = self._kinds.get(index) if isinstance(index, int) else None
        if kind is None:
            return []
        assert isinstance(index, int)
        dtype = delta.get("type")
        if kind == "opaque":
            self._gathering[index].add(delta)
            return []
        if dtype == "citations_delta" and kind == "text":
            citation = delta.get("citation")
            return [TextAnnotation(index, PROTOCOL, citation)] if isinstance(citation, dict) else []
        if dtype == "text_delta" and kind == "text":
            text = delta.get("text")
            return [TextDelta(index, text)] if isinstance(text, str) and text else []
        if dtype == "input_json_delta" and kind == "tool":
            frag = delta.get("partial_json")
            if isinstance(frag, str) and frag:
                self._saw_args[index] = True
                return [ToolCallDelta(index, frag)]
            return []
        if dtype == "thinking_delta" and kind == "thinking":
            text = delta.get("thinking")
            return [ReasoningDelta(index, text)] if isinstance(text, str) and text else []
        if dtype == "signature_delta" and kind == "thinking":
            # The whole signature arrives once; it replaces, never appends.
            self._signatures[index] = str(delta.get("signature") or "")
        return []  # unknown deltas

    def _on_content_block_stop(self, payload: Dict[str, Any]) -> List[StreamPart]:
        index = payload.get("index")
        kind = self._kinds.pop(index, None) if isinstance(index, int) else None
        if kind is None:
            return []
        assert isinstance(index, int)
        if kind == "text":
            return [TextEnd(index)]
        if kind == "thinking":
            return [ReasoningEnd(index, self._signatures.pop(index, None) or None)]
        if kind == "opaque":
            try:
                return [OpaqueBlock(index, PROTOCOL, self._gathering.pop(index).done())]
            except (ValueError, RecursionError):  # nested past the parser's depth: not JSON it can read either
                raise bad_upstream(self._target, "a server tool's input is not JSON") from None
        out: List[StreamPart] = []
        start_input = self._start_input.pop(index, None)
        if not self._saw_args.pop(index, False) and isinstance(start_input, dict) and start_input:
            # Some servers send the whole input in content_block_start and no deltas.
            out.append(ToolCallDelta(index, json.dumps(start_input, separators=(",", ":"), ensure_ascii=False)))
        out.append(ToolCallEnd(index))
        return out

    def _on_message_delta(self, payload: Dict[str, Any]) -> List[StreamPart]:
        delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
        if isinstance(delta.get("stop_reason"), str):
            self._stop = delta["stop_reason"]
        if isinstance(delta.get("stop_sequence"), str):
            self._stop_sequence = delta["stop_sequence"]
        self._ending.update(kept_extras(delta))
        self._ending.update({k: payload[k] for k in BESIDE_DELTA if payload.get(k) is not None})
        usage = decode_usage(payload.get("usage"), self._usage)  # cumulative: overwrite, never add
        if usage is None:
            return []
        self._usage = usage
        # Passed on now, not only at message_stop: a stream cut between the two settles on the
        # provider's counts instead of an estimate.
        return self._preamble() + [UsageUpdate(usage)]

    def _on_message_stop(self, payload: Dict[str, Any]) -> List[StreamPart]:
        self._done = True
        out = self._preamble()
        # Blocks left open by a sloppy upstream are closed before the finish.
        for index in sorted(self._kinds):
            out.extend(self._on_content_block_stop({"index": index}))
        if self._usage is not None:
            out.append(UsageUpdate(self._usage))
        reason = STOP_FROM_WIRE.get(self._stop or "end_turn", FinishReason.OTHER)
        sequence = self._stop_sequence if reason is FinishReason.STOP_SEQUENCE else None
        extras = ending_extras(self._stop, self._ending)
        # What only an Anthropic client has a field for rides on the Finish for one (as Generation.extras).
        out.append(Finish(reason, sequence, wire=PROTOCOL, extras=extras) if extras else Finish(reason, sequence))
        return out
