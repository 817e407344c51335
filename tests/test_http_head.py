"""HeadResponse (routeplane/language_model/http_head.py) reads every response head as http.client does.

Differential: each raw response is read by http.client's own HTTPResponse and
by HeadResponse; status, version, headers, body framing and body must match,
and so must the errors for broken heads.
"""

from __future__ import annotations

import http.client
import io
import random
from typing import Any, Tuple

import pytest

from routeplane.language_model.http_head import HeadResponse


class _Sock:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))  # type: ignore[arg-type]


def _read(cls: Any, raw: bytes, method: str = "POST") -> Tuple[Any, ...]:
    resp = cls(_Sock(raw), method=method)
    resp.begin()
    seen = (resp.status, resp.reason, resp.version, resp.getheaders(), resp.msg.get_all("set-cookie"),
            resp.chunked, resp.chunk_left, resp.length, resp.will_close,
            [type(d).__name__ for d in resp.msg.defects], resp.msg.get_payload())
    return seen + (resp.read(),)


HEADS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n",
    "chunked-mixed-case": b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n",
    "connection-close": b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 3\r\n"
                        b"Content-Length: 4\r\n\r\nslow",
    "http-1.0-keep-alive": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
    "http-1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    "continue-first": b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "no-content": b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    "repeated": b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\nbody",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nbody",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"2\r\nok\r\n0\r\n\r\n",
    "latin-1-value": b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n",
    "spaces-around-value": b"HTTP/1.1 200 OK\r\nX-Pad:   padded \t\r\nContent-Length: 0\r\n\r\n",
    "empty-value": b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "no-reason": b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
    "colon-in-value": b"HTTP/1.1 302 Found\r\nLocation: https://x.example/a:b\r\nContent-Length: 0\r\n\r\n",
    "99-headers": b"HTTP/1.1 200 OK\r\n" + b"X-H: v\r\n" * 99 + b"\r\n",
    # These need the email parser's own reading (each one was read differently by a first version):
    "folded": b"HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\nContent-Length: 0\r\n\r\n",
    "no-colon": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nthis is not a header\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX-Bad : v\r\nContent-Length: 0\r\n\r\n",
    "space-inside-name": b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 5\r\n\r\nhello",
    "control-in-name": b"HTTP/1.1 200 OK\r\nX\x0bA: 1\r\nContent-Length: 0\r\n\r\n",
    "nul-in-name": b"HTTP/1.1 200 OK\r\nX\x00A: 1\r\nContent-Length: 0\r\n\r\n",
    "8-bit-name": b"HTTP/1.1 200 OK\r\nX\xe9: 1\r\nContent-Length: 0\r\n\r\n",
    "bare-cr-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 0\r\n\r\n",
    "bare-cr-before-crlf": b"HTTP/1.1 200 OK\r\nX-A: a\r\r\nContent-Length: 0\r\n\r\n",
    "from-line-first": b"HTTP/1.1 200 OK\r\nFrom x: y\r\nContent-Length: 0\r\n\r\n",
    "multipart": b"HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed\r\nContent-Length: 0\r\n\r\n",
    "eof-inside-head": b"HTTP/1.0 200 OK\r\nConnection: close",
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_reads_the_head_as_http_client_does(name):
    raw = HEADS[name]
    assert _read(HeadResponse, raw) == _read(http.client.HTTPResponse, raw)


def test_a_head_request_has_no_body():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
    assert _read(HeadResponse, raw, "HEAD") == _read(http.client.HTTPResponse, raw, "HEAD")


@pytest.mark.parametrize("raw", [
    b"",  # the upstream closed without answering
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-H: v\r\n" * 100 + b"\r\n",  # http.client counts the blank line too
    b"HTTP/1.1 100 Continue\r\n" + b"X-H: v\r\n" * 100 + b"\r\nHTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",  # a line past 64 KiB
])
def test_broken_heads_raise_what_http_client_raises(raw):
    with pytest.raises(http.client.HTTPException) as stock:
        _read(http.client.HTTPResponse, raw)
    with pytest.raises(http.client.HTTPException) as ours:
        _read(HeadResponse, raw)
    assert type(ours.value) is type(stock.value)


_PIECES = [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 204 No\r\n", b"HTTP/1.1 100 Continue\r\n",
           b"Content-Length", b"Transfer-Encoding", b"Connection", b"Content-Type", b"chunked", b"close",
           b"keep-alive", b"multipart/x", b"5", b"-1", b": ", b":", b" ", b"\t", b"\r\n", b"\n", b"\r", b"\x00",
           b"\x0b", b"\x0c", b"\x1c", b"\x85", b"\xff", b"From ", b"X", b"a"]


def test_random_heads_are_read_as_http_client_reads_them():
    # A seeded differential fuzz: heads built from the pieces that broke a first version.
    rng = random.Random(1410)
    for _ in range(4000):
        raw = b"HTTP/1.1 200 OK\r\n" + b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 14)))
        raw += rng.choice([b"\r\n\r\nbody", b"\r\n", b"", b"\n\nbody"])
        method = rng.choice(["POST", "HEAD"])
        try:
            expected: Any = _read(http.client.HTTPResponse, raw, method)
        except http.client.HTTPException as exc:
            expected = type(exc)
        try:
            got: Any = _read(HeadResponse, raw, method)
        except http.client.HTTPException as exc:
            got = type(exc)
        assert got == expected, raw
