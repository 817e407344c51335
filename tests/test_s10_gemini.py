"""Session 10 Gemini-wire hunt: the google-genai SDK against the gateway under gunicorn, upstreams faked."""

from __future__ import annotations

import enum
import json
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
from google import genai
from google.genai import types

from routeplane.errors import UpstreamError
from routeplane.language_model.types import Finish, FinishReason, ReasoningDelta, ReasoningStart, TextDelta, TextStart
from routeplane.protocols import gemini as wire
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion
from tests.support.wires import ALL_WIRES, gemini_sse, responses_sse, via_wires_config

pytestmark = pytest.mark.e2e

NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)
USAGE = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
RATINGS = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
GROUNDING = {"webSearchQueries": ["paris weather"], "groundingChunks": [{"web": {"uri": "https://w.test", "title": "W"}}],
             "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": 5, "text": "Sunny"},
                                    "groundingChunkIndices": [0]}]}


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ALL_WIRES)).start()
    yield gw
    gw.stop()


def _chunk(parts: List[Dict[str, Any]], finish: Optional[str] = None, **cand: Any) -> Dict[str, Any]:
    c: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0, **cand}
    if finish:
        c["finishReason"] = finish
    return {"candidates": [c], "usageMetadata": USAGE, "modelVersion": "gemini-x", "responseId": "r1"}


# --- a Gemini upstream's candidate fields and prompt feedback in a stream --------------------


def test_streamed_grounding_safety_and_citations_reach_a_gemini_client(gclient: genai.Client,
                                                                      up: FakeUpstream) -> None:
    """Unstreamed, they came back; streamed, every candidate field but the finishReason was dropped."""
    up.enqueue(gemini_sse([
        _chunk([{"text": "Sunny"}], safetyRatings=RATINGS,
               citationMetadata={"citationSources": [{"startIndex": 0, "endIndex": 5, "uri": "https://a.test"}]}),
        _chunk([{"text": " today."}], "STOP", safetyRatings=RATINGS, groundingMetadata=GROUNDING,
               citationMetadata={"citationSources": [{"startIndex": 6, "endIndex": 12, "uri": "https://b.test"}]}),
    ]))
    chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="Weather?"))
    assert "".join(c.text for c in chunks) == "Sunny today."
    last = chunks[-1].candidates[0]
    assert last.finish_reason == types.FinishReason.STOP
    assert last.grounding_metadata.web_search_queries == ["paris weather"]
    assert last.grounding_metadata.grounding_chunks[0].web.uri == "https://w.test"
    assert [r.category for r in last.safety_ratings] == [types.HarmCategory.HARM_CATEGORY_HARASSMENT]
    assert [c.uri for c in last.citation_metadata.citations] == ["https://a.test", "https://b.test"]


def test_streamed_fields_that_index_the_text_are_dropped_once_a_hook_rewrote_it() -> None:
    """As unstreamed: grounding quotes the upstream's text, so a redacted text drops it; ratings stay."""
    prompt = wire.CLIENT.for_path("gemini-x", True).decode_request({"contents": [{"parts": [{"text": "x"}]}]})
    extras = {"candidate": {"groundingMetadata": GROUNDING, "safetyRatings": RATINGS}, "_text": "Sunny"}

    def last_candidate(text: str) -> Dict[str, Any]:
        enc = wire.CLIENT.stream_encoder(prompt)
        raw = b"".join(enc.encode(p) for p in (TextStart(0), TextDelta(0, text),
                                               Finish(FinishReason.STOP, wire_reason="STOP", wire="gemini",
                                                      extras=extras))) + enc.close()
        frames = [json.loads(line[6:]) for line in raw.split(b"\r\n") if line]
        return frames[-1]["candidates"][0]

    assert set(last_candidate("Sunny")) >= {"groundingMetadata", "safetyRatings"}
    cand = last_candidate("[REDACTED]")
    assert "safetyRatings" in cand and "groundingMetadata" not in cand


def test_a_streamed_blocked_prompt_reaches_a_gemini_client_as_prompt_feedback(gclient: genai.Client,
                                                                              up: FakeUpstream) -> None:
    """Was a candidate with an empty text part and SAFETY, and no promptFeedback."""
    up.enqueue(gemini_sse([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "safetyRatings": RATINGS},
                            "usageMetadata": USAGE, "modelVersion": "gemini-x", "responseId": "r1"}]))
    chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="x"))
    assert chunks[-1].prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert not chunks[-1].candidates


def test_finish_message_survives_the_same_wire(gateway: GatewayProcess, up: FakeUpstream) -> None:
    """MALFORMED_FUNCTION_CALL comes with a finishMessage saying what was wrong; it was dropped."""
    cand = {"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": "Malformed function call: print(x)"}
    up.enqueue(Reply.json(_chunk([], **cand)), gemini_sse([_chunk([], **cand)]))
    body = {"contents": [{"parts": [{"text": "x"}]}]}
    headers = {"x-goog-api-key": "k"}
    plain = requests.post(f"{gateway.url}/v1beta/models/via-gemini:generateContent", json=body, headers=headers,
                          timeout=30).json()
    assert plain["candidates"][0]["finishMessage"] == cand["finishMessage"]
    streamed = requests.post(f"{gateway.url}/v1beta/models/via-gemini:streamGenerateContent?alt=sse", json=body,
                             headers=headers, timeout=30).text
    last = json.loads([line for line in streamed.splitlines() if line][-1][6:])
    assert last["candidates"][0]["finishMessage"] == cand["finishMessage"]
    assert last["candidates"][0]["finishReason"] == "MALFORMED_FUNCTION_CALL"


# --- text/x.enum through the other wires -------------------------------------------------------


def _enum_answer(wire_name: str, stream: bool) -> Reply:
    """The JSON string the other wires' structured output answers with (OpenAI's inside its object root)."""
    text = '"happy"' if wire_name == "anthropic_messages" else '{"response":"happy"}'
    if wire_name == "openai_chat":
        if not stream:
            return Reply.json(openai_completion(text))
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""})]
                         + [openai_chunk({"content": text[i:i + 4]}) for i in range(0, len(text), 4)]
                         + [openai_chunk({}, "stop")])
    if wire_name == "anthropic_messages":
        usage = {"input_tokens": 3, "output_tokens": 2}
        if not stream:
            return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "up",
                               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                               "stop_sequence": None, "usage": usage})
        return Reply.anthropic_sse([
            {"type": "message_start", "message": {"id": "msg_up", "type": "message", "role": "assistant",
                                                  "model": "up", "content": [], "stop_reason": None,
                                                  "stop_sequence": None, "usage": usage}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[:4]}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[4:]}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage},
            {"type": "message_stop"}])
    item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    final = {"id": "resp_up", "object": "response", "created_at": 1, "status": "completed", "model": "up",
             "output": [item], "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}
    if not stream:
        return Reply.json(final)
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return responses_sse([
        {"type": "response.created", "response": {**final, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **ids, "delta": text[:7]},
        {"type": "response.output_text.delta", **ids, "delta": text[7:]},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final}])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("wire_name", ["openai_chat", "anthropic_messages", "openai_responses"])
def test_a_text_enum_answer_is_the_bare_value_from_every_wire(gclient: genai.Client, up: FakeUpstream,
                                                              wire_name: str, stream: bool) -> None:
    """Gemini answers `text/x.enum` with `happy`; through another wire the text was the JSON `"happy"`."""
    up.enqueue(_enum_answer(wire_name, stream))
    config = types.GenerateContentConfig(response_mime_type="text/x.enum", response_schema=Mood)
    if stream:
        chunks = list(gclient.models.generate_content_stream(model=f"via-{wire_name}", contents="Mood?",
                                                             config=config))
        text, parsed = "".join(c.text or "" for c in chunks), chunks[-1].parsed
    else:
        answer = gclient.models.generate_content(model=f"via-{wire_name}", contents="Mood?", config=config)
        text, parsed = answer.text, answer.parsed
    assert text == "happy"
    assert parsed == Mood.HAPPY


def test_a_json_enum_answer_keeps_its_quotes(gclient: genai.Client, up: FakeUpstream) -> None:
    """`application/json` with an enum schema is a JSON string on Gemini too: left as it is."""
    up.enqueue(_enum_answer("openai_chat", False))
    answer = gclient.models.generate_content(model="via-openai_chat", contents="Mood?", config=types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=Mood))
    assert answer.text == '"happy"' and answer.parsed == Mood.HAPPY


def test_a_held_enum_answer_cut_by_an_error_goes_out_before_the_error() -> None:
    """Nothing of the answer is lost when the stream fails while the enum answer is held, nor what came before."""
    prompt = wire.CLIENT.for_path("gemini-x", True).decode_request({
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"responseMimeType": "text/x.enum", "thinkingConfig": {"includeThoughts": True}}})
    enc = wire.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in (ReasoningStart(0, "anthropic_messages"), ReasoningDelta(0, "Hmm."),
                                           TextStart(1), TextDelta(1, '"hap'))) + enc.error(UpstreamError("cut"))
    frames = [json.loads(line[6:]) for line in raw.split(b"\r\n") if line]
    parts = [f["candidates"][0]["content"]["parts"] for f in frames if "candidates" in f]
    assert parts == [[{"text": "Hmm.", "thought": True}], [{"text": '"hap'}]]
    assert frames[-1]["error"]["code"] == 502


# --- parallel calls in a stream ----------------------------------------------------------------


TOOLS = [types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather", parameters_json_schema={"type": "object",
                                                                       "properties": {"city": {"type": "string"}}})])]


@pytest.mark.parametrize("wire_name", ["gemini", "openai_chat"])
def test_streamed_parallel_calls_are_one_content_of_the_chat_history(gclient: genai.Client, up: FakeUpstream,
                                                                     wire_name: str) -> None:
    """Each call went out as a chunk of its own, so the SDK's chat kept one model content per call (Gemini
    streams parallel calls in one chunk, the turn's signature on the first call only)."""
    if wire_name == "gemini":
        up.enqueue(gemini_sse([_chunk([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                        "thoughtSignature": "U0lH"},
                                       {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}], "STOP")]))
    else:
        calls = [{"index": i, "id": f"call_{i}", "type": "function",
                  "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
                 for i, city in enumerate(("Paris", "Rome"))]
        up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": None, "tool_calls": calls}),
                              openai_chunk({}, "tool_calls")]))
    chat = gclient.chats.create(model=f"via-{wire_name}", config=types.GenerateContentConfig(
        tools=TOOLS, automatic_function_calling=NO_AFC))
    chunks = [c for c in chat.send_message_stream("Weather in Paris and Rome?") if c.function_calls]
    assert [[fc.args["city"] for fc in c.function_calls] for c in chunks] == [["Paris", "Rome"]]
    model_turns = [c for c in chat.get_history() if c.role == "model"]
    assert len(model_turns) == 1 and len(model_turns[0].parts) == 2
    if wire_name == "gemini":
        assert model_turns[0].parts[0].thought_signature == b"SIG" and model_turns[0].parts[1].thought_signature is None
