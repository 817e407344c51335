"""Gemini generateContent requests: client body → Prompt, and Prompt → provider body."""

from __future__ import annotations

import json
import mimetypes
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...errors import InvalidRequest
from ...ids import new_hex
from ...language_model.routing import RoutingTarget
from ...language_model.types import (
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    OpaquePart,
    Prompt,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from ..base import OPAQUE_KEY, client_extras, empty_conversation, expect
from ..carried import restore
from ..limits import limit_refusal
from .generation import camel_keys as _camel_keys
from .generation import decode_generation, encode_generation, same_wire_generation
from .tools import decode_tool_config, decode_tools, encode_tools, get

PROTOCOL = "gemini"
# Gemini may omit function-call ids. The gateway then makes one up with this
# prefix, and never sends such an id back to Gemini (translation.md §6: match by
# name and order, send the functionResponse without an id).
SYNTHETIC_ID = "call_gx"
# Google's documented placeholder for a functionCall with no real signature
# (history from another vendor); Gemini 3 rejects unsigned calls otherwise.
SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"

_KNOWN = frozenset({"model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"})
# functionResponse.response keys that wrap the function's output (Google's reference: "any keys of their
# choice ... e.g. "output", "result""; google-genai's automatic function calling sends {"result": …}) or
# its error: another wire gets the bare value as the tool result.
_RESULT_KEYS = ("output", "result", "error")
# The gateway's note (Prompt.extras, never sent) of the key each result came under, by call id, and
# whether its value was JSON rather than a string: a Gemini upstream gets the object the client sent.
RESULT_KEYS_NOTE = "_result_keys"
_PART_FIELDS = frozenset({"videoMetadata", "mediaResolution"})  # kept on an image or file part
# Parts the canonical model has no form for, kept whole for a Gemini upstream (OpaquePart) when a
# client sends them back in its history: what Gemini's server-side tools did, and (in a model turn)
# the media it generated. Either key spelling.
_SERVER_PARTS = ("executableCode", "codeExecutionResult", "toolCall", "toolResponse")
_MODEL_MEDIA = ("inlineData", "fileData")
_KNOWN_GEN = frozenset({
    "maxOutputTokens", "temperature", "topP", "topK", "stopSequences", "candidateCount", "seed", "presencePenalty",
    "frequencyPenalty", "responseMimeType", "responseJsonSchema", "responseSchema", "thinkingConfig",
})


def synthetic_id() -> str:
    return f"{SYNTHETIC_ID}{new_hex()[12:]}"  # the random part (the first 12 digits are the time)


def is_synthetic(call_id: str) -> bool:
    return call_id.startswith(SYNTHETIC_ID)


def decode_request(body: Any, model: Optional[str] = None, stream: bool = False) -> Prompt:
    """`model` and `stream` come from the URL path (`models/{model}:streamGenerateContent`)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    body = _camel_keys(body)
    if not model:
        raw_model = expect(body.get("model"), str, "model", required=True)
        model = raw_model[7:] if raw_model.startswith("models/") else raw_model
    contents = expect(body.get("contents"), list, "contents", required=True)
    if not contents:
        raise InvalidRequest("'contents' must not be empty.", param="contents")
    system: List[TextPart] = []
    raw_system = body.get("systemInstruction")
    if raw_system is not None:
        if isinstance(raw_system, str):
            system.append(TextPart(raw_system))
        else:
            sys_parts = expect(get(expect(raw_system, dict, "systemInstruction"), "parts"), list,
                               "systemInstruction.parts") or []
            for k, p in enumerate(sys_parts):
                if not isinstance(p, dict) or not isinstance(p.get("text"), str):
                    raise InvalidRequest("systemInstruction parts must be text parts.",
                                         param=f"systemInstruction.parts[{k}]")
                if p["text"]:
                    system.append(TextPart(p["text"]))
    extras: Dict[str, Any] = client_extras(body, _KNOWN)
    messages = _decode_contents(contents, extras)
    tools = decode_tools(body.get("tools"), extras)
    tool_choice, allowed = decode_tool_config(body.get("toolConfig"), extras)
    declared = {t.name for t in tools}
    undeclared = [name for name in allowed or () if name not in declared]
    if undeclared:
        # Another wire would be sent a tool_choice for a tool it was never offered: its 400, naming its field.
        raise InvalidRequest(f"'allowedFunctionNames' names {undeclared[0]!r}, which no functionDeclarations "
                             "entry declares.", param="toolConfig.functionCallingConfig.allowedFunctionNames")
    if allowed and (len(allowed) > 1 or tool_choice is None or tool_choice.mode != "tool"):
        tools = tuple(t for t in tools if t.name in allowed)  # the offer narrowed to the names allowed
    gen = _camel_keys(expect(body.get("generationConfig"), dict, "generationConfig") or {})
    params, response_format, thinking = decode_generation(gen)
    gen_extra = {k: v for k, v in gen.items() if k not in _KNOWN_GEN}
    if thinking is not None:
        gen_extra["thinkingConfig"] = thinking
    gen_extra.update(same_wire_generation(gen))
    if gen_extra:
        extras["generationConfig"] = gen_extra  # forwarded to a Gemini upstream only
    return Prompt(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        params=params,
        stream=stream,
        include_usage=True,  # Gemini chunks always carry usageMetadata
        extras=extras,
        extras_protocol=PROTOCOL,
    )


def _decode_contents(contents: List[Any], extras: Dict[str, Any]) -> List[Message]:
    """The messages; the path of the first OpaquePart goes to `extras` (OPAQUE_KEY)."""
    messages: List[Message] = []
    # Calls of the latest model turn, for results that carry no id (matched by name and order).
    pending: List[ToolCallPart] = []
    for i, content in enumerate(contents):
        path = f"contents[{i}]"
        if not isinstance(content, dict):
            raise InvalidRequest(f"'{path}' must be an object.", param=path)
        role = get(content, "role") or "user"
        parts = expect(get(content, "parts"), list, f"{path}.parts", required=True)
        if role == "model":
            decoded = _model_parts(parts, path, i)
            calls = [p for p in decoded if isinstance(p, ToolCallPart)]
            # Consecutive model contents are one turn for pairing results (google-genai's
            # streaming chat records every chunk's content separately).
            pending = pending + calls if messages and messages[-1].role is Role.ASSISTANT else calls
            if decoded:
                messages.append(Message(Role.ASSISTANT, tuple(decoded)))
            _note_opaque(decoded, extras)
        elif role in ("user", "function"):
            results, others = _user_parts(parts, path, pending, extras)
            if results:
                messages.append(Message(Role.TOOL, tuple(results)))
            if others:
                messages.append(Message(Role.USER, tuple(others)))
                _note_opaque(others, extras)
            if not results and not others:
                raise InvalidRequest(f"'{path}.parts' must not be empty.", param=f"{path}.parts")
        else:
            raise InvalidRequest(f"Invalid value for '{path}.role': {role!r} (expected 'user' or 'model').",
                                 param=f"{path}.role")
    return messages


def _model_parts(parts: List[Any], path: str, turn: int) -> List[ContentPart]:
    out: List[ContentPart] = []
    for k, raw in enumerate(parts):
        p = f"{path}.parts[{k}]"
        if not isinstance(raw, dict):
            raise InvalidRequest(f"'{p}' must be an object.", param=p)
        sig = get(raw, "thoughtSignature")
        sig = sig if isinstance(sig, str) and sig else None
        call = get(raw, "functionCall")
        if isinstance(call, dict):
            name = expect(call.get("name"), str, f"{p}.functionCall.name", required=True)
            # A Struct on this wire: Google refuses any other value, and another wire would get a JSON
            # string or array as a call's arguments.
            args = expect(call.get("args"), dict, f"{p}.functionCall.args") or {}
            # A stable made-up id: the same history always maps to the same ids.
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"{SYNTHETIC_ID}{turn}_{k}"
            out.append(ToolCallPart(call_id, name, json.dumps(args, separators=(",", ":"), ensure_ascii=False), sig,
                                    PROTOCOL if sig else None))
        elif isinstance(raw.get("text"), str):
            if raw.get("thought"):
                # Another vendor's thinking the gateway carried in the signature goes back as that vendor's.
                out.append(restore(sig) or ReasoningPart(raw["text"], sig, provider=PROTOCOL))
            else:
                if raw["text"]:
                    out.append(TextPart(raw["text"]))
                if sig:
                    # A signature on a text part has no canonical slot: keep it as a
                    # signature-only reasoning part that re-attaches on the way back.
                    out.append(ReasoningPart("", sig, provider=PROTOCOL))
        elif _is_kept(raw, _SERVER_PARTS + _MODEL_MEDIA, p):
            out.append(OpaquePart(PROTOCOL, raw, p))  # its thoughtSignature stays in it
        elif sig:
            out.append(ReasoningPart("", sig, provider=PROTOCOL))
        else:
            raise InvalidRequest(f"Unsupported part at '{p}' in a model turn.", param=p)
    return out


def _is_kept(raw: Mapping[str, Any], kinds: Tuple[str, ...], path: str) -> bool:
    """A part of one of `kinds`, kept whole. Each is an object on this wire: another value is the client's
    mistake, a 400 naming it (not the upstream's own 400, nor for another wire a server-side block's)."""
    kept = False
    for kind in kinds:
        value = get(raw, kind)
        if value is not None and not isinstance(value, dict):
            raise InvalidRequest(f"'{path}.{kind}' must be an object.", param=f"{path}.{kind}", code="invalid_type")
        kept = kept or value is not None
    return kept


def _note_opaque(parts: List[Any], extras: Dict[str, Any]) -> None:
    if OPAQUE_KEY not in extras:
        first = next((p for p in parts if isinstance(p, OpaquePart)), None)
        if first is not None:
            extras[OPAQUE_KEY] = first.path


def _user_parts(parts: List[Any], path: str, pending: List[ToolCallPart],
                extras: Dict[str, Any]) -> Tuple[List[ToolResultPart], List[ContentPart]]:
    results: List[ToolResultPart] = []
    others: List[ContentPart] = []
    unanswered = list(pending)
    for k, raw in enumerate(parts):
        p = f"{path}.parts[{k}]"
        if not isinstance(raw, dict):
            raise InvalidRequest(f"'{p}' must be an object.", param=p)
        resp = get(raw, "functionResponse")
        if isinstance(resp, dict):
            name = expect(resp.get("name"), str, f"{p}.functionResponse.name", required=True)
            call_id = resp.get("id") if isinstance(resp.get("id"), str) and resp.get("id") else None
            match = next((c for c in unanswered if (c.id == call_id if call_id else c.name == name)), None)
            if match is not None:
                unanswered.remove(match)
                call_id = match.id
            if call_id is None:
                raise InvalidRequest(f"'{p}.functionResponse' answers no functionCall named {name!r} in the "
                                     "preceding model turn.", param=f"{p}.functionResponse")
            # A Struct too (gemini.md §2): a bare string would reach every upstream quoted, as JSON text.
            response = expect(resp.get("response"), dict, f"{p}.functionResponse.response")
            text, is_error, wrapper = result_text(response)
            if wrapper is not None:
                extras.setdefault(RESULT_KEYS_NOTE, {})[call_id] = wrapper
            # Multimodal function responses (functionResponse.parts: inlineData / fileData).
            media = [_media_in(m, f"{p}.functionResponse.parts[{j}]", True)
                     for j, m in enumerate(expect(resp.get("parts"), list, f"{p}.functionResponse.parts") or [])]
            results.append(ToolResultPart(call_id, (TextPart(text), *media), is_error=is_error, name=name))
        elif isinstance(raw.get("text"), str):
            others.append(TextPart(raw["text"]))
        elif _is_kept(raw, _SERVER_PARTS, p):
            others.append(OpaquePart(PROTOCOL, raw, p))
        else:
            others.append(_media_in(raw, p))
    return results, others


def _media_in(raw: Any, p: str, strict: bool = False) -> ContentPart:
    """An `inlineData` or `fileData` part (either key spelling) as an image or file part."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{p}' must be an object.", param=p)
    inline = get(raw, "inlineData")
    file_data = get(raw, "fileData")
    # Which clip of a video, at what frame rate, at what resolution: they change what the model reads.
    fields = {k: _camel_keys(v) if isinstance(v, dict) else v
              for k, v in _camel_keys(raw).items() if k in _PART_FIELDS and v is not None} or None
    if isinstance(inline, dict):
        mime = expect(get(inline, "mimeType"), str, f"{p}.inlineData.mimeType") or "application/octet-stream"
        data = expect(inline.get("data"), str, f"{p}.inlineData.data", required=True)
        if mime.startswith("image/"):
            return ImagePart(data=data, media_type=mime, part_fields=fields, part_fields_protocol=PROTOCOL)
        return FilePart(data=data, media_type=mime, part_fields=fields, part_fields_protocol=PROTOCOL)
    if isinstance(file_data, dict):
        mime = expect(get(file_data, "mimeType"), str, f"{p}.fileData.mimeType")
        uri = expect(get(file_data, "fileUri"), str, f"{p}.fileData.fileUri", required=True)
        if mime and mime.startswith("image/"):
            return ImagePart(url=uri, media_type=mime, part_fields=fields, part_fields_protocol=PROTOCOL)
        return FilePart(url=uri, media_type=mime, part_fields=fields, part_fields_protocol=PROTOCOL)
    raise InvalidRequest(f"Unsupported part at '{p}'" + (" (expected inlineData or fileData)." if strict else "."), param=p)


def result_text(response: Any) -> Tuple[str, bool, Optional[List[Any]]]:
    """functionResponse.response → (text, is_error, [key, is JSON] when unwrapped): the value of a lone
    `output` or `result` is the result, of a lone `error` an error; any other object is the result as
    a whole (gemini.md §2). Non-ASCII text stays as it is: escaped, it costs the model tokens to read."""
    if isinstance(response, dict) and len(response) == 1:
        key, value = next(iter(response.items()))
        if key in _RESULT_KEYS:
            if isinstance(value, str):
                return value, key == "error", [key, False]
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False), key == "error", [key, True]
    if response is None:
        return "", False, None
    return json.dumps(response, separators=(",", ":"), ensure_ascii=False), False, None


# --- provider side ---------------------------------------------------------


def encode_request(prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
    names = {p.id: p.name for m in prompt.messages for p in m.parts if isinstance(p, ToolCallPart)}
    # A Gemini client owns its signatures; history from another wire has none.
    # Option thought_signature_placeholder: true (Google's literal), false, or another value to send.
    option = target.options.get("thought_signature_placeholder", True)
    placeholder = "" if prompt.extras_protocol == PROTOCOL or option is False else (
        option if isinstance(option, str) and option else SIGNATURE_PLACEHOLDER)
    wrappers = (prompt.extras.get(RESULT_KEYS_NOTE) or {}) if prompt.extras_protocol == PROTOCOL else {}
    contents: List[Dict[str, Any]] = []
    previous: Optional[Role] = None
    for m in prompt.messages:
        role = "model" if m.role is Role.ASSISTANT else "user"
        parts = _encode_parts(m, names, placeholder, wrappers)
        if not parts:
            continue
        if previous is Role.TOOL and m.role in (Role.TOOL, Role.USER):
            # One user turn holds every functionResponse of a call turn, then everything else
            # (a result's images, the user's text), in order.
            merged = contents[-1]["parts"] + parts
            merged.sort(key=lambda d: 0 if "functionResponse" in d else 1)
            contents[-1]["parts"] = merged
        else:
            contents.append({"role": role, "parts": parts})
        previous = m.role
    if not contents:
        raise empty_conversation(prompt, "Gemini")  # "contents is not specified"
    refusal = limit_refusal(prompt, PROTOCOL)
    if refusal is not None:
        raise refusal
    _pair_function_responses(contents)
    body: Dict[str, Any] = {"contents": contents}
    same_wire = prompt.extras_protocol == PROTOCOL
    extras = dict(prompt.extras) if same_wire else {}
    gen_extra = dict(extras.pop("generationConfig", None) or {})
    extras.pop(OPAQUE_KEY, None)
    tools = encode_tools(prompt, target, extras)  # takes its keys out of the extras
    body.update({k: v for k, v in extras.items() if not k.startswith("_")})  # "_": the gateway's own notes
    if prompt.system:
        body["systemInstruction"] = {"parts": [{"text": prompt.system_text()}]}
    body.update(tools)
    gen = encode_generation(prompt, gen_extra)
    if gen:
        body["generationConfig"] = gen
    return body


def _encode_parts(m: Message, names: Dict[str, str], placeholder: str,
                  wrappers: Mapping[str, List[Any]]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    signed_call = False
    for p in m.parts:
        if isinstance(p, TextPart):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, ReasoningPart):
            # Signatures are only valid for the vendor that made them: others' reasoning is dropped.
            if p.provider != PROTOCOL:
                continue
            if p.text:
                part: Dict[str, Any] = {"text": p.text, "thought": True}
                if p.signature:
                    part["thoughtSignature"] = p.signature
                out.append(part)
            elif p.signature:
                prev = out[-1] if out else None
                if prev is not None and "text" in prev and not prev.get("thought") and "thoughtSignature" not in prev:
                    prev["thoughtSignature"] = p.signature  # it came on this text part
                else:
                    out.append({"text": "", "thoughtSignature": p.signature})
        elif isinstance(p, ToolCallPart):
            call: Dict[str, Any] = {"name": p.name, "args": parse_args(p.arguments)}
            if not is_synthetic(p.id):
                call["id"] = p.id
            part = {"functionCall": call}
            if p.signature and p.signature_provider == PROTOCOL:
                part["thoughtSignature"] = p.signature
                signed_call = True
            elif placeholder and not signed_call:
                part["thoughtSignature"] = placeholder
                signed_call = True
            out.append(part)
        elif isinstance(p, ToolResultPart):
            resp: Dict[str, Any] = {"name": p.name or names.get(p.tool_call_id, "function"),
                                    "response": result_object(p, wrappers.get(p.tool_call_id))}
            if not is_synthetic(p.tool_call_id):
                resp["id"] = p.tool_call_id
            out.append({"functionResponse": resp})
            # Images and files of a result go as parts of the same user turn, after the
            # responses (translation.md §4: functionResponse.parts needs newer models).
            out.extend(m for m in (_media_part(c) for c in p.content) if m is not None)
        elif isinstance(p, OpaquePart):
            if p.protocol == PROTOCOL:  # another wire's never gets here (protocols/wire_only.py)
                out.append(dict(p.block))
        else:
            media = _media_part(p)
            if media is not None:
                out.append(media)
    # Results first in a mixed user turn (Gemini pairs them with the call turn).
    out.sort(key=lambda d: 0 if "functionResponse" in d else 1)
    return out


MISSING_RESULT = "No result was provided for this function call."


def _pair_function_responses(contents: List[Dict[str, Any]]) -> None:
    """Every functionCall of a model turn answered in the user turn after it, and every
    functionResponse answering one (translation.md §12.5-6: Gemini wants as many responses as
    calls). Histories from other wires can lack a result or carry one for no call: a missing
    one becomes an error response, an orphan becomes user text, so nothing sent is lost.

    A turn is a run of same-role contents (google-genai's streaming chat keeps each chunk
    of a model turn as its own content): a valid Gemini history is left exactly as it is.
    """
    runs: List[Tuple[str, List[int]]] = []
    for i, content in enumerate(contents):
        if runs and runs[-1][0] == content["role"]:
            runs[-1][1].append(i)
        else:
            runs.append((content["role"], [i]))
    calls: List[Dict[str, Any]] = []
    for role, indexes in runs:
        if role == "model":
            calls = [p["functionCall"] for i in indexes for p in contents[i]["parts"] if "functionCall" in p]
            continue
        unanswered = list(calls)
        for i in indexes:
            parts = []
            for part in contents[i]["parts"]:
                resp = part.get("functionResponse")
                if resp is not None:
                    match = next((c for c in unanswered if (c.get("id") == resp["id"] if "id" in resp
                                                            else c["name"] == resp["name"])), None)
                    if match is None:
                        part = {"text": f"[result of function call {resp.get('id') or resp['name']}]: "
                                        f"{json.dumps(resp['response'])}"}
                    else:
                        unanswered.remove(match)
                parts.append(part)
            parts.sort(key=lambda d: 0 if "functionResponse" in d else 1)
            contents[i]["parts"] = parts
        first = contents[indexes[0]]
        first["parts"] = [_missing_response(c) for c in unanswered] + first["parts"]
        calls = []


def _missing_response(call: Dict[str, Any]) -> Dict[str, Any]:
    resp = {"name": call["name"], "response": {"error": MISSING_RESULT}}
    if "id" in call:
        resp["id"] = call["id"]
    return {"functionResponse": resp}


def _media_part(p: ContentPart) -> Optional[Dict[str, Any]]:
    part = _media_data(p)
    if (part is not None and isinstance(p, (ImagePart, FilePart)) and p.part_fields
            and p.part_fields_protocol in (None, PROTOCOL)):
        part.update(p.part_fields)
    return part


def _media_data(p: ContentPart) -> Optional[Dict[str, Any]]:
    if isinstance(p, ImagePart):
        if p.data is not None:
            return {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}
        # Gemini fetches only Files API / GCS URIs; other URLs fail upstream with a 400.
        guess = mimetypes.guess_type(urllib.parse.urlsplit(p.url or "").path)[0]
        mime = p.media_type or (guess if guess and guess.startswith("image/") else "image/jpeg")
        return {"fileData": {"mimeType": mime, "fileUri": p.url}}
    if isinstance(p, FilePart):
        if p.data is not None:
            return {"inlineData": {"mimeType": p.media_type or "application/pdf", "data": p.data}}
        if p.url:
            if p.media_type:
                return {"fileData": {"mimeType": p.media_type, "fileUri": p.url}}
            if _is_google_file(p.url):
                return {"fileData": {"fileUri": p.url}}  # Google knows its own file's type (mimeType is optional)
            guess = mimetypes.guess_type(urllib.parse.urlsplit(p.url).path)[0]
            return {"fileData": {"mimeType": guess or "application/pdf", "fileUri": p.url}}
    return None


def _is_google_file(url: str) -> bool:
    """A Files API or Cloud Storage URI: the upstream has the file and its MIME type."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "gs" or (parts.hostname == "generativelanguage.googleapis.com" and "/files/" in parts.path)


def parse_args(arguments: str) -> Dict[str, Any]:
    """OpenAI-style JSON text → the object Gemini needs; `{"_raw": text}` when it is not an object."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def result_object(r: ToolResultPart, wrapper: Optional[List[Any]] = None) -> Dict[str, Any]:
    """functionResponse.response must be an object: JSON-object text passes as is,
    anything else is wrapped as {"output": …} (or {"error": …}). A Gemini client's result
    goes back under the key it came under (`wrapper`, RESULT_KEYS_NOTE)."""
    text = r.text()
    if wrapper is not None and (wrapper[0] == "error") == r.is_error:
        key, is_json = wrapper
        try:
            return {key: json.loads(text) if is_json else text}
        except (ValueError, RecursionError):  # a hook rewrote the JSON into plain text
            return {key: text}
    if r.is_error:
        return {"error": text}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        return value
    return {"output": text}
