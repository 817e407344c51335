"""Matrix driver for OpenAI Chat Completions (`/v1/chat/completions`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

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

FINISH_TO_WIRE = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool_calls": "tool_calls",
                  "content_filter": "content_filter", "pause": "stop", "other": "stop"}
FINISH_FROM_WIRE = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                    "content_filter": "content_filter"}
ERRORS = {"overloaded": (503, "server_error"), "rate_limit": (429, "rate_limit_exceeded"),
          "upstream": (502, "upstream_error")}


class OpenAIChatDriver(WireDriver):
    name = "openai_chat"
    # reasoning_content is opt-in for Chat clients (translation.md §7.5), so not shown here
    shows_reasoning = False
    features = frozenset({"images", "same_role_turns", "cut_stream"})

    def finish_fidelity(self, reason: str) -> str:
        return FINISH_FROM_WIRE[FINISH_TO_WIRE[reason]]

    def result_fidelity(self, result: ToolResult) -> ToolResult:
        # No error flag on tool messages: the gateway says it in the text ("Error: ...").
        return dataclasses.replace(result, is_error=False)

    def midstream_error_kind(self, kind: str) -> str:
        # The in-stream `{"error": ...}` chunk (and a stream cut before [DONE]) is decoded
        # as a generic upstream failure.
        return "upstream"

    def reasoning_from_upstream(self, reasoning: Reasoning) -> Reasoning:
        return Reasoning(reasoning.text, None)  # reasoning_content carries no signature

    # --- client side -------------------------------------------------------

    def client_request(self, scenario: Scenario, model: str, stream: bool) -> ClientCall:
        messages: List[Dict[str, Any]] = []
        if scenario.system:
            messages.append({"role": "system", "content": scenario.system})
        for turn in scenario.turns:
            messages.extend(_encode_turn(turn))
        body: Dict[str, Any] = {"model": model, "messages": messages, "max_completion_tokens": scenario.max_tokens}
        if scenario.tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                               "parameters": dict(t.parameters)}}
                             for t in scenario.tools]
        if scenario.tool_choice:
            body["tool_choice"] = scenario.tool_choice
        if scenario.stop:
            body["stop"] = list(scenario.stop)
        if scenario.thinking:
            body["reasoning_effort"] = "low"
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return ClientCall("/v1/chat/completions", {"Authorization": f"Bearer {CLIENT_KEY}"}, body)

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
            choice = data["choices"][0]
            msg = choice["message"]
            calls = tuple((c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
                          for c in msg.get("tool_calls") or [])
            reasoning = (Reasoning(msg["reasoning_content"]),) if msg.get("reasoning_content") else ()
            return ClientResult(200, text=msg.get("content") or "", calls=calls, reasoning=reasoning,
                                finish=FINISH_FROM_WIRE[choice["finish_reason"]], usage=_usage(data.get("usage")),
                                raw=data)
        return _read_stream(body)

    # --- upstream side -----------------------------------------------------

    def provider_config(self, upstream_url: str) -> Dict[str, Any]:
        return {"protocol": "openai_chat", "base_url": upstream_url + "/v1", "api_key": UPSTREAM_KEY}

    def upstream_reply(self, scenario: Scenario, stream: bool) -> Reply:
        r = scenario.reply
        if r.failure is not None and not r.failure.midstream:
            status, etype = ERRORS[r.failure.kind]
            headers = {"Retry-After": str(r.failure.retry_after)} if r.failure.retry_after else None
            return Reply.json({"error": {"message": r.failure.message, "type": etype, "param": None, "code": None}},
                              status=status, headers=headers)
        if not stream:
            return Reply.json(completion(scenario))
        return Reply.sse(_chunks(scenario), done=None if r.failure else "[DONE]")

    def read_upstream_request(self, recorded: RecordedRequest) -> UpstreamRequest:
        body = recorded.json
        system = "\n\n".join(m["content"] for m in body["messages"] if m["role"] in ("system", "developer"))
        turns: List[Turn] = []
        for m in body["messages"]:
            if m["role"] == "user":
                content = m["content"]
                text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
                images = () if isinstance(content, str) else tuple(
                    _read_image(p["image_url"]["url"]) for p in content if p["type"] == "image_url")
                turns.append(Turn("user", text, images=images))
            elif m["role"] == "assistant":
                calls = tuple(ToolCall(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
                              for c in m.get("tool_calls") or [])
                reasoning = Reasoning(m["reasoning_content"]) if m.get("reasoning_content") else None
                turns.append(Turn("assistant", m.get("content") or "", calls=calls, reasoning=reasoning))
            elif m["role"] == "tool":
                result = ToolResult(m["tool_call_id"], m["content"])
                if turns and turns[-1].role == "tool":
                    turns[-1] = dataclasses.replace(turns[-1], results=turns[-1].results + (result,))
                else:
                    turns.append(Turn("tool", results=(result,)))
        choice = body.get("tool_choice")
        return UpstreamRequest(
            system=system, system_cache=False, turns=tuple(turns),
            tools=tuple(t["function"]["name"] for t in body.get("tools") or []),
            tool_choice=choice if isinstance(choice, str) or choice is None else choice["function"]["name"],
            max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
            stop=tuple(body.get("stop") or ()), stream=bool(body.get("stream")),
            thinking="reasoning_effort" in body, raw=body,
        )

    def check_upstream_headers(self, headers: Mapping[str, str], client_headers: Mapping[str, str],
                               same_wire: bool) -> None:
        assert headers.get("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in json.dumps(dict(headers))

    def normalize_request(self, body: Any) -> Any:
        out = super().normalize_request(body)
        # reasoning_content in history is a non-standard extension the Chat codec
        # does not send upstream (OpenAI rejects unknown message fields).
        out["messages"] = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in out["messages"]]
        return out


    def normalize_response(self, body: Any) -> Any:
        out = super().normalize_response(body)
        # An upstream's reasoning_content reaches Chat clients only on opt-in (translation.md §7.5).
        out["choices"] = [dict(c, message={k: v for k, v in c["message"].items() if k != "reasoning_content"})
                          for c in out["choices"]]
        return out


def _image_url(image: Image) -> str:
    return image.url or f"data:{image.media_type};base64,{image.data}"


def _read_image(url: str) -> Image:
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        return Image(media_type=header.split(";")[0], data=data)
    return Image(url=url)


def _encode_turn(turn: Turn) -> List[Dict[str, Any]]:
    if turn.role == "user" and turn.images:
        return [{"role": "user", "content": [{"type": "text", "text": turn.text}] + [
            {"type": "image_url", "image_url": {"url": _image_url(i)}} for i in turn.images]}]
    if turn.role == "user":
        return [{"role": "user", "content": turn.text}]
    if turn.role == "tool":
        return [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in turn.results]
    msg: Dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.reasoning is not None:
        msg["reasoning_content"] = turn.reasoning.text  # unsigned: never valid as Anthropic thinking
    if turn.calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.json()}}
                             for c in turn.calls]
    return [msg]


def wire_usage(u: Usage) -> Dict[str, Any]:
    details: Dict[str, Any] = {"cached_tokens": u.cache_read}
    if u.cache_write:
        details["cache_write_tokens"] = u.cache_write
    prompt = u.input + u.cache_read + u.cache_write
    completion = u.output + u.reasoning
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": details, "completion_tokens_details": {"reasoning_tokens": u.reasoning}}


def _usage(raw: Optional[Dict[str, Any]]) -> Optional[Usage]:
    if raw is None:
        return None
    pd = raw.get("prompt_tokens_details") or {}
    cd = raw.get("completion_tokens_details") or {}
    cached, written, reasoning = pd.get("cached_tokens", 0), pd.get("cache_write_tokens", 0), cd.get("reasoning_tokens", 0)
    assert raw["total_tokens"] == raw["prompt_tokens"] + raw["completion_tokens"], raw
    return Usage(raw["prompt_tokens"] - cached - written, cached, written, raw["completion_tokens"] - reasoning,
                 reasoning)


def completion(scenario: Scenario) -> Dict[str, Any]:
    r = scenario.reply
    message: Dict[str, Any] = {"role": "assistant", "content": r.text if (r.text or not r.calls) else None,
                               "refusal": None, "annotations": []}
    if r.calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.json()}}
                                 for c in r.calls]
    if r.reasoning is not None:
        message["reasoning_content"] = r.reasoning.text
    return {"id": "chatcmpl-up1", "object": "chat.completion", "created": 1763800000, "model": "up-model",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": FINISH_TO_WIRE[r.finish]}],
            "usage": wire_usage(r.usage)}


def _chunk(delta: Optional[Dict[str, Any]], finish: Optional[str] = None,
           usage: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    chunk: Dict[str, Any] = {"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1763800000,
                             "model": "up-model",
                             "choices": [] if delta is None else
                             [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _chunks(scenario: Scenario) -> List[Any]:
    r = scenario.reply
    out: List[Any] = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    if r.reasoning is not None:
        out.append(_chunk({"reasoning_content": r.reasoning.text}))
    out.extend(_chunk({"content": piece}) for piece in r.pieces())
    if r.failure is not None:  # mid-stream: OpenAI's in-stream error form, and no [DONE]
        if r.failure.kind != "cut":  # a cut stream just stops
            out.append({"error": {"message": r.failure.message, "type": ERRORS[r.failure.kind][1]}})
        return out
    frags: List[Tuple[int, int, str]] = []  # (call index, fragment number, text)
    for k, call in enumerate(r.calls):
        frags.extend((k, n, piece) for n, piece in enumerate(call.pieces()))
    if r.interleave:
        frags.sort(key=lambda f: (f[1], f[0]))
    for k, n, piece in frags:
        call = r.calls[k]
        if n == 0:
            out.append(_chunk({"tool_calls": [{"index": k, "id": call.id, "type": "function",
                                               "function": {"name": call.name, "arguments": piece}}]}))
        else:
            out.append(_chunk({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}))
    out.append(_chunk({}, FINISH_TO_WIRE[r.finish]))
    out.append(_chunk(None, usage=wire_usage(r.usage)))
    return out


def _read_stream(body: bytes) -> ClientResult:
    """Accumulate chunks as the openai SDK does: strings of a tool call concatenate per index."""
    text: List[str] = []
    reasoning: List[str] = []
    calls: Dict[int, Dict[str, str]] = {}
    finish: Optional[str] = None
    usage = None
    done = False
    for ev in iter_events([body]):
        assert ev.event is None, f"Chat Completions chunks carry no event: line ({ev.event})"
        assert not done, "data after [DONE]"
        if ev.data == "[DONE]":
            done = True
            continue
        chunk = json.loads(ev.data)
        if "error" in chunk:
            return ClientResult(200, text="".join(text), error_type=chunk["error"]["type"], error_in_stream=True)
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            for frag in delta.get("tool_calls") or []:
                acc = calls.setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
                acc["id"] += frag.get("id") or ""
                fn = frag.get("function") or {}
                acc["name"] += fn.get("name") or ""
                acc["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                assert finish is None, "two finish_reason chunks"
                finish = FINISH_FROM_WIRE[choice["finish_reason"]]
        if chunk.get("usage"):
            assert chunk["choices"] == [], "the usage chunk has no choices"
            usage = _usage(chunk["usage"])
    assert done, "the stream did not end with [DONE]"
    return ClientResult(
        200, text="".join(text),
        reasoning=(Reasoning("".join(reasoning)),) if any(reasoning) else (),
        calls=tuple((c["id"], c["name"], json.loads(c["arguments"] or "{}")) for _, c in sorted(calls.items())),
        finish=finish, usage=usage,
    )


DRIVER = OpenAIChatDriver()
