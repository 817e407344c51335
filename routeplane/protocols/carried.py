"""Another vendor's reasoning signature, carried opaquely by a client of a different wire.

Anthropic rejects a tool-loop continuation with thinking on unless the signed
thinking block comes back, and OpenAI's reasoning models continue a tool loop
from their reasoning items only when those come back (translation.md §11). A
Responses client has an opaque slot for that (`encrypted_content`), a Gemini
client too (`thoughtSignature`, base64 bytes) and an Anthropic client as well
(`signature`): the gateway puts the other vendor's signature there, wrapped and
marked, and restores it when the client sends the history back. The wrapped value
is only ever turned back into the vendor's own reasoning; it is never sent to
another vendor (encoders drop reasoning that is not their own).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Optional

from ..language_model.types import ReasoningPart

# Anthropic needs its signed thinking back to continue a turn, OpenAI Responses its reasoning
# items (id and encrypted_content, packed in the signature). Gemini's own signatures reach
# Gemini clients as they are.
CARRIED_PROVIDERS = frozenset({"anthropic_messages", "openai_responses"})
_MAGIC = b"routeplane.carried.v1:"
_PREFIX = base64.b64encode(_MAGIC[:21]).decode("ascii")  # what every wrapped value starts with
_PREFIX_LEN = len(_PREFIX)


def carry(part: ReasoningPart) -> Optional[str]:
    """The wrapped signature (standard base64), or None when there is nothing to carry."""
    if part.provider not in CARRIED_PROVIDERS or not (part.signature or part.redacted):
        return None
    if part.provider == "openai_responses" and not (part.signature or "").partition("\n")[2]:
        return None  # "id\n" without encrypted content: nothing a stateless upstream can take back
    # The text goes along: a client may not show it, but the signature only holds for it.
    payload = json.dumps({"p": part.provider, "t": part.text, "s": part.signature, "r": part.redacted},
                         separators=(",", ":"))
    return base64.b64encode(_MAGIC + payload.encode("utf-8")).decode("ascii")


def restore(value: Optional[str]) -> Optional[ReasoningPart]:
    """The vendor's reasoning back from a wrapped value; None when `value` is not one of ours.

    Accepts standard and URL-safe base64 (google-genai re-encodes bytes URL-safe).
    """
    if not value or len(value) < 24 or value[:_PREFIX_LEN].replace("-", "+").replace("_", "/") != _PREFIX:
        return None  # (a vendor's own signature, usually: no need to decode all of it)
    try:
        normalized = value.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_MAGIC):
        return None
    try:
        data = json.loads(raw[len(_MAGIC):].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("p") not in CARRIED_PROVIDERS:
        return None
    signature = data.get("s") if isinstance(data.get("s"), str) else None
    redacted = data.get("r") if isinstance(data.get("r"), str) else None
    text = data.get("t") if isinstance(data.get("t"), str) else ""
    return ReasoningPart(text, signature, redacted, provider=data["p"])
