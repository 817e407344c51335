"""Input content parts for a Responses upstream, with the fields a client marked them with."""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Optional

from ...language_model.types import ContentPart, FilePart, ImagePart, TextPart

# An input part's fields kept for this wire (its part_fields): OpenAI's explicit prompt-cache breakpoint (with
# `prompt_cache_options.mode: "explicit"` a request whose breakpoints were dropped is not cached at all).
PART_FIELDS = ("prompt_cache_breakpoint",)


def cache_fields(p: ContentPart, cache_wires: FrozenSet[str]) -> Dict[str, Any]:
    """The part's PART_FIELDS, when it came from one of `cache_wires` (Chat calls them the same)."""
    fields = getattr(p, "part_fields", None)
    if not fields or getattr(p, "part_fields_protocol", None) not in cache_wires:
        return {}
    return {k: fields[k] for k in PART_FIELDS if k in fields}


def encode_user_part(p: ContentPart, cache_wires: FrozenSet[str]) -> Optional[Dict[str, Any]]:
    out = _user_part_body(p)
    return None if out is None else {**out, **cache_fields(p, cache_wires)}


def _user_part_body(p: ContentPart) -> Optional[Dict[str, Any]]:
    if isinstance(p, TextPart):
        return {"type": "input_text", "text": p.text}
    if isinstance(p, ImagePart):
        url = p.url if p.url else f"data:{p.media_type or 'image/png'};base64,{p.data}"
        return {"type": "input_image", "image_url": url, "detail": p.detail or "auto"}
    if isinstance(p, FilePart):
        if p.file_id and (p.media_type or "").startswith("image/"):
            return {"type": "input_image", "file_id": p.file_id, "detail": "auto"}
        f: Dict[str, Any] = {"type": "input_file"}
        if p.file_id:
            f["file_id"] = p.file_id
        if p.url:
            f["file_url"] = p.url
        if p.data:
            f["file_data"] = f"data:{p.media_type or 'application/pdf'};base64,{p.data}"
        if p.filename:
            f["filename"] = p.filename
        return f
    return None


def user_item(content: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    if not content:
        return []
    if all(c.keys() == {"type", "text"} and c["type"] == "input_text" for c in content):
        return [{"role": "user", "content": "".join(c["text"] for c in content)}]  # the plain form, as clients send it
    return [{"role": "user", "content": content}]
