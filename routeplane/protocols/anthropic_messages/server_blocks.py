"""The blocks the canonical model has no form for (server-side tool calls and results, MCP blocks, container
uploads, search results, and whatever block type Anthropic adds next), and text `citations`: kept verbatim
for a client and an upstream of this wire (OpaquePart, TextPart.annotations), left out for any other."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...language_model.types import OpaquePart, TextPart

PROTOCOL = "anthropic_messages"

# Blocks an answer may hold that the codec maps to canonical parts; every other type is kept opaque.
CANONICAL = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})
# A user's own blocks: in an assistant turn they stay the 400 that names them.
_USER_BLOCKS = frozenset({"tool_result", "image", "document"})
# What a user message holds for its own wire (anthropic-messages.md §3; a tool_result's content may hold a
# search_result too); any other type there stays a 400, so a mistyped block is named rather than sent on.
USER_OPAQUE = frozenset({"search_result", "container_upload"})


def opaque_in_answer(kind: Any) -> bool:
    """An answer's block kept verbatim: server_tool_use, web_search_tool_result, mcp_tool_use, ..., and
    any type newer than this code."""
    return isinstance(kind, str) and bool(kind) and kind not in CANONICAL


def opaque_in_assistant(kind: Any) -> bool:
    """A block of the client's assistant turn kept verbatim: what an answer held (opaque_in_answer), so a
    conversation continues whatever the last answer held; a user's block type there stays a 400."""
    return opaque_in_answer(kind) and kind not in _USER_BLOCKS


def own_tool_use(block: Mapping[str, Any]) -> bool:
    """A tool_use only this wire can express: called by a server tool (programmatic tool calling's `caller`,
    other than the model's own `direct`) or a member of an Anthropic toolset (`toolset_name`). Anthropic
    needs those fields back with the call, which the canonical tool call has no place for, so the block is
    kept verbatim; the tools that make such calls are this wire's own (wire_only.py), so nothing else sees one."""
    caller = block.get("caller")
    return bool(block.get("toolset_name")) or (isinstance(caller, dict) and caller.get("type") != "direct")


def citations(block: Mapping[str, Any]) -> Tuple[Mapping[str, Any], ...]:
    """A text block's non-empty `citations`, as annotations."""
    raw = block.get("citations")
    return tuple(c for c in raw if isinstance(c, dict)) if isinstance(raw, list) else ()


def cited_text(text: str, block: Mapping[str, Any]) -> TextPart:
    notes = citations(block)
    return TextPart(text, annotations=notes, annotations_protocol=PROTOCOL if notes else None)


def with_citations(out: Dict[str, Any], part: TextPart) -> Dict[str, Any]:
    """`out` (the text block) with the part's citations when they are this wire's."""
    if part.annotations and part.annotations_protocol == PROTOCOL:
        out["citations"] = [dict(c) for c in part.annotations]
    return out


def own_block(part: OpaquePart) -> Optional[Dict[str, Any]]:
    """The block to write back, or None for another wire's."""
    return dict(part.block) if part.protocol == PROTOCOL else None


# --- streams ---------------------------------------------------------------


class Gathered:
    """One opaque block being streamed: its content_block_start, then its deltas until content_block_stop.
    input_json_delta fragments make its `input` (Anthropic starts it as `{}`); any other delta (a beta
    `compaction_delta`) sets the fields it carries, as the SDK's accumulator does."""

    def __init__(self, start: Mapping[str, Any]) -> None:
        self.block: Dict[str, Any] = dict(start)
        self.json: List[str] = []

    def add(self, delta: Mapping[str, Any]) -> None:
        if delta.get("type") == "input_json_delta":
            if isinstance(delta.get("partial_json"), str):
                self.json.append(delta["partial_json"])
        else:
            self.block.update({k: v for k, v in delta.items() if k != "type"})

    def done(self) -> Dict[str, Any]:
        """The block as a non-streamed answer holds it. Raises ValueError (RecursionError when nested too
        deep) when the fragments are not JSON."""
        text = "".join(self.json)
        if text.strip():
            self.block["input"] = json.loads(text)
        return self.block


def block_events(block: Mapping[str, Any]) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """A whole block as its content_block_start's block and at most one delta. A call (server_tool_use,
    mcp_tool_use) starts with `"input": {}` and sends its input as one input_json_delta, as Anthropic does:
    the SDK accumulates a call's input from those deltas only."""
    start = dict(block)
    kind = start.get("type")
    tool_input = start.get("input")
    if isinstance(kind, str) and kind.endswith("tool_use") and isinstance(tool_input, dict) and tool_input:
        start["input"] = {}
        return start, {"type": "input_json_delta", "partial_json": json.dumps(tool_input, ensure_ascii=False)}
    return start, None
