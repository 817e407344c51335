"""A cheaper reader of an upstream response's status line and headers, for http.client under urllib3.

`http.client.HTTPResponse.begin` hands the header block to the `email`
package's feed parser, built for MIME messages: about 6 % of a
proxied request's CPU went there (py-spy on a gunicorn worker). Provider
responses have a dozen plain `Name: value` lines, so `HeadResponse` splits
those itself and fills the same `HTTPMessage`. Anything unusual (a folded
line, a line without a colon, a name with a byte outside printable ASCII, a
bare CR, a line starting "From ") goes to http.client's own parser, so odd
answers are read exactly as before, defects included.

The body framing after the headers (chunked, Content-Length, read until
close) is decided from the same headers with the same rules as http.client.
"""

from __future__ import annotations

import http.client
import io
import re
from typing import List, Optional, Tuple

_END = (b"\r\n", b"\n", b"")
# A field name the email parser takes as a header: printable ASCII but the colon. Any
# other byte (space, NUL, 8-bit) makes it end the header block there instead.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")


def _read_head_lines(fp: io.BufferedReader) -> Tuple[List[bytes], bytes]:
    """The header lines and the line that ended them (blank, or b"" at EOF), with http.client's
    limits (it counts that last line too)."""
    max_line = getattr(http.client, "_MAXLINE", 65536)
    max_headers = getattr(http.client, "_MAXHEADERS", 100)
    lines: List[bytes] = []
    while True:
        line = fp.readline(max_line + 1)
        if len(line) > max_line:
            raise http.client.LineTooLong("header line")
        if len(lines) >= max_headers:
            raise http.client.HTTPException(f"got more than {max_headers} headers")
        if line in _END:
            return lines, line
        lines.append(line)


def _simple_message(lines: List[bytes]) -> Optional[http.client.HTTPMessage]:
    """The headers as an HTTPMessage, or None when a line needs the email parser's own reading."""
    msg = http.client.HTTPMessage()
    for raw in lines:
        line = raw.decode("iso-8859-1")  # what http.client decodes header bytes as
        text = line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line  # (EOF)
        if "\r" in text or line.startswith("From "):
            return None  # a bare CR is a line break to it; "From " opens a mailbox line
        name, sep, value = text.partition(":")
        if not sep or not _FIELD_NAME.match(name):
            return None  # a folded line, no colon, or a name it would not take
        value = value.lstrip(" \t")
        if name.lower() == "content-type" and value[:10].lower().startswith(("multipart/", "message/")):
            return None  # the email parser parses (an empty) body of these, with defects
        msg[name] = value
    msg.set_payload("")  # what the email parser leaves: an empty body
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

        lines, end = _read_head_lines(self.fp)
        msg = _simple_message(lines)
        if msg is None:  # the same bytes to http.client's parser
            msg = http.client.parse_headers(io.BytesIO(b"".join(lines) + end))
        self.headers = self.msg = msg

        encoding = msg.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None  # otherwise it keeps http.client's "unknown" marker
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
