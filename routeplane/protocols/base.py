"""The codec interfaces every wire implements, and helpers shared by all of them."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import (
    InvalidRequest,
    InvalidUpstreamResponse,
    RouteplaneError,
    UpstreamError,
    UpstreamStatusError,
)
from ..language_model.routing import RoutingTarget
from ..language_model.types import Generation, Prompt, ResponseFormat, StreamPart
from .sse import SSEEvent

# --- client side (inbound) -------------------------------------------------


class StreamEncoder(ABC):
    """Turns canonical parts into the client's SSE frames, as a state machine."""

    @abstractmethod
    def encode(self, part: StreamPart) -> bytes: ...

    @abstractmethod
    def close(self) -> bytes:
        """Trailing frames after the last part of a successful stream."""

    @abstractmethod
    def error(self, err: RouteplaneError) -> bytes:
        """The wire's in-stream error frame (after HTTP 200 went out)."""


class ClientCodec(ABC):
    protocol: str

    @abstractmethod
    def decode_request(self, body: Any) -> Prompt: ...

    @abstractmethod
    def encode_response(self, gen: Generation, prompt: Prompt) -> Dict[str, Any]: ...

    @abstractmethod
    def stream_encoder(self, prompt: Prompt) -> StreamEncoder: ...

    @abstractmethod
    def error_body(self, err: RouteplaneError) -> Dict[str, Any]: ...


# --- provider side (outbound) ----------------------------------------------


class StreamDecoder(ABC):
    """Turns the provider's SSE events into canonical parts, as a state machine."""

    @abstractmethod
    def feed(self, event: SSEEvent) -> List[StreamPart]: ...

    @abstractmethod
    def finish(self) -> List[StreamPart]:
        """End of the byte stream: closes open blocks, or raises if the wire's terminator never came."""


class ProviderCodec(ABC):
    protocol: str
    # Whether the wire has OpenAI custom (free-text) tools. One without them is offered each as a
    # function taking one string, and the executor turns the model's calls back (custom_tools.py).
    custom_tools: bool = False

    @abstractmethod
    def url(self, target: RoutingTarget, stream: bool) -> str: ...

    @abstractmethod
    def headers(self, target: RoutingTarget) -> Dict[str, str]: ...

    def request_headers(self, target: RoutingTarget, prompt: Prompt) -> Dict[str, str]:
        """Headers for one call; a codec overrides this to forward client headers
        it keeps in `prompt.extras` (e.g. Anthropic's anthropic-beta)."""
        return self.headers(target)

    @abstractmethod
    def encode_request(self, prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]: ...

    @abstractmethod
    def decode_response(self, body: Any, target: RoutingTarget) -> Generation: ...

    @abstractmethod
    def stream_decoder(self, target: RoutingTarget) -> StreamDecoder: ...

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str], target: RoutingTarget) -> UpstreamError:
        return upstream_status_error(status, body, headers, target)


# --- shared helpers --------------------------------------------------------

# Prompt.extras: where the client's history holds its first OpaquePart ("messages[2].content[1]"),
# set by the request decoder that made it; an upstream of another wire would miss that block
# (protocols/wire_only.py).
OPAQUE_KEY = "_opaque_path"


def json_headers(target: RoutingTarget, auth_header: str = "Authorization", auth_prefix: str = "Bearer ") -> Dict[str, str]:
    """The request headers every JSON/SSE wire sends: content type, accept, the key, the target's extras."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if target.api_key:
        headers[auth_header] = f"{auth_prefix}{target.api_key}"
    headers.update(target.headers)
    return headers


RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
# Key-shaped strings, and the account ids providers quote in errors (OpenAI org-/proj_).
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+[A-Za-z0-9._\-]{8,}"
                      r"|\borg-[A-Za-z0-9]{8,}|\bproj_[A-Za-z0-9]{8,})")


def scrub(text: str, target: Optional[RoutingTarget] = None) -> str:
    """Remove the target's key and anything key-shaped from a provider's message."""
    if target is not None and target.api_key:
        text = text.replace(target.api_key, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def retry_after_seconds(headers: Mapping[str, str], now: Optional[float] = None,
                        cap: float = 24 * 3600.0) -> Optional[float]:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None when
    absent or unusable. A provider's header is untrusted input: garbage, NaN or infinity
    must never turn an error into a crash."""
    lower = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = (lower.get(name) or "").strip()
        if not value:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            if scale != 1.0:
                continue
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, OverflowError, IndexError):
                return None
            if parsed is None:
                return None
            seconds = parsed.timestamp() - (now if now is not None else time.time())
        if not math.isfinite(seconds):
            return None
        return min(max(0.0, seconds), cap)
    return None


def error_message(body: bytes) -> Optional[str]:
    """The human message from any of the four wires' error bodies."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini sometimes wraps errors in a list
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    if isinstance(data.get("message"), str):
        return data["message"]
    return None


def upstream_status_error(
    status: int, body: bytes, headers: Mapping[str, str], target: RoutingTarget
) -> UpstreamError:
    raw = error_message(body) or body[:200].decode("utf-8", "replace").strip() or "no details"
    message = f"{target.provider} returned HTTP {status}: {scrub(raw, target)}"
    if status == 403 and _flagged(body):
        # OpenRouter's moderation answers 403 with the categories the input was flagged for: the
        # request's content, not the gateway's key (nor anything another target would judge differently
        # enough to bill a second call for), so the client's 400 with the upstream's words.
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=False,
                                   status=400, kind="invalid_request")
    err = _classified(status, message, target, retry_after_seconds(headers), _error_code(body))
    if 400 <= err.status < 500:  # the request's fault, told in the upstream's words: its code and param too
        err.code, err.param = (scrub(v, target) if v else None for v in _own_fields(body))
        if err.code is None and status == 400 and _TOO_LONG.search(raw):
            err.code = "context_length_exceeded"  # OpenAI's word, which clients read to trim their history
    return err


# A prompt over the model's context window in the words of the upstreams that have no code for it:
# Anthropic ("prompt is too long: 210000 tokens > 200000 maximum"), Gemini ("The input token count
# (1200000) exceeds the maximum number of tokens allowed (1048576)"), vLLM ("This model's maximum
# context length is 8192 tokens").
_TOO_LONG = re.compile(r"prompt is too long|exceeds the maximum number of tokens|maximum context length", re.I)


def _own_fields(body: bytes) -> Tuple[Optional[str], Optional[str]]:
    """An OpenAI-shaped error's `code` and `param` (`context_length_exceeded`, `messages`), which an OpenAI
    client reads to react (a full context, a bad field); short strings only, as an identifier is."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    err = data.get("error") if isinstance(data, dict) else None
    fields = [err.get(k) if isinstance(err, dict) else None for k in ("code", "param")]
    code, param = (v if isinstance(v, str) and 0 < len(v) <= 128 else None for v in fields)
    return code, param


def _flagged(body: bytes) -> bool:
    """An error body that reports moderation (`error.metadata.reasons` / `flagged_input`, as OpenRouter sends)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    err = data.get("error") if isinstance(data, dict) else None
    meta = err.get("metadata") if isinstance(err, dict) else None
    return isinstance(meta, dict) and (isinstance(meta.get("reasons"), list) or "flagged_input" in meta)


# An error an upstream names inside a 200 answer (a stream's error event, a failed response) → the HTTP
# status it stands for: OpenAI and Anthropic error types, OpenAI codes (the Responses `ResponseError`
# set: all but server_error, rate_limit_exceeded and vector_store_timeout are the request's fault), and
# google.rpc statuses. Unknown names stay a 502.
IN_BAND_STATUS: Dict[str, int] = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403, "not_found_error": 404,
    "request_too_large": 413, "billing_error": 402, "rate_limit_error": 429, "overloaded_error": 529,
    "timeout_error": 504, "api_error": 500, "server_error": 500,
    "rate_limit_exceeded": 429, "insufficient_quota": 429, "invalid_api_key": 401, "model_not_found": 404,
    "context_length_exceeded": 400, "content_policy_violation": 400, "content_filter": 400,
    "vector_store_timeout": 504,
    **{code: 400 for code in (
        "invalid_prompt", "data_residency_mismatch", "bio_policy", "misalignment_policy_violation",
        "invalid_image", "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
        "image_too_small", "image_parse_error", "image_content_policy_violation", "invalid_image_mode",
        "image_file_too_large", "unsupported_image_media_type", "empty_image_file", "failed_to_download_image",
        "image_file_not_found")},
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNKNOWN": 500,
    "DATA_LOSS": 500, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}


def in_band_status(code: Any, *names: Any) -> int:
    """The HTTP status an in-band error stands for: a numeric `code` (OpenRouter's, Google's), else the
    first of `names` (error code, type, google.rpc status) the table knows, else 502."""
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return next((IN_BAND_STATUS[n] for n in (code, *names) if isinstance(n, str) and n in IN_BAND_STATUS), 502)


def in_band_error(status: int, message: str, target: RoutingTarget, *, code: Any = None,
                  retry_after: Optional[float] = None, mid_stream: bool = False) -> UpstreamError:
    """An error reported inside a 200 answer, classified as the HTTP status it stands for would be: a
    client error keeps its 4xx and is not retried on the next target (it would fail there too, and be
    billed), a rate limit or overload stays retriable. `message` is the upstream's own text. `mid_stream`:
    it came inside the upstream's stream, worded so until `before_content` says the client saw none of it."""
    text = f"{target.provider} failed{_MID_STREAM if mid_stream else ''}: {scrub(message, target)}"
    err = _classified(status, text, target, retry_after, code if isinstance(code, str) else None)
    if err.status == 400 and err.code is None and _TOO_LONG.search(message):
        err.code = "context_length_exceeded"  # as for an HTTP 400 (upstream_status_error): clients trim on it
    return err


_MID_STREAM = " mid-stream"


def before_content(err: UpstreamError) -> None:
    """Reword an in-band stream error that came before the client's stream started (the pipeline held the
    upstream's opening, language_model/first_content.py): the client gets an HTTP error or a fallback's
    answer, so for it nothing failed "mid-stream"."""
    prefix = f"{err.provider} failed{_MID_STREAM}: "
    if err.message.startswith(prefix):
        err.message = f"{err.provider} failed: {err.message[len(prefix):]}"
        err.args = (err.message,)


def _classified(status: int, message: str, target: RoutingTarget, retry_after: Optional[float],
                code: Optional[str]) -> UpstreamError:
    if status in (401, 403):
        # The gateway's provider credential is wrong: the client's own key is fine.
        return UpstreamStatusError(
            f"{target.provider} rejected the gateway's credentials (HTTP {status}); check the provider's api_key.",
            provider=target.provider, upstream_status=status, retriable=False, status=502, kind="upstream",
        )
    if status == 429 and code == "insufficient_quota":
        # OpenAI's "out of credit" shares 429 with rate limiting, but waiting will not
        # help (translation.md §10): an Anthropic client sees 402 billing_error.
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=True,
                                   status=429, kind="budget")
    if status == 429:
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=True,
                                   status=429, kind="rate_limit", retry_after=retry_after)
    if status in (503, 529):
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=True,
                                   status=503, kind="overloaded", retry_after=retry_after)
    if status in (408, 504):
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=True,
                                   status=504, kind="timeout")
    if status >= 500:
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=True,
                                   status=502, kind="upstream")
    if status == 402:
        # This provider account is out of credit (DeepSeek's "insufficient balance", OpenRouter, an Anthropic
        # billing_error): the request is fine, and another provider's account may not be.
        return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=True,
                                   status=402, kind="budget")
    kind = {404: "not_found", 413: "request_too_large"}.get(status, "invalid_request")
    return UpstreamStatusError(message, provider=target.provider, upstream_status=status, retriable=False,
                               status=status if 400 <= status < 500 else 502, kind=kind)


def _error_code(body: bytes) -> Optional[str]:
    """OpenAI's `error.code` (or `error.type`) from an error body, if any."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    code = err.get("code") or err.get("type")
    return code if isinstance(code, str) else None


def load_json(body: bytes, target: RoutingTarget) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidUpstreamResponse(f"{target.provider} sent a response that is not JSON",
                                      provider=target.provider) from exc


def client_extras(body: Dict[str, Any], known: Any) -> Dict[str, Any]:
    """A client body's fields the canonical model lacks, carried in `Prompt.extras`.

    Keys starting with "_" are never taken from a client: the codecs keep their
    own bookkeeping under such keys (forwarded headers, server tools, ...), and
    a client that could set them could, for one, choose the upstream's headers.
    """
    return {k: v for k, v in body.items() if k not in known and not k.startswith("_")}


def as_list(value: Any) -> List[Any]:
    """A JSON array field, or nothing: a hostile body's scalar or object is not iterated."""
    return value if isinstance(value, list) else []


def bad_upstream(target: RoutingTarget, what: str) -> InvalidUpstreamResponse:
    return InvalidUpstreamResponse(f"{target.provider} sent an invalid response: {what}", provider=target.provider)


# --- request validation helpers (inbound) ----------------------------------


# An OpenAI-style effort as a thinking budget (translation.md's suggested table), and back.
EFFORT_BUDGET = {"none": 0, "minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
BUDGET_EFFORT = ((1024, "minimal"), (2048, "low"), (8192, "medium"))


def effort_for_budget(budget: int) -> str:
    """The effort for a thinking budget (Anthropic `budget_tokens`, Gemini `thinkingBudget`), one rule for every wire."""
    if budget <= 0:
        return "none"
    return next((effort for limit, effort in BUDGET_EFFORT if budget <= limit), "high")


EFFORT_RANK = {effort: rank for rank, effort in enumerate(("none", "minimal", "low", "medium", "high", "xhigh", "max"))}


def effort_for_target(effort: Optional[str], target: RoutingTarget) -> Optional[str]:
    """The effort to send `target`'s model, by the provider's `reasoning_efforts` option
    ({model or prefix*: [accepted efforts]}): an effort the model does not accept becomes the
    nearest accepted one above it (o3 refuses "minimal": "low" goes), else the highest."""
    table = target.options.get("reasoning_efforts")
    if not effort or not isinstance(table, Mapping) or effort not in EFFORT_RANK:
        return effort
    accepted = table.get(target.model)
    if accepted is None:
        prefixes = [k for k in table if k.endswith("*") and target.model.startswith(k[:-1])]
        accepted = table[max(prefixes, key=len)] if prefixes else None
    if not accepted or effort in accepted:
        return effort
    rank = EFFORT_RANK[effort]
    known = [e for e in accepted if e in EFFORT_RANK]
    above = [e for e in known if EFFORT_RANK[e] > rank]
    if above:
        return min(above, key=EFFORT_RANK.__getitem__)
    return max(known, key=EFFORT_RANK.__getitem__) if known else effort


def described_schema(rf: ResponseFormat) -> Dict[str, Any]:
    """A json_schema format's schema, carrying the format's description as its own when it has none:
    Anthropic's and Gemini's formats have no description field, and the model should still read what
    the answer is for (a JSON Schema `description` is an annotation, not a constraint)."""
    schema = dict(rf.schema or {})
    if rf.description and "description" not in schema:
        schema["description"] = rf.description
    return schema


# The field that holds a client's conversation, by its wire: what a 400 about the conversation names.
_CONVERSATION_FIELD = {"openai_responses": "input", "gemini": "contents"}


def empty_conversation(prompt: Prompt, upstream: str) -> InvalidRequest:
    """The 400 for a conversation of which nothing is left to send `upstream`, a wire that takes no empty
    text (Anthropic, Gemini): every message holds only that, as a Responses `input: ""` does. Raised by its
    encoder, before any call; an upstream would answer a 400 about a field the client never sent."""
    param = _CONVERSATION_FIELD.get(prompt.extras_protocol or "", "messages")
    return InvalidRequest(f"'{param}' holds no content that {upstream} accepts: it rejects empty text, and there "
                          f"is nothing else to send. Put some text in '{param}'.", param=param)


def expect(value: Any, types: Any, param: str, required: bool = False) -> Any:
    """Check a field's JSON type; the error names the parameter."""
    if value is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
        return None
    if isinstance(value, bool) and types in (int, float, (int, float)):
        raise InvalidRequest(f"Invalid type for '{param}': expected {_type_name(types)}, got a boolean.", param=param,
                             code="invalid_type")
    if not isinstance(value, types):
        expected = _type_name(types)
        raise InvalidRequest(f"Invalid type for '{param}': expected {expected}, got {_json_type(value)}.",
                             param=param, code="invalid_type")
    return value


def _type_name(types: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
             dict: "an object"}
    if isinstance(types, tuple):
        if set(types) == {int, float}:
            return "a number"
        return " or ".join(names.get(t, t.__name__) for t in types)
    return names.get(types, types.__name__)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def parse_data_url(url: str, param: Optional[str] = None, code: str = "invalid_data_url") -> Optional[tuple]:
    """`data:<mime>;base64,<payload>` → (mime, payload), or None if not a data URL.
    A data URL that is not base64 is a 400 naming `param` (the field it came in) when given."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        where = f" in '{param}'" if param else ""
        raise InvalidRequest(f"Invalid data URL{where}: only base64 data URLs (data:<media type>;base64,<data>) "
                             "are supported.", param=param, code=code)
    return header[: -len(";base64")] or "application/octet-stream", payload
