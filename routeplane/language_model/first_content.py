"""A stream's opening, held back until its first content, so a failure there can still fall back.

Upstreams often open a stream and only then fail: Anthropic sends `message_start` then an
`overloaded_error` event, OpenAI Chat a role-only chunk then an error chunk, Responses
`response.created` then `response.failed`, Gemini a chunk without parts then an error. Nothing the
client would see has arrived by then. So the pipeline pulls the upstream's parts while they are purely
structural, answering nothing yet; an error raised meanwhile is a failure of the attempt, exactly like
one before the first part (it may fall back, a 400 stays an HTTP 400), and the held parts are dropped
with it. The first part with content releases the hold, and from then on a failure is the wire's error
frame ("Never after the first byte", docs/routing.md).

Structural (held): `ResponseStart`, `UsageUpdate`, a `TextStart`, a `ReasoningStart` without a redacted
payload, and a text or reasoning delta that carries nothing (no text, no signature). Everything else
releases: a delta with content, a `ToolCallStart`, any `*End`, `Finish`, a redacted reasoning block. At
most `MAX_HELD` parts are held (a stall is already bounded by the read timeout). The cost is a few
isinstance checks per held part, none after the release.
"""

from __future__ import annotations

import itertools
from typing import Iterator, List, Tuple

from ..errors import InvalidUpstreamResponse
from .types import ReasoningDelta, ReasoningStart, ResponseStart, StreamPart, TextDelta, TextStart, UsageUpdate

MAX_HELD = 64

_ALWAYS_STRUCTURAL = (ResponseStart, UsageUpdate, TextStart)


def is_structural(part: StreamPart) -> bool:
    """A part that opens or accounts for something but carries nothing the client would see."""
    if isinstance(part, _ALWAYS_STRUCTURAL):
        return True
    if isinstance(part, ReasoningStart):
        return part.redacted is None
    if isinstance(part, TextDelta):
        return not part.text
    if isinstance(part, ReasoningDelta):
        return not part.text and not part.signature
    return False


def open_until_content(upstream: Iterator[StreamPart], provider: str) -> Tuple[StreamPart, Iterator[StreamPart]]:
    """The stream's first part and an iterator over the rest (the held parts, then the upstream), once
    the first content arrived, the hold is full or the upstream ended. The iterator is an
    `itertools.chain`: past the hold, a part costs no Python call of ours. Closing stays with the
    caller, on `upstream` itself.

    Raises whatever the upstream raises before that (the caller closes it and treats it as the
    attempt's failure); a stream that ends before its first part is an InvalidUpstreamResponse.
    """
    try:
        first = next(upstream)
    except StopIteration:
        raise InvalidUpstreamResponse(f"{provider} ended the stream before sending anything",
                                      provider=provider) from None
    if not is_structural(first):
        return first, upstream
    held: List[StreamPart] = []
    for part in upstream:
        held.append(part)
        if len(held) >= MAX_HELD or not is_structural(part):
            break
    return first, (itertools.chain(held, upstream) if held else upstream)
