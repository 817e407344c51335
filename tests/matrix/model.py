"""Wire-neutral descriptions of a translation scenario and of what each side observed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    args: Mapping[str, Any]
    # How the arguments' JSON text is split when streamed; empty = one piece.
    fragments: Tuple[str, ...] = ()

    def json(self) -> str:
        return json.dumps(self.args, separators=(",", ":"))

    def pieces(self) -> Tuple[str, ...]:
        if self.fragments:
            assert json.loads("".join(self.fragments)) == dict(self.args), f"fragments of {self.id} do not add up"
            return self.fragments
        return (self.json(),)


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Reasoning:
    text: str
    signature: Optional[str] = None


@dataclass(frozen=True)
class Image:
    """An image by URL, or inline base64 `data` with its media type."""

    url: Optional[str] = None
    media_type: Optional[str] = None
    data: Optional[str] = None


@dataclass(frozen=True)
class Turn:
    """role: user | assistant | tool (a batch of tool results), as in the canonical model."""

    role: str
    text: str = ""
    calls: Tuple[ToolCall, ...] = ()
    results: Tuple[ToolResult, ...] = ()
    reasoning: Optional[Reasoning] = None
    images: Tuple[Image, ...] = ()  # user turns: after the text


@dataclass(frozen=True)
class Usage:
    """The canonical disjoint buckets: uncached input, cache read, cache write, visible output, reasoning."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Failure:
    """An upstream failure. kind: overloaded | rate_limit | cut (midstream only: the stream just ends
    without its wire's terminator). `midstream`: after some text, inside a 200 stream."""

    kind: str
    message: str = "upstream is busy"
    retry_after: Optional[int] = None
    midstream: bool = False


@dataclass(frozen=True)
class Reply:
    """What the upstream answers, in canonical terms (finish is a routeplane FinishReason value)."""

    text: str = ""
    text_fragments: Tuple[str, ...] = ()
    reasoning: Optional[Reasoning] = None
    calls: Tuple[ToolCall, ...] = ()
    finish: str = "stop"
    stop_sequence: Optional[str] = None
    usage: Usage = Usage(input=12, output=5)
    failure: Optional[Failure] = None
    # Stream the calls' fragments round-robin across calls (legal on OpenAI Chat).
    interleave: bool = False

    def pieces(self) -> Tuple[str, ...]:
        if self.text_fragments:
            assert "".join(self.text_fragments) == self.text
            return self.text_fragments
        return (self.text,) if self.text else ()


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    turns: Tuple[Turn, ...]
    reply: Reply
    system: str = ""
    system_cache: bool = False  # mark the system prompt with cache_control (wires that have it)
    tools: Tuple[ToolSpec, ...] = ()
    tool_choice: Optional[str] = None  # auto | required | none
    max_tokens: int = 256
    stop: Tuple[str, ...] = ()
    thinking: bool = False  # the client asks for reasoning
    modes: Tuple[bool, ...] = (False, True)  # non-streaming, streaming
    # Driver features the scenario needs on both wires (WireDriver.features); cells whose
    # drivers lack one are left out, so a new scenario never breaks a driver that predates it.
    requires: Tuple[str, ...] = ()


@dataclass
class ClientResult:
    """What the client saw, read back into neutral terms by its wire driver."""

    status: int
    text: str = ""
    reasoning: Tuple[Reasoning, ...] = ()
    calls: Tuple[Tuple[str, str, Dict[str, Any]], ...] = ()
    finish: Optional[str] = None
    stop_sequence: Optional[str] = None
    usage: Optional[Usage] = None
    error_type: Optional[str] = None
    error_in_stream: bool = False
    retry_after: Optional[str] = None
    raw: Any = None


@dataclass
class UpstreamRequest:
    """What the upstream received, read back into neutral terms by its wire driver."""

    system: str
    system_cache: bool
    turns: Tuple[Turn, ...]
    tools: Tuple[str, ...]
    tool_choice: Optional[str]
    max_tokens: Optional[int]
    stop: Tuple[str, ...]
    stream: bool
    thinking: bool
    raw: Any = field(default=None, repr=False)
