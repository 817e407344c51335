"""What every wire blueprint shares: body parsing, request ids, running the pipeline, streaming."""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional
from urllib.parse import quote

from flask import Response, current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import ClosingIterator

from ..errors import (
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    RouteplaneError,
    StreamAborted,
    UnsupportedMediaType,
    retry_cannot_help,
)
from ..ids import new_hex
from ..language_model.context import PipelineContext
from ..language_model.pipeline_stream import END, FLUSH, PipelineStream
from ..logs import redact
from ..protocols.base import ClientCodec

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App
    from ..lifecycle import Lifecycle

log = logging.getLogger("routeplane.web")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def request_id() -> str:
    """An inbound `x-request-id` is honoured when it is sane and no credential (a client that put its key
    there would find it in the spend log, the request log and every error); otherwise a new one."""
    rid = request.headers.get("x-request-id", "")
    return rid if _REQUEST_ID.match(rid) and redact(rid) == rid else "req_" + new_hex()


def _reject_constant(name: str) -> Any:
    raise InvalidRequest(f"Invalid JSON: {name} is not a JSON value.")


_LONG_DIGITS = re.compile(r"\d{301}")


def _float_sized_int(text: str) -> int:
    # An integer past a float's range (309+ digits) breaks every number field and no
    # upstream takes it; past 4300 digits int() itself refuses it (CVE-2020-10735).
    if len(text) > 300 and math.isinf(float(text)):
        raise InvalidRequest(f"Invalid JSON: the number {text[:40]}... is out of range.")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 parses to inf, which no upstream accepts as JSON
        raise InvalidRequest(f"Invalid JSON: the number {text[:40]} is out of range.")
    return value


# Strings (escapes included) and brackets: the only tokens that decide nesting.
_NESTING_TOKENS = re.compile(r'"(?:[^"\\]+|\\.)*"|[\[\]{}]')
DEFAULT_MAX_JSON_DEPTH = 64


def check_json_depth(text: str, max_depth: int) -> None:
    """Refuse a body nested deeper than `max_depth` before json.loads recurses into it."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper: skip the scan (most bodies)
    depth = 0
    for m in _NESTING_TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > max_depth:
                raise InvalidRequest(f"The request body is nested more than {max_depth} levels deep.",
                                     code="too_deeply_nested")
        elif c in "]}":
            depth -= 1


def _limits() -> Any:
    """The gateway's `limits` config via the Flask app's extensions (None outside a gateway app)."""
    gateway = current_app.extensions.get("routeplane") if current_app else None
    return gateway.config.limits if gateway is not None else None


def read_json_body(limit: int) -> Any:
    """The request body as JSON, enforcing content type, size, UTF-8 and syntax (all 4xx)."""
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json (got {request.mimetype or 'none'}).", code="unsupported_media_type"
        )
    encoding = request.headers.get("Content-Encoding")
    if encoding and encoding.strip().lower() != "identity":
        # Read as is, a compressed body was "not valid UTF-8"; inflating it would let a small body
        # expand past every limit. No SDK of the four wires compresses its requests.
        raise UnsupportedMediaType(f"Content-Encoding {encoding.strip()!r} is not supported: send the body "
                                   "uncompressed.", code="unsupported_media_type")
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The request body is {length} bytes; the limit is {limit}.", code="request_too_large")
    try:
        raw = request.stream.read(limit + 1)
    except RequestEntityTooLarge:
        # A host app's own MAX_CONTENT_LENGTH (mounted mode) is smaller than ours.
        raise PayloadTooLarge("The request body exceeds the server's size limit.", code="request_too_large") from None
    except ClientDisconnected:
        raise InvalidRequest("The client disconnected before sending the whole body.") from None
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.", code="request_too_large")
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """A request body's bytes as JSON under the gateway's rules (UTF-8, `limits.max_json_depth` checked
    before decoding, no NaN/Infinity, no number past a float), every refusal an InvalidRequest."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.") from None
    limits = _limits()
    check_json_depth(text, limits.max_json_depth if limits is not None else DEFAULT_MAX_JSON_DEPTH)
    try:
        # The integer check only when a 301-digit run exists: a hook per integer costs on integer-heavy bodies.
        parse_int = _float_sized_int if _LONG_DIGITS.search(text) else None
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=parse_int)
    except RouteplaneError:
        raise
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except ValueError:
        raise InvalidRequest("The request body is not valid JSON: a value is out of range.") from None


def bearer_token(headers: Mapping[str, str]) -> Optional[str]:
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def error_response(err: RouteplaneError, render: Callable[[RouteplaneError], Dict[str, Any]], rid: str) -> Response:
    body = render(err)
    if body.get("type") == "error" and "request_id" not in body:
        # Anthropic's shape (the only one with a top-level type) names the request beside the error,
        # whichever path rendered it (an unrouted path, the auth guard, /v1/models).
        body["request_id"] = rid
    resp = Response(json.dumps(body), status=err.status, mimetype="application/json")
    resp.headers["x-request-id"] = rid
    if err.retry_after is not None and math.isfinite(err.retry_after):
        resp.headers["Retry-After"] = str(max(0, math.ceil(err.retry_after)))
    if err.status >= 500 and retry_cannot_help(err):
        # The gateway's own provider key was refused, or a target URL is forbidden: the OpenAI and
        # Anthropic SDKs retry every 5xx unless told not to, and a retry cannot fix either.
        resp.headers["x-should-retry"] = "false"
    return resp


def run_language_model(
    app: "App",
    codec: ClientCodec,
    body: Any,
    rid: str,
    credential: Optional[str],
    inbound_protocol: Optional[str] = None,
) -> Response:
    """Decode, run the pipeline, and render the result (JSON or SSE) in the codec's wire."""
    headers = dict(request.headers)
    for intercept in app.transport_interceptors:
        headers, body = intercept(headers, body)
    prompt = codec.decode_request(body)
    limits = app.config.limits
    check_prompt_size(prompt, limits)
    ctx = PipelineContext(rid, inbound_protocol or codec.protocol, prompt, headers, credential=credential)
    release = _open_stream_slot(app, limits) if prompt.stream else None
    # Near the end of a graceful shutdown, close_streams() interrupts this request's
    # upstream call wherever it is (waiting for an answer, or mid-stream), so it ends
    # with a shutting_down error and is settled instead of dying in the SIGKILL.
    unregister: Optional[Callable[[], None]] = None
    if app.lifecycle is not None:
        unregister = functools.partial(app.lifecycle.unregister,
                                       app.lifecycle.register(lambda: ctx.abort(shutting_down())))
    try:
        result = app.pipeline.run(ctx)
        target = ctx.target
        if isinstance(result, PipelineStream):
            # ClosingIterator: the server's close() reaches the pipeline stream (settlement, upstream
            # close) and frees the stream slot even when the body generator never started because
            # the client was already gone.
            closers = [result.close] + [c for c in (release, unregister) if c is not None]
            body = ClosingIterator(_sse_body(codec, ctx, result, app.lifecycle), closers)
            release = unregister = None  # the body owns them now
            resp = Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
        else:
            resp = Response(json.dumps(codec.encode_response(result, ctx.prompt)), mimetype="application/json")
    finally:
        if release is not None:
            release()
        if unregister is not None:
            unregister()
    resp.headers["x-request-id"] = rid
    if target is not None:
        resp.headers["x-routeplane-target"] = header_value(target.label)
    return resp


MAX_MODEL_CHARS = 256


def header_value(text: str) -> str:
    """`text` as a header value: printable ASCII as it is, anything else percent-encoded (a model a
    route hook or provider names may hold any character; a header may not)."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=_HEADER_SAFE)


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def check_prompt_size(prompt: Any, limits: Any) -> None:
    """Counts a decoded request may not exceed (config `limits`): 400 naming the limit."""
    model = prompt.model
    if len(model) > MAX_MODEL_CHARS or not model.isprintable():
        # A model name is echoed in errors, log lines and a response header: bounded and on one line.
        raise InvalidRequest(f"'model' must be at most {MAX_MODEL_CHARS} printable characters.", param="model")
    if len(prompt.messages) > limits.max_messages:
        raise InvalidRequest(f"The request has {len(prompt.messages)} messages; the limit is {limits.max_messages}.",
                             param="messages", code="too_many_messages")
    if len(prompt.tools) > limits.max_tools:
        raise InvalidRequest(f"The request declares {len(prompt.tools)} tools; the limit is {limits.max_tools}.",
                             param="tools", code="too_many_tools")
    parts = sum(len(m.parts) for m in prompt.messages) + len(prompt.system)
    if parts > limits.max_parts:
        raise InvalidRequest(f"The request has {parts} content parts; the limit is {limits.max_parts}.",
                             param="messages", code="too_many_parts")


def _open_stream_slot(app: "App", limits: Any) -> Callable[[], None]:
    """Take one of the worker's open-stream slots or refuse with 429; the result frees it once."""
    if not app.lifecycle.try_open_stream(limits.max_open_streams):
        raise RateLimited(f"This gateway worker has {limits.max_open_streams} streams open; retry shortly.",
                          code="too_many_streams", retry_after=limits.stream_retry_after)
    released = []

    def release() -> None:
        if not released:
            released.append(True)
            app.lifecycle.stream_closed()

    return release


def shutting_down() -> StreamAborted:
    """The error a stream ends with when the worker's graceful time is nearly over."""
    return StreamAborted("The gateway is shutting down; retry the request.", status=503, kind="overloaded",
                         code="shutting_down")


def _sse_body(codec: ClientCodec, ctx: PipelineContext, stream: PipelineStream,
              lifecycle: Optional["Lifecycle"] = None) -> Iterator[bytes]:
    # Everything the generator needs comes in as arguments: it runs after the
    # view returned, outside Flask's request context.
    encoder = codec.stream_encoder(ctx.prompt)
    closing = lifecycle.closing if lifecycle is not None else None
    cut: Optional[RouteplaneError] = None  # set when the gateway, not the client, ends the stream
    # Encoded events wait here until the pipeline's FLUSH says its next part may be a network wait
    # away: what arrived from the upstream in one read leaves in one write (pipeline_stream.py).
    # At END the end frames join them, and the pipeline settles only when the server pulls again
    # after that write; if the write fails, gunicorn closes this generator at its yield instead,
    # and the close settles the request as a client that left.
    pending: List[bytes] = []
    try:
        try:
            for part in stream.with_flushes():
                if part is FLUSH or part is END:
                    end = encoder.close() if part is END else b""
                    if end:
                        pending.append(end)
                    if pending:
                        yield pending[0] if len(pending) == 1 else b"".join(pending)
                        pending.clear()
                    continue
                if closing is not None and closing.is_set():
                    # The worker's graceful_timeout is nearly over: end this stream
                    # with an error event now (settled by stream.close()) rather
                    # than be cut without settlement by the master's SIGKILL.
                    cut = shutting_down()
                    pending.append(encoder.error(cut))
                    break
                data = encoder.encode(part)
                if data:
                    pending.append(data)
        except RouteplaneError as err:
            pending.append(encoder.error(err))
        except Exception:
            log.exception("encoding the stream of request %s failed", ctx.request_id)
            cut = InternalError()
            pending.append(encoder.error(cut))
        tail = b"".join(pending)
        if tail:
            yield tail
    finally:
        stream.close(cut)
