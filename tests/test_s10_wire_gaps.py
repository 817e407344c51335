"""Three wire gaps, through a real gateway with the official SDKs as clients: a Chat stream from a Chat upstream
keeps the upstream's `service_tier` and `system_fingerprint` on its chunks; Anthropic error bodies (HTTP and a
stream's `error` event) carry the request's `request_id`; a Responses `input: ""` bound for a wire that takes no
empty text (Anthropic, Gemini) is the client's 400 naming `input`, before any upstream call."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import anthropic
import openai
import pytest
import requests

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import ResponseStart, StreamPart, TextDelta, TextStart
from routeplane.protocols.openai_chat.request import decode_request
from routeplane.protocols.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder
from routeplane.protocols.sse import SSEEvent
from tests.support.gateway import GatewayProcess
from tests.support.upstream import Reply, openai_chunk, openai_completion
from tests.support.wires import ALL_WIRES, via_wires_config

USER = [{"role": "user", "content": "Say hello"}]
TARGET = RoutingTarget(provider="up", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")
TIER = {"service_tier": "default", "system_fingerprint": "fp_3b9e1c"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def tiered(chunk: Dict[str, Any]) -> Dict[str, Any]:
    """A chunk as OpenAI sends it: the answer's tier and fingerprint on every one."""
    return {**chunk, **TIER}


def upstream_chunks() -> List[Dict[str, Any]]:
    return [tiered(openai_chunk({"role": "assistant", "content": ""})), tiered(openai_chunk({"content": "Hel"})),
            tiered(openai_chunk({"content": "lo"})), tiered(openai_chunk({}, "stop")),
            tiered(openai_chunk(None, usage=USAGE))]


def relayed(chunks: List[Dict[str, Any]], body: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The chunks a Chat client gets for the upstream's `chunks` (decoder → encoder, as the gateway relays)."""
    dec = ChatStreamDecoder(TARGET)
    parts: List[StreamPart] = []
    for chunk in chunks:
        parts += dec.feed(SSEEvent(data=json.dumps(chunk)))
    parts += dec.feed(SSEEvent(data="[DONE]"))
    enc = ChatStreamEncoder(decode_request(body))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(line[6:]) for line in raw.decode().split("\n")
            if line.startswith("data: ") and line != "data: [DONE]"]


# --- 1. service_tier / system_fingerprint on a Chat stream ------------------------------------------------


def test_every_chunk_keeps_the_upstreams_tier_and_fingerprint() -> None:
    body = {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    out = relayed(upstream_chunks(), body)
    assert len(out) >= 4 and out[-1]["choices"] == []  # the usage chunk too
    assert all({k: c.get(k) for k in TIER} == TIER for c in out)


def test_azures_opening_chunk_without_id_or_choices_does_not_start_the_answer() -> None:
    # Azure OpenAI opens with {"id": "", "choices": [], "prompt_filter_results": [...]}; the answer's id,
    # created and fields come with the next chunk.
    azure = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    out = relayed([azure] + upstream_chunks(), {"model": "m", "messages": USER, "stream": True})
    assert {c["id"] for c in out} == {"chatcmpl-up"}
    assert {c["created"] for c in out} == {1763800000}
    assert all({k: c.get(k) for k in TIER} == TIER for c in out)


def test_another_wires_start_adds_nothing_and_a_stream_without_them_stays_as_it_was() -> None:
    enc = ChatStreamEncoder(decode_request({"model": "m", "messages": USER, "stream": True}))
    raw = enc.encode(ResponseStart("x", "m", 1, wire="gemini", extras={"service_tier": "x"}))
    raw += enc.encode(TextStart(0)) + enc.encode(TextDelta(0, "hi")) + enc.close()
    assert b"service_tier" not in raw
    plain = relayed([openai_chunk({"content": "hi"}), openai_chunk({}, "stop")],
                    {"model": "m", "messages": USER, "stream": True})
    assert all("service_tier" not in c and "system_fingerprint" not in c for c in plain)


# --- through the gateway --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(fake: Any) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5})
    config["models"]["anthropic-then-chat"] = {"targets": [{"provider": "up_anthropic_messages", "model": "a"},
                                                          {"provider": "up_openai_chat", "model": "c"}]}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


@pytest.mark.e2e
def test_the_openai_sdk_sees_them_on_every_chunk(oai: openai.OpenAI, up: Any) -> None:
    up.enqueue(Reply.sse(upstream_chunks()))
    chunks = list(oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True,  # type: ignore
                                              stream_options={"include_usage": True}))
    assert chunks and all((c.service_tier, c.system_fingerprint) == ("default", "fp_3b9e1c") for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"


@pytest.mark.e2e
def test_a_stream_answered_with_one_json_body_keeps_them_too(oai: openai.OpenAI, up: Any) -> None:
    # Some OpenAI-compatible servers answer a stream request with one JSON body: the client's stream is
    # made from that answer (generation_to_parts), and its chunks carry the fields as a real stream's do.
    body = openai_completion("Hello")
    body.update(service_tier="default", system_fingerprint="fp_3b9e1c")
    up.enqueue(Reply.json(body))
    chunks = list(oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True))  # type: ignore
    assert chunks and all((c.service_tier, c.system_fingerprint) == ("default", "fp_3b9e1c") for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"


@pytest.mark.e2e
def test_an_upstream_of_another_wire_gives_none(oai: openai.OpenAI, up: Any) -> None:
    chunks = list(oai.chat.completions.create(model="via-anthropic_messages", messages=USER, stream=True))
    assert chunks and all(c.service_tier is None and c.system_fingerprint is None for c in chunks)


# --- 2. request_id in Anthropic error bodies --------------------------------------------------------------


@pytest.mark.e2e
def test_an_anthropic_error_body_names_the_request(claude: anthropic.Anthropic, up: Any) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=USER)  # type: ignore[arg-type]
    err = info.value
    assert err.request_id and err.request_id.startswith("req_")
    assert isinstance(err.body, dict) and err.body["request_id"] == err.request_id
    assert err.body["type"] == "error" and err.body["error"]["type"] == "not_found_error"
    assert not up.requests


@pytest.mark.e2e
def test_a_raw_error_has_the_same_id_in_body_and_headers(gateway: GatewayProcess, up: Any) -> None:
    r = requests.post(gateway.url + "/v1/messages", json={"model": "via-anthropic_messages", "messages": USER},
                      headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"}, timeout=10)
    assert r.status_code == 400  # max_tokens missing
    body = r.json()
    assert body["request_id"] == r.headers["request-id"] == r.headers["x-request-id"]
    assert set(body) == {"type", "error", "request_id"}
    # An id the client sent is the request's id, in the body as in the headers.
    r = requests.post(gateway.url + "/v1/messages", json={"model": "no-such-model", "max_tokens": 5, "messages": USER},
                      headers={"x-api-key": "client-key", "x-request-id": "req_client0001"}, timeout=10)
    assert r.status_code == 404 and r.json()["request_id"] == "req_client0001" == r.headers["request-id"]


@pytest.mark.e2e
@pytest.mark.parametrize("method,path,status", [("GET", "/v1/messages", 405), ("POST", "/v1/messages/nope", 404)])
def test_an_unrouted_anthropic_path_names_the_request_too(gateway: GatewayProcess, method: str, path: str,
                                                          status: int) -> None:
    r = requests.request(method, gateway.url + path, json={}, timeout=10,
                         headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"})
    assert r.status_code == status
    body = r.json()
    assert body["type"] == "error" and body["request_id"] == r.headers["x-request-id"]


@pytest.mark.e2e
def test_a_streams_error_event_names_the_request(claude: anthropic.Anthropic, up: Any) -> None:
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "Hel"}),
                          {"error": {"message": "the model crashed", "type": "server_error"}}], done=None))
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model="via-openai_chat", max_tokens=10, messages=USER) as stream:  # type: ignore
            for _ in stream:
                pass
    err = info.value
    assert isinstance(err.body, dict) and err.body["type"] == "error"
    assert err.body["request_id"] == err.response.headers["request-id"]
    assert err.body["request_id"].startswith("req_")


# --- 3. a Responses input "" bound for a wire that takes no empty text -------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("wire", ["anthropic_messages", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_input_is_a_400_naming_input_before_any_upstream_call(oai: openai.OpenAI, up: Any, wire: str,
                                                                        stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        result = oai.responses.create(model=f"via-{wire}", input="", instructions="Greet the user.", stream=stream)
        if stream:
            list(result)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "input" and body["type"] == "invalid_request_error"
    assert "'input'" in body["message"] and "empty text" in body["message"]
    assert not up.requests


@pytest.mark.e2e
def test_an_empty_input_skips_to_a_fallback_that_takes_it(oai: openai.OpenAI, up: Any) -> None:
    # Routing knows the Anthropic head cannot take an empty conversation: the OpenAI fallback answers,
    # instead of the head's 400 ending the request.
    before = len(up.requests)
    answer = oai.responses.create(model="anthropic-then-chat", input="", instructions="Greet the user.")
    assert answer.output_text
    sent = up.requests[before:]
    assert len(sent) == 1 and sent[0].json["model"] == "c"


@pytest.mark.e2e
@pytest.mark.parametrize("wire", ["openai_chat", "openai_responses"])
def test_an_openai_upstream_still_gets_the_empty_user_message(oai: openai.OpenAI, up: Any, wire: str) -> None:
    # OpenAI takes a user message with empty text (and answers the instructions): passed through as before.
    answer = oai.responses.create(model=f"via-{wire}", input="", instructions="Greet the user.")
    assert answer.output_text
    sent = up.requests[-1].json
    if wire == "openai_chat":
        assert sent["messages"][-1] == {"role": "user", "content": ""}
    else:
        assert sent["input"] in ("", [{"role": "user", "content": ""}])


@pytest.mark.e2e
def test_a_chat_client_with_only_empty_text_gets_its_own_field_named(oai: openai.OpenAI, up: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="via-anthropic_messages", messages=[{"role": "user", "content": ""}])
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "messages"
    assert not up.requests
