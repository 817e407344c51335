"""A hunt of the Anthropic Messages wire with the official SDK as the client of a real gateway and scripted
fake upstreams of every wire: tool calls that carry Anthropic-only fields (programmatic tool calling's
`caller`, a toolset member's `toolset_name`) round-trip verbatim, custom-content documents are accepted
(verbatim for Anthropic, their text for other wires), and an upstream without an id still gives each
answer a unique message id."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import gemini_sse, weather_upstream
from tests.test_anthropic_server_tools import _answer, _sse

pytestmark = pytest.mark.e2e

CODE_EXECUTION = {"type": "code_execution_20250825", "name": "code_execution"}
QUERY = {"name": "query_db", "description": "Run SQL", "allowed_callers": ["code_execution_20250825"],
         "input_schema": {"type": "object", "properties": {"sql": {"type": "string"}}}}
SERVER_USE = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "code_execution",
              "input": {"code": "query_db('select 1')"}}
PROGRAMMATIC = {"type": "tool_use", "id": "toolu_p1", "name": "query_db", "input": {"sql": "select 1"},
                "caller": {"type": "code_execution_20250825", "tool_id": "srvtoolu_1"}}
TOOLSET = {"type": "tool_use", "id": "toolu_b1", "name": "close_tab", "input": {"tab_id": 3},
           "caller": {"type": "direct"}, "toolset_name": "browser"}
QUESTION = {"role": "user", "content": "Sum the sales."}
CHUNKS = [{"type": "text", "text": "Sales were 10."}, {"type": "text", "text": "Costs were 4."}]


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream]) -> Iterator[GatewayProcess]:
    a, b = servers
    config = {
        "providers": {
            "an": {"protocol": "anthropic_messages", "base_url": a.url, "api_key": "sk-up-anth"},
            "chat": {"protocol": "openai_chat", "base_url": b.url + "/v1", "api_key": "sk-up-chat"},
            "resp": {"protocol": "openai_responses", "base_url": b.url + "/v1", "api_key": "sk-up-resp"},
            "gem": {"protocol": "gemini", "base_url": b.url, "api_key": "sk-up-gem"},
        },
        "models": {
            "claude": {"targets": [{"provider": "an", "model": "claude-up"}]},
            "gpt": {"targets": [{"provider": "chat", "model": "gpt-up"}]},
            "resp": {"targets": [{"provider": "resp", "model": "gpt-up"}]},
            "gem": {"targets": [{"provider": "gem", "model": "gemini-up"}]},
        },
    }
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


def _reply(content: List[Dict[str, Any]], stream: bool) -> Reply:
    content = copy.deepcopy(content)
    return Reply.anthropic_sse(_sse(content, "tool_use")) if stream else Reply.json(_answer(content, "tool_use"))


def _create(claude: anthropic.Anthropic, stream: bool, **kw: Any) -> Any:
    if stream:
        with claude.messages.stream(**kw) as s:
            return s.get_final_message()
    return claude.messages.create(**kw)


# --- tool calls with Anthropic-only fields ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("call", [PROGRAMMATIC, TOOLSET], ids=["caller", "toolset"])
def test_a_tool_call_keeps_its_caller_and_toolset_both_ways(ups: Any, claude: anthropic.Anthropic,
                                                            stream: bool, call: Dict[str, Any]) -> None:
    """Programmatic tool calling: Anthropic needs the call's `caller` (the code execution that made it) back
    with the result; a browser toolset's call names its toolset. Neither may be lost on the way."""
    a, _ = ups
    a.enqueue(_reply([SERVER_USE, call], stream))
    kw: Dict[str, Any] = dict(model="claude", max_tokens=500, tools=[CODE_EXECUTION, QUERY])
    answer = _create(claude, stream, messages=[QUESTION], **kw)
    assert answer.stop_reason == "tool_use"
    got = answer.content[-1].model_dump(exclude_none=True)
    assert got == call

    a.enqueue(Reply.json(_answer([{"type": "text", "text": "10"}])))
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "10"}
    claude.messages.create(messages=[QUESTION, {"role": "assistant", "content": answer.content},
                                     {"role": "user", "content": [result]}], **kw)
    assert a.requests[-1].json["messages"][1]["content"] == [SERVER_USE, call]


def test_a_direct_call_is_an_ordinary_tool_call_for_every_client(ups: Any, gateway: GatewayProcess) -> None:
    """`caller: {"type": "direct"}` is the model's own call: still a tool call another wire's client sees."""
    a, _ = ups
    direct = {**PROGRAMMATIC, "caller": {"type": "direct"}}
    a.enqueue(Reply.json(_answer([direct], "tool_use")))
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=30, headers={"Authorization": "Bearer k"},
                      json={"model": "claude", "messages": [{"role": "user", "content": "q"}],
                            "tools": [{"type": "function", "function": {"name": "query_db", "parameters": {}}}]})
    assert r.status_code == 200, r.text
    call = r.json()["choices"][0]["message"]["tool_calls"][0]
    assert (call["id"], json.loads(call["function"]["arguments"])) == ("toolu_p1", {"sql": "select 1"})


def test_a_programmatic_call_in_history_bound_for_another_wire_is_a_400(ups: Any, claude: anthropic.Anthropic) -> None:
    history = [QUESTION, {"role": "assistant", "content": [PROGRAMMATIC]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_p1", "content": "10"}]}]
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="gpt", max_tokens=50, messages=history)
    assert "messages[1].content[0]" in str(err.value)
    assert ups[1].requests == []


# --- custom-content documents ----------------------------------------------------------------------------


def _document(content: Any) -> Dict[str, Any]:
    return {"type": "document", "source": {"type": "content", "content": content}, "title": "Report",
            "citations": {"enabled": False}}


@pytest.mark.parametrize("content", [CHUNKS, "Sales were 10."], ids=["chunks", "string"])
def test_a_content_document_reaches_anthropic_as_sent(ups: Any, claude: anthropic.Anthropic, content: Any) -> None:
    a, _ = ups
    a.enqueue(Reply.json(_answer([{"type": "text", "text": "6"}])))
    doc = _document(content)
    tool_doc = {**_document(content), "title": "Tool report"}
    claude.messages.create(model="claude", max_tokens=50, messages=[
        {"role": "user", "content": [doc, {"type": "text", "text": "Profit?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [tool_doc]}]}])
    sent = a.requests[-1].json["messages"]
    assert sent[0]["content"][0] == doc
    assert sent[2]["content"][0]["content"] == [tool_doc]


@pytest.mark.parametrize("model", ["gpt", "resp", "gem"])
def test_a_content_document_of_text_reaches_another_wire_as_its_text(ups: Any, claude: anthropic.Anthropic,
                                                                     model: str) -> None:
    _, b = ups
    b.default = weather_upstream
    try:
        answer = claude.messages.create(model=model, max_tokens=50, messages=[
            {"role": "user", "content": [_document(CHUNKS), {"type": "text", "text": "Profit?"}]}])
    finally:
        b.default = None
    assert answer.content[0].type == "text"
    sent = b.requests[-1].body.decode()
    if model == "gpt":  # OpenAI Chat files are PDFs only: the document goes as text (session 11)
        assert "Sales were 10.\\n\\nCosts were 4." in sent
    else:
        assert "U2FsZXMgd2VyZSAxMC4KCkNvc3RzIHdlcmUgNC4=" in sent  # base64 of the joined text


def test_a_content_document_with_images_is_anthropics_alone(ups: Any, claude: anthropic.Anthropic) -> None:
    a, b = ups
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/chart.png"}}
    doc = _document([CHUNKS[0], image])
    a.enqueue(Reply.json(_answer([{"type": "text", "text": "ok"}])))
    claude.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": [doc]}])
    assert a.requests[-1].json["messages"][0]["content"] == [doc]
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="gpt", max_tokens=50, messages=[{"role": "user", "content": [doc]}])
    assert "messages[0].content[0]" in str(err.value)
    assert b.requests == []


def test_a_content_document_with_a_bad_chunk_is_a_400_naming_it(ups: Any, claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="claude", max_tokens=50, messages=[
            {"role": "user", "content": [_document([{"type": "audio"}])]}])
    assert "messages[0].content[0].source.content[0]" in str(err.value)
    assert ups[0].requests == []


# --- message ids -----------------------------------------------------------------------------------------


def test_answers_of_an_upstream_without_ids_get_distinct_message_ids(ups: Any, claude: anthropic.Anthropic) -> None:
    """A Gemini answer without responseId (or a compatible server's without id): the OpenAI wires mint a
    unique id for it, and so must this one."""
    _, b = ups
    chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
             "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}
    b.enqueue(Reply.json(chunk), Reply.json(chunk), gemini_sse([chunk]), gemini_sse([chunk]))
    ids = [_create(claude, stream, model="gem", max_tokens=20, messages=[QUESTION]).id
           for stream in (False, False, True, True)]
    assert all(i.startswith("msg_") for i in ids)
    assert len(set(ids)) == 4
