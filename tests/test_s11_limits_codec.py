"""Cross-wire request limits as pure codec functions: which client field a refusal names, the wires
that take a limit, Gemini's int32 fields and declared names, a text document for a Chat upstream."""

from __future__ import annotations

import base64
from typing import Any, Dict, Optional

import pytest

from routeplane.errors import InvalidRequest
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import FilePart, GenerationParams, Message, Prompt, Role, TextPart
from routeplane.protocols import anthropic_messages, gemini, openai_chat, openai_responses
from routeplane.protocols.gemini.generation import integer
from routeplane.protocols.limits import limit_refusal

OC = RoutingTarget("p", "m", "openai_chat")


def _prompt(client: Optional[str], extras: Optional[Dict[str, Any]] = None, **params: Any) -> Prompt:
    return Prompt(model="m", messages=(Message(Role.USER, (TextPart("hi"),)),), params=GenerationParams(**params),
                  extras=extras or {}, extras_protocol=client)


def _decoded(wire: str, body: Dict[str, Any]) -> Prompt:
    if wire == "gemini":
        return gemini.request.decode_request(body, model="m")
    return {"openai_chat": openai_chat, "anthropic_messages": anthropic_messages,
            "openai_responses": openai_responses}[wire].request.decode_request(body)


@pytest.mark.parametrize("wire,body,param", [
    ("anthropic_messages", {"max_tokens": 0}, "max_tokens"),
    ("openai_chat", {"max_completion_tokens": 0}, "max_completion_tokens"),
    ("openai_chat", {"max_tokens": 0}, "max_tokens"),  # the legacy field, as the client sent it
    ("gemini", {"generationConfig": {"maxOutputTokens": -3}}, "generationConfig.maxOutputTokens"),
])
def test_an_output_bound_below_1_names_the_clients_field(wire: str, body: Dict[str, Any], param: str) -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    prompt = _decoded(wire, {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **body} if wire == "gemini"
                      else {**base, **body})
    targets = [w for w in ("openai_chat", "anthropic_messages", "gemini", "openai_responses") if w != wire]
    for target in targets:
        refusal = limit_refusal(prompt, target)
        assert refusal is not None and refusal.param == param and refusal.status == 400
    assert limit_refusal(prompt, wire) is None  # the client's own wire judges its own field


@pytest.mark.parametrize("client,target,count,refused", [
    ("anthropic_messages", "openai_chat", 4, False), ("anthropic_messages", "openai_chat", 5, True),
    ("gemini", "openai_chat", 5, True), ("anthropic_messages", "gemini", 5, False),
    ("anthropic_messages", "gemini", 6, True), ("openai_chat", "openai_chat", 9, False),
    ("gemini", "gemini", 9, False), ("openai_chat", "anthropic_messages", 9, False),
    ("anthropic_messages", "mock", 9, False),
])
def test_stop_sequences_past_the_target_limit(client: str, target: str, count: int, refused: bool) -> None:
    refusal = limit_refusal(_prompt(client, stop=tuple(f"s{i}" for i in range(count))), target)
    assert (refusal is not None) is refused
    if refusal is not None:
        assert refusal.param == {"anthropic_messages": "stop_sequences",
                                 "gemini": "generationConfig.stopSequences"}[client]


def test_gemini_encoder_sends_every_stop_of_its_own_client() -> None:
    prompt = _prompt("gemini", stop=tuple("abcdefg"))
    body = gemini.PROVIDER.encode_request(prompt, RoutingTarget("p", "m", "gemini"), False)
    assert body["generationConfig"]["stopSequences"] == list("abcdefg")
    with pytest.raises(InvalidRequest, match="at most 5"):
        gemini.PROVIDER.encode_request(_prompt("openai_chat", stop=tuple("abcdef")), RoutingTarget("p", "m", "gemini"),
                                       False)


def test_anthropic_encoder_refuses_another_wires_zero() -> None:
    with pytest.raises(InvalidRequest) as exc:
        anthropic_messages.PROVIDER.encode_request(_prompt("gemini", max_tokens=0),
                                                   RoutingTarget("p", "m", "anthropic_messages"), False)
    assert exc.value.param == "generationConfig.maxOutputTokens"
    body = anthropic_messages.PROVIDER.encode_request(_prompt("anthropic_messages", max_tokens=0),
                                                      RoutingTarget("p", "m", "anthropic_messages"), False)
    assert body["max_tokens"] == 0  # its own client's cache pre-warm


@pytest.mark.parametrize("value,expected", [(4, 4), (4.0, 4), (2**31 - 1, 2**31 - 1), (-(2**31), -(2**31))])
def test_int32_fields_in_range(value: Any, expected: int) -> None:
    assert integer(value, "generationConfig.topK") == expected


@pytest.mark.parametrize("value", [1e300, 2**31, -(2**31) - 1, 10**400])
def test_int32_fields_out_of_range(value: Any) -> None:
    with pytest.raises(InvalidRequest, match="32-bit") as exc:
        integer(value, "generationConfig.topK")
    assert exc.value.param == "generationConfig.topK"


@pytest.mark.parametrize("mode", ["AUTO", "ANY", "VALIDATED"])
def test_allowed_function_names_must_be_declared(mode: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": ["b", "zz"]}}}
    with pytest.raises(InvalidRequest, match="'zz'") as exc:
        _decoded("gemini", body)
    assert exc.value.param == "toolConfig.functionCallingConfig.allowedFunctionNames"
    body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] = ["b"]
    assert [t.name for t in _decoded("gemini", body).tools] == (["b"] if mode != "ANY" else ["a", "b"])


def _text_doc(text: str, title: Optional[str] = None) -> FilePart:
    return FilePart(data=base64.b64encode(text.encode()).decode(), media_type="text/plain", filename=title)


def test_a_text_document_is_a_chat_text_part() -> None:
    prompt = Prompt(model="m", messages=(Message(Role.USER, (_text_doc("body", "T"), TextPart("q"))),))
    content = openai_chat.PROVIDER.encode_request(prompt, OC, False)["messages"][0]["content"]
    assert content == [{"type": "text", "text": "T\n\nbody"}, {"type": "text", "text": "q"}]


def test_a_pdf_stays_a_chat_file() -> None:
    pdf = FilePart(data="JVBERi0=", media_type="application/pdf", filename="a.pdf")
    prompt = Prompt(model="m", messages=(Message(Role.USER, (pdf, TextPart("q"))),))
    content = openai_chat.PROVIDER.encode_request(prompt, OC, False)["messages"][0]["content"]
    assert content[0] == {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                                                   "filename": "a.pdf"}}


def test_a_text_document_that_is_not_utf8_is_a_400() -> None:
    bad = FilePart(data=base64.b64encode(b"\xff\xfe").decode(), media_type="text/plain")
    prompt = Prompt(model="m", messages=(Message(Role.USER, (bad, TextPart("q"))),))
    with pytest.raises(InvalidRequest, match="text/plain"):
        openai_chat.PROVIDER.encode_request(prompt, OC, False)
