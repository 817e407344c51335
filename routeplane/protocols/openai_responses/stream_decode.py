"""OpenAI Responses SSE from a provider: named events → canonical stream parts."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

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
    TokenLogprobs,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)
from ..base import StreamDecoder, as_list, bad_upstream
from ..sse import SSEEvent
from .reasoning import JOIN, item_identity, pack_reasoning_signature, summary_break, summary_texts
from .request import PROTOCOL
from .response import CANONICAL_ITEMS, decode_usage, failed_error, failure, incomplete_reason, upstream_fields


def _pending_key(data: Dict[str, Any], ikey: str) -> Any:
    """A hosted item's key from added to done: its output_index (a compatible server may give the id in
    one event only), else its id."""
    index = data.get("output_index")
    return index if isinstance(index, int) and not isinstance(index, bool) else ikey


def _logprobs(block: int, entries: Any, text: str) -> List[StreamPart]:
    """The `logprobs` an event gives for its text (asked for with include "message.output_text.logprobs")."""
    if not isinstance(entries, list) or not entries:
        return []
    return [TokenLogprobs(block, PROTOCOL, tuple(x for x in entries if isinstance(x, dict)), text)]


class ResponsesStreamDecoder(StreamDecoder):
    """Provider events → parts, keyed by item id (or output_index when an id is missing).

    A hosted tool's item (web_search_call, mcp_call, ...) is gathered from `output_item.added` to
    `output_item.done`, its own progress events ignored, and comes out whole as one OpaqueBlock: the
    done item, as a non-streamed answer holds it."""

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
        self._pending: Dict[Any, Dict[str, Any]] = {}  # hosted-tool item (_pending_key) → its added item, until done
        self._notes: Dict[int, int] = {}  # text block → annotations relayed
        self._listed: Dict[int, int] = {}  # text block → annotations a done event listed (_late_notes)
        self._hosted: List[Dict[str, Any]] = []  # the hosted-tool items sent on, for the billed calls
        self._offered: Any = None  # response.created's copy of the request's tools (which web search it offered)
        self._streamed: set = set()  # ids and "#<output_index>" of the items events carried
        self._fields: Dict[str, Dict[str, Any]] = {}  # a message's id and "#<output_index>" → its phase
        self._reasoning_ids: Dict[int, str] = {}  # reasoning block → its item's id, from output_item.added

    def feed(self, event: SSEEvent) -> List[StreamPart]:
        if self._done or not event.data.strip():
            return []
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
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
            self._offered = resp.get("tools")
            out.append(ResponseStart(str(resp.get("id") or ""), str(resp.get("model") or self._target.model),
                                     resp["created_at"] if isinstance(resp.get("created_at"), int) else 0))
        self._mark(data)
        key = str(data.get("item_id") or f"#{data.get('output_index')}")
        if kind == "response.output_item.added":
            item = data.get("item") if isinstance(data.get("item"), dict) else {}
            ikey = str(item.get("id") or f"#{data.get('output_index')}")
            if item.get("type") in ("function_call", "custom_tool_call", "reasoning"):
                self._begin_item(item, ikey, data.get("output_index"), out)
            elif item.get("type") == "message" and upstream_fields(item):
                self._fields[ikey] = self._fields[f"#{data.get('output_index')}"] = upstream_fields(item)
            elif isinstance(item.get("type"), str) and item["type"] not in CANONICAL_ITEMS:
                self._pending[_pending_key(data, ikey)] = item
        elif kind == "response.content_part.added":
            part = data.get("part") if isinstance(data.get("part"), dict) else {}
            self._text_block(key, data, out, part.get("type") == "refusal")
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            block = self._text_block(key, data, out, kind == "response.refusal.delta")
            if isinstance(data.get("delta"), str) and data["delta"]:
                self._seen[block] = True
                out.extend(_logprobs(block, data.get("logprobs"), data["delta"]))
                out.append(TextDelta(block, data["delta"]))
        elif kind in ("response.output_text.done", "response.refusal.done"):
            block = self._text_block(key, data, out, kind == "response.refusal.done")
            full = data.get("text") if kind.endswith("text.done") else data.get("refusal")
            if not self._seen.get(block) and isinstance(full, str) and full:
                self._seen[block] = True
                out.extend(_logprobs(block, data.get("logprobs"), full))
                out.append(TextDelta(block, full))
        elif kind == "response.output_text.annotation.added":
            block = self._text_block(key, data, out)
            at = data.get("annotation_index")
            # One a done event already listed (its `annotation.added` came after it) is not relayed twice.
            relisted = isinstance(at, int) and not isinstance(at, bool) and 0 <= at < self._listed.get(block, 0)
            if isinstance(data.get("annotation"), dict) and not relisted:
                self._notes[block] = self._notes.get(block, 0) + 1
                out.append(TextAnnotation(block, PROTOCOL, data["annotation"]))
        elif kind == "response.content_part.done":
            part = data.get("part") if isinstance(data.get("part"), dict) else {}
            ci = data.get("content_index") if isinstance(data.get("content_index"), int) else 0
            block = self._blocks.get((key, ci))
            if block is not None:
                self._late_notes(block, part.get("annotations"), out)
        elif kind == "response.reasoning_summary_part.added":
            block = self._blocks.get((key, 0))
            if block is not None and self._seen.get(block):
                out.append(summary_break(block))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            # Sent on as it comes: the encrypted content only comes with the done item (ReasoningEnd), the
            # id ahead of the first text lets a Responses client's stream show it live too (reasoning.py).
            block = self._blocks.get((key, 0))
            if block is not None and isinstance(data.get("delta"), str) and data["delta"]:
                if not self._seen.get(block) and block in self._reasoning_ids:
                    out.append(item_identity(block, self._reasoning_ids[block]))
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
            out.extend(self._unfinished_items(resp))
            for block in list(self._open):
                out.extend(self._end(block))
            out.extend(self._unstreamed_items(resp))
            # The calls billed by the call, from the terminal response's items, or the streamed ones when a
            # compatible server lists none there.
            listed = resp.get("output") if isinstance(resp.get("output"), list) and resp.get("output") else None
            usage = decode_usage(resp.get("usage"), listed if listed is not None else self._hosted,
                                 resp["tools"] if isinstance(resp.get("tools"), list) else self._offered)
            if usage is not None:
                out.append(UsageUpdate(usage))
            tier = resp.get("service_tier")  # the tier it was served on: a Responses client gets it back
            out.append(Finish(self._finish_reason(resp), wire=PROTOCOL if isinstance(tier, str) else None,
                              extras={"service_tier": tier} if isinstance(tier, str) else {}))
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

    def _mark(self, data: Dict[str, Any]) -> None:
        """Notes the item an event is about, by its id and its output_index (_unstreamed_items)."""
        item = data.get("item") if isinstance(data.get("item"), dict) else {}
        for iid in (data.get("item_id"), item.get("id")):
            if isinstance(iid, str) and iid:
                self._streamed.add(iid)
        index = data.get("output_index")
        if isinstance(index, int) and not isinstance(index, bool):
            self._streamed.add(f"#{index}")

    def _unstreamed_items(self, resp: Dict[str, Any]) -> List[StreamPart]:
        """The terminal response's items that no event carried (a compatible server that streams only
        the terminal event, or skips some items): whole, as the non-streamed answer holds them."""
        out: List[StreamPart] = []
        for index, item in enumerate(as_list(resp.get("output"))):
            if not isinstance(item, dict) or f"#{index}" in self._streamed:
                continue
            iid = item.get("id")
            if isinstance(iid, str) and iid in self._streamed:  # an id of another type (a list) is no id
                continue
            out.extend(self._item_done({"output_index": index, "item": item}))
        return out

    def _begin_item(self, item: Dict[str, Any], ikey: str, output_index: Any, out: List[StreamPart]) -> int:
        """A function, custom tool call or reasoning item's block, opened."""
        if item["type"] == "reasoning":
            block = self._open_block((ikey, 0), "reasoning", out)
            out.append(ReasoningStart(block, PROTOCOL))
            if isinstance(item.get("id"), str) and item["id"]:
                self._reasoning_ids[block] = item["id"]
        else:
            block = self._open_block((ikey, 0), "tool", out)
            self._tools = True
            out.append(ToolCallStart(block, str(item.get("call_id") or item.get("id") or f"call_{block}"),
                                     str(item.get("name") or ""), custom=item["type"] == "custom_tool_call"))
        self._blocks[(f"#{output_index}", 0)] = block
        return block

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
            out.append(self._text_start(block, refusal, self._fields.get(key)))
        return block

    @staticmethod
    def _text_start(block: int, refusal: bool, fields: Any) -> TextStart:
        return TextStart(block, refusal, part_fields=fields, part_fields_protocol=PROTOCOL if fields else None)

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
                    out.append(self._text_start(block, c.get("type") == "refusal", upstream_fields(item)))
                if block is not None:
                    if not self._seen.get(block) and isinstance(text, str) and text:
                        self._seen[block] = True
                        out.extend(_logprobs(block, c.get("logprobs"), text))
                        out.append(TextDelta(block, text))
                    if isinstance(c, dict):
                        self._late_notes(block, c.get("annotations"), out)
                    out.extend(self._end(block))
        elif item.get("type") in ("function_call", "custom_tool_call", "reasoning"):
            block = self._blocks.get((ikey, 0))
            index = data.get("output_index")
            if block is None and isinstance(index, int) and not isinstance(index, bool):
                block = self._blocks.get((f"#{index}", 0))  # added without the id the done item has
            if block is None:  # done without an added event: the done item is the whole of it
                block = self._begin_item(item, ikey, data.get("output_index"), out)
            if item["type"] != "reasoning":
                payload = item.get("arguments" if item["type"] == "function_call" else "input")
                if not self._seen.get(block) and isinstance(payload, str):
                    self._seen[block] = True
                    out.append(ToolCallDelta(block, payload))
                out.extend(self._end(block))
            else:
                texts = summary_texts(item)
                if not self._seen.get(block) and any(texts):
                    out.append(ReasoningDelta(block, JOIN.join(texts)))
                if block in self._open:
                    self._open.remove(block)
                    out.append(ReasoningEnd(block, pack_reasoning_signature(str(item.get("id") or ""),
                                                                            item.get("encrypted_content"), texts)))
        elif isinstance(item.get("type"), str) and item["type"] not in CANONICAL_ITEMS:
            self._settle_pending(_pending_key(data, ikey), item)
            out.append(self._opaque(item))
        return out

    def _settle_pending(self, key: Any, item: Dict[str, Any]) -> None:
        """The done item's added one is no longer pending; found by its id too when only one of the two
        events named the output_index (else the terminal event would send it a second time)."""
        if self._pending.pop(key, None) is None and item.get("id"):
            for k, added in list(self._pending.items()):
                if added.get("id") == item["id"]:
                    del self._pending[k]
                    break

    def _opaque(self, item: Dict[str, Any]) -> OpaqueBlock:
        """A hosted tool's whole item, in a block of its own (items never interleave on this wire)."""
        block = self._next_block
        self._next_block += 1
        self._kinds[block] = "opaque"
        self._hosted.append(item)
        return OpaqueBlock(block, PROTOCOL, item)

    def _unfinished_items(self, resp: Dict[str, Any]) -> List[StreamPart]:
        """Hosted-tool items added but never done: the terminal response's copy, else the added one."""
        if not self._pending:
            return []
        final = {str(i.get("id")): i for i in as_list(resp.get("output")) if isinstance(i, dict) and i.get("id")}
        out: List[StreamPart] = [self._opaque(final.get(str(item.get("id")), item)) for item in self._pending.values()]
        self._pending.clear()
        return out

    def _late_notes(self, block: int, annotations: Any, out: List[StreamPart]) -> None:
        """Annotations a done event holds that no `annotation.added` event relayed."""
        if not isinstance(annotations, list):
            return
        seen = self._notes.get(block, 0)
        for note in annotations[seen:]:
            if isinstance(note, dict):
                out.append(TextAnnotation(block, PROTOCOL, note))
        self._notes[block] = max(seen, len(annotations))
        self._listed[block] = max(self._listed.get(block, 0), len(annotations))

    def finish(self) -> List[StreamPart]:
        if not self._done:
            raise bad_upstream(self._target, "the stream ended without a terminal response event")
        return []
