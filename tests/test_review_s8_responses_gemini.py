"""Review (session 8) of the provider blocks kept on their own wire, for OpenAI Responses and Gemini: the official
`openai` and `google-genai` SDKs through a real gateway, with scripted upstreams. Hosted-tool items among text and
function calls, streams that fail inside a hosted item, malformed client items and parts, Gemini code execution
interleaved with thoughts and calls, and the same answers for clients of the other wires."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Optional

import anthropic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai import BadRequestError, OpenAI

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.stream import GenerationAccumulator
from routeplane.language_model.types import OpaquePart
from routeplane.protocols import openai_responses as resp_wire
from routeplane.protocols.sse import iter_events
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import ALL_WIRES, gemini_sse, responses_sse, via_wires_config
from tests.test_anthropic_server_tools import CITED, SEARCH_RESULT, SEARCH_USE, _answer, _sse

pytestmark = pytest.mark.e2e
RESP = "openai_responses"
R_TARGET = RoutingTarget("up", "gpt-x", RESP, base_url="http://x/v1", api_key="sk-test")


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5})
    config["providers"]["up_resp2"] = {**config["providers"]["up_openai_responses"]}
    config["providers"]["up_gem2"] = {**config["providers"]["up_gemini"]}
    config["models"]["resp-twice"] = {"targets": [{"provider": "up_openai_responses", "model": "r1"},
                                                  {"provider": "up_resp2", "model": "r2"}]}
    config["models"]["gem-twice"] = {"targets": [{"provider": "up_gemini", "model": "g1"},
                                                 {"provider": "up_gem2", "model": "g2"}]}
    config["fallback"] = {"cooldown": {"failures": 0}}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


def clean_log(gw: GatewayProcess) -> None:
    assert "Traceback" not in gw.logs(), gw.logs()[-3000:]


# --- OpenAI Responses: hosted-tool items among text and function calls ----------------------------------------


R_USAGE = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
           "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19}
WS = {"id": "ws_1", "type": "web_search_call", "status": "completed",
      "action": {"type": "search", "query": "paris weather", "sources": [{"type": "url", "url": "https://w.example/"}]}}
CI = {"id": "ci_1", "type": "code_interpreter_call", "status": "completed", "code": "print(6*7)",
      "container_id": "cntr_1", "outputs": [{"type": "logs", "logs": "42\n"}]}
MCP = {"id": "mcp_1", "type": "mcp_call", "name": "lookup", "server_label": "docs", "arguments": "{\"q\":\"x\"}",
       "output": "found", "status": "completed"}


def r_msg(text: str, msg_id: str) -> Dict[str, Any]:
    return {"id": msg_id, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


CALL = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather",
        "arguments": "{\"city\":\"Paris\"}", "status": "completed"}
MIXED = [r_msg("Let me look.", "msg_1"), WS, CALL, CI, MCP, r_msg("Calling done.", "msg_2")]


def r_final(output: List[Dict[str, Any]], status: str = "completed") -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": status, "model": "up",
            "output": output, "usage": R_USAGE if status == "completed" else None}


def item_events(i: int, item: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One output item as OpenAI streams it (text and arguments in two deltas, a hosted tool's progress)."""
    kind = item["type"]
    if kind == "message":
        text = item["content"][0]["text"]
        ids = {"item_id": item["id"], "output_index": i, "content_index": 0}
        half = len(text) // 2
        return [{"type": "response.output_item.added", "output_index": i,
                 "item": {**item, "status": "in_progress", "content": []}},
                {"type": "response.content_part.added", **ids,
                 "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
                {"type": "response.output_text.delta", **ids, "delta": text[:half], "logprobs": []},
                {"type": "response.output_text.delta", **ids, "delta": text[half:], "logprobs": []},
                {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
                {"type": "response.content_part.done", **ids, "part": item["content"][0]},
                {"type": "response.output_item.done", "output_index": i, "item": item}]
    if kind == "function_call":
        ids = {"item_id": item["id"], "output_index": i}
        args = item["arguments"]
        return [{"type": "response.output_item.added", "output_index": i,
                 "item": {**item, "status": "in_progress", "arguments": ""}},
                {"type": "response.function_call_arguments.delta", **ids, "delta": args[:5]},
                {"type": "response.function_call_arguments.delta", **ids, "delta": args[5:]},
                {"type": "response.function_call_arguments.done", **ids, "arguments": args},
                {"type": "response.output_item.done", "output_index": i, "item": item}]
    return [{"type": "response.output_item.added", "output_index": i, "item": {**item, "status": "in_progress"}},
            {"type": f"response.{kind}.in_progress", "item_id": item["id"], "output_index": i},
            {"type": "response.output_item.done", "output_index": i, "item": item}]


def r_events(output: List[Dict[str, Any]], tail: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    shell = {**r_final([]), "status": "in_progress", "usage": None}
    events = [{"type": "response.created", "response": shell}, {"type": "response.in_progress", "response": shell}]
    for i, item in enumerate(output):
        events += item_events(i, item)
    return events + (tail if tail is not None else [{"type": "response.completed", "response": r_final(output)}])


def shape(item: Any) -> Any:
    """What a client reads of an output item (ids of messages and calls are the gateway's)."""
    d = item.model_dump(mode="json", exclude_none=True, warnings=False)
    if d["type"] == "message":
        return ("message", [c["text"] for c in d["content"]])
    if d["type"] == "function_call":
        return ("function_call", d["call_id"], d["name"], d["arguments"])
    return d


TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
              {"type": "web_search"}]


def test_responses_streamed_output_order_is_the_plain_answers(oai: OpenAI, up: FakeUpstream,
                                                              gateway: GatewayProcess) -> None:
    up.enqueue(Reply.json(r_final(MIXED)))
    plain = [shape(o) for o in oai.responses.create(model="via-openai_responses", input="hi", tools=TOOLS).output]
    assert plain == [("message", ["Let me look."]), WS, ("function_call", "call_1", "get_weather",
                                                        "{\"city\":\"Paris\"}"), CI, MCP, ("message", ["Calling done."])]
    up.enqueue(responses_sse(r_events(MIXED)))
    with oai.responses.stream(model="via-openai_responses", input="hi", tools=TOOLS) as s:
        events = list(s)
        final = s.get_final_response()
    added = [(e.output_index, e.item.type) for e in events if e.type == "response.output_item.added"]
    done = {e.output_index: shape(e.item) for e in events if e.type == "response.output_item.done"}
    assert added == [(i, o["type"] if isinstance(o, dict) else o[0]) for i, o in enumerate(plain)]
    assert [done[i] for i in range(len(plain))] == plain
    assert [shape(o) for o in final.output] == plain
    assert [e.sequence_number for e in events] == list(range(len(events)))
    clean_log(gateway)


def test_responses_hosted_item_while_a_chat_call_streams_waits_for_the_call(oai: OpenAI, up: FakeUpstream) -> None:
    """A Responses client of a Chat upstream has no hosted items; but an upstream of its own wire can hand the
    encoder a hosted item while a call's arguments are incomplete only if items interleave: they do not, so
    the item lands after the call, in the order the upstream gave."""
    output = [CALL, WS]
    events = r_events(output)
    up.enqueue(responses_sse(events))
    with oai.responses.stream(model="via-openai_responses", input="hi", tools=TOOLS) as s:
        final = s.get_final_response()
    assert [shape(o) for o in final.output] == [("function_call", "call_1", "get_weather", "{\"city\":\"Paris\"}"), WS]


def _decoded(events: List[Dict[str, Any]]) -> Any:
    dec = resp_wire.PROVIDER.stream_decoder(R_TARGET)
    parts: List[Any] = []
    for ev in iter_events(responses_sse(events).chunks or []):
        parts += dec.feed(ev)
    acc = GenerationAccumulator()
    for p in parts + dec.finish():
        acc.add(p)
    return acc.generation().parts


def test_responses_hosted_item_added_without_its_id_comes_out_once() -> None:
    """An upstream (a compatible server) whose output_item.added lacks the id its done carries: the item is one,
    matched by output_index, not a second, in-progress copy at the end."""
    events = copy.deepcopy(r_events([WS]))
    del events[2]["item"]["id"]
    assert _decoded(events) == (OpaquePart(RESP, WS),)
    events = copy.deepcopy(r_events([WS]))
    del events[-2]["item"]["id"]  # (the same object as the terminal response's item)
    assert _decoded(events) == (OpaquePart(RESP, {k: v for k, v in WS.items() if k != "id"}),)


# --- OpenAI Responses: a stream failing inside a hosted-tool item ----------------------------------------------


def failing_tail(error: bool = True) -> List[Dict[str, Any]]:
    """The upstream starts a hosted item and fails inside it (an error event, or the connection just ends)."""
    started = [{"type": "response.output_item.added", "output_index": 9,
                "item": {**WS, "id": "ws_9", "status": "in_progress"}},
               {"type": "response.web_search_call.searching", "item_id": "ws_9", "output_index": 9}]
    return started + ([{"type": "error", "code": "server_error", "message": "search backend died", "param": None}]
                      if error else [])


@pytest.mark.parametrize("error", [True, False], ids=["error-event", "cut"])
def test_responses_failure_inside_a_hosted_item_before_any_content_falls_back(
        oai: OpenAI, up: FakeUpstream, gateway: GatewayProcess, error: bool) -> None:
    up.enqueue(responses_sse(r_events([], tail=failing_tail(error))))
    up.enqueue(responses_sse(r_events([r_msg("From the second.", "msg_9")])))
    with oai.responses.stream(model="resp-twice", input="hi", tools=TOOLS) as s:
        events = list(s)
        final = s.get_final_response()
    assert [shape(o) for o in final.output] == [("message", ["From the second."])]
    assert not [e for e in events if e.type == "response.output_item.added" and e.item.type == "web_search_call"]
    assert [r.json["model"] for r in up.requests] == ["r1", "r2"]
    clean_log(gateway)


@pytest.mark.parametrize("error", [True, False], ids=["error-event", "cut"])
def test_responses_failure_inside_a_hosted_item_after_content_fails_the_stream(
        oai: OpenAI, up: FakeUpstream, gateway: GatewayProcess, error: bool) -> None:
    events_up = r_events([r_msg("Searching now.", "msg_1"), WS], tail=failing_tail(error))
    up.enqueue(responses_sse(events_up))
    with oai.responses.stream(model="resp-twice", input="hi", tools=TOOLS) as s:
        got = list(s)
        with pytest.raises(RuntimeError, match="response.completed"):
            s.get_final_response()  # the SDK's word for a failed response, as OpenAI's own
    types_seen = [e.type for e in got]
    assert types_seen[-2:] == ["error", "response.failed"], types_seen
    failed = next(e for e in got if e.type == "response.failed").response
    # What had been sent stays, whole; the item the upstream never finished is not made up.
    assert [shape(o) for o in failed.output] == [("message", ["Searching now."]), WS]
    assert failed.error is not None and failed.error.code == "server_error"
    assert len(up.requests) == 1, "no fallback once content reached the client"
    clean_log(gateway)


# --- OpenAI Responses: malformed client items → a 400 naming the path ------------------------------------------


BAD_ITEMS = [
    ([5], "input[0]"),
    ([{"type": None, "id": "x"}], "input[0].type"),
    ([{"type": 7}], "input[0].type"),
    ([{"type": ["web_search_call"]}], "input[0].type"),
    ([{"type": {"k": 1}}], "input[0].type"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [5]}], "input[1].content[0]"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "output_text", "text": "x",
                                                                             "annotations": "bad"}]}],
     "input[1].content[0].annotations"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "output_text", "text": "x",
                                                                             "annotations": [5]}]}],
     "input[1].content[0].annotations"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "output_text", "text": 5,
                                                                             "annotations": [{"type": "x"}]}]}],
     "input[1].content[0].text"),
    ([{"role": "user", "content": [{"type": ["input_text"], "text": "x"}]}], "input[0].content[0].type"),
    ([{"role": ["user"], "content": "x"}], "input[0].role"),
]


@pytest.mark.parametrize("items,param", BAD_ITEMS, ids=[p for _, p in BAD_ITEMS])
@pytest.mark.parametrize("model", ["via-openai_responses", "via-anthropic_messages"])
def test_responses_malformed_items_are_a_400_naming_the_path(oai: OpenAI, up: FakeUpstream, gateway: GatewayProcess,
                                                             items: Any, param: str, model: str) -> None:
    with pytest.raises(BadRequestError) as info:
        oai.responses.create(model=model, input=items)
    assert info.value.status_code == 400 and info.value.body["param"] == param, info.value.body
    assert info.value.body["type"] == "invalid_request_error"
    assert not up.requests
    clean_log(gateway)


# --- Gemini: code execution interleaved with thoughts and calls, across chunks ---------------------------------


G_USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
CODE = {"executableCode": {"language": "PYTHON", "code": "print(6 * 7)"}, "thoughtSignature": "c2lnMQ=="}
RESULT = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42\n"}}
G_CALL = {"functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnMg=="}


def g_chunk(parts: List[Dict[str, Any]], finish: Optional[str] = None) -> Dict[str, Any]:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": G_USAGE, "modelVersion": "up-001", "responseId": "r1"}


G_CHUNKS = [g_chunk([{"text": "Plan: compute.", "thought": True}]), g_chunk([CODE]),
            g_chunk([{"text": "Then check the weather.", "thought": True}, RESULT]),
            g_chunk([{"text": "6*7 is 42. "}, {"text": "", "thought": True, "thoughtSignature": "c2lnMw=="}]),
            g_chunk([G_CALL]), g_chunk([{"text": "Asking for Paris."}], "STOP")]
G_PARTS = [p for c in G_CHUNKS for p in c["candidates"][0]["content"]["parts"]]
G_CONFIG = types.GenerateContentConfig(
    tools=[types.Tool(code_execution=types.ToolCodeExecution()),
           types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters_json_schema={
               "type": "object", "properties": {"city": {"type": "string"}}})])],
    thinking_config=types.ThinkingConfig(include_thoughts=True),
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))


def g_kinds(parts: List[Any]) -> List[Any]:
    """What a client reads of a turn's parts, texts of one kind joined as a stream splits them anyhow."""
    out: List[Any] = []
    for p in parts:
        d = p.model_dump(mode="json", exclude_none=True) if not isinstance(p, dict) else _snake(p)
        if "text" in d:
            kind = "thought" if d.get("thought") else "text"
            if not d["text"]:
                continue
            if out and out[-1][0] == kind:
                out[-1] = (kind, out[-1][1] + d["text"])
            else:
                out.append((kind, d["text"]))
        elif "function_call" in d:
            out.append(("call", d["function_call"]["name"], d["function_call"]["args"]))
        elif "executable_code" in d:
            out.append(("code", d["executable_code"]["code"]))
        elif "code_execution_result" in d:
            out.append(("result", d["code_execution_result"]["output"]))
    return out


def _snake(d: Dict[str, Any]) -> Dict[str, Any]:
    names = {"functionCall": "function_call", "executableCode": "executable_code",
             "codeExecutionResult": "code_execution_result"}
    return {names.get(k, k): v for k, v in d.items()}


EXPECTED = [("thought", "Plan: compute."), ("code", "print(6 * 7)"), ("thought", "Then check the weather."),
            ("result", "42\n"), ("text", "6*7 is 42. "), ("call", "get_weather", {"city": "Paris"}),
            ("text", "Asking for Paris.")]


def test_gemini_interleaved_parts_reach_the_sdk_in_order_plain_and_streamed(
        gclient: genai.Client, up: FakeUpstream, gateway: GatewayProcess) -> None:
    assert g_kinds(G_PARTS) == EXPECTED
    up.enqueue(Reply.json(g_chunk(G_PARTS, "STOP")))
    plain = gclient.models.generate_content(model="via-gemini", contents="6*7, then Paris", config=G_CONFIG)
    assert g_kinds(plain.candidates[0].content.parts) == EXPECTED
    up.enqueue(gemini_sse(G_CHUNKS))
    chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="6*7, then Paris",
                                                         config=G_CONFIG))
    streamed = [p for c in chunks for p in c.candidates[0].content.parts]
    assert g_kinds(streamed) == EXPECTED
    signed = {json.dumps(p.model_dump(mode="json", exclude_none=True)) for p in streamed if p.thought_signature}
    assert len(signed) == 3, signed  # the code's, the call's and the thoughts' signatures, each once
    # Sent back, the streamed turn reaches the upstream with every kept part in place.
    history = [types.Content(role="user", parts=[types.Part(text="6*7, then Paris")]),
               types.Content(role="model", parts=streamed),
               types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                   id="c1", name="get_weather", response={"output": "sunny"}))])]
    up.enqueue(Reply.json(g_chunk([{"text": "Sunny."}], "STOP")))
    again = gclient.models.generate_content(model="via-gemini", contents=history, config=G_CONFIG)
    assert again.text == "Sunny."
    sent = [r.json for r in up.requests if "Content" in r.path][-1]["contents"]
    assert g_kinds(sent[1]["parts"]) == EXPECTED
    assert [p for p in sent[1]["parts"] if "executableCode" in p or "codeExecutionResult" in p] == [CODE, RESULT]
    clean_log(gateway)


# --- Gemini: malformed client parts → a 400 naming the path --------------------------------------------------


BAD_PARTS = [
    ([{"role": "model", "parts": [5]}], "contents[1].parts[0]"),
    ([{"role": "model", "parts": [{}]}], "contents[1].parts[0]"),
    ([{"role": "model", "parts": [{"thought": True}]}], "contents[1].parts[0]"),
    ([{"role": "model", "parts": [{"executableCode": "print(1)"}]}], "contents[1].parts[0].executableCode"),
    ([{"role": "model", "parts": [{"codeExecutionResult": ["42"]}]}], "contents[1].parts[0].codeExecutionResult"),
    ([{"role": "model", "parts": [{"functionCall": {"name": 5}}]}], "contents[1].parts[0].functionCall.name"),
    ([{"role": "model", "parts": "x"}], "contents[1].parts"),
    ([{"role": ["model"], "parts": [{"text": "x"}]}], "contents[1].role"),
]


def _gemini_post(gateway: GatewayProcess, model: str, contents: List[Any], stream: bool = False) -> Any:
    import requests

    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}] + contents}
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return requests.post(f"{gateway.url}/v1beta/models/{model}:{verb}", json=body,
                         headers={"x-goog-api-key": "client-key"}, timeout=30)


@pytest.mark.parametrize("contents,param", BAD_PARTS, ids=[p for _, p in BAD_PARTS])
@pytest.mark.parametrize("model", ["via-gemini", "via-openai_chat"])
def test_gemini_malformed_parts_are_a_400_naming_the_path(gateway: GatewayProcess, up: FakeUpstream,
                                                          contents: Any, param: str, model: str) -> None:
    r = _gemini_post(gateway, model, contents)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT" and f"'{param}" in err["message"], err
    assert not up.requests
    clean_log(gateway)


# --- the same answers for the clients of the other wires: text only, no crash, no empty message --------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_gemini_interleaved_answer_to_the_other_clients(gateway: GatewayProcess, up: FakeUpstream,
                                                        oai: OpenAI, claude: anthropic.Anthropic,
                                                        stream: bool) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    for client in ("chat", "responses", "anthropic"):
        up.enqueue(gemini_sse(G_CHUNKS) if stream else Reply.json(g_chunk(G_PARTS, "STOP")))
        if client == "chat":
            if stream:
                chunks = list(oai.chat.completions.create(model="via-gemini", messages=[{"role": "user",
                                                                                            "content": "x"}],
                                                          tools=tools, stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                calls = [t.function.name for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []
                         if t.function and t.function.name]
            else:
                msg = oai.chat.completions.create(model="via-gemini", messages=[{"role": "user", "content": "x"}],
                                                  tools=tools).choices[0].message
                text, calls = msg.content or "", [t.function.name for t in msg.tool_calls or []]
        elif client == "responses":
            rtools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
            if stream:
                with oai.responses.stream(model="via-gemini", input="x", tools=rtools) as s:
                    out = s.get_final_response().output
            else:
                out = oai.responses.create(model="via-gemini", input="x", tools=rtools).output
            assert all(o.type in ("message", "function_call", "reasoning") for o in out), [o.type for o in out]
            messages = [o for o in out if o.type == "message"]
            assert all(c.text for m in messages for c in m.content), "no empty message"
            text = "".join(c.text for m in messages for c in m.content)
            calls = [o.name for o in out if o.type == "function_call"]
        else:
            atools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
            kw: Any = {"model": "via-gemini", "max_tokens": 100, "tools": atools,
                       "messages": [{"role": "user", "content": "x"}]}
            if stream:
                with claude.messages.stream(**kw) as s:
                    content = s.get_final_message().content
            else:
                content = claude.messages.create(**kw).content
            assert all(b.type in ("text", "tool_use", "thinking") for b in content), [b.type for b in content]
            assert all(b.text for b in content if b.type == "text"), "no empty text block"
            text = "".join(b.text for b in content if b.type == "text")
            calls = [b.name for b in content if b.type == "tool_use"]
        assert text == "6*7 is 42. Asking for Paris.", (client, text)
        assert calls == ["get_weather"], client
        assert "print(6 * 7)" not in text and "42\n" not in text
    clean_log(gateway)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_responses_mixed_answer_to_the_other_clients(gateway: GatewayProcess, up: FakeUpstream, oai: OpenAI,
                                                     claude: anthropic.Anthropic, gclient: genai.Client,
                                                     stream: bool) -> None:
    for client in ("chat", "anthropic", "gemini"):
        up.enqueue(responses_sse(r_events(MIXED)) if stream else Reply.json(r_final(MIXED)))
        if client == "chat":
            tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
            if stream:
                chunks = list(oai.chat.completions.create(model="via-openai_responses", tools=tools, stream=True,
                                                          messages=[{"role": "user", "content": "x"}]))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                calls = [t.function.name for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []
                         if t.function and t.function.name]
            else:
                msg = oai.chat.completions.create(model="via-openai_responses", tools=tools,
                                                  messages=[{"role": "user", "content": "x"}]).choices[0].message
                text, calls = msg.content or "", [t.function.name for t in msg.tool_calls or []]
        elif client == "anthropic":
            kw: Any = {"model": "via-openai_responses", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}
            if stream:
                with claude.messages.stream(**kw) as s:
                    content = s.get_final_message().content
            else:
                content = claude.messages.create(**kw).content
            assert all(b.type in ("text", "tool_use") for b in content), [b.type for b in content]
            assert all(b.text for b in content if b.type == "text"), "no empty text block"
            text = "".join(b.text for b in content if b.type == "text")
            calls = [b.name for b in content if b.type == "tool_use"]
        else:
            cfg = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
                name="get_weather", parameters_json_schema={"type": "object"})])],
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
            if stream:
                parts = [p for c in gclient.models.generate_content_stream(model="via-openai_responses",
                                                                           contents="x", config=cfg)
                         for p in c.candidates[0].content.parts]
            else:
                parts = gclient.models.generate_content(model="via-openai_responses", contents="x",
                                                        config=cfg).candidates[0].content.parts
            kinds = g_kinds(parts)
            assert all(k[0] in ("text", "call") for k in kinds), kinds
            text = "".join(k[1] for k in kinds if k[0] == "text")
            calls = [k[1] for k in kinds if k[0] == "call"]
        assert text == "Let me look.Calling done." or text == "Let me look.\n\nCalling done.", (client, text)
        assert calls == ["get_weather"], client
        assert "ws_1" not in text and "print" not in text
    clean_log(gateway)


def test_gemini_failure_after_a_code_part_is_an_error_frame_not_a_fallback(gclient: genai.Client, up: FakeUpstream,
                                                                           gateway: GatewayProcess) -> None:
    up.enqueue(gemini_sse([g_chunk([CODE]), {"error": {"code": 500, "message": "sandbox died", "status": "INTERNAL"}}]))
    got: List[Any] = []
    with pytest.raises(genai_errors.APIError) as info:
        for c in gclient.models.generate_content_stream(model="gem-twice", contents="x", config=G_CONFIG):
            got.append(c)
    assert info.value.code >= 500 and "sandbox died" in str(info.value)
    assert [p.executable_code.code for c in got for p in c.candidates[0].content.parts if p.executable_code] == [
        "print(6 * 7)"]
    assert len(up.requests) == 1
    clean_log(gateway)


def test_gemini_failure_before_any_content_falls_back_whole(gclient: genai.Client, up: FakeUpstream,
                                                            gateway: GatewayProcess) -> None:
    first = copy.deepcopy(g_chunk([]))
    up.enqueue(gemini_sse([first]))  # no parts, then the stream ends without a finishReason
    up.enqueue(gemini_sse([g_chunk([CODE]), g_chunk([RESULT, {"text": "42"}], "STOP")]))
    chunks = list(gclient.models.generate_content_stream(model="gem-twice", contents="x", config=G_CONFIG))
    assert g_kinds([p for c in chunks for p in c.candidates[0].content.parts]) == [
        ("code", "print(6 * 7)"), ("result", "42\n"), ("text", "42")]
    assert [r.path.split("/")[-1].split(":")[0] for r in up.requests] == ["g1", "g2"]
    clean_log(gateway)


ONLY_CODE = [g_chunk([CODE]), g_chunk([RESULT], "STOP")]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_gemini_answer_of_code_parts_only_is_no_empty_block_elsewhere(gateway: GatewayProcess, up: FakeUpstream,
                                                                       oai: OpenAI, claude: anthropic.Anthropic,
                                                                       stream: bool) -> None:
    def script() -> None:
        up.enqueue(gemini_sse(ONLY_CODE) if stream else Reply.json(g_chunk([CODE, RESULT], "STOP")))

    script()
    kw: Any = {"model": "via-gemini", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]}
    if stream:
        with claude.messages.stream(**kw) as s:
            events = [e.type for e in s]
            content = s.get_final_message().content
        assert "content_block_start" not in events, events
    else:
        content = claude.messages.create(**kw).content
    assert content == []
    script()
    if stream:
        with oai.responses.stream(model="via-gemini", input="x") as rs:
            out = rs.get_final_response().output
    else:
        out = oai.responses.create(model="via-gemini", input="x").output
    assert out == []
    script()
    if stream:
        chunks = list(oai.chat.completions.create(model="via-gemini", messages=[{"role": "user", "content": "x"}],
                                                  stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    else:
        msg = oai.chat.completions.create(model="via-gemini", messages=[{"role": "user", "content": "x"}])
        assert msg.choices[0].message.content == "" and msg.choices[0].finish_reason == "stop"
    clean_log(gateway)


ANTHROPIC_MIXED = [{"type": "text", "text": "Let me search."}, SEARCH_USE, SEARCH_RESULT, CITED,
                   {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]


def test_anthropic_server_blocks_leave_no_gap_in_a_responses_clients_output(oai: OpenAI, up: FakeUpstream,
                                                                            gateway: GatewayProcess) -> None:
    rtools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    up.enqueue(Reply.json(_answer(ANTHROPIC_MIXED, "tool_use")))
    plain = [shape(o) for o in oai.responses.create(model="via-anthropic_messages", input="x", tools=rtools).output]
    assert [p[0] for p in plain] == ["message", "message", "function_call"], plain
    assert plain[:2] == [("message", ["Let me search."]), ("message", [CITED["text"]])]
    up.enqueue(Reply.anthropic_sse(_sse(ANTHROPIC_MIXED, "tool_use")))
    with oai.responses.stream(model="via-anthropic_messages", input="x", tools=rtools) as s:
        events = list(s)
        final = s.get_final_response()
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    assert added == list(range(len(plain)))
    assert [shape(o)[:3] for o in final.output] == [p[:3] for p in plain]
    assert "srvtoolu" not in json.dumps([e.model_dump(mode="json", warnings=False) for e in events])
    clean_log(gateway)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_server_blocks_to_a_gemini_client_are_text_and_call_only(gclient: genai.Client, up: FakeUpstream,
                                                                           stream: bool) -> None:
    cfg = types.GenerateContentConfig(automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    if stream:
        up.enqueue(Reply.anthropic_sse(_sse(ANTHROPIC_MIXED, "tool_use")))
        parts = [p for c in gclient.models.generate_content_stream(model="via-anthropic_messages", contents="x",
                                                                   config=cfg) for p in c.candidates[0].content.parts]
    else:
        up.enqueue(Reply.json(_answer(ANTHROPIC_MIXED, "tool_use")))
        parts = gclient.models.generate_content(model="via-anthropic_messages", contents="x",
                                                config=cfg).candidates[0].content.parts
    kinds = g_kinds(parts)
    assert [k[0] for k in kinds] in (["text", "call"], ["text", "text", "call"]), kinds
    assert "".join(k[1] for k in kinds if k[0] == "text") in ("Let me search." + CITED["text"],
                                                               "Let me search.\n\n" + CITED["text"])
    assert kinds[-1] == ("call", "get_weather", {"city": "Paris"})
