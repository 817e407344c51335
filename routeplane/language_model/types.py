"""The canonical model every wire codec maps to and from (hub-and-spoke translation)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Optional, Tuple, Union


class Role(str, Enum):
    USER = "user"
    ASSISTANT = "assistant"
    # One message per batch of tool results; codecs that fold results into a
    # user turn (Anthropic, Gemini) do so when encoding.
    TOOL = "tool"


class FinishReason(str, Enum):
    STOP = "stop"
    STOP_SEQUENCE = "stop_sequence"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    PAUSE = "pause"
    OTHER = "other"


# --- content parts ---------------------------------------------------------


@dataclass(frozen=True)
class TextPart:
    text: str
    # Anthropic prompt-caching marker, kept verbatim on the Anthropic wire.
    cache_control: Optional[Mapping[str, Any]] = None
    # The model's refusal (OpenAI `refusal`): the OpenAI wires keep it apart from the
    # content (their SDKs' parse() helpers rely on that); the others show it as text.
    refusal: bool = False
    # Notes the upstream attached to this text, in its wire's own shape (Anthropic `citations`,
    # Responses `annotations`), kept for a client of `annotations_protocol` and left out elsewhere.
    annotations: Tuple[Mapping[str, Any], ...] = ()
    annotations_protocol: Optional[str] = None
    # Fields of the wire's item that holds this text (a Responses message's `phase`), sent back only to
    # that wire, `part_fields_protocol`; text whose fields differ is another item there.
    part_fields: Optional[Mapping[str, Any]] = None
    part_fields_protocol: Optional[str] = None


@dataclass(frozen=True)
class ImagePart:
    """An image by URL or inline base64 data (exactly one of url/data)."""

    url: Optional[str] = None
    data: Optional[str] = None
    media_type: Optional[str] = None
    detail: Optional[str] = None
    cache_control: Optional[Mapping[str, Any]] = None
    # The part's own fields beside its data on the wire it came from (Gemini `videoMetadata` and
    # `mediaResolution`, an Anthropic document's `citations` and `context`), sent back only to that wire,
    # `part_fields_protocol` (None is Gemini's, as before it was named).
    part_fields: Optional[Mapping[str, Any]] = None
    part_fields_protocol: Optional[str] = None


@dataclass(frozen=True)
class FilePart:
    """A document: an uploaded file id, a URL or inline base64 data."""

    file_id: Optional[str] = None
    url: Optional[str] = None
    data: Optional[str] = None
    media_type: Optional[str] = None
    filename: Optional[str] = None
    cache_control: Optional[Mapping[str, Any]] = None
    # The part's own fields beside its data on the wire it came from (Gemini `videoMetadata` and
    # `mediaResolution`, an Anthropic document's `citations` and `context`), sent back only to that wire,
    # `part_fields_protocol` (None is Gemini's, as before it was named).
    part_fields: Optional[Mapping[str, Any]] = None
    part_fields_protocol: Optional[str] = None


@dataclass(frozen=True)
class ToolCallPart:
    id: str
    name: str
    # JSON text, as OpenAI carries it (object-shaped wires parse it); for a custom call, the free text.
    arguments: str = "{}"
    # Gemini thought signature or similar provider-bound opaque value.
    signature: Optional[str] = None
    signature_provider: Optional[str] = None
    cache_control: Optional[Mapping[str, Any]] = None
    # A call of an OpenAI custom (freeform) tool: `arguments` is the model's free-text input, not JSON.
    custom: bool = False


@dataclass(frozen=True)
class ToolResultPart:
    tool_call_id: str
    content: Tuple["ContentPart", ...] = ()
    is_error: bool = False
    # Gemini needs the function name on a result; codecs fill it from history.
    name: Optional[str] = None
    cache_control: Optional[Mapping[str, Any]] = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(frozen=True)
class ReasoningPart:
    """Model reasoning. A signature is only valid for the provider that made it."""

    text: str = ""
    signature: Optional[str] = None
    # Anthropic redacted_thinking payload (opaque, must round-trip verbatim).
    redacted: Optional[str] = None
    # Wire that produced the signature ("anthropic_messages", "gemini", ...).
    provider: Optional[str] = None


@dataclass(frozen=True)
class OpaquePart:
    """A block the canonical model has no form for, kept verbatim for its own wire and nowhere else:
    what a provider's server-side tools did (an Anthropic `server_tool_use` and its
    `web_search_tool_result`, a Gemini `executableCode`/`codeExecutionResult` part, a Responses
    `web_search_call` item). A client of `protocol` gets it back in place, and may send it back in its
    history to an upstream of that wire; any other wire leaves it out of an answer, and a request that
    holds one is a 400 there (protocols/wire_only.py), since the upstream would miss part of the turn."""

    protocol: str
    block: Mapping[str, Any]
    # Where the client sent it ("messages[2].content[1]"), for that 400; "" in an answer.
    path: str = ""


ContentPart = Union[TextPart, ImagePart, FilePart, ToolCallPart, ToolResultPart, ReasoningPart, OpaquePart]


@dataclass(frozen=True)
class Message:
    role: Role
    parts: Tuple[ContentPart, ...]
    name: Optional[str] = None

    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


# --- request ---------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    description: Optional[str] = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: Optional[bool] = None
    cache_control: Optional[Mapping[str, Any]] = None
    # An OpenAI custom (freeform) tool: the model calls it with free text, not JSON arguments, so
    # `parameters` is unused. `format` is its input format as the Responses wire spells it
    # ({"type": "text"} or {"type": "grammar", "syntax", "definition"}), otherwise opaque; None: unconstrained.
    # Wires without custom tools see a function taking one string (protocols/custom_tools.py).
    custom: bool = False
    format: Optional[Mapping[str, Any]] = None


@dataclass(frozen=True)
class ToolChoice:
    """mode: auto | none | required | tool (then `name` is set)."""

    mode: str = "auto"
    name: Optional[str] = None
    parallel: Optional[bool] = None


@dataclass(frozen=True)
class ResponseFormat:
    """type: text | json_object | json_schema."""

    type: str = "text"
    name: Optional[str] = None
    schema: Optional[Mapping[str, Any]] = None
    strict: Optional[bool] = None
    # What the answer is for (OpenAI's json_schema `description`): guidance the model reads.
    description: Optional[str] = None


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    stop: Tuple[str, ...] = ()
    seed: Optional[int] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    reasoning_effort: Optional[str] = None
    reasoning_budget: Optional[int] = None
    user: Optional[str] = None


@dataclass(frozen=True)
class Prompt:
    model: str
    messages: Tuple[Message, ...]
    system: Tuple[TextPart, ...] = ()
    tools: Tuple[Tool, ...] = ()
    tool_choice: Optional[ToolChoice] = None
    response_format: Optional[ResponseFormat] = None
    params: GenerationParams = GenerationParams()
    stream: bool = False
    # The client asked for usage on its stream (OpenAI stream_options.include_usage).
    include_usage: bool = False
    # Fields of the inbound wire the canonical model does not carry; forwarded
    # only to an upstream that speaks the same wire (same-wire round trip).
    extras: Mapping[str, Any] = field(default_factory=dict)
    extras_protocol: Optional[str] = None

    def system_text(self) -> str:
        return "\n\n".join(p.text for p in self.system)

    def replace(self, **changes: Any) -> "Prompt":
        return dataclasses.replace(self, **changes)


# --- response --------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Disjoint token buckets; `total_input`/`total_output` recombine them."""

    input_tokens: int = 0  # uncached input
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # visible output (text, tool calls)
    reasoning_tokens: int = 0
    reported: bool = True  # False when estimated locally
    # False when the upstream did not break reasoning out of its output count (Anthropic without
    # output_tokens_details): reasoning_tokens is then 0 and the wires that can omit the field do.
    reasoning_known: bool = True
    raw: Optional[Mapping[str, Any]] = None
    # Calls of the provider's server-side tools that it bills by the call, by kind: (("web_search", 3),)
    # from Anthropic's `server_tool_use.web_search_requests`. Priced by Prices.per_call.
    tool_calls: Tuple[Tuple[str, int], ...] = ()

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_output(self) -> int:
        return self.output_tokens + self.reasoning_tokens

    @property
    def total(self) -> int:
        return self.total_input + self.total_output


@dataclass(frozen=True)
class Generation:
    id: str
    model: str
    parts: Tuple[ContentPart, ...]
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage(reported=False)
    created: int = 0
    stop_sequence: Optional[str] = None
    # Fields of the upstream wire kept for a same-wire client (e.g. system_fingerprint).
    extras: Mapping[str, Any] = field(default_factory=dict)
    extras_protocol: Optional[str] = None

    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    def tool_calls(self) -> Tuple[ToolCallPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ToolCallPart))


# --- stream parts ----------------------------------------------------------
# `index` is the position of the content block in the output, shared by the
# start/delta/end markers of one block.


@dataclass(frozen=True)
class ResponseStart:
    id: str
    model: str
    created: int = 0
    # Input usage known up front (Anthropic message_start); may be refined later.
    usage: Optional[Usage] = None
    # Fields of the upstream wire for the answer as a whole that it sends from the start (an OpenAI Chat
    # chunk's `service_tier`, `system_fingerprint`), as Generation.extras holds them: a client of `wire`
    # gets them back on its stream too.
    wire: Optional[str] = None
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextStart:
    index: int
    refusal: bool = False  # this block is the model's refusal (see TextPart.refusal)
    # TextPart.part_fields of the text this block starts (a Responses message's `phase`).
    part_fields: Optional[Mapping[str, Any]] = None
    part_fields_protocol: Optional[str] = None


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True)
class TextAnnotation:
    """One note on the text block at `index`, in its wire's shape (an Anthropic `citations_delta`'s
    citation, a Responses `response.output_text.annotation.added`'s annotation); a client encoder of
    `protocol` relays it, the others skip it (see TextPart.annotations)."""

    index: int
    protocol: str
    annotation: Mapping[str, Any]


@dataclass(frozen=True)
class TokenLogprobs:
    """The log probabilities an upstream gave for a piece of streamed text (an OpenAI Chat chunk's
    `logprobs.content` or `logprobs.refusal` entries, a Responses delta's `logprobs`, a Gemini chunk's
    `logprobsResult`), sent by the decoder just before the TextDelta of that `text`. A client encoder of `protocol` attaches them to the chunk whose text completes `text`,
    and drops them for good once the text it writes stops matching the scored text (a hook rewrote it:
    the entries would show the original tokens)."""

    index: int
    protocol: str
    entries: Tuple[Mapping[str, Any], ...]
    text: str


@dataclass(frozen=True)
class TextEnd:
    index: int


@dataclass(frozen=True)
class ReasoningStart:
    index: int
    provider: Optional[str] = None
    redacted: Optional[str] = None


@dataclass(frozen=True)
class ReasoningDelta:
    index: int
    text: str = ""
    signature: Optional[str] = None


@dataclass(frozen=True)
class ReasoningEnd:
    index: int
    signature: Optional[str] = None


@dataclass(frozen=True)
class ToolCallStart:
    index: int
    id: str
    name: str
    signature: Optional[str] = None
    custom: bool = False  # a custom tool call: its deltas are free text, not JSON (see ToolCallPart.custom)


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallEnd:
    index: int


@dataclass(frozen=True)
class OpaqueBlock:
    """A whole OpaquePart in a stream: decoders gather its wire events (an Anthropic
    `server_tool_use` with its `input_json_delta`s, a Responses item from `added` to `done`) and
    emit it once complete; a client encoder of `protocol` writes it back as its wire's events, the
    others skip it. `block` is the block as a non-streamed answer would hold it."""

    index: int
    protocol: str
    block: Mapping[str, Any]


@dataclass(frozen=True)
class UsageUpdate:
    """Cumulative usage so far; the last one seen wins."""

    usage: Usage


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    stop_sequence: Optional[str] = None
    # The upstream wire's own word for it (Gemini: "RECITATION", "SPII", ... all CONTENT_FILTER), and
    # that wire: a client of the same wire gets the word back.
    wire_reason: Optional[str] = None
    wire: Optional[str] = None
    # Fields of that wire for the answer as a whole that arrive with its end (Anthropic `message_delta`'s
    # `container`, `stop_details`), as Generation.extras holds them: a client of `wire` gets them back.
    extras: Mapping[str, Any] = field(default_factory=dict)


StreamPart = Union[
    ResponseStart,
    TextStart,
    TextDelta,
    TextAnnotation,
    TokenLogprobs,
    TextEnd,
    ReasoningStart,
    ReasoningDelta,
    ReasoningEnd,
    ToolCallStart,
    ToolCallDelta,
    ToolCallEnd,
    OpaqueBlock,
    UsageUpdate,
    Finish,
]
