"""Anthropic server-tool blocks and text citations through the Anthropic codec, as pure functions: kept verbatim
(OpaquePart / OpaqueBlock, TextPart.annotations / TextAnnotation) for a client of this wire, in their place, both
directions, streamed and not; left out for any other wire."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List

import pytest
from anthropic.lib.streaming import _beta_messages, _messages

from routeplane.errors import InvalidRequest, InvalidUpstreamResponse
from routeplane.language_model.first_content import is_structural
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator, generation_to_parts
from routeplane.language_model.types import (
    FinishReason,
    Generation,
    Message,
    OpaqueBlock,
    OpaquePart,
    Prompt,
    ResponseStart,
    Role,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    ToolCallDelta,
    ToolCallStart,
    ToolResultPart,
    Usage,
)
from routeplane.protocols import anthropic_messages as an
from routeplane.protocols.anthropic_messages.request import decode_request, encode_request
from routeplane.protocols.anthropic_messages.response import decode_response, encode_response
from routeplane.protocols.base import OPAQUE_KEY
from routeplane.protocols.openai_chat.response import encode_response as chat_encode_response
from routeplane.protocols.sse import SSEEvent, iter_events

P = "anthropic_messages"
TARGET = RoutingTarget("anth", "claude-up", P, api_key="sk-ant-secret-key-123456")

SEARCH_USE = {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search",
              "input": {"query": "claude shannon birth date"}}
SEARCH_RESULT = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": [
    {"type": "web_search_result", "url": "https://en.wikipedia.org/wiki/Claude_Shannon",
     "title": "Claude Shannon - Wikipedia", "encrypted_content": "EqgfCioIARgBIiQ3YTAw", "page_age": "April 30, 2025"}]}
CITATION = {"type": "web_search_result_location", "url": "https://en.wikipedia.org/wiki/Claude_Shannon",
            "title": "Claude Shannon - Wikipedia", "encrypted_index": "Eo8BCioIAhgBIiQy",
            "cited_text": "Claude Elwood Shannon (April 30, 1916 – February 24, 2001) was an American mathematician"}
CITED = {"type": "text", "text": "Claude Shannon was born on April 30, 1916.", "citations": [CITATION]}
CONTENT = [{"type": "text", "text": "Let me search."}, SEARCH_USE, SEARCH_RESULT, CITED]

OTHER_BLOCKS = [
    {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_02",
     "content": {"type": "web_fetch_result", "url": "https://x.test", "content": {"type": "document", "source": {
         "type": "text", "media_type": "text/plain", "data": "x"}}}},
    {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_03",
     "content": {"type": "code_execution_result", "stdout": "2\n", "stderr": "", "return_code": 0, "content": []}},
    {"type": "bash_code_execution_tool_result", "tool_use_id": "srvtoolu_04",
     "content": {"type": "bash_code_execution_result", "stdout": "", "stderr": "", "return_code": 0, "content": []}},
    {"type": "text_editor_code_execution_tool_result", "tool_use_id": "srvtoolu_05",
     "content": {"type": "text_editor_code_execution_view_result", "content": "x", "file_type": "text"}},
    {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "echo", "server_name": "s", "input": {"a": 1}},
    {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "is_error": False,
     "content": [{"type": "text", "text": "1"}]},
    {"type": "container_upload", "file_id": "file_1"},
    {"type": "advisor_tool_result", "tool_use_id": "srvtoolu_06", "content": {"future": True}},
]


def _answer(content: List[Dict[str, Any]], stop: str = "end_turn") -> Dict[str, Any]:
    return {"id": "msg_ws", "type": "message", "role": "assistant", "model": "claude-up", "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 60, "output_tokens": 9, "server_tool_use": {"web_search_requests": 1}}}


def _client_prompt(**kw: Any) -> Prompt:
    return Prompt(model="m", messages=(Message(Role.USER, (TextPart("q"),)),), extras_protocol=P, **kw)


# --- 1. response decode -------------------------------------------------------------------------------------


def test_decode_keeps_server_tool_blocks_in_place_and_citations_as_annotations() -> None:
    gen = decode_response(_answer(CONTENT), TARGET)
    assert gen.parts == (
        TextPart("Let me search."),
        OpaquePart(P, SEARCH_USE),
        OpaquePart(P, SEARCH_RESULT),
        TextPart(CITED["text"], annotations=(CITATION,), annotations_protocol=P),
    )


@pytest.mark.parametrize("block", OTHER_BLOCKS, ids=[b["type"] for b in OTHER_BLOCKS])
def test_decode_keeps_every_other_unknown_block(block: Dict[str, Any]) -> None:
    gen = decode_response(_answer([{"type": "text", "text": "a"}, block, {"type": "text", "text": "b"}]), TARGET)
    assert gen.parts == (TextPart("a"), OpaquePart(P, block), TextPart("b"))


def test_decode_text_without_citations_has_no_annotations() -> None:
    gen = decode_response(_answer([{"type": "text", "text": "a", "citations": None},
                                   {"type": "text", "text": "b", "citations": []}]), TARGET)
    assert gen.parts == (TextPart("a"), TextPart("b"))


# --- 2. response encode -------------------------------------------------------------------------------------


def test_an_anthropic_client_gets_the_blocks_back_verbatim_in_order() -> None:
    gen = decode_response(_answer(CONTENT), TARGET)
    body = encode_response(gen, _client_prompt())
    assert body["content"] == CONTENT


def test_other_protocols_blocks_and_notes_are_left_out() -> None:
    gen = Generation(id="g", model="m", finish_reason=FinishReason.STOP, usage=Usage(), parts=(
        OpaquePart("openai_responses", {"type": "web_search_call", "id": "ws_1"}),
        TextPart("hi", annotations=({"type": "url_citation", "url": "https://x.test"},),
                 annotations_protocol="openai_responses"),
    ))
    assert encode_response(gen, _client_prompt())["content"] == [{"type": "text", "text": "hi"}]


def test_a_chat_client_of_an_anthropic_answer_gets_only_the_text() -> None:
    gen = decode_response(_answer(CONTENT), TARGET)
    chat_prompt = Prompt(model="m", messages=(Message(Role.USER, (TextPart("q"),)),), extras_protocol="openai_chat")
    message = chat_encode_response(gen, chat_prompt)["choices"][0]["message"]
    assert message["content"] == "Let me search." + CITED["text"]
    assert "srvtoolu_01" not in json.dumps(message)


# --- 3. stream decode ---------------------------------------------------------------------------------------


def _sse(content: List[Dict[str, Any]], stop: str = "end_turn") -> List[Dict[str, Any]]:
    """The events Anthropic streams for `content`: tool inputs as input_json_delta fragments (start `{}`),
    text as an empty start then citations_delta before its text_delta, other blocks whole in their start."""
    events: List[Dict[str, Any]] = [{"type": "message_start", "message": {
        **_answer([], stop), "content": [], "stop_reason": None, "usage": {"input_tokens": 60, "output_tokens": 1}}}]
    for i, block in enumerate(content):
        deltas: List[Dict[str, Any]] = []
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            deltas += [{"type": "citations_delta", "citation": c} for c in block.get("citations") or []]
            deltas.append({"type": "text_delta", "text": block["text"]})
        elif "input" in block:
            start = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in ("", raw[:7], raw[7:])]
        else:
            start = block
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                   "usage": {"output_tokens": 9, "server_tool_use": {"web_search_requests": 1}}})
    events.append({"type": "message_stop"})
    return events


def _decode_stream(events: List[Dict[str, Any]]) -> List[Any]:
    dec = an.PROVIDER.stream_decoder(TARGET)
    parts: List[Any] = []
    for e in events:
        parts += dec.feed(SSEEvent(json.dumps(e), e["type"]))
    return parts + dec.finish()


def test_stream_decode_gathers_each_block_and_relays_citations() -> None:
    parts = _decode_stream(_sse(CONTENT))
    assert [p for p in parts if isinstance(p, OpaqueBlock)] == [OpaqueBlock(1, P, SEARCH_USE),
                                                                OpaqueBlock(2, P, SEARCH_RESULT)]
    assert [p for p in parts if isinstance(p, TextAnnotation)] == [TextAnnotation(3, P, CITATION)]
    acc = GenerationAccumulator()
    for p in parts:
        acc.add(p)
    assert acc.parts() == decode_response(_answer(CONTENT), TARGET).parts


@pytest.mark.parametrize("block", OTHER_BLOCKS, ids=[b["type"] for b in OTHER_BLOCKS])
def test_stream_decode_gathers_every_other_block(block: Dict[str, Any]) -> None:
    parts = _decode_stream(_sse([block]))
    assert [p for p in parts if isinstance(p, OpaqueBlock)] == [OpaqueBlock(0, P, block)]


def test_stream_decode_merges_other_deltas_into_the_block() -> None:
    events = _sse([{"type": "compaction", "content": None}])
    events[2:2] = [{"type": "content_block_delta", "index": 0,
                    "delta": {"type": "compaction_delta", "content": "summary", "encrypted_content": "enc"}}]
    parts = _decode_stream(events)
    assert [p for p in parts if isinstance(p, OpaqueBlock)] == [
        OpaqueBlock(0, P, {"type": "compaction", "content": "summary", "encrypted_content": "enc"})]


def test_a_server_tools_broken_input_is_the_upstreams_failure() -> None:
    events = _sse([SEARCH_USE])
    events[3]["delta"]["partial_json"] = "{not json"
    with pytest.raises(InvalidUpstreamResponse):
        _decode_stream(events)


def test_a_server_tool_turn_is_held_until_its_block_completes() -> None:
    """Nothing the client sees leaves the decoder while a server tool runs: a failure then can still fall back."""
    dec = an.PROVIDER.stream_decoder(TARGET)
    early = []
    for e in _sse([SEARCH_USE])[:4]:  # message_start, content_block_start, two input_json_deltas
        early += dec.feed(SSEEvent(json.dumps(e), e["type"]))
    assert early and all(is_structural(p) for p in early), early


# --- 4. stream encode ---------------------------------------------------------------------------------------


def _encode(parts: List[Any], prompt: Prompt) -> bytes:
    enc = an.CLIENT.stream_encoder(prompt)
    return b"".join(enc.encode(p) for p in parts) + enc.close()


def _sdk_message(raw: bytes, beta: bool = False) -> Dict[str, Any]:
    """What the anthropic SDK's stream accumulator makes of the events (MessageStream.get_final_message); the
    beta one knows the MCP blocks."""
    snapshot, bufs = None, {}  # type: ignore[var-annotated]
    for ev in iter_events([raw]):
        assert ev.event == json.loads(ev.data)["type"]
        if beta:
            snapshot = _beta_messages.accumulate_event(event=json.loads(ev.data), current_snapshot=snapshot,
                                                       json_bufs=bufs, request_headers={})
        else:
            snapshot = _messages.accumulate_event(event=json.loads(ev.data), current_snapshot=snapshot,
                                                  json_bufs=bufs)
    assert snapshot is not None
    return snapshot.to_dict()


def test_stream_encode_writes_the_blocks_back_for_the_sdk() -> None:
    parts = _decode_stream(_sse(CONTENT))
    raw = _encode(parts, _client_prompt())
    message = _sdk_message(raw)
    assert message["content"] == CONTENT
    events = [json.loads(e.data) for e in iter_events([raw])]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [e["index"] for e in starts] == [0, 1, 2, 3]
    assert starts[1]["content_block"] == {**SEARCH_USE, "input": {}}  # the input follows as one input_json_delta
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1]
    assert deltas == [{"type": "input_json_delta", "partial_json": json.dumps(SEARCH_USE["input"],
                                                                                ensure_ascii=False)}]
    assert {"type": "citations_delta", "citation": CITATION} in [e.get("delta") for e in events]


def test_stream_encode_of_an_exploded_generation_matches_the_unstreamed_answer() -> None:
    gen = decode_response(_answer(CONTENT + OTHER_BLOCKS), TARGET)
    raw = _encode(list(generation_to_parts(gen)), _client_prompt())
    assert _sdk_message(raw, beta=True)["content"] == CONTENT + OTHER_BLOCKS


def test_stream_encode_queues_an_opaque_block_behind_an_unfinished_tool_call() -> None:
    parts = [ResponseStart("r", "m"), ToolCallStart(0, "toolu_1", "f"), ToolCallDelta(0, '{"a":'),
             OpaqueBlock(1, P, SEARCH_RESULT), ToolCallDelta(0, "1}"), TextStart(2), TextDelta(2, "ok"), TextEnd(2)]
    content = _sdk_message(_encode(parts, _client_prompt()))["content"]
    assert content == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}, SEARCH_RESULT,
                       {"type": "text", "text": "ok"}]


def test_a_citation_without_its_start_marker_opens_the_text_block() -> None:
    parts = [ResponseStart("r", "m"), TextAnnotation(0, P, CITATION), TextDelta(0, "cited"), TextEnd(0)]
    assert _sdk_message(_encode(parts, _client_prompt()))["content"] == [
        {"type": "text", "text": "cited", "citations": [CITATION]}]


def test_stream_encode_skips_other_protocols_blocks_and_notes() -> None:
    parts = [ResponseStart("r", "m"), OpaqueBlock(0, "gemini", {"executableCode": {"code": "1"}}),
             TextStart(1), TextAnnotation(1, "openai_responses", {"type": "url_citation"}), TextDelta(1, "hi"),
             TextEnd(1)]
    raw = _encode(parts, _client_prompt())
    assert _sdk_message(raw)["content"] == [{"type": "text", "text": "hi"}]
    assert b"executableCode" not in raw and b"url_citation" not in raw


# --- 5. request decode and encode ---------------------------------------------------------------------------


def _history(assistant: List[Dict[str, Any]], *more: Dict[str, Any]) -> Dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "When was Claude Shannon born?"},
        {"role": "assistant", "content": assistant},
        {"role": "user", "content": "Thanks. And when did he die?"}, *more]}


def test_request_decode_keeps_server_tool_blocks_and_names_the_first() -> None:
    prompt = decode_request(_history(copy.deepcopy(CONTENT)))
    assert prompt.messages[1].parts == (
        TextPart("Let me search."),
        OpaquePart(P, SEARCH_USE, "messages[1].content[1]"),
        OpaquePart(P, SEARCH_RESULT, "messages[1].content[2]"),
        TextPart(CITED["text"], annotations=(CITATION,), annotations_protocol=P),
    )
    assert prompt.extras[OPAQUE_KEY] == "messages[1].content[1]"


def test_request_without_opaque_blocks_sets_no_path() -> None:
    prompt = decode_request(_history([{"type": "text", "text": "Born 1916.", "citations": [CITATION]}]))
    assert OPAQUE_KEY not in prompt.extras
    assert prompt.messages[1].parts[0].annotations == (CITATION,)


@pytest.mark.parametrize("block", OTHER_BLOCKS, ids=[b["type"] for b in OTHER_BLOCKS])
def test_request_decode_keeps_every_other_assistant_block(block: Dict[str, Any]) -> None:
    prompt = decode_request(_history([{"type": "text", "text": "a"}, block]))
    assert prompt.messages[1].parts[1] == OpaquePart(P, block, "messages[1].content[1]")


def test_request_decode_keeps_a_users_search_results_and_container_uploads() -> None:
    search = {"type": "search_result", "source": "https://kb.test/a", "title": "A",
              "content": [{"type": "text", "text": "Shannon died in 2001."}], "citations": {"enabled": True}}
    upload = {"type": "container_upload", "file_id": "file_9"}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [search]}
    body = {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Use these."}, search, upload]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "kb", "input": {}}]},
        {"role": "user", "content": [result]}]}
    prompt = decode_request(copy.deepcopy(body))
    assert prompt.messages[0].parts[1:] == (OpaquePart(P, search, "messages[0].content[1]"),
                                            OpaquePart(P, upload, "messages[0].content[2]"))
    assert prompt.messages[2].parts[0] == ToolResultPart("toolu_1", (OpaquePart(P, search,
                                                                                "messages[2].content[0].content[0]"),))
    assert prompt.extras[OPAQUE_KEY] == "messages[0].content[1]"
    sent = encode_request(prompt, TARGET, stream=False)
    assert sent["messages"] == body["messages"]


def test_a_tool_results_search_result_is_the_first_path_when_alone() -> None:
    search = {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "x"}]}
    body = {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "kb", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [search]}]}]}
    assert decode_request(body).extras[OPAQUE_KEY] == "messages[2].content[0].content[0]"


def test_unknown_user_blocks_are_still_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_request({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": [{"type": "server_tool_use", "id": "x", "name": "web_search", "input": {}}]}]})
    assert info.value.param == "messages[0].content[0].type"


def test_request_encode_sends_the_history_back_verbatim() -> None:
    body = _history(copy.deepcopy(CONTENT + OTHER_BLOCKS))
    sent = encode_request(decode_request(copy.deepcopy(body)), TARGET, stream=False)
    assert sent["messages"][1] == body["messages"][1]


def test_a_users_text_citations_reach_an_anthropic_upstream_which_judges_them() -> None:
    """Anthropic refuses them under version 2026-10-21 and takes them before: the upstream of the client's
    version decides, rather than the gateway dropping them unseen."""
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": [copy.deepcopy(CITED)]}]}
    sent = encode_request(decode_request(copy.deepcopy(body)), TARGET, stream=False)
    assert sent["messages"] == body["messages"]


def test_other_wires_notes_and_blocks_do_not_reach_anthropic() -> None:
    prompt = Prompt(model="m", messages=(
        Message(Role.USER, (TextPart("q"),)),
        Message(Role.ASSISTANT, (OpaquePart("gemini", {"executableCode": {"code": "1"}}),
                                 TextPart("a", annotations=({"type": "url_citation"},),
                                          annotations_protocol="openai_responses"))),
    ))
    assert encode_request(prompt, TARGET, stream=False)["messages"][1] == {
        "role": "assistant", "content": [{"type": "text", "text": "a"}]}


# --- 6. pause_turn ------------------------------------------------------------------------------------------


def test_pause_turn_round_trips_streamed_and_not() -> None:
    paused = CONTENT[:2]
    gen = decode_response(_answer(paused, "pause_turn"), TARGET)
    assert gen.finish_reason is FinishReason.PAUSE
    assert encode_response(gen, _client_prompt())["stop_reason"] == "pause_turn"
    message = _sdk_message(_encode(_decode_stream(_sse(paused, "pause_turn")), _client_prompt()))
    assert message["stop_reason"] == "pause_turn" and message["content"] == paused
