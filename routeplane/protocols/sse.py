"""Incremental Server-Sent Events parsing (bytes in, events out) and framing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional

from ..errors import InvalidUpstreamResponse


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: Optional[str] = None
    id: Optional[str] = None


class EventTooLarge(InvalidUpstreamResponse, ValueError):
    """An upstream's SSE line or event over the parser's limit: a 502 that says so (a ValueError too,
    for callers that treat every parse failure alike)."""

    limit_text = ""


class SSEParser:
    """Feeds raw bytes, yields complete events.

    Lines end with LF, CRLF or CR (Google endpoints use CRLF); bytes are buffered
    to a line boundary before decoding so a multi-byte UTF-8 character split
    across reads is safe; multi-line `data:` fields are joined with LF;
    comments (`:`) are skipped; an empty line dispatches the event; a UTF-8 BOM
    opening the stream is dropped (the SSE spec). A line, and
    an event's data, over `max_line_bytes` raise EventTooLarge (naming `provider`).
    """

    def __init__(self, max_line_bytes: int = 16 * 1024 * 1024, provider: Optional[str] = None) -> None:
        # The unfinished line is kept as the reads it came in and joined once, when it ends:
        # appending each read to one buffer copied the whole line every time (quadratic).
        self._parts: List[bytes] = []
        self._size = 0
        self._data: List[str] = []
        self._data_size = 0
        self._event: Optional[str] = None
        self._id: Optional[str] = None
        self._max = max_line_bytes
        self._provider = provider
        self._pending_cr = False
        self._first = True

    def feed(self, chunk: bytes) -> List[SSEEvent]:
        if not chunk:
            return []
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across reads
        self._pending_cr = False
        events: List[SSEEvent] = []
        start, n = 0, len(chunk)
        # Each terminator is searched again only once passed, and never again once absent: a
        # stream of CR-only (or LF-only) lines must not rescan the rest of the read per line.
        cr, lf = chunk.find(b"\r"), chunk.find(b"\n")
        while start < n:
            if cr != -1 and cr < start:
                cr = chunk.find(b"\r", start)
            if lf != -1 and lf < start:
                lf = chunk.find(b"\n", start)
            if lf == -1 and cr == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, nxt = cr, cr + 1
                if nxt < n and chunk[nxt : nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True
            else:
                end, nxt = lf, lf + 1
            if self._parts:
                ev = self._line(self._whole(chunk[start:end]))
            elif end - start > self._max:
                raise self._too_large()
            else:
                ev = self._line(chunk[start:end])
            if ev is not None:
                events.append(ev)
            start = nxt
        if start < n:
            self._parts.append(chunk[start:] if start else chunk)
            self._size += n - start
            if self._size > self._max:
                raise self._too_large()
        return events

    def finish(self) -> List[SSEEvent]:
        """End of input: a final event without its blank line is still dispatched."""
        events: List[SSEEvent] = []
        if self._parts:
            ev = self._line(self._whole(b""))
            if ev is not None:
                events.append(ev)
        ev = self._line(b"")
        if ev is not None:
            events.append(ev)
        return events

    def _whole(self, tail: bytes) -> bytes:
        """The line that `tail` ends: the reads kept so far, joined once."""
        line = b"".join(self._parts) + tail
        self._parts, self._size = [], 0
        if len(line) > self._max:
            raise self._too_large()
        return line

    def _too_large(self) -> EventTooLarge:
        who = self._provider or "the upstream"
        error = EventTooLarge(f"{who} sent a stream event over the {_size_text(self._max)} limit",
                              provider=self._provider)
        error.limit_text = _size_text(self._max)
        return error

    def _line(self, raw: bytes) -> Optional[SSEEvent]:
        if self._first:
            self._first = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte order mark opening the stream is not part of its first field name
        line = raw.decode("utf-8", errors="replace")
        if not line:
            if not self._data and self._event is None:
                return None
            ev = SSEEvent("\n".join(self._data), self._event, self._id)
            self._data, self._data_size, self._event = [], 0, None
            return ev
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_size += len(value) + 1
            if self._data_size > self._max:  # an event of many data lines is bounded as one line is
                raise self._too_large()
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def _size_text(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def iter_events(chunks: Iterable[bytes]) -> Iterator[SSEEvent]:
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
    yield from parser.finish()


# Built once: json.dumps() with non-default options builds a new encoder per call, a
# measurable share of the per-chunk cost of a stream (profiled). Encoders hold no state.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def dumps(obj: Any) -> str:
    # Compact and ASCII-safe: U+2028/2029 and friends cannot break a line.
    return _COMPACT.encode(obj)


def frame(data: Any, event: Optional[str] = None) -> bytes:
    """One SSE event; `data` is a JSON-able value or an already-encoded string."""
    payload = data if isinstance(data, str) else dumps(data)
    if event is None:
        return f"data: {payload}\n\n".encode("utf-8")
    return f"event: {event}\ndata: {payload}\n\n".encode("utf-8")
