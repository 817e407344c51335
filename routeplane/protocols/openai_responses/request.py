"""OpenAI Responses requests: client body → Prompt, and Prompt → provider body."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Set, Tuple
from urllib.parse import urlsplit

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
    ToolResultPart,
)
from ..base import OPAQUE_KEY, client_extras, effort_for_budget, effort_for_target, expect, parse_data_url
from ..carried import restore
from .layout import SYSTEM_LAYOUT_KEY, Entry, laid_out, layout_hint
from .parts import PART_FIELDS, cache_fields, encode_user_part, user_item
from .reasoning import (
    JOIN,
    pack_reasoning_signature,
    reads_reasoning,
    split_summary,
    summary_texts,
    unpack_reasoning_signature,
)
from .tools import (
    ALLOWED_KEY,
    HOSTED_CHOICE_KEY,
    HOSTED_TOOLS_KEY,
    decode_tool_choice,
    decode_tools,
    encode_tools,
    narrow_to_allowed,
)

PROTOCOL = "openai_responses"
LOGPROBS_INCLUDE = "message.output_text.logprobs"
VERBOSITY_KEY = "_text_verbosity"  # the client's text.verbosity: Chat's `verbosity` too
TOOL_FIELDS_KEY = "_responses_tool_fields"  # function tool name → fields the canonical Tool lacks, same wire only
_TOOL_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})

# Request fields the canonical model carries; everything else is a same-wire extra.
_KNOWN = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
        "temperature", "top_p", "text", "reasoning", "stream", "user", "previous_response_id", "conversation",
    }
)
# Input items of OpenAI's hosted and built-in tools (openai/types/responses/response_input_item_param.py), and
# its compaction items: kept verbatim (OpaquePart) for a Responses upstream, a 400 for any other wire.
OPAQUE_ITEMS = frozenset({
    "web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call", "computer_call",
    "computer_call_output", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "tool_search_call", "tool_search_output", "additional_tools",
    "configuration_update", "compaction", "compaction_trigger", "program", "program_output"})
# Those the client itself sends (what its tool did, its approval): a user turn's, the others the model's.
_CLIENT_ITEMS = frozenset({"computer_call_output", "local_shell_call_output", "shell_call_output",
                           "apply_patch_call_output", "mcp_approval_response", "compaction_trigger"})
MESSAGE_FIELDS = ("phase",)  # a message item's fields kept for this wire (TextPart.part_fields)
_INPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})  # the parts that take PART_FIELDS
# A Chat client's fields that mean the same on OpenAI's Responses wire and bill there: the service tier (flex
# costs half, priority more) and the prompt-cache settings. Sent to OpenAI itself only (_openai_itself).
_SHARED_WITH_CHAT = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options")
STATELESS = (
    "This gateway is stateless: it does not store responses, so '{param}' cannot be resolved. "
    "Send the full conversation in 'input' instead."
)


def decode_request(body: Any) -> Prompt:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for param in ("previous_response_id", "conversation"):
        if body.get(param) is not None:
            raise InvalidRequest(STATELESS.format(param=param), param=param, code="unsupported_parameter")
    if expect(body.get("background"), bool, "background"):
        # A background response is polled or cancelled by id later; nothing here keeps it.
        raise InvalidRequest("This gateway is stateless: it does not store responses, so 'background' mode "
                             "(retrieve or cancel later by id) is not supported. Omit it, or stream instead.",
                             param="background", code="unsupported_parameter")
    include = expect(body.get("include"), list, "include") or []
    if not all(isinstance(v, str) for v in include):
        raise InvalidRequest("'include' must be an array of strings.", param="include", code="invalid_type")
    model = expect(body.get("model"), str, "model", required=True)
    if not model:
        raise InvalidRequest("'model' must not be empty.", param="model")
    raw_input = body.get("input")
    if raw_input is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    metadata = expect(body.get("metadata"), dict, "metadata")  # echoed on the response object
    if metadata and not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidRequest("'metadata' values must be strings.", param="metadata", code="invalid_type")

    system: List[TextPart] = []
    instructions = expect(body.get("instructions"), str, "instructions")
    if instructions:
        system.append(TextPart(instructions))
    lead = len(system)
    messages: List[Message] = []
    opaque: List[str] = []  # paths of the hosted-tool items kept
    entries: List[Entry] = []  # where each system or developer item stood (layout.py)
    if isinstance(raw_input, str):
        messages.append(Message(Role.USER, (TextPart(raw_input),)))
    elif isinstance(raw_input, list):
        for i, item in enumerate(raw_input):
            held, at = len(system), (len(messages), len(messages[-1].parts) if messages else 0)
            _decode_item(item, f"input[{i}]", system, messages, opaque)
            if len(system) > held:
                entries.append((*at, item["role"], len(system) - held, isinstance(item.get("content"), list)))
    else:
        raise InvalidRequest("Invalid type for 'input': expected a string or an array of items.", param="input")
    if not messages:
        raise InvalidRequest("'input' must contain at least one user, assistant or tool item.", param="input")

    tools, allowed, hosted = decode_tools(body)
    tool_fields = {t["name"]: {k: v for k, v in t.items() if k not in _TOOL_FIELDS}
                   for t in body.get("tools") or [] if t.get("type") == "function" and set(t) - _TOOL_FIELDS}
    tool_choice, hosted_choice = decode_tool_choice(body, allowed)
    if tool_choice is not None and tool_choice.name is not None and tool_choice.name not in {t.name for t in tools}:
        raise InvalidRequest(f"Tool choice {tool_choice.name!r} is not among the function or custom tools in "
                             "'tools'.", param="tool_choice")
    tools, allowed_extra = narrow_to_allowed(body, tools, allowed, tool_choice)
    reasoning = expect(body.get("reasoning"), dict, "reasoning") or {}
    user = expect(body.get("user"), str, "user")
    safety_id = expect(body.get("safety_identifier"), str, "safety_identifier")
    params = GenerationParams(
        max_tokens=expect(body.get("max_output_tokens"), int, "max_output_tokens"),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        reasoning_effort=expect(reasoning.get("effort"), str, "reasoning.effort"),
        # safety_identifier replaced `user`: either is the end-user id (Anthropic metadata.user_id); it stays an extra.
        user=user if user is not None else safety_id,
    )
    extras = client_extras(body, _KNOWN)
    layout = layout_hint(messages, lead, system, entries)
    if layout is not None:
        extras[SYSTEM_LAYOUT_KEY] = layout
    if tool_fields:
        extras[TOOL_FIELDS_KEY] = tool_fields  # output_schema, allowed_callers, ...: a Responses upstream's
    if hosted:
        extras[HOSTED_TOOLS_KEY] = hosted  # OpenAI runs them: a Responses upstream only (tools.py)
    if hosted_choice is not None:
        extras[HOSTED_CHOICE_KEY] = hosted_choice
    if allowed_extra is not None:
        extras[ALLOWED_KEY] = allowed_extra
    if opaque:
        extras[OPAQUE_KEY] = opaque[0]  # only a Responses upstream can continue from it (wire_only.py)
    if user is None and safety_id is not None:
        extras["_user_is_safety_identifier"] = True  # same wire: safety_identifier goes as itself, no `user` invented
    rest = {k: v for k, v in reasoning.items() if k != "effort"}
    if rest:
        extras["reasoning"] = rest  # summary / generate_summary: same-wire only
    text = expect(body.get("text"), dict, "text") or {}
    if "verbosity" in text:
        extras[VERBOSITY_KEY] = text["verbosity"]  # "_": a client cannot set it (client_extras)
    return Prompt(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        tool_choice=tool_choice,
        response_format=_decode_format(text.get("format")),
        params=params,
        stream=bool(expect(body.get("stream"), bool, "stream")),
        # Responses always reports usage in its terminal event.
        include_usage=True,
        extras=extras,
        extras_protocol=PROTOCOL,
    )


def _number(body: Dict[str, Any], key: str) -> Optional[float]:
    value = expect(body.get(key), (int, float), key)
    return None if value is None else float(value)


def _append(out: List[Message], role: Role, part: ContentPart) -> None:
    """Consecutive items of one role collapse into one message (function_call items
    join the preceding assistant message, outputs join one tool message)."""
    if out and out[-1].role is role:
        out[-1] = Message(role, out[-1].parts + (part,))
    else:
        out.append(Message(role, (part,)))


def _decode_item(item: Any, path: str, system: List[TextPart], out: List[Message], opaque: List[str]) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{path}' must be an object.", param=path)
    kind = item.get("type", "message")
    if kind == "message":
        role = expect(item.get("role"), str, f"{path}.role", required=True)
        content = item.get("content")
        if role in ("system", "developer"):
            system.extend(p for p in _parts(content, path, Role.USER) if isinstance(p, TextPart) and p.text)
        elif role == "user":
            parts = _parts(content, path, Role.USER)
            if not parts:
                raise InvalidRequest(f"'{path}.content' must not be empty.", param=f"{path}.content")
            out.append(Message(Role.USER, tuple(parts)))
        elif role == "assistant":
            parts = [p for p in _parts(content, path, Role.ASSISTANT) if not isinstance(p, TextPart) or p.text]
            fields = message_fields(item, path)
            if fields:  # `phase`: OpenAI asks for it back on every assistant message; another wire drops it
                parts = [replace(p, part_fields=fields, part_fields_protocol=PROTOCOL) if isinstance(p, TextPart)
                         else p for p in parts]
            if parts and out and out[-1].role is Role.ASSISTANT and isinstance(out[-1].parts[-1], TextPart):
                out.append(Message(Role.ASSISTANT, tuple(parts)))  # a second message item: a turn of its own
            else:
                for p in parts:
                    _append(out, Role.ASSISTANT, p)
        else:
            raise InvalidRequest(f"Invalid value for '{path}.role': {role!r}.", param=f"{path}.role")
    elif kind == "function_call":
        _append(out, Role.ASSISTANT, ToolCallPart(
            id=expect(item.get("call_id"), str, f"{path}.call_id", required=True),
            name=expect(item.get("name"), str, f"{path}.name", required=True),
            arguments=expect(item.get("arguments"), str, f"{path}.arguments") or "{}",
        ))
    elif kind == "custom_tool_call":
        _append(out, Role.ASSISTANT, ToolCallPart(
            id=expect(item.get("call_id"), str, f"{path}.call_id", required=True),
            name=expect(item.get("name"), str, f"{path}.name", required=True),
            arguments=expect(item.get("input"), str, f"{path}.input", required=True),
            custom=True,
        ))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        call_id = expect(item.get("call_id"), str, f"{path}.call_id", required=True)
        output = item.get("output")
        if isinstance(output, str):
            content: Tuple[ContentPart, ...] = (TextPart(output),)
        elif isinstance(output, list):
            content = tuple(_parts(output, path, Role.USER))
        else:
            raise InvalidRequest(f"Invalid type for '{path}.output': expected a string or an array.",
                                 param=f"{path}.output")
        _append(out, Role.TOOL, ToolResultPart(call_id, content))
    elif kind == "reasoning":
        expect(item.get("summary"), list, f"{path}.summary")
        texts = summary_texts(item)
        item_id = expect(item.get("id"), str, f"{path}.id") or ""
        encrypted = expect(item.get("encrypted_content"), str, f"{path}.encrypted_content")
        # Another vendor's thinking the gateway carried in encrypted_content goes back as that vendor's.
        part = restore(encrypted) or ReasoningPart(JOIN.join(texts), pack_reasoning_signature(item_id, encrypted, texts),
                                                   provider=PROTOCOL)
        _append(out, Role.ASSISTANT, part)
    elif isinstance(kind, str) and kind in OPAQUE_ITEMS:
        opaque.append(path)
        _append(out, Role.USER if kind in _CLIENT_ITEMS else Role.ASSISTANT, OpaquePart(PROTOCOL, item, path))
    elif kind == "item_reference":
        raise InvalidRequest(STATELESS.format(param=f"{path} (item_reference)"), param=path,
                             code="unsupported_parameter")
    else:
        raise InvalidRequest(f"Input items of type {kind!r} ('{path}') are not supported by this gateway; "
                             "only messages, function and custom tool calls, their outputs, reasoning and the "
                             "items of OpenAI's hosted tools are.",
                             param=f"{path}.type", code="unsupported_value")


def message_fields(item: Dict[str, Any], path: str) -> Optional[Dict[str, Any]]:
    """A message item's own fields beyond its content (`phase`: commentary or final_answer), or None."""
    fields = {k: expect(item.get(k), str, f"{path}.{k}") for k in MESSAGE_FIELDS if item.get(k) is not None}
    return fields or None


def own_fields(p: TextPart) -> Optional[Mapping[str, Any]]:
    """The message fields a text came with, if this wire's (text with other fields is another message)."""
    return p.part_fields if p.part_fields_protocol == PROTOCOL else None


def _parts(content: Any, path: str, role: Role) -> List[ContentPart]:
    if content is None:
        return []
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
        if kind == "output_text" and role is Role.ASSISTANT and item.get("annotations"):
            notes = expect(item.get("annotations"), list, f"{p}.annotations")
            if not all(isinstance(a, dict) for a in notes):
                raise InvalidRequest(f"'{p}.annotations' must be an array of objects.", param=f"{p}.annotations")
            # The previous answer's citations: a Responses upstream gets them back, another wire the text only.
            parts.append(TextPart(expect(item.get("text"), str, f"{p}.text", required=True),
                                  annotations=tuple(notes), annotations_protocol=PROTOCOL))
        elif kind in ("input_text", "output_text", "text"):
            parts.append(TextPart(expect(item.get("text"), str, f"{p}.text", required=True),
                                  **_part_fields(item, p, role)))
        elif kind == "refusal":
            parts.append(TextPart(expect(item.get("refusal"), str, f"{p}.refusal", required=True)))
        elif kind == "input_image" and role is Role.USER:
            url = expect(item.get("image_url"), str, f"{p}.image_url")
            detail = item.get("detail")
            fields = _part_fields(item, p, role)
            if url:
                parsed = parse_data_url(url)
                parts.append(ImagePart(data=parsed[1], media_type=parsed[0], detail=detail, **fields) if parsed
                             else ImagePart(url=url, detail=detail, **fields))
            elif isinstance(item.get("file_id"), str):
                parts.append(FilePart(file_id=item["file_id"], media_type="image/*", **fields))
            else:
                raise InvalidRequest(f"'{p}' needs an image_url or a file_id.", param=p)
        elif kind == "input_file" and role is Role.USER:
            file_id, url, data = (expect(item.get(k), str, f"{p}.{k}") for k in ("file_id", "file_url", "file_data"))
            if not (file_id or url or data):
                raise InvalidRequest(f"'{p}' needs a file_id, a file_url or file_data.", param=p)
            media_type = None
            if data and data.startswith("data:"):
                try:
                    media_type, data = parse_data_url(data)  # type: ignore[misc]
                except InvalidRequest:
                    raise InvalidRequest(f"'{p}.file_data' must be a base64 data URL "
                                         "(data:<media type>;base64,<data>).", param=f"{p}.file_data") from None
            parts.append(FilePart(file_id=file_id, url=url, data=data, media_type=media_type,
                                  filename=expect(item.get("filename"), str, f"{p}.filename"),
                                  **_part_fields(item, p, role)))
        else:
            raise InvalidRequest(f"Unsupported content part type {kind!r} at '{p}'.", param=f"{p}.type")
    return parts


def _part_fields(item: Dict[str, Any], path: str, role: Role) -> Dict[str, Any]:
    """An input part's PART_FIELDS, as the canonical part's `part_fields` for a Responses upstream."""
    if role is not Role.USER or item.get("type") not in _INPUT_PARTS:
        return {}
    own = {k: expect(item[k], dict, f"{path}.{k}") for k in PART_FIELDS if item.get(k) is not None}
    return {"part_fields": own, "part_fields_protocol": PROTOCOL} if own else {}


def _decode_format(raw: Any) -> Optional[ResponseFormat]:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest("Invalid value for 'text.format'.", param="text.format")
    if raw["type"] != "json_schema":
        return ResponseFormat(raw["type"])
    schema = expect(raw.get("schema"), dict, "text.format.schema", required=True)
    return ResponseFormat("json_schema", expect(raw.get("name"), str, "text.format.name"), schema,
                          expect(raw.get("strict"), bool, "text.format.strict"),
                          expect(raw.get("description"), str, "text.format.description"))


# --- provider side ---------------------------------------------------------


def encode_request(prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
    # A custom tool call's result is a custom_tool_call_output item: found by its call's id.
    custom_calls = {p.id for m in prompt.messages if m.role is Role.ASSISTANT for p in m.parts
                    if isinstance(p, ToolCallPart) and p.custom}
    same_wire = prompt.extras_protocol == PROTOCOL
    # A Chat client's prompt-cache breakpoints mean the same to OpenAI's Responses wire (_SHARED_WITH_CHAT).
    cache_wires = frozenset({PROTOCOL, "openai_chat"} if _openai_itself(target) else {PROTOCOL})

    def encode(m: Message) -> List[Dict[str, Any]]:
        return _encode_message(m, custom_calls, cache_wires)

    # In place for OpenAI itself; an OpenAI-compatible server's chat template often refuses a developer or
    # late system message (as on the Chat wire), so there they join `instructions`.
    hint = prompt.extras.get(SYSTEM_LAYOUT_KEY) if same_wire and _openai_itself(target) else None
    layout = None if hint is None else laid_out(prompt, hint, encode, lambda p: encode_user_part(p, cache_wires))
    if layout is None:
        instructions = prompt.system_text() if prompt.system else None
        items = [item for m in prompt.messages for item in encode(m)]
    else:
        instructions, items = layout
    body: Dict[str, Any] = {"model": target.model, "input": items}
    extras = dict(prompt.extras) if same_wire else {}
    if prompt.extras_protocol == "openai_chat" and _openai_itself(target):
        body.update({k: prompt.extras[k] for k in _SHARED_WITH_CHAT if prompt.extras.get(k) is not None})
    verbosity = extras.pop(VERBOSITY_KEY, None)
    if prompt.extras_protocol == "openai_chat":
        verbosity = prompt.extras.get("verbosity")  # one setting on both OpenAI wires
    reasoning_extra = extras.pop("reasoning", None)
    user_is_safety_id = extras.pop("_user_is_safety_identifier", False)
    tool_fields = extras.pop(TOOL_FIELDS_KEY, None) or {}
    extras.pop(OPAQUE_KEY, None)  # the gateway's own note, not a field
    hosted, hosted_choice = extras.pop(HOSTED_TOOLS_KEY, None) or [], extras.pop(HOSTED_CHOICE_KEY, None)
    allowed = extras.pop(ALLOWED_KEY, None)
    body.update({k: v for k, v in extras.items() if not k.startswith("_")})  # "_": the gateway's own notes
    # Stateless by default: nothing kept upstream unless a same-wire client asked for it.
    body.setdefault("store", False)
    if instructions is not None:
        body["instructions"] = instructions
    p = prompt.params
    for key, value in (("max_output_tokens", p.max_tokens), ("temperature", p.temperature), ("top_p", p.top_p),
                       ("user", None if user_is_safety_id else p.user)):
        if value is not None:
            body[key] = value
    reasoning: Dict[str, Any] = dict(reasoning_extra or {})
    if p.reasoning_effort is not None:
        reasoning["effort"] = effort_for_target(p.reasoning_effort, target)
    elif p.reasoning_budget is not None:
        reasoning["effort"] = effort_for_target(effort_for_budget(p.reasoning_budget), target)
    summary = target.options.get("reasoning_summary", "auto")  # false: an org OpenAI has not verified
    if summary and reasoning.get("effort") not in (None, "none") and "summary" not in reasoning \
            and reads_reasoning(prompt):
        reasoning["summary"] = summary  # else the client's thinking blocks (or thoughts) come back empty
    if reasoning:
        body["reasoning"] = reasoning
    has_reasoning = any(isinstance(x, ReasoningPart) and x.provider == PROTOCOL for m in prompt.messages for x in m.parts)
    if body.get("store") is False and (reasoning or has_reasoning):
        # Without a store, reasoning only round-trips as encrypted content.
        include = list(body.get("include") or [])
        if "reasoning.encrypted_content" not in include:
            include.append("reasoning.encrypted_content")
        body["include"] = include
    if prompt.tools:
        body["tools"] = [{**_encode_tool(t, same_wire), **(tool_fields.get(t.name, {}) if not t.custom else {})}
                         for t in prompt.tools]
    has_tools = encode_tools(prompt, body, hosted, hosted_choice, allowed)
    tc = prompt.tool_choice
    if tc is not None:
        if tc.mode == "tool" and "tool_choice" not in body:  # else the client's own allowed_tools choice
            body["tool_choice"] = named_tool_choice(prompt, tc.name)
        elif "tool_choice" not in body and (has_tools or tc.mode == "none"):
            body["tool_choice"] = tc.mode
        if tc.parallel is not None and has_tools:
            body["parallel_tool_calls"] = tc.parallel
    text: Dict[str, Any] = {}
    if prompt.response_format is not None:
        text["format"] = encode_format(prompt.response_format)
    if verbosity is not None:
        text["verbosity"] = verbosity
    if text:
        body["text"] = text
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def _openai_itself(target: RoutingTarget) -> bool:
    """Is the Responses upstream OpenAI's own API? Only there are a Chat client's _SHARED_WITH_CHAT and
    prompt-cache breakpoints sent on: an OpenAI-compatible server may refuse fields it does not know."""
    return urlsplit(target.base_url or "https://api.openai.com/v1").hostname == "api.openai.com"


def encode_format(rf: ResponseFormat) -> Dict[str, Any]:
    """`text.format` (name and schema flat inside it, unlike Chat's response_format)."""
    if rf.type != "json_schema":
        return {"type": rf.type}
    fmt: Dict[str, Any] = {"type": "json_schema", "name": rf.name or "response", "schema": dict(rf.schema or {})}
    if rf.description is not None:
        fmt["description"] = rf.description
    if rf.strict is not None:
        fmt["strict"] = rf.strict
    return fmt


def named_tool_choice(prompt: Prompt, name: Optional[str]) -> Dict[str, Any]:
    """The choice forcing tool `name`: a custom tool is named as one."""
    kind = "custom" if any(t.custom and t.name == name for t in prompt.tools) else "function"
    return {"type": kind, "name": name}


def custom_tool(t: Tool) -> Dict[str, Any]:
    out: Dict[str, Any] = {"type": "custom", "name": t.name}
    if t.description is not None:
        out["description"] = t.description
    if t.format is not None:
        out["format"] = dict(t.format)
    return out


def _encode_tool(t: Tool, same_wire: bool) -> Dict[str, Any]:
    if t.custom:
        return custom_tool(t)
    out: Dict[str, Any] = {"type": "function", "name": t.name, "parameters": dict(t.parameters)}
    if t.description is not None:
        out["description"] = t.description
    # strict defaults to true on Responses and then demands a strict-conforming
    # schema, which a tool from another wire rarely is: say false unless the
    # Responses client itself chose.
    if t.strict is not None or not same_wire:
        out["strict"] = bool(t.strict)
    return out


def _encode_message(m: Message, custom_calls: Set[str], cache_wires: FrozenSet[str]) -> List[Dict[str, Any]]:
    if m.role is Role.TOOL:
        out = []
        for r in m.parts:
            if isinstance(r, ToolResultPart):
                text = r.text()
                if r.is_error and not text.startswith("Error"):
                    text = f"Error: {text}"  # Responses has no error flag on outputs
                output: Any = text
                if any(cache_fields(p, cache_wires) for p in r.content):
                    # A part that marks a cache breakpoint: each part as its own, the breakpoint on it.
                    output = [c for c in (encode_user_part(p, cache_wires) for p in r.content) if c]
                    if text != r.text():  # the error note, on the first text
                        if output and output[0]["type"] == "input_text":
                            output[0] = {**output[0], "text": f"Error: {output[0]['text']}"}
                        else:
                            output.insert(0, {"type": "input_text", "text": "Error:"})
                elif any(not isinstance(p, TextPart) for p in r.content):
                    # Images and files: the array form (input_text / input_image / input_file) keeps them.
                    output = ([{"type": "input_text", "text": text}] if text else []) + [
                        c for c in (encode_user_part(p, cache_wires) for p in r.content
                                    if not isinstance(p, TextPart)) if c]
                kind = "custom_tool_call_output" if r.tool_call_id in custom_calls else "function_call_output"
                out.append({"type": kind, "call_id": r.tool_call_id, "output": output})
        return out
    if m.role is Role.ASSISTANT:
        items: List[Dict[str, Any]] = []
        texts: List[TextPart] = []

        def flush() -> None:
            if texts:
                items.append(_assistant_text(texts))
                texts.clear()

        for p in m.parts:
            if isinstance(p, TextPart):
                if texts and own_fields(texts[-1]) != own_fields(p):
                    flush()  # another phase: another message
                texts.append(p)
            elif isinstance(p, OpaquePart):
                flush()
                if p.protocol == PROTOCOL:
                    items.append(dict(p.block))
            elif isinstance(p, ToolCallPart) and p.custom:
                flush()
                items.append({"type": "custom_tool_call", "call_id": p.id, "name": p.name, "input": p.arguments})
            elif isinstance(p, ToolCallPart):
                flush()
                items.append({"type": "function_call", "call_id": p.id, "name": p.name, "arguments": p.arguments})
            elif isinstance(p, ReasoningPart) and p.provider == PROTOCOL:
                item_id, encrypted = unpack_reasoning_signature(p.signature)
                # Only OpenAI's own reasoning (with its id and encrypted content) can go back.
                if item_id and encrypted:
                    flush()
                    summary = [{"type": "summary_text", "text": t} for t in split_summary(p.text, p.signature)]
                    items.append({"type": "reasoning", "id": item_id, "summary": summary,
                                  "encrypted_content": encrypted})
        flush()
        return items
    out_u: List[Dict[str, Any]] = []
    results = [p for p in m.parts if isinstance(p, ToolResultPart)]
    if results:  # defensive: results belong in tool messages
        out_u.extend(_encode_message(Message(Role.TOOL, tuple(results)), custom_calls, cache_wires))
    content: List[Dict[str, Any]] = []
    for p in m.parts:
        if isinstance(p, OpaquePart):  # a hosted tool's item the client sent (an approval): in its place
            out_u.extend(user_item(content))
            content = []
            if p.protocol == PROTOCOL:
                out_u.append(dict(p.block))
        else:
            c = encode_user_part(p, cache_wires)
            if c:
                content.append(c)
    out_u.extend(user_item(content))
    return out_u


def _assistant_text(texts: List[TextPart]) -> Dict[str, Any]:
    """Assistant text as one input message: plain, or as output_text parts when the texts carry this wire's
    annotations (the previous answer's citations go back with it)."""
    fields = dict(own_fields(texts[0]) or {})
    if not any(t.annotations and t.annotations_protocol == PROTOCOL for t in texts):
        return {"role": "assistant", "content": "".join(t.text for t in texts), **fields}
    return {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": t.text,
         "annotations": [dict(a) for a in t.annotations] if t.annotations_protocol == PROTOCOL else []}
        for t in texts], **fields}
