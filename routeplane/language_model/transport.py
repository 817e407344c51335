"""The HTTP transport under `HttpExecutor`: requests' adapter and urllib3 pools, made fit for a gateway.

- `Transport`: one adapter per executor, shared by every thread; no cookie
  jar; connections report themselves to the calling thread's `InFlight` so
  a worker shutting down can cut a call still waiting on its upstream.
- `prepared_request`: the POST, built without `Session` (its layer cost more
  CPU than the rest of the gateway), with the header checks it made.
- `read_pieces`: a streamed body as it arrives, bounded per read.
- `translate_exception`: the one place requests/urllib3 errors become gateway errors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import urllib.parse
from typing import Any, Dict, Iterator, Optional, Tuple

import requests
import requests.adapters
import urllib3
import urllib3.connection
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

from ..errors import InvalidUpstreamResponse, UpstreamConnectionError, UpstreamError, UpstreamTimeout
from .http_head import HeadResponse
from .routing import RoutingTarget

log = logging.getLogger("routeplane.executor")

_calling = threading.local()  # .call: the InFlight of the upstream call this thread is making


class InFlight:
    """One upstream call, for `PipelineContext.abort` from another thread (the worker shutting down).

    Until the response arrives, the call's connection is checked out of the
    pool and only this call uses it: shutting its socket down ends a call
    still waiting on a slow upstream. Once a response exists, the connection
    may go back to the pool at the end of its body, so it is cut only while
    the response still holds it (see `shutdown_response`).
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
            shutdown_response(self.resp)
            return
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextlib.contextmanager
def reporting_to(call: "InFlight") -> Iterator[None]:
    """While the body runs, the connection this thread sends on is recorded in `call`."""
    _calling.call = call
    try:
        yield
    finally:
        _calling.call = None


class _Reporting:
    response_class = HeadResponse  # http.client's, with a cheaper header parser

    def request(self, *args: Any, **kwargs: Any) -> None:
        call = getattr(_calling, "call", None)
        if call is not None:
            call.conn = self
        super().request(*args, **kwargs)  # type: ignore[misc]


class _ReportingHTTPConnection(_Reporting, urllib3.connection.HTTPConnection):
    pass


class _ReportingHTTPSConnection(_Reporting, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _ReportingHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _ReportingHTTPSConnection


@functools.lru_cache(maxsize=512)
def _split_url(url: str) -> Tuple[str, str]:
    """(origin, request target) of an upstream URL; the executor's URLs are few and repeat."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return f"{parts.scheme.lower()}://{parts.netloc}", target  # netloc as written: an IPv6 zone id is case-sensitive


def _plain(verify: Any, cert: Any) -> bool:
    """The executor's own TLS settings (default verification, no client certificate): cacheable."""
    return verify is True and cert is None


class Transport(requests.adapters.HTTPAdapter):
    """requests' adapter made fit for a gateway's hot path:

    - no per-response cookie jar (a gateway never keeps upstream cookies);
    - connections tell the calling thread's `InFlight` which socket the call uses;
    - the executor never passes proxies, client certificates or `verify`
      other than True, so the pool of an origin, its request target and its
      certificate settings are looked up once, not on every call (requests
      re-derives the pool key, re-selects proxies and stats the CA bundle per
      request: ~40 µs of a request's CPU). Any other call takes requests' path.

    `send` itself is requests', so `responses` intercepts it in unit tests.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self._pools: Dict[str, Any] = {}

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Optional[Dict[str, str]] = None, cert: Any = None) -> Any:
        if proxies or not _plain(verify, cert):
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        origin = _split_url(request.url)[0]  # type: ignore[arg-type]
        pool = self._pools.get(origin)
        if pool is None or pool.pool is None:  # new, or closed
            if len(self._pools) >= self._pool_connections:  # type: ignore[attr-defined]
                # As many origins as the pool manager keeps; route hooks may invent more: forget them
                # all, as its own LRU does (it drops a pool without closing it; its connections
                # close once unused).
                self._pools = {}
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            self._pools[origin] = pool
        return pool

    def close(self) -> None:
        super().close()
        pools, self._pools = self._pools, {}
        for pool in list(pools.values()):  # the pool manager may have dropped some of them already
            pool.close()

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        plain = _plain(verify, cert)
        if plain and getattr(conn, "_routeplane_verified", False):
            return
        super().cert_verify(conn, url, verify, cert)
        if plain:
            conn._routeplane_verified = True

    def request_url(self, request: requests.PreparedRequest, proxies: Optional[Dict[str, str]]) -> str:
        if proxies:
            return super().request_url(request, proxies)
        return _split_url(request.url)[1]  # type: ignore[arg-type]

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


FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
                              "keep-alive", "proxy-connection", "trailer"})


def prepared_request(url: str, body: bytes, headers: Dict[str, str], target: RoutingTarget) -> requests.PreparedRequest:
    """A POST ready for `HTTPAdapter.send`, built without `PreparedRequest.prepare()`.

    `prepare()` re-parses and re-quotes the URL, which the codec built and
    `check_base_url` checked; the body is always bytes with a known length.
    """
    req = requests.PreparedRequest()
    req.method = "POST"
    req.url = url
    req.headers = CaseInsensitiveDict()
    for name, value in headers.items():
        if name.lower() in FRAMING_HEADERS:
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


def socket_of(resp: requests.Response) -> Any:
    """The connection's socket (urllib3 2.x keeps it on the response while the body is unread)."""
    conn = getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:
        fp = getattr(getattr(getattr(resp.raw, "_fp", None), "fp", None), "raw", None)
        sock = getattr(fp, "_sock", None)
    return sock


def shutdown_response(resp: requests.Response) -> None:
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


STREAM_READ_BYTES = 65536


def read_pieces(resp: requests.Response) -> Iterator[bytes]:
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


TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def is_timeout(exc: BaseException) -> bool:
    """requests reports a read timeout inside a streamed body as ConnectionError(ReadTimeoutError),
    so the cause chain and the wrapped first argument are searched too."""
    cur: Optional[BaseException] = exc
    for _ in range(6):
        if cur is None or isinstance(cur, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
            return False  # urllib3's NewConnectionError subclasses ConnectTimeoutError for history's sake
        if isinstance(cur, TIMEOUTS):
            return True
        if cur.args and isinstance(cur.args[0], TIMEOUTS) and not isinstance(
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
    if is_timeout(exc):
        return UpstreamTimeout(f"{name}: no data within the read timeout", provider=name)
    if isinstance(exc, requests.exceptions.Timeout):
        return UpstreamTimeout(f"{name}: timed out", provider=name)
    if isinstance(exc, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return InvalidUpstreamResponse(f"{name}: the response body could not be decoded as its Content-Encoding "
                                       "says", provider=name)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return InvalidUpstreamResponse(f"{name}: the connection broke while reading the response", provider=name)
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, OSError, urllib3.exceptions.SSLError)):
        return UpstreamConnectionError(f"{name}: could not connect or the connection was reset", provider=name)
    return UpstreamError(f"{name}: {type(exc).__name__}", provider=name)
