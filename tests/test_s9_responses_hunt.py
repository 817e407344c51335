"""Regressions from a cold bug hunt on the OpenAI Responses wire, through the official openai SDK.

The SDK talks to the gateway in-process (httpx2's WSGI transport); the gateway talks to a real local
fake upstream over HTTP, so both codec directions and the web layer are exercised.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import openai
import pytest

from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.upstream import Reply, openai_chunk

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def _config(url: str) -> Dict[str, Any]:
    base = {"oc": url + "/v1", "an": url, "or": url + "/v1"}
    wires = {"oc": "openai_chat", "an": "anthropic_messages", "or": "openai_responses"}
    return {
        "providers": {name: {"protocol": wires[name], "base_url": u, "api_key": f"k-{name}"}
                      for name, u in base.items()},
        "models": {f"via-{name}": {"targets": [{"provider": name, "model": "up"}]} for name in base},
    }


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(_config) as pair:
        yield pair


# --- the item a max_output_tokens stop cut off is `incomplete` ----------------------------


def _anthropic_cut_call(stream: bool, stop: str) -> Reply:
    """Text, then a tool call the stop reason `stop` ended (Anthropic sends the blocks' ends first)."""
    text = {"type": "text", "text": "Let me check."}
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Par"}}
    usage = {"input_tokens": 10, "output_tokens": 7}
    if not stream:
        return Reply.json({"id": "msg_a", "type": "message", "role": "assistant", "model": "up",
                           "content": [text, call], "stop_reason": stop, "stop_sequence": None, "usage": usage})
    return Reply.anthropic_sse([
        {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant", "model": "up",
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text["text"]}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {**call, "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"city": "Par"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
        {"type": "message_stop"},
    ])


def _answer(client: openai.OpenAI, model: str, stream: bool) -> Tuple[Any, List[Any]]:
    """The final response and, streamed, the events (the SDK's stream helper wants `response.completed`
    only, so an incomplete stream is read raw)."""
    if not stream:
        return client.responses.create(model=model, input="Weather in Paris?", tools=TOOLS), []
    events = list(client.responses.create(model=model, input="Weather in Paris?", tools=TOOLS, stream=True))
    return events[-1].response, events


@pytest.mark.parametrize("stream", [False, True])
def test_the_call_a_max_tokens_stop_cut_off_is_incomplete(env: Env, stream: bool) -> None:
    """A max_output_tokens stop left every item `completed`, so an agent ran the call whose arguments were
    cut; OpenAI marks the cut item `incomplete` (the items before it stay completed)."""
    up, client = env
    up.enqueue(_anthropic_cut_call(stream, "max_tokens"))
    final, events = _answer(client, "via-an", stream)
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert [(o.type, o.status) for o in final.output] == [("message", "completed"), ("function_call", "incomplete")]
    if stream:
        assert events[-1].type == "response.incomplete"
        done = [e.item for e in events if e.type == "response.output_item.done"]
        assert [i.model_dump() for i in done] == [o.model_dump() for o in final.output]
        assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("stream", [False, True])
def test_text_cut_by_a_chat_upstreams_length_stop_is_incomplete(env: Env, stream: bool) -> None:
    up, client = env
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    if stream:
        up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "Once upon"}), openai_chunk({}, "length"),
                              openai_chunk(None, usage=usage)]))
    else:
        up.enqueue(Reply.json({"id": "c", "object": "chat.completion", "created": 1, "model": "up", "usage": usage,
                               "choices": [{"index": 0, "finish_reason": "length",
                                            "message": {"role": "assistant", "content": "Once upon"}}]}))
    final, _ = _answer(client, "via-oc", stream)
    assert final.incomplete_details.reason == "max_output_tokens"
    assert [(o.type, o.status) for o in final.output] == [("message", "incomplete")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_paused_or_finished_turn_keeps_its_items_completed(env: Env, stream: bool) -> None:
    up, client = env
    up.enqueue(_anthropic_cut_call(stream, "pause_turn"), _anthropic_cut_call(stream, "tool_use"))
    paused, _ = _answer(client, "via-an", stream)
    finished, _ = _answer(client, "via-an", stream)
    assert paused.status == "incomplete" and paused.incomplete_details is None
    assert finished.status == "completed"
    for final in (paused, finished):
        assert [o.status for o in final.output] == ["completed", "completed"]


# --- tool_choice allowed_tools -------------------------------------------------------------


@pytest.mark.parametrize("listed", [1, "get_weather", [1], None])
def test_allowed_tools_without_an_array_of_tools_is_a_400(env: Env, listed: Any) -> None:
    """A non-array `tools` was a 500 (a number) or silently offered no tool at all (a string, none)."""
    up, client = env
    choice: Dict[str, Any] = {"type": "allowed_tools", "mode": "auto"}
    if listed is not None:
        choice["tools"] = listed
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="via-or", input="hi", tools=TOOLS, tool_choice=choice)  # type: ignore[arg-type]
    assert caught.value.param == "tool_choice.tools"
    assert up.requests == []


def test_allowed_tools_requiring_one_hosted_tool_forces_no_nameless_function(env: Env) -> None:
    """`required` with one allowed tool forces it by name; a hosted tool has none, and went upstream as
    `{"type": "function", "name": null}` with every function tool dropped."""
    up, client = env
    up.enqueue(Reply.json({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
                           "model": "up", "output": [], "usage": None}))
    client.responses.create(model="via-or", input="hi", tools=[*TOOLS, {"type": "web_search"}],  # type: ignore[list-item]
                            tool_choice={"type": "allowed_tools", "mode": "required",
                                         "tools": [{"type": "web_search"}]})
    sent = up.requests[0].json
    assert sent["tool_choice"] == {"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]}
    assert {"type": "web_search"} in sent["tools"]
    assert all(t.get("name") for t in sent["tools"] if t["type"] == "function")
    assert json.dumps(sent).count('"name": null') == 0
