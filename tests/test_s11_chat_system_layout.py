"""A Chat client's system and developer messages reach a Chat upstream where they stood, with their roles;
other wires get one system prompt, and a pre-request hook that reshapes the prompt gets the leading form."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, List

import openai
import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import Role, TextPart
from routeplane.protocols.anthropic_messages.request import encode_request as encode_anthropic
from routeplane.protocols.openai_chat.request import decode_request, encode_request
from tests.support.gateway import GatewayProcess
from tests.support.wires import ALL_WIRES, via_wires_config

TARGET = RoutingTarget(provider="openai", model="gpt-up", protocol="openai_chat",
                       base_url="https://api.openai.com/v1", api_key="sk-secret-upstream-key")
COMPATIBLE = RoutingTarget(provider="vllm", model="llama", protocol="openai_chat", base_url="http://127.0.0.1:9/v1",
                           api_key="sk-secret-upstream-key")
AN_TARGET = RoutingTarget(provider="an", model="claude-up", protocol="anthropic_messages",
                          base_url="http://127.0.0.1:9", api_key="sk-secret-upstream-key")

MID_CONVERSATION: List[Dict[str, Any]] = [
    {"role": "developer", "content": "Answer in French."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Bonjour"},
    {"role": "system", "content": [{"type": "text", "text": "The user uploaded a.txt."},
                                   {"type": "text", "text": "It is 3 lines long."}]},
    {"role": "user", "content": "What is in it?"},
]


def roundtrip(messages: List[Dict[str, Any]], target: RoutingTarget = TARGET) -> List[Dict[str, Any]]:
    prompt = decode_request({"model": "m", "messages": copy.deepcopy(messages)})
    return encode_request(prompt, target, False)["messages"]


def test_system_and_developer_messages_keep_their_place_and_role_on_the_same_wire() -> None:
    assert roundtrip(MID_CONVERSATION) == MID_CONVERSATION


def test_a_trailing_system_message_stays_last() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}]
    assert roundtrip(messages) == messages


def test_leading_system_messages_are_one_as_before() -> None:
    messages = [{"role": "system", "content": "A"}, {"role": "system", "content": "B"},
                {"role": "user", "content": "Hi"}]
    assert roundtrip(messages) == [{"role": "system", "content": "A\n\nB"}, {"role": "user", "content": "Hi"}]


def test_tool_turns_between_system_messages_are_still_merged() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    call2 = {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call, call2]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "developer", "content": "Now summarise."},
    ]
    out = roundtrip(messages)
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "tool", "developer"]
    assert out[-1] == {"role": "developer", "content": "Now summarise."}


def test_the_layout_carries_no_text_and_a_redacting_hook_changes_what_is_sent() -> None:
    prompt = decode_request({"model": "m", "messages": copy.deepcopy(MID_CONVERSATION)})
    assert "uploaded" not in repr({k: v for k, v in prompt.extras.items() if k.startswith("_")})
    redacted = prompt.replace(system=tuple(TextPart(p.text.replace("a.txt", "[file]")) for p in prompt.system))
    sent = encode_request(redacted, TARGET, False)["messages"]
    assert sent[3]["content"][0]["text"] == "The user uploaded [file]."


def test_a_hook_that_adds_a_system_part_gets_the_leading_system_prompt() -> None:
    prompt = decode_request({"model": "m", "messages": copy.deepcopy(MID_CONVERSATION)})
    grown = prompt.replace(system=(TextPart("Policy."),) + prompt.system)
    sent = encode_request(grown, TARGET, False)["messages"]
    assert sent[0] == {"role": "system", "content": "Policy.\n\nAnswer in French.\n\nThe user uploaded a.txt.\n\n"
                                                    "It is 3 lines long."}
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]


def test_a_hook_that_drops_a_message_gets_the_leading_system_prompt() -> None:
    prompt = decode_request({"model": "m", "messages": copy.deepcopy(MID_CONVERSATION)})
    trimmed = prompt.replace(messages=prompt.messages[1:])
    sent = encode_request(trimmed, TARGET, False)["messages"]
    assert sent[0]["role"] == "system" and [m["role"] for m in sent[1:]] == ["assistant", "user"]


def test_an_openai_compatible_server_gets_one_leading_system_message() -> None:
    """vLLM's and Mistral's chat templates refuse `developer` and a system message after the first turn."""
    sent = roundtrip(MID_CONVERSATION, COMPATIBLE)
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "Answer in French.\n\nThe user uploaded a.txt.\n\nIt is 3 lines long."


def test_another_wire_gets_one_system_prompt() -> None:
    prompt = decode_request({"model": "m", "messages": copy.deepcopy(MID_CONVERSATION)})
    assert prompt.messages[0].role is Role.USER
    body = encode_anthropic(prompt, AN_TARGET, False)
    text = body["system"] if isinstance(body["system"], str) else "\n\n".join(b["text"] for b in body["system"])
    assert "Answer in French." in text and "It is 3 lines long." in text
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


# --- end to end: the official SDK, real gunicorn, the upstream's view ------------------------------------


@pytest.fixture(scope="module")
def gateway(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES)
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('s11-layout')}/rp.db"}
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_conversation_reaches_a_compatible_chat_upstream_with_the_system_prompt_first(
        oai: openai.OpenAI, up: Any, stream: bool) -> None:
    messages = copy.deepcopy(MID_CONVERSATION)
    if stream:
        with oai.chat.completions.stream(model="via-openai_chat", messages=messages) as s:
            s.get_final_completion()
    else:
        oai.chat.completions.create(model="via-openai_chat", messages=messages)
    sent = up.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]


@pytest.mark.e2e
def test_the_sdk_conversation_reaches_an_anthropic_upstream_with_one_system_prompt(oai: openai.OpenAI,
                                                                                   up: Any) -> None:
    oai.chat.completions.create(model="via-anthropic_messages", messages=copy.deepcopy(MID_CONVERSATION))
    sent = up.requests[-1].json
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert "It is 3 lines long." in str(sent["system"])
