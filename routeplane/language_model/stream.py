"""Helpers over canonical stream parts: accumulate into a Generation, explode a Generation."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ..hooks.language_model import StreamInterest
from .types import (
    ContentPart,
    Finish,
    FinishReason,
    Generation,
    OpaqueBlock,
    OpaquePart,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    ReasoningStart,
    ResponseStart,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    TokenLogprobs,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
    UsageUpdate,
)

_INTEREST = {
    ResponseStart: StreamInterest.LIFECYCLE,
    Finish: StreamInterest.LIFECYCLE,
    TextStart: StreamInterest.TEXT,
    TextDelta: StreamInterest.TEXT,
    TextEnd: StreamInterest.TEXT,
    ReasoningStart: StreamInterest.REASONING,
    ReasoningDelta: StreamInterest.REASONING,
    ReasoningEnd: StreamInterest.REASONING,
    ToolCallStart: StreamInterest.TOOL_CALLS,
    ToolCallDelta: StreamInterest.TOOL_CALLS,
    ToolCallEnd: StreamInterest.TOOL_CALLS,
    UsageUpdate: StreamInterest.USAGE,
    OpaqueBlock: StreamInterest.OPAQUE,
    TextAnnotation: StreamInterest.TEXT,
    TokenLogprobs: StreamInterest.TEXT,
}


def interest_of(part: StreamPart) -> StreamInterest:
    return _INTEREST.get(type(part), StreamInterest.LIFECYCLE)


def is_content(part: StreamPart, client_wire: str) -> bool:
    """A part that carries output a person sees (marks time to first token). A provider's block kept for its
    own wire is seen only by a client of that wire: the other wires' encoders skip it."""
    if isinstance(part, OpaqueBlock):
        return part.protocol == client_wire
    return isinstance(part, (TextDelta, ReasoningDelta, ToolCallStart))


class GenerationAccumulator:
    """Folds a stream of parts into the Generation it describes."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = 0
        self.usage: Optional[Usage] = None
        self.finish: Optional[Finish] = None
        self._blocks: Dict[int, dict] = {}
        self._order: List[int] = []
        self.output_chars = 0  # characters of output and reasoning, as they came
        # Their `text_weight`, summed: weighed once at the end, as `output_chars()` weighs a whole answer
        # (rounding each delta would make a streamed estimate exceed the unstreamed one).
        self._ascii_chars = 0
        self._other_bytes = 0

    def add(self, part: StreamPart) -> None:
        if isinstance(part, ResponseStart):
            self.id, self.model, self.created = part.id, part.model, part.created
            if part.usage is not None:
                self.usage = part.usage
        elif isinstance(part, TextStart):
            self._open(part.index, {"kind": "text", "text": [], "refusal": part.refusal,
                                    "fields": part.part_fields, "fields_protocol": part.part_fields_protocol})
        elif isinstance(part, TextDelta):
            self._open(part.index, {"kind": "text", "text": []})["text"].append(part.text)
            self._count(part.text)
        elif isinstance(part, ReasoningStart):
            self._open(part.index, {"kind": "reasoning", "text": [], "provider": part.provider, "redacted": part.redacted})
        elif isinstance(part, ReasoningDelta):
            b = self._open(part.index, {"kind": "reasoning", "text": [], "provider": None, "redacted": None})
            b["text"].append(part.text)
            if part.signature:
                b["signature"] = b.get("signature", "") + part.signature
            self._count(part.text)
        elif isinstance(part, ReasoningEnd):
            if part.signature and part.index in self._blocks:
                self._blocks[part.index]["signature"] = part.signature
        elif isinstance(part, ToolCallStart):
            self._open(part.index, {"kind": "tool", "id": part.id, "name": part.name, "args": [],
                                    "signature": part.signature, "custom": part.custom})
            self._count(part.name)
        elif isinstance(part, ToolCallDelta):
            b = self._blocks.get(part.index)
            if b is not None and b["kind"] == "tool":
                b["args"].append(part.arguments)
                self._count(part.arguments)
        elif isinstance(part, TextAnnotation):
            b = self._open(part.index, {"kind": "text", "text": []})
            if b["kind"] == "text":
                b.setdefault("notes", []).append(part.annotation)
                b["notes_protocol"] = part.protocol
        elif isinstance(part, OpaqueBlock):
            self._open(part.index, {"kind": "opaque", "part": OpaquePart(part.protocol, part.block)})
            self._count(opaque_text(part.block))
        elif isinstance(part, UsageUpdate):
            self.usage = part.usage
        elif isinstance(part, Finish):
            self.finish = part

    def _count(self, text: str) -> None:
        self.output_chars += len(text)
        ascii_chars, other_bytes = text_weight(text)
        self._ascii_chars += ascii_chars
        self._other_bytes += other_bytes

    @property
    def output_weight(self) -> int:
        """Output and reasoning weighed for a usage estimate, as `output_chars()` weighs an answer."""
        return weighed_chars(self._ascii_chars, self._other_bytes)

    def _open(self, index: int, block: dict) -> dict:
        if index not in self._blocks:
            self._blocks[index] = block
            self._order.append(index)
        return self._blocks[index]

    def parts(self) -> Tuple[ContentPart, ...]:
        out: List[ContentPart] = []
        for i in self._order:
            b = self._blocks[i]
            if b["kind"] == "text":
                out.append(TextPart("".join(b["text"]), refusal=b.get("refusal", False),
                                    annotations=tuple(b.get("notes", ())), annotations_protocol=b.get("notes_protocol"),
                                    part_fields=b.get("fields"), part_fields_protocol=b.get("fields_protocol")))
            elif b["kind"] == "reasoning":
                out.append(
                    ReasoningPart("".join(b["text"]), b.get("signature"), b.get("redacted"), b.get("provider"))
                )
            elif b["kind"] == "opaque":
                out.append(b["part"])
            else:
                # A custom call's input is free text: empty stays empty, it is not "no arguments".
                custom = b.get("custom", False)
                out.append(ToolCallPart(b["id"], b["name"], "".join(b["args"]) or ("" if custom else "{}"),
                                        b.get("signature"), custom=custom))
        return tuple(out)

    def generation(self) -> Generation:
        parts = self.parts()
        reason = self.finish.reason if self.finish else FinishReason.STOP
        return Generation(
            id=self.id,
            model=self.model,
            parts=parts,
            finish_reason=reason,
            usage=self.usage or Usage(reported=False),
            created=self.created,
            stop_sequence=self.finish.stop_sequence if self.finish else None,
            # The wire's own fields of the ending (an Anthropic stream's `container`), as its unstreamed answer.
            extras=dict(self.finish.extras) if self.finish and self.finish.extras else {},
            extras_protocol=self.finish.wire if self.finish and self.finish.extras else None,
        )


def generation_to_parts(gen: Generation) -> Iterator[StreamPart]:
    """Explode a complete Generation into the stream it would have been."""
    yield ResponseStart(gen.id, gen.model, gen.created, wire=gen.extras_protocol, extras=gen.extras)
    for i, p in enumerate(gen.parts):
        if isinstance(p, TextPart):
            yield TextStart(i, p.refusal, p.part_fields, p.part_fields_protocol)
            if p.text:
                yield TextDelta(i, p.text)
            if p.annotations_protocol:
                for note in p.annotations:
                    yield TextAnnotation(i, p.annotations_protocol, note)
            yield TextEnd(i)
        elif isinstance(p, ReasoningPart):
            yield ReasoningStart(i, p.provider, p.redacted)
            if p.text:
                yield ReasoningDelta(i, p.text)
            yield ReasoningEnd(i, p.signature)
        elif isinstance(p, ToolCallPart):
            yield ToolCallStart(i, p.id, p.name, p.signature, p.custom)
            yield ToolCallDelta(i, p.arguments)
            yield ToolCallEnd(i)
        elif isinstance(p, OpaquePart):
            yield OpaqueBlock(i, p.protocol, p.block)
    yield UsageUpdate(gen.usage)
    if gen.extras and gen.extras_protocol:  # e.g. Anthropic's `container`: a client of that wire gets it back
        yield Finish(gen.finish_reason, gen.stop_sequence, wire=gen.extras_protocol, extras=gen.extras)
    else:
        yield Finish(gen.finish_reason, gen.stop_sequence)


def estimate_tokens(text: str) -> int:
    """A documented rough estimate (4 characters a token), used only when usage is missing."""
    return (len(text) + 3) // 4 if text else 0


def estimate_tokens_upper(text: str) -> int:
    """`estimate_tokens` made an upper-ish bound for budget reservations: ASCII still at 4 characters a
    token, every other character at its UTF-8 bytes over 2.5. At 4 characters a token a Chinese prompt
    was counted at a quarter of its tokens (CJK is about one token a character, more on GPT-4's
    tokenizer); measured on cl100k and o200k, this bound is above the real count for Chinese, Japanese,
    Korean, Cyrillic, Arabic, Devanagari, Thai and accented Latin. ASCII text costs what it did, and an
    `isascii()` check (a flag CPython keeps) is all it adds for it."""
    if text.isascii():
        return (len(text) + 3) // 4
    return tokens_of_weight(*text_weight(text))


def text_weight(text: str) -> Tuple[int, int]:
    """(ASCII characters, UTF-8 bytes of the other characters): what `estimate_tokens_upper` counts, to sum
    over a stream's deltas."""
    if text.isascii():
        return len(text), 0
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars, len(text.encode("utf-8", "surrogatepass")) - ascii_chars  # a lone surrogate: 3 bytes


def tokens_of_weight(ascii_chars: int, other_bytes: int) -> int:
    return (ascii_chars + 3) // 4 + (2 * other_bytes + 4) // 5


def weighed_chars(ascii_chars: int, other_bytes: int) -> int:
    """A text's length in ASCII characters' worth, 4 of them a token as `estimate_tokens_upper` counts
    it: each other character weighs its UTF-8 bytes x 8/5 (2.5 bytes a token)."""
    return ascii_chars + (8 * other_bytes + 4) // 5


def prompt_text(prompt: Prompt) -> str:
    chunks: List[str] = [prompt.system_text()]
    for m in prompt.messages:
        for p in m.parts:
            if isinstance(p, TextPart):
                chunks.append(p.text)
            elif isinstance(p, ToolCallPart):
                chunks.append(p.name + p.arguments)
            elif isinstance(p, ToolResultPart):
                chunks.append(p.text())
            elif isinstance(p, ReasoningPart):
                chunks.append(p.text)
            elif isinstance(p, OpaquePart):  # a fetched page, a code result: the upstream reads all of it
                chunks.append(opaque_text(p.block))
    for t in prompt.tools:
        chunks.append(t.name + (t.description or "") + json.dumps(t.format if t.custom else t.parameters))
    return "".join(chunks)


def output_chars(gen: Generation) -> int:
    """Visible output and reasoning, weighed for a usage estimate (`weighed_chars`)."""
    texts: List[str] = []
    for p in gen.parts:
        if isinstance(p, (TextPart, ReasoningPart)):
            texts.append(p.text)
        elif isinstance(p, ToolCallPart):
            texts.append(p.name + p.arguments)
        elif isinstance(p, OpaquePart):
            texts.append(opaque_text(p.block))
    return weighed_chars(*text_weight("".join(texts)))


def opaque_text(block: Any) -> str:
    """A kept block as the estimates read it: its JSON without base64 media (a generated image, a fetched
    PDF), which an upstream bills as an image or a document, not as text, and which a user's own image
    or file adds nothing for either."""
    return json.dumps(_without_media(block), ensure_ascii=False)


def _without_media(value: Any) -> Any:
    if isinstance(value, str):
        return "" if value.startswith("data:") and ";base64," in value[:100] else value
    if isinstance(value, Mapping):
        media = value.get("type") in ("base64", "image_generation_call") or "mimeType" in value or "mime_type" in value
        return {k: "" if media and k in ("data", "result") and isinstance(v, str) else _without_media(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_media(v) for v in value]
    return value


def estimate_usage(prompt: Prompt, output_chars: int) -> Usage:
    """The usage billed when the upstream reported none: the prompt as a budget reserves it (non-Latin
    text by its bytes: at 4 characters a token a Chinese prompt was billed at a quarter of its tokens),
    and `output_chars` (an answer's weighed by `output_chars()`) at 4 a token."""
    return Usage(
        input_tokens=max(1, estimate_tokens_upper(prompt_text(prompt))),
        output_tokens=(output_chars + 3) // 4,
        reported=False,
    )
