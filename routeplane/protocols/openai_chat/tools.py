"""OpenAI Chat tools: the `tools`/`functions` offer, `tool_choice`, and tool calls in assistant messages."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequest
from ...language_model.types import Tool, ToolCallPart, ToolChoice
from ..base import expect
from ..custom_tools import decode_custom_tool


def decode_tool_call(call: Any, path: str) -> ToolCallPart:
    if not isinstance(call, dict):
        raise InvalidRequest(f"'{path}' must be an object.", param=path)
    if call.get("type") == "custom":
        custom = expect(call.get("custom"), dict, f"{path}.custom", required=True)
        return ToolCallPart(
            id=expect(call.get("id"), str, f"{path}.id", required=True),
            name=expect(custom.get("name"), str, f"{path}.custom.name", required=True),
            arguments=expect(custom.get("input"), str, f"{path}.custom.input", required=True),
            custom=True,
        )
    fn = expect(call.get("function"), dict, f"{path}.function", required=True)
    return ToolCallPart(
        id=expect(call.get("id"), str, f"{path}.id", required=True),
        name=expect(fn.get("name"), str, f"{path}.function.name", required=True),
        arguments=expect(fn.get("arguments"), str, f"{path}.function.arguments") or "{}",
    )


def decode_tools(body: Dict[str, Any]) -> Tuple[Tool, ...]:
    tools: List[Tool] = []
    for i, raw in enumerate(expect(body.get("tools"), list, "tools") or []):
        path = f"tools[{i}]"
        if isinstance(raw, dict) and raw.get("type") == "custom":
            tools.append(decode_custom_tool(expect(raw.get("custom"), dict, f"{path}.custom", required=True),
                                            f"{path}.custom", canonical_format))
            continue
        if not isinstance(raw, dict) or raw.get("type") != "function":
            raise InvalidRequest(f"'{path}' must be a function or custom tool ({{\"type\": \"function\", ...}}).",
                                 param=path)
        fn = expect(raw.get("function"), dict, f"{path}.function", required=True)
        tools.append(_tool(fn, f"{path}.function"))
    for i, fn in enumerate(expect(body.get("functions"), list, "functions") or []):
        tools.append(_tool(fn, f"functions[{i}]"))
    return tuple(tools)


def _tool(fn: Any, path: str) -> Tool:
    if not isinstance(fn, dict):
        raise InvalidRequest(f"'{path}' must be an object.", param=path)
    params = expect(fn.get("parameters"), dict, f"{path}.parameters")
    return Tool(
        name=expect(fn.get("name"), str, f"{path}.name", required=True),
        description=expect(fn.get("description"), str, f"{path}.description"),
        parameters=params if params is not None else {"type": "object", "properties": {}},
        strict=expect(fn.get("strict"), bool, f"{path}.strict"),
    )


def canonical_format(fmt: Dict[str, Any]) -> Dict[str, Any]:
    """A Chat custom tool format in the canonical (Responses) spelling: Chat nests a grammar's
    `syntax`/`definition` under `grammar`, Responses has them flat beside `type`."""
    grammar = fmt.get("grammar")
    if fmt.get("type") == "grammar" and isinstance(grammar, dict):
        return {**{k: v for k, v in fmt.items() if k != "grammar"}, **grammar}
    return dict(fmt)


def chat_format(fmt: Any) -> Dict[str, Any]:
    """The canonical format as Chat spells it (the inverse of canonical_format)."""
    if fmt.get("type") == "grammar" and "grammar" not in fmt:
        return {"type": "grammar", "grammar": {k: v for k, v in fmt.items() if k != "type"}}
    return dict(fmt)


def decode_tool_choice(body: Dict[str, Any]) -> Tuple[Optional[ToolChoice], Optional[List[str]]]:
    """The choice, and for `allowed_tools` the names the offer is narrowed to."""
    # (A legacy `functions` client takes one function_call a turn: the answer carries the first call.
    # Nothing is added upstream for it: some models and servers refuse `parallel_tool_calls`.)
    parallel = expect(body.get("parallel_tool_calls"), bool, "parallel_tool_calls")
    # A legacy client's choice is its `function_call`: its errors name that field.
    key = "function_call" if body.get("tool_choice") is None and body.get("function_call") is not None else "tool_choice"
    raw = body.get(key)
    if raw is None:
        return (ToolChoice("auto", parallel=parallel) if parallel is not None else None), None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise InvalidRequest(f"Invalid value for '{key}': {raw!r}.", param=key)
        return ToolChoice(raw, parallel=parallel), None
    if isinstance(raw, dict) and raw.get("type") == "allowed_tools":
        spec = expect(raw.get("allowed_tools"), dict, "tool_choice.allowed_tools", required=True)
        mode = spec.get("mode")
        if mode not in ("auto", "required"):
            raise InvalidRequest("Invalid value for 'tool_choice.allowed_tools.mode': use 'auto' or 'required'.",
                                 param="tool_choice.allowed_tools.mode")
        names: List[str] = []
        for i, t in enumerate(expect(spec.get("tools"), list, "tool_choice.allowed_tools.tools", required=True)):
            fn = t
            if isinstance(t, dict) and t.get("type") in ("function", "custom") and isinstance(t.get(t["type"]), dict):
                fn = t[t["type"]]  # {"type": "function", "function": {"name"}}, same for "custom"
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise InvalidRequest(f"'tool_choice.allowed_tools.tools[{i}]' must name a function.",
                                     param=f"tool_choice.allowed_tools.tools[{i}]")
            names.append(fn["name"])
        return ToolChoice(mode, parallel=parallel), names
    if isinstance(raw, dict):
        fn = raw.get(raw["type"]) if raw.get("type") in ("function", "custom") else raw
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return ToolChoice("tool", fn["name"], parallel=parallel), None
    raise InvalidRequest(f"Invalid value for '{key}'.", param=key)


def encode_tool(t: Tool) -> Dict[str, Any]:
    if t.custom:
        custom: Dict[str, Any] = {"name": t.name}
        if t.description is not None:
            custom["description"] = t.description
        if t.format is not None:
            custom["format"] = chat_format(t.format)
        return {"type": "custom", "custom": custom}
    fn: Dict[str, Any] = {"name": t.name, "parameters": dict(t.parameters)}
    if t.description is not None:
        fn["description"] = t.description
    if t.strict is not None:
        fn["strict"] = t.strict
    return {"type": "function", "function": fn}


def tool_call(p: ToolCallPart) -> Dict[str, Any]:
    """An assistant message's `tool_calls` entry."""
    if p.custom:
        return {"id": p.id, "type": "custom", "custom": {"name": p.name, "input": p.arguments}}
    return {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
