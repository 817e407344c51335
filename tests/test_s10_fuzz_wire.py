"""Each field session 10 taught the decoders to read (or the same-wire encoders to write back), given a value
of the wrong type by a real (local) upstream: a client of every wire, plain and streamed, gets an answer or a
clean error in its own wire, never a 500 nor a logged traceback. The whole path runs: the requests executor,
the pipeline, the blueprint's encoder."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any, Dict, List, Tuple

import pytest

from routeplane.app import build_app
from routeplane.config import parse_config
from routeplane.protocols.sse import SSEParser
from routeplane.testing import wire_path
from tests.support.upstream import FakeUpstream, Reply, running_upstream
from tests.support.wires import ALL_WIRES, via_wires_config
from tests.test_s10_fuzz import RESPONSE_SEEDS, STREAM_SEEDS

WRONG = ({}, [], 5)  # an object, an array, a number: where a field of another type (or a string) was read

# (upstream wire, streamed, seed index, event index (streams), path to the field)
PLAIN = [
    ("openai_chat", 0, ("service_tier",)),
    ("openai_chat", 0, ("system_fingerprint",)),
    ("openai_chat", 0, ("choices", 0, "message", "annotations")),
    ("openai_chat", 0, ("choices", 0, "message", "annotations", 0)),
    ("openai_chat", 0, ("choices", 0, "message", "annotations", 0, "url_citation")),
    ("openai_chat", 0, ("choices", 0, "message", "annotations", 0, "url_citation", "start_index")),
    ("openai_chat", 0, ("choices", 0, "logprobs")),
    ("openai_chat", 1, ("choices", 0, "message", "content", 0)),
    ("openai_chat", 2, ("choices", 0, "error")),
    ("openai_chat", 2, ("choices", 0, "error", "code")),
    ("openai_chat", 2, ("choices", 0, "error", "param")),
    ("openai_responses", 0, ("service_tier",)),
    ("openai_responses", 0, ("output", 1, "phase")),
    ("openai_responses", 0, ("output", 5, "phase")),
    ("openai_responses", 0, ("output", 2, "content", 0)),
    ("openai_responses", 0, ("output", 0, "id")),
    ("openai_responses", 0, ("output", 0, "encrypted_content")),
    ("openai_responses", 0, ("output", 0, "summary")),
    ("openai_responses", 0, ("output", 0, "summary", 1)),
    ("openai_responses", 0, ("output", 0, "summary", 1, "text")),
    ("openai_responses", 0, ("output", 3, "content")),
    ("openai_responses", 0, ("output", 5, "content", 0, "annotations")),
    ("openai_responses", 0, ("output", 5, "content", 0, "annotations", 0)),
    ("openai_responses", 0, ("output", 5, "content", 0, "annotations", 0, "end_index")),
    ("openai_responses", 0, ("output", 5, "content", 0, "logprobs")),
    ("openai_responses", 0, ("output", 7, "call_id")),
    ("gemini", 0, ("candidates", 0, "groundingMetadata")),
    ("gemini", 0, ("candidates", 0, "groundingMetadata", "groundingChunks", 0)),
    ("gemini", 0, ("candidates", 0, "safetyRatings")),
    ("gemini", 0, ("candidates", 0, "citationMetadata")),
    ("gemini", 0, ("candidates", 0, "citationMetadata", "citations")),
    ("gemini", 0, ("candidates", 0, "finishMessage")),
    ("gemini", 0, ("candidates", 0, "finishReason")),
    ("gemini", 0, ("candidates", 0, "avgLogprobs")),
    ("gemini", 0, ("promptFeedback",)),
    ("gemini", 0, ("candidates", 0, "content", "parts", 3, "functionCall", "args")),
    ("gemini", 1, ("promptFeedback", "blockReason")),
    ("anthropic_messages", 0, ("content", 0, "citations")),
    ("anthropic_messages", 0, ("usage", "service_tier")),
]
STREAMED = [
    ("openai_chat", 0, 0, ("prompt_filter_results",)),
    ("openai_chat", 0, 0, ("id",)),
    ("openai_chat", 0, 1, ("service_tier",)),
    ("openai_chat", 0, 1, ("system_fingerprint",)),
    ("openai_chat", 0, 2, ("usage",)),
    ("openai_chat", 0, 3, ("choices", 0, "logprobs")),
    ("openai_chat", 0, 4, ("choices", 0, "delta", "annotations")),
    ("openai_chat", 0, 4, ("choices", 0, "delta", "annotations", 0)),
    ("openai_chat", 0, 4, ("choices", 0, "delta", "annotations", 0, "url_citation")),
    ("openai_chat", 0, 6, ("choices", 0, "usage")),
    ("openai_chat", 0, 7, ("usage",)),
    ("openai_chat", 3, 1, ("choices", 0, "error")),
    ("openai_chat", 3, 1, ("choices", 0, "error", "param")),
    ("openai_responses", 0, 1, ("item", "id")),
    ("openai_responses", 0, 3, ("item_id",)),
    ("openai_responses", 0, 6, ("item", "summary")),
    ("openai_responses", 0, 6, ("item", "summary", 1)),
    ("openai_responses", 0, 6, ("item", "encrypted_content")),
    ("openai_responses", 0, 7, ("item", "phase")),
    ("openai_responses", 0, 10, ("annotation",)),
    ("openai_responses", 0, 12, ("item", "phase")),
    ("openai_responses", 0, 13, ("item",)),
    ("openai_responses", 0, 13, ("item", "id")),
    ("openai_responses", 0, 14, ("item", "summary")),
    ("openai_responses", 0, 15, ("response", "service_tier")),
    ("openai_responses", 0, 15, ("response", "output")),
    ("openai_responses", 0, 15, ("response", "output", 4)),
    ("openai_responses", 0, 15, ("response", "output", 4, "id")),
    ("openai_responses", 0, 15, ("response", "output", 4, "phase")),
    ("openai_responses", 0, 15, ("response", "output", 4, "content", 0, "annotations")),
    ("openai_responses", 0, 15, ("response", "output", 6, "summary")),
    ("openai_responses", 0, 15, ("response", "output", 6, "id")),
    ("openai_responses", 1, 4, ("item", "phase")),
    ("openai_responses", 1, 9, ("annotation",)),
    ("openai_responses", 1, 12, ("annotation",)),
    ("gemini", 0, 0, ("candidates", 0, "safetyRatings")),
    ("gemini", 0, 0, ("promptFeedback",)),
    ("gemini", 0, 1, ("candidates", 0, "citationMetadata")),
    ("gemini", 0, 1, ("candidates", 0, "citationMetadata", "citations")),
    ("gemini", 0, 2, ("candidates", 0, "citationMetadata", "citations")),
    ("gemini", 0, 2, ("candidates", 0, "content", "parts", 1, "functionCall")),
    ("gemini", 0, 3, ("candidates", 0, "groundingMetadata")),
    ("gemini", 0, 3, ("candidates", 0, "finishMessage")),
    ("gemini", 0, 3, ("candidates", 0, "finishReason")),
    ("gemini", 1, 0, ("promptFeedback", "blockReason")),
    ("anthropic_messages", 0, 3, ("delta", "signature")),
    ("anthropic_messages", 0, 13, ("delta", "citation")),
    ("anthropic_messages", 0, 16, ("usage", "server_tool_use")),
    ("anthropic_messages", 1, 5, ("error",)),
    ("anthropic_messages", 1, 5, ("error", "details")),
    ("anthropic_messages", 1, 5, ("error", "details", "error_code")),
    ("anthropic_messages", 1, 5, ("error", "type")),
]
# An Anthropic upstream's error answer at the statuses it names its own types for; its `details` mistyped.
ANTHROPIC_ERROR = {"type": "error", "error": {"type": "billing_error", "message": "no credit",
                                              "details": {"error_code": "thread_not_found"}}, "request_id": "req_1"}
ERRORS = [(status, path) for status in (400, 402, 429, 529)
          for path in (("error", "details"), ("error", "details", "error_code"), ("error", "type"), ("request_id",))]


def _set(value: Any, path: Tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]]  # the case names a field the seed has
    parent[path[-1]] = copy.deepcopy(new)
    return out


# A new connection each call: a reused one waits out a delayed ACK (~40 ms) between the fake's writes.
FRESH = {"Connection": "close"}


def _sse(events: List[Tuple[Any, Any]]) -> Reply:
    raw = [(f"event: {name}\n" if name else "") + f"data: {d if isinstance(d, str) else json.dumps(d)}\n\n"
           for name, d in events]
    return Reply.sse(raw, done=None, headers=FRESH)


CLIENT_BODIES: Dict[str, Dict[str, Any]] = {
    "openai_chat": {"messages": [{"role": "user", "content": "hi"}]},
    "openai_responses": {"input": "hi"},
    "anthropic_messages": {"max_tokens": 64, "messages": [{"role": "user", "content": "hi"}],
                           "thinking": {"type": "enabled", "budget_tokens": 1024}},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "generationConfig": {"thinkingConfig": {"includeThoughts": True}}},
}


upstream = pytest.fixture(scope="module", name="upstream")(running_upstream)


@pytest.fixture(scope="module")
def client(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = via_wires_config(upstream.url)
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('s10fuzz')}/rp.db"}
    return build_app(parse_config(config, "test")).flask_app().test_client()


def _every_client(client: Any, upstream: FakeUpstream, wire: str, reply: Reply, stream: bool,
                  caplog: pytest.LogCaptureFixture) -> None:
    """`reply` from the `wire` upstream, to a client of every wire: a clean answer or error, nothing logged."""
    upstream.default = lambda _req: reply  # retries and fallbacks get the same answer
    for client_wire in ALL_WIRES:
        caplog.clear()
        body = {**CLIENT_BODIES[client_wire]}
        if client_wire != "gemini":
            body.update(model=f"via-{wire}", stream=stream)
        path = wire_path(client_wire, model=f"via-{wire}", stream=stream)
        resp = client.post(path, json=body)
        data = resp.get_data()
        where = (wire, client_wire, stream, resp.status_code, data[:400])
        assert resp.status_code != 500, where
        crashes = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert not crashes, (where, [r.getMessage() for r in crashes])
        if resp.status_code >= 400 or not stream:
            out = json.loads(data)
            assert resp.status_code < 400 or "error" in json.dumps(out), where
            continue
        parser = SSEParser(max_line_bytes=1 << 26)
        for ev in parser.feed(data) + parser.finish():
            if ev.data != "[DONE]":
                frame = json.loads(ev.data)
                assert "internal" not in json.dumps(frame).lower(), where


@pytest.mark.parametrize("value", WRONG, ids=repr)
@pytest.mark.parametrize(("wire", "seed", "path"), PLAIN, ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_plain_field_of_the_wrong_type(client: Any, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
                                       wire: str, seed: int, path: Tuple[Any, ...], value: Any) -> None:
    reply = Reply.json(_set(RESPONSE_SEEDS[wire][seed], path, value), headers=FRESH)
    _every_client(client, upstream, wire, reply, False, caplog)


@pytest.mark.parametrize("value", WRONG, ids=repr)
@pytest.mark.parametrize(("wire", "seed", "event", "path"), STREAMED,
                         ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_streamed_field_of_the_wrong_type(client: Any, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
                                          wire: str, seed: int, event: int, path: Tuple[Any, ...], value: Any) -> None:
    events = copy.deepcopy(STREAM_SEEDS[wire][seed])
    name, data = events[event]
    events[event] = (name, _set(data, path, value))
    _every_client(client, upstream, wire, _sse(events), True, caplog)


@pytest.mark.parametrize("value", WRONG, ids=repr)
@pytest.mark.parametrize(("status", "path"), ERRORS, ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_anthropic_error_body_of_the_wrong_type(client: Any, upstream: FakeUpstream,
                                                caplog: pytest.LogCaptureFixture, status: int,
                                                path: Tuple[Any, ...], value: Any) -> None:
    reply = Reply.json(_set(ANTHROPIC_ERROR, path, value), status=status, headers=FRESH)
    for stream in (False, True):
        _every_client(client, upstream, "anthropic_messages", reply, stream, caplog)


@pytest.mark.parametrize("wire", ALL_WIRES)
@pytest.mark.parametrize("status", [400, 429])
def test_deeply_nested_error_body_keeps_its_status(client: Any, upstream: FakeUpstream,
                                                   caplog: pytest.LogCaptureFixture, wire: str, status: int) -> None:
    """An upstream error whose JSON body nests past the recursion limit was a 500 (RecursionError) on every wire."""
    upstream.default = lambda _req: Reply(status, {"Content-Type": "application/json", **FRESH}, b"[" * 100_000)
    resp = client.post("/v1/chat/completions", json={"model": f"via-{wire}", **CLIENT_BODIES["openai_chat"]})
    assert resp.status_code == status, resp.get_data()[:300]
    assert not [r for r in caplog.records if r.exc_info]
    _every_client(client, upstream, wire, upstream.default(None), True, caplog)
