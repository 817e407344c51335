"""Review of server-tool blocks on the Anthropic wire, through a real gateway with the official SDKs as clients
of scripted fake upstreams: block order and indexes, failures inside a server-tool block, continuations, a
client's malformed history, accounting, other wires' clients, the mock provider, and a stream's container."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import openai
import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import FakeUpstream, Reply
from tests.test_anthropic_server_tools import CITATION, CONTENT, SEARCH_RESULT, SEARCH_USE, _answer, _sse

pytestmark = pytest.mark.e2e

KEY = "sk-upstream-0123456789abcdef"
QUESTION = {"role": "user", "content": "When was Claude Shannon born?"}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
THINKING = {"type": "thinking", "thinking": "I should search.", "signature": "EqQBCkgIARABsig"}
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
LOOKUP = {"name": "lookup", "description": "d",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
MCP_USE = {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "echo", "server_name": "s", "input": {"a": 1}}
MCP_RESULT = {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "is_error": False,
              "content": [{"type": "text", "text": "1"}]}
CODE_RESULT = {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_03",
               "content": {"type": "code_execution_result", "stdout": "2\n", "stderr": "", "return_code": 0,
                           "content": []}}
CONTAINER = {"id": "container_011CX", "expires_at": "2026-11-23T12:20:00Z"}


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    a, b = servers
    db = f"sqlite:///{tmp_path_factory.mktemp('review-s8-anthropic')}/rp.db"
    config = {
        "server": {"max_body_bytes": 64 * 1024},
        "database": {"url": db},
        "providers": {
            "an": {"protocol": "anthropic_messages", "base_url": a.url, "api_key": KEY,
                   "model_prices": {"claude-up": {"input": 3.0, "output": 15.0, "per_call": {"web_search": 0.01}}}},
            "an2": {"protocol": "anthropic_messages", "base_url": b.url, "api_key": KEY},
            "mock": {"protocol": "mock"},
        },
        "models": {
            "claude": {"targets": [{"provider": "an", "model": "claude-up"}]},
            "claude-twice": {"targets": [{"provider": "an", "model": "claude-up"},
                                         {"provider": "an2", "model": "claude-b"}]},
            "mocky": {"targets": [{"provider": "mock", "model": "echo"}]},
        },
        "fallback": {"cooldown": {"failures": 0}},
    }
    gw = GatewayProcess(config, workers=1, threads=4).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def _post(gateway: GatewayProcess, body: Any, **kw: Any) -> requests.Response:
    return requests.post(gateway.url + "/v1/messages", json=body, timeout=30,
                         headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"}, **kw)


def _events(raw: bytes) -> List[Dict[str, Any]]:
    from routeplane.protocols.sse import iter_events

    return [json.loads(e.data) for e in iter_events([raw])]


MIXED = [THINKING, {"type": "text", "text": "Let me search."}, SEARCH_USE, SEARCH_RESULT,
         {"type": "text", "text": "Born 1916, died 2001.", "citations": [CITATION, {**CITATION, "cited_text": "x"}]},
         CODE_RESULT, MCP_USE, MCP_RESULT, TOOL_USE]


def _mixed_events(content: List[Dict[str, Any]], stop: str = "tool_use") -> List[Dict[str, Any]]:
    """_sse's events with pings inside every block, thinking's deltas, and citations between text pieces."""
    out: List[Dict[str, Any]] = []
    for e in _sse(content, stop):
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta":
            text = e["delta"]["text"]
            out.append({**e, "delta": {"type": "text_delta", "text": text[:5]}})
            cites = [x for x in out if x.get("type") == "content_block_delta" and x["index"] == e["index"]
                     and x["delta"]["type"] == "citations_delta"]
            if cites:  # move one citation between the two pieces
                out.remove(cites[-1])
                out.append(cites[-1])
            out.append({**e, "delta": {"type": "text_delta", "text": text[5:]}})
        elif e["type"] == "content_block_start" and e["content_block"]["type"] == "thinking":
            out.append({**e, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            out.append({"type": "content_block_delta", "index": e["index"],
                        "delta": {"type": "thinking_delta", "thinking": THINKING["thinking"]}})
            out.append({"type": "content_block_delta", "index": e["index"],
                        "delta": {"type": "signature_delta", "signature": THINKING["signature"]}})
        else:
            out.append(e)
        if e["type"] in ("content_block_start", "content_block_delta"):
            out.append({"type": "ping"})
    return out


def test_a_mixed_stream_with_pings_is_the_unstreamed_answer(ups: Any, claude: anthropic.Anthropic,
                                                             gateway: GatewayProcess) -> None:
    a, _ = ups
    kw: Dict[str, Any] = dict(model="claude", max_tokens=2000, tools=[WEB_SEARCH, LOOKUP], messages=[QUESTION],
                              thinking={"type": "enabled", "budget_tokens": 1024})
    a.enqueue(Reply.json(_answer(copy.deepcopy(MIXED), "tool_use")))
    whole = claude.beta.messages.create(**kw)
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(MIXED))))
    with claude.beta.messages.stream(**kw) as stream:
        streamed = stream.get_final_message()
    assert [b.type for b in whole.content] == [b["type"] for b in MIXED]
    assert streamed.model_dump()["content"] == whole.model_dump()["content"]
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(MIXED))))
    raw = _post(gateway, {**kw, "stream": True}).content
    starts = [e["index"] for e in _events(raw) if e["type"] == "content_block_start"]
    assert starts == list(range(len(MIXED)))


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize("how", ["error-event", "cut"])
def test_failure_inside_a_first_server_tool_block_falls_back(ups: Any, claude: anthropic.Anthropic,
                                                                   how: str) -> None:
    a, b = ups
    events = _sse([SEARCH_USE, SEARCH_RESULT, CONTENT[3]])[:4]  # message_start, start, two input fragments
    events.insert(2, {"type": "ping"})
    if how == "error-event":
        a.enqueue(Reply.anthropic_sse(events + [OVERLOADED]))
    else:
        full = Reply.anthropic_sse(events)
        a.enqueue(Reply(full.status, full.headers, chunks=full.chunks, reset_after=len(events)))
    b.enqueue(Reply.anthropic_sse(_sse(copy.deepcopy(CONTENT))))
    with claude.messages.stream(model="claude-twice", max_tokens=200, tools=[WEB_SEARCH],
                                messages=[QUESTION]) as stream:
        message = stream.get_final_message()
    assert [c.type for c in message.content] == [c["type"] for c in CONTENT]
    assert len(a.requests) == 1 and len(b.requests) == 1


@pytest.mark.parametrize("how", ["error-event", "cut"])
def test_failure_inside_a_later_server_tool_block_is_an_error_frame(ups: Any, claude: anthropic.Anthropic,
                                                                         how: str) -> None:
    a, b = ups
    events = _sse(copy.deepcopy(CONTENT))[:7]  # text block whole, then server_tool_use start and 2 fragments
    assert events[4]["type"] == "content_block_start"
    if how == "error-event":
        a.enqueue(Reply.anthropic_sse(events + [OVERLOADED]))
    else:
        full = Reply.anthropic_sse(events)
        a.enqueue(Reply(full.status, full.headers, chunks=full.chunks, reset_after=len(events)))
    seen: List[Any] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with claude.messages.stream(model="claude-twice", max_tokens=200, tools=[WEB_SEARCH],
                                    messages=[QUESTION]) as stream:
            for ev in stream:
                seen.append(ev)
    assert info.value.body["type"] == "error", info.value.body
    assert not b.requests
    assert [e.content_block.type for e in seen if e.type == "content_block_start"] == ["text"]


@pytest.mark.parametrize("block,param", [
    (["server_tool_use"], "messages[1].content[1]"),
    ("web_search_tool_result", "messages[1].content[1]"),
    ({"id": "srvtoolu_01", "name": "web_search", "input": {}}, "messages[1].content[1]"),
    ({"type": None}, "messages[1].content[1]"),
    ({"type": 7}, "messages[1].content[1]"),
    ({"type": ""}, "messages[1].content[1]"),
    ({"type": "tool_result", "tool_use_id": "x", "content": "1"}, "messages[1].content[1]"),
    ({"type": "image", "source": {}}, "messages[1].content[1]"),
])
def test_malformed_history_block_is_a_400(ups: Any, gateway: GatewayProcess, block: Any, param: str) -> None:
    a, _ = ups
    body = {"model": "claude", "max_tokens": 10, "messages": [
        QUESTION, {"role": "assistant", "content": [{"type": "text", "text": "hm"}, block]},
        {"role": "user", "content": "go on"}]}
    r = _post(gateway, body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
    assert param in err["error"]["message"], err
    assert not a.requests


def test_malformed_user_search_result_is_a_400(ups: Any, gateway: GatewayProcess) -> None:
    a, _ = ups
    for content, param in (
        ([{"type": "tool_result", "tool_use_id": "toolu_1", "content": ["search_result"]}],
         "messages[2].content[0].content[0]"),
        ([{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"source": "s"}]}],
         "messages[2].content[0].content[0]"),
        ([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}, {"type": "server_tool_use"}],
         "messages[2].content[1]"),
    ):
        body = {"model": "claude", "max_tokens": 10, "messages": [
            QUESTION, {"role": "assistant", "content": [TOOL_USE]}, {"role": "user", "content": content}]}
        r = _post(gateway, body)
        assert r.status_code == 400 and param in r.json()["error"]["message"], r.text
    assert not a.requests


@pytest.mark.parametrize("stream", [False, True])
def test_oversized_opaque_block_hits_the_body_limit(ups: Any, gateway: GatewayProcess, stream: bool) -> None:
    a, _ = ups
    big = {**SEARCH_RESULT, "content": [{**SEARCH_RESULT["content"][0], "encrypted_content": "E" * 70_000}]}
    body = {"model": "claude", "max_tokens": 10, "stream": stream, "messages": [
        QUESTION, {"role": "assistant", "content": [SEARCH_USE, big]}, {"role": "user", "content": "go on"}]}
    r = _post(gateway, body)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "request_too_large", r.text
    assert not a.requests


def test_a_too_deep_opaque_block_is_a_400(ups: Any, gateway: GatewayProcess) -> None:
    a, _ = ups
    deep: Any = {}
    for _ in range(100):
        deep = {"x": deep}
    body = {"model": "claude", "max_tokens": 10, "messages": [
        QUESTION, {"role": "assistant", "content": [{**SEARCH_USE, "input": deep}]}, {"role": "user", "content": "go"}]}
    r = _post(gateway, body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert not a.requests


def test_paused_turn_with_thinking_and_tool_use_goes_back_verbatim(ups: Any,
                                                                       claude: anthropic.Anthropic) -> None:
    a, _ = ups
    paused = [THINKING, {"type": "text", "text": "Searching."}, SEARCH_USE, SEARCH_RESULT]
    kw: Dict[str, Any] = dict(model="claude", max_tokens=2000, tools=[WEB_SEARCH, LOOKUP],
                              thinking={"type": "enabled", "budget_tokens": 1024})
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(paused), "pause_turn")))
    with claude.messages.stream(messages=[QUESTION], **kw) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "pause_turn"
    # continue: the model resumes, then calls a client tool
    resumed = [{"type": "text", "text": "Found it."}, SEARCH_USE, TOOL_USE]
    a.enqueue(Reply.json(_answer(copy.deepcopy(resumed), "tool_use")))
    history = [QUESTION, {"role": "assistant", "content": first.content}]
    second = claude.messages.create(messages=history, **kw)
    assert a.requests[-1].json["messages"][1] == {"role": "assistant", "content": paused}
    # tool loop: both assistant turns with their blocks, then the client's tool result
    a.enqueue(Reply.json(_answer([{"type": "text", "text": "Done."}])))
    history += [{"role": "assistant", "content": second.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
                                             {"type": "text", "text": "thanks"}]}]
    claude.messages.create(messages=history, **kw)
    sent = a.requests[-1].json
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": paused + resumed},
        history[-1]], sent["messages"]
    assert sent["thinking"] == kw["thinking"]


PAUSED = [{"type": "text", "text": "Let me search."}, SEARCH_USE, SEARCH_RESULT, CODE_RESULT,
          {"type": "text", "text": "Born 1916.", "citations": [CITATION]}, MCP_USE]
TEXT = "Let me search.Born 1916."


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_client_of_a_paused_server_tool_turn_gets_its_text(ups: Any, oai: openai.OpenAI, stream: bool) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(PAUSED), "pause_turn")) if stream
              else Reply.json(_answer(copy.deepcopy(PAUSED), "pause_turn")))
    msgs = [{"role": "user", "content": "When?"}]
    if stream:
        chunks = list(oai.chat.completions.create(model="claude", messages=msgs, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        dump = "".join(c.model_dump_json() for c in chunks)
    else:
        completion = oai.chat.completions.create(model="claude", messages=msgs)
        text, finish, dump = (completion.choices[0].message.content, [completion.choices[0].finish_reason],
                              completion.model_dump_json())
    assert text == TEXT and finish == ["stop"]
    assert "srvtoolu" not in dump and "mcptoolu" not in dump and "encrypted" not in dump


@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_client_of_a_paused_server_tool_turn_gets_its_text(ups: Any, oai: openai.OpenAI,
                                                                       stream: bool) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(PAUSED), "pause_turn")) if stream
              else Reply.json(_answer(copy.deepcopy(PAUSED), "pause_turn")))
    if stream:
        events = list(oai.responses.create(model="claude", input="When?", stream=True))
        response = [e for e in events if e.type in ("response.completed", "response.incomplete")][-1].response
        dump = "".join(e.model_dump_json() for e in events)
    else:
        response = oai.responses.create(model="claude", input="When?")
        dump = response.model_dump_json()
    assert response.output_text == TEXT
    assert response.status == "incomplete"
    assert [o.type for o in response.output] == ["message"] * len(response.output)
    assert "srvtoolu" not in dump and "mcptoolu" not in dump and "encrypted" not in dump


@pytest.mark.parametrize("stream", [False, True])
def test_a_gemini_client_of_a_paused_server_tool_turn_gets_its_text(ups: Any, gclient: Any, stream: bool) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(PAUSED), "pause_turn")) if stream
              else Reply.json(_answer(copy.deepcopy(PAUSED), "pause_turn")))
    if stream:
        chunks = list(gclient.models.generate_content_stream(model="claude", contents="When?"))
        text = "".join(c.text or "" for c in chunks)
        dump = "".join(c.model_dump_json() for c in chunks)
        finish = [c.candidates[0].finish_reason for c in chunks if c.candidates and c.candidates[0].finish_reason]
    else:
        resp = gclient.models.generate_content(model="claude", contents="When?")
        text, dump, finish = resp.text, resp.model_dump_json(), [resp.candidates[0].finish_reason]
    assert text == TEXT
    assert "srvtoolu" not in dump and "mcptoolu" not in dump and "encrypted" not in dump
    assert [str(f) for f in finish] == ["FinishReason.OTHER"], finish


def test_a_chat_client_of_an_answer_of_blocks_only(ups: Any, oai: openai.OpenAI) -> None:
    a, _ = ups
    a.enqueue(Reply.json(_answer([copy.deepcopy(SEARCH_USE)], "pause_turn")))
    completion = oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "When?"}])
    assert completion.choices[0].message.content in (None, "")
    a.enqueue(Reply.anthropic_sse(_sse([copy.deepcopy(SEARCH_USE)], "pause_turn")))
    chunks = list(oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "W?"}],
                                              stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


@pytest.mark.parametrize("stream", [False, True])
def test_server_tool_usage_reaches_client_and_spend_log(ups: Any, gateway: GatewayProcess,
                                                             stream: bool) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_sse(copy.deepcopy(CONTENT))) if stream
              else Reply.json(_answer(copy.deepcopy(CONTENT))))
    r = _post(gateway, {"model": "claude", "max_tokens": 100, "tools": [WEB_SEARCH], "messages": [QUESTION],
                        "stream": stream})
    assert r.status_code == 200
    if stream:
        usage = [e for e in _events(r.content) if e["type"] == "message_delta"][-1]["usage"]
    else:
        usage = r.json()["usage"]
    assert usage["server_tool_use"] == {"web_search_requests": 1}
    row = spend_row(gateway.db_url, r.headers["x-request-id"])  # type: ignore[attr-defined]
    # the tokens and the search ($0.01 a call: tests/test_tool_call_pricing.py)
    assert (row["input_tokens"], row["output_tokens"], row["cost_micro_usd"]) == (60, 9, 60 * 3 + 9 * 15 + 10000)


@pytest.mark.parametrize("stream", [False, True])
def test_the_mock_provider_takes_a_history_with_server_tool_blocks(ups: Any, claude: anthropic.Anthropic,
                                                                   stream: bool) -> None:
    history = [QUESTION, {"role": "assistant", "content": copy.deepcopy(CONTENT)},
               {"role": "user", "content": [{"type": "text", "text": "And?"},
                                            {"type": "search_result", "source": "s", "title": "t",
                                             "content": [{"type": "text", "text": "x"}]}]}]
    kw: Dict[str, Any] = dict(model="mocky", max_tokens=100, tools=[WEB_SEARCH], messages=history)
    if stream:
        with claude.messages.stream(**kw) as s:
            message = s.get_final_message()
    else:
        message = claude.messages.create(**kw)
    assert message.content[0].text.startswith("You said: And?")


# --- a stream's container and stop_details (message_delta), carried on the Anthropic wire ----------------------


def _ended(content: List[Dict[str, Any]], stop: str, **delta: Any) -> List[Dict[str, Any]]:
    events = _sse(content, stop)
    events[-2]["delta"].update(delta)
    return events


def test_a_streams_container_reaches_the_sdk(ups: Any, claude: anthropic.Anthropic) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_ended([copy.deepcopy(CODE_RESULT), {"type": "text", "text": "2"}], "end_turn",
                                         container=CONTAINER)))
    with claude.messages.stream(model="claude", max_tokens=100, messages=[QUESTION]) as stream:
        message = stream.get_final_message()
    assert message.container is not None and message.container.id == CONTAINER["id"]
    # the next turn reuses it: the client's `container` field reaches the upstream
    a.enqueue(Reply.json(_answer([{"type": "text", "text": "ok"}])))
    claude.messages.create(model="claude", max_tokens=100, container=message.container.id,
                           messages=[QUESTION, {"role": "assistant", "content": message.content},
                                     {"role": "user", "content": "again"}])
    assert a.requests[-1].json["container"] == CONTAINER["id"]


def test_a_streams_stop_details_and_its_own_stop_reason_reach_the_sdk(ups: Any, gateway: GatewayProcess,
                                                                     claude: anthropic.Anthropic) -> None:
    a, _ = ups
    details = {"type": "refusal", "category": "cyber", "explanation": "no"}
    a.enqueue(Reply.anthropic_sse(_ended([{"type": "text", "text": "I can't."}], "refusal", stop_details=details)))
    with claude.messages.stream(model="claude", max_tokens=100, messages=[QUESTION]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "refusal" and message.stop_details.category == "cyber"
    a.enqueue(Reply.anthropic_sse(_ended([{"type": "text", "text": "Out of room"}], "model_context_window_exceeded")))
    with claude.messages.stream(model="claude", max_tokens=100, messages=[QUESTION]) as stream:
        assert stream.get_final_message().stop_reason == "model_context_window_exceeded"


def test_a_json_answer_to_a_stream_request_keeps_its_container(ups: Any, claude: anthropic.Anthropic) -> None:
    """Some servers answer a stream request with one JSON body: it becomes the stream it would have been."""
    a, _ = ups
    a.enqueue(Reply.json({**_answer([{"type": "text", "text": "2"}]), "container": CONTAINER}))
    with claude.messages.stream(model="claude", max_tokens=100, messages=[QUESTION]) as stream:
        message = stream.get_final_message()
    assert message.container is not None and message.container.id == CONTAINER["id"]


def test_a_stream_of_another_wire_gets_no_container(ups: Any, oai: openai.OpenAI) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_ended([{"type": "text", "text": "2"}], "end_turn", container=CONTAINER)))
    chunks = list(oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "q"}],
                                              stream=True))
    assert "container_011CX" not in "".join(c.model_dump_json() for c in chunks)


def test_a_streams_ending_fields_survive_accumulation_for_a_whole_answer() -> None:
    """A stream folded into one answer (the plugin kit's scripted upstream, a hook's ctx.result) keeps them
    for an Anthropic client, as its unstreamed answer would; a client of another wire does not get them."""
    from routeplane.language_model.types import Finish, FinishReason, ResponseStart, TextDelta, TextEnd, TextStart
    from routeplane.testing import Gateway

    details = {"type": "refusal", "category": None, "explanation": None}
    parts = [ResponseStart("msg_1", "m"), TextStart(0), TextDelta(0, "No."), TextEnd(0),
             Finish(FinishReason.CONTENT_FILTER, wire="anthropic_messages",
                    extras={"container": CONTAINER, "stop_details": details})]
    body = {"model": "default", "max_tokens": 10, "messages": [QUESTION]}
    answer = Gateway(script=[list(parts)]).request(body, wire="anthropic_messages").json
    assert (answer["container"], answer["stop_details"], answer["stop_reason"]) == (CONTAINER, details, "refusal")
    chat = Gateway(script=[list(parts)]).request({"model": "default", "messages": [QUESTION]}).json
    assert "container" not in json.dumps(chat)


@pytest.mark.parametrize("role,k", [("assistant", 1), ("user", 2)])
def test_a_citation_that_is_not_an_object_is_a_400_not_dropped(ups: Any, gateway: GatewayProcess, role: str,
                                                                k: int) -> None:
    """It was left out silently and the text sent on without it."""
    a, _ = ups
    cited = {"type": "text", "text": "Born 1916.", "citations": [CITATION, None]}
    messages = [QUESTION, {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
                {"role": "user", "content": "go on"}]
    messages[k] = {"role": role, "content": [cited]}
    r = _post(gateway, {"model": "claude", "max_tokens": 10, "messages": messages})
    assert r.status_code == 400, r.text
    assert f"messages[{k}].content[0].citations[1]" in r.json()["error"]["message"], r.text
    assert not a.requests


MCP_SERVERS = [{"type": "url", "url": "https://mcp.example.test/sse", "name": "s"}]


@pytest.mark.parametrize("stream", [False, True])
def test_mcp_turn_through_the_beta_client(ups: Any, claude: anthropic.Anthropic, stream: bool) -> None:
    a, _ = ups
    content = [{"type": "text", "text": "Asking."}, MCP_USE, MCP_RESULT, {"type": "text", "text": "It says 1."}]
    a.enqueue(Reply.anthropic_sse(_mixed_events(copy.deepcopy(content), "end_turn")) if stream
              else Reply.json(_answer(copy.deepcopy(content))))
    kw: Dict[str, Any] = dict(model="claude", max_tokens=100, mcp_servers=MCP_SERVERS,
                              betas=["mcp-client-2025-04-04"])
    if stream:
        with claude.beta.messages.stream(messages=[QUESTION], **kw) as s:
            message = s.get_final_message()
    else:
        message = claude.beta.messages.create(messages=[QUESTION], **kw)
    assert message.model_dump(exclude_none=True)["content"] == content
    sent = a.requests[-1]
    assert sent.json["mcp_servers"] == MCP_SERVERS and "mcp-client-2025-04-04" in sent.headers["anthropic-beta"]
    a.enqueue(Reply.json(_answer([{"type": "text", "text": "ok"}])))
    claude.beta.messages.create(messages=[QUESTION, {"role": "assistant", "content": message.content},
                                          {"role": "user", "content": "more"}], **kw)
    assert a.requests[-1].json["messages"][1]["content"] == content


def test_a_paused_turn_bound_for_another_wire_names_its_server_tool_block() -> None:
    """A `pause_turn` continuation ends with the assistant's server-tool blocks: the 400 called it an
    assistant prefill, which sent the client after the wrong fix."""
    from routeplane.language_model.capability import _problem
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.protocols.anthropic_messages.request import decode_request

    prompt = decode_request({"model": "m", "max_tokens": 10, "messages": [
        QUESTION, {"role": "assistant", "content": [copy.deepcopy(SEARCH_USE), copy.deepcopy(SEARCH_RESULT)]}]})
    target = RoutingTarget("oc", "gpt", "openai_chat", base_url="http://127.0.0.1:9/v1")
    reason, param = _problem(prompt, target)
    assert param == "messages[1].content[0]" and "prefill" not in reason


def test_a_documents_citation_options_reach_anthropic_only() -> None:
    """`citations: {enabled: true}` on a document was dropped even Anthropic to Anthropic, so answers about
    documents never carried citations through the gateway."""
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.protocols.anthropic_messages.request import decode_request, encode_request
    from routeplane.protocols.gemini.request import encode_request as gemini_request

    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."},
           "title": "Sky", "context": "a note", "citations": {"enabled": True}}
    prompt = decode_request({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [doc, {"type": "text", "text": "What colour?"}]}]})
    an = RoutingTarget("an", "claude", "anthropic_messages", base_url="http://127.0.0.1:9")
    assert encode_request(prompt, an, False)["messages"][0]["content"][0] == doc
    ge = RoutingTarget("ge", "gemini-x", "gemini", base_url="http://127.0.0.1:9")
    sent = json.dumps(gemini_request(prompt, ge, False))
    assert "citations" not in sent and "a note" not in sent
    # Routed to another wire the citations asked for would never come: a 400 naming them, fallback skipped.
    from routeplane.language_model.capability import _problem

    reason, param = _problem(prompt, ge)
    assert param == "messages[0].content[0].citations" and "citations of a document" in reason
    assert _problem(prompt, an) is None
    plain = decode_request({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{**doc, "citations": {"enabled": False}}, {"type": "text", "text": "?"}]}]})
    assert _problem(plain, ge) is None


@pytest.mark.parametrize("kind", [{}, [], 3, None])
def test_a_user_block_whose_type_is_not_a_string_is_a_400(kind: Any) -> None:
    """Found by the codec fuzzer: an object as a user block's `type` was a TypeError (a 500)."""
    from routeplane.errors import InvalidRequest
    from routeplane.protocols.anthropic_messages.request import decode_request

    with pytest.raises(InvalidRequest) as info:
        decode_request({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": kind}]}]})
    assert info.value.param == "messages[0].content[0].type"
