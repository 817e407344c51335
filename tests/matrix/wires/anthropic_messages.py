"""Matrix driver for Anthropic Messages (`/v1/messages`)."""

from __future__ import annotations

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

STOP_TO_WIRE = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens",
                "tool_calls": "tool_use", "content_filter": "refusal", "pause": "pause_turn", "other": "end_turn"}
STOP_FROM_WIRE = {v: k for k, v in STOP_TO_WIRE.items() if k != "other"}
ERRORS = {"overloaded": (529, "overloaded_error"), "rate_limit": (429, "rate_limit_error"),
          "upstream": (502, "api_error")}
BETA = "interleaved-thinking-2025-05-14"
CACHE = {"type": "ephemeral"}


class AnthropicMessagesDriver(WireDriver):
    name = "anthropic_messages"
    shows_reasoning = True
    history_reasoning = True
    cache_control = True
    features = frozenset({"images", "same_role_turns", "cut_stream"})
    merges_same_role = True  # the gateway merges them (Anthropic would, server-side)
    thinking_needs_signed_tool_turn = True

    def midstream_error_kind(self, kind: str) -> str:
        return "upstream" if kind == "cut" else kind

    def finish_fidelity(self, reason: str) -> str:
        return STOP_FROM_WIRE[STOP_TO_WIRE[reason]]

    # --- client side -------------------------------------------------------

    def client_request(self, scenario: Scenario, model: str, stream: bool) -> ClientCall:
        body: Dict[str, Any] = {"model": model, "max_tokens": scenario.max_tokens}
        if scenario.system:
            body["system"] = ([{"type": "text", "text": scenario.system, "cache_control": CACHE}]
                              if scenario.system_cache else scenario.system)
        body["messages"] = encode_turns(scenario.turns)
        if scenario.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
                             for t in scenario.tools]
        if scenario.tool_choice:
            body["tool_choice"] = {"type": {"required": "any"}.get(scenario.tool_choice, scenario.tool_choice)}
        if scenario.stop:
            body["stop_sequences"] = list(scenario.stop)
        if scenario.thinking:
            body["thinking"] = {"type": "enabled", "budget_tokens": 2048}
        if stream:
            body["stream"] = True
        headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": BETA}
        return ClientCall("/v1/messages", headers, body)

    def error_expectation(self, kind: str) -> tuple:
        return ERRORS[kind]

    def read_client_response(self, status: int, headers: Mapping[str, str], body: bytes, stream: bool) -> ClientResult:
        retry_after = headers.get("Retry-After")
        if status != 200:
            data = json.loads(body)
            assert data["type"] == "error" and set(data["error"]) >= {"type", "message"}, data
            return ClientResult(status, error_type=data["error"]["type"], retry_after=retry_after, raw=data)
        if not stream:
            data = json.loads(body)
            assert data["type"] == "message" and data["role"] == "assistant", data
            return _result(data)
        return _read_stream(body)

    # --- upstream side -----------------------------------------------------

    def provider_config(self, upstream_url: str) -> Dict[str, Any]:
        return {"protocol": "anthropic_messages", "base_url": upstream_url, "api_key": UPSTREAM_KEY}

    def upstream_reply(self, scenario: Scenario, stream: bool) -> Reply:
        r = scenario.reply
        if r.failure is not None and not r.failure.midstream:
            status, etype = ERRORS[r.failure.kind]
            headers = {"retry-after": str(r.failure.retry_after)} if r.failure.retry_after else None
            return Reply.json({"type": "error", "error": {"type": etype, "message": r.failure.message},
                               "request_id": "req_up"}, status=status, headers=headers)
        if not stream:
            return Reply.json(message(scenario))
        return Reply.anthropic_sse(_events(scenario))

    def read_upstream_request(self, recorded: RecordedRequest) -> UpstreamRequest:
        body = recorded.json
        system = body.get("system") or ""
        system_cache = False
        if isinstance(system, list):
            system_cache = any("cache_control" in b for b in system)
            system = "\n\n".join(b["text"] for b in system)
        turns: List[Turn] = []
        for m in body["messages"]:
            blocks = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            if m["role"] == "user":
                results = tuple(ToolResult(b["tool_use_id"], _result_text(b.get("content")), bool(b.get("is_error")))
                                for b in blocks if b["type"] == "tool_result")
                kinds = [b["type"] for b in blocks]
                assert kinds == sorted(kinds, key=lambda k: k != "tool_result"), "tool_result blocks must come first"
                if results:
                    turns.append(Turn("tool", results=results))
                text = "".join(b["text"] for b in blocks if b["type"] == "text")
                images = tuple(_read_image(b) for b in blocks if b["type"] == "image")
                if text or images:
                    turns.append(Turn("user", text, images=images))
            else:
                reasoning = [Reasoning(b["thinking"], b["signature"]) for b in blocks if b["type"] == "thinking"]
                turns.append(Turn(
                    "assistant", "".join(b["text"] for b in blocks if b["type"] == "text"),
                    calls=tuple(ToolCall(b["id"], b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"),
                    reasoning=reasoning[0] if reasoning else None,
                ))
            for b in blocks:
                assert b["type"] != "text" or b["text"], "Anthropic rejects empty text blocks"
        choice = body.get("tool_choice")
        return UpstreamRequest(
            system=system, system_cache=system_cache, turns=tuple(turns),
            tools=tuple(t["name"] for t in body.get("tools") or []),
            tool_choice=None if choice is None else {"any": "required"}.get(choice["type"], choice["type"]),
            max_tokens=body.get("max_tokens"), stop=tuple(body.get("stop_sequences") or ()),
            stream=bool(body.get("stream")), thinking=(body.get("thinking") or {}).get("type") == "enabled",
            raw=body,
        )

    def check_upstream_headers(self, headers: Mapping[str, str], client_headers: Mapping[str, str],
                               same_wire: bool) -> None:
        assert headers.get("x-api-key") == UPSTREAM_KEY
        assert headers.get("anthropic-version") == "2023-06-01"
        assert CLIENT_KEY not in json.dumps(dict(headers))
        if same_wire:
            assert headers.get("anthropic-beta") == client_headers.get("anthropic-beta"), "anthropic-beta not forwarded"
        else:
            assert "anthropic-beta" not in headers

    def normalize_request(self, body: Any) -> Any:
        """A string is shorthand for one text block (system, message and tool_result content)."""
        out = super().normalize_request(body)
        if isinstance(out.get("system"), str):
            out["system"] = [{"type": "text", "text": out["system"]}]
        messages = []
        for m in out["messages"]:
            content = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            blocks = []
            for b in content:
                if b["type"] == "tool_result":
                    b = dict(b)
                    if isinstance(b.get("content"), str):
                        b["content"] = [{"type": "text", "text": b["content"]}] if b["content"] else []
                    b.setdefault("content", [])
                blocks.append(b)
            if messages and messages[-1]["role"] == m["role"]:
                # Consecutive same-role messages are one turn (the API merges them server-side).
                messages[-1]["content"] = messages[-1]["content"] + blocks
            else:
                messages.append({"role": m["role"], "content": blocks})
        out["messages"] = messages
        return out


def _image_block(image: Image) -> Dict[str, Any]:
    if image.url:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}


def _read_image(block: Dict[str, Any]) -> Image:
    src = block["source"]
    if src["type"] == "url":
        return Image(url=src["url"])
    return Image(media_type=src["media_type"], data=src["data"])


def encode_turns(turns: Any) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    prev_role = None
    for turn in turns:
        if turn.role == "assistant":
            blocks: List[Dict[str, Any]] = []
            if turn.reasoning is not None:
                blocks.append({"type": "thinking", "thinking": turn.reasoning.text,
                               "signature": turn.reasoning.signature})
            if turn.text:
                blocks.append({"type": "text", "text": turn.text})
            blocks.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.args)} for c in turn.calls)
            out.append({"role": "assistant", "content": blocks})
            continue
        if turn.role == "tool":
            blocks = [{"type": "tool_result", "tool_use_id": r.call_id, "content": r.content,
                       **({"is_error": True} if r.is_error else {})} for r in turn.results]
        else:
            blocks = [{"type": "text", "text": turn.text}] + [_image_block(i) for i in turn.images]
        if prev_role == "tool":  # tool results and the next user text share one turn
            out[-1]["content"] = out[-1]["content"] + blocks
        elif turn.role == "user" and not turn.images:
            out.append({"role": "user", "content": turn.text})  # consecutive user turns stay separate
        else:
            out.append({"role": "user", "content": blocks})
        prev_role = turn.role
    return out


def _result_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(b.get("text", "") for b in content)


def wire_usage(u: Usage, with_details: bool = True) -> Dict[str, Any]:
    out: Dict[str, Any] = {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
                           "cache_read_input_tokens": u.cache_read, "output_tokens": u.output + u.reasoning}
    if u.reasoning and with_details:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning}
    return out


def _usage(raw: Dict[str, Any]) -> Usage:
    reasoning = (raw.get("output_tokens_details") or {}).get("thinking_tokens", 0)
    return Usage(raw["input_tokens"], raw.get("cache_read_input_tokens") or 0,
                 raw.get("cache_creation_input_tokens") or 0, raw["output_tokens"] - reasoning, reasoning)


def message(scenario: Scenario) -> Dict[str, Any]:
    r = scenario.reply
    content: List[Dict[str, Any]] = []
    if r.reasoning is not None:
        content.append({"type": "thinking", "thinking": r.reasoning.text, "signature": r.reasoning.signature})
    if r.text:
        content.append({"type": "text", "text": r.text})
    content.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.args)} for c in r.calls)
    return {"id": "msg_up1", "type": "message", "role": "assistant", "model": "up-model", "content": content,
            "stop_reason": STOP_TO_WIRE[r.finish], "stop_sequence": r.stop_sequence,
            "usage": dict(wire_usage(r.usage), service_tier="standard",
                          cache_creation={"ephemeral_5m_input_tokens": r.usage.cache_write,
                                          "ephemeral_1h_input_tokens": 0})}


def _events(scenario: Scenario) -> List[Dict[str, Any]]:
    r = scenario.reply
    u = r.usage
    start_usage = {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
                   "cache_read_input_tokens": u.cache_read, "output_tokens": 1}
    out: List[Dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_up1", "type": "message", "role": "assistant",
                                              "model": "up-model", "content": [], "stop_reason": None,
                                              "stop_sequence": None, "usage": start_usage}},
        {"type": "ping"},
    ]
    index = 0
    if r.reasoning is not None:
        out += [{"type": "content_block_start", "index": index,
                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
                {"type": "content_block_delta", "index": index,
                 "delta": {"type": "thinking_delta", "thinking": r.reasoning.text}},
                {"type": "content_block_delta", "index": index,
                 "delta": {"type": "signature_delta", "signature": r.reasoning.signature}},
                {"type": "content_block_stop", "index": index}]
        index += 1
    if r.pieces():
        out.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        out += [{"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                for piece in r.pieces()]
        if r.failure is not None:  # mid-stream: the error event (or, for a cut, no more events)
            if r.failure.kind != "cut":
                out.append({"type": "error",
                            "error": {"type": ERRORS[r.failure.kind][1], "message": r.failure.message}})
            return out
        out.append({"type": "content_block_stop", "index": index})
        index += 1
    for call in r.calls:  # Anthropic never interleaves blocks
        out.append({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})
        out += [{"type": "content_block_delta", "index": index,
                 "delta": {"type": "input_json_delta", "partial_json": piece}} for piece in ("",) + call.pieces()]
        out.append({"type": "content_block_stop", "index": index})
        index += 1
    # Usage in message_delta is cumulative; the cache fields came in message_start.
    delta_usage = {"output_tokens": u.output + u.reasoning}
    if u.reasoning:
        delta_usage["output_tokens_details"] = {"thinking_tokens": u.reasoning}
    out.append({"type": "message_delta", "delta": {"stop_reason": STOP_TO_WIRE[r.finish],
                                                   "stop_sequence": r.stop_sequence}, "usage": delta_usage})
    out.append({"type": "message_stop"})
    return out


def _result(data: Dict[str, Any]) -> ClientResult:
    text, reasoning, calls = [], [], []
    for b in data["content"]:
        if b["type"] == "text":
            text.append(b["text"])
        elif b["type"] == "thinking":
            # The gateway's opaque carrier of another vendor's signature is not Anthropic's own
            # (routeplane/protocols/carried.py; round trip tested in tests/test_e2e_foreign_thinking.py).
            signature = b.get("signature") or None
            reasoning.append(Reasoning(b["thinking"], signature if restore(signature) is None else None))
        elif b["type"] == "tool_use":
            assert isinstance(b["input"], dict)
            calls.append((b["id"], b["name"], b["input"]))
    return ClientResult(200, text="".join(text), reasoning=tuple(reasoning), calls=tuple(calls),
                        finish=STOP_FROM_WIRE[data["stop_reason"]], stop_sequence=data.get("stop_sequence"),
                        usage=_usage(data["usage"]), raw=data)


def _read_stream(body: bytes) -> ClientResult:
    """Accumulate events as the anthropic SDK does, asserting the framing rules it relies on."""
    snapshot: Optional[Dict[str, Any]] = None
    open_index: Optional[int] = None
    partial: Dict[int, str] = {}
    stopped = False
    for ev in iter_events([body]):
        data = json.loads(ev.data)
        assert ev.event == data["type"], f"every event needs its `event:` line ({ev.event!r} vs {data['type']!r})"
        assert not stopped, "events after message_stop"
        kind = data["type"]
        if kind == "ping":
            continue
        if kind == "error":
            text = "".join(b.get("text", "") for b in (snapshot or {}).get("content", []))
            return ClientResult(200, text=text, error_type=data["error"]["type"], error_in_stream=True)
        if kind == "message_start":
            assert snapshot is None, "two message_start events"
            snapshot = dict(data["message"], content=[])
            assert snapshot["stop_reason"] is None
            continue
        assert snapshot is not None, f"{kind} before message_start"
        if kind == "content_block_start":
            assert open_index is None, "content blocks overlap"
            assert data["index"] == len(snapshot["content"]), "block indices must be 0-based and contiguous"
            snapshot["content"].append(dict(data["content_block"]))
            open_index = data["index"]
        elif kind == "content_block_delta":
            assert data["index"] == open_index, "a delta for a block that is not open"
            block, delta = snapshot["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
        elif kind == "content_block_stop":
            assert data["index"] == open_index
            block = snapshot["content"][open_index]
            if block["type"] == "tool_use":
                block["input"] = json.loads(partial.get(open_index) or "{}")
            if block["type"] == "text":
                assert block["text"], "an empty text block (Anthropic rejects it when sent back)"
            open_index = None
        elif kind == "message_delta":
            snapshot["stop_reason"] = data["delta"]["stop_reason"]
            snapshot["stop_sequence"] = data["delta"].get("stop_sequence")
            snapshot["usage"] = dict(snapshot["usage"], **data["usage"])  # present fields overwrite
        elif kind == "message_stop":
            assert open_index is None, "message_stop with a block open"
            stopped = True
    assert stopped, "the stream did not end with message_stop"
    assert snapshot is not None
    return _result(snapshot)


DRIVER = AnthropicMessagesDriver()
