"""A Responses reasoning item in the canonical ReasoningPart: its id, encrypted content and summary parts."""

from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence, Tuple

from ...language_model.types import Prompt, ReasoningDelta
from ..anthropic_messages.response import wants_thinking
from ..gemini.response import shows_thoughts

# Summary parts reach other wires as one text, joined by this.
JOIN = "\n\n"
_LENGTHS = re.compile(r"\d+(,\d+)+")


def reads_reasoning(prompt: Prompt) -> bool:
    """Did another wire's client ask to see the model's reasoning? OpenAI sends a summary only when
    asked (`reasoning.summary`): an Anthropic client's `thinking` (not `display: "omitted"`, which is
    Anthropic's own way of asking for none), a Gemini client's `includeThoughts: true`. A Chat client
    has no way to ask."""
    thinking = prompt.extras.get("thinking")
    if wants_thinking(prompt) and isinstance(thinking, dict):
        return thinking.get("display") != "omitted"
    return shows_thoughts(prompt)


def summary_texts(item: Any) -> List[str]:
    """The texts of a reasoning item's `summary_text` parts."""
    summary = item.get("summary") if isinstance(item, dict) else None
    return [s["text"] for s in summary or () if isinstance(s, dict) and isinstance(s.get("text"), str)] \
        if isinstance(summary, list) else []


def pack_reasoning_signature(item_id: str, encrypted: Optional[str], summary: Sequence[str] = ()) -> str:
    """A Responses reasoning item needs both its id and its encrypted_content to
    round-trip; the canonical ReasoningPart has one signature slot, so both go in
    it (ids and base64 never contain a newline), and, when its summary has several
    parts, their lengths: the text is the parts joined (JOIN), which a Responses
    client gets back apart (split_summary)."""
    lengths = f"\n{','.join(str(len(t)) for t in summary)}" if len(summary) > 1 else ""
    return f"{item_id}\n{encrypted or ''}{lengths}"


def _fields(signature: str) -> Tuple[str, str, Tuple[int, ...]]:
    item_id, _, rest = signature.partition("\n")
    encrypted, sep, tail = rest.rpartition("\n")
    if sep and _LENGTHS.fullmatch(tail):
        return item_id, encrypted, tuple(int(n) for n in tail.split(","))
    return item_id, rest, ()


def unpack_reasoning_signature(signature: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    if not signature or "\n" not in signature:
        return None, signature or None
    item_id, encrypted, _ = _fields(signature)
    return item_id or None, encrypted or None


def split_summary(text: str, signature: Optional[str]) -> List[str]:
    """The summary parts of `text`, as the upstream sent them when the signature says how (and the text is
    still theirs: a hook that rewrote it gets one part), else the text as one part."""
    lengths = _fields(signature)[2] if signature and "\n" in signature else ()
    if lengths and sum(lengths) + len(JOIN) * (len(lengths) - 1) == len(text):
        parts, at = [], 0
        for n in lengths:
            parts.append(text[at:at + n])
            at += n + len(JOIN)
        if JOIN.join(parts) == text:
            return parts
    return [text] if text else []


# A stream's reasoning reaches a Responses client as it arrives (stream.py), which needs two things the
# canonical parts only hold at the item's end (its signature): the item's id, for the `output_item.added`
# the SDK matches with the done item, and where each summary part begins. The decoder sends both as
# ReasoningDeltas every other wire reads as usual: the id as a signature ahead of the text (the one at
# the item's end replaces it; only an Anthropic or Gemini block's own signature is shown), and each join
# between parts with an empty signature (no signature anywhere), so a model's own "\n\n" is not one.


def item_identity(block: int, item_id: str) -> ReasoningDelta:
    """The reasoning item's id, ahead of its text (stream_decode.py)."""
    return ReasoningDelta(block, "", signature=pack_reasoning_signature(item_id, None))


def summary_break(block: int) -> ReasoningDelta:
    """The JOIN where the item's next summary part begins."""
    return ReasoningDelta(block, JOIN, signature="")


def is_summary_break(part: ReasoningDelta) -> bool:
    return part.text == JOIN and part.signature == ""
