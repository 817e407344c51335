"""Bug hunt on the OpenAI Chat Completions wire: the official SDKs against the gateway under gunicorn, with
scripted upstreams (regressions for the fixes in routeplane/protocols/openai_chat/ and protocols/base.py)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import anthropic
import pytest
from openai import BadRequestError

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import FilePart, Message, Prompt, Role, TextPart
from routeplane.protocols.openai_chat.request import decode_request, encode_request
from routeplane.protocols.openai_chat.response import decode_response, encode_response
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

WIRES = ("openai_chat", "anthropic_messages", "openai_responses", "gemini")
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_FN = {"name": "get_weather", "description": "Current weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, WIRES, timeouts={"connect": 2, "read": 5})
    config["providers"]["local"] = {"protocol": "mock"}
    config["models"]["default"] = {"targets": [{"provider": "local", "model": "echo"}]}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def ant(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0, timeout=20)
    yield client
    client.close()


def assert_clean_log(gw: GatewayProcess) -> None:
    assert "Traceback" not in gw.logs(), gw.logs()[-3000:]


# --- (a) safety_identifier is the end-user id ------------------------------------------------


def test_safety_identifier_reaches_anthropic_metadata_user_id(oai, up):
    oai.chat.completions.create(model="via-anthropic_messages", messages=USER, safety_identifier="sid-chat")
    assert up.requests[-1].json["metadata"] == {"user_id": "sid-chat"}
    oai.responses.create(model="via-anthropic_messages", input="hi", safety_identifier="sid-resp")
    assert up.requests[-1].json["metadata"] == {"user_id": "sid-resp"}
    # `user` (deprecated but still sent) wins when a client sends both.
    oai.chat.completions.create(model="via-anthropic_messages", messages=USER, user="u-1", safety_identifier="s-1")
    assert up.requests[-1].json["metadata"] == {"user_id": "u-1"}


def test_safety_identifier_goes_to_an_openai_upstream_as_itself(oai, up):
    oai.chat.completions.create(model="via-openai_chat", messages=USER, safety_identifier="sid-chat")
    sent = up.requests[-1].json
    assert sent["safety_identifier"] == "sid-chat" and "user" not in sent, "no `user` invented"
    oai.chat.completions.create(model="via-openai_chat", messages=USER, user="u-1", safety_identifier="s-1")
    sent = up.requests[-1].json
    assert (sent["user"], sent["safety_identifier"]) == ("u-1", "s-1")
    oai.responses.create(model="via-openai_responses", input="hi", safety_identifier="sid-resp")
    sent = up.requests[-1].json
    assert sent["safety_identifier"] == "sid-resp" and "user" not in sent
    assert not any(k.startswith("_") for r in up.requests for k in r.json), "internal hints never go upstream"


# --- (b) clear validation messages ------------------------------------------------------------


def test_boolean_for_an_integer_field_says_integer(oai, up):
    with pytest.raises(BadRequestError) as info:
        oai.chat.completions.create(model="default", messages=USER, max_tokens=True)  # type: ignore[arg-type]
    assert "'max_tokens': expected an integer, got a boolean" in info.value.message
    with pytest.raises(BadRequestError) as info:
        oai.chat.completions.create(model="default", messages=USER, temperature=True)  # type: ignore[arg-type]
    assert "'temperature': expected a number, got a boolean" in info.value.message


def test_non_base64_data_url_names_the_field_it_came_in(oai, up):
    with pytest.raises(BadRequestError) as info:
        oai.chat.completions.create(model="default", messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf,%25PDF", "filename": "a.pdf"}}]}])
    assert "images" not in info.value.message
    assert "messages[0].content[0].file.file_data" in info.value.message
    assert info.value.body["param"] == "messages[0].content[0].file.file_data"
    with pytest.raises(BadRequestError) as info:
        oai.chat.completions.create(model="default", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}])
    assert info.value.body["param"] == "messages[0].content[0].image_url.url"
    assert info.value.code == "invalid_image_url"


def test_input_audio_without_data_is_a_400(oai, up):
    with pytest.raises(BadRequestError) as info:
        oai.chat.completions.create(model="default", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"format": "wav"}}]}])  # type: ignore[typeddict-item]
    assert info.value.body["param"] == "messages[0].content[0].input_audio.data"


# --- codec hints cannot be set by a client ----------------------------------------------------


def test_client_max_tokens_field_is_not_taken_as_the_codecs_hint(oai, up, gateway):
    # The codec kept "which max tokens field" under a plain key a client could send too: a list
    # crashed the request (500), a string named any upstream field to receive the limit.
    r = oai.chat.completions.create(model="via-openai_chat", messages=USER, max_completion_tokens=5,
                                    extra_body={"max_tokens_field": ["a"]})
    assert r.choices[0].message.content
    oai.chat.completions.create(model="via-openai_chat", messages=USER, max_completion_tokens=5,
                                extra_body={"max_tokens_field": "temperature"})
    sent = up.requests[-1].json
    assert sent["max_completion_tokens"] == 5 and "temperature" not in sent
    assert_clean_log(gateway)


# --- OpenAI-compatible upstreams' quirks ----------------------------------------------------------


def _anthropic_stream(ant: anthropic.Anthropic) -> Any:
    with ant.messages.stream(model="via-openai_chat", max_tokens=100, messages=USER) as s:
        for _ in s:
            pass
        return s.get_final_message()


def test_streamed_tool_arguments_sent_as_an_object_are_kept(ant, up):
    up.enqueue(Reply.sse([
        openai_chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                                           "function": {"name": "get_weather",
                                                                        "arguments": {"city": "Paris"}}}]}),
        openai_chunk({}, "tool_calls")]))
    [block] = _anthropic_stream(ant).content
    assert (block.type, block.id, block.input) == ("tool_use", "call_a", {"city": "Paris"})


def test_tool_call_fragments_with_a_null_index(ant, up):
    up.enqueue(Reply.sse([
        openai_chunk({"role": "assistant", "tool_calls": [{"index": None, "id": "call_a", "type": "function",
                                                           "function": {"name": "get_weather", "arguments": ""}}]}),
        openai_chunk({"tool_calls": [{"index": None, "function": {"arguments": "{\"city\": \"Oslo\"}"}}]}),
        openai_chunk({}, "tool_calls")]))
    msg = _anthropic_stream(ant)
    assert [(b.id, b.input) for b in msg.content] == [("call_a", {"city": "Oslo"})]
    assert msg.stop_reason == "tool_use"


def test_tool_calls_without_ids_get_unique_ones(ant, up):
    call = {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
    up.enqueue(Reply.json(openai_completion(None, tool_calls=[call], finish="tool_calls")),
               Reply.json(openai_completion(None, tool_calls=[call], finish="tool_calls")))
    ids = [ant.messages.create(model="via-openai_chat", max_tokens=100, messages=USER).content[0].id
           for _ in range(2)]
    frag = {"index": 0, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    for _ in range(2):
        up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "tool_calls": [frag]}), openai_chunk({}, "tool_calls")]))
        ids.append(_anthropic_stream(ant).content[0].id)
    assert all(i.startswith("call_") and len(i) > 8 for i in ids), ids
    assert len(set(ids)) == 4, "a later turn must not reuse an earlier call's id (Anthropic rejects duplicates)"


# --- legacy functions / function_call -------------------------------------------------------------


def test_legacy_functions_client_gets_function_call(oai, up):
    r = oai.chat.completions.create(model="default", messages=USER, functions=[WEATHER_FN])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "function_call"
    assert msg.tool_calls is None and msg.function_call is not None
    assert msg.function_call.name == "get_weather" and json.loads(msg.function_call.arguments) == {"city": "example"}
    chunks = list(oai.chat.completions.create(model="default", messages=USER, functions=[WEATHER_FN], stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any(d.tool_calls for d in deltas)
    calls = [d.function_call for d in deltas if d.function_call]
    assert [c.name for c in calls if c.name] == ["get_weather"], "the name comes once (the SDK concatenates)"
    assert json.loads("".join(c.arguments or "" for c in calls)) == {"city": "example"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["function_call"]
    # The follow-up turn in the legacy shape still works; nothing the client did not send is added upstream.
    follow = oai.chat.completions.create(model="via-openai_chat", functions=[WEATHER_FN], messages=USER + [
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "18C"}])
    assert follow.choices[0].message.content == "It is 18C."
    assert "parallel_tool_calls" not in up.requests[-1].json and "tool_choice" not in up.requests[-1].json
    # A client of today's `tools` keeps tool_calls.
    r = oai.chat.completions.create(model="default", messages=USER, tools=[{"type": "function", "function": WEATHER_FN}])
    assert r.choices[0].message.tool_calls and r.choices[0].message.function_call is None


# --- logprobs on the same wire ------------------------------------------------------------------------


LOGPROBS = {"content": [{"token": "Hel", "logprob": -0.1, "bytes": [72, 101, 108], "top_logprobs": []},
                        {"token": "lo", "logprob": -0.2, "bytes": [108, 111], "top_logprobs": []}],
            "refusal": None}


def test_same_wire_logprobs_reach_the_client(oai, up):
    body = openai_completion("Hello")
    body["choices"][0]["logprobs"] = LOGPROBS
    up.enqueue(Reply.json(body))
    r = oai.chat.completions.create(model="via-openai_chat", messages=USER, logprobs=True)
    assert up.requests[-1].json["logprobs"] is True
    assert [t.token for t in r.choices[0].logprobs.content] == ["Hel", "lo"]


def test_logprobs_are_dropped_when_a_hook_rewrote_the_text():
    target = RoutingTarget(provider="up", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")
    body = openai_completion("Hello")
    body["choices"][0]["logprobs"] = LOGPROBS
    gen = decode_response(body, target)
    prompt = decode_request({"model": "m", "messages": USER, "logprobs": True})
    assert encode_response(gen, prompt)["choices"][0]["logprobs"] == LOGPROBS
    import dataclasses

    redacted = dataclasses.replace(gen, parts=(TextPart("[redacted]"),))
    assert encode_response(redacted, prompt)["choices"][0]["logprobs"] is None
    # A refusal's tokens are scored too (`logprobs.refusal`): a rewritten refusal drops them as well.
    body = openai_completion(None)
    body["choices"][0]["message"]["refusal"] = "I cannot use sk-proj-secret"
    body["choices"][0]["logprobs"] = {"content": None, "refusal": [{"token": "sk-proj-secret", "logprob": -0.1}]}
    refused = decode_response(body, target)
    assert encode_response(refused, prompt)["choices"][0]["logprobs"] == body["choices"][0]["logprobs"]
    rewritten = dataclasses.replace(refused, parts=(TextPart("I cannot use [redacted]", refusal=True),))
    assert encode_response(rewritten, prompt)["choices"][0]["logprobs"] is None


# --- audio from other wires -------------------------------------------------------------------------


@pytest.mark.parametrize("media_type, fmt", [("audio/mpeg", "mp3"), ("audio/mp3", "mp3"), ("audio/wav", "wav"),
                                             ("audio/x-wav", "wav")])
def test_audio_media_type_becomes_an_input_audio_format(media_type, fmt):
    target = RoutingTarget(provider="up", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")
    prompt = Prompt(model="m", messages=(Message(Role.USER, (TextPart("listen"),
                                                             FilePart(data="AAAA", media_type=media_type))),))
    parts: List[Dict[str, Any]] = encode_request(prompt, target, False)["messages"][0]["content"]
    assert parts[1] == {"type": "input_audio", "input_audio": {"data": "AAAA", "format": fmt}}


# --- completion ids -------------------------------------------------------------------------------------


def test_completion_ids_are_unique_when_the_upstream_sends_none(oai, up):
    body = openai_completion("Hello")
    del body["id"]
    up.enqueue(Reply.json(body), Reply.json(body))
    ids = [oai.chat.completions.create(model="via-openai_chat", messages=USER).id for _ in range(2)]
    for _ in range(2):
        chunks = [openai_chunk({"role": "assistant", "content": "Hi"}), openai_chunk({}, "stop")]
        for c in chunks:
            del c["id"]
        up.enqueue(Reply.sse(chunks))
        stream_ids = {c.id for c in oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True)}
        assert len(stream_ids) == 1, "every chunk of one stream carries the same id"
        ids.append(stream_ids.pop())
    assert all(i.startswith("chatcmpl-") for i in ids) and len(set(ids)) == 4, ids


def test_legacy_history_calling_one_function_twice_has_distinct_ids(oai, up):
    turn = [{"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_weather", "content": "18C"}]
    oai.chat.completions.create(model="via-anthropic_messages", functions=[WEATHER_FN],
                                messages=USER + turn + [{"role": "user", "content": "And now?"}] + turn)
    msgs = up.requests[-1].json["messages"]
    uses = [b["id"] for m in msgs if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in msgs if m["role"] == "user" for b in m["content"]
               if isinstance(b, dict) and b["type"] == "tool_result"]
    assert len(set(uses)) == 2, "Anthropic rejects a tool_use id used twice"
    assert results == uses, "each result answers its own turn's call"
