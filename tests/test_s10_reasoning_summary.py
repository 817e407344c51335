"""Session 10, under gunicorn: a client of another wire that asks to see thinking gets the Responses
upstream's reasoning summary.

OpenAI sends a reasoning summary only when the request asks for one (`reasoning.summary`). The gateway
asked for none, so an Anthropic client with `thinking` on got thinking blocks without text, and a
Gemini client with `includeThoughts` no thoughts. The fake upstream below behaves like OpenAI: the
summary is in its answer only when asked for.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply
from tests.support.wires import responses_sse

SUMMARY = "Weighing the options."
USAGE = {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 39}


def openai_like(req: RecordedRequest) -> Reply:
    asked = isinstance(req.json.get("reasoning"), dict) and req.json["reasoning"].get("summary") is not None
    summary = [{"type": "summary_text", "text": SUMMARY}] if asked else []
    reasoning = {"type": "reasoning", "id": "rs_up", "summary": summary, "encrypted_content": "gAAAA-ENC"}
    message = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Go.", "annotations": []}]}
    final = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
             "output": [reasoning, message], "usage": USAGE}
    if not req.json.get("stream"):
        return Reply.json(final)
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    events: List[Dict[str, Any]] = [{"type": "response.created", "response": shell},
                                    {"type": "response.output_item.added", "output_index": 0,
                                     "item": {**reasoning, "summary": [], "encrypted_content": None}}]
    if asked:
        ids = {"item_id": "rs_up", "output_index": 0, "summary_index": 0}
        events += [{"type": "response.reasoning_summary_part.added", **ids, "part": {"type": "summary_text", "text": ""}},
                   {"type": "response.reasoning_summary_text.delta", **ids, "delta": SUMMARY}]
    ids = {"item_id": "msg_up", "output_index": 1, "content_index": 0}
    events += [{"type": "response.output_item.done", "output_index": 0, "item": reasoning},
               {"type": "response.output_item.added", "output_index": 1, "item": {**message, "content": []}},
               {"type": "response.output_text.delta", **ids, "delta": "Go."},
               {"type": "response.output_item.done", "output_index": 1, "item": message},
               {"type": "response.completed", "response": final}]
    return responses_sse(events)


UP = FakeUpstream()


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    up = UP.start()
    up.default = openai_like
    config = {"providers": {"resp": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "sk-up"},
                            "unverified": {"protocol": "openai_responses", "base_url": up.url + "/v1",
                                           "api_key": "sk-up", "options": {"reasoning_summary": False}}},
              "models": {"m": {"targets": [{"provider": "resp", "model": "up"}]},
                         "quiet": {"targets": [{"provider": "unverified", "model": "up"}]}}}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()
    up.stop()


def _sent_reasoning() -> Any:
    return UP.requests[-1].json.get("reasoning")


HI: Any = [{"role": "user", "content": "Which way?"}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("thinking", [{"type": "enabled", "budget_tokens": 2048}, {"type": "adaptive"},
                                      {"type": "enabled", "budget_tokens": 2048, "display": "summarized"}])
def test_an_anthropic_client_with_thinking_gets_the_summary(gateway: GatewayProcess, stream: bool,
                                                            thinking: Any) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0) as client:
        if stream:
            with client.messages.stream(model="m", max_tokens=4096, thinking=thinking, messages=HI) as s:
                msg = s.get_final_message()
        else:
            msg = client.messages.create(model="m", max_tokens=4096, thinking=thinking, messages=HI)
    assert _sent_reasoning()["summary"] == "auto"
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == SUMMARY and msg.content[0].signature


def test_an_anthropic_client_that_omits_thinking_text_asks_for_no_summary(gateway: GatewayProcess) -> None:
    """`display: "omitted"` is Anthropic's own way to ask for signed thinking without its text."""
    thinking: Any = {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}
    with anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0) as client:
        msg = client.messages.create(model="m", max_tokens=4096, thinking=thinking, messages=HI)
        assert "summary" not in _sent_reasoning()
        assert msg.content[0].type == "thinking" and msg.content[0].thinking == ""
        client.messages.create(model="m", max_tokens=4096, messages=HI)  # no thinking: no reasoning at all
        assert _sent_reasoning() is None


@pytest.mark.parametrize("stream", [False, True])
def test_a_gemini_client_that_includes_thoughts_gets_the_summary(gateway: GatewayProcess, stream: bool) -> None:
    client = genai.Client(api_key="client-key", http_options=types.HttpOptions(base_url=gateway.url))
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True,
                                                                              thinking_budget=2048))
    if stream:
        parts = [p for c in client.models.generate_content_stream(model="m", contents="Which way?", config=config)
                 for p in c.candidates[0].content.parts or ()]
    else:
        parts = client.models.generate_content(model="m", contents="Which way?", config=config).candidates[0].content.parts
    assert _sent_reasoning()["summary"] == "auto"
    assert "".join(p.text or "" for p in parts if p.thought) == SUMMARY
    assert "".join(p.text or "" for p in parts if not p.thought) == "Go."


def test_clients_that_did_not_ask_to_see_reasoning_ask_for_no_summary(gateway: GatewayProcess) -> None:
    client = genai.Client(api_key="client-key", http_options=types.HttpOptions(base_url=gateway.url))
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=2048))
    client.models.generate_content(model="m", contents="Which way?", config=config)
    assert _sent_reasoning()["effort"] and "summary" not in _sent_reasoning()
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0) as chat:
        chat.chat.completions.create(model="m", messages=HI, reasoning_effort="low")  # Chat has no way to ask
    assert _sent_reasoning() == {"effort": "low"}
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0) as same_wire:
        same_wire.responses.create(model="m", input="Which way?", reasoning={"effort": "low"})
    assert _sent_reasoning() == {"effort": "low"}  # a Responses client asks for itself


def test_a_provider_can_turn_the_summary_request_off(gateway: GatewayProcess) -> None:
    """OpenAI refuses `reasoning.summary` (400) for an organization it has not verified."""
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    with anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0) as client:
        msg = client.messages.create(model="quiet", max_tokens=4096, thinking=thinking, messages=HI)
    assert _sent_reasoning()["effort"] and "summary" not in _sent_reasoning()
    assert msg.content[-1].text == "Go."


def test_the_option_is_checked() -> None:
    from routeplane.config import ConfigError, parse_config

    raw: Any = {"providers": {"up": {"protocol": "openai_responses", "base_url": "https://up.example.com/v1",
                                     "api_key": "k", "options": {"reasoning_summary": "yes"}}},
                "models": {"default": {"targets": [{"provider": "up", "model": "m"}]}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "f.yaml", env={})
    assert "providers.up.options.reasoning_summary" in str(info.value)
    raw["providers"]["up"]["options"]["reasoning_summary"] = "detailed"
    assert parse_config(raw, "f.yaml", env={}).providers["up"].options["reasoning_summary"] == "detailed"
