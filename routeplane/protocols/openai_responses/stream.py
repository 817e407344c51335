"""OpenAI Responses SSE: canonical parts → named events (client), events → parts (provider)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ...errors import RouteplaneError
from ...language_model.routing import RoutingTarget
from ...language_model.stream import estimate_usage
from ...language_model.types import (
    Finish,
    FinishReason,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    ReasoningStart,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from ..base import StreamDecoder, StreamEncoder, as_list, bad_upstream
from ..sse import SSEEvent, frame
from .request import PROTOCOL, pack_reasoning_signature
from .response import (
    content_part,
    custom_call_item,
    decode_usage,
    failed_code,
    failed_error,
    failure,
    function_call_item,
    incomplete_reason,
    message_item,
    new_id,
    reasoning_identity,
    reasoning_item,
    response_id,
    response_object,
    status_of,
)
from .response import error_body as _error_body


@dataclass
class _Item:
    kind: str  # message | function_call | custom_tool_call | reasoning
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


class ResponsesStreamEncoder(StreamEncoder):
    """Items are emitted one after another (a new block closes the open ones), so
    deltas of two items never interleave; every event carries the next
    `sequence_number`; the terminal event carries the whole response.

    OpenAI reasoning is held until its end: the item id that must match between
    `output_item.added`, `.done` and `response.completed` (the SDK checks it) is
    only known from the signature at the end of the block."""

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
        self._next_index = 0
        self._usage: Optional[Usage] = None
        self._finish: Optional[FinishReason] = None
        self._ended = False

    # --- framing ---

    def _event(self, out: List[bytes], kind: str, **payload: Any) -> None:
        out.append(frame({"type": kind, "sequence_number": self._seq, **payload}, event=kind))
        self._seq += 1

    def _response(self, status: str, **kw: Any) -> Dict[str, Any]:
        output = [self._output[i] for i in sorted(self._output)]
        return response_object(self._id, self._prompt, self._created, status, output, kw.pop("usage", None), **kw)

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
                if part.id:
                    self._id = response_id(part.id)
                if part.created:
                    self._created = part.created
            self._start(out)
            return b"".join(out)
        self._start(out)
        if isinstance(part, UsageUpdate):
            self._usage = part.usage
        elif isinstance(part, Finish):
            self._finish = part.reason
        else:
            self._route(part, out)
        return b"".join(out)

    # A block that starts while a function call is still taking arguments waits
    # in a queue (Chat upstreams may interleave fragments of parallel calls):
    # the live call ends first, so its item is complete when it is closed.

    def _route(self, part: StreamPart, out: List[bytes]) -> None:
        index = part.index  # type: ignore[union-attr]
        if index in self._queued:
            self._queued[index].append(part)
            return
        new_block = index not in self._open and not (index in self._closed and isinstance(part, (
            TextEnd, ReasoningEnd, ToolCallEnd, ToolCallDelta, ReasoningDelta)))
        if new_block and not self._live_closable():
            self._queued[index] = [part]
            return
        self._apply(part, out)
        self._drain(out)

    def _live_closable(self) -> bool:
        for item in self._open.values():
            if item.kind == "function_call":
                try:
                    return isinstance(json.loads("".join(item.text) or "null"), dict)
                except ValueError:
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
            self._text_item(out, part.index, part.refusal)
        elif isinstance(part, TextDelta):
            item = self._text_item(out, part.index)
            if item is not None and part.text:
                item.text.append(part.text)
                if item.refusal:
                    self._event(out, "response.refusal.delta", item_id=item.id, output_index=item.output_index,
                                content_index=0, delta=part.text)
                else:
                    self._event(out, "response.output_text.delta", item_id=item.id, output_index=item.output_index,
                                content_index=0, delta=part.text, logprobs=[])
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
                    item.text.append(part.text)
                    if item.provider != PROTOCOL:
                        self._reasoning_delta(out, item, part.text)
        elif isinstance(part, ToolCallStart):
            if part.custom:
                item = _Item("custom_tool_call", call_id=part.id, name=part.name, id=f"ctc_{part.id}")
                added = {"type": "custom_tool_call", "id": item.id, "call_id": item.call_id, "name": item.name,
                         "input": "", "status": "in_progress"}
            else:
                item = _Item("function_call", call_id=part.id, name=part.name, id=f"fc_{part.id}")
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
                    self._output[item.output_index] = function_call_item(
                        item.id, ToolCallPart(item.call_id, item.name, "".join(item.text)))
            elif item is not None and item.kind == "custom_tool_call" and part.arguments:
                item.text.append(part.arguments)
                if part.index in self._open:
                    self._event(out, "response.custom_tool_call_input.delta", item_id=item.id,
                                output_index=item.output_index, delta=part.arguments)
                else:
                    self._output[item.output_index] = custom_call_item(
                        item.id, ToolCallPart(item.call_id, item.name, "".join(item.text), custom=True))

    def _begin(self, out: List[bytes], index: int, item: _Item) -> _Item:
        for other in list(self._open):
            if other != index:
                self._close(out, other)
        self._open[index] = item
        return item

    def _announce(self, out: List[bytes], item: _Item, added: Dict[str, Any]) -> None:
        item.output_index = self._next_index
        self._next_index += 1
        self._event(out, "response.output_item.added", output_index=item.output_index, item=added)

    def _text_item(self, out: List[bytes], index: int, refusal: bool = False) -> Optional[_Item]:
        item = self._open.get(index)
        if item is not None:
            return item if item.kind == "message" else None
        late = self._closed.pop(index, None)  # late text for a closed block continues in a new message item
        refusal = refusal or (late is not None and late.refusal)
        item = self._begin(out, index, _Item("message", id=new_id("msg"), refusal=refusal))
        self._announce(out, item, {"type": "message", "id": item.id, "role": "assistant", "status": "in_progress",
                                   "content": []})
        self._event(out, "response.content_part.added", item_id=item.id, output_index=item.output_index,
                    content_index=0, part=content_part("", refusal))
        return item

    def _reasoning_delta(self, out: List[bytes], item: _Item, text: str) -> None:
        if item.output_index < 0:
            if not item.id:
                item.id = new_id("rs")
            self._announce(out, item, {"type": "reasoning", "id": item.id, "summary": []})
        if not item.part_open:
            item.part_open = True
            self._event(out, "response.reasoning_summary_part.added", item_id=item.id,
                        output_index=item.output_index, summary_index=0, part={"type": "summary_text", "text": ""})
        self._event(out, "response.reasoning_summary_text.delta", item_id=item.id, output_index=item.output_index,
                    summary_index=0, delta=text)

    def _close(self, out: List[bytes], index: int) -> None:
        item = self._open.pop(index, None)
        if item is None:
            return
        self._closed[index] = item
        text = "".join(item.text)
        if item.kind == "message":
            if item.refusal:
                self._event(out, "response.refusal.done", item_id=item.id, output_index=item.output_index,
                            content_index=0, refusal=text)
            else:
                self._event(out, "response.output_text.done", item_id=item.id, output_index=item.output_index,
                            content_index=0, text=text, logprobs=[])
            self._event(out, "response.content_part.done", item_id=item.id, output_index=item.output_index,
                        content_index=0, part=content_part(text, item.refusal))
            done = message_item(item.id, [TextPart(text, refusal=item.refusal)])
        elif item.kind == "function_call":
            if not text.strip():
                # A call without arguments (Anthropic's empty input, a Chat call with no fragments):
                # Responses always carries a JSON object, as the non-streamed answer does.
                text = "{}"
                self._event(out, "response.function_call_arguments.delta", item_id=item.id,
                            output_index=item.output_index, delta=text)
            self._event(out, "response.function_call_arguments.done", item_id=item.id,
                        output_index=item.output_index, arguments=text)
            done = function_call_item(item.id, ToolCallPart(item.call_id, item.name, text))
        elif item.kind == "custom_tool_call":
            self._event(out, "response.custom_tool_call_input.done", item_id=item.id,
                        output_index=item.output_index, input=text)
            done = custom_call_item(item.id, ToolCallPart(item.call_id, item.name, text, custom=True))
        else:
            item_id, encrypted = reasoning_identity(ReasoningPart(text, item.signature, item.redacted, item.provider))
            if item.output_index < 0:
                if not text and not encrypted:
                    return  # nothing a Responses client could read or send back
                item.id = item_id
                if text:
                    self._reasoning_delta(out, item, text)
                else:
                    self._announce(out, item, {"type": "reasoning", "id": item.id, "summary": []})
            if item.part_open:
                self._event(out, "response.reasoning_summary_text.done", item_id=item.id,
                            output_index=item.output_index, summary_index=0, text=text)
                self._event(out, "response.reasoning_summary_part.done", item_id=item.id,
                            output_index=item.output_index, summary_index=0,
                            part={"type": "summary_text", "text": text})
            done = reasoning_item(item.id, text, encrypted)
        self._output[item.output_index] = done
        self._event(out, "response.output_item.done", output_index=item.output_index, item=done)

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
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._ended = True
        # An upstream that reported no usage: the client still gets the gateway's estimate.
        chars = sum(len(t) for item in list(self._closed.values()) for t in item.text)
        usage = self._usage or estimate_usage(self._prompt, chars)
        self._event(out, kind, response=self._response(status, usage=usage, incomplete=incomplete))
        return b"".join(out)

    def error(self, err: RouteplaneError) -> bytes:
        out: List[bytes] = []
        self._start(out)
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


class ResponsesStreamDecoder(StreamDecoder):
    """Provider events → parts, keyed by item id (or output_index when an id is missing)."""

    def __init__(self, target: RoutingTarget) -> None:
        self._target = target
        self._started = False
        self._done = False
        self._next_block = 0
        self._blocks: Dict[Tuple[str, int], int] = {}  # (item key, content index) → block
        self._kinds: Dict[int, str] = {}
        self._seen: Dict[int, bool] = {}  # block → had deltas
        self._open: List[int] = []
        self._tools = False

    def feed(self, event: SSEEvent) -> List[StreamPart]:
        if self._done or not event.data.strip():
            return []
        try:
            data = json.loads(event.data)
        except ValueError:
            raise bad_upstream(self._target, "a stream event is not JSON") from None
        if not isinstance(data, dict):
            raise bad_upstream(self._target, "a stream event is not an object")
        kind = data.get("type") or event.event or ""
        out: List[StreamPart] = []
        if kind == "error":
            err = data.get("error") if isinstance(data.get("error"), dict) else data
            msg = err.get("message") if isinstance(err.get("message"), str) else "error in stream"
            raise failure(err, msg, self._target, mid_stream=True)
        if kind == "response.failed":
            raise failed_error(data.get("response") if isinstance(data.get("response"), dict) else {}, self._target)
        if not self._started:
            self._started = True
            resp = data.get("response") if isinstance(data.get("response"), dict) else {}
            out.append(ResponseStart(str(resp.get("id") or ""), str(resp.get("model") or self._target.model),
                                     resp["created_at"] if isinstance(resp.get("created_at"), int) else 0))
        key = str(data.get("item_id") or f"#{data.get('output_index')}")
        if kind == "response.output_item.added":
            item = data.get("item") if isinstance(data.get("item"), dict) else {}
            ikey = str(item.get("id") or f"#{data.get('output_index')}")
            if item.get("type") in ("function_call", "custom_tool_call"):
                block = self._open_block((ikey, 0), "tool", out)
                self._tools = True
                out.append(ToolCallStart(block, str(item.get("call_id") or item.get("id") or f"call_{block}"),
                                         str(item.get("name") or ""), custom=item["type"] == "custom_tool_call"))
                self._blocks[(f"#{data.get('output_index')}", 0)] = block
            elif item.get("type") == "reasoning":
                block = self._open_block((ikey, 0), "reasoning", out)
                out.append(ReasoningStart(block, PROTOCOL))
                self._blocks[(f"#{data.get('output_index')}", 0)] = block
        elif kind == "response.content_part.added":
            part = data.get("part") if isinstance(data.get("part"), dict) else {}
            self._text_block(key, data, out, part.get("type") == "refusal")
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            block = self._text_block(key, data, out, kind == "response.refusal.delta")
            if isinstance(data.get("delta"), str) and data["delta"]:
                self._seen[block] = True
                out.append(TextDelta(block, data["delta"]))
        elif kind in ("response.output_text.done", "response.refusal.done"):
            block = self._text_block(key, data, out, kind == "response.refusal.done")
            full = data.get("text") if kind.endswith("text.done") else data.get("refusal")
            if not self._seen.get(block) and isinstance(full, str) and full:
                self._seen[block] = True
                out.append(TextDelta(block, full))
        elif kind == "response.reasoning_summary_part.added":
            block = self._blocks.get((key, 0))
            if block is not None and self._seen.get(block):
                out.append(ReasoningDelta(block, "\n\n"))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            block = self._blocks.get((key, 0))
            if block is not None and isinstance(data.get("delta"), str) and data["delta"]:
                self._seen[block] = True
                out.append(ReasoningDelta(block, data["delta"]))
        elif kind == "response.function_call_arguments.delta":
            block = self._blocks.get((key, 0))
            if block is not None and isinstance(data.get("delta"), str) and data["delta"]:
                self._seen[block] = True
                out.append(ToolCallDelta(block, data["delta"]))
        elif kind == "response.function_call_arguments.done":
            block = self._blocks.get((key, 0))
            if block is not None and not self._seen.get(block) and isinstance(data.get("arguments"), str):
                self._seen[block] = True
                out.append(ToolCallDelta(block, data["arguments"]))
        elif kind == "response.output_item.done":
            out.extend(self._item_done(data))
        elif kind in ("response.completed", "response.incomplete"):
            resp = data.get("response") if isinstance(data.get("response"), dict) else {}
            for block in list(self._open):
                out.extend(self._end(block))
            usage = decode_usage(resp.get("usage"))
            if usage is not None:
                out.append(UsageUpdate(usage))
            out.append(Finish(self._finish_reason(resp)))
            self._done = True
        elif kind == "response.custom_tool_call_input.delta":
            block = self._blocks.get((key, 0))
            if block is not None and isinstance(data.get("delta"), str) and data["delta"]:
                self._seen[block] = True
                out.append(ToolCallDelta(block, data["delta"]))
        elif kind == "response.custom_tool_call_input.done":
            block = self._blocks.get((key, 0))
            if block is not None and not self._seen.get(block) and isinstance(data.get("input"), str):
                self._seen[block] = True
                out.append(ToolCallDelta(block, data["input"]))
        return out

    def _finish_reason(self, resp: Dict[str, Any]) -> FinishReason:
        if resp.get("status") == "incomplete":
            return incomplete_reason(resp.get("incomplete_details"))
        return FinishReason.TOOL_CALLS if self._tools else FinishReason.STOP

    def _open_block(self, key: Tuple[str, int], kind: str, out: List[StreamPart]) -> int:
        block = self._next_block
        self._next_block += 1
        self._blocks[key] = block
        self._kinds[block] = kind
        self._open.append(block)
        return block

    def _text_block(self, key: str, data: Dict[str, Any], out: List[StreamPart], refusal: bool = False) -> int:
        ci = data.get("content_index") if isinstance(data.get("content_index"), int) else 0
        block = self._blocks.get((key, ci))
        if block is None:
            block = self._open_block((key, ci), "text", out)
            out.append(TextStart(block, refusal))
        return block

    def _end(self, block: int) -> List[StreamPart]:
        if block not in self._open:
            return []
        self._open.remove(block)
        kind = self._kinds[block]
        if kind == "text":
            return [TextEnd(block)]
        if kind == "tool":
            return [ToolCallEnd(block)]
        return [ReasoningEnd(block)]

    def _item_done(self, data: Dict[str, Any]) -> List[StreamPart]:
        item = data.get("item") if isinstance(data.get("item"), dict) else {}
        ikey = str(item.get("id") or f"#{data.get('output_index')}")
        out: List[StreamPart] = []
        if item.get("type") == "message":
            for ci, c in enumerate(as_list(item.get("content"))):
                block = self._blocks.get((ikey, ci))
                text = c.get("text", c.get("refusal")) if isinstance(c, dict) else None
                if block is None and isinstance(text, str) and text:
                    block = self._open_block((ikey, ci), "text", out)
                    out.append(TextStart(block, c.get("type") == "refusal"))
                if block is not None:
                    if not self._seen.get(block) and isinstance(text, str) and text:
                        self._seen[block] = True
                        out.append(TextDelta(block, text))
                    out.extend(self._end(block))
        elif item.get("type") in ("function_call", "custom_tool_call", "reasoning"):
            block = self._blocks.get((ikey, 0))
            if block is None:
                return out
            if item["type"] != "reasoning":
                payload = item.get("arguments" if item["type"] == "function_call" else "input")
                if not self._seen.get(block) and isinstance(payload, str):
                    self._seen[block] = True
                    out.append(ToolCallDelta(block, payload))
                out.extend(self._end(block))
            else:
                if not self._seen.get(block):
                    texts = [s.get("text", "") for s in as_list(item.get("summary")) if isinstance(s, dict)]
                    if any(texts):
                        out.append(ReasoningDelta(block, "\n\n".join(texts)))
                if block in self._open:
                    self._open.remove(block)
                    out.append(ReasoningEnd(block, pack_reasoning_signature(str(item.get("id") or ""),
                                                                            item.get("encrypted_content"))))
        return out

    def finish(self) -> List[StreamPart]:
        if not self._done:
            raise bad_upstream(self._target, "the stream ended without a terminal response event")
        return []
