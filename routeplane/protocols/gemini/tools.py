"""Gemini `tools` and `toolConfig`: function declarations ⇄ canonical tools, and what only Gemini knows
(its server-side tools, `codeExecution`, `googleSearch`, `urlContext`, …, and the rest of `toolConfig`)
kept for a Gemini upstream."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from ...errors import InvalidRequest
from ...language_model.routing import RoutingTarget
from ...language_model.types import Prompt, Tool, ToolChoice
from ..base import expect
from .schema import clean_for_gemini, from_gemini_schema, strip_meta

# Prompt.extras, same wire only: [[position, tool]] of the client's tools that are not function
# declarations (Gemini runs them itself), and the toolConfig fields beside functionCallingConfig
# (`retrievalConfig`, `includeServerSideToolInvocations`).
SERVER_TOOLS_KEY = "_gemini_server_tools"
TOOL_CONFIG_KEY = "_gemini_tool_config"
VALIDATED_KEY = "_gemini_validated"  # the client's functionCallingConfig.mode was VALIDATED (same wire only)
# {name: {field: value}}: a function declaration's fields the canonical Tool has no slot for (`response`,
# `responseJsonSchema`, `behavior`), sent back with it to a Gemini upstream (same wire only).
DECLARATION_KEY = "_gemini_declaration_fields"
_DECLARED = frozenset({"name", "description", "parameters", "parametersJsonSchema", "parameters_json_schema"})
_FUNCTIONS = ("functionDeclarations", "function_declarations")
_CALLING = ("functionCallingConfig", "function_calling_config")


def get(d: Mapping[str, Any], camel: str) -> Any:
    """REST uses lowerCamelCase but the proto3-JSON parser also takes snake_case."""
    if camel in d:
        return d[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return d.get(snake)


def decode_tools(raw: Any, extras: Dict[str, Any]) -> Tuple[Tool, ...]:
    """The function declarations as tools; any other tool kind is kept whole, at its position, for a
    Gemini upstream (another wire would go without it: protocols/wire_only.py makes that a 400)."""
    tools: List[Tool] = []
    server: List[List[Any]] = []
    kept: Dict[str, Dict[str, Any]] = {}
    for i, group in enumerate(expect(raw, list, "tools") or []):
        if not isinstance(group, dict):
            raise InvalidRequest(f"'tools[{i}]' must be an object.", param=f"tools[{i}]")
        others = {k: v for k, v in group.items() if k not in _FUNCTIONS}
        if others:
            server.append([i, others])
        for j, d in enumerate(expect(get(group, "functionDeclarations"), list, f"tools[{i}].functionDeclarations") or []):
            path = f"tools[{i}].functionDeclarations[{j}]"
            if not isinstance(d, dict):
                raise InvalidRequest(f"'{path}' must be an object.", param=path)
            schema = get(d, "parametersJsonSchema")
            if schema is None and get(d, "parameters") is not None:
                schema = from_gemini_schema(expect(get(d, "parameters"), dict, f"{path}.parameters"))
            name = expect(d.get("name"), str, f"{path}.name", required=True)
            fields = {k: v for k, v in d.items() if k not in _DECLARED and v is not None}
            if fields:
                kept[name] = fields
            tools.append(Tool(
                name=name,
                description=expect(d.get("description"), str, f"{path}.description"),
                parameters=expect(schema, dict, f"{path}.parametersJsonSchema") or {"type": "object", "properties": {}},
            ))
    if server:
        extras[SERVER_TOOLS_KEY] = server
    if kept:
        extras[DECLARATION_KEY] = kept
    return tuple(tools)


def decode_tool_config(raw: Any, extras: Dict[str, Any]) -> Tuple[Optional[ToolChoice], Optional[List[str]]]:
    if raw is None:
        return None, None
    raw = expect(raw, dict, "toolConfig")
    kept = {k: v for k, v in raw.items() if k not in _CALLING}
    if kept:
        extras[TOOL_CONFIG_KEY] = kept
    cfg = get(raw, "functionCallingConfig")
    if cfg is None:
        return None, None
    cfg = expect(cfg, dict, "toolConfig.functionCallingConfig")
    mode = str(cfg.get("mode") or "AUTO").upper()
    allowed = get(cfg, "allowedFunctionNames")
    if allowed is not None and not (isinstance(allowed, list) and all(isinstance(n, str) for n in allowed)):
        raise InvalidRequest("'allowedFunctionNames' must be an array of strings.",
                             param="toolConfig.functionCallingConfig.allowedFunctionNames")
    if mode in ("AUTO", "VALIDATED", "MODE_UNSPECIFIED"):
        if mode == "VALIDATED":
            extras[VALIDATED_KEY] = True
        return ToolChoice("auto"), allowed  # VALIDATED: auto, calls held to their schemas (kept for Gemini)
    if mode == "NONE":
        return ToolChoice("none"), None
    if mode == "ANY":
        if allowed and len(allowed) == 1:
            return ToolChoice("tool", allowed[0]), allowed
        return ToolChoice("required"), allowed
    raise InvalidRequest(f"Invalid functionCallingConfig.mode {mode!r}.", param="toolConfig.functionCallingConfig.mode")


def encode_tools(prompt: Prompt, target: RoutingTarget, extras: Dict[str, Any]) -> Dict[str, Any]:
    """`tools` and `toolConfig` for a Gemini upstream; `extras` (the same-wire extras, or empty) loses
    the keys read here, so they are not sent as fields."""
    out: Dict[str, Any] = {}
    tools: List[Dict[str, Any]] = []
    if prompt.tools:
        field = "parameters" if target.options.get("gemini_schema_field") == "parameters" else "parametersJsonSchema"
        decls = []
        kept = extras.pop(DECLARATION_KEY, None) or {}
        for t in prompt.tools:
            d: Dict[str, Any] = {"name": t.name}
            if t.description:
                d["description"] = t.description
            schema = dict(t.parameters)
            if schema.get("properties") or field == "parametersJsonSchema":
                d[field] = clean_for_gemini(schema) if field == "parameters" else strip_meta(schema)
            d.update(kept.get(t.name) or {})
            decls.append(d)
        tools.append({"functionDeclarations": decls})
    for position, server_tool in extras.pop(SERVER_TOOLS_KEY, None) or []:
        tools.insert(min(position, len(tools)), server_tool)
    if tools:
        out["tools"] = tools
    config = dict(extras.pop(TOOL_CONFIG_KEY, None) or {})
    validated = extras.pop(VALIDATED_KEY, False)
    tc = prompt.tool_choice
    if tc is not None and (prompt.tools or tc.mode == "none"):
        cfg: Dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}[tc.mode]}
        if tc.mode == "tool" and tc.name:
            cfg["allowedFunctionNames"] = [tc.name]
        elif tc.mode == "auto" and validated:
            cfg["mode"] = "VALIDATED"
        config["functionCallingConfig"] = cfg
    if config:
        out["toolConfig"] = config
    return out
