"""Pure wire codecs (no I/O, no Flask), one per protocol, plus SSE parsing and framing."""

from __future__ import annotations

from typing import Dict

from .base import ClientCodec, ProviderCodec


def provider_codecs() -> Dict[str, ProviderCodec]:
    """Every outbound codec by protocol name (imported lazily: no import-time work)."""
    from . import anthropic_messages, gemini, openai_chat, openai_responses

    return {openai_chat.PROTOCOL: openai_chat.PROVIDER, anthropic_messages.PROTOCOL: anthropic_messages.PROVIDER,
            openai_responses.PROTOCOL: openai_responses.PROVIDER, gemini.PROTOCOL: gemini.PROVIDER}


def client_codecs() -> Dict[str, ClientCodec]:
    from . import anthropic_messages, gemini, openai_chat, openai_responses

    return {openai_chat.PROTOCOL: openai_chat.CLIENT, anthropic_messages.PROTOCOL: anthropic_messages.CLIENT,
            openai_responses.PROTOCOL: openai_responses.CLIENT, gemini.PROTOCOL: gemini.CLIENT}
