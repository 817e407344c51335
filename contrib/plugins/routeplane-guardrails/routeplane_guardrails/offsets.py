"""Annotations that point into their text by character offset, moved to where a redaction left that text.

A Responses `output_text` annotation indexes its part's text (a `url_citation`'s
`start_index`/`end_index`, a `file_citation`'s `index`, the place to insert it), and so does a
Chat message's `annotations[].url_citation` (a search model's citations, into `content`, which the
Chat codec keeps as one text part): once a
placeholder of another length replaced a secret, every offset after it must move by the
difference, or the client's link covers the wrong words. An offset inside a replaced span
moves to the placeholder's edge so the cited span covers the whole placeholder (a start to
its start, an end or an insertion point to its end, never splitting it); the citation's
source is still what the text drew on, so it is kept rather than dropped.
Anthropic citations index their source document, not the answer: they need nothing.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple

from routeplane.protocols.openai_chat.response import PROTOCOL as CHAT

RESPONSES = "openai_responses"
# (start, end) of a span replaced in the original text, and the length of its placeholder; in order, apart.
Edit = Tuple[int, int, int]
# Responses annotation type -> its offsets into the text (start first). `file_path.index` is the file's place
# in a list of files, not a position in the text.
_OFFSETS = {"url_citation": ("start_index", "end_index"),
            "container_file_citation": ("start_index", "end_index"),
            "file_citation": ("index",)}
# A Chat annotation holds its offsets one level down: {"type": "url_citation", "url_citation": {...}}.
_CHAT_OFFSETS = ("start_index", "end_index")


def moved(pos: int, edits: Sequence[Edit], start: bool) -> int:
    """Where offset `pos` of the original text is in the redacted one. `start`: the offset opens a span."""
    shift = 0
    for s, e, length in edits:
        if pos <= s:
            break
        if pos < e:  # inside a replaced span: to the placeholder's edge
            return s + shift + (0 if start else length)
        shift += length - (e - s)
    return pos + shift


def shifted(note: Mapping[str, Any], protocol: str, edits: Sequence[Edit]) -> Mapping[str, Any]:
    """`note` with its offsets into the text moved past `edits` (a copy), or `note` itself if none moved."""
    kind = note.get("type")
    if not edits or not isinstance(kind, str):
        return note
    if protocol == RESPONSES and kind in _OFFSETS:
        return _fields(note, _OFFSETS[kind], edits)
    cited = note.get(kind)
    if protocol == CHAT and kind == "url_citation" and isinstance(cited, Mapping):
        new = _fields(cited, _CHAT_OFFSETS, edits)
        return note if new is cited else {**note, kind: new}
    return note


def _fields(note: Mapping[str, Any], keys: Sequence[str], edits: Sequence[Edit]) -> Mapping[str, Any]:
    new = dict(note)
    for k in keys:
        v = note.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            new[k] = moved(v, edits, start=k == "start_index")
    return note if new == note else new
