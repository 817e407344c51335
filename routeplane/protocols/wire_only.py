"""Client fields whose meaning only the client's own wire keeps.

The fields the canonical model lacks ride in `Prompt.extras` and reach an upstream of the
client's wire only. Most of them may be left behind for another wire without changing the
answer (cache keys, service tier, stored-completion metadata). These may not: without them the
upstream would answer another prompt (a Gemini `cachedContent` or a Responses `prompt` template
holds part of it), without tools the client offered (Anthropic server tools and MCP servers, Chat
web search), over a context the client had Anthropic edit (`context_management`), or without what
the client asked for (images or speech, log probabilities, biased tokens), or without the calls
and results of its server-side tools the history holds (OpaquePart). Bound for another wire, such
a request is a 400 naming the field, and a fallback target of another wire is skipped
(language_model/capability.py), as for a prefill. (What no wire can relay, such as audio answers,
the client codecs refuse outright.)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..language_model.types import Prompt
from .anthropic_messages.request import CITED_DOCUMENT_KEY, SERVER_TOOLS_KEY
from .base import OPAQUE_KEY
from .gemini.tools import SERVER_TOOLS_KEY as GEMINI_SERVER_TOOLS_KEY
from .openai_responses.request import LOGPROBS_INCLUDE as RESPONSES_LOGPROBS
from .openai_responses.tools import HOSTED_CHOICE_KEY as RESPONSES_HOSTED_CHOICE_KEY
from .openai_responses.tools import HOSTED_TOOLS_KEY as RESPONSES_HOSTED_TOOLS_KEY

# (param, what the field does), e.g. ("logit_bias", "biases the model's token choices").
Lost = Tuple[str, str]

WIRE_NAMES = {"openai_chat": "OpenAI Chat Completions", "openai_responses": "OpenAI Responses",
              "anthropic_messages": "Anthropic Messages", "gemini": "Gemini"}


def _chat(extras: Mapping[str, Any]) -> Optional[Lost]:
    if extras.get("logit_bias"):
        return "logit_bias", "biases the model's token choices"
    if extras.get("logprobs") is True or extras.get("top_logprobs"):
        return ("logprobs" if extras.get("logprobs") is True else "top_logprobs"), "asks for log probabilities"
    if extras.get("web_search_options") is not None:
        return "web_search_options", "lets the model search the web"
    if extras.get("moderation") is not None:
        return "moderation", "has OpenAI moderate the input and output (scores, or a block)"
    return None


def _responses(extras: Mapping[str, Any]) -> Optional[Lost]:
    if extras.get("prompt") is not None:
        return "prompt", "names a stored prompt template (its instructions and variables)"
    for position, tool in extras.get(RESPONSES_HOSTED_TOOLS_KEY) or []:
        return f"tools[{position}]", f"is a tool of type {tool.get('type')!r}, which OpenAI runs itself"
    if extras.get(RESPONSES_HOSTED_CHOICE_KEY) is not None:
        return "tool_choice", "chooses a tool OpenAI runs itself"
    if RESPONSES_LOGPROBS in (extras.get("include") or ()):
        return "include", f"asks for log probabilities ({RESPONSES_LOGPROBS!r})"
    return None


def _anthropic(extras: Mapping[str, Any]) -> Optional[Lost]:
    for position, tool in extras.get(SERVER_TOOLS_KEY) or []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        return f"tools[{position}]", f"is a tool of type {kind!r}, which Anthropic defines (and may run)"
    if extras.get("mcp_servers"):
        return "mcp_servers", "gives the model the tools of remote MCP servers"
    if extras.get("context_management"):
        return "context_management", "has Anthropic edit the conversation's context (clear old tool uses, thinking)"
    if extras.get("thread") is not None:
        return "thread", "has Anthropic hold the conversation between turns (a message thread)"
    if extras.get(CITED_DOCUMENT_KEY):
        return extras[CITED_DOCUMENT_KEY], "asks for citations of a document"
    return None


def _gemini(extras: Mapping[str, Any]) -> Optional[Lost]:
    if extras.get("cachedContent") is not None:
        return "cachedContent", "names a cached content that holds part of the prompt"
    for position, tool in extras.get(GEMINI_SERVER_TOOLS_KEY) or []:
        return f"tools[{position}]", f"is a tool of kind {next(iter(tool), '')!r}, which Gemini runs itself"
    gen = extras.get("generationConfig")
    gen = gen if isinstance(gen, dict) else {}
    modalities = gen.get("responseModalities")
    if isinstance(modalities, list) and any(str(m).upper() != "TEXT" for m in modalities):
        return "generationConfig.responseModalities", "asks for image or audio output"
    if gen.get("speechConfig") is not None:
        return "generationConfig.speechConfig", "asks for speech output"
    if gen.get("responseLogprobs") is True:
        return "generationConfig.responseLogprobs", "asks for log probabilities"
    return None


_CHECKS: Dict[str, Callable[[Mapping[str, Any]], Optional[Lost]]] = {
    "openai_chat": _chat, "openai_responses": _responses, "anthropic_messages": _anthropic, "gemini": _gemini,
}


def lost_field(prompt: Prompt, protocol: str) -> Optional[Lost]:
    """The first client field an upstream of `protocol` would lose the meaning of, or None
    (always None on the client's own wire, and for the built-in mock, which echoes anything)."""
    client = prompt.extras_protocol
    check = _CHECKS.get(client or "")
    if check is None or protocol in (client, "mock"):
        return None
    opaque = prompt.extras.get(OPAQUE_KEY)
    if opaque:
        return opaque, "is a block of the provider's server-side tools (what one did, or found)"
    return check(prompt.extras)


def lost_reason(lost: Lost, client: Optional[str], where: str) -> str:
    """The 400's message: the field, what it does, and the way out."""
    param, what = lost
    wire = WIRE_NAMES.get(client or "", client)
    return (f"'{param}' {what}: only an upstream of the {wire} wire keeps its meaning, and {where} does not. "
            "Remove it, or route this model to an upstream of that wire.")
