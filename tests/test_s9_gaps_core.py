"""Three gaps: an opaque block of another wire does not end the first-content hold; "failed mid-stream" only
once content reached the client; the kit's `identity=` reaches count_tokens' dry run.

In process (the Flask test client) against two scripted upstreams (A first, B behind it, tests/support/wires.py)."""

from __future__ import annotations

import json
from typing import Any, Iterator, List, Tuple

import pytest

from routeplane.app import build_app
from routeplane.config import parse_config
from routeplane.hooks.language_model import HookDecision, PreRequestHook
from routeplane.language_model.context import Identity
from routeplane.testing import Gateway, Result
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import fallback_pair_config

KEY = "sk-upstream-secret-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]
AN_START = {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant",
                                                 "model": "up", "content": [], "stop_reason": None,
                                                 "usage": {"input_tokens": 3, "output_tokens": 0}}}
SERVER_TOOL_USE = [
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"shannon\"}"}},
    {"type": "content_block_stop", "index": 0},
]
AN_OPEN_TEXT = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def an_answer(text: str) -> Reply:
    start = {**AN_START, "message": {**AN_START["message"], "id": "msg_b"}}
    return Reply.anthropic_sse([
        start, AN_OPEN_TEXT, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"}])


@pytest.fixture(scope="module")
def client(servers: Tuple[FakeUpstream, FakeUpstream]) -> Iterator[Any]:
    config = fallback_pair_config((servers[0].url, servers[1].url), KEY)
    config["database"] = {"url": ""}
    yield build_app(parse_config(config, "<test>")).flask_app().test_client()


def sse(body: bytes) -> List[Any]:
    return [json.loads(line[6:]) for line in body.decode().splitlines()
            if line.startswith("data: ") and line[6:] != "[DONE]"]


# --- 1. an opaque block of another wire keeps the hold -----------------------------------------------


def test_a_server_tool_block_a_chat_client_never_sees_does_not_end_the_hold(ups: Any, client: Any) -> None:
    """A's Anthropic `server_tool_use`, then overloaded: an OpenAI Chat client got nothing of A (its encoder
    drops the block), so B answers, as for any failure before the first content."""
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, *SERVER_TOOL_USE, OVERLOADED]))
    b.enqueue(an_answer("from b"))
    resp = client.post("/v1/chat/completions", json={"model": "an", "messages": HI, "stream": True})
    body = resp.get_data()
    assert resp.status_code == 200, body
    chunks = sse(body)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "from b"
    assert not any("error" in c for c in chunks)
    assert len(b.requests) == 1


def test_the_same_block_for_an_anthropic_client_is_content_and_ends_the_hold(ups: Any, client: Any) -> None:
    """An Anthropic client gets the block itself: it was sent, so the failure after it is an error frame."""
    a, b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, *SERVER_TOOL_USE, OVERLOADED]))
    resp = client.post("/v1/messages", json={"model": "an", "max_tokens": 5, "messages": HI, "stream": True})
    events = sse(resp.get_data())
    assert resp.status_code == 200
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == ["server_tool_use"]
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "overloaded_error"
    assert len(b.requests) == 0


# --- 2. "failed mid-stream" only once the client's stream is under way --------------------------------

INVALID = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}


def test_an_error_event_before_the_first_content_is_not_called_mid_stream(ups: Any, client: Any) -> None:
    """The upstream answered 200 and opened its stream, then failed: the client got a plain HTTP 400, no stream."""
    a, _b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, AN_OPEN_TEXT, INVALID]))
    resp = client.post("/v1/chat/completions", json={"model": "an", "messages": HI, "stream": True})
    assert resp.status_code == 400
    assert resp.json["error"]["message"] == "an-a failed: (invalid_request_error) prompt is too long"


def test_an_error_event_after_content_reached_the_client_is_mid_stream(ups: Any, client: Any) -> None:
    a, _b = ups
    a.enqueue(Reply.anthropic_sse([AN_START, AN_OPEN_TEXT, {"type": "content_block_delta", "index": 0,
                                                            "delta": {"type": "text_delta", "text": "Hel"}},
                                   OVERLOADED]))
    resp = client.post("/v1/chat/completions", json={"model": "an", "messages": HI, "stream": True})
    chunks = sse(resp.get_data())
    assert resp.status_code == 200
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "Hel"
    assert chunks[-1]["error"]["message"] == "an-a failed mid-stream: (overloaded_error) Overloaded"


# --- 3. the kit's identity= reaches count_tokens' dry run ---------------------------------------------


class WhoIsCalling(PreRequestHook):
    """Notes the caller every check sees; `authenticates` so Gemini's countTokens runs it too."""

    authenticates = True

    def __init__(self) -> None:
        self.seen: List[Any] = []

    def check(self, ctx: Any) -> HookDecision:
        self.seen.append((ctx.dry_run, ctx.identity))
        return HookDecision.allow()


def test_count_tokens_runs_as_the_given_caller() -> None:
    who = WhoIsCalling()
    gw = Gateway(hooks=[who])
    alice = Identity(account_id="acct-alice", kind="api_key", models=("default",))
    counted: Result = gw.request({"model": "default", "messages": HI}, path="/v1/messages/count_tokens",
                                 identity=alice)
    assert counted.status == 200 and counted.json["input_tokens"] >= 1
    gemini = gw.request({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                        path="/v1beta/models/default:countTokens", identity=alice)
    assert gemini.status == 200 and gemini.json["totalTokens"] >= 1
    assert gw.chat("hi", identity=alice).status == 200
    assert who.seen == [(True, alice), (True, alice), (False, alice)]
    who.seen.clear()
    assert gw.request({"model": "default", "messages": HI}, path="/v1/messages/count_tokens").status == 200
    assert who.seen[0][1].account_id is None  # anonymous again: the caller does not outlive its request


# --- time to first token counts what the client's wire shows --------------------------------------


@pytest.mark.parametrize("wire, late", [("openai_chat", True), ("anthropic_messages", False)])
def test_time_to_first_token_skips_an_opaque_block_the_clients_wire_drops(wire: str, late: bool) -> None:
    """A web search block reaches an Anthropic client at once; a Chat client sees nothing until the text,
    so its time to first token is the text's (here 300 ms later)."""
    from routeplane.hooks.language_model import StreamAction, StreamHook, StreamInterest
    from routeplane.language_model.types import (
        Finish,
        FinishReason,
        OpaqueBlock,
        ResponseStart,
        TextDelta,
        TextEnd,
        TextStart,
        Usage,
        UsageUpdate,
    )

    class SlowText(StreamHook):
        def interest(self) -> StreamInterest:
            return StreamInterest.ALL

        def on_part(self, ctx: Any, part: Any) -> StreamAction:
            if isinstance(part, TextDelta):
                __import__("time").sleep(0.3)
            return StreamAction.pass_()

    block = {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "q"}}
    parts = [ResponseStart("r", "m"), OpaqueBlock(0, "anthropic_messages", block), TextStart(1), TextDelta(1, "hi"),
             TextEnd(1), UsageUpdate(Usage(input_tokens=3, output_tokens=1)), Finish(FinishReason.STOP)]
    gw = Gateway(hooks=[SlowText()], script=[parts])
    r = gw.request({"model": "default", "messages": HI, "stream": True,
                    **({"max_tokens": 16} if wire == "anthropic_messages" else {})}, wire=wire)
    assert r.status == 200
    [s] = r.settlements
    assert s.ttft_ms is not None and (s.ttft_ms >= 300) is late, s.ttft_ms
