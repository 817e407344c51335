"""A Responses client's system and developer input items reach a Responses upstream where they stood, with their
roles, and `instructions` stays `instructions`; other wires get one system prompt, and a pre-request hook that
reshapes the prompt gets the leading form. Before, every such item was folded into `instructions`."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Dict, Iterator, List

import openai
import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import Role, TextPart
from routeplane.protocols.anthropic_messages.request import encode_request as encode_anthropic
from routeplane.protocols.openai_responses.request import decode_request, encode_request
from tests.support.gateway import GatewayProcess
from tests.support.wires import ALL_WIRES, via_wires_config

TARGET = RoutingTarget(provider="openai", model="up-model", protocol="openai_responses",
                       base_url="https://api.openai.com/v1", api_key="sk-secret-upstream-key")
AN_TARGET = RoutingTarget(provider="an", model="claude-up", protocol="anthropic_messages",
                          base_url="http://127.0.0.1:9", api_key="sk-secret-upstream-key")

INSTRUCTIONS = "Be terse."
MID_CONVERSATION: List[Dict[str, Any]] = [
    {"role": "developer", "content": "Answer in French."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Bonjour"},
    {"role": "system", "content": [{"type": "input_text", "text": "The user uploaded a.txt."},
                                   {"type": "input_text", "text": "It is 3 lines long."}]},
    {"role": "user", "content": "What is in it?"},
]
# A developer item between two function calls: decoding joins the calls into one assistant message.
BETWEEN_CALLS: List[Dict[str, Any]] = [
    {"role": "user", "content": "go"},
    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    {"role": "developer", "content": "Mind the second call."},
    {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"x\":1}"},
    {"type": "function_call_output", "call_id": "c1", "output": "one"},
    {"role": "system", "content": "Between the outputs."},
    {"type": "function_call_output", "call_id": "c2", "output": "two"},
]


def sent(items: List[Dict[str, Any]], **body: Any) -> Dict[str, Any]:
    prompt = decode_request({"model": "m", "input": copy.deepcopy(items), **body})
    return encode_request(prompt, TARGET, False)


def test_system_and_developer_items_keep_their_place_and_role_on_the_same_wire() -> None:
    body = sent(MID_CONVERSATION, instructions=INSTRUCTIONS)
    assert body["instructions"] == INSTRUCTIONS
    assert body["input"] == MID_CONVERSATION


def test_without_instructions_none_are_invented() -> None:
    body = sent(MID_CONVERSATION)
    assert "instructions" not in body and body["input"] == MID_CONVERSATION


def test_an_item_inside_a_merged_message_keeps_its_place() -> None:
    prompt = decode_request({"model": "m", "input": copy.deepcopy(BETWEEN_CALLS)})
    assert [m.role for m in prompt.messages] == [Role.USER, Role.ASSISTANT, Role.TOOL]  # merged as before
    assert encode_request(prompt, TARGET, False)["input"] == BETWEEN_CALLS


def test_a_trailing_developer_item_stays_last() -> None:
    items = [{"role": "user", "content": "Hi"}, {"role": "developer", "content": "Be brief."}]
    assert sent(items)["input"] == items


def test_leading_system_items_still_join_the_instructions() -> None:
    items = [{"role": "system", "content": "A"}, {"role": "user", "content": "Hi"}]
    body = sent(items, instructions=INSTRUCTIONS)
    assert body["instructions"] == "Be terse.\n\nA" and body["input"] == [{"role": "user", "content": "Hi"}]


def test_the_layout_carries_no_text_and_a_redacting_hook_changes_what_is_sent() -> None:
    prompt = decode_request({"model": "m", "input": copy.deepcopy(MID_CONVERSATION), "instructions": INSTRUCTIONS})
    assert "uploaded" not in repr({k: v for k, v in prompt.extras.items() if k.startswith("_")})
    redacted = prompt.replace(system=tuple(TextPart(p.text.replace("a.txt", "[file]").replace("terse", "short"))
                                           for p in prompt.system))
    body = encode_request(redacted, TARGET, False)
    assert body["instructions"] == "Be short."
    assert body["input"][3]["content"][0]["text"] == "The user uploaded [file]."


def test_a_hook_that_adds_a_system_part_gets_the_leading_form() -> None:
    prompt = decode_request({"model": "m", "input": copy.deepcopy(MID_CONVERSATION), "instructions": INSTRUCTIONS})
    grown = prompt.replace(system=(TextPart("Policy."),) + prompt.system)
    body = encode_request(grown, TARGET, False)
    assert body["instructions"] == ("Policy.\n\nBe terse.\n\nAnswer in French.\n\nThe user uploaded a.txt.\n\n"
                                    "It is 3 lines long.")
    assert [i["role"] for i in body["input"]] == ["user", "assistant", "user"]


def test_a_hook_that_drops_a_message_or_a_part_gets_the_leading_form() -> None:
    prompt = decode_request({"model": "m", "input": copy.deepcopy(BETWEEN_CALLS)})
    one_call = replace(prompt.messages[1], parts=prompt.messages[1].parts[:1])
    for changed in (prompt.replace(messages=prompt.messages[1:]),
                    prompt.replace(messages=(prompt.messages[0], one_call) + prompt.messages[2:])):
        body = encode_request(changed, TARGET, False)
        assert body["instructions"] == "Mind the second call.\n\nBetween the outputs."
        assert all(i.get("role") not in ("system", "developer") for i in body["input"])


def test_another_wire_gets_one_system_prompt() -> None:
    prompt = decode_request({"model": "m", "input": copy.deepcopy(MID_CONVERSATION), "instructions": INSTRUCTIONS})
    body = encode_anthropic(prompt, AN_TARGET, False)
    text = body["system"] if isinstance(body["system"], str) else "\n\n".join(b["text"] for b in body["system"])
    assert "Be terse." in text and "Answer in French." in text and "It is 3 lines long." in text
    assert all(m["role"] in ("user", "assistant") for m in body["messages"])


# --- end to end: the official SDK, real gunicorn, the upstream's view ------------------------------------


@pytest.fixture(scope="module")
def gateway(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES)
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('s11-rlayout')}/rp.db"}
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_conversation_reaches_a_compatible_responses_upstream_with_instructions_first(
        oai: openai.OpenAI, up: Any, stream: bool) -> None:
    """The FakeUpstream is not OpenAI: as on the Chat wire, system and developer items join `instructions`
    (an OpenAI-compatible server's chat template often refuses them in place)."""
    items = copy.deepcopy(MID_CONVERSATION)
    if stream:
        with oai.responses.stream(model="via-openai_responses", input=items, instructions=INSTRUCTIONS) as s:
            s.get_final_response()
    else:
        oai.responses.create(model="via-openai_responses", input=items, instructions=INSTRUCTIONS)  # type: ignore[arg-type]
    body = up.requests[-1].json
    assert body["instructions"].startswith(INSTRUCTIONS)
    assert all(i.get("role") not in ("system", "developer") for i in body["input"])


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True])
def test_the_response_echoes_the_clients_instructions_only(oai: openai.OpenAI, up: Any, stream: bool) -> None:
    """As OpenAI does: the developer and system items are the input's, not the instructions'."""
    items = copy.deepcopy(MID_CONVERSATION)
    if stream:
        with oai.responses.stream(model="via-openai_responses", input=items, instructions=INSTRUCTIONS) as s:
            final = s.get_final_response()
    else:
        final = oai.responses.create(model="via-openai_responses", input=items,  # type: ignore[arg-type]
                                     instructions=INSTRUCTIONS)
    assert final.instructions == INSTRUCTIONS


@pytest.mark.e2e
def test_the_sdk_conversation_reaches_an_anthropic_upstream_with_one_system_prompt(oai: openai.OpenAI,
                                                                                   up: Any) -> None:
    oai.responses.create(model="via-anthropic_messages", input=copy.deepcopy(MID_CONVERSATION),  # type: ignore[arg-type]
                         instructions=INSTRUCTIONS)
    body = up.requests[-1].json
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert "Be terse." in str(body["system"]) and "It is 3 lines long." in str(body["system"])
