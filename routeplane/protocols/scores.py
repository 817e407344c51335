"""Log probabilities on a stream of the client's own wire (TokenLogprobs), held until the text they score
is written: shared by the OpenAI Chat, OpenAI Responses and Gemini stream encoders."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple


class Scores:
    """A text block's log probabilities, each batch released with the chunk whose text completes the
    text it scored. Text the encoder writes that departs from the scored text (a hook redacted or
    rewrote it) ends the block's log probabilities: the entries name the upstream's own tokens."""

    __slots__ = ("batches", "unmatched", "broken")

    def __init__(self) -> None:
        self.batches: List[List[Any]] = []  # [scored characters not yet written, entries], oldest first
        self.unmatched = ""  # scored text not yet written
        self.broken = False

    def add(self, entries: Tuple[Any, ...], text: str) -> None:
        if not self.broken:
            self.batches.append([len(text), list(entries)])
            self.unmatched += text

    def matched(self, text: str) -> Optional[List[Any]]:
        """The entries to send with a chunk of `text`, or None."""
        if self.broken or not self.unmatched:
            return None  # text no upstream entry scored (a hook's own): the scored text is still ahead
        if not self.unmatched.startswith(text):
            self.broken, self.batches, self.unmatched = True, [], ""
            return None
        self.unmatched = self.unmatched[len(text):]
        written, released = len(text), []
        while self.batches and written >= self.batches[0][0]:
            size, entries = self.batches.pop(0)
            written -= size
            released.extend(entries)
        if self.batches:
            self.batches[0][0] -= written
        return released or None
