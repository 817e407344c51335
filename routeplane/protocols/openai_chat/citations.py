"""URL citations between the OpenAI wires: Chat nests a `url_citation`'s fields under its type, Responses lays them flat.

Both carry the same fields (`start_index`, `end_index`, `url`, `title`), offsets into the text: a Chat
annotation indexes the message's whole `content`, a Responses one its `output_text` part. A Responses
`file_citation`, `container_file_citation` or `file_path` has no Chat form and is left out there.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

CHAT = "openai_chat"
RESPONSES = "openai_responses"
URL_CITATION = "url_citation"
_OPENAI = (CHAT, RESPONSES)


def reaches(protocol: Optional[str], wire: Optional[str]) -> bool:
    """May annotations of `protocol` reach a client of `wire` (None: any)? Its own wire's do, and each OpenAI
    wire relays the other's URL citations (what has no form there is left out by its encoder)."""
    return wire is None or protocol == wire or (protocol in _OPENAI and wire in _OPENAI)


def chat_citation(note: Mapping[str, Any], protocol: Optional[str], base: int = 0) -> Optional[Dict[str, Any]]:
    """`note`, an annotation of `protocol`, in Chat's shape; a Responses one moved by `base` (where its part
    starts in the content). None when Chat has no form for it."""
    if protocol == CHAT:
        return dict(note)
    if protocol != RESPONSES or note.get("type") != URL_CITATION:
        return None
    cited = {k: v for k, v in note.items() if k != "type"}
    if base:
        for k in ("start_index", "end_index"):
            v = cited.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                cited[k] = v + base
    return {"type": URL_CITATION, URL_CITATION: cited}


def responses_citation(note: Mapping[str, Any], protocol: Optional[str]) -> Optional[Dict[str, Any]]:
    """`note`, an annotation of `protocol`, in Responses' shape; None when Responses has no form for it."""
    if protocol == RESPONSES:
        return dict(note)
    cited = note.get(URL_CITATION)
    if protocol != CHAT or note.get("type") != URL_CITATION or not isinstance(cited, Mapping):
        return None
    return {"type": URL_CITATION, **{k: v for k, v in cited.items() if k != "type"}}
