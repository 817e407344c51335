"""Matrix driver for Gemini (`/v1beta/models/{model}:generateContent` / `:streamGenerateContent?alt=sse`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional

from routeplane.protocols.carried import restore
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

FINISH_TO_WIRE = {"stop": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP",
                  "content_filter": "SAFETY", "pause": "OTHER", "other": "OTHER"}
ERRORS = {"overloaded": (503, "UNAVAILABLE"), "rate_limit": (429, "RESOURCE_EXHAUSTED"),
          "upstream": (502, "UNAVAILABLE")}
MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def finish_of(reason: str, has_calls: bool) -> str:
    """A Gemini client's reading: tool calls end with STOP, detected by functionCall parts."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason == "SAFETY":
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


class GeminiDriver(WireDriver):
    name = "gemini"
    shows_reasoning = True  # thought parts (includeThoughts)
    history_reasoning = True  # thought parts with thoughtSignature
    features = frozenset({"images", "same_role_turns", "cut_stream"})

    def finish_fidelity(self, reason: str) -> str:
        return finish_of(FINISH_TO_WIRE[reason], reason == "tool_calls")

    def midstream_error_kind(self, kind: str) -> str:
        # A close before any finishReason is an upstream failure; an in-stream error keeps its code.
        return "upstream" if kind == "cut" else kind

    def usage_fidelity(self, usage: Usage) -> Usage:
        # usageMetadata has no cache-write count: written tokens are ordinary prompt tokens.
        return dataclasses.replace(usage, input=usage.input + usage.cache_write, cache_write=0)

    # --- client side -------------------------------------------------------

    def client_request(self, scenario: Scenario, model: str, stream: bool) -> ClientCall:
        body: Dict[str, Any] = {"contents": encode_turns(scenario.turns)}
        if scenario.system:
            body["systemInstruction"] = {"parts": [{"text": scenario.system}]}
        if scenario.tools:
            body["tools"] = [{"functionDeclarations": [
                {"name": t.name, "description": t.description, "parametersJsonSchema": dict(t.parameters)}
                for t in scenario.tools]}]
        if scenario.tool_choice:
            body["toolConfig"] = {"functionCallingConfig": {"mode": MODES[scenario.tool_choice]}}
        gen: Dict[str, Any] = {"maxOutputTokens": scenario.max_tokens}
        if scenario.stop:
            gen["stopSequences"] = list(scenario.stop)
        if scenario.thinking:
            gen["thinkingConfig"] = {"thinkingBudget": 2048, "includeThoughts": True}
        body["generationConfig"] = gen
        path = f"/v1beta/models/{model}:streamGenerateContent?alt=sse" if stream else \
            f"/v1beta/models/{model}:generateContent"
        return ClientCall(path, {"x-goog-api-key": CLIENT_KEY}, body)

    def error_expectation(self, kind: str) -> tuple:
        return ERRORS[kind]

    def read_client_response(self, status: int, headers: Mapping[str, str], body: bytes, stream: bool) -> ClientResult:
        retry_after = headers.get("Retry-After")
        if status != 200:
            data = json.loads(body)
            err = data["error"]
            assert set(data) == {"error"} and err["code"] == status and err["message"], data
            return ClientResult(status, error_type=err["status"], retry_after=retry_after, raw=data)
        if not stream:
            return _result([json.loads(body)], raw=json.loads(body))
        return _read_stream(body)

    # --- upstream side -----------------------------------------------------

    def provider_config(self, upstream_url: str) -> Dict[str, Any]:
        return {"protocol": "gemini", "base_url": upstream_url, "api_key": UPSTREAM_KEY}

    def upstream_reply(self, scenario: Scenario, stream: bool) -> Reply:
        r = scenario.reply
        if r.failure is not None and not r.failure.midstream:
            status, name = ERRORS[r.failure.kind]
            headers = {"Retry-After": str(r.failure.retry_after)} if r.failure.retry_after else None
            return Reply.json({"error": {"code": status, "message": r.failure.message, "status": name}},
                              status=status, headers=headers)
        if not stream:
            return Reply.json(response(scenario))
        raw = [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in _chunks(scenario)]
        return Reply.sse(raw, done=None)  # no terminator: the stream ends when the connection closes

    def read_upstream_request(self, recorded: RecordedRequest) -> UpstreamRequest:
        body = recorded.json
        stream = ":streamGenerateContent" in recorded.path
        assert recorded.path == ("/v1beta/models/up-gemini:streamGenerateContent?alt=sse" if stream
                                 else "/v1beta/models/up-gemini:generateContent"), recorded.path
        system = "".join(p["text"] for p in (body.get("systemInstruction") or {}).get("parts", []))
        turns: List[Turn] = []
        calls_by_name: Dict[str, List[str]] = {}
        for c in body["contents"]:
            parts = c["parts"]
            if c["role"] == "model":
                calls = []
                reasoning = None
                for p in parts:
                    if "functionCall" in p:
                        fc = p["functionCall"]
                        assert isinstance(fc["args"], dict), "args must be an object"
                        calls.append(ToolCall(fc.get("id", ""), fc["name"], fc["args"]))
                    elif p.get("thought"):
                        reasoning = Reasoning(p["text"], p.get("thoughtSignature"))
                # Foreign history carries Google's documented placeholder, not a signature of its own.
                turns.append(Turn("assistant", "".join(p["text"] for p in parts if "text" in p and not p.get("thought")),
                                  calls=tuple(calls), reasoning=reasoning))
                calls_by_name = {}
                for call in calls:
                    calls_by_name.setdefault(call.name, []).append(call.id)
            else:
                assert c["role"] == "user", c
                kinds = ["functionResponse" in p for p in parts]
                assert kinds == sorted(kinds, reverse=True), "functionResponse parts come first"
                results = []
                for p in parts:
                    if "functionResponse" in p:
                        fr = p["functionResponse"]
                        assert fr["name"], "Gemini requires the function name on a result"
                        resp = fr["response"]
                        assert isinstance(resp, dict), "functionResponse.response must be an object"
                        content, is_error = (resp["error"], True) if "error" in resp else (resp.get("output"), False)
                        results.append(ToolResult(fr.get("id") or calls_by_name[fr["name"]].pop(0), content, is_error))
                if results:
                    turns.append(Turn("tool", results=tuple(results)))
                text = "".join(p.get("text", "") for p in parts)
                images = tuple(_read_image(p) for p in parts if "inlineData" in p or "fileData" in p)
                if text or images:
                    turns.append(Turn("user", text, images=images))
        gen = body.get("generationConfig") or {}
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
        thinking = gen.get("thinkingConfig") or {}
        return UpstreamRequest(
            system=system, system_cache=False, turns=tuple(turns),
            tools=tuple(d["name"] for t in body.get("tools") or [] for d in t["functionDeclarations"]),
            tool_choice={v: k for k, v in MODES.items()}.get(mode) if mode else None,
            max_tokens=gen.get("maxOutputTokens"), stop=tuple(gen.get("stopSequences") or ()), stream=stream,
            thinking=bool(thinking) and thinking.get("thinkingBudget") != 0, raw=body,
        )

    def check_upstream_headers(self, headers: Mapping[str, str], client_headers: Mapping[str, str],
                               same_wire: bool) -> None:
        assert headers.get("x-goog-api-key") == UPSTREAM_KEY
        assert "authorization" not in headers
        assert CLIENT_KEY not in json.dumps(dict(headers))

    def normalize_response(self, body: Any) -> Any:
        out = dict(body)
        for key in ("modelVersion", "responseId"):  # the route's name and the gateway's id
            out.pop(key, None)
        return out


def encode_turns(turns: Any) -> List[Dict[str, Any]]:
    contents: List[Dict[str, Any]] = []
    names: Dict[str, str] = {}
    prev_role = None
    for turn in turns:
        if turn.role == "assistant":
            parts: List[Dict[str, Any]] = []
            if turn.reasoning is not None:
                parts.append({"text": turn.reasoning.text, "thought": True,
                              "thoughtSignature": turn.reasoning.signature})
            if turn.text:
                parts.append({"text": turn.text})
            for c in turn.calls:
                names[c.id] = c.name
                parts.append({"functionCall": {"id": c.id, "name": c.name, "args": dict(c.args)}})
            contents.append({"role": "model", "parts": parts})
            prev_role = turn.role
            continue
        if turn.role == "tool":
            parts = [{"functionResponse": {"id": r.call_id, "name": names[r.call_id],
                                           "response": {"error" if r.is_error else "output": r.content}}}
                     for r in turn.results]
        else:
            parts = [{"text": turn.text}] + [_image_part(i) for i in turn.images]
        if prev_role == "tool":  # results and the next user text share one turn
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": "user", "parts": parts})  # consecutive user turns stay separate
        prev_role = turn.role
    return contents


def _image_part(image: Image) -> Dict[str, Any]:
    if image.url:
        # Gemini fetches only Files API / GCS URIs; the gateway passes a URL through as fileData.
        return {"fileData": {"mimeType": "image/jpeg", "fileUri": image.url}}
    return {"inlineData": {"mimeType": image.media_type, "data": image.data}}


def _read_image(part: Dict[str, Any]) -> Image:
    if "fileData" in part:
        return Image(url=part["fileData"]["fileUri"])
    return Image(media_type=part["inlineData"]["mimeType"], data=part["inlineData"]["data"])


def wire_usage(u: Usage) -> Dict[str, Any]:
    prompt = u.input + u.cache_read + u.cache_write
    meta: Dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": u.output,
                            "totalTokenCount": prompt + u.output + u.reasoning}
    if u.cache_read:
        meta["cachedContentTokenCount"] = u.cache_read
    if u.reasoning:
        meta["thoughtsTokenCount"] = u.reasoning
    return meta


def _usage(raw: Dict[str, Any]) -> Usage:
    prompt, cached = raw.get("promptTokenCount", 0), raw.get("cachedContentTokenCount", 0)
    out, thoughts = raw.get("candidatesTokenCount", 0), raw.get("thoughtsTokenCount", 0)
    assert raw.get("totalTokenCount") == prompt + out + thoughts, raw
    return Usage(prompt - cached, cached, 0, out, thoughts)


def _parts(scenario: Scenario) -> List[Dict[str, Any]]:
    r = scenario.reply
    parts: List[Dict[str, Any]] = []
    if r.reasoning is not None:
        parts.append({"text": r.reasoning.text, "thought": True, "thoughtSignature": r.reasoning.signature})
    if r.text:
        parts.append({"text": r.text})
    parts.extend({"functionCall": {"id": c.id, "name": c.name, "args": dict(c.args)}} for c in r.calls)
    return parts


def _chunk(parts: List[Dict[str, Any]], finish: Optional[str], usage: Dict[str, Any]) -> Dict[str, Any]:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": "up-gemini-001", "responseId": "ge-up1"}


def response(scenario: Scenario) -> Dict[str, Any]:
    r = scenario.reply
    return _chunk(_parts(scenario), FINISH_TO_WIRE[r.finish], wire_usage(r.usage))


def _chunks(scenario: Scenario) -> List[Dict[str, Any]]:
    """Text arrives in pieces, calls whole (no argument deltas on the Gemini API); usage
    totals ride every chunk and the last one is final."""
    r = scenario.reply
    early = {"promptTokenCount": r.usage.input + r.usage.cache_read + r.usage.cache_write}
    early["totalTokenCount"] = early["promptTokenCount"]
    out: List[Dict[str, Any]] = []
    if r.reasoning is not None:
        out.append(_chunk([{"text": r.reasoning.text, "thought": True}], None, early))
    out += [_chunk([{"text": piece}], None, early) for piece in r.pieces()]
    if r.failure is not None and r.failure.kind == "cut":  # closed without a finishReason
        return out
    if r.failure is not None:  # mid-stream: Google's in-stream error object, then the connection closes
        status, name = ERRORS[r.failure.kind]
        out.append({"error": {"code": status, "message": r.failure.message, "status": name}})
        return out
    tail: List[Dict[str, Any]] = [{"functionCall": {"id": c.id, "name": c.name, "args": dict(c.args)}}
                                  for c in r.calls]
    if r.reasoning is not None:  # the signature comes on an empty part in the last chunk
        tail.append({"text": "", "thought": True, "thoughtSignature": r.reasoning.signature})
    out.append(_chunk(tail, FINISH_TO_WIRE[r.finish], wire_usage(r.usage)))
    return out


def _result(chunks: List[Dict[str, Any]], raw: Any = None) -> ClientResult:
    text: List[str] = []
    thoughts: List[str] = []
    signature: Optional[str] = None
    calls = []
    finish: Optional[str] = None
    usage = None
    for chunk in chunks:
        if chunk.get("usageMetadata"):
            usage = _usage(chunk["usageMetadata"])
        cand = chunk["candidates"][0]
        for p in cand["content"].get("parts") or []:
            if "functionCall" in p:
                fc = p["functionCall"]
                assert isinstance(fc["args"], dict)
                calls.append((fc.get("id", ""), fc["name"], fc["args"]))
            elif p.get("thought"):
                thoughts.append(p.get("text", ""))
                own = p.get("thoughtSignature")
                # The gateway's opaque carrier of another vendor's signature is not Gemini's own
                # (routeplane/protocols/carried.py; round trip tested in tests/test_gemini_codec.py).
                signature = (own if restore(own) is None else None) or signature
            else:
                text.append(p.get("text", ""))
                assert "thoughtSignature" not in p or p.get("text") == "", p
        if cand.get("finishReason"):
            assert finish is None, "two finishReason chunks"
            finish = cand["finishReason"]
    assert finish is not None, "no finishReason"
    reasoning = (Reasoning("".join(thoughts), signature),) if any(thoughts) else ()
    return ClientResult(200, text="".join(text), reasoning=reasoning, calls=tuple(calls),
                        finish=finish_of(finish, bool(calls)), usage=usage, raw=raw)


def _read_stream(body: bytes) -> ClientResult:
    """As google-genai reads SSE: only `data: ` lines; anything else breaks the SDK."""
    chunks: List[Dict[str, Any]] = []
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    for line in lines:
        if not line:
            continue
        assert line.startswith(b"data: "), f"google-genai fails on a non-data line: {line[:60]!r}"
        chunk = json.loads(line[6:])
        if "error" in chunk:
            text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"].get("parts") or []
                           if not p.get("thought"))
            return ClientResult(200, text=text, error_type=chunk["error"]["status"], error_in_stream=True)
        chunks.append(chunk)
    return _result(chunks)


DRIVER = GeminiDriver()
