"""Final review (session 8): edge cases of the provider blocks kept on their own wire and of their
accounting, each found failing before its fix."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import OpaqueBlock, StreamPart
from routeplane.protocols.openai_responses.stream_decode import ResponsesStreamDecoder
from routeplane.protocols.sse import SSEEvent

R_TARGET = RoutingTarget("up", "gpt-x", "openai_responses", base_url="http://x/v1", api_key="sk-test")


def _feed(decoder: Any, events: List[Dict[str, Any]]) -> List[StreamPart]:
    parts: List[StreamPart] = []
    for e in events:
        parts += decoder.feed(SSEEvent(event=e["type"], data=json.dumps(e)))
    return parts


def test_responses_hosted_item_done_without_output_index_comes_out_once() -> None:
    """A compatible server that names the output_index on `added` only: the done item was still
    pending at the terminal event, so the web search came out twice (two OpaqueBlocks, two items)."""
    done = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}
    parts = _feed(ResponsesStreamDecoder(R_TARGET), [
        {"type": "response.created", "response": {"id": "r", "model": "m", "created_at": 1}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "web_search_call", "id": "ws_1", "status": "in_progress"}},
        {"type": "response.output_item.done", "item": done},
        {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": [done],
                                                    "usage": {"input_tokens": 1, "output_tokens": 1}}},
    ])
    blocks = [p for p in parts if isinstance(p, OpaqueBlock)]
    assert [b.block for b in blocks] == [done]


IMAGE = "iVBORw0KGgo" * 40_000  # a generated image's base64, ~440 kB


def test_a_generated_image_in_the_history_is_not_estimated_as_text() -> None:
    """A Gemini chat with an image the model made goes back with it (inlineData in a model turn, kept
    whole), and a Responses one with its image_generation_call's base64 `result`: the estimates (budget
    reservations, count_tokens, usage without a report) read the base64 as text, 110,000 tokens an
    image, where a user's own image counts nothing; a budget refused the next turn."""
    from routeplane.language_model.stream import estimate_usage, output_chars
    from routeplane.language_model.types import Generation, OpaquePart, Usage
    from routeplane.protocols.gemini.request import decode_request as gemini_request
    from routeplane.protocols.openai_responses.request import decode_request as responses_request

    gem = gemini_request({"contents": [
        {"role": "user", "parts": [{"text": "draw a cat"}]},
        {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": IMAGE}}]},
        {"role": "user", "parts": [{"text": "now a dog"}]}]}, "gemini-x")
    assert estimate_usage(gem, 0).input_tokens < 100
    resp = responses_request({"model": "gpt-x", "input": [
        {"role": "user", "content": "draw a cat"},
        {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": IMAGE},
        {"role": "user", "content": "now a dog"}]})
    assert estimate_usage(resp, 0).input_tokens < 100
    gen = Generation("g", "m", (OpaquePart("gemini", {"inlineData": {"mimeType": "image/png", "data": IMAGE}}),),
                     None, Usage())
    assert output_chars(gen) < 200
    # A fetched page still counts: the upstream reads it all.
    page = OpaquePart("anthropic_messages", {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_1", "content": {
        "type": "web_fetch_result", "url": "https://e.x", "content": {"type": "document", "source": {
            "type": "text", "media_type": "text/plain", "data": "word " * 4000}}}})
    assert output_chars(Generation("g", "m", (page,), None, Usage())) > 20_000


def test_a_stream_whose_terminal_event_lists_no_output_still_counts_its_web_searches() -> None:
    """A compatible server's response.completed without the `output` items it streamed: the hosted
    calls were counted from that list only, so the searches the stream carried cost nothing."""
    done = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}
    parts = _feed(ResponsesStreamDecoder(R_TARGET), [
        {"type": "response.created", "response": {"id": "r", "model": "m", "created_at": 1}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**done, "status": "in_progress"}},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": {"id": "r", "status": "completed",
                                                    "usage": {"input_tokens": 1, "output_tokens": 1}}},
    ])
    usage = [p.usage for p in parts if type(p).__name__ == "UsageUpdate"][-1]
    assert usage.tool_calls == (("web_search", 1),)


def test_a_flush_after_the_worker_stopped_starts_no_new_worker(tmp_path: Any) -> None:
    """The flush thread that woke as the worker stopped (or an admin page still being answered) called
    flush_now after stop(): the stopped flusher drew a new worker id and started a new flush thread, so
    the worker's plugin totals were stored twice (summed by every reader) and kept being rewritten."""
    import threading

    from routeplane.app import build_app
    from tests.test_breaker_view import app_config

    def flushers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "routeplane-stats-flush" and t.is_alive())

    app = build_app(app_config(f"sqlite:///{tmp_path}/g.db"))
    client = app.flask_app().test_client()
    client.get("/admin/metrics").close()
    flusher = app.stats_flusher
    worker = flusher.worker
    running = flushers()
    app.shutdown()
    try:
        flusher.flush_now()
        assert flusher._worker == worker
        assert flushers() <= running
    finally:
        app.store.close()


def test_a_server_tool_input_nested_too_deep_is_the_upstreams_fault() -> None:
    """A streamed server_tool_use whose input fragments nest past the parser's depth raised a bare
    RecursionError out of the decoder (an internal error) instead of the invalid-upstream error."""
    import pytest

    from routeplane.errors import InvalidUpstreamResponse
    from routeplane.protocols.anthropic_messages.stream_decode import MessagesStreamDecoder

    target = RoutingTarget("up", "claude-x", "anthropic_messages", base_url="http://x", api_key="k")
    dec = MessagesStreamDecoder(target)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "input_json_delta", "partial_json": "[" * 100_000}},
    ]
    _feed(dec, events)
    with pytest.raises(InvalidUpstreamResponse):
        _feed(dec, [{"type": "content_block_stop", "index": 0}])


def test_a_stream_event_nested_too_deep_is_the_upstreams_fault() -> None:
    """An SSE event nested past the JSON parser's depth: a bare RecursionError out of each decoder."""
    import pytest

    from routeplane.errors import InvalidUpstreamResponse
    from routeplane.protocols.anthropic_messages.stream_decode import MessagesStreamDecoder
    from routeplane.protocols.gemini.stream import GeminiStreamDecoder
    from routeplane.protocols.openai_chat.stream import ChatStreamDecoder

    deep = '{"a":' + "[" * 100_000
    for decoder in (ResponsesStreamDecoder(R_TARGET),
                    MessagesStreamDecoder(RoutingTarget("up", "c", "anthropic_messages", base_url="http://x")),
                    GeminiStreamDecoder(RoutingTarget("up", "g", "gemini", base_url="http://x")),
                    ChatStreamDecoder(RoutingTarget("up", "o", "openai_chat", base_url="http://x"))):
        with pytest.raises(InvalidUpstreamResponse):
            decoder.feed(SSEEvent(event="message", data=deep))


@pytest.mark.parametrize("wire", ["openai_responses", "gemini"])
def test_a_hooks_underscore_extra_never_reaches_the_upstream(wire: str) -> None:
    """Chat and Anthropic filter `_` keys (the gateway's and plugins' own notes) out of the upstream body;
    Responses and Gemini copied any a hook added."""
    import dataclasses

    from routeplane.protocols.gemini.request import decode_request as gemini_decode
    from routeplane.protocols.gemini.request import encode_request as gemini_encode
    from routeplane.protocols.openai_responses.request import decode_request as responses_decode
    from routeplane.protocols.openai_responses.request import encode_request as responses_encode

    if wire == "gemini":
        prompt = gemini_decode({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, model="m", stream=False)
        encode = gemini_encode
    else:
        prompt = responses_decode({"model": "m", "input": "hi"})
        encode = responses_encode
    prompt = dataclasses.replace(prompt, extras={**prompt.extras, "_plugin_note": "secret-ish"})
    body = encode(prompt, RoutingTarget("up", "m", wire, base_url="http://127.0.0.1:9"), False)
    assert not any(k.startswith("_") for k in body)
