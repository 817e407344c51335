"""The guardrails with the stream changes of issue 9 (first-content hold and fallback in it, in-band errors,
URL citations), end to end: the official SDKs on all four wires against the gateway under gunicorn, two
scripted upstreams behind every route (A first, B behind it)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

import anthropic
import openai
import pytest
import requests
from google.genai import errors as genai_errors

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk
from tests.support.wires import gemini_sse, responses_sse

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
EMAIL = "jane.doe@example.com"
UP_KEY = "sk-upstream-secret-0123456789abcdef"
WIRES = {"oc": "openai_chat", "an": "anthropic_messages", "ge": "gemini", "orr": "openai_responses"}
CLIENTS = ("chat", "responses", "anthropic", "gemini")
# Each client wire against another wire's upstream (cross-wire), and against its own.
CROSS = [("chat", "an"), ("anthropic", "ge"), ("gemini", "orr"), ("responses", "oc")]
SAME = [("chat", "oc"), ("anthropic", "an"), ("gemini", "ge"), ("responses", "orr")]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream],  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    providers: Dict[str, Any] = {}
    for short, wire in WIRES.items():
        for name, up in zip("ab", servers):
            base = up.url + "/v1" if wire.startswith("openai") else up.url
            providers[f"{short}-{name}"] = {"protocol": wire, "base_url": base, "api_key": UP_KEY,
                                            "timeouts": {"connect": 2.0, "read": 5.0}}
    models = {short: {"targets": [{"provider": f"{short}-a", "model": "m"}, {"provider": f"{short}-b", "model": "m"}]}
              for short in WIRES}
    config = {"database": {"url": f"sqlite:///{tmp_path_factory.mktemp('guardrails-s7')}/rp.db"},
              "providers": providers, "models": models, "fallback": {"cooldown": {"failures": 0}},
              "plugins": {"guardrails": {
                  "downgoing": {"api_keys": "block", "pii_emails": "redact", "credentials": "redact"},
                  "block_message": {"include_details": True}}}}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    yield gw
    gw.stop()


# --- upstream scripts, per upstream wire ------------------------------------------------------------------

AN_START = {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant",
                                                 "model": "up", "content": [], "stop_reason": None,
                                                 "usage": {"input_tokens": 3, "output_tokens": 0}}}
AN_OPEN = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
AN_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
SHELL = {"id": "resp_a", "object": "response", "created_at": 1763800000, "status": "in_progress", "model": "up",
         "output": []}
GE_USAGE = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}


def _an_delta(text: str) -> Dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def _orr_delta(text: str) -> Dict[str, Any]:
    return {"type": "response.output_text.delta", "item_id": "msg_b", "output_index": 0, "content_index": 0,
            "delta": text}


def answer(wire: str, pieces: List[str]) -> Reply:
    """A complete streamed text answer, its text in `pieces`."""
    text = "".join(pieces)
    if wire == "oc":
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                          *[openai_chunk({"content": p}) for p in pieces], openai_chunk({}, "stop")])
    if wire == "an":
        return Reply.anthropic_sse([AN_START, AN_OPEN, *[_an_delta(p) for p in pieces],
                                    {"type": "content_block_stop", "index": 0},
                                    {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                     "usage": {"output_tokens": 2}}, {"type": "message_stop"}])
    if wire == "ge":
        chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
                   "modelVersion": "up"} for p in pieces]
        chunks[-1]["candidates"][0]["finishReason"] = "STOP"
        chunks[-1]["usageMetadata"] = GE_USAGE
        return gemini_sse(chunks)
    done = {**SHELL, "id": "resp_b", "status": "completed", "usage": {"input_tokens": 3, "output_tokens": 2},
            "output": [{"type": "message", "id": "msg_b", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}]}
    return responses_sse([{"type": "response.created", "response": {**SHELL, "id": "resp_b"}},
                          *[_orr_delta(p) for p in pieces], {"type": "response.completed", "response": done}])


def fails_in_opening(wire: str) -> Reply:
    """The stream opens, then fails before any content: falls back to B."""
    if wire == "oc":
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                          {"error": {"message": "The server had an error", "type": "server_error"}}], done=None)
    if wire == "an":
        return Reply.anthropic_sse([AN_START, AN_OPEN, AN_OVERLOADED])
    if wire == "ge":
        return gemini_sse([{"candidates": [{"content": {"role": "model", "parts": []}, "index": 0}],
                            "usageMetadata": GE_USAGE, "modelVersion": "up"},
                           {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}])
    return responses_sse([{"type": "response.created", "response": SHELL},
                          {"type": "response.failed", "response": {**SHELL, "status": "failed", "error": {
                              "code": "server_error", "message": "try again"}}}])


def fails_after(wire: str, pieces: List[str]) -> Reply:
    """Text, then an in-band server error (past the first content: no fallback, the wire's error frame)."""
    if wire == "oc":
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                          *[openai_chunk({"content": p}) for p in pieces],
                          {"error": {"message": "The server had an error", "type": "server_error"}}], done=None)
    if wire == "an":
        return Reply.anthropic_sse([AN_START, AN_OPEN, *[_an_delta(p) for p in pieces], AN_OVERLOADED])
    if wire == "ge":
        return gemini_sse([*[{"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
                              "modelVersion": "up"} for p in pieces],
                           {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}])
    return responses_sse([{"type": "response.created", "response": SHELL}, *[_orr_delta(p) for p in pieces],
                          {"type": "response.failed", "response": {**SHELL, "status": "failed", "error": {
                              "code": "server_error", "message": "try again"}}}])


# --- clients --------------------------------------------------------------------------------------------


def stream_text(client: str, route: str, sdk: Dict[str, Any]) -> Tuple[str, Optional[Exception], str]:
    """(text received, the error the SDK raised or the error event it yielded, request id) for a streamed call."""
    texts: List[str] = []
    error: Optional[Exception] = None
    rid = ""
    try:
        if client == "chat":
            stream = sdk["oai"].chat.completions.create(model=route, messages=HI, stream=True)
            rid = stream.response.headers.get("x-request-id", "")
            for chunk in stream:
                texts.extend(c.delta.content or "" for c in chunk.choices)
        elif client == "responses":
            stream = sdk["oai"].responses.create(model=route, input="hi", stream=True)
            rid = stream.response.headers.get("x-request-id", "")
            for event in stream:
                if event.type == "response.output_text.delta":
                    texts.append(event.delta)
                elif event.type in ("error", "response.failed"):
                    error = RuntimeError(json.dumps(event.model_dump()))
        elif client == "anthropic":
            with sdk["claude"].messages.stream(model=route, max_tokens=50, messages=HI) as s:
                rid = s.response.headers.get("x-request-id", "")
                for event in s:
                    if event.type == "text":
                        texts.append(event.text)
        else:
            for chunk in sdk["gclient"].models.generate_content_stream(model=route, contents="hi"):
                texts.append(chunk.text or "")
    except (openai.APIError, anthropic.APIError, genai_errors.APIError) as err:
        error = err
    return "".join(texts), error, rid


def raw_stream(gateway: GatewayProcess, client: str, route: str) -> Tuple[int, str]:
    """(HTTP status, whole body) of a streamed call in `client`'s wire, read raw."""
    if client == "chat":
        url, body = "/v1/chat/completions", {"model": route, "messages": HI, "stream": True}
    elif client == "responses":
        url, body = "/v1/responses", {"model": route, "input": "hi", "stream": True}
    elif client == "anthropic":
        url, body = "/v1/messages", {"model": route, "max_tokens": 50, "messages": HI, "stream": True}
    else:
        url, body = f"/v1beta/models/{route}:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "hi"}]}]}
    with requests.post(gateway.url + url, json=body, timeout=30, headers={"Authorization": "Bearer x"}) as resp:
        return resp.status_code, resp.text


@pytest.fixture(scope="module")
def sdk(oai: Any, claude: Any, gclient: Any) -> Dict[str, Any]:  # noqa: F811
    return {"oai": oai, "claude": claude, "gclient": gclient}


def _findings(gateway: GatewayProcess, rid: str) -> List[str]:
    return [line for line in gateway.logs().splitlines() if "guardrail" in line and rid and rid in line]


# --- a fallback in the first-content hold -----------------------------------------------------------------


@pytest.mark.parametrize("client,route", CROSS)
def test_fallback_in_the_hold_scans_the_served_attempt_from_its_start(
        ups: Any, sdk: Dict[str, Any], gateway: GatewayProcess, client: str, route: str) -> None:  # noqa: F811
    """A fails in its opening, B answers with an address split over its chunks: redacted once, whole."""
    a, b = ups
    wire = route
    a.enqueue(fails_in_opening(wire))
    b.enqueue(answer(wire, ["Write to jane.d", "oe@exam", "ple.com any time."]))
    text, error, rid = stream_text(client, route, sdk)
    assert error is None, error
    assert text == "Write to [REDACTED:email] any time."
    assert len(a.requests) == 1 and len(b.requests) == 1
    if rid:
        found = _findings(gateway, rid)
        assert len(found) == 1 and "pii_emails" in found[0], found


# --- a block on the very first content ----------------------------------------------------------------------


def _error_text(error: Optional[Exception]) -> str:
    if isinstance(error, (openai.APIError, anthropic.APIError)):
        return json.dumps(error.body) + str(error)
    return str(error)


@pytest.mark.parametrize("client,route", CROSS + SAME)
def test_a_key_in_the_first_content_is_the_wires_guardrail_error(
        ups: Any, sdk: Dict[str, Any], gateway: GatewayProcess, client: str, route: str) -> None:  # noqa: F811
    a, b = ups
    a.enqueue(answer(route, ["Here: " + KEY[:20], KEY[20:] + " bye"]))
    text, error, _ = stream_text(client, route, sdk)
    assert error is not None and text == ""
    assert "blocked by a guardrail" in _error_text(error) and KEY[:10] not in _error_text(error), _error_text(error)
    a.enqueue(answer(route, ["Here: " + KEY[:20], KEY[20:] + " bye"]))
    status, body = raw_stream(gateway, client, route)
    # The hold ends at the first content, the guardrails' window holds it: the 200 and the opening are sent, the
    # block is the wire's error frame (as for any streamed block; README "Actions").
    assert status == 200 and "blocked by a guardrail" in body and KEY[:10] not in body, body
    assert not b.requests


# --- an in-band error inside the guardrails' hold window ----------------------------------------------------


@pytest.mark.parametrize("client,route", CROSS + SAME)
def test_an_upstream_error_in_the_window_is_the_wires_error_and_leaks_nothing_held(
        ups: Any, sdk: Dict[str, Any], gateway: GatewayProcess, client: str, route: str) -> None:  # noqa: F811
    a, b = ups
    pieces = ["Hello, write to jane.d", "oe@exam"]
    a.enqueue(fails_after(route, pieces))
    text, error, _ = stream_text(client, route, sdk)
    assert error is not None, text
    assert "jane" not in text and "exam" not in text
    assert "guardrail" not in _error_text(error)
    a.enqueue(fails_after(route, pieces))
    status, body = raw_stream(gateway, client, route)
    assert status == 200 and "jane.d" not in body and "oe@exam" not in body, body
    assert not b.requests


# --- URL citations quoting what the text redacted ---------------------------------------------------------

URL = "https://admin:hunter22@docs.example.com/setup"
CITED = f"Setup is at {URL} (ask {EMAIL})."
REDACTED = "Setup is at https://admin:[REDACTED:credential]@docs.example.com/setup (ask [REDACTED:email])."


def _cited_answer(wire: str) -> Reply:
    """A non-streamed answer whose citations quote the URL with its password and the address."""
    if wire == "oc":
        ann = [{"type": "url_citation", "url_citation": {"url": URL, "title": f"mail {EMAIL}", "start_index": 12,
                                                         "end_index": 12 + len(URL)}}]
        return Reply.json({"id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": "up",
                           "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
                               "role": "assistant", "content": CITED, "refusal": None, "annotations": ann}}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    if wire == "an":
        cite = {"type": "web_search_result_location", "url": URL, "title": EMAIL, "cited_text": CITED,
                "encrypted_index": "abc"}
        return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "up",
                           "content": [{"type": "text", "text": CITED, "citations": [cite]}],
                           "stop_reason": "end_turn", "stop_sequence": None,
                           "usage": {"input_tokens": 3, "output_tokens": 2}})
    if wire == "ge":
        cand = {"content": {"role": "model", "parts": [{"text": CITED}]}, "finishReason": "STOP", "index": 0,
                "groundingMetadata": {"groundingChunks": [{"web": {"uri": URL, "title": EMAIL}}],
                                      "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": len(CITED),
                                                                         "text": CITED}, "groundingChunkIndices": [0]}],
                                      "webSearchQueries": [f"setup {EMAIL}"]},
                "citationMetadata": {"citations": [{"startIndex": 0, "endIndex": len(CITED), "uri": URL}]},
                "urlContextMetadata": {"urlMetadata": [{"retrievedUrl": URL,
                                                        "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS"}]}}
        return Reply.json({"candidates": [cand], "usageMetadata": GE_USAGE, "modelVersion": "up"})
    ann = [{"type": "url_citation", "url": URL, "title": EMAIL, "start_index": 12, "end_index": 12 + len(URL)}]
    return Reply.json({**SHELL, "status": "completed", "usage": {"input_tokens": 3, "output_tokens": 2},
                       "output": [{"type": "message", "id": "msg_b", "role": "assistant", "status": "completed",
                                   "content": [{"type": "output_text", "text": CITED, "annotations": ann}]}]})


def _post(gateway: GatewayProcess, client: str, route: str) -> Tuple[int, str]:
    if client == "chat":
        url, body = "/v1/chat/completions", {"model": route, "messages": HI}
    elif client == "responses":
        url, body = "/v1/responses", {"model": route, "input": "hi"}
    elif client == "anthropic":
        url, body = "/v1/messages", {"model": route, "max_tokens": 50, "messages": HI}
    else:
        url, body = f"/v1beta/models/{route}:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}
    with requests.post(gateway.url + url, json=body, timeout=30, headers={"Authorization": "Bearer x"}) as resp:
        return resp.status_code, resp.text


@pytest.mark.parametrize("client,route", SAME + CROSS)
def test_citations_never_carry_what_the_text_redacted(ups: Any, gateway: GatewayProcess,  # noqa: F811
                                                      client: str, route: str) -> None:
    a, b = ups
    a.enqueue(_cited_answer(route))
    status, body = _post(gateway, client, route)
    assert status == 200, body
    assert json.dumps(REDACTED)[1:-1] in body, body
    assert "hunter22" not in body and EMAIL not in body, body


def test_a_secret_only_in_a_chat_citation_is_redacted_and_the_citation_kept(ups: Any, oai: Any) -> None:  # noqa: F811
    """The text is clean, so the citation (indexing the unchanged text) stays, its title redacted."""
    a, b = ups
    text = "Setup is in the docs."
    ann = [{"type": "url_citation", "url_citation": {"url": "https://docs.example.com/setup", "title": f"by {EMAIL}",
                                                     "start_index": 0, "end_index": 5}}]
    a.enqueue(Reply.json({"id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": "up",
                          "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
                              "role": "assistant", "content": text, "refusal": None, "annotations": ann}}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}))
    message = oai.chat.completions.create(model="oc", messages=HI).choices[0].message
    assert message.content == text
    assert [(c.url_citation.url, c.url_citation.title, c.url_citation.start_index)
            for c in message.annotations] == [("https://docs.example.com/setup", "by [REDACTED:email]", 0)]


def test_a_key_in_gemini_grounding_blocks_a_gemini_client_only(ups: Any, gclient: Any, oai: Any) -> None:  # noqa: F811
    """A block rule's match in a field the client gets back blocks the answer; another wire's client never gets
    that field, so its answer passes."""
    a, b = ups

    def grounded() -> Reply:
        cand = {"content": {"role": "model", "parts": [{"text": "Done."}]}, "finishReason": "STOP", "index": 0,
                "groundingMetadata": {"webSearchQueries": [f"is {KEY} valid"]}}
        return Reply.json({"candidates": [cand], "usageMetadata": GE_USAGE, "modelVersion": "up"})

    a.enqueue(grounded())
    with pytest.raises(genai_errors.APIError) as info:
        gclient.models.generate_content(model="ge", contents="hi")
    assert info.value.code == 400 and "guardrail" in str(info.value) and KEY[:10] not in str(info.value)
    assert "response candidate" in str(info.value)
    a.enqueue(grounded())
    assert oai.chat.completions.create(model="ge", messages=HI).choices[0].message.content == "Done."


TOOLS_CHAT = [{"type": "function", "function": {"name": "send", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("client", CLIENTS)
def test_an_upstream_error_while_tool_arguments_are_held_is_the_wires_error(
        ups: Any, gateway: GatewayProcess, client: str) -> None:  # noqa: F811
    """A tool call's name leaves at once, its arguments are held; the error frame follows, nothing held leaks."""
    a, b = ups
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "send", "arguments": ""}}
    a.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
                         openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"to": "jane.d'}}]}),
                         {"error": {"message": "The server had an error", "type": "server_error"}}], done=None))
    status, body = raw_stream(gateway, client, "oc")
    assert status == 200 and "jane" not in body, body
    assert "failed mid-stream" in body, body
    assert not b.requests


# --- a prompt field added today: the JSON schema's description ---------------------------------------------


def test_the_json_schema_description_is_scanned_upgoing() -> None:
    """90ac772 sends a json_schema's `description` upstream (ResponseFormat.description): read by the model like
    the schema, so redacted and blocked like it."""
    from routeplane_guardrails import GuardrailsPlugin

    from routeplane.testing import Gateway

    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"pii_emails": "redact", "api_keys": "block"})])
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"},
                                                  "description": f"Write to {EMAIL}"}}
    r = gw.request({"model": "default", "messages": HI, "response_format": fmt})
    assert r.status == 200, r.body
    sent = gw.executor.calls[-1].prompt.response_format
    assert sent.description == "Write to [REDACTED:email]" and sent.schema == {"type": "object"}
    calls = len(gw.executor.calls)
    fmt["json_schema"]["description"] = f"Use {KEY}"
    r = gw.request({"model": "default", "messages": HI, "response_format": fmt})
    assert r.status == 400 and "api_keys in response_format description" in r.body.decode(), r.body
    assert len(gw.executor.calls) == calls
