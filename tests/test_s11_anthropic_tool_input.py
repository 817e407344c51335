"""A tool call's input from another wire's upstream, as the official `anthropic` SDK gets it streamed: the same
object a non-streamed answer has, also when the arguments are cut off or broken JSON that starts like an object
(it was the SDK's partial parse of the fragments, `{"a": 1}` for `{"a": 1`, or a ValueError in the SDK for
`{"a": x}`). An Anthropic upstream's fragments still stream as they come."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import anthropic
import pytest

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Prompt,
    ResponseStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from routeplane.protocols.anthropic_messages import stream as an_stream
from routeplane.protocols.sse import iter_events
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url), workers=1, threads=4).start()
    yield gw
    gw.stop()


def chat_call_stream(fragments: List[str], finish: str) -> Reply:
    """An OpenAI Chat stream of one tool call whose arguments arrive as `fragments`, then `finish`."""
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [openai_chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
    chunks += [openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}) for f in fragments]
    chunks.append(openai_chunk({}, finish))
    return Reply.sse(chunks)


def chat_call_answer(arguments: str, finish: str) -> Reply:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return Reply.json(openai_completion(None, tool_calls=[call], finish=finish))


def streamed_input(claude: anthropic.Anthropic) -> Dict[str, Any]:
    with claude.messages.stream(model="via-openai_chat", max_tokens=50, messages=QUESTION, tools=TOOLS) as s:
        final = s.get_final_message()
    [block] = [b for b in final.content if b.type == "tool_use"]
    return block.input


def raw_events_input(claude: anthropic.Anthropic) -> Dict[str, Any]:
    """The input from the raw events: the JSON parse of the concatenated partial_json (`{}` when none)."""
    text = ""
    for event in claude.messages.create(model="via-openai_chat", max_tokens=50, messages=QUESTION, tools=TOOLS,
                                        stream=True):
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
            text += event.delta.partial_json
    return json.loads(text) if text else {}


CUT = [
    pytest.param(['{"city": "Pa', 'r'], "length", id="cut-in-a-string"),
    pytest.param(['{"a": 1'], "length", id="cut-after-a-number"),
    pytest.param(['{"a": ', "x}"], "tool_calls", id="invalid-value"),
    pytest.param(['{"a": 1}', "}"], "tool_calls", id="trailing-brace"),
    pytest.param(['{"a": "\\ud800"}'], "tool_calls", id="lone-surrogate-escape"),
]


@pytest.mark.parametrize(("fragments", "finish"), CUT)
def test_cut_or_broken_arguments_stream_as_the_unstreamed_input(
        up: FakeUpstream, claude: anthropic.Anthropic, fragments: List[str], finish: str) -> None:
    """Streamed (SDK accumulation and raw events) and non-streamed, the client gets one and the same input."""
    arguments = "".join(fragments)
    up.enqueue(chat_call_answer(arguments, finish))
    unstreamed = claude.messages.create(model="via-openai_chat", max_tokens=50, messages=QUESTION, tools=TOOLS)
    [block] = [b for b in unstreamed.content if b.type == "tool_use"]
    up.enqueue(chat_call_stream(fragments, finish), chat_call_stream(fragments, finish))
    accumulated, raw = streamed_input(claude), raw_events_input(claude)
    if "ud800" in arguments:
        # A lone surrogate cannot reach the SDK's UTF-8 encoding of a fragment: it becomes U+FFFD.
        assert accumulated == raw == {"a": "\ufffd"}
        assert block.input == {"a": "\ud800"}
    else:
        assert accumulated == raw == block.input == {"_raw": arguments}


@pytest.mark.parametrize("fragments", [
    ['{"ci', 'ty": "Pa', 'ris"}'], ["  ", '{"city":', ' "Paris"}  '], ['{"city": "\\ud83d', '\\ude00"}'],
], ids=["split", "whitespace", "surrogate-pair"])
def test_complete_arguments_stream_as_their_object(
        up: FakeUpstream, claude: anthropic.Anthropic, fragments: List[str]) -> None:
    up.enqueue(chat_call_stream(fragments, "tool_calls"), chat_call_stream(fragments, "tool_calls"))
    expected = json.loads("".join(fragments))
    assert streamed_input(claude) == raw_events_input(claude) == expected


def test_blank_and_free_text_arguments(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    """All-blank arguments are `{}` and send no delta; text that is no object is {"_raw": ...}."""
    up.enqueue(chat_call_stream([" "], "tool_calls"), chat_call_stream(["[1, ", "2]"], "tool_calls"))
    assert streamed_input(claude) == {}
    assert streamed_input(claude) == {"_raw": "[1, 2]"}


def test_a_stream_cut_mid_arguments_leaves_no_partial_object(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    """The upstream hangs up mid-arguments: the tool block the client saw holds no partial parse."""
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [openai_chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
              openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]})]
    up.enqueue(Reply.sse(chunks, done=None))
    text, types = "", []
    try:
        for event in claude.messages.create(model="via-openai_chat", max_tokens=50, messages=QUESTION,
                                            tools=TOOLS, stream=True):
            types.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                text += event.delta.partial_json
    except anthropic.APIStatusError as err:  # the stream's `error` event
        types.append(f"error:{err.status_code}")
    assert types == ["message_start", "content_block_start", "error:200"]
    assert text == ""


def test_an_anthropic_upstreams_fragments_stream_as_they_come(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    events = [
        {"type": "message_start", "message": {"id": "msg_up", "type": "message", "role": "assistant", "model": "m",
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    up.enqueue(Reply.anthropic_sse(events))
    fragments = [e.delta.partial_json for e in claude.messages.create(
        model="via-anthropic_messages", max_tokens=50, messages=QUESTION, tools=TOOLS, stream=True)
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert fragments == ['{"city":', ' "Paris"}']


def test_a_broken_call_beside_a_parallel_one(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    """The first of two parallel calls never becomes an object: the second waits for it, then both settle."""
    def call(i: int, **fields: Any) -> Dict[str, Any]:
        return openai_chunk({"tool_calls": [{"index": i, **fields}]})
    chunks = [openai_chunk({"role": "assistant", "content": None}),
              call(0, id="call_0", type="function", function={"name": "get_weather", "arguments": '{"city": "Pa'}),
              call(1, id="call_1", type="function", function={"name": "get_weather", "arguments": '{"city": '}),
              call(1, function={"arguments": '"Rome"}'}), openai_chunk({}, "tool_calls")]
    up.enqueue(Reply.sse(chunks))
    with claude.messages.stream(model="via-openai_chat", max_tokens=50, messages=QUESTION, tools=TOOLS) as s:
        final = s.get_final_message()
    assert [(b.id, b.input) for b in final.content] == [("call_0", {"_raw": '{"city": "Pa'}),
                                                        ("call_1", {"city": "Rome"})]


# --- pings while held ------------------------------------------------------------------------------------


def _held_call_events(monkeypatch: pytest.MonkeyPatch, every: float) -> List[str]:
    monkeypatch.setattr(an_stream, "HELD_PING_SECONDS", every)
    enc = an_stream.MessagesStreamEncoder(Prompt(model="m", messages=()))
    raw = b"".join([enc.encode(ResponseStart("r1", "m", wire="openai_chat")), enc.encode(ToolCallStart(0, "c1", "f")),
                    *(enc.encode(ToolCallDelta(0, frag)) for frag in ('{"a"', ': 1', '}')),
                    enc.encode(ToolCallEnd(0)), enc.encode(Finish(FinishReason.TOOL_CALLS)), enc.close()])
    return [e.event or "" for e in iter_events([raw])]


def test_held_tool_input_sends_pings_so_a_long_call_does_not_look_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    events = _held_call_events(monkeypatch, 0.0)
    start, stop = events.index("content_block_start"), events.index("content_block_stop")
    assert events[start + 1:stop] == ["ping", "ping", "ping", "content_block_delta"]


def test_no_ping_within_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "ping" not in _held_call_events(monkeypatch, 3600.0)
