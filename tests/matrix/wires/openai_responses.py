"""Matrix driver for OpenAI Responses (`/v1/responses`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional

from routeplane.protocols.carried import restore
from routeplane.protocols.sse import iter_events
from tests.matrix.model import (
    ClientResult,
    Image,
    Reasoning,
    Scenario,
    ToolCall,
    ToolResult,
    Turn,
    UpstreamRequest,
    Usage,
)
from tests.matrix.wires import CLIENT_KEY, UPSTREAM_KEY, ClientCall, WireDriver
from tests.support.upstream import RecordedRequest, Reply

# finish → (status, incomplete_details); Responses has no finish reason of its own.
STATUS = {"stop": ("completed", None), "stop_sequence": ("completed", None), "tool_calls": ("completed", None),
          "other": ("completed", None), "length": ("incomplete", {"reason": "max_output_tokens"}),
          "content_filter": ("incomplete", {"reason": "content_filter"}), "pause": ("incomplete", None)}
ERRORS = {"overloaded": (503, "server_error"), "rate_limit": (429, "rate_limit_exceeded"),
          "upstream": (502, "upstream_error")}


def finish_of(status: str, incomplete: Optional[Dict[str, Any]], has_calls: bool) -> str:
    """How a client derives a finish reason (openai-responses.md §2: there is none on the wire)."""
    if status == "incomplete":
        reason = (incomplete or {}).get("reason")
        return {"max_output_tokens": "length", "content_filter": "content_filter"}.get(reason, "pause")
    assert status == "completed", status
    return "tool_calls" if has_calls else "stop"


class OpenAIResponsesDriver(WireDriver):
    name = "openai_responses"
    shows_reasoning = True  # reasoning summaries
    history_reasoning = True  # reasoning items with encrypted_content
    features = frozenset({"images", "same_role_turns", "cut_stream"})

    def supports(self, scenario: Scenario, as_client: bool) -> bool:
        # Responses has no stop sequences at all: neither a client nor an upstream can carry them.
        return not scenario.stop

    def finish_fidelity(self, reason: str) -> str:
        return finish_of(*STATUS[reason], reason == "tool_calls")

    def result_fidelity(self, result: ToolResult) -> ToolResult:
        # function_call_output has no error flag: the gateway says it in the text.
        if result.is_error:
            content = result.content if result.content.startswith("Error") else f"Error: {result.content}"
            return ToolResult(result.call_id, content, False)
        return result

    def midstream_error_kind(self, kind: str) -> str:
        # The in-stream error event's code keeps rate limits apart; anything else is an upstream failure.
        # (A stream cut before its terminal event is an upstream failure too.)
        return "rate_limit" if kind == "rate_limit" else "upstream"

    def reasoning_from_upstream(self, reasoning: Reasoning) -> Reasoning:
        return reasoning  # encrypted_content is the signature

    # --- client side -------------------------------------------------------

    def client_request(self, scenario: Scenario, model: str, stream: bool) -> ClientCall:
        body: Dict[str, Any] = {"model": model, "input": encode_turns(scenario.turns),
                                "max_output_tokens": scenario.max_tokens, "store": False}
        if scenario.system:
            body["instructions"] = scenario.system
        if scenario.tools:
            body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                              "parameters": dict(t.parameters), "strict": False} for t in scenario.tools]
        if scenario.tool_choice:
            body["tool_choice"] = scenario.tool_choice
        if scenario.thinking:
            # A stateless client keeps reasoning by asking for its encrypted form.
            body["reasoning"] = {"effort": "low", "summary": "auto"}
            body["include"] = ["reasoning.encrypted_content"]
        if stream:
            body["stream"] = True
        return ClientCall("/v1/responses", {"Authorization": f"Bearer {CLIENT_KEY}"}, body)

    def error_expectation(self, kind: str) -> tuple:
        return ERRORS[kind]

    def read_client_response(self, status: int, headers: Mapping[str, str], body: bytes, stream: bool) -> ClientResult:
        retry_after = headers.get("Retry-After")
        if status != 200:
            data = json.loads(body)
            assert set(data) == {"error"}, data
            return ClientResult(status, error_type=data["error"]["type"], retry_after=retry_after, raw=data)
        if not stream:
            data = json.loads(body)
            assert data["object"] == "response", data
            return _result(data)
        return _read_stream(body)

    # --- upstream side -----------------------------------------------------

    def provider_config(self, upstream_url: str) -> Dict[str, Any]:
        return {"protocol": "openai_responses", "base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY}

    def upstream_reply(self, scenario: Scenario, stream: bool) -> Reply:
        r = scenario.reply
        if r.failure is not None and not r.failure.midstream:
            status, etype = ERRORS[r.failure.kind]
            headers = {"Retry-After": str(r.failure.retry_after)} if r.failure.retry_after else None
            return Reply.json({"error": {"message": r.failure.message, "type": etype, "param": None, "code": None}},
                              status=status, headers=headers)
        if not stream:
            return Reply.json(response(scenario))
        raw = []
        for seq, ev in enumerate(_events(scenario)):
            ev = {"type": ev["type"], "sequence_number": seq, **{k: v for k, v in ev.items() if k != "type"}}
            raw.append(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n")
        return Reply.sse(raw, done=None)

    def read_upstream_request(self, recorded: RecordedRequest) -> UpstreamRequest:
        body = recorded.json
        assert recorded.path == "/v1/responses", recorded.path
        system = [body["instructions"]] if body.get("instructions") else []
        turns: List[Turn] = []

        def assistant() -> Turn:
            if not turns or turns[-1].role != "assistant":
                turns.append(Turn("assistant"))
            return turns[-1]

        for item in body["input"]:
            kind = item.get("type", "message")
            if kind == "message" and item["role"] in ("system", "developer"):
                system.append(_text(item["content"]))
            elif kind == "message" and item["role"] == "user":
                content = item["content"]
                images = () if isinstance(content, str) else tuple(
                    _read_image(p["image_url"]) for p in content if p["type"] == "input_image")
                turns.append(Turn("user", _text(content), images=images))
            elif kind == "message":
                if turns and turns[-1].role == "assistant" and turns[-1].text:
                    turns.append(Turn("assistant"))  # a second message item is a turn of its own
                turns[-1:] = [dataclasses.replace(assistant(), text=assistant().text + _text(item["content"]))]
            elif kind == "function_call":
                call = ToolCall(item["call_id"], item["name"], json.loads(item["arguments"] or "{}"))
                turns[-1:] = [dataclasses.replace(assistant(), calls=assistant().calls + (call,))]
            elif kind == "reasoning":
                assert "encrypted_content" in item and item.get("id"), "reasoning goes back with its id and content"
                text = "\n\n".join(s["text"] for s in item.get("summary") or [])
                turns[-1:] = [dataclasses.replace(assistant(), reasoning=Reasoning(text, item["encrypted_content"]))]
            elif kind == "function_call_output":
                result = ToolResult(item["call_id"], item["output"])
                if turns and turns[-1].role == "tool":
                    turns[-1] = dataclasses.replace(turns[-1], results=turns[-1].results + (result,))
                else:
                    turns.append(Turn("tool", results=(result,)))
            else:
                raise AssertionError(f"unexpected input item {item}")
        for t in body.get("tools") or []:
            assert "function" not in t, "Responses function tools are flat"
        choice = body.get("tool_choice")
        return UpstreamRequest(
            system="\n\n".join(system), system_cache=False, turns=tuple(turns),
            tools=tuple(t["name"] for t in body.get("tools") or []),
            tool_choice=choice if isinstance(choice, str) or choice is None else choice["name"],
            max_tokens=body.get("max_output_tokens"), stop=(), stream=bool(body.get("stream")),
            thinking="effort" in (body.get("reasoning") or {}), raw=body,
        )

    def check_upstream_headers(self, headers: Mapping[str, str], client_headers: Mapping[str, str],
                               same_wire: bool) -> None:
        assert headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in json.dumps(dict(headers))

    def normalize_response(self, body: Any) -> Any:
        """Item ids of messages and calls are minted per response (call_id is the pairing key);
        the response echoes request settings the upstream body may not repeat."""
        out = {k: body.get(k) for k in ("object", "status", "incomplete_details", "usage")}
        out["output"] = [item if item["type"] == "reasoning" else {k: v for k, v in item.items() if k != "id"}
                         for item in body["output"]]
        return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content)


def _read_image(url: str) -> Image:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        return Image(media_type=header.split(";")[0], data=data)
    return Image(url=url)


def encode_turns(turns: Any) -> List[Dict[str, Any]]:
    items: List[Dict[str, Any]] = []
    for k, turn in enumerate(turns):
        if turn.role == "user" and turn.images:
            # `detail` is a required field of input_image in the SDK's types.
            items.append({"role": "user", "content": [{"type": "input_text", "text": turn.text}] + [
                {"type": "input_image", "image_url": i.url or f"data:{i.media_type};base64,{i.data}", "detail": "auto"}
                for i in turn.images]})
        elif turn.role == "user":
            items.append({"role": "user", "content": turn.text})
        elif turn.role == "tool":
            items.extend({"type": "function_call_output", "call_id": r.call_id, "output": r.content}
                         for r in turn.results)
        else:
            if turn.reasoning is not None:
                items.append({"type": "reasoning", "id": f"rs_hist{k}",
                              "summary": [{"type": "summary_text", "text": turn.reasoning.text}],
                              "encrypted_content": turn.reasoning.signature})
            if turn.text:
                items.append({"role": "assistant", "content": turn.text})
            items.extend({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.json()}
                         for c in turn.calls)
    return items


def wire_usage(u: Usage) -> Dict[str, Any]:
    inp, out = u.input + u.cache_read + u.cache_write, u.output + u.reasoning
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": u.cache_read, "cache_write_tokens": u.cache_write},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": u.reasoning}, "total_tokens": inp + out}


def _usage(raw: Dict[str, Any]) -> Usage:
    idet, odet = raw["input_tokens_details"], raw["output_tokens_details"]
    assert raw["total_tokens"] == raw["input_tokens"] + raw["output_tokens"], raw
    assert isinstance(idet["cache_write_tokens"], int), "cache_write_tokens is a required int in SDK 3.54"
    cached, written, reasoning = idet["cached_tokens"], idet["cache_write_tokens"], odet["reasoning_tokens"]
    return Usage(raw["input_tokens"] - cached - written, cached, written, raw["output_tokens"] - reasoning, reasoning)


def _items(scenario: Scenario) -> List[Dict[str, Any]]:
    r = scenario.reply
    items: List[Dict[str, Any]] = []
    if r.reasoning is not None:
        items.append({"type": "reasoning", "id": "rs_up1", "summary": [{"type": "summary_text", "text": r.reasoning.text}],
                      "encrypted_content": r.reasoning.signature})
    if r.text:
        items.append({"type": "message", "id": "msg_up1", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": r.text, "annotations": [], "logprobs": []}]})
    items.extend({"type": "function_call", "id": f"fc_up{k}", "call_id": c.id, "name": c.name, "arguments": c.json(),
                  "status": "completed"} for k, c in enumerate(r.calls))
    if (STATUS[r.finish][1] or {}).get("reason") and items and items[-1]["type"] != "reasoning":
        items[-1]["status"] = "incomplete"  # OpenAI marks the item a max_output_tokens / content_filter stop cut
    return items


def response(scenario: Scenario, status: Optional[str] = None) -> Dict[str, Any]:
    r = scenario.reply
    st, incomplete = STATUS[r.finish]
    return {"id": "resp_up1", "object": "response", "created_at": 1763800000, "status": status or st,
            "model": "up-model", "error": None, "incomplete_details": incomplete, "output": _items(scenario),
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": wire_usage(r.usage)}


def _events(scenario: Scenario) -> List[Dict[str, Any]]:
    r = scenario.reply
    shell = dict(response(scenario, "in_progress"), output=[], usage=None, incomplete_details=None)
    out: List[Dict[str, Any]] = [{"type": "response.created", "response": shell},
                                 {"type": "response.in_progress", "response": shell}]
    index = 0
    for item in _items(scenario):
        if item["type"] == "reasoning":
            ids = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            text = item["summary"][0]["text"]
            out += [{"type": "response.output_item.added", "output_index": index,
                     "item": {"type": "reasoning", "id": item["id"], "summary": []}},
                    {"type": "response.reasoning_summary_part.added", **ids, "part": {"type": "summary_text", "text": ""}},
                    {"type": "response.reasoning_summary_text.delta", **ids, "delta": text},
                    {"type": "response.reasoning_summary_text.done", **ids, "text": text},
                    {"type": "response.reasoning_summary_part.done", **ids, "part": {"type": "summary_text", "text": text}},
                    {"type": "response.output_item.done", "output_index": index, "item": item}]
            index += 1
        elif item["type"] == "message":
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out += [{"type": "response.output_item.added", "output_index": index,
                     "item": dict(item, status="in_progress", content=[])},
                    {"type": "response.content_part.added", **ids,
                     "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}]
            out += [{"type": "response.output_text.delta", **ids, "delta": p, "logprobs": []} for p in r.pieces()]
            if r.failure is not None and r.failure.kind == "cut":  # the stream just stops
                return out
            if r.failure is not None:  # mid-stream: the error event, then response.failed
                out.append({"type": "error", "code": ERRORS[r.failure.kind][1], "message": r.failure.message,
                            "param": None})
                out.append({"type": "response.failed", "response": dict(shell, status="failed", error={
                    "code": ERRORS[r.failure.kind][1], "message": r.failure.message})})
                return out
            out += [{"type": "response.output_text.done", **ids, "text": r.text, "logprobs": []},
                    {"type": "response.content_part.done", **ids, "part": item["content"][0]},
                    {"type": "response.output_item.done", "output_index": index, "item": item}]
            index += 1
    calls = [i for i in _items(scenario) if i["type"] == "function_call"]
    first = index
    frags = []
    for k, (item, call) in enumerate(zip(calls, r.calls)):
        out.append({"type": "response.output_item.added", "output_index": first + k,
                    "item": dict(item, arguments="", status="in_progress")})
        frags.extend((n, k, piece) for n, piece in enumerate(call.pieces()))
        if not r.interleave:
            out += [{"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": first + k,
                     "delta": piece} for _, _, piece in frags if piece]
            frags = []
            out += [{"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": first + k,
                     "arguments": item["arguments"]},
                    {"type": "response.output_item.done", "output_index": first + k, "item": item}]
    if r.interleave:  # deltas of open items keyed by item_id, round-robin (clients key on item_id/output_index)
        for _n, k, piece in sorted(frags):
            if piece:
                out.append({"type": "response.function_call_arguments.delta", "item_id": calls[k]["id"],
                            "output_index": first + k, "delta": piece})
        for k, item in enumerate(calls):
            out += [{"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": first + k,
                     "arguments": item["arguments"]},
                    {"type": "response.output_item.done", "output_index": first + k, "item": item}]
    final = response(scenario)
    out.append({"type": "response.completed" if final["status"] == "completed" else "response.incomplete",
                "response": final})
    return out


def _result(data: Dict[str, Any]) -> ClientResult:
    text: List[str] = []
    reasoning: List[Reasoning] = []
    calls = []
    for item in data["output"]:
        if item["type"] == "message":
            assert item["role"] == "assistant"
            text.extend(c["text"] for c in item["content"] if c["type"] == "output_text")
        elif item["type"] == "function_call":
            calls.append((item["call_id"], item["name"], json.loads(item["arguments"] or "{}")))
        elif item["type"] == "reasoning":
            reasoning.append(Reasoning("\n\n".join(s["text"] for s in item["summary"]),
                                       _own_signature(item.get("encrypted_content"))))
    return ClientResult(200, text="".join(text), reasoning=tuple(reasoning), calls=tuple(calls),
                        finish=finish_of(data["status"], data.get("incomplete_details"), bool(calls)),
                        usage=_usage(data["usage"]), raw=data)


def _own_signature(value: Optional[str]) -> Optional[str]:
    """encrypted_content, unless it is the gateway's opaque carrier of another vendor's signature
    (routeplane/protocols/carried.py; its round trip is tested in tests/test_openai_responses_codec.py)."""
    return None if restore(value) is not None else value


def _read_stream(body: bytes) -> ClientResult:
    """Accumulate events as the openai SDK's stream state does, asserting what it checks."""
    seq = 0
    snapshot: Optional[Dict[str, Any]] = None
    items: Dict[int, Dict[str, Any]] = {}
    done: Dict[int, Dict[str, Any]] = {}
    text: List[str] = []
    terminal: Optional[Dict[str, Any]] = None
    for ev in iter_events([body]):
        assert ev.data != "[DONE]", "Responses streams have no [DONE]"
        data = json.loads(ev.data)
        kind = data["type"]
        assert ev.event == kind, f"event line {ev.event!r} vs type {kind!r}"
        assert data["sequence_number"] == seq, f"sequence_number {data['sequence_number']}, expected {seq}"
        seq += 1
        assert terminal is None, f"{kind} after the terminal event"
        if kind == "error":
            return ClientResult(200, text="".join(text), error_type=data["code"], error_in_stream=True)
        if kind == "response.created":
            assert snapshot is None and seq == 1, "response.created comes first, once"
            snapshot = data["response"]
            continue
        assert snapshot is not None, f"{kind} before response.created"
        if "response" in data:
            assert data["response"]["id"] == snapshot["id"], "lifecycle response identity changed"
        if kind == "response.output_item.added":
            assert data["output_index"] not in items, "duplicate output index"
            assert all(i in done for i in items), "items must not interleave"
            items[data["output_index"]] = dict(data["item"])
        elif kind in ("response.output_text.delta", "response.function_call_arguments.delta",
                      "response.reasoning_summary_text.delta"):
            item = items[data["output_index"]]
            assert data["item_id"] == item["id"] and data["output_index"] not in done
            if kind == "response.output_text.delta":
                text.append(data["delta"])
                item["_text"] = item.get("_text", "") + data["delta"]
            elif kind == "response.function_call_arguments.delta":
                item["arguments"] += data["delta"]
            else:
                item["_summary"] = item.get("_summary", "") + data["delta"]
        elif kind == "response.output_item.done":
            added = items[data["output_index"]]
            final = data["item"]
            assert final["id"] == added["id"] and final["type"] == added["type"], "item identity changed"
            if final["type"] == "function_call":
                assert final["arguments"] == added["arguments"] and final["call_id"] == added["call_id"]
            elif final["type"] == "message":
                assert final["content"][0]["text"] == added.get("_text", "")
            done[data["output_index"]] = final
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            terminal = data["response"]
    assert terminal is not None, "no terminal event"
    assert sorted(done) == list(range(len(done))) and len(done) == len(items), "unfinished items"
    assert [terminal["output"][i] for i in range(len(done))] == [done[i] for i in sorted(done)], \
        "response.completed output differs from the streamed items"
    return _result(terminal)


DRIVER = OpenAIResponsesDriver()
