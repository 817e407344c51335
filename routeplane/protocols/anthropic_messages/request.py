"""Anthropic Messages requests: client body → Prompt, and Prompt → provider body."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from ...errors import InvalidRequest
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    ContentPart,
    FilePart,
    GenerationParams,
    ImagePart,
    Message,
    OpaquePart,
    Prompt,
    ReasoningPart,
    ResponseFormat,
    Role,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from ..base import (
    EFFORT_BUDGET,
    OPAQUE_KEY,
    client_extras,
    described_schema,
    effort_for_budget,
    empty_conversation,
    expect,
)
from ..carried import restore
from ..limits import limit_refusal
from .blocks import encode_messages, text_block
from .server_blocks import USER_OPAQUE, citations, opaque_in_assistant, own_tool_use

PROTOCOL = "anthropic_messages"

# Anthropic requires max_tokens; OpenAI and Gemini clients may omit it. This is
# the documented default, overridable per provider with options.default_max_tokens.
DEFAULT_MAX_TOKENS = 4096
DEFAULT_VERSION = "2023-06-01"
MIN_THINKING_BUDGET = 1024  # anthropic-messages.md §2

# Prompt.extras keys starting with "_" are gateway-internal hints, never body fields.
HEADERS_KEY = "_anthropic_headers"  # the client's anthropic-version / anthropic-beta
CITED_DOCUMENT_KEY = "_anthropic_cited_document"  # the path of the first document with citations enabled
SERVER_TOOLS_KEY = "_anthropic_server_tools"  # [position, tool] of versioned server tools, same wire only
TOOL_FIELDS_KEY = "_anthropic_tool_fields"  # tool name → fields the canonical Tool lacks, same wire only
SYSTEM_BLOCKS_KEY = "_anthropic_system_blocks"  # the client sent `system` as blocks
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

_KNOWN = frozenset(
    {
        "model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature", "top_p", "top_k",
        "tools", "tool_choice", "metadata",
    }
)


# --- client side -----------------------------------------------------------


def decode_request(body: Any, headers: Optional[Mapping[str, str]] = None, require_max_tokens: bool = True) -> Prompt:
    """A /v1/messages body → Prompt; every malformed field is a 400 naming it.

    Fields the canonical model lacks go to `extras` (sent again only to an
    Anthropic upstream); `headers` supplies anthropic-version/-beta to forward.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = expect(body.get("model"), str, "model", required=True)
    if not model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    max_tokens = expect(body.get("max_tokens"), int, "max_tokens", required=require_max_tokens)
    if max_tokens is not None and max_tokens < 0:
        raise InvalidRequest("'max_tokens' must be at least 0.", param="max_tokens")
    raw_messages = expect(body.get("messages"), list, "messages", required=True)
    thread = body.get("thread")
    if not raw_messages and not (isinstance(thread, dict) and thread.get("type") == "continue"):
        # A thread's continuation may be empty (after a pause_turn, the upstream resumes on its own).
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")

    extras: Dict[str, Any] = client_extras(body, _KNOWN)
    system = _decode_system(body.get("system"))
    if isinstance(body.get("system"), list):
        extras[SYSTEM_BLOCKS_KEY] = True
    messages: List[Message] = []
    opaque: List[str] = []  # where the history holds server-tool blocks (OpaquePart)
    cited: List[str] = []  # where it asks for a document's citations (`citations: {enabled: true}`)
    for i, raw in enumerate(raw_messages):
        _decode_message(raw, f"messages[{i}]", system, messages, opaque, cited)
    if opaque:
        extras.setdefault(OPAQUE_KEY, opaque[0])  # another wire's upstream would miss them (wire_only.py)
    if cited:
        extras[CITED_DOCUMENT_KEY] = cited[0]  # citations asked of a document: only Anthropic gives them

    tools, server_tools, tool_fields = _decode_tools(body.get("tools"))
    if server_tools:
        extras[SERVER_TOOLS_KEY] = server_tools
    if tool_fields:
        extras[TOOL_FIELDS_KEY] = tool_fields
    stops = expect(body.get("stop_sequences"), list, "stop_sequences") or []
    if not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("'stop_sequences' must be an array of strings.", param="stop_sequences")
    metadata = expect(body.get("metadata"), dict, "metadata") or {}
    thinking = expect(body.get("thinking"), dict, "thinking")
    budget = None
    if thinking and thinking.get("type") == "enabled":
        budget = expect(thinking.get("budget_tokens"), int, "thinking.budget_tokens", required=True)
        if budget < MIN_THINKING_BUDGET:
            # As Anthropic answers it; another wire would turn -5 into "no reasoning", Gemini refuse it.
            raise InvalidRequest(f"'thinking.budget_tokens' must be at least {MIN_THINKING_BUDGET}.",
                                 param="thinking.budget_tokens")
    output_config = expect(body.get("output_config"), dict, "output_config") or {}
    effort = output_config.get("effort") if isinstance(output_config.get("effort"), str) else None
    if effort is None and budget is not None:
        effort = effort_for_budget(budget)
    elif effort is None and thinking and thinking.get("type") == "adaptive":
        # Claude decides how much to think; other wires need a size (as for Gemini's dynamic budget).
        effort = "medium"
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        top_k=expect(body.get("top_k"), int, "top_k"),
        stop=tuple(stops),
        reasoning_effort=effort,
        reasoning_budget=budget,
        user=expect(metadata.get("user_id"), str, "metadata.user_id"),
    )
    if headers:
        lower = {k.lower(): v for k, v in headers.items()}
        forwarded = {h: lower[h] for h in FORWARDED_HEADERS if lower.get(h)}
        if forwarded:
            extras[HEADERS_KEY] = forwarded
    return Prompt(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        tool_choice=_decode_tool_choice(body.get("tool_choice")),
        response_format=_decode_format(output_config.get("format")),
        params=params,
        stream=bool(expect(body.get("stream"), bool, "stream")),
        # Anthropic streams always carry usage.
        include_usage=True,
        extras=extras,
        extras_protocol=PROTOCOL,
    )


def _number(body: Dict[str, Any], key: str) -> Optional[float]:
    value = expect(body.get(key), (int, float), key)
    return None if value is None else float(value)


def _decode_system(raw: Any) -> List[TextPart]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [TextPart(raw)] if raw else []
    if not isinstance(raw, list):
        raise InvalidRequest("Invalid type for 'system': expected a string or an array of text blocks.", param="system")
    out = []
    for i, block in enumerate(raw):
        path = f"system[{i}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise InvalidRequest(f"'{path}' must be a text block.", param=path)
        out.append(TextPart(expect(block.get("text"), str, f"{path}.text", required=True), _cache(block, path)))
    return out


def _cache(block: Dict[str, Any], path: str) -> Optional[Mapping[str, Any]]:
    return expect(block.get("cache_control"), dict, f"{path}.cache_control")


def _decode_message(raw: Any, path: str, system: List[TextPart], out: List[Message], opaque: List[str],
                    cited: List[str]) -> None:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{path}' must be an object.", param=path)
    role = expect(raw.get("role"), str, f"{path}.role", required=True)
    content = raw.get("content")
    if isinstance(content, str):
        blocks: List[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        raise InvalidRequest(f"Invalid type for '{path}.content': expected a string or an array of content blocks.",
                             param=f"{path}.content")
    if role == "system":  # SDK 2.12 types a system-role message; hoist it (anthropic-messages.md §3)
        system.extend(p for p in _decode_system(content if isinstance(content, list) else [blocks[0]]) if p.text)
        return
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"Invalid value for '{path}.role': {role!r} (expected 'user' or 'assistant').",
                             param=f"{path}.role")
    results: List[ContentPart] = []
    parts: List[ContentPart] = []
    for k, block in enumerate(blocks):
        bpath = f"{path}.content[{k}]"
        if not isinstance(block, dict):
            raise InvalidRequest(f"'{bpath}' must be an object.", param=bpath)
        kind = block.get("type")
        if role == "user" and kind == "tool_result":
            results.append(_decode_tool_result(block, bpath, opaque))
        elif kind == "text":
            parts.append(_decode_text(block, bpath))
        elif kind == "image" and role == "user":
            parts.append(_decode_image(block, bpath))
        elif kind == "document" and role == "user":
            parts.append(_decode_document(block, bpath, opaque))
            cite = block.get("citations")
            if isinstance(cite, dict) and cite.get("enabled") is True:
                cited.append(f"{bpath}.citations")
        elif kind == "tool_use" and role == "assistant" and not own_tool_use(block):
            parts.append(_decode_tool_use(block, bpath))
        elif kind == "thinking" and role == "assistant":
            text = expect(block.get("thinking"), str, f"{bpath}.thinking", required=True)
            signature = expect(block.get("signature"), str, f"{bpath}.signature")
            # Another vendor's reasoning the gateway carried in the signature goes back as that vendor's.
            parts.append(restore(signature) or ReasoningPart(text, signature=signature, provider=PROTOCOL))
        elif kind == "redacted_thinking" and role == "assistant":
            parts.append(ReasoningPart(redacted=expect(block.get("data"), str, f"{bpath}.data", required=True),
                                       provider=PROTOCOL))
        elif isinstance(kind, str) and ((opaque_in_assistant(kind) or kind == "tool_use") if role == "assistant"
                                        else kind in USER_OPAQUE):
            # Server-tool blocks (server_tool_use, web_search_tool_result, …, an own_tool_use call), a user's
            # search_result: sent back verbatim to an Anthropic upstream, a 400 for any other (wire_only.py).
            parts.append(OpaquePart(PROTOCOL, block, bpath))
            opaque.append(bpath)
        else:
            raise InvalidRequest(f"Unsupported content block type {kind!r} in a {role} message at '{bpath}'.",
                                 param=f"{bpath}.type")
    if not blocks:
        raise InvalidRequest(f"'{path}.content' must not be empty.", param=f"{path}.content")
    # Canonical form: tool results are a TOOL message placed before the rest of the user turn.
    if results:
        out.append(Message(Role.TOOL, tuple(results)))
    if parts or not results:
        out.append(Message(Role.USER if role == "user" else Role.ASSISTANT, tuple(parts)))


def _decode_text(block: Dict[str, Any], path: str) -> TextPart:
    """A text block; its `citations` (an answer's, sent back) ride as annotations for an Anthropic upstream.
    In a user message Anthropic refuses them from version 2026-10-21 on: the upstream of the client's
    version judges, rather than the gateway dropping them unseen."""
    text = expect(block.get("text"), str, f"{path}.text", required=True)
    for k, note in enumerate(expect(block.get("citations"), list, f"{path}.citations") or ()):
        expect(note, dict, f"{path}.citations[{k}]", required=True)  # named, rather than the text sent on without it
    notes = citations(block)
    return TextPart(text, _cache(block, path), annotations=notes, annotations_protocol=PROTOCOL if notes else None)


def _decode_image(block: Dict[str, Any], path: str) -> ContentPart:
    source = expect(block.get("source"), dict, f"{path}.source", required=True)
    kind = source.get("type")
    cache = _cache(block, path)
    if kind == "file":  # a Files API image: FilePart with an image/* type (blocks.file_block sends it back)
        return FilePart(file_id=expect(source.get("file_id"), str, f"{path}.source.file_id", required=True),
                        media_type="image/*", cache_control=cache)
    if kind == "base64":
        return ImagePart(data=expect(source.get("data"), str, f"{path}.source.data", required=True),
                         media_type=expect(source.get("media_type"), str, f"{path}.source.media_type", required=True),
                         cache_control=cache)
    if kind == "url":
        return ImagePart(url=expect(source.get("url"), str, f"{path}.source.url", required=True), cache_control=cache)
    raise InvalidRequest(f"Unsupported image source type {kind!r} at '{path}.source'.", param=f"{path}.source.type")


_DOCUMENT_FIELDS = frozenset({"type", "source", "title", "cache_control"})


def _decode_document(block: Dict[str, Any], path: str, opaque: List[str]) -> ContentPart:
    source = expect(block.get("source"), dict, f"{path}.source", required=True)
    kind = source.get("type")
    if kind == "content" and not _content_text(source, path)[1]:
        # Images among a custom-content document's chunks have no document form elsewhere: kept
        # verbatim for an Anthropic upstream, a 400 naming it for another (protocols/wire_only.py).
        opaque.append(path)
        return OpaquePart(PROTOCOL, block, path)
    cache = _cache(block, path)
    title = block.get("title") if isinstance(block.get("title"), str) else None
    # `citations: {enabled: true}`, `context`: what only Anthropic does with a document (cite it), kept for it.
    own = {k: v for k, v in block.items() if k not in _DOCUMENT_FIELDS} or None
    fields = dict(cache_control=cache, filename=title, part_fields=own, part_fields_protocol=PROTOCOL if own else None)
    if kind == "base64":
        return FilePart(data=expect(source.get("data"), str, f"{path}.source.data", required=True),
                        media_type=str(source.get("media_type") or "application/pdf"), **fields)
    if kind == "text":
        text = expect(source.get("data"), str, f"{path}.source.data", required=True)
        return FilePart(data=base64.b64encode(text.encode("utf-8")).decode("ascii"), media_type="text/plain",
                        **fields)
    if kind == "url":
        return FilePart(url=expect(source.get("url"), str, f"{path}.source.url", required=True), **fields)
    if kind == "file":
        return FilePart(file_id=expect(source.get("file_id"), str, f"{path}.source.file_id", required=True),
                        **fields)
    if kind == "content":
        # A custom-content document of text chunks: plain text for another wire; an Anthropic upstream gets
        # the source itself (FilePart.part_fields), since its chunks are what citations point at.
        text = _content_text(source, path)[0]
        fields.update(part_fields={**(own or {}), "source": source}, part_fields_protocol=PROTOCOL)
        return FilePart(data=base64.b64encode(text.encode("utf-8")).decode("ascii"), media_type="text/plain",
                        **fields)
    raise InvalidRequest(f"Unsupported document source type {kind!r} at '{path}.source'.", param=f"{path}.source.type")


def _content_text(source: Dict[str, Any], path: str) -> Tuple[str, bool]:
    """A `content` document source's text, and whether that is all it holds (no image chunks)."""
    raw = source.get("content")
    if isinstance(raw, str):
        return raw, True
    chunks = expect(raw, list, f"{path}.source.content", required=True)
    texts: List[str] = []
    for k, chunk in enumerate(chunks):
        cpath = f"{path}.source.content[{k}]"
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind == "text":
            texts.append(expect(chunk.get("text"), str, f"{cpath}.text", required=True))
        elif kind != "image":
            raise InvalidRequest(f"'{cpath}' must be a text or image block.", param=cpath)
    return "\n\n".join(texts), len(texts) == len(chunks)


def _decode_tool_use(block: Dict[str, Any], path: str) -> ToolCallPart:
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise InvalidRequest(f"'{path}.input' must be an object.", param=f"{path}.input")
    return ToolCallPart(
        id=expect(block.get("id"), str, f"{path}.id", required=True),
        name=expect(block.get("name"), str, f"{path}.name", required=True),
        arguments=json.dumps(tool_input, separators=(",", ":"), ensure_ascii=False),
        cache_control=_cache(block, path),
    )


def _decode_tool_result(block: Dict[str, Any], path: str, opaque: List[str]) -> ToolResultPart:
    call_id = expect(block.get("tool_use_id"), str, f"{path}.tool_use_id", required=True)
    content = block.get("content")
    parts: List[ContentPart] = []
    if isinstance(content, str):
        parts.append(TextPart(content))
    elif isinstance(content, list):
        for k, item in enumerate(content):
            ipath = f"{path}.content[{k}]"
            if not isinstance(item, dict):
                raise InvalidRequest(f"'{ipath}' must be an object.", param=ipath)
            if item.get("type") == "text":
                parts.append(TextPart(expect(item.get("text"), str, f"{ipath}.text", required=True), _cache(item, ipath)))
            elif item.get("type") == "image":
                parts.append(_decode_image(item, ipath))
            elif item.get("type") == "document":
                parts.append(_decode_document(item, ipath, opaque))
            elif item.get("type") == "search_result":
                parts.append(OpaquePart(PROTOCOL, item, ipath))
                opaque.append(ipath)
            else:
                raise InvalidRequest(f"Unsupported tool_result content type {item.get('type')!r} at '{ipath}'.",
                                     param=f"{ipath}.type")
    elif content is not None:
        raise InvalidRequest(f"Invalid type for '{path}.content': expected a string or an array.",
                             param=f"{path}.content")
    return ToolResultPart(call_id, tuple(parts), is_error=bool(expect(block.get("is_error"), bool, f"{path}.is_error")),
                          cache_control=_cache(block, path))


_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "strict", "cache_control"})


def _decode_tools(raw: Any) -> Tuple[Tuple[Tool, ...], List[List[Any]], Dict[str, Dict[str, Any]]]:
    """Client tools, server tools with their positions, and per-tool extra fields.

    Positions and extra fields (`type`, `input_examples`, ...) are kept so an
    Anthropic upstream gets the same tools list: tools are part of the cached prefix.
    """
    tools: List[Tool] = []
    server: List[List[Any]] = []
    fields: Dict[str, Dict[str, Any]] = {}
    seen: Set[str] = set()
    for i, t in enumerate(expect(raw, list, "tools") or []):
        path = f"tools[{i}]"
        if not isinstance(t, dict):
            raise InvalidRequest(f"'{path}' must be an object.", param=path)
        if t.get("type") not in (None, "custom"):
            server.append([i, t])  # a versioned server tool: only an Anthropic upstream understands it
            continue
        extra = {k: v for k, v in t.items() if k not in _TOOL_FIELDS}
        if extra and isinstance(t.get("name"), str):
            fields[t["name"]] = extra
        schema = expect(t.get("input_schema"), dict, f"{path}.input_schema", required=True)
        name = expect(t.get("name"), str, f"{path}.name", required=True)
        if not name or name in seen:
            # As Anthropic answers it; another wire would be sent two functions of one name (or none).
            raise InvalidRequest(f"'{path}.name' must be a non-empty name no other tool has (got {name!r}).",
                                 param=f"{path}.name")
        seen.add(name)
        tools.append(Tool(
            name=name,
            description=expect(t.get("description"), str, f"{path}.description"),
            parameters=schema,
            strict=expect(t.get("strict"), bool, f"{path}.strict"),
            cache_control=_cache(t, path),
        ))
    return tuple(tools), server, fields


def _decode_tool_choice(raw: Any) -> Optional[ToolChoice]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest("Invalid type for 'tool_choice': expected an object.", param="tool_choice")
    kind = raw.get("type")
    disable = expect(raw.get("disable_parallel_tool_use"), bool, "tool_choice.disable_parallel_tool_use")
    parallel = None if disable is None else not disable
    if kind in ("auto", "none"):
        return ToolChoice(kind, parallel=parallel)
    if kind == "any":
        return ToolChoice("required", parallel=parallel)
    if kind == "tool":
        return ToolChoice("tool", expect(raw.get("name"), str, "tool_choice.name", required=True), parallel=parallel)
    raise InvalidRequest(f"Invalid value for 'tool_choice.type': {kind!r}.", param="tool_choice.type")


def _decode_format(raw: Any) -> Optional[ResponseFormat]:
    if isinstance(raw, dict) and raw.get("type") == "json_schema" and isinstance(raw.get("schema"), dict):
        return ResponseFormat("json_schema", schema=raw["schema"])
    return None


# --- provider side ---------------------------------------------------------


def encode_request(prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
    same_wire = prompt.extras_protocol == PROTOCOL
    refusal = limit_refusal(prompt, PROTOCOL)  # another wire's 0 would pre-warm the cache, with no answer
    if refusal is not None:
        raise refusal
    p = prompt.params
    default_max = int(target.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))  # type: ignore[call-overload]
    max_tokens = p.max_tokens if p.max_tokens is not None else default_max
    body: Dict[str, Any] = {"model": target.model, "max_tokens": max_tokens}
    if prompt.system:
        blocks = [text_block(t) for t in prompt.system if t.text]
        plain = all(t.cache_control is None for t in prompt.system) and len(blocks) == 1
        if plain and not (same_wire and prompt.extras.get(SYSTEM_BLOCKS_KEY)):
            body["system"] = blocks[0]["text"]
        elif blocks:
            body["system"] = blocks
    body["messages"] = encode_messages(prompt.messages, held=same_wire and continues_thread(prompt))
    if not body["messages"] and not (same_wire and continues_thread(prompt)):
        raise empty_conversation(prompt, "Anthropic")  # "messages: at least one message is required"
    if p.stop:
        body["stop_sequences"] = list(p.stop)
    if p.user:
        body["metadata"] = {"user_id": p.user}

    thinking = _thinking(prompt, body, same_wire)
    if same_wire:
        # The client chose these for this wire and version: forward them untouched.
        for key, value in (("temperature", p.temperature), ("top_p", p.top_p), ("top_k", p.top_k)):
            if value is not None:
                body[key] = value
    elif thinking is None:
        if p.temperature is not None:
            body["temperature"] = min(1.0, max(0.0, p.temperature))  # Anthropic's range is 0..1
        if p.top_p is not None:
            body["top_p"] = p.top_p
        if p.top_k is not None:
            body["top_k"] = p.top_k
    else:
        # With thinking on, Anthropic rejects temperature/top_k and top_p below 0.95.
        if p.top_p is not None and p.top_p >= 0.95:
            body["top_p"] = p.top_p
        body["thinking"] = thinking

    tools = [_encode_tool(t) for t in prompt.tools]
    if same_wire:
        fields = prompt.extras.get(TOOL_FIELDS_KEY) or {}
        tools = [{**tool, **fields.get(tool["name"], {})} for tool in tools]
        for position, server_tool in prompt.extras.get(SERVER_TOOLS_KEY) or []:
            tools.insert(min(position, len(tools)), server_tool)
    if tools:
        body["tools"] = tools
        tc = prompt.tool_choice
        if tc is not None:
            choice: Dict[str, Any] = {"type": {"required": "any"}.get(tc.mode, tc.mode)}
            if tc.mode == "tool":
                choice["name"] = tc.name
            if tc.parallel is not None and tc.mode != "none":
                choice["disable_parallel_tool_use"] = not tc.parallel
            body["tool_choice"] = choice
    rf = prompt.response_format
    if rf is not None and rf.type in ("json_schema", "json_object") and not same_wire:
        # json_object has no schema: a permissive object schema is the closest Anthropic form.
        schema = described_schema(rf) if rf.type == "json_schema" and rf.schema else {"type": "object"}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if same_wire:
        body.update({k: v for k, v in prompt.extras.items() if not k.startswith("_")})
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def _thinking(prompt: Prompt, body: Dict[str, Any], same_wire: bool) -> Optional[Dict[str, Any]]:
    """The thinking config to send (same wire: the client's own, verbatim, via extras)."""
    if same_wire:
        raw = prompt.extras.get("thinking")
        return raw if isinstance(raw, dict) and raw.get("type") not in (None, "disabled") else None
    p = prompt.params
    budget = p.reasoning_budget
    if budget is None and p.reasoning_effort:
        budget = EFFORT_BUDGET.get(p.reasoning_effort)
    if not budget:
        return None
    tc = prompt.tool_choice
    if tc is not None and tc.mode in ("required", "tool") and prompt.tools:
        # Anthropic rejects thinking with a forcing tool_choice; the client's forced
        # tool call is the harder requirement, so thinking is dropped.
        return None
    if continues_unsigned_tool_turn(prompt):
        # Anthropic requires the continued tool turn's signed thinking block, which a
        # client of another wire cannot send back (translation.md §11): without it
        # the request is a 400, so thinking is off for this step of the tool loop.
        return None
    budget = max(1024, budget)
    if p.max_tokens is None:
        body["max_tokens"] = body["max_tokens"] + budget  # the default bounds the visible output
    elif budget >= p.max_tokens:
        budget = p.max_tokens - 1  # the client's bound includes reasoning, as in OpenAI
        if budget < 1024:
            return None
    return {"type": "enabled", "budget_tokens": budget}


def continues_thread(prompt: Prompt) -> bool:
    """Does the client continue a message thread (`thread: {"type": "continue", ...}`)? Its messages are then
    only the new turn's: Anthropic holds the rest, the calls its first tool results answer among them."""
    thread = prompt.extras.get("thread")
    return isinstance(thread, dict) and thread.get("type") == "continue"


def continues_unsigned_tool_turn(prompt: Prompt) -> bool:
    """Does the prompt continue an assistant tool-use turn that has no Anthropic-signed thinking?"""
    for i in range(len(prompt.messages) - 1, -1, -1):
        m = prompt.messages[i]
        if m.role is not Role.ASSISTANT:
            continue
        if not any(isinstance(p, ToolCallPart) for p in m.parts):
            return False
        if not any(m2.role is Role.TOOL for m2 in prompt.messages[i + 1:]):
            return False
        return not any(isinstance(p, ReasoningPart) and p.provider == PROTOCOL and (p.signature or p.redacted)
                       for p in m.parts)
    return False


def _encode_tool(t: Tool) -> Dict[str, Any]:
    schema = dict(t.parameters) if t.parameters else {}
    schema.setdefault("type", "object")  # Anthropic requires input_schema.type == "object"
    out: Dict[str, Any] = {"name": t.name}
    if t.description is not None:
        out["description"] = t.description
    out["input_schema"] = schema
    if t.strict is not None:
        out["strict"] = t.strict
    if t.cache_control is not None:
        out["cache_control"] = dict(t.cache_control)
    return out


def request_headers(prompt: Prompt, target: RoutingTarget) -> Dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "anthropic-version": str(target.options.get("anthropic_version", DEFAULT_VERSION))}
    if target.api_key:
        headers["x-api-key"] = target.api_key
    if prompt.extras_protocol == PROTOCOL:
        headers.update(prompt.extras.get(HEADERS_KEY) or {})
    headers.update(target.headers)
    return headers
