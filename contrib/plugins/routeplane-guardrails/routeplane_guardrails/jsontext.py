"""Reading and redacting JSON text (tool-call arguments) so that it stays valid JSON.

The detectors read the text decoded (`decoded_view`): every escape inside a
string, `\\n`, `\\"`, `\\/`, `\\uXXXX` and surrogate pairs, becomes the character it
stands for, so a secret spelled with escapes (`sk-\\u0070roj-…`,
`https:\\/\\/user:pw@host`) is found, and a token after `\\n` starts a token, as in
message text. Findings are mapped back to the JSON text, a decoded character
to its whole escape. A match can still start or end on a string's quote or run
past a string into the structure (`"password": 1234}`): `json_spans` turns
redaction spans into spans that are safe to replace: inside strings they cover
whole characters and whole escape sequences only, and outside strings only a
number (or another bare token) the span covers completely, which becomes a
quoted placeholder. Quotes, brackets, commas and `true`/`false`/`null` are
never replaced. A placeholder has no quote or backslash, so it is its own
decoded value.

The lexer works on pieces (a stream's chunks) from a carried state, so a
stream scanner keeps the state at the start of its buffer (advanced as the
buffer is trimmed) and lexes the buffer itself only when it has something to
redact. A text that ends inside an escape (`\\u00`, a high surrogate without
its low half) is read up to that escape; the rest is read once it arrives.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import List, NamedTuple, Optional, Sequence, Tuple

from .rules import DirectionRules, Finding, find

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


# A JSON escape: a surrogate pair, a `\\uXXXX`, or a backslash and one other character (captured, for split).
_ESCAPE = re.compile(r"(\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[^u]))")
# The end of a text cut inside an escape (a stream's buffer): a lone backslash, `\\u` and up to three digits,
# or a high surrogate whose low half may still come.
_PARTIAL = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?\Z")
_LOW_PREFIX = re.compile(r"(?:\\(?:u(?:[dD](?:[c-fC-F][0-9a-fA-F]?)?)?)?)?\Z")
_SIMPLE = {"\\n": "\n", "\\t": "\t", "\\r": "\r", "\\b": "\b", "\\f": "\f", '\\"': '"', "\\\\": "\\",
           "\\/": "/"}


class View:
    """JSON text as the detectors read it: every escape decoded, with the map back to the text.

    `text` is the decoded text; `end` how much of the raw text it covers (all of
    it, unless the raw text ends inside an escape: that one is read once it is
    whole). `raw(v)` is the raw offset of view offset `v` (a decoded character
    maps to its whole escape, so a span in the view maps to whole escapes) and
    `at(r)` the view offset of raw offset `r` (inside an escape: its character).
    The map is built only when asked for (clean text never needs it).
    """

    __slots__ = ("text", "end", "_raw", "_dec", "_skip", "_v", "_r", "_vb")

    def __init__(self, text: str, end: int, raw_parts: Optional[List[str]] = None,
                 decoded_parts: Optional[List[str]] = None, skip: int = 0) -> None:
        self.text, self.end = text, end
        self._raw, self._dec, self._skip = raw_parts, decoded_parts, skip
        # Per decoded escape: view offset after its character, raw offset after it, view offset before it.
        self._v: Optional[List[int]] = None
        self._r: List[int] = []
        self._vb: List[int] = []

    @property
    def identity(self) -> bool:
        return self._raw is None and not self._skip

    def _build(self) -> List[int]:
        skip = self._skip
        v_after, r_after, v_before = ([0], [skip], [0]) if skip else ([], [], [])
        if self._raw is not None and self._dec is not None:
            raw, dec = self._raw, self._dec
            vpos, rpos = 0, skip
            for i in range(1, len(raw), 2):
                seg = len(raw[i - 1])
                vpos, rpos = vpos + seg, rpos + seg
                if len(dec[i]) != 1:  # not a JSON escape: read as written
                    vpos, rpos = vpos + len(dec[i]), rpos + len(dec[i])
                    continue
                v_before.append(vpos)
                vpos, rpos = vpos + 1, rpos + len(raw[i])
                v_after.append(vpos)
                r_after.append(rpos)
        self._v, self._r, self._vb = v_after, r_after, v_before
        return v_after

    def raw(self, v: int) -> int:
        v_after = self._v if self._v is not None else self._build()
        k = bisect_right(v_after, v) - 1
        return v if k < 0 else self._r[k] + v - v_after[k]

    def at(self, r: int) -> int:
        v_after = self._v if self._v is not None else self._build()
        k = bisect_right(self._r, r) - 1
        v = r if k < 0 else v_after[k] + r - self._r[k]
        return min(v, self._vb[k + 1]) if k + 1 < len(self._vb) else v


def _decode(esc: str) -> str:
    """One escape's character (a surrogate pair: one character); not a JSON escape: itself, as written."""
    char = _SIMPLE.get(esc)
    if char is not None:
        return char
    if esc[1] != "u":
        return esc
    if len(esc) == 12:
        return chr(0x10000 + ((int(esc[2:6], 16) - 0xD800) << 10) + int(esc[8:], 16) - 0xDC00)
    return chr(int(esc[2:], 16))


def decoded_view(text: str, state: LexState = START, offset: int = 0) -> View:
    """`text` (at absolute `offset`, lexed from `state`) with its escapes decoded, as the detectors read it.

    So a secret spelled with escapes (`sk-\\u0070roj-…`, `https:\\/\\/user:pw@host`) is found,
    and `\\n` is a line break, as in message text.
    """
    skip = 0
    if state.escape_start is not None:  # the text starts inside an escape: its rest is not read
        if state.escape_end is None:  # only its backslash was seen: the next character tells its length
            skip = 5 if text[:1] == "u" else 1
        else:
            skip = max(state.escape_end - offset, 0)
        skip = min(skip, len(text))
        text = text[skip:]
    if "\\" not in text:
        return View(text, skip + len(text), skip=skip)
    raw = _ESCAPE.split(text)  # [text, escape, text, ..., text]
    end = len(text)
    tail = raw[-1]
    if len(raw) > 1 and len(raw[-2]) == 6 and 0xD800 <= int(raw[-2][2:], 16) < 0xDC00 and _LOW_PREFIX.match(tail):
        end -= len(tail) + 6  # a high surrogate whose low half may still come
        raw[-3:] = [raw[-3]]
    else:
        k = tail.rfind("\\")
        if k >= 0 and _PARTIAL.match(tail, k):
            end -= len(tail) - k
            raw[-1] = tail[:k]
    dec = list(raw)
    dec[1::2] = [_decode(esc) for esc in raw[1::2]]
    return View("".join(dec), skip + end, raw, dec, skip)


def find_json(text: str, rules: DirectionRules, offset: int = 0, state: LexState = START,
              view: Optional[View] = None) -> List[Finding]:
    """Every finding in JSON `text` (at absolute `offset`), read decoded, with raw (absolute) offsets."""
    if view is None:
        view = decoded_view(text, state, offset)
    if view.identity:
        return find(view.text, rules, offset)
    raw = view.raw
    return [Finding(f.detector, f.action, raw(f.start) + offset, raw(f.end) + offset, raw(f.red_start) + offset,
                    raw(f.red_end) + offset, f.placeholder, f.rule) for f in find(view.text, rules)]


def advance(state: LexState, text: str, start: int) -> LexState:
    """The state after `text` (at absolute `start`)."""
    return lex(text, start, state).state


def json_spans(text: str, spans: Sequence[Span], offset: int = 0, state: LexState = START, final: bool = True,
               sent: int = 0) -> List[Span]:
    """Redaction spans (absolute offsets) of a JSON `text` starting at `offset` (lexed from `state`) made safe.

    Every returned span lies inside one given span, so a caller that never
    splits a match keeps never splitting a replacement. `final`: the text is
    all there is; otherwise (a stream's buffer) a bare token reaching its end
    may go on, so it is not whole. Text before `sent` has left already: spans
    start at it (past an escape it cuts, whose rest leaves as it is), and a
    bare token starting before it is never quoted.
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
        pos = max(s, sent)  # what has left is not replaced (and an escape half sent is left whole)
        k = max(bisect_right(string_starts, pos) - 1, 0)
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
