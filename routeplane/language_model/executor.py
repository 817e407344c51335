"""Executors call one upstream target: `HttpExecutor` over requests, `MockExecutor` for tests."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import requests
import requests.adapters
import urllib3
import urllib3.connection
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

from ..errors import (
    InvalidRequest,
    InvalidUpstreamResponse,
    RouteplaneError,
    UnsafeUpstreamURL,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeout,
)
from .mock_provider import MockProvider
from .routing import RoutingTarget, Timeouts
from .stream import generation_to_parts
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
        self._adapter = _Transport(pool_connections=16, pool_maxsize=pool_maxsize, max_retries=0)
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
        "ProviderCodec", requests.Response, "_Deadline", "_InFlight"
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
        try:
            # allow_nan=False: NaN/Infinity are not JSON; a provider would reject the whole body.
            body = json.dumps(codec.encode_request(prompt, target, stream), separators=(",", ":"),
                              allow_nan=False).encode("utf-8")
        except ValueError as exc:
            raise InvalidRequest("The request carries a number that is not finite.") from exc
        headers = _with_auth(codec.request_headers(target, prompt), target)
        headers.setdefault("User-Agent", self._user_agent)
        headers["X-Request-Id"] = ctx.request_id
        deadline = _Deadline(target.timeouts)
        if ctx.aborted is not None:  # the worker is shutting down: no new upstream call (a fallback, say)
            raise ctx.aborted
        request = _prepared(url, body, headers, target)
        call = _InFlight()
        ctx.on_abort(call.abort)
        _calling.call = call
        try:
            resp = self._adapter.send(request, stream=True,
                                      timeout=deadline.requests_timeout())
        except Exception as exc:
            call.done = True
            if ctx.aborted is not None:
                raise ctx.aborted from exc  # the worker cut the call (shutdown), not the provider
            raise deadline.translate(exc, target) from exc
        finally:
            _calling.call = None
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
                raw = _read_limited(resp, 64 * 1024, target, deadline, ctx)
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
        return _decode(codec, raw, target)

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
            return generation_to_parts(_decode(codec, raw, target))
        # From here `call.abort` (registered in _post) cuts the stream through `_shutdown(resp)`.
        return _iter_stream(codec, resp, target, deadline, ctx, self._max_stream_bytes)


_calling = threading.local()  # .call: the _InFlight of the upstream call this thread is making


class _InFlight:
    """One upstream call, for `PipelineContext.abort` from another thread (the worker shutting down).

    Until the response arrives, the call's connection is checked out of the
    pool and only this call uses it: shutting its socket down ends a call
    still waiting on a slow upstream. Once a response exists, the connection
    may go back to the pool at the end of its body, so it is cut only while
    the response still holds it (see `_shutdown`).
    """

    __slots__ = ("conn", "resp", "done")

    def __init__(self) -> None:
        self.conn: Any = None
        self.resp: Optional[requests.Response] = None
        self.done = False

    def abort(self) -> None:
        if self.done:
            return
        if self.resp is not None:
            _shutdown(self.resp)
            return
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _ReportingHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        call = getattr(_calling, "call", None)
        if call is not None:
            call.conn = self
        super().request(*args, **kwargs)


class _ReportingHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        call = getattr(_calling, "call", None)
        if call is not None:
            call.conn = self
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _ReportingHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _ReportingHTTPSConnection


class _Transport(requests.adapters.HTTPAdapter):
    """requests' adapter without the per-response cookie jar (a gateway never keeps upstream cookies),
    whose connections tell the calling thread's `_InFlight` which socket the call is using."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url  # type: ignore[assignment]
        response.request = req
        response.connection = self  # type: ignore[attr-defined]
        return response


_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
                              "keep-alive", "proxy-connection", "trailer"})


def _prepared(url: str, body: bytes, headers: Dict[str, str], target: RoutingTarget) -> requests.PreparedRequest:
    """A POST ready for `HTTPAdapter.send`, built without `PreparedRequest.prepare()`.

    `prepare()` re-parses and re-quotes the URL, which the codec built and
    `check_base_url` checked; the body is always bytes with a known length.
    """
    req = requests.PreparedRequest()
    req.method = "POST"
    req.url = url
    req.headers = CaseInsensitiveDict()
    for name, value in headers.items():
        if name.lower() in _FRAMING_HEADERS:
            continue  # the transport owns the message framing: never from a codec, config or client
        try:
            check_header_validity((name, value))  # what Session.prepare checked: no CR/LF, no folding
        except requests.exceptions.InvalidHeader:
            # Client headers reach here already parsed by the server, so this is the provider's config.
            log.warning("provider %s: header %r is not a valid HTTP header; not sent", target.provider, name[:60])
            raise UpstreamError(f"{target.provider}: a configured header is not a valid HTTP header (see the log)",
                                provider=target.provider, retriable=False) from None
        req.headers[name] = value
    req.headers["Content-Length"] = str(len(body))
    req.body = body
    return req


def _decode(codec: "ProviderCodec", raw: bytes, target: RoutingTarget) -> Generation:
    """A provider's JSON body → Generation; anything that is not a valid answer is a 502."""
    from ..protocols.base import load_json

    body = load_json(raw, target)
    try:
        return codec.decode_response(body, target)
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
        sock = _socket_of(resp)
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
        if left is not None and left <= 0.05 and _is_timeout(exc):
            return self.timeout(target)
        return translate_exception(exc, target)


def _socket_of(resp: requests.Response) -> Any:
    """The connection's socket (urllib3 2.x keeps it on the response while the body is unread)."""
    conn = getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:
        fp = getattr(getattr(getattr(resp.raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(fp, "_sock", None)
    return sock


def _with_auth(headers: Dict[str, str], target: RoutingTarget) -> Dict[str, str]:
    """Put the key in the provider's own credential header when the registry or config names one."""
    if not target.auth_header or not target.api_key:
        return headers
    key = target.api_key
    # Drop the codec's default credential header (only a credential header that carries this key).
    out = {k: v for k, v in headers.items() if not (k.lower() in _CREDENTIAL_HEADERS and key in v)}
    out[target.auth_header] = f"{target.auth_prefix}{key}"
    return out


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})


def _shutdown(resp: requests.Response) -> None:
    """Wake a read blocked on this response's socket (from another thread): it sees the end of the stream.

    Only while the response still holds its connection: once urllib3 has
    released it to the pool, the socket may already carry another request.
    """
    raw = resp.raw
    # First make sure this connection can no longer go back to the pool (urllib3
    # returns it at the end of the body); then look whether it still is ours.
    raw._pool = None
    conn = getattr(raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _iter_stream(codec: "ProviderCodec", resp: requests.Response, target: RoutingTarget,
                 deadline: Optional[_Deadline] = None, ctx: Optional["PipelineContext"] = None,
                 limit: Optional[int] = None) -> Iterator[StreamPart]:
    from ..protocols.sse import SSEParser

    decoder = codec.stream_decoder(target)
    parser = SSEParser()
    left = limit if limit is not None else -1
    try:
        try:
            if deadline is not None:
                deadline.before_read(resp, target)
            for chunk in _pieces(resp):
                if left >= 0:
                    left -= len(chunk)
                    if left < 0:  # a runaway stream: end it rather than relay (and bill) without bound
                        raise InvalidUpstreamResponse(f"{target.provider} sent a stream over {limit} bytes",
                                                      provider=target.provider)
                for event in parser.feed(chunk):
                    yield from decoder.feed(event)
                if deadline is not None:
                    deadline.before_read(resp, target)
            if ctx is not None and ctx.aborted is not None:
                raise ctx.aborted  # the cut looked like a clean end: a half event must not be blamed on the provider
            for event in parser.finish():
                yield from decoder.feed(event)
        except RouteplaneError as err:
            if ctx is not None and ctx.aborted is not None and err is not ctx.aborted:
                raise ctx.aborted from err  # the gateway cut it (shutdown), not the provider
            raise
        except Exception as exc:  # a transport error while iterating the stream
            if ctx is not None and ctx.aborted is not None:
                raise ctx.aborted from exc
            raise (deadline.translate(exc, target) if deadline else translate_exception(exc, target)) from exc
        yield from decoder.finish()
    finally:
        resp.close()


STREAM_READ_BYTES = 65536


def _pieces(resp: requests.Response) -> Iterator[bytes]:
    """A streamed body as it arrives, at most STREAM_READ_BYTES per read.

    `iter_content(chunk_size=None)` reads a body without chunked framing
    (a stream ended by closing the connection) until EOF in one call: nothing
    would be relayed until the upstream finished, and a byte limit could only
    be checked after all of it was in memory.
    """
    read1 = resp.raw.read1
    while True:
        data = read1(STREAM_READ_BYTES, decode_content=True)
        if not data:
            return
        yield data


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
        if ctx is not None and ctx.aborted is not None:
            raise ctx.aborted from exc  # the worker cut the call (shutdown), not the provider
        raise (deadline.translate(exc, target) if deadline else translate_exception(exc, target)) from exc
    if ctx is not None and ctx.aborted is not None:
        raise ctx.aborted  # cut mid-body: a truncated answer is not an answer
    return b"".join(chunks)


_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def _is_timeout(exc: BaseException) -> bool:
    """requests reports a read timeout inside a streamed body as ConnectionError(ReadTimeoutError),
    so the cause chain and the wrapped first argument are searched too."""
    cur: Optional[BaseException] = exc
    for _ in range(6):
        if cur is None or isinstance(cur, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
            return False  # urllib3's NewConnectionError subclasses ConnectTimeoutError for history's sake
        if isinstance(cur, _TIMEOUTS):
            return True
        if cur.args and isinstance(cur.args[0], _TIMEOUTS) and not isinstance(
                cur.args[0], urllib3.exceptions.NewConnectionError):
            return True
        reason = getattr(cur, "reason", None)  # MaxRetryError carries the real cause here
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
    return False


def translate_exception(exc: BaseException, target: RoutingTarget) -> UpstreamError:
    """The one place where requests/urllib3 exceptions become gateway errors."""
    name = target.provider
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return UpstreamConnectionError(f"{name}: invalid base URL", provider=name, retriable=False)
    if isinstance(exc, (requests.exceptions.ConnectTimeout,)):
        return UpstreamTimeout(f"{name}: connection timed out", provider=name)
    if _is_timeout(exc):
        return UpstreamTimeout(f"{name}: no data within the read timeout", provider=name)
    if isinstance(exc, requests.exceptions.Timeout):
        return UpstreamTimeout(f"{name}: timed out", provider=name)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                        requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return InvalidUpstreamResponse(f"{name}: the connection broke while reading the response", provider=name)
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, OSError, urllib3.exceptions.SSLError)):
        return UpstreamConnectionError(f"{name}: could not connect or the connection was reset", provider=name)
    return UpstreamError(f"{name}: {type(exc).__name__}", provider=name)


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
