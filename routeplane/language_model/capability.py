"""What a target's wire can take of a prompt beyond its codec: a prefill, another vendor's file ids, media,
fields only the client's own wire keeps the meaning of (protocols/wire_only.py).

A fallback target that cannot take the prompt is skipped at routing, never tried (its 400 would
hide an earlier target's error); a prompt no target of the route can take is a 400 before any
upstream call. The executor checks again for a target chosen after routing (a route hook).
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

from ..errors import InvalidRequest
from ..protocols.base import empty_conversation
from ..protocols.limits import client_field, limit_refusal
from ..protocols.wire_only import lost_field, lost_reason
from .routing import RoutingTarget
from .types import ContentPart, FilePart, ImagePart, Prompt, TextPart, ToolResultPart

# Wires that continue a trailing assistant message (a prefill); the built-in mock echoes whatever it gets.
PREFILL_PROTOCOLS = frozenset({"anthropic_messages", "mock"})
# A file id names an upload in one vendor's Files API; the two OpenAI wires share OpenAI's.
_OPENAI = frozenset({"openai_chat", "openai_responses"})
# Files only Gemini can read: its Files API (the URL needs the Google key) and Cloud Storage.
_GEMINI_FILES = ("https://generativelanguage.googleapis.com/", "gs://")
# Media a wire has no input for (translation.md, "Audio in"): audio only on Chat and Gemini, video
# only on Gemini. Sent anyway, they became a document or file the upstream refuses.
_NO_INPUT = {"anthropic_messages": ("audio/", "video/"), "openai_responses": ("audio/", "video/"),
             "openai_chat": ("video/",)}


# Wires whose encoders send no empty text, and whose APIs refuse an empty conversation.
_NO_EMPTY_TEXT = frozenset({"anthropic_messages", "gemini"})
# Wires without stop sequences: sent there, the answer would run past them, and be billed for it.
_NO_STOP = frozenset({"openai_responses"})


def is_prefill(prompt: Prompt) -> bool:
    """translation.md §12.29: an Anthropic client's trailing assistant message is a prefill the model
    must continue. The OpenAI wires and Gemini read it as a finished turn and answer anew."""
    return bool(prompt.extras_protocol == "anthropic_messages" and prompt.messages
                and prompt.messages[-1].role == "assistant")


def _parts(prompt: Prompt) -> Iterator[ContentPart]:
    for message in prompt.messages:
        for part in message.parts:
            yield part
            if isinstance(part, ToolResultPart):
                yield from part.content


def foreign_file(prompt: Prompt, protocol: str) -> Optional[str]:
    """A file of the client's vendor that the target's wire cannot read, or None: a Files API id (the
    part has no data or URL to send instead), or a Gemini file URI (only Gemini can fetch it)."""
    if protocol not in ("gemini", "mock"):
        for part in _parts(prompt):
            if isinstance(part, (FilePart, ImagePart)) and (part.url or "").startswith(_GEMINI_FILES):
                return part.url
    client = prompt.extras_protocol
    if client is None or protocol in (client, "mock") or (client in _OPENAI and protocol in _OPENAI):
        return None
    for part in _parts(prompt):
        if isinstance(part, FilePart) and part.file_id and not (part.data or part.url):
            return part.file_id
    return None


def unsupported_media(prompt: Prompt, protocol: str) -> Optional[str]:
    """The media type of a file the target's wire takes no input of, or None."""
    kinds = _NO_INPUT.get(protocol)
    if kinds:
        for part in _parts(prompt):
            if isinstance(part, FilePart) and (part.media_type or "").startswith(kinds):
                return part.media_type
    return None


def problem(prompt: Prompt, target: RoutingTarget) -> Optional[str]:
    """Why the target cannot take the prompt, or None."""
    found = _problem(prompt, target)
    return found[0] if found else None


def _problem(prompt: Prompt, target: RoutingTarget) -> Optional[Tuple[str, str]]:
    """(why the target cannot take the prompt, the parameter at fault), or None."""
    where = f"{target.provider}:{target.model} ({target.protocol})"
    # A client field or block only its own wire keeps the meaning of: named first, as the more precise
    # reason (an Anthropic `pause_turn` continuation ends with the assistant's server-tool blocks, which
    # also reads as a prefill).
    lost = lost_field(prompt, target.protocol)
    if lost is not None:
        return lost_reason(lost, prompt.extras_protocol, where), lost[0]
    if is_prefill(prompt) and target.protocol not in PREFILL_PROTOCOLS:
        return (f"The last message is an assistant prefill, which {where} cannot continue: only an Anthropic "
                "upstream honours a prefill. End the conversation with a user message, or route this model to "
                "an Anthropic upstream."), "messages"
    file_id = foreign_file(prompt, target.protocol)
    if file_id is not None:
        return (f"File {file_id!r} is an upload in another vendor's file store, which {where} cannot read. "
                "Send the file's data or a public URL instead, or route this model to that vendor."), "messages"
    media = unsupported_media(prompt, target.protocol)
    if media is not None:
        return (f"{where} takes no {media} input. Route this model to an upstream that does "
                "(Gemini takes any)."), "messages"
    if prompt.params.stop and target.protocol in _NO_STOP:
        param = client_field(prompt, "stop")
        return (f"{where} has no stop sequences: the answer would run past them. Leave '{param}' out, or "
                "route this model to an upstream that takes them."), param
    limit = limit_refusal(prompt, target.protocol)  # stop sequences or an output bound the wire cannot take
    if limit is not None:
        return limit.message, limit.param or "messages"
    if target.protocol in _NO_EMPTY_TEXT and only_empty_text(prompt):
        err = empty_conversation(prompt, where)  # the encoder's own 400, known before the call
        return err.message, err.param or "messages"
    return None


def only_empty_text(prompt: Prompt) -> bool:
    """Every message holds only empty text (a Responses `input: ""`): nothing a wire that refuses empty
    text could be sent."""
    # No message at all is a thread's continuation (decoders refuse it otherwise); `thread` is a wire-only field.
    return bool(prompt.messages) and all(isinstance(part, TextPart) and not part.text
                                         for m in prompt.messages for part in m.parts)


def refuse(prompt: Prompt, target: RoutingTarget) -> None:
    """A 400 when the target cannot take the prompt, rather than another meaning or a dropped file."""
    found = _problem(prompt, target)
    if found is not None:
        raise InvalidRequest(found[0], param=found[1])


def capable_targets(prompt: Prompt, chain: List[RoutingTarget]) -> List[RoutingTarget]:
    """The targets of the chain that can take the prompt; none at all is a 400 (the first one's reason)."""
    able = [t for t in chain if problem(prompt, t) is None]
    if chain and not able:
        refuse(prompt, chain[0])
    return able
