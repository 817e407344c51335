"""Gemini wire bug hunt: the official google-genai SDK against the gateway under gunicorn, upstreams faked."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from routeplane.testing import Gateway
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import via_wires_config, weather_upstream

pytestmark = pytest.mark.e2e

WIRES = ("openai_chat", "anthropic_messages", "gemini")
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture(scope="module")
def upstream_all() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = weather_upstream
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(upstream_all: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(upstream_all.url, WIRES)).start()
    yield gw
    gw.stop()


def _last(up: FakeUpstream, marker: str) -> Dict[str, Any]:
    return [r for r in up.requests if marker in r.path][-1].json


def _gemini_answer(**candidate: Any) -> Dict[str, Any]:
    cand = {"content": {"role": "model", "parts": [{"text": "Hel"}]}, "finishReason": "STOP", "index": 0, **candidate}
    return {"candidates": [cand], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1,
                                                    "totalTokenCount": 4}, "responseId": "r1"}


# --- generationConfig: responseMimeType / responseSchema ---------------------------------


def test_enum_mime_type_and_gemini_schema_reach_a_gemini_upstream_as_sent(gclient: genai.Client,
                                                                          upstream_all: FakeUpstream) -> None:
    """`text/x.enum` answers with the bare enum value; it used to be rewritten to application/json
    (a JSON-quoted string), and the Schema replaced by its JSON-Schema translation."""
    gclient.models.generate_content(model="via-gemini", contents="Mood?", config=types.GenerateContentConfig(
        response_mime_type="text/x.enum", response_schema={"type": "STRING", "enum": ["happy", "sad"]}))
    gen = _last(upstream_all, "Content")["generationConfig"]
    assert gen["responseMimeType"] == "text/x.enum"
    assert gen["responseSchema"] == {"type": "STRING", "enum": ["happy", "sad"]}
    assert "responseJsonSchema" not in gen  # mutually exclusive with responseSchema upstream


SDK_SCHEMA = types.Schema(
    type="OBJECT", property_ordering=["a", "tags", "b"],
    properties={"a": types.Schema(any_of=[types.Schema(type="INTEGER"), types.Schema(type="STRING", max_length=3)]),
                "tags": types.Schema(type="ARRAY", items=types.Schema(type="STRING"), max_items=2, nullable=True),
                "b": types.Schema(ref="#/$defs/B")},
    defs={"B": types.Schema(type="STRING")}, required=["a"])
JSON_SCHEMA = {"type": "object", "required": ["a"],
               "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
                              "tags": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 2},
                              "b": {"$ref": "#/$defs/B"}},
               "$defs": {"B": {"type": "string"}}}


def test_sdk_schema_snake_case_fields_become_json_schema_keywords(gclient: genai.Client,
                                                                  upstream_all: FakeUpstream) -> None:
    """google-genai sends a `types.Schema` with snake_case fields (any_of, max_items, ref, defs,
    property_ordering); they used to reach other wires as unknown keywords, constraints lost."""
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(name="f", parameters=SDK_SCHEMA)])]
    gclient.models.generate_content(model="via-openai_chat", contents="hi", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=SDK_SCHEMA, tools=tools,
        automatic_function_calling=NO_AFC))
    sent = _last(upstream_all, "/chat/completions")
    assert sent["response_format"]["json_schema"]["schema"] == JSON_SCHEMA
    assert sent["tools"][0]["function"]["parameters"] == JSON_SCHEMA


# --- finish reasons, safety ratings, blocked prompts (same wire) --------------------------


def test_gemini_finish_reason_and_safety_ratings_survive_the_same_wire(gclient: genai.Client,
                                                                       upstream_all: FakeUpstream) -> None:
    ratings = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "LOW"}]
    upstream_all.enqueue(Reply.json(_gemini_answer(finishReason="RECITATION", safetyRatings=ratings,
                                                   citationMetadata={"citationSources": [{"uri": "https://x.test"}]})))
    r = gclient.models.generate_content(model="via-gemini", contents="recite")
    cand = r.candidates[0]
    assert cand.finish_reason == types.FinishReason.RECITATION  # was SAFETY
    assert cand.safety_ratings[0].category == types.HarmCategory.HARM_CATEGORY_HARASSMENT
    assert cand.citation_metadata.citations[0].uri == "https://x.test"


def test_a_streamed_gemini_finish_reason_survives_the_same_wire(gclient: genai.Client, gateway: GatewayProcess,
                                                                upstream_all: FakeUpstream) -> None:
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": "Four score"}]}, "index": 0}]},
              {"candidates": [{"content": {"role": "model", "parts": [{"text": " and seven"}]}, "index": 0,
                               "finishReason": "RECITATION"}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}]
    upstream_all.enqueue(Reply.sse(chunks, done=None))
    got = list(gclient.models.generate_content_stream(model="via-gemini", contents="recite"))
    assert "".join(c.text or "" for c in got) == "Four score and seven"
    assert got[-1].candidates[0].finish_reason == types.FinishReason.RECITATION  # was SAFETY
    upstream_all.enqueue(Reply.sse(chunks, done=None))  # another wire gets the canonical reason
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=10, json={
        "model": "via-gemini", "stream": True, "messages": [{"role": "user", "content": "recite"}]})
    assert '"finish_reason":"content_filter"' in r.text.replace(" ", "")


def test_a_blocked_prompt_reaches_a_gemini_client_as_prompt_feedback(gclient: genai.Client,
                                                                     upstream_all: FakeUpstream) -> None:
    upstream_all.enqueue(Reply.json({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                     "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}}))
    r = gclient.models.generate_content(model="via-gemini", contents="bad")
    assert r.prompt_feedback is not None
    assert r.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert not r.candidates and r.text is None


def test_other_wires_still_see_a_blocked_gemini_prompt_as_a_refusal(gateway: GatewayProcess,
                                                                    upstream_all: FakeUpstream) -> None:
    upstream_all.enqueue(Reply.json({"promptFeedback": {"blockReason": "SAFETY"}}))
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=10,
                      json={"model": "via-gemini", "messages": [{"role": "user", "content": "bad"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "content_filter"


# --- errors ------------------------------------------------------------------------------


def test_gemini_retry_info_becomes_retry_after(gclient: genai.Client, gateway: GatewayProcess,
                                               upstream_all: FakeUpstream) -> None:
    """Gemini puts the wait in the body (google.rpc.RetryInfo), not in a Retry-After header."""
    quota = {"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}
    upstream_all.enqueue(Reply.json(quota, 429))
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=10,
                      json={"model": "via-gemini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and r.headers["Retry-After"] == "37"
    upstream_all.enqueue(Reply.json(quota, 429))
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-gemini", contents="hi")
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"
    assert exc.value.details["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                      "retryDelay": "37s"}]


@pytest.mark.parametrize("gen,param", [
    ({"responseMimeType": 5}, "generationConfig.responseMimeType"),
    ({"responseSchema": "x"}, "generationConfig.responseSchema"),
    ({"responseJsonSchema": "x"}, "generationConfig.responseJsonSchema"),
])
def test_wrongly_typed_response_fields_are_400(gen: Dict[str, Any], param: str) -> None:
    """They used to be ignored silently (a 200 without the asked-for format)."""
    r = Gateway().request({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": gen},
                          path="/v1beta/models/default:generateContent")
    assert r.status == 400 and r.json["error"]["status"] == "INVALID_ARGUMENT"
    assert param in r.json["error"]["message"]


# --- function responses ------------------------------------------------------------------


def test_function_response_parts_reach_the_upstream(gclient: genai.Client, upstream_all: FakeUpstream) -> None:
    """A multimodal function response (FunctionResponse.parts) used to lose its image silently."""
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters_json_schema={"type": "object", "properties": {}})])]
    response = types.FunctionResponse(id="toolu_1", name="get_weather", response={"output": "see the map"},
                                      parts=[types.FunctionResponsePart(inline_data=types.FunctionResponseBlob(
                                          mime_type="image/png", data=b"\x89PNG"))])
    gclient.models.generate_content(model="via-anthropic_messages", contents=[
        types.Content(role="user", parts=[types.Part(text="Weather?")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
            id="toolu_1", name="get_weather", args={}))]),
        types.Content(role="user", parts=[types.Part(function_response=response)]),
    ], config=types.GenerateContentConfig(tools=tools, automatic_function_calling=NO_AFC))
    result = _last(upstream_all, "/v1/messages")["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
    assert result["content"] == [{"type": "text", "text": "see the map"},
                                 {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                             "data": "iVBORw=="}}]
    # And to a Gemini upstream the image rides in the same user turn, after the response.
    gclient.models.generate_content(model="via-gemini", contents=[
        types.Content(role="user", parts=[types.Part(text="Weather?")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={}))]),
        types.Content(role="user", parts=[types.Part(function_response=response.model_copy(update={"id": None}))]),
    ], config=types.GenerateContentConfig(tools=tools, automatic_function_calling=NO_AFC))
    last_turn = _last(upstream_all, "Content")["contents"][-1]["parts"]
    assert json.dumps(last_turn).count("iVBORw==") == 1 and "functionResponse" in last_turn[0]


# --- thinkingConfig.thinkingLevel --------------------------------------------------------


def test_unspecified_thinking_level_is_not_sent_as_an_effort(gclient: genai.Client, upstream_all: FakeUpstream) -> None:
    """THINKING_LEVEL_UNSPECIFIED (a google-genai enum value) used to reach OpenAI as
    reasoning_effort "thinking_level_unspecified", which OpenAI rejects."""
    gclient.models.generate_content(model="via-openai_chat", contents="hi", config=types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(thinking_level="THINKING_LEVEL_UNSPECIFIED")))
    assert "reasoning_effort" not in _last(upstream_all, "/chat/completions")
    gclient.models.generate_content(model="via-openai_chat", contents="hi", config=types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(thinking_level="LOW")))
    assert _last(upstream_all, "/chat/completions")["reasoning_effort"] == "low"


def test_unknown_thinking_level_is_400() -> None:
    r = Gateway().request({"contents": [{"parts": [{"text": "x"}]}],
                           "generationConfig": {"thinkingConfig": {"thinkingLevel": "ULTRA"}}},
                          path="/v1beta/models/default:generateContent")
    assert r.status == 400 and "thinkingLevel" in r.json["error"]["message"]


# --- fileData ----------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["https://generativelanguage.googleapis.com/v1beta/files/abc123", "gs://bucket/a.pdf"])
def test_a_gemini_file_uri_bound_for_another_vendor_is_a_400(gclient: genai.Client, upstream_all: FakeUpstream,
                                                             uri: str) -> None:
    """A Files API or Cloud Storage URI went to Anthropic as a document URL it cannot fetch (the Files
    API needs the Google key): a 400 naming it, before any upstream call."""
    sent = len(upstream_all.requests)
    with pytest.raises(genai_errors.ClientError) as info:
        gclient.models.generate_content(model="via-anthropic_messages", contents=[types.Content(role="user", parts=[
            types.Part(text="Describe."), types.Part(file_data=types.FileData(file_uri=uri, mime_type="application/pdf"))])])
    assert info.value.code == 400 and uri in str(info.value)
    assert len(upstream_all.requests) == sent


def test_a_files_api_uri_without_mime_type_is_not_called_a_pdf(gclient: genai.Client,
                                                               upstream_all: FakeUpstream) -> None:
    """fileData.mimeType is optional for Files API / GCS URIs; the gateway used to send application/pdf."""
    uri = "https://generativelanguage.googleapis.com/v1beta/files/abc123"
    gclient.models.generate_content(model="via-gemini", contents=[types.Content(role="user", parts=[
        types.Part(text="Describe."), types.Part(file_data=types.FileData(file_uri=uri))])])
    parts = _last(upstream_all, "Content")["contents"][-1]["parts"]
    assert parts[1] == {"fileData": {"fileUri": uri}}
    gclient.models.generate_content(model="via-gemini", contents=[types.Content(role="user", parts=[
        types.Part(text="Describe."), types.Part(file_data=types.FileData(file_uri=uri, mime_type="video/mp4"))])])
    assert _last(upstream_all, "Content")["contents"][-1]["parts"][1] == {
        "fileData": {"mimeType": "video/mp4", "fileUri": uri}}
