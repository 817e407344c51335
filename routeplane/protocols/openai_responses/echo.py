"""What a Responses object repeats of its request: the settings the client asked for, as OpenAI echoes them."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ...language_model.types import Prompt
from .request import PROTOCOL, TOOL_FIELDS_KEY, VERBOSITY_KEY, custom_tool, encode_format, named_tool_choice
from .tools import ALLOWED_KEY, HOSTED_CHOICE_KEY, HOSTED_TOOLS_KEY, allowed_choice, with_positions

# The wires whose `service_tier` names the same tiers as this one (auto, default, flex, scale, priority).
_TIER_WIRES = frozenset({PROTOCOL, "openai_chat"})


def upstream_tier(wire: Optional[str], extras: Mapping[str, Any]) -> Optional[str]:
    """The tier an OpenAI upstream says it served the answer on, if it said."""
    tier = extras.get("service_tier") if wire in _TIER_WIRES else None
    return tier if isinstance(tier, str) else None


def echoed(prompt: Prompt, served_tier: Optional[str] = None) -> Dict[str, Any]:
    """The response object's request fields: tools and tool choice as the client offered them (hosted tools
    and those an allowed_tools choice set aside included), text, reasoning, store, truncation and the
    service tier (the one the upstream served on, else the one asked for)."""
    extras: Mapping[str, Any] = prompt.extras if prompt.extras_protocol == PROTOCOL else {}
    store = extras.get("store")
    return {
        "tool_choice": _tool_choice(prompt, extras),
        "tools": _tools(prompt, extras),
        "text": _text(prompt, extras),
        "reasoning": _reasoning(prompt, extras),
        # The gateway keeps nothing (and asks a Responses upstream for store:false unless told otherwise).
        "store": store if isinstance(store, bool) else False,
        "truncation": extras.get("truncation") if isinstance(extras.get("truncation"), str) else "disabled",
        "service_tier": served_tier or (extras.get("service_tier") if isinstance(extras.get("service_tier"), str)
                                        else None),
    }


def _tool_choice(prompt: Prompt, extras: Mapping[str, Any]) -> Any:
    allowed = allowed_choice(prompt, extras.get(ALLOWED_KEY))
    if allowed is not None:
        return allowed["tool_choice"]
    if extras.get(HOSTED_CHOICE_KEY) is not None:
        return extras[HOSTED_CHOICE_KEY]
    tc = prompt.tool_choice
    if tc is None or tc.mode == "auto":
        return "auto"
    if tc.mode == "tool":
        return named_tool_choice(prompt, tc.name)
    return tc.mode


def _tools(prompt: Prompt, extras: Mapping[str, Any]) -> List[Any]:
    fields = extras.get(TOOL_FIELDS_KEY) or {}
    tools: List[Any] = [custom_tool(t) if t.custom else
                        {"type": "function", "name": t.name, "description": t.description,
                         "parameters": dict(t.parameters), "strict": bool(t.strict), **fields.get(t.name, {})}
                        for t in prompt.tools]
    allowed = allowed_choice(prompt, extras.get(ALLOWED_KEY))
    return with_positions(tools, list(extras.get(HOSTED_TOOLS_KEY) or [])
                          + (list(allowed["left_out"]) if allowed is not None else []))


def _text(prompt: Prompt, extras: Mapping[str, Any]) -> Dict[str, Any]:
    text: Dict[str, Any] = {"format": encode_format(prompt.response_format) if prompt.response_format is not None
                            else {"type": "text"}}
    if extras.get(VERBOSITY_KEY) is not None:
        text["verbosity"] = extras[VERBOSITY_KEY]
    return text


def _reasoning(prompt: Prompt, extras: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    asked = dict(extras.get("reasoning") or {})  # summary / generate_summary
    if prompt.params.reasoning_effort is not None:
        asked["effort"] = prompt.params.reasoning_effort
    return asked or None
