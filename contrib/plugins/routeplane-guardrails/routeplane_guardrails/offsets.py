"""Annotations that point into their text by character offset, moved to where a redaction left that text.

A Responses `output_text` annotation indexes its part's text (a `url_citation`'s
`start_index`/`end_index`, a `file_citation`'s `index`, the place to insert it), and so does a
Chat message's `annotations[].url_citation` (a search model's citations, into `content`): once a
placeholder of another length replaced a secret, every offset after it must move by the
difference, or the client's link covers the wrong words. An offset inside a replaced span
moves to the placeholder's edge so the cited span covers the whole placeholder (a start to
its start, an end or an insertion point to its end, never splitting it); the citation's
source is still what the text drew on, so it is kept rather than dropped.
Anthropic citations index their source document, not the answer: they need nothing.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from routeplane.language_model.types import ContentPart, TextPart
from routeplane.protocols.openai_chat.response import ANNOTATIONS_KEY, LOGPROBS_KEY, LOGPROBS_TEXT_KEY
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
CHAT_NOTES = ANNOTATIONS_KEY  # where a Chat answer's annotations are, in Generation.extras


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


def chat_answer(extras: Mapping[str, Any], before: Sequence[ContentPart], after: Sequence[ContentPart],
                texts: Sequence[Tuple[TextPart, Sequence[Edit]]]) -> Optional[Dict[str, Any]]:
    """A Chat answer's extras once a redaction rewrote its text, or None if nothing needs changing.

    The codec keeps the message's `annotations` and the choice's logprobs with the text they were
    computed for, and drops both when the text it sends differs (openai_chat.response). The
    citations are moved past the redactions of `content` (its text parts, joined) and marked as
    computed for the redacted text; the logprobs score the original tokens, so they stay dropped.
    Extras already stale (another hook rewrote the text first) are left to be dropped.
    `texts`: each text part of `before` with the replacements made in it.
    """
    notes = extras.get(ANNOTATIONS_KEY)
    old, new = _scored(before), _scored(after)
    if not isinstance(notes, list) or not notes or old == new or extras.get(LOGPROBS_TEXT_KEY) != old:
        return None
    edits: List[Edit] = []
    base = 0
    for part, part_edits in texts:
        if not part.refusal:
            edits.extend((s + base, e + base, n) for s, e, n in part_edits)
            base += len(part.text)
    out = {k: v for k, v in extras.items() if k != LOGPROBS_KEY}
    out[ANNOTATIONS_KEY] = [shifted(n, CHAT, edits) if isinstance(n, Mapping) else n for n in notes]
    out[LOGPROBS_TEXT_KEY] = new
    return out


def _scored(parts: Sequence[ContentPart]) -> List[str]:
    """The message's content and refusal, as the Chat codec keeps them beside the annotations."""
    return ["".join(p.text for p in parts if isinstance(p, TextPart) and p.refusal == refusal)
            for refusal in (False, True)]
