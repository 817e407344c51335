"""Bug hunt on the OpenAI Responses wire: the official openai SDK against the gateway under gunicorn,
with scripted upstreams of every wire (regressions for the fixes in routeplane/protocols/openai_responses/)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest
from openai import APIStatusError, BadRequestError, OpenAI
from openai.types.responses import ResponseError

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk
from tests.support.wires import responses_sse, via_wires_config

pytestmark = pytest.mark.e2e

WIRES = ("openai_chat", "anthropic_messages", "openai_responses", "gemini")
PING = [{"type": "function", "name": "ping", "description": "No arguments",
         "parameters": {"type": "object", "properties": {}}}]
SHELL = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "in_progress", "model": "up",
         "output": []}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, WIRES, timeouts={"connect": 2, "read": 5})
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


# --- a streamed function call without arguments ---------------------------------------


def _anthropic_empty_call() -> Reply:
    usage = {"input_tokens": 5, "output_tokens": 3}
    return Reply.anthropic_sse([
        {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant", "model": "m",
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": usage}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "ping", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": usage},
        {"type": "message_stop"},
    ])


def _chat_empty_call() -> Reply:
    return Reply.sse([
        openai_chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "ping", "arguments": ""}}]}),
        openai_chunk({}, "tool_calls"),
        openai_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}),
    ])


@pytest.mark.parametrize("wire,reply", [("anthropic_messages", _anthropic_empty_call),
                                        ("openai_chat", _chat_empty_call)])
def test_streamed_call_without_arguments_carries_an_empty_json_object(oai: OpenAI, up: FakeUpstream, wire: str,
                                                                       reply: Any) -> None:
    """Streamed, a no-argument call came out as `arguments: ""` (json.loads fails); unstreamed it is "{}"."""
    up.enqueue(reply())
    with oai.responses.stream(model=f"via-{wire}", input="ping", tools=PING) as stream:
        events = list(stream)
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "ping"
    assert json.loads(call.arguments) == {}
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(deltas) == {} and done[0].arguments == call.arguments
    item_done = [e for e in events if e.type == "response.output_item.done"][0]
    assert item_done.item.arguments == call.arguments


# --- response.failed is an object the SDK's types accept -------------------------------


def _failed_event(oai: OpenAI, model: str) -> Any:
    with oai.responses.stream(model=model, input="hi") as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    return events


def test_a_stream_cut_ends_in_response_failed_with_a_known_error_code(oai: OpenAI, up: FakeUpstream) -> None:
    """error.code of a failed response is a closed set in the SDK (ResponseError); 'upstream_error' is not in it."""
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "part"})], done=None))
    events = _failed_event(oai, "via-openai_chat")
    error = events[-1].response.error
    ResponseError.model_validate(error.model_dump())  # strict: a code outside the enum raises
    assert error.code == "server_error" and error.type == "upstream_error"
    assert "[DONE]" in error.message and events[-2].message == error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_an_upstream_rate_limit_mid_stream_fails_as_rate_limit_exceeded(oai: OpenAI, up: FakeUpstream) -> None:
    up.enqueue(responses_sse([{"type": "response.created", "response": SHELL},
                              {"type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                               "content_index": 0, "delta": "Hel"},  # after the first content: no HTTP 429 now
                              {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None}]))
    events = _failed_event(oai, "via-openai_responses")
    error = events[-1].response.error
    ResponseError.model_validate(error.model_dump())
    assert error.code == "rate_limit_exceeded"


# --- request validation ------------------------------------------------------------------


@pytest.mark.parametrize("part,param", [
    ({"type": "input_file"}, "input[0].content[0]"),
    ({"type": "input_file", "file_id": 5}, "input[0].content[0].file_id"),
    ({"type": "input_file", "file_data": "data:application/pdf,not-base64"}, "input[0].content[0].file_data"),
])
def test_input_file_without_a_usable_source_is_a_400(oai: OpenAI, up: FakeUpstream, part: Dict[str, Any],
                                                     param: str) -> None:
    """Was accepted and sent on as `{"type": "input_file"}` / `{"type": "file", "file": {}}`, or (Gemini)
    silently dropped with the whole turn."""
    with pytest.raises(BadRequestError) as exc:
        oai.responses.create(model="via-gemini", input=[{"role": "user", "content": [part]}])
    assert exc.value.body["param"] == param
    assert "image" not in exc.value.message
    assert up.requests == []


def test_background_mode_is_a_clear_400(oai: OpenAI, up: FakeUpstream) -> None:
    """A background response is retrieved later by id, which a stateless gateway cannot do: say so, rather than
    answer synchronously (or, to a Responses upstream, relay a 'queued' response as an empty completed one)."""
    with pytest.raises(BadRequestError) as exc:
        oai.responses.create(model="via-openai_responses", input="hi", background=True)
    assert exc.value.body["param"] == "background" and "stateless" in exc.value.message
    assert up.requests == []
    oai.responses.create(model="via-openai_responses", input="hi", background=False)  # false is fine


def test_a_queued_upstream_response_is_not_an_empty_completed_one(oai: OpenAI, up: FakeUpstream) -> None:
    up.enqueue(Reply.json({**SHELL, "status": "queued"}))
    with pytest.raises(APIStatusError) as exc:
        oai.responses.create(model="via-openai_responses", input="hi")
    assert exc.value.status_code == 502 and "queued" in exc.value.message


def test_include_must_be_an_array_of_strings(oai: OpenAI, up: FakeUpstream) -> None:
    """A bare string was forwarded and split into characters (list("...")) on the way to a Responses upstream."""
    for bad in ("reasoning.encrypted_content", [1]):
        with pytest.raises(BadRequestError) as exc:
            oai.responses.create(model="via-openai_responses", input="hi", include=bad)  # type: ignore[arg-type]
        assert exc.value.body["param"] == "include"
    assert up.requests == []
    oai.responses.create(model="via-openai_responses", input="hi", include=["reasoning.encrypted_content"])
    assert up.requests[-1].json["include"] == ["reasoning.encrypted_content"]


def test_forcing_a_tool_that_is_not_offered_is_a_400(oai: OpenAI, up: FakeUpstream) -> None:
    with pytest.raises(BadRequestError) as exc:
        oai.responses.create(model="via-anthropic_messages", input="hi", tools=PING,
                             tool_choice={"type": "function", "name": "get_weather"})
    assert exc.value.body["param"] == "tool_choice" and "get_weather" in exc.value.message
    with pytest.raises(BadRequestError):
        oai.responses.create(model="via-anthropic_messages", input="hi",
                             tool_choice={"type": "function", "name": "ping"})
    assert up.requests == []
    r = oai.responses.create(model="via-anthropic_messages", input="hi", tools=PING,
                             tool_choice={"type": "function", "name": "ping"})
    assert r.status == "completed"
    assert up.requests[-1].json["tool_choice"] == {"type": "tool", "name": "ping"}


def test_a_client_field_named_like_the_codecs_verbosity_hint_is_forwarded_as_it_is() -> None:
    """The codec kept `text.verbosity` under the extras key `text_verbosity`, which a client's own unknown
    top-level field of that name also landed in: it then became the upstream's `text.verbosity`."""
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.protocols import openai_responses

    target = RoutingTarget("r", "m", "openai_responses", base_url="http://up", api_key="k")
    prompt = openai_responses.CLIENT.decode_request({"model": "m", "input": "hi", "text_verbosity": "junk"})
    sent = openai_responses.PROVIDER.encode_request(prompt, target, stream=False)
    assert sent["text_verbosity"] == "junk" and "verbosity" not in sent.get("text", {})
    prompt = openai_responses.CLIENT.decode_request({"model": "m", "input": "hi", "text": {"verbosity": "low"}})
    assert openai_responses.PROVIDER.encode_request(prompt, target, stream=False)["text"]["verbosity"] == "low"


@pytest.mark.parametrize("body, sent", [
    ({"user": "u1", "safety_identifier": "u1"}, {"user": "u1", "safety_identifier": "u1"}),
    ({"safety_identifier": "s1"}, {"safety_identifier": "s1"}),
    ({"user": "u1"}, {"user": "u1"}),
])
def test_user_and_safety_identifier_reach_a_responses_upstream_as_sent(body: Dict[str, Any],
                                                                      sent: Dict[str, Any]) -> None:
    """A `user` equal to the safety_identifier was dropped (the codec guessed from the values which
    one the client sent); nothing is invented, nothing dropped, and no bookkeeping key leaks."""
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.protocols import openai_responses

    target = RoutingTarget("r", "m", "openai_responses", base_url="http://up", api_key="k")
    prompt = openai_responses.CLIENT.decode_request({"model": "m", "input": "hi", **body})
    out = openai_responses.PROVIDER.encode_request(prompt, target, stream=False)
    assert {k: out[k] for k in ("user", "safety_identifier") if k in out} == sent
    assert not [k for k in out if k.startswith("_")]
