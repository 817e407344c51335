"""The strings of a provider's own blocks: server-side tool calls and results, and text annotations.

An OpaquePart / OpaqueBlock holds a block exactly as its wire has it (an Anthropic
`web_fetch_tool_result` with the fetched page's text, a Gemini `codeExecutionResult` with
a program's output, a Responses `web_search_call` with the query), and a TextPart's
annotations hold citations (`cited_text`, `title`, `url`). They reach a client of that
wire and go back up in its history, so their strings are scanned like the text. Some
values must still round-trip byte for byte, and are never read (see `_verbatim`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Mapping, Sequence, Tuple

# Values the provider made opaque on purpose and checks when the client sends them back, so a
# rewritten one is a 400 (or silently lost context) on the next turn: encrypted search results,
# citation indexes and program output (Anthropic `encrypted_content`, `encrypted_index`,
# `encrypted_stdout`; Responses `encrypted_content`), and signatures (Anthropic `signature`,
# Gemini `thoughtSignature`, a sibling of any part). They are ciphertext, not text a detector
# could read.
_VERBATIM_KEYS = frozenset({"encrypted_content", "encrypted_index", "encrypted_stdout", "signature",
                            "thoughtSignature", "thought_signature"})
# A block's own identifiers, which must match a tool or server (Anthropic `server_tool_use`/`mcp_tool_use`
# `name`, `server_name`; a Responses `mcp_call`'s `name`, `server_label`): checked, never rewritten
# (redact acts as block, as on other names). Only at the block's top level: a `name` inside a tool's
# `input` is the model's text.
_NAME_KEYS = frozenset({"name", "server_name", "server_label"})

TEXT, NAME, JSON = "text", "name", "json"
# A call's arguments as JSON text (a Responses `mcp_call`'s `arguments`): read decoded and kept valid
# JSON when redacted, like a tool call's.
_JSON_KEYS = frozenset({"arguments"})
Leaf = Tuple[str, str]  # (string, TEXT | NAME | JSON)


def _is_id(key: Any) -> bool:
    """Ids pair a server tool's result with its call (`tool_use_id`, `call_id`, `id`): not scanned, as ids
    anywhere else; a rewritten one breaks the pairing."""
    return isinstance(key, str) and (key == "id" or key.endswith("_id"))


def _verbatim(obj: Mapping[str, Any], key: Any, value: Any) -> bool:
    """A value passed over: opaque by construction, an id, or base64 media (a PDF or image source, a
    Gemini `inlineData`, a Responses `image_generation_call` result, a `data:…;base64,` URL), which a
    detector cannot read and a placeholder would corrupt. Text sources (an Anthropic `"type": "text"`
    document, the fetched page) are read."""
    if key in _VERBATIM_KEYS or _is_id(key):
        return True
    if key == "data" and (obj.get("type") == "base64" or "mimeType" in obj or "mime_type" in obj):
        return True
    if key == "result" and obj.get("type") == "image_generation_call":
        return True
    return isinstance(value, str) and value.startswith("data:") and ";base64," in value[:100]


def kind(block: Mapping[str, Any]) -> str:
    """What to call a block in a log line or block message: its `type`, or a Gemini part's one field."""
    t = block.get("type")
    if isinstance(t, str):
        return t
    return next((k for k in block if isinstance(k, str) and k not in _VERBATIM_KEYS), "block")


def leaves(value: Any) -> List[Leaf]:
    """Every string `rebuild` may replace, depth first (object keys count as text, as in other JSON fields)."""
    out: List[Leaf] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str):
                out.append((k, TEXT))
            if not _verbatim(value, k, v):
                _walk(v, out, NAME if k in _NAME_KEYS else JSON if k in _JSON_KEYS else TEXT)
    else:
        _walk(value, out)
    return out


def _walk(value: Any, out: List[Leaf], role: str = TEXT) -> None:
    if isinstance(value, str):
        out.append((value, role))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str):
                out.append((k, TEXT))
            if not _verbatim(value, k, v):
                _walk(v, out, JSON if k in _JSON_KEYS else TEXT)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _walk(v, out)


Verbatim = Callable[[Mapping[str, Any], Any, Any], bool]


def rebuild(value: Any, new: Iterator[str], verbatim: Verbatim = _verbatim) -> Any:
    """`value` with its strings taken from `new` (in `leaves` order, or the order of any walk that skips
    the same `verbatim` members): changed dicts and lists are new objects, everything unchanged stays
    the same object, and `value` itself is never mutated."""
    if isinstance(value, str):
        return next(new)
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            nk = next(new) if isinstance(k, str) else k
            items.append((nk, v if verbatim(value, k, v) else rebuild(v, new, verbatim)))
        if all(nk is k and nv is v for (nk, nv), (k, v) in zip(items, value.items())):
            return value
        return dict(items)
    if isinstance(value, (list, tuple)):
        elements = [rebuild(v, new, verbatim) for v in value]
        if all(a is b for a, b in zip(elements, value)):
            return value
        return tuple(elements) if isinstance(value, tuple) else elements
    return value


# A redacted text's secret shorter than this is not looked for in its annotations: a custom `secret`
# group of a character or two would rewrite unrelated words of the cited text.
MIN_SECRET = 4


def propagate(text: str, secrets: Sequence[Tuple[str, str]]) -> str:
    """An annotation's string with the secrets its text lost (literally) replaced by their placeholders.

    A citation quotes its source: the detector that redacted `Project Falcon` in the text may not match
    the quote `Falcon launches` alone (its context is missing), yet the secret is the same."""
    for secret, placeholder in secrets:
        if len(secret) >= MIN_SECRET and secret in text:
            text = text.replace(secret, placeholder)
    return text
