"""Text hold-back for stream hooks: find and rewrite text that arrives split across `TextDelta`s.

    class RedactKeys(HoldBackStreamHook):
        def __init__(self) -> None:
            super().__init__(r"sk-[A-Za-z0-9]{20}", "[key]", hold=22)

A stream hook sees text in the chunks the upstream sent; a secret may be cut in
two. `TextHoldBack` keeps the last `hold` characters of the text back, releases
the rest rewritten, and releases what it holds when the block ends.
`HoldBackStreamHook` is a stream hook built on it, keeping one per request.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Match, Optional, Pattern, Tuple, Union

from ..errors import RouteplaneError
from ..language_model.types import (
    ResponseStart,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TokenLogprobs,
    UsageUpdate,
)
from .language_model import StreamAction, StreamHook, StreamInterest

if TYPE_CHECKING:  # pragma: no cover
    from ..language_model.context import PipelineContext

Span = Tuple[int, int, str]  # (start, end, replacement), offsets into the text `matches()` was given
Replacement = Union[str, Callable[[Match[str]], str]]

# Parts that have no place in the text's order go out at once, ahead of held text: the start of the
# response, usage, and log probabilities (the Chat encoder attaches those to the text that completes
# them, and drops them once the text it writes is not the text they scored).
_UNORDERED = (ResponseStart, UsageUpdate, TokenLogprobs)


# Released text kept (at least) for look-behinds and `\b` at the start of the held text, and so a match
# cut by a flush (a tool call in the middle of a text block) is still found as the rest of it arrives.
_CONTEXT = 16


class _Block:
    """One text block's held text, the already-released text kept for look-behinds, and held annotations."""

    __slots__ = ("held", "context", "sent", "notes")

    def __init__(self) -> None:
        self.held = ""
        self.context = ""
        self.sent = 0  # characters of the block released so far (as received, before rewriting)
        self.notes: List[Tuple[int, TextAnnotation]] = []  # (offset in the block's text, annotation)


class TextHoldBack:
    """One stream's text, held back so a match split across `TextDelta`s is found whole.

    `feed(part)` takes every stream part in order and returns the parts to send
    in its place (possibly none):

    - a `TextDelta` is added to its block's held text; what lies more than `hold`
      characters before its end is released, rewritten, as one `TextDelta`.
      The cut never falls inside a match, nor before a match that reaches the
      end of the held text (it may still grow). `hold` must be at least the
      longest match's length minus one, or a match cut by a release is missed
      (its part still held is rewritten, its released part is not);
    - `TextEnd` releases all of its block, then passes;
    - a `TextAnnotation` of the block holding text waits, and goes out right
      after the text that came before it (its offsets, if it has any, count
      the text as received);
    - `ResponseStart`, `UsageUpdate` and `TokenLogprobs` pass at once;
    - any other part (another block's start or delta, a tool call, reasoning,
      an `OpaqueBlock`, `Finish`) goes out after all held text, so the
      client gets everything in the order the upstream sent it.

    Only answer text is rewritten: reasoning (signed) and tool-call
    arguments (JSON) pass unchanged; scan `OpaqueBlock`s yourself, whole.

    What to rewrite is `pattern` (a regular expression) with `replacement`
    (as for `re.sub`: a string, `\\1` allowed, or a function of the match), or
    whatever a subclass's `matches()` returns. A `replacement` function may
    raise a `RouteplaneError`: `HoldBackStreamHook` aborts the stream with it.
    A match with no bounded length (`\\w+`) is held as long as it grows.

    One instance serves one stream: keep it in `ctx.extensions`, or let
    `HoldBackStreamHook` do that. `rewrite_text(text)` rewrites a whole
    (non-streamed) answer the same way, for an `ExecutionHook.on_success`.
    """

    # The parts a stream hook using it must see: every part that may follow held text.
    INTEREST = StreamInterest.ALL & ~StreamInterest.USAGE

    def __init__(self, pattern: Union[str, Pattern[str], None] = None, replacement: Replacement = "[redacted]", *,
                 hold: int) -> None:
        if not isinstance(hold, int) or hold < 0:
            raise ValueError(f"hold must be a number of characters (>= 0), got {hold!r}")
        if pattern is None and type(self).matches is TextHoldBack.matches:
            raise TypeError("TextHoldBack needs a pattern, or a subclass that overrides matches()")
        self.pattern: Optional[Pattern[str]] = re.compile(pattern) if isinstance(pattern, str) else pattern
        self.replacement = replacement
        self.hold = hold
        self.rewrites = 0  # matches rewritten so far in this stream
        self._blocks: Dict[int, _Block] = {}

    # --- what to rewrite ---------------------------------------------------------

    def matches(self, text: str, start: int) -> Iterable[Span]:
        """The spans of `text` to rewrite, as `(start, end, replacement)`, in order, not overlapping.

        `text[:start]` was released already: it is there for look-behinds and
        `\\b`; spans that end before `start` are ignored. Override it to find
        matches some other way (a word list, a checksum).
        """
        assert self.pattern is not None
        for m in self.pattern.finditer(text):
            if m.end() > start and m.end() > m.start():
                repl = self.replacement
                yield m.start(), m.end(), repl(m) if callable(repl) else m.expand(repl)

    def rewrite_text(self, text: str) -> str:
        """A whole text (a non-streamed answer's) with every match rewritten."""
        return self._render(text, 0, len(text), self._spans(text, 0))

    # --- the stream --------------------------------------------------------------

    def feed(self, part: StreamPart) -> List[StreamPart]:
        """The parts to send in place of `part`, in order (possibly none)."""
        if isinstance(part, TextDelta):
            out = self.flush(but=part.index)
            block = self._blocks.setdefault(part.index, _Block())
            block.held += part.text
            return out + self._release(part.index, final=False)
        if isinstance(part, _UNORDERED):
            return [part]
        if isinstance(part, TextAnnotation):
            block = self._blocks.get(part.index)
            if block is not None and block.held:
                block.notes.append((block.sent + len(block.held), part))
                return []
        out = self.flush()
        if isinstance(part, TextEnd):
            self._blocks.pop(part.index, None)
        return out + [part]

    def flush(self, but: Optional[int] = None) -> List[StreamPart]:
        """Release all held text (of every block but `but`), rewritten, with its held annotations."""
        out: List[StreamPart] = []
        for index, block in self._blocks.items():
            if index != but and (block.held or block.notes):
                out.extend(self._release(index, final=True))
        return out

    @property
    def held(self) -> int:
        """How many characters are held now."""
        return sum(len(b.held) for b in self._blocks.values())

    # --- internals ---------------------------------------------------------------

    def _spans(self, text: str, start: int) -> List[Span]:
        spans: List[Span] = []
        for s, e, repl in sorted(self.matches(text, start)):
            s = max(s, start)  # a match begun in released text (`hold` too small): rewrite what is left of it
            if e > s and (not spans or s >= spans[-1][1]):
                spans.append((s, e, repl))
        return spans

    def _release(self, index: int, final: bool) -> List[StreamPart]:
        block = self._blocks[index]
        text = block.context + block.held
        base, end = len(block.context), len(text)
        spans = self._spans(text, base)
        cut = end
        if not final:
            cut = end - self.hold
            moved = True
            while moved:  # never split a match, nor release the start of one that may still grow
                moved = False
                for s, e, _ in spans:
                    if s < cut and (e > cut or e == end):
                        cut, moved = s, True
            cut = max(cut, base)
        # Each held annotation goes out after the text before it (after the whole match it falls in).
        out: List[StreamPart] = []
        pos = base
        while block.notes and block.notes[0][0] - block.sent + base <= cut:
            at = block.notes[0][0] - block.sent + base
            at = next((e for s, e, _ in spans if s < at < e), at)
            if at > cut:
                break
            out.extend(self._text(index, text, pos, at, spans))
            out.append(block.notes.pop(0)[1])
            pos = at
        out.extend(self._text(index, text, pos, cut, spans))
        block.sent += cut - base
        block.context = text[max(cut - max(self.hold, _CONTEXT), 0):cut]
        block.held = text[cut:]
        return out

    def _text(self, index: int, text: str, start: int, end: int, spans: List[Span]) -> List[StreamPart]:
        if end <= start:
            return []
        rendered = self._render(text, start, end, spans)
        return [TextDelta(index, rendered)] if rendered else []

    def _render(self, text: str, start: int, end: int, spans: Iterable[Span]) -> str:
        pieces: List[str] = []
        pos = start
        for s, e, repl in spans:
            if s >= start and e <= end:
                pieces.append(text[pos:s])
                pieces.append(repl)
                pos = e
                self.rewrites += 1
        pieces.append(text[pos:end])
        return "".join(pieces)


class _HeldStreams(dict):  # type: ignore[type-arg]
    """A request's TextHoldBacks, one per hook (by identity): two hooks never share one."""


class HoldBackStreamHook(StreamHook):
    """A stream hook that rewrites answer text across `TextDelta` boundaries, one `TextHoldBack` per request.

    Built with `pattern`, `replacement` and `hold` (see `TextHoldBack`), it is
    a complete redactor. Override `new_hold_back(ctx)` to build the hold-back
    another way (a `TextHoldBack` subclass, options of the request), and
    `on_stream_end` to read `hold_back(ctx).rewrites`. A `RouteplaneError`
    raised while rewriting aborts the stream with that error. Pair it with an
    `ExecutionHook` calling `rewrite_text` for non-streamed answers.
    """

    def __init__(self, pattern: Union[str, Pattern[str], None] = None, replacement: Replacement = "[redacted]", *,
                 hold: Optional[int] = None) -> None:
        if pattern is not None and hold is None:
            raise TypeError("HoldBackStreamHook(pattern, ...) needs hold=: at least the longest match's length minus one")
        self.pattern, self.replacement, self.hold = pattern, replacement, hold

    def new_hold_back(self, ctx: "PipelineContext") -> TextHoldBack:
        """The hold-back of one request's stream (override it when not built with a pattern)."""
        if self.pattern is None or self.hold is None:
            raise TypeError(f"{type(self).__name__} was built without a pattern: override new_hold_back(ctx)")
        return TextHoldBack(self.pattern, self.replacement, hold=self.hold)

    def hold_back(self, ctx: "PipelineContext") -> TextHoldBack:
        """This hook's hold-back for the request of `ctx` (made on first use, kept in `ctx.extensions`)."""
        streams = ctx.extensions.get(_HeldStreams)
        if streams is None:
            streams = _HeldStreams()
            ctx.extensions.put(streams)
        held = streams.get(id(self))
        if held is None:
            held = streams[id(self)] = self.new_hold_back(ctx)
        return held

    def interest(self) -> StreamInterest:
        return TextHoldBack.INTEREST

    def on_part(self, ctx: "PipelineContext", part: StreamPart) -> StreamAction:
        try:
            out = self.hold_back(ctx).feed(part)
        except RouteplaneError as err:
            return StreamAction.abort(err)
        if len(out) == 1 and out[0] is part:
            return StreamAction.pass_()
        return StreamAction.replace(out) if out else StreamAction.drop()


__all__ = ["HoldBackStreamHook", "Span", "TextHoldBack"]
