"""OpenAI Chat Completions requests: client body → Prompt, and Prompt → provider body."""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ...errors import InvalidRequest
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    ContentPart,
    FilePart,
    GenerationParams,
    ImagePart,
    Message,
    Prompt,
    ReasoningPart,
    ResponseFormat,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ..base import client_extras, effort_for_target, expect, parse_data_url
from .tools import decode_tool_call, decode_tool_choice, decode_tools, encode_tool, tool_call

PROTOCOL = "openai_chat"
# Prompt.extras keys starting with "_" are the codec's own hints, never body fields (a client cannot
# set them: client_extras drops its "_" keys).
MAX_TOKENS_FIELD_KEY = "_openai_chat_max_tokens_field"  # the client sent the legacy max_tokens
USER_FROM_SAFETY_ID_KEY = "_openai_chat_user_is_safety_identifier"  # canonical user came from safety_identifier
LEGACY_FUNCTIONS_KEY = "_openai_chat_legacy_functions"  # the client offered `functions`: answer with function_call
# Where the client's system/developer messages stood, for a same-wire upstream (see _system_layout).
SYSTEM_LAYOUT_KEY = "_openai_chat_system_layout"
# A content part's fields kept for a Chat upstream (TextPart/ImagePart/FilePart.part_fields): OpenAI's explicit
# prompt-cache breakpoint (with `prompt_cache_options.mode: "explicit"` a request whose breakpoints were dropped
# is not cached at all), and the Anthropic-style `cache_control` that clients of OpenRouter and LiteLLM put on
# Chat parts, which is also the part's canonical marker: an Anthropic upstream caches where the client marked.
_PART_FIELDS = ("prompt_cache_breakpoint", "cache_control")
# Fields the gateway only relays, by JSON type: checked all the same, so a wrong type is the client's 400
# naming the field (as OpenAI answers), not a 200 from an upstream of another wire that never saw it.
_RELAYED_TYPES = {
    "logit_bias": dict, "top_logprobs": int, "metadata": dict, "store": bool, "service_tier": str,
    "prompt_cache_key": str, "prompt_cache_retention": str, "prompt_cache_options": dict, "prediction": dict,
    "web_search_options": dict, "verbosity": str, "moderation": dict,
}
# A Responses client's fields that mean the same on OpenAI's Chat wire and bill there: the service tier
# (flex costs half, priority more) and the prompt-cache settings. Sent to OpenAI itself only (_openai_itself).
_SHARED_WITH_RESPONSES = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options")
# A media type as an input_audio `format` (OpenAI takes wav and mp3).
_AUDIO_FORMAT = {"audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/wav": "wav", "audio/x-wav": "wav",
                 "audio/wave": "wav", "audio/vnd.wave": "wav"}


# Request fields the canonical model carries; everything else is a same-wire extra.
_KNOWN = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
        "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "reasoning_effort", "user", "tools",
        "tool_choice", "parallel_tool_calls", "response_format", "functions", "function_call", "n",
    }
)


def decode_request(body: Any) -> Prompt:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = expect(body.get("model"), str, "model", required=True)
    if not model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    raw_messages = expect(body.get("messages"), list, "messages", required=True)
    if not raw_messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    n = expect(body.get("n"), int, "n")
    if n is not None and n != 1:
        raise InvalidRequest("Only n=1 is supported by this gateway.", param="n", code="unsupported_value")

    system: List[TextPart] = []
    messages: List[Message] = []
    layout: List[Tuple[int, str, int, bool]] = []
    for i, raw in enumerate(raw_messages):
        held = len(system)
        _decode_message(raw, f"messages[{i}]", system, messages)
        if len(system) > held:
            layout.append((len(messages), raw["role"], len(system) - held, isinstance(raw.get("content"), list)))

    tools = decode_tools(body)
    tool_choice, allowed = decode_tool_choice(body)
    if allowed is not None:
        # allowed_tools narrows the offer without changing `tools` (a prompt-cache nicety on
        # OpenAI); the canonical form is the narrowed list, as for Gemini's allowedFunctionNames.
        tools = tuple(t for t in tools if t.name in allowed)
    stream = bool(expect(body.get("stream"), bool, "stream"))
    _refuse_unrelayed(body)
    stream_options = expect(body.get("stream_options"), dict, "stream_options") or {}
    include_usage = bool(expect(stream_options.get("include_usage"), bool, "stream_options.include_usage"))
    expect(stream_options.get("include_obfuscation"), bool, "stream_options.include_obfuscation")

    max_tokens = expect(body.get("max_completion_tokens"), int, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = expect(body.get("max_tokens"), int, "max_tokens")
    stop = body.get("stop")
    if isinstance(stop, str):
        stops: Tuple[str, ...] = (stop,)
    elif stop is None:
        stops = ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise InvalidRequest("Invalid type for 'stop': expected a string or an array of strings.", param="stop")
    user = expect(body.get("user"), str, "user")
    safety_id = expect(body.get("safety_identifier"), str, "safety_identifier")
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=stops,
        seed=expect(body.get("seed"), int, "seed"),
        presence_penalty=_number(body, "presence_penalty"),
        frequency_penalty=_number(body, "frequency_penalty"),
        reasoning_effort=expect(body.get("reasoning_effort"), str, "reasoning_effort"),
        # safety_identifier replaced `user`: either is the end-user id other wires carry (Anthropic metadata.user_id).
        user=user if user is not None else safety_id,
    )
    hints: Dict[str, Any] = {}
    if "max_tokens" in body and "max_completion_tokens" not in body:
        hints[MAX_TOKENS_FIELD_KEY] = "max_tokens"
    if user is None and safety_id is not None:
        hints[USER_FROM_SAFETY_ID_KEY] = True  # same wire: safety_identifier goes as itself, no `user` invented
    if body.get("functions") is not None and body.get("tools") is None:
        hints[LEGACY_FUNCTIONS_KEY] = True
    if any(position or role != "system" for position, role, _, _ in layout):
        hints[SYSTEM_LAYOUT_KEY] = (len(messages), tuple(layout))
    return Prompt(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        tool_choice=tool_choice,
        response_format=_decode_response_format(body.get("response_format")),
        params=params,
        stream=stream,
        include_usage=include_usage,
        extras={**client_extras(body, _KNOWN), **hints},
        extras_protocol=PROTOCOL,
    )


def _refuse_unrelayed(body: Dict[str, Any]) -> None:
    """Answers the gateway cannot relay are a 400 up front, never an answer emptied on the way: audio
    (an audio answer's content is null, and the canonical answer is text that the hooks can read).
    Log probabilities reach a client of a Chat upstream, streamed or not (another wire's upstream is a
    400 for them: protocols/wire_only.py)."""
    modalities = expect(body.get("modalities"), list, "modalities") or []
    if any(m != "text" for m in modalities):
        raise InvalidRequest("Audio output is not supported by this gateway (its answers are text): send "
                             "'modalities': ['text'] or omit it.", param="modalities", code="unsupported_value")
    if body.get("audio") is not None:
        raise InvalidRequest("Audio output is not supported by this gateway (its answers are text): omit 'audio'.",
                             param="audio", code="unsupported_value")
    expect(body.get("logprobs"), bool, "logprobs")
    for key, kind in _RELAYED_TYPES.items():
        expect(body.get(key), kind, key)


def _number(body: Dict[str, Any], key: str) -> Optional[float]:
    value = expect(body.get(key), (int, float), key)
    return None if value is None else float(value)


def _decode_message(raw: Any, path: str, system: List[TextPart], out: List[Message]) -> None:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{path}' must be an object.", param=path)
    role = expect(raw.get("role"), str, f"{path}.role", required=True)
    content = raw.get("content")
    if role in ("system", "developer"):
        system.extend(p for p in _text_parts(content, path) if p.text)
        return
    if role == "user":
        parts = _user_parts(content, path)
        if not parts:
            raise InvalidRequest(f"'{path}.content' must not be empty.", param=f"{path}.content")
        out.append(Message(Role.USER, tuple(parts), name=expect(raw.get("name"), str, f"{path}.name")))
        return
    if role == "assistant":
        parts_a: List[ContentPart] = []
        reasoning = raw.get("reasoning_content") or raw.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            parts_a.append(ReasoningPart(reasoning, provider=PROTOCOL))
        if content is not None:
            parts_a.extend(p for p in _text_parts(content, path, allow_refusal=True) if p.text)
        refusal = expect(raw.get("refusal"), str, f"{path}.refusal")
        if refusal:
            parts_a.append(TextPart(refusal))
        for j, call in enumerate(expect(raw.get("tool_calls"), list, f"{path}.tool_calls") or []):
            parts_a.append(decode_tool_call(call, f"{path}.tool_calls[{j}]"))
        legacy = expect(raw.get("function_call"), dict, f"{path}.function_call")
        if legacy is not None:
            # Numbered by turn: the same function called in two turns must not share an id (Anthropic rejects it).
            parts_a.append(ToolCallPart(f"call_{legacy.get('name', 'fn')}_{len(out)}", str(legacy.get("name", "")),
                                        str(legacy.get("arguments") or "{}")))
        out.append(Message(Role.ASSISTANT, tuple(parts_a), name=expect(raw.get("name"), str, f"{path}.name")))
        return
    if role in ("tool", "function"):
        if role == "tool":
            call_id = expect(raw.get("tool_call_id"), str, f"{path}.tool_call_id", required=True)
            name = None
        else:  # legacy function role answers the legacy function_call
            name = expect(raw.get("name"), str, f"{path}.name", required=True)
            call_id = _legacy_call_id(out, name)
        result = ToolResultPart(call_id, tuple(_text_parts(content, path)), name=name)
        if out and out[-1].role is Role.TOOL:
            out[-1] = Message(Role.TOOL, out[-1].parts + (result,))
        else:
            out.append(Message(Role.TOOL, (result,)))
        return
    raise InvalidRequest(f"Invalid value for '{path}.role': {role!r}.", param=f"{path}.role")


def _legacy_call_id(out: List[Message], name: str) -> str:
    """The id given to the legacy function_call a `function` message answers: the last assistant turn's."""
    for m in reversed(out):
        if m.role is Role.ASSISTANT:
            return next((p.id for p in m.parts if isinstance(p, ToolCallPart) and p.name == name), f"call_{name}")
    return f"call_{name}"


def _text_parts(content: Any, path: str, allow_refusal: bool = False) -> List[TextPart]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{path}.content': expected a string or an array.",
                             param=f"{path}.content")
    parts = []
    for k, item in enumerate(content):
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{path}.content[{k}]' must be an object.", param=f"{path}.content[{k}]")
        kind = item.get("type")
        if kind == "text":
            parts.append(TextPart(expect(item.get("text"), str, f"{path}.content[{k}].text", required=True),
                                  **_part_fields(item, f"{path}.content[{k}]")))
        elif kind == "refusal" and allow_refusal:
            parts.append(TextPart(str(item.get("refusal") or "")))
        else:
            raise InvalidRequest(f"Unsupported content part type {kind!r} at '{path}.content[{k}]'.",
                                 param=f"{path}.content[{k}].type")
    return parts


def _user_parts(content: Any, path: str) -> List[ContentPart]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"Invalid type for '{path}.content': expected a string or an array.",
                             param=f"{path}.content")
    parts: List[ContentPart] = []
    for k, item in enumerate(content):
        p = f"{path}.content[{k}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{p}' must be an object.", param=p)
        kind = item.get("type")
        fields = _part_fields(item, p)
        if kind == "text":
            parts.append(TextPart(expect(item.get("text"), str, f"{p}.text", required=True), **fields))
        elif kind == "image_url":
            image = expect(item.get("image_url"), dict, f"{p}.image_url", required=True)
            url = expect(image.get("url"), str, f"{p}.image_url.url", required=True)
            detail = expect(image.get("detail"), str, f"{p}.image_url.detail")
            parsed = parse_data_url(url, f"{p}.image_url.url", "invalid_image_url")
            if parsed:
                parts.append(ImagePart(data=parsed[1], media_type=parsed[0], detail=detail, **fields))
            else:
                parts.append(ImagePart(url=url, detail=detail, **fields))
        elif kind == "input_audio":
            audio = expect(item.get("input_audio"), dict, f"{p}.input_audio", required=True)
            data = expect(audio.get("data"), str, f"{p}.input_audio.data", required=True)
            fmt = expect(audio.get("format"), str, f"{p}.input_audio.format") or "wav"
            parts.append(FilePart(data=data, media_type=f"audio/{fmt}", **fields))
        elif kind == "file":
            f = expect(item.get("file"), dict, f"{p}.file", required=True)
            data = expect(f.get("file_data"), str, f"{p}.file.file_data")
            media_type = None
            if data is not None and data.startswith("data:"):
                media_type, data = parse_data_url(data, f"{p}.file.file_data")  # type: ignore[misc]
            parts.append(FilePart(file_id=expect(f.get("file_id"), str, f"{p}.file.file_id"), data=data,
                                  media_type=media_type, filename=expect(f.get("filename"), str, f"{p}.file.filename"),
                                  **fields))
        else:
            raise InvalidRequest(f"Unsupported content part type {kind!r} at '{p}'.", param=f"{p}.type")
    return parts


def _part_fields(item: Dict[str, Any], path: str) -> Dict[str, Any]:
    """A content part's _PART_FIELDS, as the canonical part's `part_fields` for a Chat upstream."""
    own = {}
    for key in _PART_FIELDS:
        if item.get(key) is not None:
            own[key] = expect(item[key], dict, f"{path}.{key}")
    fields: Dict[str, Any] = {"part_fields": own, "part_fields_protocol": PROTOCOL} if own else {}
    if "cache_control" in own:
        fields["cache_control"] = own["cache_control"]
    return fields


def _decode_response_format(raw: Any) -> Optional[ResponseFormat]:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest("Invalid value for 'response_format'.", param="response_format")
    if raw["type"] != "json_schema":
        return ResponseFormat(raw["type"])
    spec = expect(raw.get("json_schema"), dict, "response_format.json_schema", required=True)
    return ResponseFormat("json_schema", expect(spec.get("name"), str, "response_format.json_schema.name"),
                          expect(spec.get("schema"), dict, "response_format.json_schema.schema"),
                          expect(spec.get("strict"), bool, "response_format.json_schema.strict"),
                          expect(spec.get("description"), str, "response_format.json_schema.description"))


# --- provider side ---------------------------------------------------------


def encode_request(prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
    # OpenAI itself reads developer and mid-conversation system messages; other servers' chat templates
    # often refuse both (translation.md: "use developer only if the target requires it").
    messages = _system_layout(prompt) if _openai_itself(target) else None
    if messages is None:
        messages = [{"role": "system", "content": _text_content(prompt.system, "\n\n")}] if prompt.system else []
        for m in _merge_tool_turns(prompt.messages):
            messages.extend(_encode_message(m))
    body: Dict[str, Any] = {"model": target.model, "messages": messages}
    if prompt.extras_protocol == PROTOCOL:
        body.update({k: v for k, v in prompt.extras.items() if not k.startswith("_")})
    elif prompt.extras_protocol == "openai_responses" and _openai_itself(target):
        body.update({k: prompt.extras[k] for k in _SHARED_WITH_RESPONSES if prompt.extras.get(k) is not None})
        if prompt.extras.get("_text_verbosity") is not None:
            body["verbosity"] = prompt.extras["_text_verbosity"]  # Responses text.verbosity: one setting on both wires
    p = prompt.params
    if p.max_tokens is not None:
        field = prompt.extras.get(MAX_TOKENS_FIELD_KEY) if prompt.extras_protocol == PROTOCOL else None
        body[field or str(target.options.get("max_tokens_field", "max_completion_tokens"))] = p.max_tokens
    for key, value in (
        ("temperature", p.temperature), ("top_p", p.top_p), ("seed", p.seed),
        ("presence_penalty", p.presence_penalty), ("frequency_penalty", p.frequency_penalty),
        ("reasoning_effort", effort_for_target(p.reasoning_effort, target)), ("user", _user(prompt)),
    ):
        if value is not None:
            body[key] = value
    if p.stop:
        body["stop"] = list(p.stop)
    if prompt.tools:
        body["tools"] = [encode_tool(t) for t in prompt.tools]
    tc = prompt.tool_choice
    if tc is not None:
        if tc.mode == "tool":
            kind = "custom" if any(t.custom and t.name == tc.name for t in prompt.tools) else "function"
            body["tool_choice"] = {"type": kind, kind: {"name": tc.name}}
        elif prompt.tools or tc.mode == "none":
            body["tool_choice"] = tc.mode
        if tc.parallel is not None and prompt.tools:
            body["parallel_tool_calls"] = tc.parallel
    rf = prompt.response_format
    if rf is not None:
        if rf.type == "json_schema":
            spec: Dict[str, Any] = {"name": rf.name or "response", "schema": dict(rf.schema or {})}
            if rf.description is not None:
                spec["description"] = rf.description
            if rf.strict is not None:
                spec["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            body["response_format"] = {"type": rf.type}
    if stream:
        body["stream"] = True
        # Always ask for usage: the gateway meters every stream, whatever the client asked.
        body["stream_options"] = {**dict(body.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def _system_layout(prompt: Prompt) -> Optional[List[Dict[str, Any]]]:
    """The messages of a same-wire client whose system or developer messages did not all lead: each
    goes back where it stood, with its role, so OpenAI reads the conversation as sent (other wires, and
    OpenAI-compatible servers, get one leading system message: translation.md). The layout holds positions and counts, never text:
    the text is the prompt's own, after every pre-request hook. A hook that changed how many messages
    or system parts there are makes the layout stale; then the system prompt leads, as for other wires."""
    hint = prompt.extras.get(SYSTEM_LAYOUT_KEY) if prompt.extras_protocol == PROTOCOL else None
    if hint is None:
        return None
    count, layout = hint
    if count != len(prompt.messages) or sum(n for _, _, n, _ in layout) != len(prompt.system):
        return None
    out: List[Dict[str, Any]] = []
    start = taken = 0
    for position, role, n, as_list in layout:
        for m in _merge_tool_turns(prompt.messages[start:position]):
            out.extend(_encode_message(m))
        parts = prompt.system[taken:taken + n]
        content: Any = _text_parts_out(parts) if as_list else _text_content(parts, "\n\n")
        out.append({"role": role, "content": content})
        start, taken = position, taken + n
    for m in _merge_tool_turns(prompt.messages[start:]):
        out.extend(_encode_message(m))
    return out


def _openai_itself(target: RoutingTarget) -> bool:
    """Is the Chat upstream OpenAI's own API? Only there are a Responses client's `text.verbosity` and
    _SHARED_WITH_RESPONSES sent on (openai-chat.md: "pass through only to OpenAI"): Codex sends a verbosity
    by default, and an OpenAI-compatible server refuses the unknown field (Groq: "property 'verbosity' is
    unsupported"), where leaving the hint out only changes the answer's length."""
    return urlsplit(target.base_url or "https://api.openai.com/v1").hostname == "api.openai.com"


def _user(prompt: Prompt) -> Optional[str]:
    """`user` for the upstream: not when it only restates a same-wire client's safety_identifier
    (that goes upstream as itself, among the extras)."""
    user = prompt.params.user
    if (prompt.extras_protocol == PROTOCOL and prompt.extras.get(USER_FROM_SAFETY_ID_KEY)
            and user == prompt.extras.get("safety_identifier")):
        return None
    return user


def _merge_tool_turns(messages: Tuple[Message, ...]) -> List[Message]:
    """Adjacent tool messages as one: every tool message of a turn must directly follow the
    assistant's tool_calls, before the user message that carries their attachments. For the same
    reason an assistant message after one with tool calls joins it: a history that holds each call
    of a parallel turn as its own model content (google-genai's streamed chat keeps every chunk)
    would otherwise put tool_calls right before another assistant message, which OpenAI refuses."""
    out: List[Message] = []
    for m in messages:
        if m.role is Role.TOOL and out and out[-1].role is Role.TOOL:
            out[-1] = Message(Role.TOOL, out[-1].parts + m.parts)
        elif (m.role is Role.ASSISTANT and out and out[-1].role is Role.ASSISTANT
              and any(isinstance(p, ToolCallPart) for p in out[-1].parts)):
            out[-1] = replace(out[-1], parts=out[-1].parts + m.parts)
        else:
            out.append(m)
    return out


def _encode_message(m: Message) -> List[Dict[str, Any]]:
    if m.role is Role.TOOL:
        results = [r for r in m.parts if isinstance(r, ToolResultPart)]
        out_t: List[Dict[str, Any]] = [
            {"role": "tool", "tool_call_id": r.tool_call_id, "content": _result_content(r)} for r in results]
        # A tool message holds text only: images and files of the results follow in one user
        # message, each after a line naming its call (translation.md §4).
        attached: List[Dict[str, Any]] = []
        for r in results:
            media = _attachments(r)
            if media:
                attached.append({"type": "text", "text": f"Attachments of the tool result {r.tool_call_id}:"})
                attached.extend(media)
        if attached:
            out_t.append({"role": "user", "content": attached})
        return out_t
    if m.role is Role.ASSISTANT:
        texts = [p for p in m.parts if isinstance(p, TextPart)]
        calls = [tool_call(p) for p in m.parts if isinstance(p, ToolCallPart)]
        content = _text_content(texts)
        out: Dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
        if calls:
            out["tool_calls"] = calls
        if m.name:
            out["name"] = m.name
        return [out]
    # user: plain string when it is only text (the most compatible form)
    texts = [p for p in m.parts if isinstance(p, TextPart)]
    if len(texts) == len(m.parts):
        msg: Dict[str, Any] = {"role": "user", "content": _text_content(texts)}
    else:
        msg = {"role": "user", "content": [c for c in (_encode_user_part(p) for p in m.parts) if c]}
    if m.name:
        msg["name"] = m.name
    results = [p for p in m.parts if isinstance(p, ToolResultPart)]
    if results:  # defensive: results belong in tool messages
        return _encode_message(Message(Role.TOOL, tuple(results))) + [msg]
    return [msg]


def _own_fields(p: ContentPart) -> Dict[str, Any]:
    """The part's fields a Chat client sent with it (_PART_FIELDS), for a Chat upstream only."""
    fields = getattr(p, "part_fields", None)
    return dict(fields) if fields and getattr(p, "part_fields_protocol", None) == PROTOCOL else {}


def _text_parts_out(parts: Sequence[TextPart]) -> List[Dict[str, Any]]:
    return [{"type": "text", "text": p.text, **_own_fields(p)} for p in parts]


def _text_content(parts: Sequence[TextPart], joiner: str = "") -> Any:
    """Text as one string (the most compatible form), or as text parts when one carries a field of its
    own: a prompt-cache breakpoint marks the end of its part, which a joined string cannot say."""
    if any(_own_fields(p) for p in parts):
        return _text_parts_out(parts)
    return joiner.join(p.text for p in parts)


def _encode_user_part(p: ContentPart) -> Optional[Dict[str, Any]]:
    out = _user_part_body(p)
    return None if out is None else {**out, **_own_fields(p)}


def _user_part_body(p: ContentPart) -> Optional[Dict[str, Any]]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, ImagePart):
        url = p.url if p.url else f"data:{p.media_type or 'image/png'};base64,{p.data}"
        image: Dict[str, Any] = {"url": url}
        if p.detail:
            image["detail"] = p.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(p, FilePart):
        if p.media_type and p.media_type.startswith("audio/") and p.data:
            fmt = _AUDIO_FORMAT.get(p.media_type.split(";")[0].lower(), p.media_type[6:])
            return {"type": "input_audio", "input_audio": {"data": p.data, "format": fmt}}
        if p.url and not (p.file_id or p.data):
            return {"type": "text", "text": f"(a document at {p.url})"}  # Chat files need an id or the bytes
        text = _document_text(p)
        if text is not None:
            return {"type": "text", "text": text}
        f: Dict[str, Any] = {}
        if p.file_id:
            f["file_id"] = p.file_id
        if p.data:
            f["file_data"] = f"data:{p.media_type or 'application/pdf'};base64,{p.data}"
        if p.filename:
            f["filename"] = p.filename
        return {"type": "file", "file": f}
    return None


def _document_text(p: FilePart) -> Optional[str]:
    """A plain-text document (an Anthropic `text` or `content` source) as text, headed by its title:
    Chat `file` parts take PDFs only, so a text/plain file_data would be OpenAI's 400."""
    if not (p.data and (p.media_type or "").split(";")[0].strip().lower() == "text/plain"):
        return None
    try:
        text = base64.b64decode(p.data, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidRequest("A text/plain document is not valid base64 UTF-8.") from None
    return f"{p.filename}\n\n{text}" if p.filename else text


def _attachments(r: ToolResultPart) -> List[Dict[str, Any]]:
    """A result's images and files as Chat user-message parts (documents by URL have no Chat form)."""
    return [c for c in (_encode_user_part(p) for p in r.content if not isinstance(p, TextPart))
            if c is not None and c["type"] != "text"]


def _result_content(r: ToolResultPart) -> Any:
    """A tool message's content: text, or its text parts when one carries a field of its own."""
    texts = [p for p in r.content if isinstance(p, TextPart)]
    if not any(_own_fields(p) for p in texts):
        return _result_text(r)
    out = _text_parts_out(texts)
    if r.is_error and not out[0]["text"].startswith("Error"):
        out[0]["text"] = f"Error: {out[0]['text']}"
    return out


def _result_text(r: ToolResultPart) -> str:
    text = r.text()
    for p in r.content:
        if isinstance(p, FilePart) and p.url and not (p.file_id or p.data):
            text += f"{chr(10) if text else ''}(a document at {p.url})"  # Chat cannot attach it: name it
        elif isinstance(p, FilePart) and _document_text(p) is not None:  # a text document: the result's text
            text += f"{chr(10) if text else ''}{_document_text(p)}"
    if not text and _attachments(r):
        text = "(the result is in the attachments that follow)"
    # OpenAI has no error flag on tool results: say it in the text.
    return f"Error: {text}" if r.is_error and not text.startswith("Error") else text
