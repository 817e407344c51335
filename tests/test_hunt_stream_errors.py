"""Bug hunt on error classification inside upstream streams (and failed Responses), and on the SSE reader:
the official SDKs against the gateway under gunicorn, two scripted upstreams behind every route (A first,
B behind it), so a wrong "retriable" shows as a call to B. Breakers are off (`cooldown.failures: 0`)."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from routeplane.errors import InvalidUpstreamResponse
from routeplane.protocols.sse import SSEParser
from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import FakeUpstream, Reply, openai_chunk
from tests.support.wires import fallback_pair_config, gemini_sse, responses_sse

pytestmark = pytest.mark.e2e

KEY = "sk-upstream-secret-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]
SHELL = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "in_progress", "model": "up",
         "output": []}
AN_START = {"type": "message_start", "message": {"id": "msg_up", "type": "message", "role": "assistant",
                                                 "model": "up", "content": [], "stop_reason": None,
                                                 "usage": {"input_tokens": 3, "output_tokens": 0}}}
AN_TEXT = [{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
           {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}]


def status_of(gw: GatewayProcess, rid: str) -> int:
    """The status in the request's spend-log row."""
    return spend_row(gw.db_url, rid)["status"]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = fallback_pair_config((servers[0].url, servers[1].url), KEY)
    config["models"]["oc-solo"] = {"targets": [{"provider": "oc-a", "model": "m"}]}
    db = f"sqlite:///{tmp_path_factory.mktemp('hunt-stream-errors')}/rp.db"
    config["database"] = {"url": db}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def _failed(code: str, message: str = "the prompt was refused") -> Dict[str, Any]:
    return {**SHELL, "status": "failed", "error": {"code": code, "message": message}}


# --- OpenAI Responses: failed responses -------------------------------------------------------------


@pytest.mark.parametrize("code", ["invalid_prompt", "image_content_policy_violation", "context_length_exceeded"])
def test_a_failed_response_with_a_client_error_code_is_a_400_without_fallback(
        ups: Any, oai: openai.OpenAI, gateway: GatewayProcess, code: str) -> None:
    """`status: failed` with a client error code (invalid_prompt: the docs' "equivalent HTTP status 400")
    was a retriable 502: the client's own bad prompt went on to the next target (and was billed there)."""
    a, b = ups
    a.enqueue(Reply.json(_failed(code)))
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="orr", input="hi")
    assert "the prompt was refused" in info.value.message and KEY not in info.value.message
    assert len(b.requests) == 0
    assert status_of(gateway, info.value.response.headers["x-request-id"]) == 400
    # The same upstream answer to a Chat client.
    a.enqueue(Reply.json(_failed(code)))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="orr", messages=HI)  # type: ignore[arg-type]
    assert len(b.requests) == 0


@pytest.mark.parametrize("code", ["server_error", "rate_limit_exceeded", "vector_store_timeout"])
def test_a_failed_response_with_a_server_error_code_still_falls_back(ups: Any, oai: openai.OpenAI,
                                                                     code: str) -> None:
    a, b = ups
    a.enqueue(Reply.json(_failed(code, "try again")))
    b.enqueue(Reply.json({**SHELL, "status": "completed", "output": [
        {"type": "message", "id": "msg_b", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "from b", "annotations": []}]}]}))
    assert oai.responses.create(model="orr", input="hi").output_text == "from b"


def test_a_streamed_failure_with_a_client_error_code_is_a_400_without_fallback(
        ups: Any, oai: openai.OpenAI, gateway: GatewayProcess) -> None:
    """Before the first byte an `error` event with invalid_prompt fell back as a retriable 502; after it,
    the client's response.failed said server_error (the SDK's code for the gateway's fault)."""
    a, b = ups
    a.enqueue(responses_sse([{"type": "error", "code": "invalid_prompt", "message": "flagged", "param": None}]))
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="orr", input="hi", stream=True)
    assert "flagged" in info.value.message
    assert len(b.requests) == 0
    a.enqueue(responses_sse([{"type": "response.created", "response": SHELL},
                             {"type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                              "content_index": 0, "delta": "Hel"},  # after the first content: no HTTP 400 now
                             {"type": "response.failed", "response": _failed("image_content_policy_violation")}]))
    stream = oai.responses.create(model="orr", input="hi", stream=True)
    events = list(stream)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "invalid_request_error"
    assert events[-1].response.error.code == "image_content_policy_violation"  # the SDK knows the upstream's code
    assert len(b.requests) == 0
    assert status_of(gateway, stream.response.headers["x-request-id"]) == 400


# --- Anthropic: `event: error` ----------------------------------------------------------------------


def test_an_anthropic_error_event_keeps_its_type_before_and_after_the_first_byte(
        ups: Any, claude: anthropic.Anthropic, oai: openai.OpenAI, gateway: GatewayProcess) -> None:
    """An invalid_request_error event was a 502: before the first byte it went on to the next target, after
    it the client's error frame said api_error (a server error) instead of invalid_request_error."""
    a, b = ups
    invalid = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}
    a.enqueue(Reply.anthropic_sse([invalid]))
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="an", max_tokens=5, messages=HI, stream=True)  # type: ignore[arg-type]
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(b.requests) == 0
    # After the first byte: the Anthropic client's error event, and an OpenAI client's error chunk.
    a.enqueue(Reply.anthropic_sse([AN_START, *AN_TEXT, invalid]))
    with pytest.raises(anthropic.APIStatusError) as info2:
        with claude.messages.stream(model="an", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
            for _ in stream:
                pass
    assert info2.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert status_of(gateway, stream.response.headers["x-request-id"]) == 400
    a.enqueue(Reply.anthropic_sse([AN_START, *AN_TEXT, invalid]))
    with pytest.raises(openai.APIError) as info3:
        for _ in oai.chat.completions.create(model="an", messages=HI, stream=True):  # type: ignore[arg-type]
            pass
    assert info3.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(b.requests) == 0


def test_an_anthropic_overloaded_error_event_still_falls_back(ups: Any, claude: anthropic.Anthropic) -> None:
    a, b = ups
    a.enqueue(Reply.anthropic_sse([{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}]))
    b.enqueue(Reply.anthropic_sse([AN_START, *AN_TEXT, {"type": "content_block_stop", "index": 0},
                                   {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 1}}, {"type": "message_stop"}]))
    msg = claude.messages.create(model="an", max_tokens=5, messages=HI, stream=True)  # type: ignore[arg-type]
    assert [e.type for e in msg][-1] == "message_stop"
    assert len(b.requests) == 1


# --- OpenAI Chat: `data: {"error": …}` --------------------------------------------------------------


def test_a_chat_error_chunk_keeps_its_class(ups: Any, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    """Every `{"error": …}` chunk was a retriable 502, whatever its type or (OpenRouter's numeric) code."""
    a, b = ups
    bad = {"error": {"message": "maximum context length exceeded", "type": "invalid_request_error",
                     "code": "context_length_exceeded", "param": "messages"}}
    a.enqueue(Reply.sse([bad]))
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="oc", messages=HI, stream=True)  # type: ignore[arg-type]
    assert "maximum context length" in info.value.message
    assert len(b.requests) == 0
    # After the first byte, to an Anthropic client.
    a.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "Hel"}), bad]))
    with pytest.raises(anthropic.APIStatusError) as info2:
        with claude.messages.stream(model="oc", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
            for _ in stream:
                pass
    assert info2.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    # OpenRouter's numeric codes: 429 on both targets is the client's 429.
    limited = {"error": {"message": "rate limited", "code": 429}}
    a.enqueue(Reply.sse([limited]))
    b.enqueue(Reply.sse([limited]))
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="oc", messages=HI, stream=True)  # type: ignore[arg-type]
    # A server error still falls back.
    a.enqueue(Reply.sse([{"error": {"message": "boom", "type": "server_error"}}]))
    b.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "from b"}, "stop")]))
    text = "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model="oc", messages=HI, stream=True) if c.choices)  # type: ignore[arg-type]
    assert text == "from b"


def test_an_error_body_with_a_success_status_keeps_its_class(ups: Any, oai: openai.OpenAI,
                                                             claude: anthropic.Anthropic) -> None:
    """A 200 whose body is an error (compatible servers do this) was "no choices" / "an error body with a
    success status": a retriable 502 whatever the error said."""
    a, b = ups
    a.enqueue(Reply.json({"error": {"message": "context too long", "type": "invalid_request_error"}}))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="oc", messages=HI)  # type: ignore[arg-type]
    assert len(b.requests) == 0
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    a.enqueue(Reply.json(overloaded))
    b.enqueue(Reply.json(overloaded))
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model="an", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 529 and info.value.body["error"]["type"] == "overloaded_error"  # type: ignore


# --- Gemini: error objects in a stream --------------------------------------------------------------


def test_a_gemini_stream_error_is_classified_by_its_status(ups: Any, gclient: genai.Client,
                                                           oai: openai.OpenAI) -> None:
    """A Gemini error chunk without a numeric code (google.rpc `status` only) was a 502, and an invalid
    gateway key (API_KEY_INVALID, 400 from Google) was the client's 400 where an HTTP 400 is a 502."""
    a, b = ups
    a.enqueue(gemini_sse([{"error": {"message": "bad schema", "status": "INVALID_ARGUMENT"}}]))
    with pytest.raises(genai_errors.ClientError) as info:
        list(gclient.models.generate_content_stream(model="ge", contents="hi"))
    assert info.value.code == 400
    assert len(b.requests) == 0
    exhausted = {"error": {"message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    a.enqueue(gemini_sse([exhausted]))
    b.enqueue(gemini_sse([exhausted]))
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="ge", messages=HI, stream=True)  # type: ignore[arg-type]
    bad_key = {"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT",
                         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "API_KEY_INVALID"}]}}
    a.enqueue(gemini_sse([bad_key]))
    with pytest.raises(genai_errors.ServerError) as info2:  # the gateway's key, not the client's request
        list(gclient.models.generate_content_stream(model="ge", contents="hi"))
    assert info2.value.code == 502 and "credentials" in str(info2.value.message)
    assert len(b.requests) == 1  # as for an HTTP 401: no fallback (the key is the operator's to fix)


# --- the SSE reader -----------------------------------------------------------------------------------


def test_an_upstream_event_over_the_line_limit_is_a_clear_502(ups: Any, oai: openai.OpenAI,
                                                              claude: anthropic.Anthropic) -> None:
    """A 17 MiB line was a 502 "oc-a: ValueError" (and took seconds of CPU to refuse: the reader copied
    its whole buffer on every read)."""
    a, _ = ups
    huge = b"data: {\"x\": \"" + b"y" * (17 * 1024 * 1024) + b"\"}\n\n"
    a.enqueue(Reply.sse([huge[i:i + 65536] for i in range(0, len(huge), 65536)], done=None))
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="oc-solo", messages=HI, stream=True)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert "oc-a" in info.value.message and "16 MiB" in info.value.message and "ValueError" not in info.value.message
    # Mid-stream: the client's own error frame says the same.
    a.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "Hel"}), huge], done=None))
    with pytest.raises(anthropic.APIStatusError) as info2:
        with claude.messages.stream(model="oc-solo", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
            for _ in stream:
                pass
    assert info2.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "16 MiB" in info2.value.body["error"]["message"]  # type: ignore[index]


def test_the_sse_reader_bounds_complete_lines_and_events_too() -> None:
    """The limit held only for a line still waiting for its end: one read holding a whole over-long line,
    or an event of many `data:` lines, was accepted at any size (and the error was a bare ValueError)."""
    for feed in ([b"data: " + b"x" * 2000 + b"\n\n"], [b"data: " + b"x" * 300 + b"\n"] * 10):
        parser = SSEParser(max_line_bytes=1024)
        with pytest.raises(InvalidUpstreamResponse) as info:
            for chunk in feed:
                parser.feed(chunk)
        assert isinstance(info.value, ValueError) and "1 KiB" in info.value.message
    # Lines split across many reads still parse as one, with CRLF split between reads too.
    parser = SSEParser()
    events: List[Any] = []
    for chunk in [b"event: a\r", b"\ndata: ", b"x" * 5, b"y" * 5, b"\r", b"\n\r\n", b"data: 2\n\n"]:
        events.extend(parser.feed(chunk))
    assert [(e.event, e.data) for e in events] == [("a", "xxxxxyyyyy"), (None, "2")]
    # A byte order mark opening the stream made its first field "\ufeffdata": the first event was lost.
    parser = SSEParser()
    assert [e.data for e in parser.feed(b"\xef\xbb\xbfdata: 1\n\n\xef\xbb\xbfdata: 2\n\n")] == ["1"]
