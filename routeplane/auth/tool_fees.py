"""The most a request's declared server tools can add to its worst case in per-call fees (budget reservations).

The settlement counts a server tool's calls from the answer (`Usage.tool_calls`, priced by `Prices.per_call`);
a reservation must bound them before any answer exists. The bound is the cap the wire carries where it
carries one: Anthropic's `max_uses` per tool, the Responses `max_tool_calls` over all built-in tools, one
grounded prompt per Gemini answer (Gemini 2.x bills grounding by the prompt, however many queries it ran).
Without a cap, each declared tool is reserved at `default_calls` calls (`auth.budget.default_server_tool_calls`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..language_model.routing import RoutingTarget
from ..language_model.types import Prompt
from ..protocols.anthropic_messages.request import PROTOCOL as ANTHROPIC_PROTOCOL
from ..protocols.anthropic_messages.request import SERVER_TOOLS_KEY as ANTHROPIC_SERVER_TOOLS
from ..protocols.gemini.request import PROTOCOL as GEMINI_PROTOCOL
from ..protocols.gemini.tools import SERVER_TOOLS_KEY as GEMINI_SERVER_TOOLS
from ..protocols.openai_chat.request import PROTOCOL as CHAT_PROTOCOL
from ..protocols.openai_chat.response import search_calls
from ..protocols.openai_responses.request import PROTOCOL as RESPONSES_PROTOCOL
from ..protocols.openai_responses.tools import HOSTED_TOOLS_KEY

# A call bound per billed kind, and a bound on all calls together (None: none).
Calls = Tuple[Dict[str, int], Optional[int]]

# Responses hosted tools OpenAI bills by the call (protocols/openai_responses/response.py counts them by
# these kinds); mcp, computer and shell calls cost their tokens only.
_RESPONSES_KINDS = (("web_search_preview", "web_search_preview"), ("web_search", "web_search"),
                    ("file_search", "file_search"), ("code_interpreter", "code_interpreter"),
                    ("image_generation", "image_generation"))
# Anthropic server tools counted by `server_tool_use.<kind>_requests` (anthropic_messages/response.py).
_ANTHROPIC_KINDS = ("web_search", "web_fetch")
_GEMINI_SEARCH = frozenset({"googleSearch", "google_search", "googleSearchRetrieval", "google_search_retrieval"})
_GEMINI_MAPS = frozenset({"googleMaps", "google_maps"})


def _cap(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _declared(extras: Any, key: str) -> List[Any]:
    kept = extras.get(key) if isinstance(extras, dict) else None
    return [pair[1] for pair in kept if isinstance(pair, list) and len(pair) == 2] if isinstance(kept, list) else []


def declared_calls(prompt: Prompt, target: RoutingTarget, default_calls: int) -> Calls:
    """The most calls of each billed kind the request's declared server tools can make on `target`.

    Server tools ride in `Prompt.extras` and reach only an upstream of the client's own wire (another wire
    is a 400, protocols/wire_only.py), so a target of another wire gets none. A Chat Completions search
    model searches once per answer whatever the request says."""
    if target.protocol == CHAT_PROTOCOL:
        return dict(search_calls(target.model)), None
    if target.protocol != prompt.extras_protocol:
        return {}, None
    extras = prompt.extras
    calls: Dict[str, int] = {}
    if target.protocol == RESPONSES_PROTOCOL:
        types = [t.get("type") for t in _declared(extras, HOSTED_TOOLS_KEY) if isinstance(t, dict)]
        # With the preview offered, every search counts as the preview's (response.py's tool_calls).
        preview = any(isinstance(t, str) and t.startswith("web_search_preview") for t in types)
        for kind in types:
            billed = next((k for prefix, k in _RESPONSES_KINDS if isinstance(kind, str) and kind.startswith(prefix)),
                          None)
            if billed == "web_search" and preview:
                billed = "web_search_preview"
            if billed is not None:
                calls[billed] = calls.get(billed, 0) + default_calls
        return calls, _cap(extras.get("max_tool_calls"))
    if target.protocol == ANTHROPIC_PROTOCOL:
        for tool in _declared(extras, ANTHROPIC_SERVER_TOOLS):
            kind = tool.get("type") if isinstance(tool, dict) else None
            billed = next((k for k in _ANTHROPIC_KINDS if isinstance(kind, str) and kind.startswith(k + "_")), None)
            if billed is not None:
                uses = _cap(tool.get("max_uses"))
                calls[billed] = calls.get(billed, 0) + (default_calls if uses is None else uses)
        return calls, None
    if target.protocol == GEMINI_PROTOCOL:
        keys = {k for group in _declared(extras, GEMINI_SERVER_TOOLS) if isinstance(group, dict) for k in group}
        if keys & _GEMINI_SEARCH:  # Gemini 2.x: per grounded prompt; Gemini 3: per search query
            calls.update(google_search_prompt=1, google_search_query=default_calls)
        if keys & _GEMINI_MAPS:
            calls["google_maps_prompt"] = 1
    return calls, None


def fee_bound(prompt: Prompt, target: RoutingTarget, default_calls: int) -> Tuple[int, bool]:
    """(the most the declared tools' calls can cost on `target` in micro-USD, whether a declared kind is
    unpriced there). Under a bound on all calls together, the calls go to the dearest kinds first."""
    calls, total = declared_calls(prompt, target, default_calls)
    fees = 0.0
    unpriced = False
    left = total
    priced = sorted(((target.prices.call_price(kind), n) for kind, n in calls.items() if n),
                    key=lambda pair: -(pair[0] if pair[0] is not None else 0.0))
    for price, n in priced:
        if price is None:
            unpriced = True
            continue
        if left is not None:
            n, left = min(n, left), left - min(n, left)
        fees += n * price * 1_000_000
    return int(round(fees)), unpriced  # rounded as cost_micro_usd rounds the settlement
