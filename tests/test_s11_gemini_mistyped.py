"""A Gemini upstream part whose `text` or `functionCall` has the wrong JSON type is an invalid upstream
answer (502 in the client's protocol), not a part relayed whole for the client's SDK to choke on."""

from __future__ import annotations

from typing import Any, Dict, Iterator

import pytest
from google import genai
from google.genai import errors

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import gemini_sse, via_wires_config

pytestmark = pytest.mark.e2e

USAGE = {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ("gemini",))).start()
    yield gw
    gw.stop()


def answer(part: Dict[str, Any]) -> Dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": USAGE, "modelVersion": "up-gemini"}


@pytest.mark.parametrize("part", [{"text": 5}, {"text": ["a"]}, {"functionCall": "get_weather"}])
def test_a_mistyped_part_is_a_502_the_sdk_reports(gclient: genai.Client, up: FakeUpstream,
                                                  part: Dict[str, Any]) -> None:
    up.enqueue(Reply.json(answer(part)))
    with pytest.raises(errors.ServerError) as info:
        gclient.models.generate_content(model="via-gemini", contents="hi")
    assert info.value.code == 502

    up.enqueue(gemini_sse([answer(part)]))
    with pytest.raises(errors.APIError) as streamed:
        for _ in gclient.models.generate_content_stream(model="via-gemini", contents="hi"):
            pass
    assert streamed.value.code in (500, 502)


def test_a_null_text_beside_a_call_is_still_fine(gclient: genai.Client, up: FakeUpstream) -> None:
    up.enqueue(Reply.json(answer({"text": None, "functionCall": {"name": "f", "args": {}}})))
    r = gclient.models.generate_content(model="via-gemini", contents="hi")
    assert r.function_calls[0].name == "f"
