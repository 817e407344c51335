"""Structured output whose schema is not an object at its root (google-genai's `list[Model]`, an enum).

OpenAI's structured outputs (Chat `response_format`, Responses `text.format`) take only an object there
("schema must be a JSON Schema of 'type: \"object\"'"); Gemini and Anthropic's `output_config.format` take
any root. For an upstream of `OBJECT_ROOT_WIRES` the executor sends the client's schema as the one required
property of an object, `{"response": <schema>}`, and gives the client back the model's text without that
wrapper: `{"response": [...]}` becomes `[...]`, the value's own text untouched, in an answer and in a stream.
Text that turns out not to have the wrapper's shape goes on as it came rather than be cut wrongly.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, Iterator, Optional

from ..language_model.types import Finish, Generation, Prompt, StreamPart, TextDelta, TextEnd, TextPart, TextStart

KEY = "response"
OBJECT_ROOT_WIRES = frozenset({"openai_chat", "openai_responses"})
# Keywords that belong to the schema document rather than to the value: `#/$defs/...` references resolve
# from the document's root, so they move up to the wrapper's root.
_DOCUMENT_KEYS = ("$schema", "$defs", "definitions")
_WS = " \t\r\n"  # JSON whitespace
_OPENING = ("{", json.dumps(KEY), ":")


def wrapped(prompt: Prompt, protocol: str) -> bool:
    """Whether `prompt` goes to an upstream of `protocol` with its schema wrapped in an object."""
    rf = prompt.response_format
    return (protocol in OBJECT_ROOT_WIRES and rf is not None and rf.type == "json_schema"
            and rf.schema is not None and rf.schema.get("type") != "object")


def object_root(prompt: Prompt, protocol: str) -> Prompt:
    """The prompt with its schema as the one property of an object, for an upstream that needs an object root."""
    rf = prompt.response_format
    if rf is None or rf.schema is None or not wrapped(prompt, protocol):
        return prompt
    value = {k: v for k, v in rf.schema.items() if k not in _DOCUMENT_KEYS}
    schema = {"type": "object", "properties": {KEY: value}, "required": [KEY], "additionalProperties": False,
              **{k: rf.schema[k] for k in _DOCUMENT_KEYS if k in rf.schema}}
    return prompt.replace(response_format=dataclasses.replace(rf, schema=schema))


# --- the answer ----------------------------------------------------------------


def unwrap(gen: Generation, prompt: Prompt, protocol: str) -> Generation:
    """The answer to a wrapped prompt with each text part's wrapper taken off (refusals are not JSON)."""
    if not wrapped(prompt, protocol):
        return gen
    parts = []
    for p in gen.parts:
        value = unwrap_text(p.text) if isinstance(p, TextPart) and not p.refusal else None
        parts.append(p if value is None else dataclasses.replace(p, text=value))
    return dataclasses.replace(gen, parts=tuple(parts))


def unwrap_text(text: str) -> Optional[str]:
    """The value's text in `{"response": <value>}` (any JSON whitespace around), or None when `text` is
    not exactly that: another key beside it, no closing brace, a value that is not JSON."""
    start = _value_start(text)
    body = text.rstrip(_WS)
    if start is None or start < 0 or not body.endswith("}") or len(body) - 1 < start:
        return None
    value = body[start:-1].rstrip(_WS)
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return None
    return value


def _value_start(text: str) -> Optional[int]:
    """Where the value begins after the wrapper's opening `{"response":`; -1 while `text` may still
    become that opening (a stream's first pieces), None once it cannot."""
    i = _skip_ws(text, 0)
    for token in _OPENING:
        piece = text[i:i + len(token)]
        if piece != token:
            return -1 if i + len(piece) == len(text) and token.startswith(piece) else None
        i = _skip_ws(text, i + len(token))
    return i if i < len(text) else -1


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


# --- the stream ----------------------------------------------------------------


def unwrap_stream(parts: Iterator[StreamPart], prompt: Prompt, protocol: str) -> Iterator[StreamPart]:
    """A wrapped prompt's stream with each text block's wrapper taken off as the text comes; any other
    stream back untouched, with no per-part work."""
    return _unwrapped(parts) if wrapped(prompt, protocol) else parts


def _unwrapped(parts: Iterator[StreamPart]) -> Iterator[StreamPart]:
    blocks: Dict[int, _Block] = {}  # open text blocks by index
    try:
        for part in parts:
            if isinstance(part, TextStart) and not part.refusal:
                blocks[part.index] = _Block()
            elif isinstance(part, TextDelta) and part.index in blocks:
                text = blocks[part.index].feed(part.text)
                if text:
                    yield TextDelta(part.index, text)
                continue
            elif isinstance(part, TextEnd) and part.index in blocks:
                yield from _flush(blocks, part.index)
            elif isinstance(part, Finish):
                for index in list(blocks):  # blocks the decoder never ended
                    yield from _flush(blocks, index)
            yield part
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()  # the upstream stream (its connection) ends with this one


def _flush(blocks: Dict[int, "_Block"], index: int) -> Iterator[StreamPart]:
    rest = blocks.pop(index).end()
    if rest:
        yield TextDelta(index, rest)


class _Block:
    """One text block: its opening is held until it is the wrapper's whole opening (then dropped) or
    cannot be (then sent as it came, and so is the rest); the value's text then goes on as it comes,
    all but a trailing `}` and whitespace, which may be the wrapper's closing until more text follows."""

    def __init__(self) -> None:
        self.opening: Optional[str] = ""  # None once past the opening
        self.plain = False  # not the wrapper: everything goes on unchanged
        self.held = ""

    def feed(self, text: str) -> str:
        if self.plain:
            return text
        if self.opening is not None:
            self.opening += text
            start = _value_start(self.opening)
            if start is None:
                self.plain = True
                return self.opening
            if start < 0:
                return ""
            text, self.opening = self.opening[start:], None
        text = self.held + text
        cut = _closing_start(text)
        self.held = text[cut:]
        return text[:cut]

    def end(self) -> str:
        """What is still held when the block ends: the wrapper's closing is dropped; an opening that never
        completed, or a value that was never closed (a cut-off answer), goes on as it is."""
        if self.plain:
            return ""
        if self.opening is not None:
            return self.opening
        return "" if "}" in self.held else self.held


def _closing_start(text: str) -> int:
    """Where trailing whitespace, with at most one `}` in it, begins at the end of `text`."""
    cut = len(text.rstrip(_WS))
    if cut and text[cut - 1] == "}":
        cut = len(text[:cut - 1].rstrip(_WS))
    return cut
