"""Session 11 on the OpenAI Responses stream encoder: late annotations in linear time, and the no-usage estimate.

Annotations that arrive after their text part is done (an upstream's `annotation.added` events after the item's
`output_item.done`, or for a part the message has moved past) rebuilt the whole final message item for each one:
8,000 of them cost about 5 s of CPU. And when no usage came, the stream's own estimate counted characters where
the plain answer weighs non-Latin text by its bytes, so a Chinese answer was billed differently streamed.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterator, List

import pytest

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    ResponseStart,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from routeplane.protocols.openai_responses import stream as encoder_module
from routeplane.protocols.openai_responses.request import PROTOCOL, decode_request
from routeplane.protocols.openai_responses.stream import ResponsesStreamEncoder
from routeplane.protocols.sse import iter_events
from tests.support.sdk_env import OpenAIEnv as Env
from tests.support.sdk_env import openai_env
from tests.support.upstream import Reply, openai_chunk, openai_completion
from tests.support.wires import responses_sse, via_wires_config

MSG = "msg_up"


@pytest.fixture
def env() -> Iterator[Env]:
    with openai_env(via_wires_config) as pair:
        yield pair


def _note(i: int) -> Dict[str, Any]:
    return {"type": "url_citation", "url": f"https://example.com/{i}", "title": f"page {i}",
            "start_index": 0, "end_index": 5}


def _late_annotations_upstream(n: int) -> Reply:
    """A Responses upstream whose `annotation.added` events all come after the message item is done."""
    ids = {"item_id": MSG, "output_index": 0, "content_index": 0}
    done_item = {"type": "message", "id": MSG, "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "hello", "annotations": []}]}
    events: List[Dict[str, Any]] = [
        {"type": "response.created", "response": {"id": "resp_up", "model": "m", "created_at": 1, "output": []}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**done_item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **ids, "delta": "hello"},
        {"type": "response.output_text.done", **ids, "text": "hello"},
        {"type": "response.content_part.done", **ids, "part": done_item["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
    ]
    events += [{"type": "response.output_text.annotation.added", **ids, "annotation_index": i,
                "annotation": _note(i)} for i in range(n)]
    events.append({"type": "response.completed", "response": {
        "id": "resp_up", "model": "m", "created_at": 1, "status": "completed", "output": [],
        "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}}})
    return responses_sse(events)


def test_eight_thousand_late_annotations_reach_the_sdk_in_order(env: Env) -> None:
    up, client = env
    n = 8000
    up.enqueue(_late_annotations_upstream(n))
    with client.responses.stream(model="via-openai_responses", input="cite") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    [message] = final.output
    [text] = message.content
    assert text.text == "hello"
    assert [a.url for a in text.annotations] == [f"https://example.com/{i}" for i in range(n)]


# --- the work per late annotation: counted, not timed -------------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch, name: str, measure: Callable[[Dict[str, Any]], int]) -> List[int]:
    """Wraps the encoder's item builder `name`; the list collects `measure(item)` for each item it built."""
    built: List[int] = []
    real = getattr(encoder_module, name)

    def wrapper(*args: Any, **kw: Any) -> Dict[str, Any]:
        item = real(*args, **kw)
        built.append(measure(item))
        return item

    monkeypatch.setattr(encoder_module, name, wrapper)
    return built


def _annotations(item: Dict[str, Any]) -> int:
    return sum(len(c.get("annotations", ())) for c in item["content"])


def _encode(parts: List[StreamPart]) -> List[Dict[str, Any]]:
    enc = ResponsesStreamEncoder(decode_request({"model": "m", "input": "hi"}))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(e.data) for e in iter_events(iter([raw]))]


def _late_on_done_item(n: int) -> List[StreamPart]:
    notes = [TextAnnotation(0, PROTOCOL, _note(i)) for i in range(n)]
    return [ResponseStart("r", "m", 0), TextStart(0), TextDelta(0, "hello"), TextEnd(0), *notes,
            Finish(FinishReason.STOP)]


def _late_on_earlier_part(n: int) -> List[StreamPart]:
    """The message went on to its next content part (text right after text) before the first's citations."""
    notes = [TextAnnotation(0, PROTOCOL, _note(i)) for i in range(n)]
    return [ResponseStart("r", "m", 0), TextStart(0), TextDelta(0, "hello"), TextEnd(0),
            TextStart(1), TextDelta(1, "world"), *notes, TextEnd(1), Finish(FinishReason.STOP)]


@pytest.mark.parametrize("script", [_late_on_done_item, _late_on_earlier_part])
def test_late_annotations_are_copied_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch,
                                                              script: Callable[[int], List[StreamPart]]) -> None:
    """Every annotation copied into a message item is counted: before the fix the n-th late one rebuilt
    the item with all n (n²/2 copies, 32 million for 8,000); now the work stays a few copies each."""
    built = _counting(monkeypatch, "message_item", _annotations)
    for n in (500, 2000):
        built.clear()
        events = _encode(script(n))
        final = events[-1]["response"]["output"][0]
        assert [a["url"] for a in final["content"][0]["annotations"]] == [f"https://example.com/{i}" for i in range(n)]
        done = [e for e in events if e["type"] == "response.output_item.done"]
        assert done[-1]["item"] == final  # the item's done event carries them too (it waited for the end)
        assert sum(built) <= 3 * n


def test_late_call_fragments_rebuild_the_call_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fragments of a call's arguments after the call closed (legal in Chat) fixed its final item one by one."""
    built = _counting(monkeypatch, "function_call_item", lambda item: 1)
    n = 1000
    parts: List[StreamPart] = [ResponseStart("r", "m", 0), ToolCallStart(0, "call_1", "f"), ToolCallDelta(0, "["),
                               ToolCallEnd(0), *[ToolCallDelta(0, "1,") for _ in range(n)], ToolCallDelta(0, "1]"),
                               Finish(FinishReason.TOOL_CALLS)]
    events = _encode(parts)
    call = events[-1]["response"]["output"][0]
    assert json.loads(call["arguments"]) == [1] * (n + 1)
    assert len(built) <= 3


# --- the estimate when no usage came ---------------------------------------------------------------


ANSWER = "你好，世界。今天天气很好，我们去公园散步吧！" * 20


def test_the_streamed_estimate_weighs_chinese_as_the_plain_answer_does(env: Env) -> None:
    """The same Chinese answer from an upstream that reported no usage: the plain answer's estimate (non-Latin
    text by its bytes) and the stream encoder's own (each character one of four) were far apart."""
    up, client = env
    body = openai_completion(ANSWER)
    del body["usage"]
    up.enqueue(Reply.json(body))
    plain = client.responses.create(model="via-openai_chat", input="说你好")
    assert plain.usage is not None

    enc = ResponsesStreamEncoder(decode_request({"model": "via-openai_chat", "input": "说你好"}))
    deltas = [TextDelta(0, ch) for ch in ANSWER]  # one character a delta: the weight is summed, rounded once
    raw = b"".join(enc.encode(p) for p in [ResponseStart("r", "m", 0), TextStart(0), *deltas, TextEnd(0),
                                            Finish(FinishReason.STOP)]) + enc.close()
    usage = json.loads(list(iter_events(iter([raw])))[-1].data)["response"]["usage"]
    assert usage["output_tokens"] == plain.usage.output_tokens
    assert usage["input_tokens"] == plain.usage.input_tokens
    assert usage["output_tokens"] > len(ANSWER) // 4 * 2  # the character count would have said a quarter


def test_the_streamed_estimate_counts_a_calls_name_as_the_plain_answer_does(env: Env) -> None:
    up, client = env
    args = json.dumps({"城市": "北京"}, ensure_ascii=False)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather_forecast", "arguments": args}}
    body = openai_completion(None, tool_calls=[call], finish="tool_calls")
    del body["usage"]
    up.enqueue(Reply.json(body))
    plain = client.responses.create(model="via-openai_chat", input="weather")
    assert plain.usage is not None

    enc = ResponsesStreamEncoder(decode_request({"model": "via-openai_chat", "input": "weather"}))
    parts = [ResponseStart("r", "m", 0), ToolCallStart(0, "call_1", "get_weather_forecast"), ToolCallDelta(0, args),
             ToolCallEnd(0), Finish(FinishReason.TOOL_CALLS)]
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    usage = json.loads(list(iter_events(iter([raw])))[-1].data)["response"]["usage"]
    assert usage["output_tokens"] == plain.usage.output_tokens


def test_a_chat_upstream_streaming_without_usage_is_estimated_like_the_plain_answer(env: Env) -> None:
    """End to end, the pipeline's estimate reaches the stream: the plain answer's number."""
    up, client = env
    body = openai_completion(ANSWER)
    del body["usage"]
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    chunks += [openai_chunk({"content": ANSWER[i:i + 7]}) for i in range(0, len(ANSWER), 7)]
    chunks.append(openai_chunk({}, "stop"))
    up.enqueue(Reply.json(body), Reply.sse(chunks))
    plain = client.responses.create(model="via-openai_chat", input="说你好")
    with client.responses.stream(model="via-openai_chat", input="说你好") as stream:
        final = stream.get_final_response()
    assert plain.usage is not None and final.usage is not None
    assert final.output_text == plain.output_text == ANSWER
    assert (final.usage.input_tokens, final.usage.output_tokens) == (plain.usage.input_tokens,
                                                                     plain.usage.output_tokens)


# --- annotations a done event listed, announced again after it ----------------------------------------


def test_annotations_listed_by_a_done_part_are_not_relayed_twice(env: Env) -> None:
    """An upstream whose `annotation.added` events come after the `content_part.done` that already listed
    them: the decoder relayed each twice (once from the done part, once from its event)."""
    up, client = env
    ids = {"item_id": MSG, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "hello", "annotations": [_note(0), _note(1)]}
    item = {"type": "message", "id": MSG, "role": "assistant", "status": "completed", "content": [part]}
    up.enqueue(responses_sse([
        {"type": "response.created", "response": {"id": "resp_up", "model": "m", "created_at": 1, "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **ids, "delta": "hello"},
        {"type": "response.output_text.done", **ids, "text": "hello"},
        {"type": "response.content_part.done", **ids, "part": part},
        *[{"type": "response.output_text.annotation.added", **ids, "annotation_index": i, "annotation": _note(i)}
          for i in range(2)],
        {"type": "response.output_text.annotation.added", **ids, "annotation_index": 2, "annotation": _note(2)},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": {"id": "resp_up", "model": "m", "created_at": 1,
                                                    "status": "completed", "output": [item]}},
    ]))
    with client.responses.stream(model="via-openai_responses", input="cite") as stream:
        final = stream.get_final_response()
    [text] = final.output[0].content
    assert [a.url for a in text.annotations] == [f"https://example.com/{i}" for i in range(3)]  # type: ignore[union-attr]


# --- a call taking arguments while the next one waits --------------------------------------------------


def test_a_live_calls_arguments_are_parsed_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chat upstreams may interleave parallel calls: the second waits until the first's arguments are a whole
    JSON object. Whether they were was decided by parsing all of them again at each fragment (quadratic:
    about 2 s for 80 kB of arguments in 8,000 fragments); only text that ends an object is parsed now."""
    parsed: List[int] = []
    real = encoder_module.json.loads

    def counting(text: Any, *args: Any, **kw: Any) -> Any:
        parsed.append(len(text))
        return real(text, *args, **kw)

    monkeypatch.setattr(encoder_module.json, "loads", counting)
    n = 2000
    parts: List[StreamPart] = [ResponseStart("r", "m", 0), ToolCallStart(0, "call_a", "write"), ToolCallDelta(0, '{"text": "'),
                               ToolCallStart(1, "call_b", "read"), ToolCallDelta(1, "{}"),
                               *[ToolCallDelta(0, "0123456789") for _ in range(n)], ToolCallDelta(0, '"}'),
                               ToolCallEnd(0), ToolCallEnd(1), Finish(FinishReason.TOOL_CALLS)]
    enc = ResponsesStreamEncoder(decode_request({"model": "m", "input": "hi"}))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    monkeypatch.undo()
    write, read = [json.loads(e.data) for e in iter_events(iter([raw]))][-1]["response"]["output"]
    assert json.loads(write["arguments"]) == {"text": "0123456789" * n}
    assert (read["call_id"], read["arguments"]) == ("call_b", "{}")
    assert len(parsed) <= 5
