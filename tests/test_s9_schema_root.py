"""Structured output with a schema that is not an object at its root (google-genai's `list[Model]` and
enums), through a real gateway to OpenAI Chat, Responses and Anthropic fake upstreams: OpenAI takes only an
object root, so the schema goes wrapped in one and the answer comes back without the wrapper, plain and
streamed (routeplane/protocols/schema_root.py). Anthropic's `output_config.format` takes any root."""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, Iterator, List

import pytest
from google import genai
from google.genai import types
from pydantic import BaseModel, TypeAdapter

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    Message,
    Prompt,
    ResponseFormat,
    Role,
    StreamPart,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
    UsageUpdate,
)
from routeplane.protocols import schema_root
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk
from tests.support.wires import anthropic_reply, openai_chat_reply, responses_reply, via_wires_config

pytestmark = pytest.mark.e2e

OPENAI_WIRES = ("openai_chat", "openai_responses")
REPLY = {"openai_chat": openai_chat_reply, "openai_responses": responses_reply,
         "anthropic_messages": anthropic_reply}


class City(BaseModel):
    name: str


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


CITIES = [City(name="Rome"), City(name="Oslo")]
CITIES_JSON = '[{"name": "Rome"}, {"name": "Oslo"}]'
LIST_CONFIG = types.GenerateContentConfig(response_mime_type="application/json", response_schema=list[City])
ENUM_CONFIG = types.GenerateContentConfig(response_mime_type="text/x.enum", response_schema=Color)


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, tuple(REPLY))).start()
    yield gw
    gw.stop()


def _sent_schema(wire: str, body: Dict[str, Any]) -> Dict[str, Any]:
    if wire == "openai_chat":
        return body["response_format"]["json_schema"]["schema"]
    if wire == "openai_responses":
        return body["text"]["format"]["schema"]
    return body["output_config"]["format"]["schema"]


def _streamed_text(gclient: genai.Client, wire: str, config: types.GenerateContentConfig) -> str:
    chunks = gclient.models.generate_content_stream(model=f"via-{wire}", contents="cities", config=config)
    return "".join(chunk.text or "" for chunk in chunks)


# --- OpenAI wires: wrapped on the way up, unwrapped on the way back ---------------------------------------------


@pytest.mark.parametrize("wire", OPENAI_WIRES)
def test_a_list_schema_reaches_openai_inside_an_object(gclient: genai.Client, up: FakeUpstream, wire: str) -> None:
    up.enqueue(REPLY[wire](json.dumps({"response": [c.model_dump() for c in CITIES]}), False, False))
    r = gclient.models.generate_content(model=f"via-{wire}", contents="cities", config=LIST_CONFIG)
    sent = _sent_schema(wire, up.requests[-1].json)
    assert sent["type"] == "object" and sent["required"] == ["response"] and sent["additionalProperties"] is False
    assert sent["properties"]["response"]["type"] == "array"
    assert r.text == CITIES_JSON
    assert r.parsed == CITIES


@pytest.mark.parametrize("wire", OPENAI_WIRES)
def test_a_streamed_list_comes_back_without_the_wrapper(gclient: genai.Client, up: FakeUpstream, wire: str) -> None:
    up.enqueue(REPLY[wire](json.dumps({"response": [c.model_dump() for c in CITIES]}), False, True))
    text = _streamed_text(gclient, wire, LIST_CONFIG)
    assert _sent_schema(wire, up.requests[-1].json)["type"] == "object"
    assert text == CITIES_JSON
    assert TypeAdapter(List[City]).validate_json(text) == CITIES


def _char_by_char(text: str) -> Reply:
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                      *(openai_chunk({"content": ch}) for ch in text), openai_chunk({}, "stop")])


def test_a_pretty_printed_wrapper_streamed_a_character_at_a_time(gclient: genai.Client, up: FakeUpstream) -> None:
    """Whitespace anywhere in the wrapper, and a value that ends in braces of its own."""
    up.enqueue(_char_by_char('\n {\n  "response" :\n  [{"name": "Rome"}, {"name": "Oslo"}]\n }\n'))
    assert _streamed_text(gclient, "openai_chat", LIST_CONFIG) == CITIES_JSON
    up.enqueue(_char_by_char('{"response":{"name":"Rome"}}'))
    config = types.GenerateContentConfig(response_mime_type="application/json",
                                         response_json_schema={"anyOf": [{"type": "object"}, {"type": "null"}]})
    assert _streamed_text(gclient, "openai_chat", config) == '{"name":"Rome"}'


@pytest.mark.parametrize("wire", OPENAI_WIRES)
def test_an_enum_comes_back_as_the_bare_value(gclient: genai.Client, up: FakeUpstream, wire: str) -> None:
    """google-genai's `text/x.enum`: the bare value, as Gemini answers it (not a JSON string), which the SDK's
    `parsed` reads."""
    up.enqueue(REPLY[wire](json.dumps({"response": "green"}), False, False))
    r = gclient.models.generate_content(model=f"via-{wire}", contents="color?", config=ENUM_CONFIG)
    inner = _sent_schema(wire, up.requests[-1].json)["properties"]["response"]
    assert inner["enum"] == ["red", "green"]
    assert r.text == "green" and r.parsed == Color.GREEN
    up.enqueue(REPLY[wire](json.dumps({"response": "red"}), False, True))
    assert _streamed_text(gclient, wire, ENUM_CONFIG) == "red"


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_without_the_wrapper_passes_unchanged(gclient: genai.Client, up: FakeUpstream, stream: bool) -> None:
    """A model (or a compatible server) that ignored the wrapper: its text is not cut."""
    up.enqueue(openai_chat_reply(CITIES_JSON, False, stream))
    if stream:
        assert _streamed_text(gclient, "openai_chat", LIST_CONFIG) == CITIES_JSON
    else:
        r = gclient.models.generate_content(model="via-openai_chat", contents="cities", config=LIST_CONFIG)
        assert r.text == CITIES_JSON and r.parsed == CITIES


def test_an_object_schema_is_sent_as_it_is(gclient: genai.Client, up: FakeUpstream) -> None:
    up.enqueue(openai_chat_reply('{"name": "Rome"}', False, False))
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=City)
    r = gclient.models.generate_content(model="via-openai_chat", contents="city", config=config)
    assert "response" not in _sent_schema("openai_chat", up.requests[-1].json).get("properties", {})
    assert r.parsed == City(name="Rome")


# --- Anthropic: any root, sent as it is ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_gets_the_list_schema_as_it_is(gclient: genai.Client, up: FakeUpstream, stream: bool) -> None:
    """Anthropic's `output_config.format` takes any root: its SDK's `messages.parse(output_format=list[X])`
    sends the array schema and validates the answer's text as the list itself."""
    up.enqueue(anthropic_reply(CITIES_JSON, False, stream))
    if stream:
        text = _streamed_text(gclient, "anthropic_messages", LIST_CONFIG)
    else:
        r = gclient.models.generate_content(model="via-anthropic_messages", contents="cities", config=LIST_CONFIG)
        text = r.text or ""
        assert r.parsed == CITIES
    assert _sent_schema("anthropic_messages", up.requests[-1].json)["type"] == "array"
    assert TypeAdapter(List[City]).validate_json(text) == CITIES


# --- the module's edges, as pure functions ----------------------------------------------------------------------


def _prompt(schema: Dict[str, Any]) -> Prompt:
    return Prompt(model="m", messages=(Message(Role.USER, (TextPart("x"),)),),
                  response_format=ResponseFormat("json_schema", "response", schema))


ARRAY = {"type": "array", "items": {"$ref": "#/$defs/City"}, "$defs": {"City": {"type": "object"}}}


def _sent(schema: Dict[str, Any], wire: str) -> Any:
    rf = schema_root.object_root(_prompt(schema), wire).response_format
    return rf.schema if rf is not None else None


def test_definitions_move_to_the_wrappers_root() -> None:
    """`#/$defs/...` resolves from the document's root: pydantic puts a list's model there."""
    schema = _sent(ARRAY, "openai_chat")
    assert schema["$defs"] == ARRAY["$defs"]
    assert schema["properties"]["response"] == {"type": "array", "items": {"$ref": "#/$defs/City"}}


def test_only_the_openai_wires_get_the_wrapper() -> None:
    assert _sent(ARRAY, "gemini") == ARRAY and _sent(ARRAY, "anthropic_messages") == ARRAY
    assert _sent({"type": "object"}, "openai_responses") == {"type": "object"}


@pytest.mark.parametrize("text, value", [
    ('{"response": [1, 2]}', "[1, 2]"),
    ('\n\t{ "response"\n:\r\n "x" }\n', '"x"'),
    ('{"response":{"a":{}}}', '{"a":{}}'),
    ('{"response": [1], "other": 2}', None),  # another key: not the wrapper
    ('{"response": [1]', None),  # never closed
    ('{"responses": [1]}', None),
    ("[1, 2]", None),
    ('{"response": }', None),
])
def test_unwrapping_a_whole_text(text: str, value: Any) -> None:
    assert schema_root.unwrap_text(text) == value


def _streamed(pieces: List[str], refusal: bool = False) -> str:
    parts: List[StreamPart] = [TextStart(0, refusal), *(TextDelta(0, p) for p in pieces), TextEnd(0),
                               UsageUpdate(Usage()), Finish(FinishReason.STOP)]
    out = list(schema_root.unwrap_stream(iter(parts), _prompt(ARRAY), "openai_chat"))
    assert isinstance(out[-1], Finish) and isinstance(out[-3], TextEnd)
    return "".join(p.text for p in out if isinstance(p, TextDelta))


@pytest.mark.parametrize("text, expected", [
    ('{"response": [{"a": "}"}]}', '[{"a": "}"}]'),
    (' { "response" : "red" } ', '"red"'),
    ('[1, 2]', "[1, 2]"),  # not the wrapper: as it came
    ('{"name": "x"}', '{"name": "x"}'),
    ('{"response": [1, 2', "[1, 2"),  # cut off (max tokens): the value so far
    ('{"resp', '{"resp'),  # an opening that never completed
])
def test_unwrapping_a_stream_however_it_is_split(text: str, expected: str) -> None:
    for size in (1, 2, 3, 7, len(text)):
        assert _streamed([text[i:i + size] for i in range(0, len(text), size)]) == expected


def test_a_refusal_is_not_unwrapped() -> None:
    assert _streamed(['{"response": 1}'], refusal=True) == '{"response": 1}'
    gen = Generation("g", "m", (TextPart('{"response": 1}', refusal=True), TextPart('{"response": 2}')))
    unwrapped = schema_root.unwrap(gen, _prompt(ARRAY), "openai_chat")
    assert [p.text for p in unwrapped.parts if isinstance(p, TextPart)] == ['{"response": 1}', "2"]
