"""Chat Completions hunt (session 10), through a real gateway with the official openai SDK as the client:
a streamed answer the SDK's `.stream()` accumulator rebuilds as the unstreamed one (null content beside
calls, "{}" for a call without arguments), in-band upstream errors that keep their code, DeepSeek's
resource-shortage finish as a failure, usage reported on every chunk kept for a cut stream, and no
reasoning count invented for an upstream that gave none."""

from __future__ import annotations

import json
import uuid
from typing import Any, Dict, Iterator, List

import openai
import pytest
from pydantic import BaseModel

from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import Reply, openai_chunk, openai_completion
from tests.support.wires import ALL_WIRES, responses_sse, via_wires_config

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def gateway(fake: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5})
    config["models"]["chat-then-anthropic"] = {"targets": [{"provider": "up_openai_chat", "model": "c"},
                                                          {"provider": "up_anthropic_messages", "model": "a"}]}
    config["fallback"] = {"cooldown": {"failures": 0}}
    db = f"sqlite:///{tmp_path_factory.mktemp('s10-chat-hunt')}/rp.db"
    config["database"] = {"url": db}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def _message(completion: Any) -> Dict[str, Any]:
    """The parts of a completion's message both shapes share (the stream snapshot adds parsed/index)."""
    m = completion.choices[0].message
    calls = [(c.id if c.id.startswith(("call_oc", "toolu", "call_or")) else "synthetic", c.function.name,
              json.loads(c.function.arguments)) for c in m.tool_calls or []]
    return {"content": m.content, "refusal": m.refusal, "calls": calls,
            "finish": completion.choices[0].finish_reason}


# --- the stream the SDK's accumulator rebuilds ------------------------------------------------------


@pytest.mark.parametrize("wire", ALL_WIRES)
def test_a_streamed_call_has_null_content_as_the_unstreamed_answer(oai: openai.OpenAI, up: Any, wire: str) -> None:
    """The role chunk said `content: ""` before every answer: get_final_completion() had content "" where
    create() has null for an answer of only tool calls, and the helper fired content events for no text."""
    plain = oai.chat.completions.create(model=f"via-{wire}", messages=HI, tools=WEATHER)  # type: ignore[arg-type]
    with oai.chat.completions.stream(model=f"via-{wire}", messages=HI, tools=WEATHER) as stream:  # type: ignore[arg-type]
        kinds = [e.type for e in stream]
        final = stream.get_final_completion()
    assert plain.choices[0].message.content is None
    assert _message(final) == _message(plain)
    assert not [k for k in kinds if k.startswith("content.")]


def test_a_text_streams_first_chunk_still_says_empty_content(oai: openai.OpenAI, up: Any) -> None:
    # As OpenAI's: naive clients concatenate every delta.content of a text answer.
    chunks = list(oai.chat.completions.create(model="via-anthropic_messages", messages=HI, stream=True))  # type: ignore[arg-type]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from anthropic_messages."


def test_an_empty_answer_has_empty_content_streamed_or_not(oai: openai.OpenAI, up: Any) -> None:
    up.enqueue(Reply.json(openai_completion("")),
               Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({}, "stop")]))
    plain = oai.chat.completions.create(model="via-openai_chat", messages=HI)  # type: ignore[arg-type]
    with oai.chat.completions.stream(model="via-openai_chat", messages=HI) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert plain.choices[0].message.content == "" and final.choices[0].message.content == ""


class GetTime(BaseModel):
    """A tool without parameters."""


def _no_argument_call(wire: str, stream: bool) -> Reply:
    """One call of get_time whose arguments each wire streams as nothing."""
    if wire == "anthropic_messages":
        start = {"type": "message_start", "message": {"id": "msg_up", "type": "message", "role": "assistant",
                                                      "model": "up", "content": [], "stop_reason": None,
                                                      "usage": {"input_tokens": 3, "output_tokens": 1}}}
        if not stream:
            return Reply.json({**start["message"], "stop_reason": "tool_use",
                               "content": [{"type": "tool_use", "id": "toolu_1", "name": "GetTime", "input": {}}]})
        return Reply.anthropic_sse([
            start,
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "tool_use", "id": "toolu_1", "name": "GetTime", "input": {}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
            {"type": "message_stop"}])
    if wire == "openai_responses":
        item = {"type": "function_call", "id": "fc_1", "call_id": "call_or1", "name": "GetTime", "arguments": "",
                "status": "completed"}
        final = {"id": "resp_up", "object": "response", "created_at": 1, "status": "completed", "model": "up",
                 "output": [item], "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}}
        if not stream:
            return Reply.json(final)
        return responses_sse([
            {"type": "response.created", "response": {**final, "status": "in_progress", "output": []}},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 0, "arguments": ""},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": final}])
    call = {"id": "call_oc1", "type": "function", "function": {"name": "GetTime", "arguments": ""}}
    if not stream:
        return Reply.json(openai_completion(None, tool_calls=[call], finish="tool_calls"))
    return Reply.sse([openai_chunk({"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}),
                      openai_chunk({}, "tool_calls")])


@pytest.mark.parametrize("wire", ["anthropic_messages", "openai_responses", "openai_chat"])
def test_a_streamed_call_without_arguments_gets_braces(oai: openai.OpenAI, up: Any, wire: str) -> None:
    """A call of a tool without parameters streamed no arguments: the SDK's helper parsed "" for a strict
    (pydantic) tool and raised, where the unstreamed answer has "{}"."""
    tools = [openai.pydantic_function_tool(GetTime)]
    up.enqueue(_no_argument_call(wire, False), _no_argument_call(wire, True))
    plain = oai.chat.completions.parse(model=f"via-{wire}", messages=HI, tools=tools)  # type: ignore[arg-type]
    with oai.chat.completions.stream(model=f"via-{wire}", messages=HI, tools=tools) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    for completion in (plain, final):
        call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.arguments == "{}" and isinstance(call.function.parsed_arguments, GetTime)


# --- errors in a 200 answer ----------------------------------------------------------------------------


def test_an_in_band_client_error_keeps_its_code_and_param(oai: openai.OpenAI, up: Any) -> None:
    """An OpenAI-shaped error inside a stream (OpenRouter, Azure) lost its `code`: a client that trims its
    history on context_length_exceeded could not tell."""
    err = {"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error",
                     "param": "messages", "code": "context_length_exceeded"}}
    up.enqueue(Reply.sse([err], done=None))  # before any content: the client's HTTP 400
    with pytest.raises(openai.BadRequestError) as info:
        list(oai.chat.completions.create(model="via-openai_chat", messages=HI, stream=True))  # type: ignore[arg-type]
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "messages")
    up.enqueue(Reply.json(err))  # a 200 JSON answer that is an error
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="via-openai_chat", messages=HI)  # type: ignore[arg-type]
    assert info.value.code == "context_length_exceeded"
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "par"}), err],
                         done=None))  # mid-stream: the error frame
    with pytest.raises(openai.APIError) as mid:
        list(oai.chat.completions.create(model="via-openai_chat", messages=HI, stream=True))  # type: ignore[arg-type]
    assert mid.value.code == "context_length_exceeded"


def test_deepseeks_resource_shortage_is_an_overload_that_falls_back(oai: openai.OpenAI, up: Any) -> None:
    """finish_reason "insufficient_system_resource" (DeepSeek: generation interrupted for want of resources)
    read as "stop": a cut answer passed as complete."""
    cut = openai_completion("The answer is", finish="insufficient_system_resource")
    up.enqueue(Reply.json(cut))
    answer = oai.chat.completions.create(model="chat-then-anthropic", messages=HI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hello from anthropic_messages."
    up.enqueue(Reply.json(cut))
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="via-openai_chat", messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 503
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "The answer"}),
                          openai_chunk({}, "insufficient_system_resource")]))
    with pytest.raises(openai.APIError, match="insufficient_system_resource"):
        list(oai.chat.completions.create(model="via-openai_chat", messages=HI, stream=True))  # type: ignore[arg-type]


# --- usage ---------------------------------------------------------------------------------------------


def _usage(prompt: int, completion: int) -> Dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 1000}}


def test_usage_on_every_chunk_bills_a_cut_stream_by_the_upstreams_counts(oai: openai.OpenAI, up: Any,
                                                                        gateway: GatewayProcess) -> None:
    """vLLM's continuous_usage_stats reports usage on every chunk; the decoder held it for [DONE], so a stream
    cut before it was billed by a local estimate (1 input token) instead of the 1500 (1000 cached) reported."""
    chunks: List[Dict[str, Any]] = [openai_chunk({"role": "assistant", "content": ""}, usage=_usage(1500, 0))]
    chunks += [openai_chunk({"content": f"w{i} "}, usage=_usage(1500, i + 1)) for i in range(5)]
    up.enqueue(Reply.sse(chunks, done=None))
    rid = f"s10-chat-{uuid.uuid4().hex}"
    with pytest.raises(openai.APIError):
        list(oai.chat.completions.create(model="via-openai_chat", messages=HI, stream=True,  # type: ignore[arg-type]
                                         extra_headers={"x-request-id": rid}))
    row = spend_row(gateway.db_url, rid)  # type: ignore[attr-defined]
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (500, 1000, 5)


def test_no_reasoning_count_is_invented_for_an_upstream_without_one(oai: openai.OpenAI, up: Any) -> None:
    """vLLM and Ollama send no completion_tokens_details even for a reasoning model: the client got
    `reasoning_tokens: 0`, a count the upstream never gave."""
    bare = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    up.enqueue(Reply.json(openai_completion("Hi", usage=bare)),
               Reply.sse([openai_chunk({"role": "assistant", "content": "Hi"}), openai_chunk({}, "stop"),
                          openai_chunk(None, usage=bare)]))
    plain = oai.chat.completions.create(model="via-openai_chat", messages=HI)  # type: ignore[arg-type]
    chunks = list(oai.chat.completions.create(model="via-openai_chat", messages=HI, stream=True,  # type: ignore[arg-type]
                                              stream_options={"include_usage": True}))
    for usage in (plain.usage, chunks[-1].usage):
        assert usage is not None and usage.completion_tokens == 7 and usage.completion_tokens_details is None
