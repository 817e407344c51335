"""Session 10 bug hunt on the OpenAI Responses wire, through the official openai SDK: `.stream()`'s final
response is the non-streamed answer for the same upstream script, whatever the upstream's wire.

The SDK talks to the gateway in-process (httpx2's WSGI transport); the gateway talks to a real local fake
upstream over HTTP, so both codec directions and the web layer are exercised.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import openai
import pytest

from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.upstream import Reply, openai_chunk, openai_completion
from tests.support.wires import responses_sse, via_wires_config

TOOLS: Any = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(via_wires_config) as pair:
        yield pair


def _both(client: openai.OpenAI, model: str, **kw: Any) -> Tuple[Any, Any, List[Any]]:
    """The plain answer, and the streamed one as the SDK's accumulator builds it (with its events)."""
    plain = client.responses.create(model=model, **kw)
    with client.responses.stream(model=model, **kw) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return plain, final, events


def _shape(output: List[Any]) -> List[Any]:
    """Output items without the ids the gateway makes fresh for each answer (messages, reasoning)."""
    out = []
    for item in output:
        if item.type == "message":
            out.append(("message", [(c.type, getattr(c, "text", None) or getattr(c, "refusal", None))
                                    for c in item.content], item.status))
        elif item.type == "function_call":
            out.append(("function_call", item.id, item.call_id, item.name, item.arguments, item.status))
        else:
            out.append((item.type,))
    return out


# --- parallel calls an upstream gave one id ------------------------------------------------


def _chat_same_id(stream: bool) -> Reply:
    """DeepSeek, GLM and Kimi give parallel calls one id."""
    calls = [("call_x", "Paris"), ("call_x", "Rome")]
    if not stream:
        return Reply.json(openai_completion(None, finish="tool_calls", tool_calls=[
            {"id": cid, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}
            for cid, c in calls]))
    chunks = [openai_chunk({"role": "assistant", "content": None})]
    for i, (cid, city) in enumerate(calls):
        chunks.append(openai_chunk({"tool_calls": [{"index": i, "id": cid, "type": "function",
                                                    "function": {"name": "get_weather", "arguments": ""}}]}))
        chunks.append(openai_chunk({"tool_calls": [{"index": i, "function": {"arguments": json.dumps({"city": city})}}]}))
    chunks += [openai_chunk({}, "tool_calls"),
               openai_chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14})]
    return Reply.sse(chunks)


def test_parallel_calls_sharing_one_id_reach_the_sdk_as_two_calls(env: Env) -> None:
    """Both calls came out with call_id `call_x` (and item id `fc_call_x`): the SDK's stream accumulator
    raised "Response snapshot has conflicting output identities", and the outputs could not be told apart."""
    up, client = env
    up.enqueue(_chat_same_id(False), _chat_same_id(True))
    plain, final, _ = _both(client, "via-openai_chat", input="Paris and Rome?", tools=TOOLS)
    assert [o.call_id for o in plain.output] == ["call_x", "call_x_2"]
    assert len({o.id for o in plain.output}) == 2
    assert _shape(final.output) == _shape(plain.output)
    assert [json.loads(o.arguments)["city"] for o in final.output] == ["Paris", "Rome"]

    # The outputs sent back pair with their calls: the upstream sees two distinct ids.
    history: List[Any] = [{"role": "user", "content": "Paris and Rome?"}, *plain.output,
                          *({"type": "function_call_output", "call_id": o.call_id, "output": t}
                            for o, t in zip(plain.output, ("18C", "21C")))]
    up.enqueue(Reply.json(openai_completion("Both mild.")))
    assert client.responses.create(model="via-openai_chat", input=history, tools=TOOLS).output_text == "Both mild."
    sent = up.requests[-1].json["messages"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_x", "call_x_2"]
    assert [(m["tool_call_id"], m["content"]) for m in sent[2:]] == [("call_x", "18C"), ("call_x_2", "21C")]


# --- a Responses upstream whose stream leaves items to the terminal event -----------------------


MESSAGE = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]}
CALL = {"type": "function_call", "id": "fc_up", "call_id": "call_up", "name": "get_weather",
        "arguments": '{"city":"Paris"}', "status": "completed"}
FINAL = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
         "output": [MESSAGE, CALL], "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19}}
SHELL = {**FINAL, "status": "in_progress", "output": [], "usage": None}


@pytest.mark.parametrize("events", [
    [{"type": "response.created", "response": SHELL}, {"type": "response.completed", "response": FINAL}],
    [{"type": "response.created", "response": SHELL},
     {"type": "response.output_item.done", "output_index": 0, "item": MESSAGE},
     {"type": "response.output_item.done", "output_index": 1, "item": CALL},
     {"type": "response.completed", "response": FINAL}],
], ids=["terminal-only", "done-without-added"])
def test_items_a_responses_stream_only_completes_still_reach_the_client(env: Env, events: List[Dict[str, Any]]) -> None:
    """A Responses-compatible server that streams only the terminal event (or items' done events without
    their added ones): the answer came out empty (or without its function call), billed all the same."""
    up, client = env
    up.enqueue(Reply.json(FINAL), responses_sse(events))
    plain, final, _ = _both(client, "via-openai_responses", input="Weather?", tools=TOOLS)
    assert _shape(final.output) == _shape(plain.output)
    assert final.output_text == "Checking." and final.output[1].call_id == "call_up"
    assert final.usage.total_tokens == 19


# --- text right after text is one message --------------------------------------------------------


def _two_part_message(stream: bool) -> Reply:
    msg = {**MESSAGE, "content": [{"type": "output_text", "text": "One.", "annotations": []},
                                  {"type": "output_text", "text": "Two.", "annotations": []}]}
    final = {**FINAL, "output": [msg]}
    if not stream:
        return Reply.json(final)
    events: List[Dict[str, Any]] = [
        {"type": "response.created", "response": SHELL},
        {"type": "response.output_item.added", "output_index": 0, "item": {**msg, "status": "in_progress", "content": []}}]
    for k, part in enumerate(msg["content"]):
        ids = {"item_id": "msg_up", "output_index": 0, "content_index": k}
        events += [{"type": "response.content_part.added", **ids, "part": {**part, "text": ""}},
                   {"type": "response.output_text.delta", **ids, "delta": part["text"]},
                   {"type": "response.output_text.done", **ids, "text": part["text"]},
                   {"type": "response.content_part.done", **ids, "part": part}]
    events += [{"type": "response.output_item.done", "output_index": 0, "item": msg},
               {"type": "response.completed", "response": final}]
    return responses_sse(events)


def _anthropic_text_blocks(stream: bool) -> Reply:
    """Two text blocks in a row (as Anthropic sends text around citations), then a call."""
    blocks: List[Dict[str, Any]] = [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."},
                                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                     "input": {"city": "Paris"}}]
    usage = {"input_tokens": 10, "output_tokens": 7}
    message = {"id": "msg_a", "type": "message", "role": "assistant", "model": "up", "stop_sequence": None,
               "usage": usage}
    if not stream:
        return Reply.json({**message, "content": blocks, "stop_reason": "tool_use"})
    events: List[Dict[str, Any]] = [{"type": "message_start",
                                     "message": {**message, "content": [], "stop_reason": None}}]
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            events += [{"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": b["text"]}}]
        else:
            events += [{"type": "content_block_start", "index": i, "content_block": {**b, "input": {}}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"], separators=(",", ":"))}}]
        events.append({"type": "content_block_stop", "index": i})
    events += [{"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": usage},
               {"type": "message_stop"}]
    return Reply.anthropic_sse(events)


@pytest.mark.parametrize("model,reply", [("via-openai_responses", _two_part_message),
                                         ("via-anthropic_messages", _anthropic_text_blocks)])
def test_consecutive_text_streams_as_one_message_with_its_parts(env: Env, model: str, reply: Any) -> None:
    """Plain, text parts in a row are one message with several content parts; streamed, each became a
    message item of its own, so `.stream()`'s final response differed from the non-streamed one."""
    up, client = env
    up.enqueue(reply(False), reply(True))
    plain, final, events = _both(client, model, input="Count", tools=TOOLS)
    assert _shape(plain.output)[0] == ("message", [("output_text", "One."), ("output_text", "Two.")], "completed")
    assert _shape(final.output) == _shape(plain.output)
    message = final.output[0]
    text_events = [(e.type, e.content_index) for e in events
                   if e.type.startswith(("response.content_part", "response.output_text"))]
    assert text_events == [("response.content_part.added", 0), ("response.output_text.delta", 0),
                           ("response.output_text.done", 0), ("response.content_part.done", 0),
                           ("response.content_part.added", 1), ("response.output_text.delta", 1),
                           ("response.output_text.done", 1), ("response.content_part.done", 1)]
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert done[0].id == message.id and [c.text for c in done[0].content] == ["One.", "Two."]
    assert [e.output_index for e in events if e.type == "response.output_item.added"] == list(range(len(plain.output)))


def test_a_terminal_item_with_an_id_of_another_type_is_decoded_not_a_crash() -> None:
    # `item.get("id") in set` raised TypeError (unhashable list): a 500 with a traceback, and no fallback.
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.protocols.openai_responses.stream_decode import ResponsesStreamDecoder
    from routeplane.protocols.sse import SSEEvent

    decoder = ResponsesStreamDecoder(RoutingTarget(provider="up", model="m", protocol="openai_responses",
                                                   base_url="http://127.0.0.1:9/v1"))
    done = {"type": "response.completed", "response": {
        "id": "resp_1", "status": "completed", "model": "m",
        "output": [{"type": "message", "id": ["x"], "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []}]}],
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}}
    try:
        decoder.feed(SSEEvent(json.dumps(done), "response.completed"))
    except Exception as exc:  # a codec error (a 502) is fine; a TypeError is not
        from routeplane.errors import UpstreamError

        assert isinstance(exc, UpstreamError), exc
