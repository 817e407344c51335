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
payload, a text or reasoning delta that carries nothing (no text, no signature), and an `OpaqueBlock` of
another wire than the client's (an Anthropic `server_tool_use` for an OpenAI Chat client): its encoder
skips such a block, so nothing reached the client and a fallback is still clean. Everything else
releases: a delta with content, a `ToolCallStart`, any `*End`, `Finish`, a redacted reasoning block, an
`OpaqueBlock` of the client's own wire. At most `MAX_HELD` parts are held (a stall is already bounded by
the read timeout). The cost is a few isinstance checks per held part, none after the release.
"""

from __future__ import annotations

import itertools
from typing import Iterator, List, Optional, Tuple

from ..errors import InvalidUpstreamResponse, UpstreamError
from ..protocols.base import before_content
from .types import (
    OpaqueBlock,
    ReasoningDelta,
    ReasoningStart,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextStart,
    UsageUpdate,
)

MAX_HELD = 64

_ALWAYS_STRUCTURAL = (ResponseStart, UsageUpdate, TextStart)


def is_structural(part: StreamPart, client_wire: Optional[str] = None) -> bool:
    """A part that opens or accounts for something but carries nothing the client would see.

    `client_wire` is the client's protocol (`ctx.inbound_protocol`): an opaque block of another wire is
    skipped by its encoder. Unknown (None), an opaque block counts as content.
    """
    if isinstance(part, _ALWAYS_STRUCTURAL):
        return True
    if isinstance(part, OpaqueBlock):
        return client_wire is not None and part.protocol != client_wire
    if isinstance(part, ReasoningStart):
        return part.redacted is None
    if isinstance(part, TextDelta):
        return not part.text
    if isinstance(part, ReasoningDelta):
        return not part.text and not part.signature
    return False


def open_until_content(upstream: Iterator[StreamPart], provider: str,
                       client_wire: str) -> Tuple[StreamPart, Iterator[StreamPart]]:
    """The stream's first part and an iterator over the rest (the held parts, then the upstream), once
    the first content for a client of `client_wire` arrived, the hold is full or the upstream ended. The iterator is an
    `itertools.chain`: past the hold, a part costs no Python call of ours. Closing stays with the
    caller, on `upstream` itself.

    Raises whatever the upstream raises before that (the caller closes it and treats it as the
    attempt's failure), an in-band error not worded "mid-stream" (the client's stream never started);
    a stream that ends before its first part is an InvalidUpstreamResponse.
    """
    try:
        try:
            first = next(upstream)
        except StopIteration:
            raise InvalidUpstreamResponse(f"{provider} ended the stream before sending anything",
                                          provider=provider) from None
        if not is_structural(first, client_wire):
            return first, upstream
        held: List[StreamPart] = []
        for part in upstream:
            held.append(part)
            if len(held) >= MAX_HELD or not is_structural(part, client_wire):
                break
    except UpstreamError as err:
        before_content(err)
        raise
    return first, (itertools.chain(held, upstream) if held else upstream)
