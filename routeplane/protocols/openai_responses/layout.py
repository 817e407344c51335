"""Where a Responses client's system and developer input items stood, for a Responses upstream."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...language_model.types import Message, Prompt, TextPart

# Prompt.extras key (a "_" key: a client cannot set it) of the hint: positions and counts, never text.
SYSTEM_LAYOUT_KEY = "_responses_system_layout"
# One system or developer item: after how many messages it came, how many parts the last of them had then,
# its role, how many system parts it gave, and whether its content was an array.
Entry = Tuple[int, int, str, int, bool]


def layout_hint(messages: Sequence[Message], lead: int, system: Sequence[TextPart],
                entries: List[Entry]) -> Optional[Tuple[int, int, int, Tuple[Entry, ...]]]:
    """The hint for a same-wire upstream, or None when the input's system items only lead, as `system`
    items with no fields of their own: those join `instructions`, as before. `lead`: 1 when
    `instructions` is the first system part."""
    if not any(k or role != "system" for k, _, role, _, _ in entries) \
            and not any(p.part_fields for p in system[lead:]):
        return None
    return len(messages), sum(len(m.parts) for m in messages), lead, tuple(entries)


def echoed_instructions(prompt: Prompt) -> Optional[str]:
    """The response object's `instructions`: the client's own, as OpenAI echoes them, not the text of the
    system items that went back in place (while the hint fits the prompt's system parts)."""
    hint = prompt.extras.get(SYSTEM_LAYOUT_KEY) if prompt.extras_protocol == "openai_responses" else None
    if hint is not None and hint[2] + sum(e[3] for e in hint[3]) == len(prompt.system):
        return prompt.system[0].text if hint[2] else None
    return prompt.system_text() or None


def laid_out(prompt: Prompt, hint: Any, encode: Callable[[Message], List[Dict[str, Any]]],
             encode_part: Callable[[TextPart], Any]) -> Optional[Tuple[Optional[str], List[Dict[str, Any]]]]:
    """`instructions` and the input items with each system or developer item back where the client put
    it, with its role (other wires have one system slot: translation.md). The text is the prompt's own,
    after every pre-request hook. A hook that changed how many messages, parts or system parts there are
    makes the hint stale: then None, and the system prompt is `instructions` alone, as for other wires.

    Decoding joins consecutive items of one role into one message (a developer item between two
    function calls sits inside one assistant message), so a position is a message and a part in it."""
    count, parts, lead, entries = hint
    messages, system = prompt.messages, prompt.system
    if (count != len(messages) or parts != sum(len(m.parts) for m in messages)
            or lead + sum(e[3] for e in entries) != len(system)):
        return None
    found = [_cut(messages, k, p) for k, p, _, _, _ in entries]
    cuts = [c for c in found if c is not None]
    if len(cuts) != len(found) or cuts != sorted(cuts):
        return None
    items: List[Dict[str, Any]] = []
    cursor, taken = (0, 0), lead
    for cut, (_, _, role, n, as_list) in zip(cuts, entries):
        cursor = _upto(messages, cursor, cut, encode, items)
        texts = system[taken:taken + n]
        taken += n
        if as_list or any(p.part_fields for p in texts):
            items.append({"role": role, "content": [encode_part(p) for p in texts]})
        else:
            items.append({"role": role, "content": "\n\n".join(p.text for p in texts)})
    _upto(messages, cursor, (len(messages), 0), encode, items)
    return (system[0].text if lead else None), items


def _cut(messages: Sequence[Message], k: int, p: int) -> Optional[Tuple[int, int]]:
    """The entry's place as (message, part) before which it goes, or None if the prompt no longer has it."""
    if k == 0:
        return 0, 0
    if k > len(messages) or p > len(messages[k - 1].parts):
        return None
    return (k, 0) if p == len(messages[k - 1].parts) else (k - 1, p)


def _upto(messages: Sequence[Message], cursor: Tuple[int, int], cut: Tuple[int, int],
          encode: Callable[[Message], List[Dict[str, Any]]], items: List[Dict[str, Any]]) -> Tuple[int, int]:
    """Encodes the messages (or the parts of one) from `cursor` up to `cut`; returns the new cursor."""
    m, p = cursor
    while (m, p) < cut:
        whole = messages[m].parts
        end = cut[1] if m == cut[0] else len(whole)
        items.extend(encode(messages[m] if p == 0 and end == len(whole) else replace(messages[m], parts=whole[p:end])))
        m, p = (m, end) if m == cut[0] else (m + 1, 0)
    return m, p
