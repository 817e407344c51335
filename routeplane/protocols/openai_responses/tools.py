"""Responses `tools` and `tool_choice`: function and custom tools to the canonical model, OpenAI's hosted
tools kept for a Responses upstream.

A hosted tool (`web_search`, `file_search`, `code_interpreter`, `image_generation`, `mcp`, the computer
and shell tools, and any type OpenAI adds) is run by OpenAI itself, so only a Responses upstream can
honour it: it rides in `Prompt.extras` with its position and goes back in place to such an upstream
(its calls and results come back as opaque output items), while an upstream of another wire would
answer without it, which is a 400 naming `tools[i]` (protocols/wire_only.py). A `tool_choice` that
names a hosted tool is kept the same way.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequest
from ...language_model.types import Prompt, Tool, ToolChoice
from ..base import expect
from ..custom_tools import decode_custom_tool

HOSTED_TOOLS_KEY = "_responses_hosted_tools"  # [[position, tool], ...]: same wire only
HOSTED_CHOICE_KEY = "_responses_hosted_tool_choice"  # a tool_choice naming a hosted tool: same wire only
# An `allowed_tools` choice: {"tool_choice": as sent, "left_out": [[position, tool], ...], "as": [mode, name]}.
# Another wire gets only the allowed tools; a Responses upstream gets them all and the choice as it is, so
# the tools list stays the same turn after turn (what allowed_tools is for: prompt caching).
ALLOWED_KEY = "_responses_allowed_tools"

# A hosted tool chosen by `tool_choice` ({"type": "file_search"}, {"type": "mcp", "server_label": ...}).
_CANONICAL_CHOICES = frozenset({"function", "custom", "allowed_tools"})


def decode_tools(body: Dict[str, Any]) -> Tuple[Tuple[Tool, ...], Optional[set], List[List[Any]]]:
    """The canonical tools, the `allowed_tools` names (or None), and the hosted tools with their positions."""
    tools: List[Tool] = []
    hosted: List[List[Any]] = []
    for i, raw in enumerate(expect(body.get("tools"), list, "tools") or []):
        path = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise InvalidRequest(f"'{path}' must be an object.", param=path)
        kind = raw.get("type")
        if kind == "custom":
            tools.append(decode_custom_tool(raw, path))
            continue
        if not isinstance(kind, str) or not kind:
            raise InvalidRequest(f"'{path}.type' must be a string naming the tool's type.", param=f"{path}.type")
        if kind != "function":
            hosted.append([i, raw])
            continue
        if isinstance(raw.get("function"), dict):
            raise InvalidRequest(f"'{path}' uses the Chat Completions shape; Responses function tools are flat: "
                                 "{\"type\": \"function\", \"name\": ..., \"parameters\": ...}.", param=path)
        params = expect(raw.get("parameters"), dict, f"{path}.parameters")
        tools.append(Tool(
            name=expect(raw.get("name"), str, f"{path}.name", required=True),
            description=expect(raw.get("description"), str, f"{path}.description"),
            parameters=params if params is not None else {"type": "object", "properties": {}},
            strict=expect(raw.get("strict"), bool, f"{path}.strict"),
        ))
    allowed = None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        listed = expect(choice.get("tools"), list, "tool_choice.tools", required=True)
        if not all(isinstance(t, dict) for t in listed):
            raise InvalidRequest("'tool_choice.tools' must be an array of tool objects.", param="tool_choice.tools",
                                 code="invalid_type")
        allowed = {t.get("name") for t in listed}  # a hosted tool has no name: it stays offered as it is
    return tuple(tools), allowed, hosted


def decode_tool_choice(body: Dict[str, Any], allowed: Optional[set]) -> Tuple[Optional[ToolChoice], Optional[Dict[str, Any]]]:
    """The canonical tool choice, or a hosted tool's choice to keep as it is (with the parallel setting)."""
    parallel = expect(body.get("parallel_tool_calls"), bool, "parallel_tool_calls")
    raw = body.get("tool_choice")
    if raw is None:
        return (ToolChoice("auto", parallel=parallel) if parallel is not None else None), None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise InvalidRequest(f"Invalid value for 'tool_choice': {raw!r}.", param="tool_choice")
        return ToolChoice(raw, parallel=parallel), None
    if isinstance(raw, dict):
        kind = raw.get("type")
        if kind in ("function", "custom") and isinstance(raw.get("name"), str):
            return ToolChoice("tool", raw["name"], parallel=parallel), None
        if kind == "allowed_tools" and raw.get("mode") in ("auto", "required"):
            only = next(iter(allowed)) if allowed is not None and len(allowed) == 1 else None
            if raw["mode"] == "required" and isinstance(only, str):  # one function or custom tool: forced
                return ToolChoice("tool", only, parallel=parallel), None
            return ToolChoice(raw["mode"], parallel=parallel), None
        if isinstance(kind, str) and kind and kind not in _CANONICAL_CHOICES:
            return (ToolChoice("auto", parallel=parallel) if parallel is not None else None), raw
    raise InvalidRequest("Invalid value for 'tool_choice'.", param="tool_choice")


def narrow_to_allowed(body: Dict[str, Any], tools: Tuple[Tool, ...], allowed: Optional[set],
                      choice: Optional[ToolChoice]) -> Tuple[Tuple[Tool, ...], Optional[Dict[str, Any]]]:
    """The tools another wire is offered under an `allowed_tools` choice (only those it lists), and what a
    Responses upstream needs to get the client's own tools and choice back (ALLOWED_KEY), or None."""
    if allowed is None or choice is None:
        return tools, None
    left_out: List[List[Any]] = []
    if choice.name is None:
        left_out = [[i, raw] for i, raw in enumerate(body.get("tools") or [])
                    if raw.get("type") in ("function", "custom") and raw.get("name") not in allowed]
        tools = tuple(t for t in tools if t.name in allowed)
    return tools, {"tool_choice": body["tool_choice"], "left_out": left_out, "as": [choice.mode, choice.name]}


def allowed_choice(prompt: Prompt, allowed: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """ALLOWED_KEY, if the prompt's tool choice is still the one it was decoded to (no hook changed it)."""
    tc = prompt.tool_choice
    if allowed is None or tc is None or [tc.mode, tc.name] != list(allowed["as"]):
        return None
    return allowed


def with_positions(tools: List[Any], extra: List[List[Any]]) -> List[Any]:
    """`tools` with the [position, tool] entries of `extra` put back where the client had them."""
    out = list(tools)
    for position, tool in sorted(extra, key=lambda e: e[0]):
        out.insert(min(position, len(out)), tool)
    return out


def encode_tools(prompt: Prompt, body: Dict[str, Any], hosted: List[List[Any]], choice: Optional[Dict[str, Any]],
                 allowed: Optional[Dict[str, Any]] = None) -> bool:
    """Puts a same-wire client's hosted tools (and those its allowed_tools choice left out) back in their
    places in `body["tools"]`, and its hosted or allowed_tools choice. Whether the body offers any tool."""
    allowed = allowed_choice(prompt, allowed)
    extra = list(hosted) + (list(allowed["left_out"]) if allowed is not None else [])
    if extra:
        body["tools"] = with_positions(body.get("tools") or [], extra)
    if allowed is not None:
        choice = allowed["tool_choice"]
    if choice is not None:
        body["tool_choice"] = choice
    return bool(prompt.tools or extra)
