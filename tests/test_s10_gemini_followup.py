"""Session 10 Gemini follow-up: streamed usage, function results another wire reads, wrong methods (405)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest
import requests
from google import genai
from google.genai import types

from routeplane.language_model.types import ResponseStart, TextDelta, TextStart, Usage
from routeplane.protocols import gemini as wire
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_completion
from tests.support.wires import ALL_WIRES, CACHED, INPUT, via_wires_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ALL_WIRES)).start()
    yield gw
    gw.stop()


# --- usageMetadata on every streamed chunk, once the upstream reported it --------------------


@pytest.mark.parametrize("wire_name", ALL_WIRES)
def test_streamed_chunks_carry_the_usage_the_upstream_reported_so_far(gclient: genai.Client, wire_name: str) -> None:
    """Gemini and Anthropic report the prompt up front: every chunk carries it. OpenAI's wires report usage
    only at their end: the chunks before carry none rather than a made-up count."""
    chunks = list(gclient.models.generate_content_stream(model=f"via-{wire_name}", contents="Hello"))
    assert len(chunks) >= 2
    assert chunks[-1].usage_metadata.prompt_token_count == INPUT
    early = [c.usage_metadata for c in chunks[:-1]]
    if wire_name in ("gemini", "anthropic_messages"):
        assert [u.prompt_token_count if u else None for u in early] == [INPUT] * len(early)
    else:
        assert early == [None] * len(early)


def test_the_streamed_usage_is_encoded_once_per_report() -> None:
    """Every chunk carries usageMetadata: the encoder reuses it until the upstream reports again."""
    prompt = wire.CLIENT.for_path("m", True).decode_request({"contents": [{"parts": [{"text": "x"}]}]})
    enc = wire.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in [ResponseStart("r1", "m", usage=Usage(input_tokens=15, cache_read_tokens=5)),
                                           TextStart(0)] + [TextDelta(0, "w ") for _ in range(3)]) + enc.close()
    frames = [json.loads(line[6:]) for line in raw.split(b"\r\n") if line]
    assert [f["usageMetadata"]["promptTokenCount"] for f in frames] == [20] * 3
    assert frames[0]["usageMetadata"]["cachedContentTokenCount"] == CACHED


# --- function results: the bare value for another wire, the client's object for Gemini ------------


def _openai_call(args: Dict[str, Any]) -> Reply:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}
    return Reply.json(openai_completion(None, tool_calls=[call], finish="tool_calls"))


def _tool_message(up: FakeUpstream) -> Dict[str, Any]:
    assert len(up.requests) == 2
    return up.requests[1].json["messages"][-1]


def test_automatic_function_calling_sends_another_wire_the_bare_result(gclient: genai.Client,
                                                                      up: FakeUpstream) -> None:
    """google-genai's automatic function calling sends `{"result": <return value>}`; an OpenAI model got
    that wrapper as JSON text (`{"result":"18\\u00b0C in Z\\u00fcrich"}`), not what the function returned."""

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"18°C in {city}"

    up.enqueue(_openai_call({"city": "Zürich"}), Reply.json(openai_completion("It is 18°C.")))
    answer = gclient.models.generate_content(model="via-openai_chat", contents="Weather in Zürich?",
                                             config=types.GenerateContentConfig(tools=[get_weather]))
    assert answer.text == "It is 18°C."
    assert _tool_message(up) == {"role": "tool", "tool_call_id": "call_1", "content": "18°C in Zürich"}


def test_a_structured_result_reaches_another_wire_as_json_unescaped(gclient: genai.Client, up: FakeUpstream) -> None:
    """A function that returns an object: its JSON, neither wrapped nor with non-ASCII escaped."""

    def get_weather(city: str) -> Dict[str, Any]:
        """The weather in a city."""
        return {"city": city, "temp": 18, "sky": "ensoleillé"}

    up.enqueue(_openai_call({"city": "Zürich"}), Reply.json(openai_completion("Sunny.")))
    gclient.models.generate_content(model="via-openai_chat", contents="Weather in Zürich?",
                                    config=types.GenerateContentConfig(tools=[get_weather]))
    content = _tool_message(up)["content"]
    assert content == '{"city":"Zürich","temp":18,"sky":"ensoleillé"}'


def _function_turns(response: Dict[str, Any]) -> List[types.Content]:
    call = types.Part.from_function_call(name="get_weather", args={"city": "Paris"})
    return [types.Content(role="user", parts=[types.Part.from_text(text="Weather?")]),
            types.Content(role="model", parts=[call]),
            types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response=response)])]


@pytest.mark.parametrize("response", [{"output": 18}, {"output": {"temp": 18}}, {"result": {"temp": 18}},
                                      {"result": "18C"}, {"error": {"code": 7}}, {"temp": 18}])
def test_a_gemini_upstream_gets_the_function_response_as_the_client_sent_it(gclient: genai.Client, up: FakeUpstream,
                                                                           response: Dict[str, Any]) -> None:
    """Unwrapped for the other wires, the result goes to Gemini under its own key with its own JSON type
    (`{"output": 18}` went as `{"output": "18"}`, `{"output": {"temp": 18}}` as `{"temp": 18}`)."""
    up.enqueue(Reply.json({"candidates": [{"content": {"role": "model", "parts": [{"text": "Mild."}]},
                                           "finishReason": "STOP", "index": 0}], "modelVersion": "g"}))
    gclient.models.generate_content(model="via-gemini", contents=_function_turns(response))
    sent = up.requests[0].json["contents"][-1]["parts"][0]["functionResponse"]
    assert sent["response"] == response


def test_a_result_object_with_other_keys_reaches_another_wire_whole(gclient: genai.Client, up: FakeUpstream) -> None:
    """Only a lone `output`/`result` wraps the value; any other object is the result as a whole."""
    up.enqueue(Reply.json(openai_completion("Mild.")))
    gclient.models.generate_content(model="via-openai_chat",
                                    contents=_function_turns({"result": "18C", "unit": "celsius"}))
    assert json.loads(up.requests[0].json["messages"][-1]["content"]) == {"result": "18C", "unit": "celsius"}


# --- wrong methods on the method paths -------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/v1beta/models/via-gemini:generateContent",
                                  "/v1beta/models/via-gemini:streamGenerateContent",
                                  "/v1/models/via-gemini:countTokens",
                                  "/v1/models/models/via-gemini:generateContent"])
def test_a_wrong_method_on_a_model_method_path_is_a_405(gateway: GatewayProcess, method: str, path: str) -> None:
    """GET answered 404 "Model 'via-gemini:generateContent' is not a route" (read as a model's retrieval);
    the other methods a 405 without `Allow`."""
    r = requests.request(method, gateway.url + path, headers={"x-goog-api-key": "k"}, timeout=30)
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    if method != "HEAD":
        err = r.json()["error"]
        assert err["code"] == 405 and err["status"] and "POST" in err["message"]


def test_the_sdk_raises_a_client_error_for_the_405(gateway: GatewayProcess) -> None:
    """The 405 is Gemini-shaped: google-genai reads it as its own ClientError."""
    from google.genai import errors

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=gateway.url))
    with pytest.raises(errors.ClientError) as info:
        client._api_client.request("get", "models/via-gemini:generateContent", {})
    assert info.value.code == 405


def test_models_and_methods_still_answer_beside_the_405(gclient: genai.Client, gateway: GatewayProcess) -> None:
    """A model's retrieval (also a `provider:model` name) and POST on the method paths are unchanged."""
    assert gclient.models.get(model="via-gemini").name == "models/via-gemini"
    assert gclient.models.generate_content(model="via-gemini", contents="Hi").text == "Hello from gemini."
    assert gclient.models.count_tokens(model="via-gemini", contents="Hi").total_tokens >= 1
    r = requests.get(f"{gateway.url}/v1beta/models/via-gemini:bogus", headers={"x-goog-api-key": "k"}, timeout=30)
    assert r.status_code == 404


@pytest.mark.parametrize("method,path", [("PUT", "/v1beta/models/via-gemini"), ("DELETE", "/v1beta/models"),
                                         ("PATCH", "/v1/chat/completions")])
def test_every_405_names_the_methods_allowed(gateway: GatewayProcess, method: str, path: str) -> None:
    r = requests.request(method, gateway.url + path, headers={"x-goog-api-key": "k"}, timeout=30)
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "") or "POST" in r.headers.get("Allow", "")
