"""Session 11 Gemini-wire hunt: the google-genai SDK (and raw REST where the SDK's types forbid the mistake)
against the gateway under gunicorn, upstreams faked."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest
import requests
from google import genai

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_completion
from tests.support.wires import ALL_WIRES, via_wires_config

pytestmark = pytest.mark.e2e

CHINESE = "请用三句话介绍一下北京的历史、文化和美食。" * 5


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ALL_WIRES)).start()
    yield gw
    gw.stop()


# --- countTokens counts what the gateway bills ------------------------------------------------------


@pytest.mark.parametrize("text", [CHINESE, "Tell me about the history of Beijing in three sentences. " * 3])
def test_count_tokens_is_the_input_billed_when_the_upstream_reports_none(gclient: genai.Client, up: FakeUpstream,
                                                                         text: str) -> None:
    """countTokens said 4 characters a token for every script, while the answer's estimate (and the bill)
    weighs non-Latin text by its bytes: a Chinese prompt was counted at a fifth of what it then cost."""
    counted = gclient.models.count_tokens(model="via-openai_chat", contents=text).total_tokens
    body = openai_completion("好的。")
    body.pop("usage", None)
    up.enqueue(Reply.json(body))
    billed = gclient.models.generate_content(model="via-openai_chat", contents=text).usage_metadata
    assert counted == billed.prompt_token_count
    if not text.isascii():
        assert counted >= len(text)  # about a token a character; it was 27


# --- Struct fields of a history: Google refuses any other value ------------------------------------


def _history(call: Dict[str, Any], response: Any) -> Dict[str, Any]:
    return {"contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", **call}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": response}}]},
    ]}


@pytest.mark.parametrize("route", ["via-gemini", "via-openai_chat"])
@pytest.mark.parametrize("body,param", [
    (_history({"args": "Paris"}, {"output": "18C"}), "contents[1].parts[0].functionCall.args"),
    (_history({"args": ["Paris"]}, {"output": "18C"}), "contents[1].parts[0].functionCall.args"),
    (_history({"args": {"city": "Paris"}}, "18C"), "contents[2].parts[0].functionResponse.response"),
    (_history({"args": {"city": "Paris"}}, [18]), "contents[2].parts[0].functionResponse.response"),
])
def test_a_call_or_result_that_is_not_an_object_is_a_400_naming_it(gateway: GatewayProcess, up: FakeUpstream,
                                                                   route: str, body: Dict[str, Any],
                                                                   param: str) -> None:
    """Both are Structs on this wire (gemini.md §2). They went through: a Gemini upstream got
    `{"_raw": "\\"Paris\\""}` and `{"output": "\\"18C\\""}`, another wire a quoted JSON string."""
    r = requests.post(f"{gateway.url}/v1beta/models/{route}:generateContent", json=body,
                      headers={"x-goog-api-key": "client-key"}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT" and param in r.json()["error"]["message"]
    assert not up.requests


def test_a_history_without_args_or_response_still_passes(gateway: GatewayProcess, up: FakeUpstream) -> None:
    """Both may be left out (a call without arguments, an empty result)."""
    body = _history({}, None)
    body["contents"][2]["parts"][0]["functionResponse"].pop("response")
    r = requests.post(f"{gateway.url}/v1beta/models/via-gemini:generateContent", json=body,
                      headers={"x-goog-api-key": "client-key"}, timeout=30)
    assert r.status_code == 200, r.text
    sent = json.loads(json.dumps(up.requests[-1].json["contents"]))
    assert sent[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {}}
    assert sent[2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"output": ""}}
