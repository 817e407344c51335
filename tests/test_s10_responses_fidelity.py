"""Session 10: what a Responses client sends or gets back that the gateway lost, through the official openai
SDK: a message's `phase`, an `allowed_tools` tool choice, a failed stream's partial output, the request
settings a response echoes, and a reasoning item's several summary parts.

The SDK talks to the gateway in-process (httpx2's WSGI transport); the gateway talks to a real local fake
upstream over HTTP, so both codec directions and the web layer are exercised.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

import openai
import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols.openai_responses.reasoning import (
    pack_reasoning_signature,
    split_summary,
    unpack_reasoning_signature,
)
from routeplane.protocols.openai_responses.response import decode_response
from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.upstream import FakeUpstream, Reply, openai_chunk
from tests.support.wires import responses_sse, via_wires_config

WEATHER: Dict[str, Any] = {"type": "function", "name": "get_weather", "description": "Weather in a city",
                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TIME: Dict[str, Any] = {"type": "function", "name": "get_time", "description": "Time in a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
USAGE = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
         "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19}


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(via_wires_config) as pair:
        yield pair


def _final(output: List[Dict[str, Any]], **kw: Any) -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
            "output": output, "usage": USAGE, **kw}


def _events(final: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The stream OpenAI sends for `final`: each item added, its parts streamed, done; then completed."""
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    events: List[Dict[str, Any]] = [{"type": "response.created", "response": shell},
                                    {"type": "response.in_progress", "response": shell}]
    for n, item in enumerate(final["output"]):
        if item["type"] == "message":
            events.append({"type": "response.output_item.added", "output_index": n,
                           "item": {**item, "status": "in_progress", "content": []}})
            for k, part in enumerate(item["content"]):
                ids = {"item_id": item["id"], "output_index": n, "content_index": k}
                events += [{"type": "response.content_part.added", **ids, "part": {**part, "text": ""}},
                           {"type": "response.output_text.delta", **ids, "delta": part["text"]},
                           {"type": "response.output_text.done", **ids, "text": part["text"]},
                           {"type": "response.content_part.done", **ids, "part": part}]
        elif item["type"] == "reasoning":
            events.append({"type": "response.output_item.added", "output_index": n,
                           "item": {**item, "summary": [], "encrypted_content": None}})
            for k, part in enumerate(item["summary"]):
                ids = {"item_id": item["id"], "output_index": n, "summary_index": k}
                events += [{"type": "response.reasoning_summary_part.added", **ids, "part": {**part, "text": ""}},
                           {"type": "response.reasoning_summary_text.delta", **ids, "delta": part["text"]},
                           {"type": "response.reasoning_summary_text.done", **ids, "text": part["text"]},
                           {"type": "response.reasoning_summary_part.done", **ids, "part": part}]
        else:
            ids = {"item_id": item["id"], "output_index": n}
            events += [{"type": "response.output_item.added", "output_index": n,
                        "item": {**item, "arguments": "", "status": "in_progress"}},
                       {"type": "response.function_call_arguments.delta", **ids, "delta": item["arguments"]},
                       {"type": "response.function_call_arguments.done", **ids, "arguments": item["arguments"]}]
        events.append({"type": "response.output_item.done", "output_index": n, "item": item})
    return events + [{"type": "response.completed", "response": final}]


def _both(up: FakeUpstream, client: openai.OpenAI, final: Dict[str, Any], **kw: Any) -> Tuple[Any, Any, List[Any]]:
    """The plain answer and the streamed one (the SDK's accumulated final response, and its events)."""
    up.enqueue(Reply.json(final), responses_sse(_events(final)))
    plain = client.responses.create(model="via-openai_responses", **kw)
    with client.responses.stream(model="via-openai_responses", **kw) as stream:
        events = list(stream)
        streamed = stream.get_final_response()
    return plain, streamed, events


def _message(item_id: str, text: str, **fields: Any) -> Dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}], **fields}


# --- 1. phase and allowed_tools reach a Responses upstream as the client sent them ---------------------


def test_an_assistant_messages_phase_goes_back_to_a_responses_upstream(env: Env) -> None:
    """`phase` (commentary / final_answer) on assistant history was dropped: OpenAI asks clients to resend it
    ("dropping it can degrade performance")."""
    up, client = env
    up.enqueue(Reply.json(_final([_message("msg_up", "ok")])))
    client.responses.create(model="via-openai_responses", input=[
        {"role": "user", "content": "Plan, then answer."},
        {"type": "message", "role": "assistant", "phase": "commentary",
         "content": [{"type": "output_text", "text": "Looking it up.", "annotations": []}]},
        {"role": "assistant", "phase": "final_answer", "content": "It is 18C."},
        {"role": "user", "content": "Thanks"}])
    sent = up.requests[-1].json["input"]
    assistant = [i for i in sent if i.get("role") == "assistant"]
    assert [(i.get("phase"), _text(i)) for i in assistant] == [("commentary", "Looking it up."),
                                                               ("final_answer", "It is 18C.")]


def _text(item: Dict[str, Any]) -> str:
    content = item["content"]
    return content if isinstance(content, str) else "".join(c["text"] for c in content)


def test_a_responses_upstreams_phase_reaches_the_client_plain_and_streamed(env: Env) -> None:
    """The commentary message and the final answer came back as one message without `phase`."""
    up, client = env
    final = _final([_message("msg_c", "Checking.", phase="commentary"),
                    _message("msg_f", "It is 18C.", phase="final_answer")])
    plain, streamed, events = _both(up, client, final, input="Weather?")
    for response in (plain, streamed):
        assert [(o.type, o.phase, o.content[0].text) for o in response.output] == [
            ("message", "commentary", "Checking."), ("message", "final_answer", "It is 18C.")]
    added = [e.item.phase for e in events if e.type == "response.output_item.added"]
    assert added == ["commentary", "final_answer"]


def test_allowed_tools_reach_a_responses_upstream_verbatim(env: Env) -> None:
    """The gateway kept only the allowed tools and sent `tool_choice: "auto"`: the tools list changed from
    turn to turn, which defeats the prompt caching `allowed_tools` exists for."""
    up, client = env
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}
    up.enqueue(Reply.json(_final([_message("msg_up", "ok")])))
    client.responses.create(model="via-openai_responses", input="Time?", tools=[WEATHER, TIME],
                            tool_choice=choice)  # type: ignore[arg-type]
    sent = up.requests[-1].json
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert sent["tool_choice"] == choice


def test_allowed_tools_to_another_wire_still_filter_the_tools(env: Env) -> None:
    up, client = env
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]}
    up.enqueue(Reply.json({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}))
    client.responses.create(model="via-openai_chat", input="Time?", tools=[WEATHER, TIME],
                            tool_choice=choice)  # type: ignore[arg-type]
    sent = up.requests[-1].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_time"] and sent["tool_choice"] == "auto"


# --- 2. a failed stream's response holds what was streamed ------------------------------------------


def _chat_cut_stream() -> Reply:
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "Hel"}),
                      {"error": {"message": "upstream overloaded", "type": "server_error"}}], done=None)


def _responses_cut_stream() -> Reply:
    events = _events(_final([_message("msg_up", "Hel")]))[:6]  # added, part added, one delta
    return responses_sse(events + [{"type": "error", "code": "server_error", "message": "upstream overloaded",
                                    "param": None}])


@pytest.mark.parametrize("model,reply", [("via-openai_chat", _chat_cut_stream),
                                         ("via-openai_responses", _responses_cut_stream)])
def test_a_failed_stream_closes_and_reports_the_cut_message(env: Env, model: str, reply: Any) -> None:
    """`response.failed` had `output: []` and the message already streamed never got its done events."""
    up, client = env
    up.enqueue(reply())
    events = list(client.responses.create(model=model, input="Hi", stream=True))
    types = [e.type for e in events]
    assert types[-2:] == ["error", "response.failed"]
    assert types.index("response.output_item.done") < types.index("error")
    assert "response.output_text.done" in types and "response.content_part.done" in types
    done = next(e.item for e in events if e.type == "response.output_item.done")
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert [(o.id, o.status, o.content[0].text) for o in failed.output] == [(done.id, "incomplete", "Hel")]
    assert done.status == "incomplete"


def test_a_stream_failing_after_a_finished_call_keeps_it_completed(env: Env) -> None:
    up, client = env
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
            "arguments": '{"city":"Paris"}', "status": "completed"}
    events = _events(_final([call, _message("msg_up", "Hel")]))[:-4]  # the call done, the message cut
    up.enqueue(responses_sse(events + [{"type": "error", "code": "server_error", "message": "gone"}]))
    out = list(client.responses.create(model="via-openai_responses", input="Hi", tools=[WEATHER],  # type: ignore[list-item]
                                       stream=True))
    failed = out[-1].response
    assert [(o.type, o.status) for o in failed.output] == [("function_call", "completed"), ("message", "incomplete")]


# --- 3. the response echoes the request's settings ---------------------------------------------------


SCHEMA = {"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"], "additionalProperties": False}
SETTINGS: Dict[str, Any] = dict(
    text={"format": {"type": "json_schema", "name": "temp", "schema": SCHEMA, "strict": True}, "verbosity": "low"},
    reasoning={"effort": "low", "summary": "detailed"}, store=True, truncation="auto", service_tier="flex",
    tools=[WEATHER, {"type": "web_search"}, TIME],
    tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]},
)


def _assert_echoed(response: Any, service_tier: str) -> None:
    assert response.text.format.type == "json_schema" and response.text.format.name == "temp"
    assert response.text.format.schema_ == SCHEMA and response.text.verbosity == "low"
    assert (response.reasoning.effort, response.reasoning.summary) == ("low", "detailed")
    assert (response.store, response.truncation, response.service_tier) == (True, "auto", service_tier)
    assert [t.type for t in response.tools] == ["function", "web_search", "function"]
    assert response.tool_choice.type == "allowed_tools" and response.tool_choice.mode == "auto"


def test_the_response_echoes_the_requests_settings_plain_and_streamed(env: Env) -> None:
    """`text`, `reasoning`, `store`, `truncation`, `service_tier` were missing; `tools` left out hosted tools
    (and those allowed_tools filtered out) and `tool_choice` said "auto"."""
    up, client = env
    final = _final([_message("msg_up", '{"t": 18}')], service_tier="default")
    plain, streamed, events = _both(up, client, final, input="Temp?", **SETTINGS)
    _assert_echoed(plain, "default")  # the tier the upstream served it on
    _assert_echoed(streamed, "default")
    lifecycle = {e.type: e.response for e in events if e.type in ("response.created", "response.in_progress")}
    assert set(lifecycle) == {"response.created", "response.in_progress"}
    for response in lifecycle.values():
        _assert_echoed(response, "flex")  # not served yet: the tier asked for


def test_the_settings_are_echoed_for_another_wires_upstream_too(env: Env) -> None:
    up, client = env
    up.enqueue(Reply.json({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": '{"t": 18}'}, "finish_reason": "stop"}]}))
    settings = {k: v for k, v in SETTINGS.items() if k not in ("tools", "tool_choice", "service_tier")}
    response = client.responses.create(model="via-openai_chat", input="Temp?", **settings)
    assert response.text.format.name == "temp" and response.text.verbosity == "low"
    assert (response.reasoning.effort, response.reasoning.summary) == ("low", "detailed")
    assert (response.store, response.truncation) == (True, "auto")


def test_an_unset_store_is_echoed_false(env: Env) -> None:
    """The gateway keeps nothing (and asks a Responses upstream for store:false): not the API's default true."""
    up, client = env
    up.enqueue(Reply.json(_final([_message("msg_up", "ok")])))
    response = client.responses.create(model="via-openai_responses", input="Hi")
    assert response.store is False and up.requests[-1].json["store"] is False


# --- 4. several reasoning summary parts stay apart on the same wire ----------------------------------


REASONING = {"type": "reasoning", "id": "rs_up", "encrypted_content": "ENC",
             "summary": [{"type": "summary_text", "text": "**Plan**\n\nLook it up."},
                         {"type": "summary_text", "text": "**Answer**\n\nIt is mild."}]}


def test_a_responses_upstreams_summary_parts_reach_the_client_apart(env: Env) -> None:
    """The two summary parts came back joined as one ("...\\n\\n..."), streamed and not."""
    up, client = env
    final = _final([REASONING, _message("msg_up", "Mild.")])
    plain, streamed, events = _both(up, client, final, input="Weather?", reasoning={"summary": "auto"})
    parts = [s["text"] for s in REASONING["summary"]]
    for response in (plain, streamed):
        assert [s.text for s in response.output[0].summary] == parts
    assert [e.summary_index for e in events if e.type == "response.reasoning_summary_part.done"] == [0, 1]

    # Sent back in the next turn's history, the item has its two parts again.
    up.enqueue(Reply.json(_final([_message("msg_up2", "ok")])))
    client.responses.create(model="via-openai_responses", input=[
        {"role": "user", "content": "Weather?"}, plain.output[0], plain.output[1], {"role": "user", "content": "Sure?"}])
    sent = [i for i in up.requests[-1].json["input"] if i.get("type") == "reasoning"]
    assert [s["text"] for s in sent[0]["summary"]] == parts and sent[0]["encrypted_content"] == "ENC"


def test_summary_parts_are_still_one_text_for_another_wire() -> None:
    """The canonical reasoning text (what an Anthropic or Chat client reads) is unchanged: the parts joined."""
    gen = decode_response(_final([REASONING]), RoutingTarget(provider="up", protocol="openai_responses", model="m"))
    assert gen.parts[0].text == "**Plan**\n\nLook it up.\n\n**Answer**\n\nIt is mild."


def test_a_summary_a_hook_rewrote_goes_back_as_one_part() -> None:
    """The parts' lengths ride in the signature; text they no longer fit (a redaction) is one part, never cut
    at the wrong places."""
    sig = pack_reasoning_signature("rs_1", "ENC", ["ab", "cde"])
    assert unpack_reasoning_signature(sig) == ("rs_1", "ENC")
    assert split_summary("ab\n\ncde", sig) == ["ab", "cde"]
    assert split_summary("[REDACTED]\n\ncde", sig) == ["[REDACTED]\n\ncde"]
    assert split_summary("abXXcde", sig) == ["abXXcde"]
    assert pack_reasoning_signature("rs_1", "ENC", ["one"]) == pack_reasoning_signature("rs_1", "ENC")
