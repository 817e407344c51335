"""A function call the end cut before any argument arrived (max_output_tokens, a failed upstream) carries the
arguments it had, possibly "", streamed and not: OpenAI's `function_call_arguments.done` event has no status,
and a client acting on it ran the tool with the "{}" the gateway made up, while the item said `incomplete`.
A whole call without arguments (Anthropic's empty input, a Chat call with no fragments) still carries "{}"."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from routeplane.errors import UpstreamError
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ResponseStart,
    StreamPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    Usage,
)
from routeplane.protocols.openai_responses.request import decode_request
from routeplane.protocols.openai_responses.response import decode_response, encode_response
from routeplane.protocols.openai_responses.stream import ResponsesStreamEncoder
from routeplane.protocols.sse import iter_events
from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.upstream import Reply, openai_chunk
from tests.support.wires import responses_sse, via_wires_config

PROMPT = decode_request({"model": "m", "input": "weather?"})
TARGET = RoutingTarget(provider="up", model="m", protocol="openai_responses", base_url="http://127.0.0.1:9/v1")
TOOLS = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]


def encoded(parts: List[StreamPart], error: bool = False) -> List[Dict[str, Any]]:
    enc = ResponsesStreamEncoder(PROMPT)
    raw = b"".join(enc.encode(p) for p in parts)
    raw += enc.error(UpstreamError("the upstream went away")) if error else enc.close()
    return [json.loads(e.data) for e in iter_events(iter([raw]))]


def call_events(events: List[Dict[str, Any]]) -> Tuple[List[str], str, Dict[str, Any], Dict[str, Any]]:
    """The argument deltas, the `.done` arguments, the `output_item.done` item and the terminal output item."""
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = [e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"]
    items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert len(done) == 1 and len(items) == 1
    return deltas, done[0], items[0], events[-1]["response"]["output"][0]


START: List[StreamPart] = [ResponseStart("r", "m", 0), ToolCallStart(0, "call_1", "get_weather")]


def test_a_call_cut_before_its_arguments_carries_none() -> None:
    events = encoded(START + [ToolCallEnd(0), Finish(FinishReason.LENGTH)])
    deltas, done, item, final = call_events(events)
    assert (deltas, done) == ([], "")
    assert (item["arguments"], item["status"]) == ("", "incomplete") and final == item
    assert events[-1]["type"] == "response.incomplete"
    kinds = [e["type"] for e in events]
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done")


def test_a_call_cut_by_a_failure_carries_none() -> None:
    deltas, done, item, final = call_events(encoded(START, error=True))
    assert (deltas, done, item["arguments"], item["status"]) == ([], "", "", "incomplete") and final == item


def test_a_call_cut_mid_arguments_carries_what_it_had() -> None:
    deltas, done, item, _ = call_events(encoded(START + [ToolCallDelta(0, '{"city": "Pa'), Finish(FinishReason.LENGTH)]))
    assert deltas == ['{"city": "Pa'] and done == item["arguments"] == '{"city": "Pa'
    assert item["status"] == "incomplete"


def test_a_whole_call_without_arguments_still_carries_an_empty_object() -> None:
    events = encoded(START + [ToolCallEnd(0), Finish(FinishReason.TOOL_CALLS)])
    deltas, done, item, final = call_events(events)
    assert (deltas, done, item["arguments"], item["status"]) == (["{}"], "{}", "{}", "completed") and final == item


def test_a_whole_call_followed_by_another_item_carries_an_empty_object() -> None:
    events = encoded(START + [ToolCallEnd(0), ToolCallStart(1, "call_2", "get_time"), ToolCallDelta(1, "{}"),
                              ToolCallEnd(1), Finish(FinishReason.LENGTH)])
    done = [e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done == ["{}", "{}"]
    assert [i["status"] for i in events[-1]["response"]["output"]] == ["completed", "incomplete"]


def _generation(arguments: str, finish: FinishReason) -> Generation:
    return Generation(id="r", model="m", parts=(ToolCallPart("call_1", "get_weather", arguments),),
                      finish_reason=finish, usage=Usage(input_tokens=1, output_tokens=1))


def test_unstreamed_the_same() -> None:
    cut = encode_response(_generation("", FinishReason.LENGTH), PROMPT)["output"][0]
    assert (cut["arguments"], cut["status"]) == ("", "incomplete")
    whole = encode_response(_generation("", FinishReason.TOOL_CALLS), PROMPT)["output"][0]
    assert (whole["arguments"], whole["status"]) == ("{}", "completed")


def _upstream_call(status: str, arguments: str) -> Dict[str, Any]:
    return {"type": "function_call", "id": "fc_up", "call_id": "call_up", "name": "get_weather",
            "arguments": arguments, "status": status}


def _upstream_response(status: str, output: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1, "model": "m", "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "output": output, "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}}


def test_a_responses_upstreams_cut_call_is_read_as_it_was() -> None:
    gen = decode_response(_upstream_response("incomplete", [_upstream_call("incomplete", "")]), TARGET)
    assert gen.parts[0].arguments == ""  # type: ignore[union-attr]
    gen = decode_response(_upstream_response("completed", [_upstream_call("completed", "")]), TARGET)
    assert gen.parts[0].arguments == "{}"  # type: ignore[union-attr]


# --- end to end: the official SDK, streamed and not, from two upstream wires -------------------------------


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(via_wires_config) as pair:
        yield pair


def _responses_upstream(stream: bool) -> Reply:
    cut = _upstream_call("incomplete", "")
    if not stream:
        return Reply.json(_upstream_response("incomplete", [cut]))
    return responses_sse([
        {"type": "response.created", "response": {**_upstream_response("in_progress", []), "usage": None}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**cut, "status": "in_progress"}},
        {"type": "response.output_item.done", "output_index": 0, "item": cut},
        {"type": "response.incomplete", "response": _upstream_response("incomplete", [cut])},
    ])


def _chat_upstream(stream: bool) -> Reply:
    call = {"index": 0, "id": "call_up", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    return Reply.sse([openai_chunk({"role": "assistant", "tool_calls": [call]}), openai_chunk({}, "length"),
                      openai_chunk(None, usage=usage)])


def _ask(env: Env, model: str, stream: bool) -> Tuple[List[str], Any]:
    """The `.done` arguments the SDK saw (streamed), and the final response."""
    _, client = env
    if not stream:
        return [], client.responses.create(model=model, input="weather?", tools=TOOLS)  # type: ignore[arg-type]
    with client.responses.stream(model=model, input="weather?", tools=TOOLS) as s:  # type: ignore[arg-type]
        events = list(s)
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert events[-1].type == "response.incomplete"  # the SDK's final response waits for response.completed
    return done, events[-1].response


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_sees_a_cut_call_from_a_responses_upstream_as_it_was(env: Env, stream: bool) -> None:
    env[0].enqueue(_responses_upstream(stream))
    done, final = _ask(env, "via-openai_responses", stream)
    call = final.output[0]
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert (call.type, call.arguments, call.status) == ("function_call", "", "incomplete")
    assert done == ([""] if stream else [])


def test_the_sdk_sees_a_cut_call_from_a_chat_upstream_as_it_was(env: Env) -> None:
    env[0].enqueue(_chat_upstream(True))
    done, final = _ask(env, "via-openai_chat", True)
    call = final.output[0]
    assert done == [""] and (call.arguments, call.status) == ("", "incomplete")
