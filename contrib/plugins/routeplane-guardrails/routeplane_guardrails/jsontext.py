"""Redaction inside JSON text (tool-call arguments) that keeps the JSON valid.

Detectors run on the JSON text as it is sent, escapes included, so a match can
end on the backslash of an escaped quote (`PASSWORD=hunter22\\"`), start on the
letter of an escape (`n` of `\\njohn@example.com`) or run past a string into the
structure (`"password": 1234}`). `json_spans` turns redaction spans into spans
that are safe to replace: inside strings they cover whole characters and whole
escape sequences only, and outside strings only a number (or another bare
token) the span covers completely, which becomes a quoted placeholder. Quotes,
brackets, commas and `true`/`false`/`null` are never replaced.

`detector_view` is what the detectors read instead: the same text with the
blank escapes (`\\n`, `\\t`, ...) as blanks, so a token after a line break
starts a token, as it does in message text.

The lexer works on pieces (a stream's chunks) from a carried state, so a
stream scanner keeps the state at the start of its buffer (advanced as the
buffer is trimmed) and lexes the buffer itself only when it has something to
redact.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import List, NamedTuple, Optional, Sequence, Tuple

Span = Tuple[int, int, str]

_PLAIN = re.compile(r'[^"\\]+')  # string content without quotes or escapes
_BARE = re.compile(r'[^\s{}\[\],:"\\]+')  # a token outside strings: a number, a literal, or garbage
_BARE_CHARS = frozenset("{}[],:\"\\ \t\r\n")
_LITERALS = frozenset({"true", "false", "null"})


class LexState(NamedTuple):
    """Where a JSON text stands after some of it was lexed (absolute offsets)."""

    in_string: bool = False
    string_start: int = 0  # content start of the open string
    escape_start: Optional[int] = None  # an escape sequence that did not end in the previous piece ...
    escape_end: Optional[int] = None  # ... and its end (None: only its backslash was seen)


START = LexState()  # the state before any text


class Lexed(NamedTuple):
    state: LexState  # the state after the text
    strings: List[Tuple[int, int]]  # string contents, [start, end) without the quotes (an open one: up to the end)
    escapes: List[Tuple[int, int]]  # escape sequences, [start, end), `\uXXXX` counted as 6 characters


def looks_like_json(text: str) -> bool:
    """Tool-call arguments are a JSON object; free-text arguments (custom tools, broken output) are redacted as text."""
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[")


def lex(text: str, start: int = 0, state: LexState = START) -> Lexed:
    """Lex `text`, whose first character is at absolute offset `start`, from `state`."""
    strings: List[Tuple[int, int]] = []
    escapes: List[Tuple[int, int]] = []
    n = len(text)
    in_string, string_start = state.in_string, state.string_start
    i = 0
    if state.escape_start is not None:
        esc_start, esc_end = state.escape_start, state.escape_end
        if esc_end is None:  # the backslash ended the last piece: its next character tells the length
            if not n:
                return Lexed(state, [(string_start, start)] if in_string else [], [])
            esc_end = esc_start + (6 if text[0] == "u" else 2)
        escapes.append((esc_start, esc_end))
        i = esc_end - start
        if i > n:
            return Lexed(LexState(True, string_start, esc_start, esc_end), [(string_start, start + n)], escapes)
    while i < n:
        if not in_string:
            j = text.find('"', i)
            if j < 0:
                break
            in_string, string_start, i = True, start + j + 1, j + 1
            continue
        m = _PLAIN.match(text, i)
        if m is not None:
            i = m.end()
            if i >= n:
                break
        if text[i] == '"':
            strings.append((string_start, start + i))
            in_string, i = False, i + 1
            continue
        # A backslash.
        if i + 1 >= n:
            strings.append((string_start, start + n))
            return Lexed(LexState(True, string_start, start + i, None), strings, escapes)
        length = 6 if text[i + 1] == "u" else 2
        escapes.append((start + i, start + i + length))
        i += length
        if i > n:
            strings.append((string_start, start + n))
            return Lexed(LexState(True, string_start, start + i - length, start + i), strings, escapes)
    if in_string:
        strings.append((string_start, start + n))
    return Lexed(LexState(in_string, string_start), strings, escapes)


_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|[\s\S])")
_BLANK_ESCAPES = frozenset("ntrbf")


def _blank(m: "re.Match[str]") -> str:
    esc = m.group(0)
    return "  " if esc[1] in _BLANK_ESCAPES else esc


def detector_view(text: str, offset: int = 0, state: LexState = START) -> str:
    """`text` as the detectors see it: every `\\n`, `\\t`, `\\r`, `\\b`, `\\f` escape as two spaces.

    Same length, so every offset still points into `text`. Without it a
    line break glues its `n` to what follows: `\\nsk-proj-…` is no key token,
    `\\nrm -rf /` no command, and `password=abc\\ndef` runs past the line.
    """
    if "\\" not in text:
        return text
    skip = 0
    if state.escape_start is not None:  # the text starts inside an escape
        skip = 1 if state.escape_end is None else max(state.escape_end - offset, 0)
    return text[:skip] + _ESCAPE.sub(_blank, text[skip:])


def advance(state: LexState, text: str, start: int) -> LexState:
    """The state after `text` (at absolute `start`)."""
    return lex(text, start, state).state


def json_spans(text: str, spans: Sequence[Span], offset: int = 0, state: LexState = START, final: bool = True,
               sent: int = 0) -> List[Span]:
    """Redaction spans (absolute offsets) of a JSON `text` starting at `offset` (lexed from `state`) made safe.

    Every returned span lies inside one given span, so a caller that never
    splits a match keeps never splitting a replacement. `final`: the text is
    all there is; otherwise (a stream's buffer) a bare token reaching its end
    may go on, so it is not whole. A bare token starting before `sent` has
    partly left already and is never quoted.
    """
    if not spans:
        return []
    lexed = lex(text, offset, state)
    strings, escapes = lexed.strings, lexed.escapes
    string_starts = [s for s, _ in strings]
    escape_starts = [s for s, _ in escapes]
    end_of_text = offset + len(text)

    def inside_escape(pos: int) -> Optional[Tuple[int, int]]:
        k = bisect_left(escape_starts, pos) - 1  # the last escape starting before pos
        if k >= 0 and escapes[k][1] > pos:
            return escapes[k]
        return None

    out: List[Span] = []
    for s, e, placeholder in spans:
        pos = s
        k = max(bisect_right(string_starts, s) - 1, 0)
        while pos < e:
            string = strings[k] if k < len(strings) else None
            if string is not None and string[1] <= pos:
                k += 1
                continue
            if string is not None and string[0] <= pos:
                # Inside a string: whole characters and whole escapes only.
                a, b = pos, min(e, string[1])
                esc = inside_escape(a)
                if esc is not None:
                    a = esc[1]
                esc = inside_escape(b)
                if esc is not None:
                    b = esc[0]
                if a < b:
                    out.append((a, b, placeholder))
                pos = string[1]
                k += 1
                continue
            # Outside strings, up to the next string (or the span's end): bare tokens it covers whole.
            gap_end = min(e, string[0] if string is not None else e)
            for m in _BARE.finditer(text, pos - offset, gap_end - offset):
                a, b = m.start() + offset, m.end() + offset
                if a == pos and a > offset and text[a - offset - 1] not in _BARE_CHARS:
                    continue  # the token began before the span
                if b == gap_end and (text[b - offset] not in _BARE_CHARS if b < end_of_text else not final):
                    continue  # the token goes on after the span (or may, after the buffer)
                if a < sent:
                    continue  # its start has left as it was
                if m.group(0) not in _LITERALS:
                    out.append((a, b, '"' + placeholder + '"'))
            pos = gap_end
    return out


def cut_token(text: str, pos: int, offset: int = 0, state: LexState = START) -> Optional[Tuple[int, int]]:
    """The bare token (outside strings) that `pos` falls strictly inside, as absolute (start, end); its end is the
    end of `text` when it reaches it (in a stream it may go on). None when `pos` is not inside one."""
    i = pos - offset
    if not 0 < i < len(text) or text[i - 1] in _BARE_CHARS or text[i] in _BARE_CHARS:
        return None
    strings = lex(text, offset, state).strings
    k = bisect_right([s for s, _ in strings], pos) - 1
    if k >= 0 and strings[k][1] > pos:
        return None  # inside a string
    a = i
    while a > 0 and text[a - 1] not in _BARE_CHARS:
        a -= 1
    m = _BARE.match(text, i)
    return offset + a, offset + (m.end() if m else i)


def bare_end(text: str, pos: int, offset: int = 0) -> int:
    """Where the run of bare-token characters at absolute `pos` ends (`pos` itself when there is none)."""
    m = _BARE.match(text, pos - offset)
    return offset + m.end() if m else pos
