"""Executors call one upstream target: `HttpExecutor` (over requests, see transport.py), `MockExecutor` for tests."""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import requests

from ..errors import (
    InvalidRequest,
    InvalidUpstreamResponse,
    RouteplaneError,
    UnsafeUpstreamURL,
    UpstreamError,
    UpstreamTimeout,
)
from .capability import refuse
from .mock_provider import MockProvider
from .routing import RoutingTarget, Timeouts
from .stream import generation_to_parts
from .transport import (
    InFlight,
    Transport,
    is_timeout,
    prepared_request,
    read_pieces,
    reporting_to,
    socket_of,
    translate_exception,
)
from .types import Generation, Prompt, StreamPart
from .url_safety import UnsafeURL, check_base_url

if TYPE_CHECKING:  # pragma: no cover
    from ..protocols.base import ProviderCodec
    from .context import PipelineContext

log = logging.getLogger("routeplane.executor")


class Executor(ABC):
    """Calls one target. Raises UpstreamError subclasses, never library exceptions."""

    @abstractmethod
    def complete(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Generation: ...

    @abstractmethod
    def stream(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Iterator[StreamPart]:
        """Opens the stream (the handshake happens before this returns) and
        returns an iterator of canonical parts that closes the connection on close()."""


class HttpExecutor(Executor):
    """requests-based executor: one transport adapter (urllib3 pools) shared by every worker thread.

    The call goes straight to requests' `HTTPAdapter.send` with a request
    built here, not through `Session.post`: the Session layer (settings
    merging, cookie jars, hooks, redirects, URL re-preparation) cost more CPU
    than the rest of the gateway and does nothing a gateway wants — upstream
    cookies must never be shared between callers, redirects are not followed.
    The adapter's urllib3 PoolManager is thread-safe; `pool_maxsize` bounds
    the idle keep-alive connections kept per upstream host (size it like the
    worker's thread count: one open stream holds one connection).
    """

    def __init__(
        self,
        codecs: Optional[Dict[str, "ProviderCodec"]] = None,
        *,
        pool_maxsize: int = 256,
        max_response_bytes: int = 64 * 1024 * 1024,
        max_stream_bytes: int = 256 * 1024 * 1024,
        user_agent: str = "routeplane",
    ) -> None:
        if codecs is None:
            from ..protocols import provider_codecs

            codecs = provider_codecs()
        self._codecs = codecs
        self._adapter = Transport(pool_connections=16, pool_maxsize=pool_maxsize, max_retries=0)
        self._max_response_bytes = max_response_bytes
        self._max_stream_bytes = max_stream_bytes
        self._user_agent = user_agent
        self._mock = MockProvider()

    @classmethod
    def with_defaults(cls) -> "HttpExecutor":
        return cls()

    def close(self) -> None:
        """Close the pooled upstream connections (tests, worker shutdown)."""
        self._adapter.close()

    def _codec(self, target: RoutingTarget) -> "ProviderCodec":
        codec = self._codecs.get(target.protocol)
        if codec is None:
            raise UpstreamError(f"No codec for protocol {target.protocol!r}", provider=target.provider, retriable=False)
        return codec

    def _post(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext", stream: bool) -> Tuple[
        "ProviderCodec", requests.Response, "_Deadline", "InFlight"
    ]:
        codec = self._codec(target)
        url = codec.url(target, stream)
        try:
            # Checked on every call, not only at config load: a route hook may
            # have rewritten the target's base URL.
            check_base_url(url, target.url_policy)
        except UnsafeURL as exc:
            log.warning("refused upstream URL for provider %s: %s", target.provider, exc)
            raise UnsafeUpstreamURL(
                f"{target.provider}: the upstream URL was refused by the URL safety policy (see the gateway log).",
                provider=target.provider,
            ) from None
        refuse(prompt, target)  # a prefill it cannot continue, a file id it cannot read
        if not native_custom_tools(codec, target):
            from ..protocols.custom_tools import function_form

            prompt = function_form(prompt)  # OpenAI custom tools, as functions of one string
        from ..protocols.schema_root import object_root

        prompt = object_root(prompt, codec.protocol)  # a structured-output schema the wire takes only in an object
        try:
            # allow_nan=False: NaN/Infinity are not JSON; a provider would reject the whole body.
            body = json.dumps(codec.encode_request(prompt, target, stream), separators=(",", ":"),
                              allow_nan=False).encode("utf-8")
        except ValueError as exc:
            raise InvalidRequest("The request carries a number that is not finite.") from exc
        headers = with_auth(codec.request_headers(target, prompt), target)
        headers.setdefault("User-Agent", self._user_agent)
        headers["X-Request-Id"] = ctx.request_id
        deadline = _Deadline(target.timeouts)
        _raise_if_aborted(ctx)  # the worker is shutting down: no new upstream call (a fallback, say)
        request = prepared_request(url, body, headers, target)
        call = InFlight()
        ctx.on_abort(call.abort)
        try:
            with reporting_to(call):
                resp = self._adapter.send(request, stream=True, timeout=deadline.requests_timeout())
        except Exception as exc:
            call.done = True
            _raise_if_aborted(ctx, exc)
            raise deadline.translate(exc, target) from exc
        call.resp = resp
        if 300 <= resp.status_code < 400:
            # Not followed: a redirect would carry the provider key to wherever Location points.
            status = resp.status_code
            call.done = True
            resp.close()
            raise UpstreamError(f"{target.provider}: the upstream answered with a redirect (HTTP {status}); "
                                "set the provider's base_url to the final address", provider=target.provider,
                                retriable=False)
        if resp.status_code >= 400:
            try:
                raw = _read_error_body(resp, ERROR_BODY_BYTES, target, deadline, ctx)
            finally:
                call.done = True
                resp.close()
            raise codec.decode_error(resp.status_code, raw, resp.headers, target)
        return codec, resp, deadline, call

    def complete(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Generation:
        if target.protocol == "mock":
            return self._mock.complete(target, prompt)
        codec, resp, deadline, call = self._post(target, prompt, ctx, stream=False)
        try:
            raw = _read_limited(resp, self._max_response_bytes, target, deadline, ctx)
        finally:
            call.done = True
            resp.close()
        return _decode(codec, raw, target, prompt)

    def stream(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Iterator[StreamPart]:
        if target.protocol == "mock":
            return self._mock.stream(target, prompt)
        codec, resp, deadline, call = self._post(target, prompt, ctx, stream=True)
        ctype = resp.headers.get("Content-Type", "")
        if "json" in ctype and "event-stream" not in ctype:
            # Some servers answer a stream request with one JSON body.
            try:
                raw = _read_limited(resp, self._max_response_bytes, target, deadline, ctx)
            finally:
                call.done = True
                resp.close()
            return generation_to_parts(_decode(codec, raw, target, prompt))
        if "html" in ctype.lower():
            # A proxy's or portal's page with a success status: say so, rather than blame the stream's
            # missing terminator. (Other types pass: some servers label a real event stream oddly.)
            call.done = True
            resp.close()
            raise InvalidUpstreamResponse(f"{target.provider} answered the stream request with an HTML page "
                                          f"(HTTP {resp.status_code}), not an event stream", provider=target.provider)
        # From here `call.abort` (registered in _post) cuts the stream through `shutdown_response(resp)`.
        from ..protocols.custom_tools import restore_stream
        from ..protocols.schema_root import unwrap_stream

        marks = _Marks()
        raw = _iter_stream(codec, resp, target, deadline, ctx, self._max_stream_bytes, marks)
        parts = unwrap_stream(raw, prompt, codec.protocol)
        if not native_custom_tools(codec, target):
            # The wire got custom tools as functions: their calls go back to the client as custom calls.
            parts = restore_stream(parts, prompt)
        if parts is raw:
            # Nothing between the upstream and the pipeline that could swallow a part and pull the
            # next one: the pipeline may trust the marks to batch writes (pipeline_stream.py).
            marks.ctx = ctx
        return parts


def _decode(codec: "ProviderCodec", raw: bytes, target: RoutingTarget, prompt: Prompt) -> Generation:
    """A provider's JSON body → Generation; anything that is not a valid answer is a 502."""
    from ..protocols.base import load_json
    from ..protocols.custom_tools import restore_calls
    from ..protocols.schema_root import unwrap

    body = load_json(raw, target)
    try:
        gen = unwrap(codec.decode_response(body, target), prompt, codec.protocol)
        # A wire without custom tools got them as functions: their calls go back as custom calls.
        return gen if native_custom_tools(codec, target) else restore_calls(gen, prompt)
    except RouteplaneError:
        raise
    except Exception as exc:  # a shape the codec did not expect: logged, since it may be a codec bug
        log.exception("decoding %s's response failed", target.provider)
        raise InvalidUpstreamResponse(f"{target.provider} sent a response this gateway cannot read",
                                      provider=target.provider) from exc


class _Deadline:
    """One upstream call's timeouts: requests' (connect, read) plus the optional total cap.

    requests applies its read timeout to each socket read, so it is already an
    idle timeout. The total cap has no requests equivalent: it is enforced by
    shrinking the socket's timeout to the time left before each read, and by a
    check after every chunk.
    """

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.expires = time.monotonic() + timeouts.total if timeouts.total else None

    def remaining(self) -> Optional[float]:
        return None if self.expires is None else self.expires - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def read_timeout(self) -> float:
        left = self.remaining()
        return self.timeouts.read if left is None else max(0.001, min(self.timeouts.read, left))

    def requests_timeout(self) -> Tuple[float, float]:
        left = self.remaining()
        connect = self.timeouts.connect if left is None else max(0.001, min(self.timeouts.connect, left))
        return connect, self.read_timeout()

    def before_read(self, resp: requests.Response, target: RoutingTarget) -> None:
        if self.expires is None:
            return
        if self.expired():
            raise self.timeout(target)
        sock = socket_of(resp)
        if sock is not None:
            try:
                sock.settimeout(self.read_timeout())
            except OSError:
                pass

    def timeout(self, target: RoutingTarget) -> UpstreamTimeout:
        return UpstreamTimeout(f"{target.provider}: the call took longer than the total timeout "
                               f"({self.timeouts.total:g} s)", provider=target.provider)

    def translate(self, exc: BaseException, target: RoutingTarget) -> UpstreamError:
        left = self.remaining()
        # The socket timeout was shrunk to the time left, so a timeout at (about) zero is the total cap.
        if left is not None and left <= 0.05 and is_timeout(exc):
            return self.timeout(target)
        return translate_exception(exc, target)


def native_custom_tools(codec: "ProviderCodec", target: RoutingTarget) -> bool:
    """Whether the target takes OpenAI custom tools as they are: the provider option `custom_tools`,
    else its wire's default (Responses yes; Chat only where the registry says so, since
    OpenAI-compatible servers take function tools only). Otherwise they go as functions of one string."""
    option = target.options.get("custom_tools")
    return codec.custom_tools if option is None else bool(option)


def with_auth(headers: Dict[str, str], target: RoutingTarget) -> Dict[str, str]:
    """Put the key in the provider's own credential header when the registry or config names one."""
    if not target.auth_header or not target.api_key:
        return headers
    key = target.api_key
    # Drop the codec's default credential header (only a credential header that carries this key).
    out = {k: v for k, v in headers.items() if not (k.lower() in _CREDENTIAL_HEADERS and key in v)}
    out[target.auth_header] = f"{target.auth_prefix}{key}"
    return out


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})


class _Marks:
    """Where `_iter_stream` marks `upstream_buffered`: the request's context once the executor knows
    nothing rewrites the stream on its way to the pipeline, else nowhere."""

    __slots__ = ("ctx",)

    def __init__(self) -> None:
        self.ctx: Optional["PipelineContext"] = None


def _iter_stream(codec: "ProviderCodec", resp: requests.Response, target: RoutingTarget,
                 deadline: Optional[_Deadline] = None, ctx: Optional["PipelineContext"] = None,
                 limit: Optional[int] = None, marks: Optional[_Marks] = None) -> Iterator[StreamPart]:
    from ..protocols.sse import SSEParser

    decoder = codec.stream_decoder(target)
    parser = SSEParser(provider=target.provider)  # its size-limit error names the provider
    left = limit if limit is not None else -1
    mark = marks.ctx if marks is not None else None
    try:
        try:
            if deadline is not None:
                deadline.before_read(resp, target)
            for chunk in read_pieces(resp):
                if left >= 0:
                    left -= len(chunk)
                    if left < 0:  # a runaway stream: end it rather than relay (and bill) without bound
                        raise InvalidUpstreamResponse(f"{target.provider} sent a stream over {limit} bytes",
                                                      provider=target.provider)
                if mark is None:
                    for event in parser.feed(chunk):
                        yield from decoder.feed(event)
                else:
                    yield from _marked(parser.feed(chunk), decoder, mark)
                if deadline is not None:
                    deadline.before_read(resp, target)
            _raise_if_aborted(ctx)  # the cut looked like a clean end: a half event must not be blamed on the provider
            for event in parser.finish():
                yield from decoder.feed(event)
        except RouteplaneError as err:
            _raise_if_aborted(ctx, err)
            raise
        except Exception as exc:  # a transport error while iterating the stream
            _raise_if_aborted(ctx, exc)
            raise (deadline.translate(exc, target) if deadline else translate_exception(exc, target)) from exc
        yield from decoder.finish()
    finally:
        if mark is not None:
            mark.upstream_buffered = False
        resp.close()


def _marked(events: Iterable[Any], decoder: Any, mark: "PipelineContext") -> Iterator[StreamPart]:
    """The parts of one upstream read, with `mark.upstream_buffered` true while more of them follow."""
    batch: List[StreamPart] = []
    try:
        for event in events:
            batch.extend(decoder.feed(event))
    except BaseException:
        yield from batch  # what decoded before the failure still goes first, as it would unbatched
        raise
    last = len(batch) - 1
    for i, part in enumerate(batch):
        mark.upstream_buffered = i < last
        yield part


def _raise_if_aborted(ctx: Optional["PipelineContext"], cause: Optional[BaseException] = None) -> None:
    """When the worker cut this request (shutdown), its reason is the error, whatever the read saw:
    the provider is not to blame for a socket the gateway shut down."""
    if ctx is not None and ctx.aborted is not None and ctx.aborted is not cause:
        raise ctx.aborted from cause


def _read_limited(resp: requests.Response, limit: int, target: RoutingTarget,
                  deadline: Optional[_Deadline] = None, ctx: Optional["PipelineContext"] = None) -> bytes:
    chunks: List[bytes] = []
    size = 0
    try:
        if deadline is not None:
            deadline.before_read(resp, target)
        for chunk in resp.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > limit:
                raise InvalidUpstreamResponse(f"{target.provider} sent a response over {limit} bytes",
                                              provider=target.provider)
            chunks.append(chunk)
            if deadline is not None:
                deadline.before_read(resp, target)
    except RouteplaneError:
        raise
    except Exception as exc:
        _raise_if_aborted(ctx, exc)
        raise (deadline.translate(exc, target) if deadline else translate_exception(exc, target)) from exc
    _raise_if_aborted(ctx)  # cut mid-body: a truncated answer is not an answer
    return b"".join(chunks)


ERROR_BODY_BYTES = 64 * 1024


def _read_error_body(resp: requests.Response, limit: int, target: RoutingTarget, deadline: "_Deadline",
                     ctx: Optional["PipelineContext"] = None) -> bytes:
    """At most `limit` bytes of an error answer's body. The status line is the verdict (a 400 must not
    fall back, a 429 keeps its Retry-After); the body only explains it, so a long one (a provider echoing
    the prompt) is cut, and one that breaks, stalls or outlives the total timeout leaves what arrived."""
    chunks: List[bytes] = []
    size = 0
    try:
        deadline.before_read(resp, target)
        for chunk in resp.iter_content(chunk_size=8192):
            chunks.append(chunk[:limit - size])
            size += len(chunks[-1])
            if size >= limit:
                break
            deadline.before_read(resp, target)
    except Exception as exc:  # noqa: BLE001 - a body cut short still carries the status
        _raise_if_aborted(ctx, exc)
    _raise_if_aborted(ctx)
    return b"".join(chunks)


# --- scripted executor for tests ---------------------------------------------

Script = Union[Generation, List[StreamPart], RouteplaneError, Callable[[RoutingTarget, Prompt], Any]]


@dataclass(frozen=True)
class RecordedCall:
    target: RoutingTarget
    prompt: Prompt
    stream: bool


class MockExecutor(Executor):
    """Answers from a script, per provider or in order; records every call.

    A script item is a Generation, a list of StreamParts (for streams; a
    RouteplaneError inside the list is raised at that point, mid-stream), an
    error to raise at the handshake, or a callable(target, prompt) returning
    one of those. With nothing scripted it answers like the `mock` provider.
    """

    def __init__(self, script: Iterable[Script] = (), *, per_provider: Optional[Dict[str, Iterable[Script]]] = None,
                 delay: float = 0.0) -> None:
        self._queue: Deque[Script] = deque(script)
        self._per_provider: Dict[str, Deque[Script]] = {k: deque(v) for k, v in (per_provider or {}).items()}
        self._lock = threading.Lock()
        self._mock = MockProvider()
        self.delay = delay
        self.calls: List[RecordedCall] = []

    def push(self, item: Script, provider: Optional[str] = None) -> None:
        with self._lock:
            (self._per_provider.setdefault(provider, deque()) if provider else self._queue).append(item)

    def _next(self, target: RoutingTarget, prompt: Prompt, stream: bool) -> Optional[Any]:
        with self._lock:
            self.calls.append(RecordedCall(target, prompt, stream))
            q = self._per_provider.get(target.provider)
            item = q.popleft() if q else (self._queue.popleft() if self._queue else None)
        if self.delay:
            time.sleep(self.delay)
        if callable(item) and not isinstance(item, (Generation, list, RouteplaneError)):
            item = item(target, prompt)
        if isinstance(item, RouteplaneError):
            raise item
        return item

    def complete(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Generation:
        item = self._next(target, prompt, False)
        if item is None:
            return self._mock.complete(target, prompt)
        if isinstance(item, list):
            from .stream import GenerationAccumulator

            acc = GenerationAccumulator()
            for p in item:
                if isinstance(p, RouteplaneError):
                    raise p
                acc.add(p)
            return acc.generation()
        return item

    def stream(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Iterator[StreamPart]:
        item = self._next(target, prompt, True)
        if item is None:
            return self._mock.stream(target, prompt)
        if isinstance(item, Generation):
            return generation_to_parts(item)
        return _scripted(item)


def _scripted(items: List[Any]) -> Iterator[StreamPart]:
    for p in items:
        if isinstance(p, BaseException):
            raise p
        yield p
