"""OpenAI custom (freeform) tools on wires that only have function tools (Anthropic, Gemini).

Such a wire is offered each custom tool as a function taking one string, `input`, whose
description carries the tool's input format (a grammar, say) so the model sees it; custom calls
in history go as calls with `{"input": <text>}`, and their results as ordinary tool results.
The model's calls of those functions are turned back into custom calls whose input is that
string, so the OpenAI client gets the `custom_tool_call` it declared the tool for. The executor
runs both halves for a target that does not take custom tools as they are (`native_custom_tools`:
the provider option `custom_tools`, else `ProviderCodec.custom_tools`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional

from ..errors import InvalidRequest
from ..language_model.types import (
    Finish,
    Generation,
    Message,
    Prompt,
    StreamPart,
    Tool,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    UsageUpdate,
)

INPUT = "input"  # the one parameter of a custom tool's function form
CALL_NOTE = f"Pass the tool's whole free-form input, verbatim, as the string argument `{INPUT}`."


def decode_custom_tool(raw: Dict[str, Any], path: str,
                       canonical: Callable[[Dict[str, Any]], Dict[str, Any]] = dict) -> Tool:
    """A client's custom tool (`raw`: Responses' flat tool, or Chat's `custom` object); `canonical`
    turns the wire's format into the Responses spelling the canonical Tool keeps."""
    from .base import expect

    name = expect(raw.get("name"), str, f"{path}.name", required=True)
    if not name:
        raise InvalidRequest(f"'{path}.name' must not be empty.", param=f"{path}.name")
    fmt = expect(raw.get("format"), dict, f"{path}.format")
    if fmt is not None and not isinstance(fmt.get("type"), str):
        raise InvalidRequest(f"Missing required parameter: '{path}.format.type'.", param=f"{path}.format.type",
                             code="missing_required_parameter")
    return Tool(name=name, description=expect(raw.get("description"), str, f"{path}.description"), custom=True,
                format=None if fmt is None else canonical(fmt))


# --- offering: custom tools as function tools ----------------------------------


def function_form(prompt: Prompt) -> Prompt:
    """The prompt with every custom tool a function of one string and every custom call in
    history a call with that string; the prompt itself when it has neither."""
    has_tools = any(t.custom for t in prompt.tools)
    has_calls = any(isinstance(p, ToolCallPart) and p.custom for m in prompt.messages for p in m.parts)
    if not (has_tools or has_calls):
        return prompt
    tools = tuple(_function_tool(t) if t.custom else t for t in prompt.tools) if has_tools else prompt.tools
    messages = tuple(_function_calls(m) for m in prompt.messages) if has_calls else prompt.messages
    return prompt.replace(tools=tools, messages=messages)


def _function_tool(t: Tool) -> Tool:
    # The model must put the free text in a JSON string: say so next to the tool's own words,
    # which may well say "do not wrap the input in JSON" (Codex's apply_patch does).
    description = f"{t.description}\n\n{CALL_NOTE}" if t.description else CALL_NOTE
    schema = {"type": "object", "properties": {INPUT: {"type": "string", "description": input_description(t.format)}},
              "required": [INPUT]}
    return Tool(t.name, description, schema, cache_control=t.cache_control)


def input_description(fmt: Optional[Mapping[str, Any]]) -> str:
    """The custom tool's input format in words, for the function form's one parameter."""
    if not fmt or fmt.get("type") == "text":
        return "The tool's input: free-form text."
    syntax, definition = fmt.get("syntax"), fmt.get("definition")
    if fmt.get("type") == "grammar" and isinstance(definition, str):
        grammar = f"{syntax} grammar" if isinstance(syntax, str) and syntax else "grammar"
        return f"The tool's input, which must match this {grammar}:\n{definition}"
    return "The tool's input, in this format: " + json.dumps(dict(fmt), ensure_ascii=False)


def _function_calls(m: Message) -> Message:
    if not any(isinstance(p, ToolCallPart) and p.custom for p in m.parts):
        return m
    parts = tuple(
        dataclasses.replace(p, arguments=json.dumps({INPUT: p.arguments}, ensure_ascii=False), custom=False)
        if isinstance(p, ToolCallPart) and p.custom else p
        for p in m.parts
    )
    return dataclasses.replace(m, parts=parts)


# --- answering: the model's function calls back as custom calls -----------------


def custom_names(prompt: Prompt) -> FrozenSet[str]:
    return frozenset(t.name for t in prompt.tools if t.custom)


def custom_input(arguments: str) -> str:
    """The free text from a function-form call's arguments: the `input` string (or the only
    string, if the model named it otherwise); arguments of another shape are kept as they are."""
    try:
        value = json.loads(arguments, strict=False) if arguments.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return arguments
    if not isinstance(value, dict):
        return arguments
    if isinstance(value.get(INPUT), str):
        return value[INPUT]
    if not value:
        return ""
    if len(value) == 1 and isinstance(next(iter(value.values())), str):
        return next(iter(value.values()))
    return arguments


def restore_calls(gen: Generation, prompt: Prompt) -> Generation:
    """A generation from a wire without custom tools, with calls of the prompt's custom tools as custom calls."""
    names = custom_names(prompt)
    if not names or not any(isinstance(p, ToolCallPart) and p.name in names for p in gen.parts):
        return gen
    parts = tuple(
        dataclasses.replace(p, arguments=custom_input(p.arguments), custom=True)
        if isinstance(p, ToolCallPart) and p.name in names else p
        for p in gen.parts
    )
    return dataclasses.replace(gen, parts=parts)


def restore_stream(parts: Iterator[StreamPart], prompt: Prompt) -> Iterator[StreamPart]:
    """The stream from a wire without custom tools, with calls of the prompt's custom tools as
    custom calls whose deltas are the input text as it arrives. A prompt without custom tools
    gets its stream back untouched: no per-part work."""
    names = custom_names(prompt)
    return _restored(parts, names) if names else parts


def _restored(parts: Iterator[StreamPart], names: FrozenSet[str]) -> Iterator[StreamPart]:
    calls: Dict[int, _StreamedInput] = {}  # open custom calls by block index
    try:
        for part in parts:
            if isinstance(part, ToolCallStart):
                if part.name in names:
                    calls[part.index] = _StreamedInput()
                    part = dataclasses.replace(part, custom=True)
            elif calls:
                if isinstance(part, ToolCallDelta) and part.index in calls:
                    text = calls[part.index].feed(part.arguments)
                    if text:
                        yield ToolCallDelta(part.index, text)
                    continue
                if isinstance(part, ToolCallEnd) and part.index in calls:
                    yield from _flush(calls, part.index)
                elif isinstance(part, (UsageUpdate, Finish)):
                    for index in list(calls):  # calls the decoder never ended
                        yield from _flush(calls, index)
            yield part
        for index in list(calls):
            yield from _flush(calls, index)
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()  # the upstream stream (its connection) ends with this one


def _flush(calls: Dict[int, "_StreamedInput"], index: int) -> Iterator[StreamPart]:
    rest = calls.pop(index).finish()
    if rest:
        yield ToolCallDelta(index, rest)


_OPENING = ("{", f'"{INPUT}"', ":", '"')
_SPACE = " \t\r\n"
_PLAIN = re.compile(r'[^"\\]*')
_HIGH_SURROGATE = re.compile(r"[dD][89abAB]")


class _StreamedInput:
    """The fragments of `{"input": "..."}` → the string's text as it arrives, so a client sees
    the input grow as it would from OpenAI. Arguments of any other shape (another key first, a
    non-string value) are read whole at the end instead (`custom_input`)."""

    def __init__(self) -> None:
        self._fragments: List[str] = []
        self._pending = ""  # text not consumed yet: the opening so far, or a cut escape sequence
        self._state = "opening"  # → "string" inside the value → "whole" (after it, or another shape)
        self._sent: List[str] = []

    def feed(self, fragment: str) -> str:
        self._fragments.append(fragment)
        if self._state == "whole":
            return ""
        self._pending += fragment
        if self._state == "opening":
            end = _opening_end(self._pending)
            if end is None:
                return ""
            if end < 0:
                self._state = "whole"
                return ""
            self._state, self._pending = "string", self._pending[end:]
        return self._string()

    def _string(self) -> str:
        text, i, n = self._pending, 0, len(self._pending)
        closed = False
        while i < n:
            i = _PLAIN.match(text, i).end()  # type: ignore[union-attr]
            if i >= n:
                break
            if text[i] == '"':
                closed = True
                break
            # A backslash: only a complete escape (a surrogate pair whole) may be decoded.
            if i + 1 >= n:
                break
            if text[i + 1] != "u":
                i += 2
                continue
            if i + 6 > n:
                break
            if _HIGH_SURROGATE.match(text, i + 2) and text.startswith("\\u", i + 6):
                if i + 12 > n:
                    break
                i += 12
            elif _HIGH_SURROGATE.match(text, i + 2) and i + 8 > n:
                break  # its low half may be next
            else:
                i += 6
        try:
            decoded = json.loads(f'"{text[:i]}"', strict=False)
        except ValueError:
            self._state = "whole"  # not a JSON string after all: read it whole at the end
            return ""
        self._pending = text[i:]
        if closed:
            self._state, self._pending = "whole", ""
        if decoded:
            self._sent.append(decoded)
        return decoded

    def finish(self) -> str:
        """The rest of the input, once the arguments are complete."""
        whole = custom_input("".join(self._fragments))
        sent = "".join(self._sent)
        # What was sent is the input's start unless the arguments ended broken; then it stands.
        return whole[len(sent):] if whole.startswith(sent) else ""


def _opening_end(text: str) -> Optional[int]:
    """Where `{"input": "` ends in `text`: None while it may still come, -1 when it cannot."""
    i, n = 0, len(text)
    for token in _OPENING:
        while i < n and text[i] in _SPACE:
            i += 1
        seen = text[i:i + len(token)]
        if seen != token:
            return None if token.startswith(seen) and i + len(seen) == n else -1
        i += len(token)
    return i
