"""Canonical content parts → Anthropic content blocks and turns (the outbound half of the codec)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any, Dict, List, Optional, Set, Tuple

from ...errors import InvalidRequest
from ...language_model.types import (
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    OpaquePart,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from .server_blocks import own_block, with_citations

PROTOCOL = "anthropic_messages"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")


def sanitize_id(value: str) -> str:
    """Anthropic ids must match ^[a-zA-Z0-9_-]+$; foreign ids are mapped deterministically.

    The same function is applied to tool_use.id and tool_result.tool_use_id, so
    pairs stay matched; a short hash keeps distinct foreign ids distinct.
    """
    if ID_OK.match(value):
        return value
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", value) or "toolu"
    return f"{cleaned}_{hashlib.sha1(value.encode('utf-8')).hexdigest()[:8]}"


def text_block(t: TextPart) -> Dict[str, Any]:
    block: Dict[str, Any] = {"type": "text", "text": t.text}
    if t.cache_control is not None:
        block["cache_control"] = dict(t.cache_control)
    return block


def encode_messages(messages: Tuple[Message, ...], held: bool = False) -> List[Dict[str, Any]]:
    """Canonical messages → Anthropic turns: same-role turns merged, tool results first, no empty blocks.

    `held`: the messages continue a conversation Anthropic holds (a `thread` continuation), so the tool
    results of the first turn answer calls of the held history, not of these messages.
    """
    turns: List[Tuple[str, List[Dict[str, Any]]]] = []
    for m in messages:
        role = "assistant" if m.role is Role.ASSISTANT else "user"
        blocks = [b for b in (_encode_part(p, role) for p in m.parts) if b is not None]
        if not blocks:
            continue  # Anthropic rejects empty content
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    _pair_tool_results(turns[1:] if held and turns and turns[0][0] == "user" else turns)
    out = []
    for role, blocks in turns:
        if role == "user":
            # "In that user message, all tool_result blocks come first" (400 otherwise).
            blocks = ([b for b in blocks if b.get("type") == "tool_result"]
                      + [b for b in blocks if b.get("type") != "tool_result"])
        out.append({"role": role, "content": blocks})
    return out


MISSING_RESULT = "No result was provided for this tool call."


def _pair_tool_results(turns: List[Tuple[str, List[Dict[str, Any]]]]) -> None:
    """Make every tool_use answered in the next user turn, and every tool_result answer one.

    Anthropic rejects both a tool_use without a tool_result immediately after
    and a tool_result without its tool_use (translation.md §12.5-6). Histories
    from other wires can have either (a truncated conversation, a client that
    dropped a result). A missing result becomes an explicit error result; an
    orphan result becomes user text, so nothing the client sent is lost. A
    valid Anthropic history is left exactly as it is.
    """
    asked: Set[str] = set()
    for i, (role, blocks) in enumerate(turns):
        if role == "assistant":
            asked = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            nxt = turns[i + 1] if i + 1 < len(turns) else None
            if asked and nxt is not None:
                answered = {b["tool_use_id"] for b in nxt[1] if b.get("type") == "tool_result"}
                missing = [b["id"] for b in blocks if b.get("type") == "tool_use" and b["id"] not in answered]
                nxt[1][:0] = [{"type": "tool_result", "tool_use_id": tid, "content": MISSING_RESULT, "is_error": True}
                              for tid in missing]
            continue
        for k, b in enumerate(blocks):
            if b.get("type") == "tool_result" and b["tool_use_id"] not in asked:
                blocks[k] = {"type": "text", "text": f"[result of tool call {b['tool_use_id']}]: {_result_text(b)}"}
        asked = set()


def _result_text(block: Dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(c.get("text", "") for c in content or [] if c.get("type") == "text")


def _encode_part(p: ContentPart, role: str) -> Optional[Dict[str, Any]]:
    if isinstance(p, TextPart):
        return with_citations(text_block(p), p) if p.text else None  # "text content blocks must be non-empty"
    if isinstance(p, ImagePart):
        return _image_block(p)
    if isinstance(p, FilePart):
        return file_block(p)
    if isinstance(p, ToolCallPart):
        block: Dict[str, Any] = {"type": "tool_use", "id": sanitize_id(p.id), "name": p.name,
                                 "input": parse_arguments(p.arguments, p.name)}
        if p.cache_control is not None:
            block["cache_control"] = dict(p.cache_control)
        return block
    if isinstance(p, ToolResultPart):
        return _tool_result_block(p)
    if isinstance(p, ReasoningPart):
        # Signatures are valid only for the vendor that made them; unsigned thinking
        # is rejected by Anthropic, so foreign or unsigned reasoning is dropped.
        if role != "assistant" or p.provider != PROTOCOL:
            return None
        if p.redacted is not None:
            return {"type": "redacted_thinking", "data": p.redacted}
        if p.signature:
            return {"type": "thinking", "thinking": p.text, "signature": p.signature}
        return None
    if isinstance(p, OpaquePart):
        return own_block(p)  # verbatim, in its place; another wire's has no form here
    return None


def parse_arguments(arguments: str, name: str) -> Dict[str, Any]:
    """OpenAI carries arguments as JSON text; Anthropic needs an object.

    Empty text is `{}`. Text that is not a JSON object is a 400: forwarding a
    guess would silently change the call the model made.
    """
    if not arguments or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise InvalidRequest(
            f"The arguments of tool call {name!r} are not valid JSON; Anthropic needs a JSON object.",
            code="invalid_tool_arguments",
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"The arguments of tool call {name!r} must be a JSON object.",
                             code="invalid_tool_arguments")
    return value


def _image_block(p: ImagePart) -> Dict[str, Any]:
    if p.url is not None:
        source: Dict[str, Any] = {"type": "url", "url": p.url}
    else:
        media = p.media_type or "image/png"
        if media not in IMAGE_TYPES:
            raise InvalidRequest(f"Anthropic accepts only {', '.join(IMAGE_TYPES)} images (got {media}).",
                                 code="unsupported_image_type")
        source = {"type": "base64", "media_type": media, "data": p.data or ""}
    block: Dict[str, Any] = {"type": "image", "source": source}
    if p.cache_control is not None:
        block["cache_control"] = dict(p.cache_control)
    return block


def file_block(p: FilePart) -> Dict[str, Any]:
    """A file: an `image` block when it is an image (Files API id, or bytes/URL of a type Anthropic
    takes as an image), else a `document` block. An image file id is FilePart(file_id, media_type
    "image/*"), the convention the Responses codec uses for `input_image.file_id`."""
    media = p.media_type or ""
    if media.startswith("image/"):
        if p.file_id:
            image: Dict[str, Any] = {"type": "image", "source": {"type": "file", "file_id": p.file_id}}
            if p.cache_control is not None:
                image["cache_control"] = dict(p.cache_control)
            return image
        if p.url or (p.data is not None and media in IMAGE_TYPES):
            return _image_block(ImagePart(url=p.url, data=p.data, media_type=media, cache_control=p.cache_control))
    return _document_block(p)


def _document_block(p: FilePart) -> Dict[str, Any]:
    if p.file_id:
        source: Dict[str, Any] = {"type": "file", "file_id": p.file_id}
    elif p.url:
        source = {"type": "url", "url": p.url}
    elif p.media_type == "text/plain" and p.data is not None:
        try:
            text = base64.b64decode(p.data).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidRequest("A text/plain document is not valid base64 UTF-8.") from None
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        source = {"type": "base64", "media_type": p.media_type or "application/pdf", "data": p.data or ""}
    block: Dict[str, Any] = {"type": "document", "source": source}
    if p.part_fields and p.part_fields_protocol == PROTOCOL:  # `citations`, `context`: an Anthropic client's
        block.update(p.part_fields)
    if p.filename:
        block["title"] = p.filename
    if p.cache_control is not None:
        block["cache_control"] = dict(p.cache_control)
    return block


def _tool_result_block(r: ToolResultPart) -> Dict[str, Any]:
    content: Any
    if all(isinstance(c, TextPart) and c.cache_control is None for c in r.content) and len(r.content) <= 1:
        content = r.content[0].text if r.content else ""  # type: ignore[union-attr]
    else:
        content = []
        for c in r.content:
            if isinstance(c, TextPart):
                if c.text:
                    content.append(text_block(c))
            elif isinstance(c, ImagePart):
                content.append(_image_block(c))
            elif isinstance(c, FilePart):
                content.append(file_block(c))
            elif isinstance(c, OpaquePart):
                opaque = own_block(c)  # a search_result
                if opaque is not None:
                    content.append(opaque)
    block: Dict[str, Any] = {"type": "tool_result", "tool_use_id": sanitize_id(r.tool_call_id)}
    if content:
        block["content"] = content
    if r.is_error:
        block["is_error"] = True
    if r.cache_control is not None:
        block["cache_control"] = dict(r.cache_control)
    return block
