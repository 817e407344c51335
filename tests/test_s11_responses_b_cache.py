"""Prompt-cache settings on the way to a Responses upstream. A Chat client's service tier and prompt-cache
fields were dropped for OpenAI's Responses wire (a flex request billed at the default tier, its cache key
lost), and a Responses client's `prompt_cache_breakpoint` on its input parts was dropped by the decoder (with
`prompt_cache_options.mode: "explicit"` a request without its breakpoints is not cached at all)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, List

import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols.anthropic_messages.request import encode_request as encode_anthropic
from routeplane.protocols.openai_chat import request as chat_request
from routeplane.protocols.openai_chat.request import encode_request as encode_chat
from routeplane.protocols.openai_responses import request as responses_request
from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.wires import via_wires_config, weather_upstream

SHARED = {"service_tier": "flex", "prompt_cache_key": "tenant-7", "prompt_cache_retention": "24h",
          "prompt_cache_options": {"mode": "explicit"}}
MARK = {"mode": "explicit", "ttl": "12h"}
IMAGE = "https://example.com/cat.png"


def _target(base_url: str, protocol: str = "openai_responses") -> RoutingTarget:
    return RoutingTarget(provider="up", model="gpt-5", protocol=protocol, base_url=base_url)


OPENAI = _target("https://api.openai.com/v1")
COMPATIBLE = _target("https://api.example-compatible.com/v1")


# --- a Chat client's tier and cache settings ---------------------------------------------------------


def test_a_chat_clients_tier_and_cache_settings_reach_openai_responses() -> None:
    prompt = chat_request.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **SHARED})
    body = responses_request.encode_request(prompt, OPENAI, stream=False)
    assert {k: body.get(k) for k in SHARED} == SHARED


def test_an_openai_compatible_responses_server_does_not_get_them() -> None:
    prompt = chat_request.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **SHARED})
    body = responses_request.encode_request(prompt, COMPATIBLE, stream=False)
    assert not set(SHARED) & set(body)


def test_a_chat_clients_breakpoint_reaches_openai_responses_only() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "long prefix", "prompt_cache_breakpoint": MARK},
                                             {"type": "text", "text": "question"}]}]
    prompt = chat_request.decode_request({"model": "m", "messages": messages, **SHARED})
    to_openai = responses_request.encode_request(prompt, OPENAI, stream=False)["input"]
    assert to_openai == [{"role": "user", "content": [
        {"type": "input_text", "text": "long prefix", "prompt_cache_breakpoint": MARK},
        {"type": "input_text", "text": "question"}]}]
    assert responses_request.encode_request(prompt, COMPATIBLE, stream=False)["input"] == [
        {"role": "user", "content": "long prefixquestion"}]


# --- a Responses client's breakpoints ----------------------------------------------------------------


MARKED: List[Dict[str, Any]] = [
    {"role": "user", "content": [
        {"type": "input_text", "text": "a long shared prefix", "prompt_cache_breakpoint": MARK},
        {"type": "input_image", "image_url": IMAGE, "detail": "auto", "prompt_cache_breakpoint": MARK},
        {"type": "input_file", "file_id": "file-1", "prompt_cache_breakpoint": MARK},
        {"type": "input_text", "text": "the question"}]},
]


def test_breakpoints_on_input_parts_reach_a_responses_upstream() -> None:
    prompt = responses_request.decode_request({"model": "m", "input": copy.deepcopy(MARKED), **SHARED})
    body = responses_request.encode_request(prompt, COMPATIBLE, stream=False)
    assert body["input"] == MARKED
    assert body["prompt_cache_options"] == {"mode": "explicit"}


def test_a_breakpoint_in_a_tool_output_and_a_leading_system_item_is_kept() -> None:
    items = [
        {"role": "system", "content": [{"type": "input_text", "text": "policy", "prompt_cache_breakpoint": MARK}]},
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "big result", "prompt_cache_breakpoint": MARK}]},
    ]
    prompt = responses_request.decode_request({"model": "m", "input": copy.deepcopy(items)})
    assert responses_request.encode_request(prompt, OPENAI, stream=False)["input"] == items


def test_a_breakpoint_must_be_an_object() -> None:
    bad = [{"role": "user", "content": [{"type": "input_text", "text": "x", "prompt_cache_breakpoint": "yes"}]}]
    with pytest.raises(Exception) as info:
        responses_request.decode_request({"model": "m", "input": bad})
    assert getattr(info.value, "status", None) == 400
    assert "input[0].content[0].prompt_cache_breakpoint" in str(info.value)


def test_other_wires_do_not_get_the_breakpoint() -> None:
    prompt = responses_request.decode_request({"model": "m", "input": copy.deepcopy(MARKED)})
    assert "prompt_cache_breakpoint" not in str(encode_chat(prompt, _target("http://127.0.0.1:9/v1", "openai_chat"),
                                                            False))
    assert "prompt_cache_breakpoint" not in str(encode_anthropic(prompt, _target("http://127.0.0.1:9",
                                                                                 "anthropic_messages"), False))


# --- end to end: the official SDK, the upstream's view ------------------------------------------------


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(via_wires_config) as pair:
        pair[0].default = weather_upstream
        yield pair


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdks_breakpoints_reach_a_responses_upstream(env: Env, stream: bool) -> None:
    up, client = env
    items = copy.deepcopy(MARKED)
    if stream:
        with client.responses.stream(model="via-openai_responses", input=items,  # type: ignore[arg-type]
                                     prompt_cache_key="tenant-7") as s:
            s.get_final_response()
    else:
        client.responses.create(model="via-openai_responses", input=items,  # type: ignore[arg-type]
                                prompt_cache_key="tenant-7")
    body = up.requests[-1].json
    assert body["input"] == MARKED and body["prompt_cache_key"] == "tenant-7"
