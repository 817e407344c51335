"""Canned upstream replies in each of the four wires, for FakeUpstream.

`weather_upstream(req)` is a FakeUpstream `default` responder that plays any
wire, chosen by the request path, plain or streamed as the request asks:
offered tools and a user turn last → one `get_weather` call (city Paris);
a tool result last → the text `It is <result>.`; otherwise `Hello from <wire>.`.
Every reply reports the same usage: 20 input tokens of which 5 cached, 9 output.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from tests.support.upstream import RecordedRequest, Reply, openai_chunk

INPUT, CACHED, OUTPUT = 20, 5, 9
CALL_ARGS = {"city": "Paris"}


ALL_WIRES = ("openai_chat", "anthropic_messages", "openai_responses", "gemini")


def via_wires_config(url: str, wires: Tuple[str, ...] = ALL_WIRES, **provider: Any) -> Dict[str, Any]:
    """A gateway config with one provider per wire (`up_<wire>`, key `sk-up-<wire>-secret`), all on the
    FakeUpstream at `url`, and a route `via-<wire>` to each; `provider`: more settings for every provider."""
    base = {"openai_chat": url + "/v1", "anthropic_messages": url, "openai_responses": url + "/v1", "gemini": url}
    return {
        "providers": {f"up_{w}": {"protocol": w, "base_url": base[w], "api_key": f"sk-up-{w}-secret", **provider}
                      for w in wires},
        "models": {f"via-{w}": {"targets": [{"provider": f"up_{w}", "model": f"up-{w}"}]} for w in wires},
    }


SHORT_WIRES = {"oc": "openai_chat", "an": "anthropic_messages", "ge": "gemini", "orr": "openai_responses"}


def fallback_pair_config(urls: Tuple[str, str], key: str, **provider: Any) -> Dict[str, Any]:
    """Providers `<short>-a` and `<short>-b` of every wire (SHORT_WIRES) on the two FakeUpstreams at `urls`,
    and a route `<short>` from a to b; `provider`: more settings for every provider."""
    providers: Dict[str, Any] = {}
    for short, wire in SHORT_WIRES.items():
        for name, url in zip("ab", urls):
            providers[f"{short}-{name}"] = {"protocol": wire, "base_url": url + "/v1" if wire.startswith("openai") else url,
                                            "api_key": key, "timeouts": {"connect": 2.0, "read": 5.0}, **provider}
    models = {short: {"targets": [{"provider": f"{short}-a", "model": "m"}, {"provider": f"{short}-b", "model": "m"}]}
              for short in SHORT_WIRES}
    return {"providers": providers, "models": models, "fallback": {"cooldown": {"failures": 0}}}


def gemini_sse(chunks: List[Dict[str, Any]], **kw: Any) -> Reply:
    """Google framing: `data: {json}` + CRLF blank line, no terminator (the stream ends at close)."""
    raw = [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]
    return Reply.sse(raw, done=None, **kw)


def responses_sse(events: List[Dict[str, Any]], **kw: Any) -> Reply:
    """Named events with a sequence_number each; no [DONE]."""
    raw = []
    for i, ev in enumerate(events):
        ev = {**ev, "sequence_number": i}
        raw.append(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n")
    return Reply.sse(raw, done=None, **kw)


def _decide(wire: str, body: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """("call", None) | ("result", text) | ("hello", None) from the last turn of any wire."""
    if wire == "openai_chat":
        last = body["messages"][-1]
        if last["role"] == "tool":
            return "result", last["content"]
        has_tools = bool(body.get("tools"))
    elif wire == "anthropic_messages":
        last = body["messages"][-1]
        content = last["content"] if isinstance(last["content"], list) else []
        for block in content:
            if block.get("type") == "tool_result":
                c = block.get("content")
                return "result", c if isinstance(c, str) else "".join(x.get("text", "") for x in c or [])
        has_tools = bool(body.get("tools"))
    elif wire == "openai_responses":
        last = body["input"][-1]
        if last.get("type") == "function_call_output":
            return "result", last["output"]
        has_tools = bool(body.get("tools"))
    else:
        parts = body["contents"][-1]["parts"]
        for p in parts:
            if "functionResponse" in p:
                resp = p["functionResponse"]["response"]
                return "result", resp.get("output", json.dumps(resp))
        has_tools = bool(body.get("tools"))
    return ("call", None) if has_tools else ("hello", None)


def weather_upstream(req: RecordedRequest) -> Reply:
    body = req.json
    if req.path.startswith("/v1/chat/completions"):
        wire, stream = "openai_chat", bool(body.get("stream"))
    elif req.path.startswith("/v1/messages"):
        wire, stream = "anthropic_messages", bool(body.get("stream"))
    elif req.path.startswith("/v1/responses"):
        wire, stream = "openai_responses", bool(body.get("stream"))
    elif ":generateContent" in req.path or ":streamGenerateContent" in req.path:
        wire, stream = "gemini", ":streamGenerateContent" in req.path
    else:
        return Reply.json({"error": {"message": f"no such path {req.path}"}}, 404)
    kind, result = _decide(wire, body)
    text = f"It is {result}." if kind == "result" else f"Hello from {wire}."
    call = kind == "call"
    return {"openai_chat": openai_chat_reply, "anthropic_messages": anthropic_reply,
            "openai_responses": responses_reply, "gemini": gemini_reply}[wire](text, call, stream)


# --- per wire ----------------------------------------------------------------


def openai_chat_reply(text: str, call: bool, stream: bool) -> Reply:
    usage = {"prompt_tokens": INPUT, "completion_tokens": OUTPUT, "total_tokens": INPUT + OUTPUT,
             "prompt_tokens_details": {"cached_tokens": CACHED}}
    args = json.dumps(CALL_ARGS)
    if not stream:
        if call:
            tc = [{"id": "call_oc1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]
            msg: Dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": tc}
        else:
            msg = {"role": "assistant", "content": text}
        return Reply.json({"id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": "up",
                           "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if call else "stop"}],
                           "usage": usage})
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    if call:
        chunks.append(openai_chunk({"tool_calls": [{"index": 0, "id": "call_oc1", "type": "function",
                                                    "function": {"name": "get_weather", "arguments": ""}}]}))
        chunks.append(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[:5]}}]}))
        chunks.append(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[5:]}}]}))
        chunks.append(openai_chunk({}, "tool_calls"))
    else:
        chunks += [openai_chunk({"content": text[:6]}), openai_chunk({"content": text[6:]}), openai_chunk({}, "stop")]
    chunks.append(openai_chunk(None, usage=usage))
    return Reply.sse(chunks)


def anthropic_reply(text: str, call: bool, stream: bool) -> Reply:
    usage = {"input_tokens": INPUT - CACHED, "cache_read_input_tokens": CACHED, "cache_creation_input_tokens": 0,
             "output_tokens": OUTPUT}
    block: Dict[str, Any] = ({"type": "tool_use", "id": "toolu_an1", "name": "get_weather", "input": CALL_ARGS}
                             if call else {"type": "text", "text": text})
    stop = "tool_use" if call else "end_turn"
    if not stream:
        return Reply.json({"id": "msg_up", "type": "message", "role": "assistant", "model": "up", "content": [block],
                           "stop_reason": stop, "stop_sequence": None, "usage": usage})
    start_usage = {**usage, "output_tokens": 1}
    events: List[Dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "up", "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": start_usage}}]
    if call:
        args = json.dumps(CALL_ARGS)
        events += [
            {"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": args[:5]}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": args[5:]}},
        ]
    else:
        events += [
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[:6]}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text[6:]}},
        ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
        {"type": "message_stop"},
    ]
    return Reply.anthropic_sse(events)


def _responses_usage() -> Dict[str, Any]:
    return {"input_tokens": INPUT, "input_tokens_details": {"cached_tokens": CACHED, "cache_write_tokens": 0},
            "output_tokens": OUTPUT, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": INPUT + OUTPUT}


def responses_reply(text: str, call: bool, stream: bool) -> Reply:
    args = json.dumps(CALL_ARGS)
    if call:
        item: Dict[str, Any] = {"type": "function_call", "id": "fc_or1", "call_id": "call_or1", "name": "get_weather",
                                "arguments": args, "status": "completed"}
    else:
        item = {"type": "message", "id": "msg_or1", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
    final = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
             "output": [item], "usage": _responses_usage()}
    if not stream:
        return Reply.json(final)
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    events: List[Dict[str, Any]] = [{"type": "response.created", "response": shell},
                                    {"type": "response.in_progress", "response": shell}]
    if call:
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "arguments": "", "status": "in_progress"}},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_or1", "output_index": 0, "delta": args[:5]},
            {"type": "response.function_call_arguments.delta", "item_id": "fc_or1", "output_index": 0, "delta": args[5:]},
            {"type": "response.function_call_arguments.done", "item_id": "fc_or1", "output_index": 0, "arguments": args},
        ]
    else:
        ids = {"item_id": "msg_or1", "output_index": 0, "content_index": 0}
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": "", "annotations": []}},
            {"type": "response.output_text.delta", **ids, "delta": text[:6]},
            {"type": "response.output_text.delta", **ids, "delta": text[6:]},
            {"type": "response.output_text.done", **ids, "text": text},
            {"type": "response.content_part.done", **ids, "part": item["content"][0]},
        ]
    events += [{"type": "response.output_item.done", "output_index": 0, "item": item},
               {"type": "response.completed", "response": final}]
    return responses_sse(events)


def gemini_reply(text: str, call: bool, stream: bool) -> Reply:
    usage = {"promptTokenCount": INPUT, "cachedContentTokenCount": CACHED, "candidatesTokenCount": OUTPUT,
             "totalTokenCount": INPUT + OUTPUT}
    part = {"functionCall": {"name": "get_weather", "args": CALL_ARGS}} if call else {"text": text}

    def chunk(parts: List[Dict[str, Any]], finish: Optional[str], u: Dict[str, Any]) -> Dict[str, Any]:
        cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        return {"candidates": [cand], "usageMetadata": u, "modelVersion": "up-001", "responseId": "ge-up"}

    if not stream:
        return Reply.json(chunk([part], "STOP", usage))
    early = {"promptTokenCount": INPUT, "totalTokenCount": INPUT}
    if call:
        return gemini_sse([chunk([part], "STOP", usage)])
    return gemini_sse([chunk([{"text": text[:6]}], None, early), chunk([{"text": text[6:]}], "STOP", usage)])
