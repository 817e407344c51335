"""Chat Completions hunt (session 11), with the official openai SDK as the client of a real gateway:
fields the gateway only relays are still type-checked (a wrong type was a 200 from an upstream of another
wire, which never saw the field), OpenAI's explicit prompt-cache breakpoints on content parts reach a
Chat upstream (they were dropped, and with `prompt_cache_options.mode: "explicit"` nothing was cached),
and a Responses client's service tier and prompt-cache settings reach OpenAI's own Chat API."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import openai
import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols.openai_chat import request as chat_request
from routeplane.protocols.openai_responses import request as responses_request
from tests.support.gateway import GatewayProcess
from tests.support.wires import ALL_WIRES, via_wires_config

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]
BREAK = {"mode": "explicit", "ttl": "12h"}


@pytest.fixture(scope="module")
def gateway(fake: Any) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5}),
                        workers=1, threads=8).start()
    yield gw
    assert "Traceback" not in gw.logs(), gw.logs()[-3000:]
    gw.stop()


# --- wrong JSON types of relayed fields: a 400 naming the field, on every route ----------------------

RELAYED_BAD = [
    ("logit_bias", [1]), ("top_logprobs", "2"), ("metadata", "x"), ("store", "yes"), ("service_tier", 1),
    ("prompt_cache_key", 1), ("prompt_cache_retention", 24), ("prompt_cache_options", "explicit"),
    ("prediction", "x"), ("web_search_options", "x"), ("verbosity", 1), ("moderation", "block"),
]


@pytest.mark.parametrize("field,value", RELAYED_BAD, ids=[f for f, _ in RELAYED_BAD])
def test_a_relayed_field_of_the_wrong_type_is_a_400_naming_it(oai: openai.OpenAI, up: Any, field: str,
                                                               value: Any) -> None:
    """Was a 200 via Anthropic: the field, dropped for another wire, was never checked."""
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="via-anthropic_messages", messages=HI, extra_body={field: value})  # type: ignore[arg-type]
    assert info.value.param == field and info.value.code == "invalid_type"
    assert not up.requests, "nothing goes upstream"


def test_include_obfuscation_of_the_wrong_type_is_a_400(oai: openai.OpenAI, up: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="via-gemini", messages=HI, stream=True,  # type: ignore[call-overload]
                                    stream_options={"include_obfuscation": "no"})
    assert info.value.param == "stream_options.include_obfuscation"


MESSAGE_BAD = [
    ({"role": "assistant", "content": "a", "refusal": 5}, "messages[1].refusal"),
    ({"role": "assistant", "content": "a", "function_call": "f"}, "messages[1].function_call"),
    ({"role": "user", "content": [{"type": "file", "file": {"file_id": 5}}]}, "messages[1].content[0].file.file_id"),
    ({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1", "filename": 5}}]},
     "messages[1].content[0].file.filename"),
    ({"role": "user", "content": [{"type": "file", "file": {"file_data": 5}}]}, "messages[1].content[0].file.file_data"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.example/i.png", "detail": 5}}]},
     "messages[1].content[0].image_url.detail"),
    ({"role": "user", "content": [{"type": "text", "text": "t", "prompt_cache_breakpoint": "explicit"}]},
     "messages[1].content[0].prompt_cache_breakpoint"),
    ({"role": "user", "content": [{"type": "text", "text": "t", "cache_control": "ephemeral"}]},
     "messages[1].content[0].cache_control"),
]


@pytest.mark.parametrize("message,param", MESSAGE_BAD, ids=[p for _, p in MESSAGE_BAD])
def test_a_message_field_of_the_wrong_type_is_a_400_naming_it(oai: openai.OpenAI, up: Any, message: Dict[str, Any],
                                                               param: str) -> None:
    """Were a 200: ignored (refusal, function_call), or sent on as a number (file_id, filename, detail)."""
    for wire in ("openai_chat", "gemini"):
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(model=f"via-{wire}", messages=HI + [message])  # type: ignore[list-item]
        assert info.value.param == param
    assert not up.requests


def test_what_the_sdk_dumps_of_its_own_messages_is_still_accepted(oai: openai.OpenAI, up: Any) -> None:
    """The type checks above take every shape the SDK's own message gives back (nulls, empty lists)."""
    for wire in ALL_WIRES:
        answer = oai.chat.completions.create(model=f"via-{wire}", messages=HI).choices[0].message
        for turn in (answer, answer.model_dump(), answer.model_dump(exclude_unset=True)):
            again = oai.chat.completions.create(model=f"via-{wire}", messages=HI + [turn, *HI])  # type: ignore[list-item]
            assert again.choices[0].message.content == f"Hello from {wire}."


# --- prompt_cache_breakpoint ---------------------------------------------------------------------------


def _marked_history() -> List[Dict[str, Any]]:
    mark = {"prompt_cache_breakpoint": BREAK}
    return [
        {"role": "system", "content": [{"type": "text", "text": "Long rules.", **mark}]},
        {"role": "user", "content": [{"type": "text", "text": "A long document.", **mark}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny", **mark}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is sunny.", **mark}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.example/i.png"}, **mark},
                                     {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}, **mark},
                                     {"type": "file", "file": {"file_id": "file-1"}, **mark},
                                     {"type": "text", "text": "And these?"}]},
    ]


def test_prompt_cache_breakpoints_reach_a_chat_upstream_where_they_stood(oai: openai.OpenAI, up: Any) -> None:
    """Were dropped: each part became text joined into a string, so OpenAI cached nothing the client marked."""
    oai.chat.completions.create(model="via-openai_chat", messages=_marked_history(),  # type: ignore[arg-type]
                                extra_body={"prompt_cache_options": {"mode": "explicit"}})
    sent = up.requests[-1].json
    assert sent["prompt_cache_options"] == {"mode": "explicit"}
    assert sent["messages"] == _marked_history()


def test_a_late_system_message_keeps_its_breakpoint(oai: openai.OpenAI, up: Any) -> None:
    late = {"role": "developer", "content": [{"type": "text", "text": "Be brief.", "prompt_cache_breakpoint": BREAK}]}
    oai.chat.completions.create(model="via-openai_chat", messages=HI + [late, *HI])  # type: ignore[list-item]
    # An OpenAI-compatible upstream gets the system prompt first (openai_chat/request.py _system_layout),
    # the breakpoint on its part still.
    assert up.requests[-1].json["messages"][0] == {"role": "system", "content": late["content"]}


@pytest.mark.parametrize("wire", [w for w in ALL_WIRES if w != "openai_chat"])
def test_prompt_cache_breakpoints_never_reach_another_wire(oai: openai.OpenAI, up: Any, wire: str) -> None:
    history = _marked_history()
    answer = oai.chat.completions.create(model=f"via-{wire}", messages=history[:2])  # type: ignore[arg-type]
    assert answer.choices[0].message.content == f"Hello from {wire}."
    assert "prompt_cache_breakpoint" not in json.dumps(up.requests[-1].json)


# --- a Responses client's billing settings on OpenAI's Chat API -------------------------------------------


def _target(base_url: str) -> RoutingTarget:
    return RoutingTarget(provider="up", model="gpt-5", protocol="openai_chat", base_url=base_url)


SHARED = {"service_tier": "flex", "prompt_cache_key": "tenant-7", "prompt_cache_retention": "24h",
          "prompt_cache_options": {"mode": "explicit"}}


def test_a_responses_clients_tier_and_cache_settings_reach_openai_chat() -> None:
    """Were dropped: a flex request (half price) was billed at the default tier, its cache key lost."""
    prompt = responses_request.decode_request({"model": "m", "input": "hi", **SHARED})
    body = chat_request.encode_request(prompt, _target("https://api.openai.com/v1"), stream=False)
    assert {k: body.get(k) for k in SHARED} == SHARED


def test_an_openai_compatible_chat_server_does_not_get_them() -> None:
    # As for verbosity: such servers refuse fields they do not know.
    prompt = responses_request.decode_request({"model": "m", "input": "hi", **SHARED})
    body = chat_request.encode_request(prompt, _target("https://api.groq.com/openai/v1"), stream=False)
    assert not set(SHARED) & set(body)


# --- a legacy client's function_call -------------------------------------------------------------------


def test_a_bad_function_call_is_a_400_naming_function_call(oai: openai.OpenAI, up: Any) -> None:
    """Named 'tool_choice', a field the legacy client never sent."""
    functions = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    for bad in ("sometimes", 5):
        with pytest.raises(openai.BadRequestError) as info:
            oai.chat.completions.create(model="via-openai_chat", messages=HI, functions=functions,  # type: ignore[arg-type]
                                        function_call=bad)  # type: ignore[arg-type]
        assert info.value.param == "function_call" and "'function_call'" in info.value.message
    assert not up.requests


def test_function_call_is_read_when_tool_choice_is_null(oai: openai.OpenAI, up: Any) -> None:
    functions = [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    oai.chat.completions.create(model="via-anthropic_messages", messages=HI, functions=functions,  # type: ignore[arg-type]
                                function_call={"name": "get_weather"}, extra_body={"tool_choice": None})
    assert up.requests[-1].json["tool_choice"] == {"type": "tool", "name": "get_weather"}


# --- Anthropic-style cache_control on Chat parts (OpenRouter's and LiteLLM's convention) -------------------

EPHEMERAL = {"type": "ephemeral"}


def _cached_history() -> List[Dict[str, Any]]:
    return [{"role": "system", "content": [{"type": "text", "text": "Long rules.", "cache_control": EPHEMERAL}]},
            {"role": "user", "content": [{"type": "text", "text": "A long document.", "cache_control": EPHEMERAL},
                                         {"type": "text", "text": "Summarise it."}]}]


def test_cache_control_on_chat_parts_reaches_anthropic(oai: openai.OpenAI, up: Any) -> None:
    """Was dropped: the client marked what to cache, and Anthropic, which caches only marked prefixes,
    billed the whole prompt at the full input price on every turn."""
    oai.chat.completions.create(model="via-anthropic_messages", messages=_cached_history())  # type: ignore[arg-type]
    sent = up.requests[-1].json
    assert sent["system"] == [{"type": "text", "text": "Long rules.", "cache_control": EPHEMERAL}]
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "A long document.", "cache_control": EPHEMERAL}, {"type": "text", "text": "Summarise it."}]}]


def test_cache_control_on_chat_parts_reaches_a_chat_upstream_as_sent(oai: openai.OpenAI, up: Any) -> None:
    oai.chat.completions.create(model="via-openai_chat", messages=_cached_history())  # type: ignore[arg-type]
    assert up.requests[-1].json["messages"] == _cached_history()


@pytest.mark.parametrize("wire", ["openai_responses", "gemini"])
def test_cache_control_never_reaches_the_other_wires(oai: openai.OpenAI, up: Any, wire: str) -> None:
    oai.chat.completions.create(model=f"via-{wire}", messages=_cached_history())  # type: ignore[arg-type]
    assert "cache_control" not in json.dumps(up.requests[-1].json)
