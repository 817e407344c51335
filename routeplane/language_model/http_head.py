"""A cheaper reader of an upstream response's status line and headers, for http.client under urllib3.

`http.client.HTTPResponse.begin` hands the header block to the `email`
package's feed parser, built for MIME messages: about a twentieth of a
proxied request's CPU went there (py-spy on a gunicorn worker). Provider
responses have a dozen plain `Name: value` lines, so `HeadResponse` splits
those itself and fills the same `HTTPMessage`. Anything unusual (a folded
line, a line without a colon, a name with spaces) goes to http.client's own
parser, so odd answers are read exactly as before, defects included.

The body framing after the headers (chunked, Content-Length, read until
close) is decided from the same headers with the same rules as http.client.
"""

from __future__ import annotations

import http.client
import io
from typing import List, Optional

_MAX_LINE = 65536  # http.client's limits
_MAX_HEADERS = 100
_END = (b"\r\n", b"\n", b"")
_TOKEN_BREAKERS = frozenset(" \t")


def _read_head_lines(fp: io.BufferedReader) -> List[bytes]:
    lines: List[bytes] = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in _END:
            return lines
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")


def _simple_message(lines: List[bytes]) -> Optional[http.client.HTTPMessage]:
    """The headers as an HTTPMessage, or None when a line needs the full parser."""
    msg = http.client.HTTPMessage()
    for raw in lines:
        line = raw.decode("iso-8859-1")  # what http.client decodes header bytes as
        name, sep, value = line.partition(":")
        if not sep or not name or name[0] in _TOKEN_BREAKERS or name[-1] in _TOKEN_BREAKERS:
            return None  # folded continuation, no colon, or whitespace around the name
        msg[name] = value.lstrip(" \t").rstrip("\r\n")  # as the email parser keeps it
    return msg


class HeadResponse(http.client.HTTPResponse):
    """`http.client.HTTPResponse` whose `begin` parses plain header blocks without the email package."""

    def begin(self) -> None:
        if self.headers is not None:
            return  # already begun
        while True:
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if status != http.client.CONTINUE:
                break
            _read_head_lines(self.fp)  # a 100 Continue's headers are skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11  # 1.x with x >= 1 behaves as 1.1
        else:
            raise http.client.UnknownProtocol(version)

        lines = _read_head_lines(self.fp)
        msg = _simple_message(lines)
        if msg is None:
            msg = http.client.parse_headers(io.BytesIO(b"".join(lines) + b"\r\n"))
        self.headers = self.msg = msg

        encoding = msg.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        length = msg.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200
                or self._method == "HEAD"):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # no framing: the body ends when the connection does
