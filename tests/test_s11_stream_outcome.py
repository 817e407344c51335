"""A stream's recorded outcome when the client leaves during the last write (web/common.py `_sse_body`).

The upstream sends its whole answer in one read, then holds its end back until the test says the
client is gone; the client, a raw socket, reads the first write and resets the connection. The
gateway's last write (the wire's end frames) then fails under gunicorn: the request is settled as
`client_disconnected`, once, and billed by what the upstream produced, as before."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any, Dict, Iterator, Tuple

import pytest

from routeplane.hooks.language_model import Outcome, StreamAction, StreamHook
from routeplane.language_model.pipeline_stream import END, FLUSH
from routeplane.language_model.types import StreamPart
from tests.support.gateway import GatewayProcess
from tests.support.raw_upstream import RawUpstream
from tests.support.spend import spend_row
from tests.support.upstream import Reply
from tests.support.wires import ALL_WIRES, INPUT, OUTPUT, via_wires_config
from tests.test_pipeline import Harness, text_parts

pytestmark = pytest.mark.e2e

WAIT = 10.0


class HeldEndUpstream(RawUpstream):
    """Every answer (weather_upstream's, streamed) in one chunked write; the end of the body only
    once `release` is set (or after WAIT seconds)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__()

    def answer(self, conn: socket.socket, reply: Reply) -> None:
        answer = b"".join(reply.chunks or [reply.body])
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n" + b"%x\r\n%s\r\n" % (len(answer), answer))
        self.release.wait(WAIT)
        conn.sendall(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[GatewayProcess, HeldEndUpstream, str]]:
    up = HeldEndUpstream()
    config = via_wires_config(up.url)
    db = f"sqlite:///{tmp_path_factory.mktemp('s11-outcome')}/rp.db"
    config["database"] = {"url": db}
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw, up, db
    gw.stop()
    up.sock.close()


def request_of(wire: str) -> Tuple[str, Dict[str, Any]]:
    model = f"via-{wire}"
    hi = [{"role": "user", "content": "hi"}]
    if wire == "openai_chat":
        return "/v1/chat/completions", {"model": model, "stream": True, "messages": hi}
    if wire == "anthropic_messages":
        return "/v1/messages", {"model": model, "stream": True, "max_tokens": 50, "messages": hi}
    if wire == "openai_responses":
        return "/v1/responses", {"model": model, "stream": True, "input": "hi"}
    return (f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
            {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})


def leave_after_first_write(gw: GatewayProcess, wire: str, rid: str) -> bytes:
    """Send the request, read the response's headers, let the first write arrive, then reset the connection."""
    path, body = request_of(wire)
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer sk-client\r\nx-request-id: {rid}\r\n"
                 f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    sock.settimeout(WAIT)
    got = b""
    while b"\r\n\r\n" not in got:
        piece = sock.recv(65536)
        assert piece, got
        got += piece
    time.sleep(0.3)  # gunicorn sends the first batch right behind the headers: let it arrive, unread
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST: the gateway's next write fails
    return got


@pytest.mark.parametrize("wire", ALL_WIRES)
def test_a_client_gone_during_the_last_write_is_settled_as_disconnected(served: Any, wire: str) -> None:
    gw, up, db = served
    up.release.clear()
    rid = f"req_s11_last_write_{wire}"
    got = leave_after_first_write(gw, wire, rid)
    assert got.startswith(b"HTTP/1.1 200")
    time.sleep(0.2)  # the reset reaches the gateway before the upstream's end does
    up.release.set()
    row = spend_row(db, rid)
    assert row["outcome"] == "client_disconnected", row
    # Billed by what the upstream produced: its reported usage, as for a completed stream.
    assert row["usage_reported"] and row["output_tokens"] == OUTPUT, row
    assert row["input_tokens"] + row["cache_read_tokens"] == INPUT, row


# --- the pipeline's END marker, without a server -------------------------------------------------------


class Ends(StreamHook):
    def __init__(self) -> None:
        self.outcomes: list = []

    def on_part(self, ctx: Any, part: StreamPart) -> StreamAction:
        return StreamAction.pass_()

    def on_stream_end(self, ctx: Any, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def test_a_stream_is_settled_only_on_the_pull_after_its_end_marker() -> None:
    ends = Ends()
    h = Harness(("stream_hook", ends), script=[text_parts("one ", "two")])
    stream = h.run(stream=True)
    parts = []
    for part in stream.with_flushes():
        if part is END:
            assert not h.settlements.items, "settled before the consumer wrote the end frames"
            break
        if part is not FLUSH:
            parts.append(part)
    assert part is END
    assert len(parts) == len(text_parts("one ", "two"))
    assert next(iter(stream.with_flushes()), None) is None  # the pull after END settles
    [s] = h.settlements.items
    assert s.outcome == "success" and ends.outcomes == [Outcome.SUCCESS]
    assert list(stream) == [], "the plain iteration never shows the markers"


def test_a_stream_closed_at_its_end_marker_is_a_client_gone_billed_as_the_upstream_reported() -> None:
    ends = Ends()
    h = Harness(("stream_hook", ends), script=[text_parts("a much longer answer than two tokens ", "two")])
    stream = h.run(stream=True)
    assert END in list(_until_end(stream))
    stream.close()  # the server's last write failed: it closes instead of pulling again
    stream.close()
    [s] = h.settlements.items
    assert s.outcome == "client_disconnected" and ends.outcomes == [Outcome.CLIENT_DISCONNECTED]
    # The upstream finished and reported its usage: that is the bill, not an estimate from the text.
    assert (s.usage.input_tokens, s.usage.output_tokens, s.usage.reported) == (4, 2, True)


def _until_end(stream: Any) -> Any:
    for part in stream.with_flushes():
        yield part
        if part is END:
            return
