"""Generation limits a wire cannot take from another: the client's 400, naming the field it sent.

Used by the codecs' encoders (Gemini, Anthropic) and by routing (language_model/capability.py), which so
skips a fallback target that could not take the request, as for a prefill.
"""

from __future__ import annotations

from typing import Optional

from ..errors import InvalidRequest
from ..language_model.types import Prompt
from .openai_chat.request import MAX_TOKENS_FIELD_KEY
from .openai_chat.request import PROTOCOL as CHAT

# (wire name, most stop sequences it takes) by upstream wire: openai-chat.md `stop` ≤4, gemini.md
# `stopSequences` ≤5, Anthropic without a documented bound; Responses has no stop sequences at all
# (language_model/capability.py refuses them), but its output bound too must be at least 1.
_UPSTREAM_LIMITS = {"openai_chat": ("OpenAI Chat Completions", 4), "gemini": ("Gemini", 5),
                    "anthropic_messages": ("Anthropic Messages", None), "openai_responses": ("OpenAI Responses", None)}
# A generation limit's name on each client wire: a limit another wire cannot take is the client's
# 400 naming the field it sent, not an upstream 400 naming the upstream's field.
_CLIENT_FIELDS = {
    "max_tokens": {"openai_chat": "max_completion_tokens", "openai_responses": "max_output_tokens",
                   "anthropic_messages": "max_tokens", "gemini": "generationConfig.maxOutputTokens"},
    "stop": {"openai_chat": "stop", "anthropic_messages": "stop_sequences",
             "gemini": "generationConfig.stopSequences"},
}


def client_field(prompt: Prompt, limit: str) -> str:
    """The client's own name for a generation limit ("max_tokens" or "stop")."""
    if limit == "max_tokens" and prompt.extras_protocol == CHAT and prompt.extras.get(MAX_TOKENS_FIELD_KEY):
        return "max_tokens"
    return _CLIENT_FIELDS[limit].get(prompt.extras_protocol or "", limit)


def limit_refusal(prompt: Prompt, protocol: str) -> Optional[InvalidRequest]:
    """The client's 400 when its output bound or stop sequences cannot cross to the `protocol` wire, or None.

    A same-wire upstream judges the client's own fields (its 400 names them). Across wires, an output
    bound below 1 has another meaning (an Anthropic `max_tokens: 0` pre-warms the cache without an
    answer, a Gemini `maxOutputTokens: 0` may read as unset), and stop sequences past the target's
    limit would be an upstream 400 naming a field the client never sent, or cut silently."""
    limits = _UPSTREAM_LIMITS.get(protocol)
    if limits is None or prompt.extras_protocol == protocol:
        return None
    wire, max_stops = limits
    p = prompt.params
    if p.max_tokens is not None and p.max_tokens < 1:
        field = client_field(prompt, "max_tokens")
        return InvalidRequest(f"'{field}' is {p.max_tokens}, but this model's upstream speaks {wire}, which needs "
                              f"at least 1 output token. Send 1 or more, or route this model to an upstream of your "
                              "own API.", param=field, code="unsupported_value")
    if max_stops is not None and len(p.stop) > max_stops:
        field = client_field(prompt, "stop")
        return InvalidRequest(f"'{field}' has {len(p.stop)} stop sequences, but this model's upstream speaks {wire}, "
                              f"which takes at most {max_stops}. Send at most {max_stops}.", param=field,
                              code="unsupported_value")
    return None
