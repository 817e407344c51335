"""The client-facing stream the pipeline returns, and the small generator helpers behind it.

Writes are batched by what arrived together: the executor marks the parts it still holds from
one upstream read (`PipelineContext.upstream_buffered`), and the pipeline puts a `FLUSH` marker
in the stream wherever its next pull could wait on the network. A web layer that reads
`with_flushes()` writes everything between two markers in one write; parts that arrived in one
read leave in one write, and nothing already encoded waits for the upstream.

The last marker is `END`: the answer is complete and the next pull settles it. Such a consumer
writes out the rest, its wire's end frames included, before pulling again, so a client that
leaves during that last write is settled as gone (the server closes the stream instead of
pulling), not as served.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Optional, Union

from ..errors import RouteplaneError, StreamAborted
from .context import PipelineContext
from .types import StreamPart

log = logging.getLogger("routeplane.pipeline")


class Flush:
    """The marker type: write out what is buffered; the next part may be a network wait away."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


FLUSH = Flush("FLUSH")
END = Flush("END")  # the answer is complete: write out the rest and the end frames, then pull to settle


class PipelineStream:
    """The client-facing stream: canonical parts, settled exactly once on exhaustion or close().

    Iterating yields the parts; `with_flushes()` yields them with the `FLUSH` markers between
    the batches and `END` after the last part (for a consumer that batches its writes). Only
    `close()` ends and settles the stream early: closing the iterator `iter()` returned does not."""

    def __init__(self, parts: Iterator[Union[StreamPart, Flush]], ctx: PipelineContext) -> None:
        self._parts = parts
        self.ctx = ctx

    def __iter__(self) -> Iterator[StreamPart]:
        return (p for p in self._parts if not isinstance(p, Flush))  # type: ignore[misc]

    def with_flushes(self) -> Iterator[Union[StreamPart, Flush]]:
        return self._parts

    def close(self, reason: Optional[RouteplaneError] = None) -> None:
        """End the stream. With a `reason`, the gateway itself cut it (shutdown, an encoder
        failure): it is settled as aborted with the reason's status, not as a client that left."""
        if reason is not None and hasattr(self._parts, "throw"):
            try:
                self._parts.throw(reason if isinstance(reason, StreamAborted) else StreamAborted(
                    reason.message, status=reason.status, kind=reason.kind, code=reason.code))
            except (RouteplaneError, StopIteration):
                pass
            except RuntimeError:  # the generator is already running or finished
                pass
        close = getattr(self._parts, "close", None)
        if close is not None:
            close()


PRIMED: Any = object()


def primed(parts: Iterator[Any]) -> Iterator[Any]:
    """Advance `_stream` to its marker: a generator closed before it started never runs its
    `finally`, so a client that went away before the first part would be neither settled nor
    have its upstream connection closed."""
    marker = next(parts)
    assert marker is PRIMED
    return parts


def prepend(first: StreamPart, rest: Iterator[StreamPart]) -> Iterator[StreamPart]:
    yield first
    yield from rest


def close_quietly(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.debug("closing an upstream stream failed", exc_info=True)
