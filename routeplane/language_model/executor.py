"""Executors call one upstream target: `HttpExecutor` over requests, `MockExecutor` for tests."""

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
import urllib3

from ..errors import (
    InvalidUpstreamResponse,
    RouteplaneError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeout,
)
from .mock_provider import MockProvider
from .routing import RoutingTarget
from .stream import generation_to_parts
from .types import Generation, Prompt, StreamPart

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
    """requests-based executor: one pooled Session per worker thread.

    requests' Session is not documented as thread-safe, so each gunicorn
    thread gets its own; `pool_maxsize` bounds connections per host per thread.
    """

    def __init__(
        self,
        codecs: Optional[Dict[str, "ProviderCodec"]] = None,
        *,
        pool_maxsize: int = 16,
        max_response_bytes: int = 64 * 1024 * 1024,
        user_agent: str = "routeplane",
    ) -> None:
        if codecs is None:
            from ..protocols import provider_codecs

            codecs = provider_codecs()
        self._codecs = codecs
        self._local = threading.local()
        self._pool_maxsize = pool_maxsize
        self._max_response_bytes = max_response_bytes
        self._user_agent = user_agent
        self._mock = MockProvider()

    @classmethod
    def with_defaults(cls) -> "HttpExecutor":
        return cls()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=self._pool_maxsize, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = False  # no surprise proxies from the environment
            self._local.session = session
        return session

    def _codec(self, target: RoutingTarget) -> "ProviderCodec":
        codec = self._codecs.get(target.protocol)
        if codec is None:
            raise UpstreamError(f"No codec for protocol {target.protocol!r}", provider=target.provider, retriable=False)
        return codec

    def _post(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext", stream: bool) -> Tuple[
        "ProviderCodec", requests.Response
    ]:
        codec = self._codec(target)
        body = json.dumps(codec.encode_request(prompt, target, stream), separators=(",", ":")).encode("utf-8")
        headers = codec.headers(target)
        headers.setdefault("User-Agent", self._user_agent)
        headers["X-Request-Id"] = ctx.request_id
        url = codec.url(target, stream)
        t = target.timeouts
        try:
            resp = self._session().post(url, data=body, headers=headers, timeout=(t.connect, t.read), stream=True)
        except Exception as exc:
            raise translate_exception(exc, target) from exc
        if resp.status_code >= 400:
            try:
                raw = _read_limited(resp, 64 * 1024, target)
            finally:
                resp.close()
            raise codec.decode_error(resp.status_code, raw, resp.headers, target)
        return codec, resp

    def complete(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Generation:
        if target.protocol == "mock":
            return self._mock.complete(target, prompt)
        codec, resp = self._post(target, prompt, ctx, stream=False)
        try:
            raw = _read_limited(resp, self._max_response_bytes, target)
        finally:
            resp.close()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidUpstreamResponse(f"{target.provider} sent a response that is not JSON",
                                          provider=target.provider) from exc
        return codec.decode_response(body, target)

    def stream(self, target: RoutingTarget, prompt: Prompt, ctx: "PipelineContext") -> Iterator[StreamPart]:
        if target.protocol == "mock":
            return self._mock.stream(target, prompt)
        codec, resp = self._post(target, prompt, ctx, stream=True)
        ctype = resp.headers.get("Content-Type", "")
        if "json" in ctype and "event-stream" not in ctype:
            # Some servers answer a stream request with one JSON body.
            try:
                raw = _read_limited(resp, self._max_response_bytes, target)
            finally:
                resp.close()
            try:
                gen = codec.decode_response(json.loads(raw), target)
            except ValueError as exc:
                raise InvalidUpstreamResponse(f"{target.provider} sent invalid JSON", provider=target.provider) from exc
            return generation_to_parts(gen)
        return _iter_stream(codec, resp, target)


def _iter_stream(codec: "ProviderCodec", resp: requests.Response, target: RoutingTarget) -> Iterator[StreamPart]:
    from ..protocols.sse import SSEParser

    decoder = codec.stream_decoder(target)
    parser = SSEParser()
    try:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                for event in parser.feed(chunk):
                    yield from decoder.feed(event)
            for event in parser.finish():
                yield from decoder.feed(event)
        except RouteplaneError:
            raise
        except Exception as exc:  # a transport error while iterating the stream
            raise translate_exception(exc, target) from exc
        yield from decoder.finish()
    finally:
        resp.close()


def _read_limited(resp: requests.Response, limit: int, target: RoutingTarget) -> bytes:
    chunks: List[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(chunk_size=65536):
            size += len(chunk)
            if size > limit:
                raise InvalidUpstreamResponse(f"{target.provider} sent a response over {limit} bytes",
                                              provider=target.provider)
            chunks.append(chunk)
    except RouteplaneError:
        raise
    except Exception as exc:
        raise translate_exception(exc, target) from exc
    return b"".join(chunks)


def translate_exception(exc: BaseException, target: RoutingTarget) -> UpstreamError:
    """The one place where requests/urllib3 exceptions become gateway errors."""
    name = target.provider
    if isinstance(exc, (requests.exceptions.ConnectTimeout,)):
        return UpstreamTimeout(f"{name}: connection timed out", provider=name)
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return UpstreamTimeout(f"{name}: no data within the read timeout", provider=name)
    if isinstance(exc, requests.exceptions.Timeout):
        return UpstreamTimeout(f"{name}: timed out", provider=name)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                        requests.exceptions.ContentDecodingError)):
        return InvalidUpstreamResponse(f"{name}: the connection broke while reading the response", provider=name)
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, OSError)):
        return UpstreamConnectionError(f"{name}: could not connect or the connection was reset", provider=name)
    if isinstance(exc, requests.exceptions.InvalidURL):
        return UpstreamConnectionError(f"{name}: invalid base URL", provider=name, retriable=False)
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
