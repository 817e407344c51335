"""Stop sequences bound for a Responses upstream (which has none) and a Chat client's `moderation` bound for
another wire: a 400 naming the client's field before any call, and a fallback target of that wire is
skipped, as for a prefill; never an answer that runs past the stop (and is billed for it)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from routeplane.language_model.capability import problem
from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols.openai_chat.request import decode_request
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream
from tests.support.wires import ALL_WIRES, via_wires_config

RESPONSES = RoutingTarget(provider="r", model="m", protocol="openai_responses", base_url="http://127.0.0.1:9/v1")
CHAT = RoutingTarget(provider="c", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")
HI = [{"role": "user", "content": "hi"}]


def test_stop_is_a_problem_for_a_responses_target_only() -> None:
    prompt = decode_request({"model": "m", "messages": HI, "stop": ["END"]})
    assert "stop sequences" in (problem(prompt, RESPONSES) or "")
    assert problem(prompt, CHAT) is None
    assert problem(decode_request({"model": "m", "messages": HI}), RESPONSES) is None


def test_moderation_is_kept_on_chat_and_refused_elsewhere() -> None:
    prompt = decode_request({"model": "m", "messages": HI, "moderation": {"model": "omni-moderation-latest"}})
    assert problem(prompt, CHAT) is None
    assert "moderation" in (problem(prompt, RESPONSES) or "")


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config: Dict[str, Any] = via_wires_config(fake.url, ALL_WIRES)
    config["models"]["responses-then-chat"] = {"targets": [{"provider": "up_openai_responses", "model": "r"},
                                                           {"provider": "up_openai_chat", "model": "c"}]}
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('s11-stop')}/rp.db"}
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


@pytest.mark.e2e
def test_each_client_wire_gets_its_own_400_naming_its_stop_field(gateway: GatewayProcess, up: FakeUpstream,
                                                                  oai: openai.OpenAI, claude: anthropic.Anthropic,
                                                                  gclient: genai.Client) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        oai.chat.completions.create(model="via-openai_responses", messages=copy.deepcopy(HI), stop=["END"])
    assert chat.value.body["param"] == "stop"
    with pytest.raises(anthropic.BadRequestError) as an:
        claude.messages.create(model="via-openai_responses", max_tokens=20, messages=copy.deepcopy(HI),
                               stop_sequences=["END"])
    assert "stop_sequences" in an.value.message
    with pytest.raises(genai_errors.ClientError) as ge:
        gclient.models.generate_content(model="via-openai_responses", contents="hi",
                                        config=genai_types.GenerateContentConfig(stop_sequences=["END"]))
    assert ge.value.code == 400 and "stopSequences" in str(ge.value.message)
    assert not up.requests


@pytest.mark.e2e
def test_a_responses_target_is_skipped_for_the_fallback_that_takes_stop(gateway: GatewayProcess, up: FakeUpstream,
                                                                         oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="responses-then-chat", messages=copy.deepcopy(HI), stop=["END"])
    assert r.choices[0].message.content
    assert [q.path for q in up.requests] == ["/v1/chat/completions"]
    assert up.requests[0].json["stop"] == ["END"]
