"""Responses hosted-tool items (web_search_call, mcp_call, ...) and output_text annotations survive the gateway on
their own wire: decoded as OpaquePart / TextPart.annotations, written back in place, streamed as whole items, sent
back in `input`; another wire's request holding one is a 400 naming it, and is never a fallback's."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from openai import APIStatusError, BadRequestError, OpenAI

from routeplane.errors import InvalidRequest
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator, generation_to_parts
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    Message,
    OpaqueBlock,
    OpaquePart,
    Prompt,
    Role,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
)
from routeplane.protocols import openai_responses as wire
from routeplane.protocols.base import OPAQUE_KEY
from routeplane.protocols.sse import iter_events
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import responses_sse

PROTOCOL = "openai_responses"
TARGET = RoutingTarget("up", "gpt-x", PROTOCOL, base_url="http://x/v1", api_key="sk-test")
TEXT = "Paris hosts the expo [1] and the marathon [2]."
WS_ITEM: Dict[str, Any] = {"id": "ws_1", "action": {"type": "search", "query": "paris news",
                                                   "sources": [{"type": "url", "url": "https://news.example/a"}]},
                           "status": "completed", "type": "web_search_call"}
ANNS: List[Dict[str, Any]] = [
    {"end_index": 24, "start_index": 21, "title": "Expo", "type": "url_citation", "url": "https://news.example/a"},
    {"end_index": 45, "start_index": 42, "title": "Run", "type": "url_citation", "url": "https://news.example/b"},
]
MESSAGE: Dict[str, Any] = {"id": "msg_1", "content": [{"annotations": ANNS, "text": TEXT, "type": "output_text",
                                                      "logprobs": []}],
                           "role": "assistant", "status": "completed", "type": "message"}
MCP_LIST = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "docs",
            "tools": [{"name": "search", "input_schema": {"type": "object"}}]}
USAGE = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
         "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19}
FINAL = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
         "output": [WS_ITEM, MESSAGE], "usage": USAGE}


def web_search_events() -> List[Dict[str, Any]]:
    """A web-search turn as OpenAI streams it, hosted-tool progress events included."""
    shell = {**FINAL, "status": "in_progress", "output": [], "usage": None}
    ws = {"item_id": "ws_1", "output_index": 0}
    ids = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    return [
        {"type": "response.created", "response": shell},
        {"type": "response.in_progress", "response": shell},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**WS_ITEM, "status": "in_progress", "action": {"type": "search"}}},
        {"type": "response.web_search_call.in_progress", **ws},
        {"type": "response.web_search_call.searching", **ws},
        {"type": "response.web_search_call.completed", **ws},
        {"type": "response.output_item.done", "output_index": 0, "item": WS_ITEM},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {**MESSAGE, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **ids,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **ids, "delta": TEXT[:20], "logprobs": []},
        {"type": "response.output_text.annotation.added", **ids, "annotation_index": 0, "annotation": ANNS[0]},
        {"type": "response.output_text.delta", **ids, "delta": TEXT[20:], "logprobs": []},
        {"type": "response.output_text.annotation.added", **ids, "annotation_index": 1, "annotation": ANNS[1]},
        {"type": "response.output_text.done", **ids, "text": TEXT, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": MESSAGE["content"][0]},
        {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE},
        {"type": "response.completed", "response": FINAL},
    ]


def decode(**body: Any) -> Prompt:
    return wire.CLIENT.decode_request({"model": "m", **body})


def encode_stream(parts: List[Any], prompt: Prompt) -> List[Dict[str, Any]]:
    enc = wire.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(ev.data) for ev in iter_events([raw])]


def decode_stream(events: List[Dict[str, Any]]) -> List[Any]:
    reply = responses_sse(events)
    dec = wire.PROVIDER.stream_decoder(TARGET)
    parts: List[Any] = []
    for ev in iter_events(reply.chunks or []):
        parts.extend(dec.feed(ev))
    return parts + dec.finish()


ANSWER = (OpaquePart(PROTOCOL, WS_ITEM), TextPart(TEXT, annotations=tuple(ANNS), annotations_protocol=PROTOCOL))


# --- codec: answers ------------------------------------------------------------------------------------------


def test_hosted_tool_items_and_annotations_are_decoded_in_place() -> None:
    gen = wire.PROVIDER.decode_response({**FINAL, "output": [MCP_LIST, WS_ITEM, MESSAGE]}, TARGET)
    assert gen.parts == (OpaquePart(PROTOCOL, MCP_LIST),) + ANSWER
    assert gen.finish_reason is FinishReason.STOP


def test_same_wire_items_and_annotations_are_written_back_in_order_and_others_skipped() -> None:
    prompt = decode(input="news?")
    foreign = OpaquePart("anthropic_messages", {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                                                "input": {}})
    cited = TextPart("b", annotations=({"type": "char_location", "cited_text": "b"},),
                     annotations_protocol="anthropic_messages")
    gen = Generation("resp_1", "m", (foreign,) + ANSWER + (OpaquePart(PROTOCOL, MCP_LIST), cited),
                     FinishReason.STOP, Usage())
    out = wire.CLIENT.encode_response(gen, prompt)["output"]
    assert [o["type"] for o in out] == ["web_search_call", "message", "mcp_list_tools", "message"]
    assert out[0] == WS_ITEM and out[2] == MCP_LIST
    assert out[1]["content"][0]["annotations"] == ANNS and out[1]["content"][0]["text"] == TEXT
    assert out[3]["content"][0]["annotations"] == []


def test_stream_gathers_an_item_from_added_to_done_and_relays_annotations() -> None:
    parts = decode_stream(web_search_events())
    opaque = [p for p in parts if isinstance(p, OpaqueBlock)]
    notes = [p for p in parts if isinstance(p, TextAnnotation)]
    assert opaque == [OpaqueBlock(opaque[0].index, PROTOCOL, WS_ITEM)]
    text_block = next(p.index for p in parts if isinstance(p, TextStart))
    assert opaque[0].index < text_block
    assert notes == [TextAnnotation(text_block, PROTOCOL, a) for a in ANNS]
    acc = GenerationAccumulator()
    for p in parts:
        acc.add(p)
    assert acc.generation().parts == ANSWER
    assert isinstance(parts[-1], Finish) and parts[-1].reason is FinishReason.STOP


def test_stream_keeps_an_item_whose_done_never_came_and_annotations_only_in_done() -> None:
    events = [e for e in web_search_events() if e["type"] not in (
        "response.output_item.done", "response.output_text.annotation.added")]
    events.insert(-1, {"type": "response.output_item.done", "output_index": 1, "item": MESSAGE})
    acc = GenerationAccumulator()
    for p in decode_stream(events):
        acc.add(p)
    # The item comes from response.completed; the annotations from the message's done item.
    parts = acc.generation().parts
    assert len(parts) == 2 and all(p in parts for p in ANSWER), parts


def _stream_answer(parts: Tuple[Any, ...]) -> List[Dict[str, Any]]:
    return encode_stream(list(generation_to_parts(Generation("resp_1", "m", parts, FinishReason.STOP,
                                                              Usage(input_tokens=3, output_tokens=4)))),
                         decode(input="news?"))


def test_stream_encoder_writes_the_item_and_the_annotations_back() -> None:
    foreign = OpaquePart("gemini", {"executableCode": {"code": "1+1"}})
    events = _stream_answer((foreign,) + ANSWER)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert added[0]["output_index"] == 0 and added[0]["item"] == {**WS_ITEM, "status": "in_progress"}
    assert done[0]["output_index"] == 0 and done[0]["item"] == WS_ITEM
    assert added[1]["output_index"] == 1 and added[1]["item"]["type"] == "message"
    msg_id = added[1]["item"]["id"]
    notes = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [(n["item_id"], n["output_index"], n["content_index"], n["annotation_index"], n["annotation"])
            for n in notes] == [(msg_id, 1, 0, i, a) for i, a in enumerate(ANNS)]
    part_done = [e for e in events if e["type"] == "response.content_part.done"][0]
    assert part_done["part"]["annotations"] == ANNS
    assert done[1]["item"]["content"][0]["annotations"] == ANNS
    final = events[-1]["response"]
    assert final["output"][0] == WS_ITEM and final["output"][1]["content"][0]["annotations"] == ANNS
    assert "executableCode" not in json.dumps(events)


def test_an_item_without_a_status_is_added_as_it_is() -> None:
    events = _stream_answer((OpaquePart(PROTOCOL, MCP_LIST),))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert added[0]["item"] == MCP_LIST and events[-1]["response"]["output"] == [MCP_LIST]


def test_an_annotation_after_its_text_ended_still_reaches_the_final_response() -> None:
    events = encode_stream([TextStart(0), TextDelta(0, TEXT), TextEnd(0), TextAnnotation(0, PROTOCOL, ANNS[0]),
                            Finish(FinishReason.STOP)], decode(input="news?"))
    output = events[-1]["response"]["output"]
    assert len(output) == 1 and output[0]["content"][0]["annotations"] == [ANNS[0]]


# --- codec: requests --------------------------------------------------------------------------------------


HISTORY: List[Dict[str, Any]] = [
    {"role": "user", "content": "news in Paris?"},
    WS_ITEM,
    MESSAGE,
    {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
    {"role": "user", "content": "and tomorrow?"},
]


def test_input_items_of_hosted_tools_are_kept_with_their_path() -> None:
    p = decode(input=HISTORY)
    assert p.messages[1] == Message(Role.ASSISTANT, (OpaquePart(PROTOCOL, WS_ITEM, "input[1]"),
                                                     TextPart(TEXT, annotations=tuple(ANNS),
                                                              annotations_protocol=PROTOCOL)))
    assert p.messages[2].parts[0] == OpaquePart(PROTOCOL, HISTORY[3], "input[3]")
    assert p.extras[OPAQUE_KEY] == "input[1]"
    assert OPAQUE_KEY not in decode(input="hi").extras


def test_same_wire_request_writes_them_back_verbatim_in_place() -> None:
    body = wire.PROVIDER.encode_request(decode(input=HISTORY), TARGET, stream=False)
    items = body["input"]
    assert OPAQUE_KEY not in body
    assert items[0] == {"role": "user", "content": "news in Paris?"}
    assert items[1] == WS_ITEM
    assert items[2]["role"] == "assistant"
    assert items[2]["content"] == [{"type": "output_text", "text": TEXT, "annotations": ANNS}]
    assert items[3] == HISTORY[3]
    assert items[4] == {"role": "user", "content": "and tomorrow?"}


def test_item_reference_and_unknown_items_stay_a_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        decode(input=[{"type": "item_reference", "id": "ws_1"}])
    assert "stateless" in str(info.value)
    with pytest.raises(InvalidRequest) as info:
        decode(input=[{"type": "telepathy_call", "id": "t_1"}])
    assert info.value.param == "input[0].type"


# --- end to end: the official SDK through a real gateway ---------------------------------------------------


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    a, b = servers
    fast = {"connect": 2, "read": 5}
    providers = {
        "up_resp": {"protocol": PROTOCOL, "base_url": a.url + "/v1", "api_key": "sk-up-resp", "timeouts": fast},
        "up_anth": {"protocol": "anthropic_messages", "base_url": a.url, "api_key": "sk-up-anth", "timeouts": fast},
        "up_chat": {"protocol": "openai_chat", "base_url": b.url + "/v1", "api_key": "sk-up-chat", "timeouts": fast},
    }
    models = {"orr": {"targets": [{"provider": "up_resp", "model": "up-resp"}]},
              "an": {"targets": [{"provider": "up_anth", "model": "up-anth"}]},
              "orr-then-chat": {"targets": [{"provider": "up_resp", "model": "up-resp"},
                                            {"provider": "up_chat", "model": "up-chat"}]}}
    gw = GatewayProcess({"providers": providers, "models": models}).start()
    yield gw
    gw.stop()


def _dump(item: Any) -> Dict[str, Any]:
    return item.model_dump(exclude_none=True)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_web_search_turn_reaches_the_sdk_whole(oai: OpenAI, ups: Any, gateway: GatewayProcess,
                                                 stream: bool) -> None:
    a, b = ups
    a.enqueue(responses_sse(web_search_events()) if stream else Reply.json(FINAL))
    if stream:
        with oai.responses.stream(model="orr", input="news in Paris?") as s:
            events = list(s)
            final = s.get_final_response()
        added = [e for e in events if e.type == "response.output_item.added"]
        assert added[0].item.type == "web_search_call" and added[0].item.status == "in_progress"
        notes = [e for e in events if e.type == "response.output_text.annotation.added"]
        assert [(n.output_index, n.annotation_index, _dump(n.annotation)) for n in notes] == [
            (1, 0, ANNS[0]), (1, 1, ANNS[1])]
        assert [e.sequence_number for e in events] == list(range(len(events)))
    else:
        final = oai.responses.create(model="orr", input="news in Paris?")
    assert [o.type for o in final.output] == ["web_search_call", "message"]
    assert _dump(final.output[0]) == WS_ITEM
    assert [_dump(n) for n in final.output[1].content[0].annotations] == ANNS
    assert final.output_text == TEXT
    assert "Traceback" not in gateway.logs()


def _history(oai: OpenAI, a: FakeUpstream) -> List[Dict[str, Any]]:
    a.enqueue(Reply.json(FINAL))
    first = oai.responses.create(model="orr", input="news in Paris?")
    return ([{"role": "user", "content": "news in Paris?"}] + [_dump(o) for o in first.output]
            + [{"role": "user", "content": "and tomorrow?"}])


def test_the_output_sent_back_reaches_a_responses_upstream_equal(oai: OpenAI, ups: Any) -> None:
    a, b = ups
    history = _history(oai, a)
    a.enqueue(Reply.json({**FINAL, "output": [MESSAGE]}))
    assert oai.responses.create(model="orr", input=history).output_text == TEXT  # type: ignore[arg-type]
    sent = a.requests[-1].json["input"]
    assert sent[1] == history[1] == WS_ITEM
    assert sent[2]["content"][0]["annotations"] == ANNS and sent[2]["content"][0]["text"] == TEXT
    assert sent[3] == history[3]


def test_the_same_history_to_another_wire_is_a_400_naming_the_item(oai: OpenAI, ups: Any) -> None:
    a, b = ups
    history = _history(oai, a)
    with pytest.raises(BadRequestError) as info:
        oai.responses.create(model="an", input=history)  # type: ignore[arg-type]
    assert info.value.status_code == 400 and info.value.body["param"] == "input[1]", info.value.body
    assert info.value.body["type"] == "invalid_request_error"
    assert "'input[1]'" in info.value.message and "server-side tools" in info.value.message
    assert len(a.requests) == 1, "nothing reached the Anthropic upstream"


def test_a_failing_responses_primary_does_not_fall_back_to_chat(oai: OpenAI, ups: Any) -> None:
    a, b = ups
    history = _history(oai, a)
    a.enqueue(Reply.json({"error": {"message": "upstream overloaded", "type": "server_error"}}, 503))
    with pytest.raises(APIStatusError) as info:
        oai.responses.create(model="orr-then-chat", input=history)  # type: ignore[arg-type]
    assert info.value.status_code == 503 and "overloaded" in info.value.message, info.value.body
    assert not b.requests, "the Chat fallback cannot continue a hosted-tool history"
    assert a.requests[-1].json["input"][1] == WS_ITEM
