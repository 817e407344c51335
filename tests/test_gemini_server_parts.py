"""Gemini server-side tool parts (code execution and the like) survive the gateway on the Gemini wire:
codec units, then google-genai against a real gateway with a faked upstream."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Optional

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai import OpenAI

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator
from routeplane.language_model.types import (
    FinishReason,
    Generation,
    OpaqueBlock,
    OpaquePart,
    ReasoningPart,
    ReasoningStart,
    ResponseStart,
    TextDelta,
    TextPart,
    Usage,
)
from routeplane.protocols import gemini as wire
from routeplane.protocols.base import OPAQUE_KEY
from routeplane.protocols.sse import iter_events
from routeplane.protocols.wire_only import lost_field
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import gemini_sse, via_wires_config

TARGET = RoutingTarget("g", "gemini-x", "gemini", base_url="http://up", api_key="k")

CODE = {"executableCode": {"language": "PYTHON", "code": "print(6 * 7)"}, "thoughtSignature": "c2lnMQ=="}
RESULT = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}}
IMAGE = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
SEARCH_CALL = {"toolCall": {"id": "t1", "toolType": "GOOGLE_SEARCH_WEB", "args": {"queries": ["x"]}}}
ANSWER_PARTS = [{"text": "Let me compute."}, CODE, RESULT, {"text": "The answer is 42."}]
USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}


def _answer(parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": USAGE, "modelVersion": "up-001", "responseId": "r1"}


def _chunk(parts: List[Dict[str, Any]], finish: Optional[str] = None) -> Dict[str, Any]:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": USAGE, "modelVersion": "up-001", "responseId": "r1"}


STREAM_CHUNKS = [_chunk([{"text": "Let me "}]), _chunk([{"text": "compute."}]), _chunk([CODE]),
                 _chunk([RESULT, {"text": "The answer"}]), _chunk([{"text": " is 42."}], "STOP")]


def _decode_stream(chunks: List[Dict[str, Any]]) -> List[Any]:
    dec = wire.PROVIDER.stream_decoder(TARGET)
    out: List[Any] = []
    for ev in iter_events([b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)]):
        out.extend(dec.feed(ev))
    return out + dec.finish()


def _decode(body: Dict[str, Any], stream: bool = False) -> Any:
    return wire.CLIENT.for_path("gemini-x", stream).decode_request(body)


def _frames(raw: bytes) -> List[Dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.split(b"\r\n") if line.startswith(b"data: ")]


# --- response decode ---------------------------------------------------------------


def test_answer_parts_without_a_canonical_form_are_kept_in_place() -> None:
    gen = wire.PROVIDER.decode_response(_answer(ANSWER_PARTS + [IMAGE, SEARCH_CALL]), TARGET)
    assert gen.parts == (TextPart("Let me compute."), OpaquePart("gemini", CODE), OpaquePart("gemini", RESULT),
                         TextPart("The answer is 42."), OpaquePart("gemini", IMAGE), OpaquePart("gemini", SEARCH_CALL))
    # The part's signature is Gemini's and stays inside it (no signature-only reasoning part beside it).
    assert not any(isinstance(p, ReasoningPart) for p in gen.parts)
    assert gen.finish_reason is FinishReason.STOP


def test_stream_chunk_parts_become_whole_opaque_blocks_in_order() -> None:
    parts = _decode_stream(STREAM_CHUNKS)
    blocks = [p for p in parts if isinstance(p, OpaqueBlock)]
    assert [(b.protocol, b.block) for b in blocks] == [("gemini", CODE), ("gemini", RESULT)]
    assert len({b.index for b in blocks}) == 2
    acc = GenerationAccumulator()
    for p in parts:
        acc.add(p)
    assert acc.parts() == (TextPart("Let me compute."), OpaquePart("gemini", CODE), OpaquePart("gemini", RESULT),
                           TextPart("The answer is 42."))


def test_stream_opaque_block_goes_out_with_its_chunk_and_after_unsigned_thoughts() -> None:
    dec = wire.PROVIDER.stream_decoder(TARGET)
    first = dec.feed(next(iter_events([b"data: " + json.dumps(_chunk([{"text": "plan", "thought": True}])).encode()
                                       + b"\r\n\r\n"])))
    second = dec.feed(next(iter_events([b"data: " + json.dumps(_chunk([CODE])).encode() + b"\r\n\r\n"])))
    assert isinstance(first[0], ResponseStart) and isinstance(first[1], ReasoningStart)
    assert any(isinstance(p, OpaqueBlock) and p.block == CODE for p in second)  # emitted at once
    third = dec.feed(next(iter_events([b"data: " + json.dumps(_chunk([{"text": "", "thought": True,
                                                                         "thoughtSignature": "U0lH"}, RESULT],
                                                                        "STOP")).encode() + b"\r\n\r\n"])))
    acc = GenerationAccumulator()
    for p in first + second + third + dec.finish():
        acc.add(p)
    assert acc.parts() == (ReasoningPart("plan", "U0lH", provider="gemini"), OpaquePart("gemini", CODE),
                           OpaquePart("gemini", RESULT))


# --- response encode ---------------------------------------------------------------


def test_response_encode_writes_same_wire_parts_back_and_skips_others() -> None:
    gen = Generation("r", "m", (TextPart("Let me compute."), OpaquePart("gemini", CODE),
                                OpaquePart("anthropic_messages", {"type": "server_tool_use"}),
                                OpaquePart("gemini", RESULT), TextPart("The answer is 42.")),
                     FinishReason.STOP, Usage(1, 0, 1))
    body = wire.CLIENT.encode_response(gen, _decode({"contents": [{"parts": [{"text": "x"}]}]}))
    assert body["candidates"][0]["content"]["parts"] == ANSWER_PARTS


def test_stream_encode_writes_same_wire_blocks_back_in_order_and_skips_others() -> None:
    enc = wire.CLIENT.for_path("m", True).stream_encoder(_decode({"contents": [{"parts": [{"text": "x"}]}]}, True))
    seq = [ResponseStart("r", "m"), TextDelta(0, "Let me compute."), OpaqueBlock(1, "gemini", CODE),
           OpaqueBlock(2, "openai_responses", {"type": "web_search_call"}), OpaqueBlock(3, "gemini", RESULT),
           TextDelta(4, "The answer is 42.")]
    raw = b"".join(enc.encode(p) for p in seq) + enc.close()
    parts = [p for f in _frames(raw) for p in f["candidates"][0]["content"]["parts"]]
    assert parts == ANSWER_PARTS
    assert b"web_search_call" not in raw


# --- request decode / encode ---------------------------------------------------------


HISTORY = {"contents": [
    {"role": "user", "parts": [{"text": "What is 6*7? Run code."}]},
    {"role": "model", "parts": ANSWER_PARTS},
    {"role": "user", "parts": [RESULT, {"text": "Thanks. And 7*8?"}]},
]}


def test_request_history_parts_are_opaque_with_their_path_and_go_back_verbatim() -> None:
    prompt = _decode(copy.deepcopy(HISTORY))
    model = prompt.messages[1].parts
    assert model[1] == OpaquePart("gemini", CODE, "contents[1].parts[1]")
    assert model[2] == OpaquePart("gemini", RESULT, "contents[1].parts[2]")
    assert prompt.messages[2].parts[0] == OpaquePart("gemini", RESULT, "contents[2].parts[0]")
    assert prompt.extras[OPAQUE_KEY] == "contents[1].parts[1]"
    sent = wire.PROVIDER.encode_request(prompt, TARGET, stream=False)
    assert sent["contents"] == HISTORY["contents"]
    assert OPAQUE_KEY not in sent
    assert lost_field(prompt, "openai_chat")[0] == "contents[1].parts[1]"


def test_snake_case_and_media_parts_of_a_model_turn_are_kept() -> None:
    snake = {"executable_code": {"language": "PYTHON", "code": "1"}}
    body = {"contents": [{"role": "user", "parts": [{"text": "draw"}]},
                         {"role": "model", "parts": [IMAGE, snake, SEARCH_CALL]}]}
    prompt = _decode(copy.deepcopy(body))
    assert [p.path for p in prompt.messages[1].parts] == [f"contents[1].parts[{k}]" for k in range(3)]
    assert wire.PROVIDER.encode_request(prompt, TARGET, stream=False)["contents"] == body["contents"]


# --- tools ------------------------------------------------------------------------------


def test_server_tools_reach_a_gemini_upstream_unchanged_and_are_refused_elsewhere() -> None:
    decl = {"name": "w", "parametersJsonSchema": {"type": "object", "properties": {}}}
    tools = [{"codeExecution": {}}, {"googleSearch": {}}, {"functionDeclarations": [decl]}, {"urlContext": {}}]
    tool_config = {"includeServerSideToolInvocations": True}
    prompt = _decode({"contents": [{"parts": [{"text": "x"}]}], "tools": copy.deepcopy(tools),
                      "toolConfig": tool_config})
    assert [t.name for t in prompt.tools] == ["w"]
    sent = wire.PROVIDER.encode_request(prompt, TARGET, stream=False)
    assert sent["tools"] == tools
    assert sent["toolConfig"] == tool_config
    assert not any(k.startswith("_") for k in sent)
    assert lost_field(prompt, "openai_chat")[0] == "tools[0]"
    only = _decode({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"code_execution": {}}]})
    assert wire.PROVIDER.encode_request(only, TARGET, stream=False)["tools"] == [{"code_execution": {}}]


# --- end to end: google-genai ⇄ gateway ⇄ fake Gemini upstream ------------------------------


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ("openai_chat", "gemini"))
    config["models"]["gem-then-chat"] = {"targets": [{"provider": "up_gemini", "model": "up-gemini"},
                                                     {"provider": "up_openai_chat", "model": "up-openai_chat"}]}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


CONFIG = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])


def _gemini_requests(up: FakeUpstream) -> List[Dict[str, Any]]:
    return [r.json for r in up.requests if "Content" in r.path]


def _check_sdk_parts(parts: List[types.Part]) -> None:
    kinds = [("text", p.text) if p.text is not None else
             ("code", p.executable_code.language, p.executable_code.code) if p.executable_code else
             ("result", p.code_execution_result.outcome, p.code_execution_result.output)
             for p in parts if p.text or p.executable_code or p.code_execution_result]
    texts = "".join(k[1] for k in kinds if k[0] == "text")
    assert [k for k in kinds if k[0] != "text"] == [("code", types.Language.PYTHON, "print(6 * 7)"),
                                                    ("result", types.Outcome.OUTCOME_OK, "42\n")]
    first_code = next(i for i, k in enumerate(kinds) if k[0] == "code")
    assert "".join(k[1] for k in kinds[:first_code] if k[0] == "text") == "Let me compute."
    assert texts == "Let me compute.The answer is 42."
    code = next(p for p in parts if p.executable_code)
    assert code.thought_signature == b"sig1"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_genai_code_execution_turn_and_its_history(gclient: genai.Client, up: FakeUpstream, stream: bool) -> None:
    if stream:
        up.enqueue(gemini_sse(STREAM_CHUNKS))
        chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="6*7?", config=CONFIG))
        parts = [p for c in chunks for p in c.candidates[0].content.parts]
    else:
        up.enqueue(Reply.json(_answer(ANSWER_PARTS)))
        parts = gclient.models.generate_content(model="via-gemini", contents="6*7?",
                                                config=CONFIG).candidates[0].content.parts
    _check_sdk_parts(parts)
    assert _gemini_requests(up)[0]["tools"] == [{"codeExecution": {}}]
    history = [types.Content(role="user", parts=[types.Part(text="6*7?")]),
               types.Content(role="model", parts=parts),
               types.Content(role="user", parts=[types.Part(text="And 7*8?")])]
    up.enqueue(Reply.json(_answer([{"text": "56"}])))
    again = gclient.models.generate_content(model="via-gemini", contents=history, config=CONFIG)
    assert again.text == "56"
    sent = _gemini_requests(up)[-1]["contents"]
    # The client's model turn reaches the upstream as the upstream wrote it (the stream's text in its chunks).
    assert [p for p in sent[1]["parts"] if "text" not in p] == [CODE, RESULT]
    if not stream:
        assert sent[1]["parts"] == ANSWER_PARTS
    else:
        assert [p.get("text") for p in sent[1]["parts"]] == ["Let me ", "compute.", None, None, "The answer", " is 42."]
    assert sent[2] == {"role": "user", "parts": [{"text": "And 7*8?"}]}


HISTORY_SDK = [
    types.Content(role="user", parts=[types.Part(text="6*7?")]),
    types.Content(role="model", parts=[types.Part(text="Let me compute."), types.Part(
        executable_code=types.ExecutableCode(language="PYTHON", code="print(6 * 7)")), types.Part(
        code_execution_result=types.CodeExecutionResult(outcome="OUTCOME_OK", output="42\n"))]),
    types.Content(role="user", parts=[types.Part(text="And 7*8?")]),
]


def test_genai_history_with_code_parts_to_an_openai_upstream_is_a_400_naming_the_part(
        gclient: genai.Client, up: FakeUpstream) -> None:
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-openai_chat", contents=HISTORY_SDK)
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
    assert "'contents[1].parts[1]' is a block of the provider's server-side tools" in exc.value.message
    assert "Gemini wire" in exc.value.message
    assert up.requests == []


def test_genai_history_with_code_parts_does_not_fall_back_to_another_wire(
        gclient: genai.Client, up: FakeUpstream) -> None:
    up.enqueue(Reply.json({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}, 503))
    with pytest.raises(genai_errors.ServerError) as exc:
        gclient.models.generate_content(model="gem-then-chat", contents=HISTORY_SDK)
    assert exc.value.code == 503
    assert [r.path for r in up.requests if "chat/completions" in r.path] == []
    assert len(_gemini_requests(up)) == 1


def test_genai_code_execution_tool_to_an_openai_upstream_is_a_400(gclient: genai.Client, up: FakeUpstream) -> None:
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-openai_chat", contents="6*7?", config=CONFIG)
    assert exc.value.code == 400 and "'tools[0]' is a tool of kind 'codeExecution'" in exc.value.message
    assert up.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_chat_client_gets_the_text_without_the_code_parts(gateway: GatewayProcess, up: FakeUpstream,
                                                                 stream: bool) -> None:
    client = OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": "6*7?"}]
    if stream:
        up.enqueue(gemini_sse(STREAM_CHUNKS))
        chunks = list(client.chat.completions.create(model="via-gemini", messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["stop"]
    else:
        up.enqueue(Reply.json(_answer(ANSWER_PARTS)))
        r = client.chat.completions.create(model="via-gemini", messages=messages)
        text = r.choices[0].message.content
        assert r.choices[0].finish_reason == "stop"
    client.close()
    assert "Let me compute." in text and "The answer is 42." in text
    assert "print(6 * 7)" not in text and "42\n" not in text
