"""Upstream faults in a stream, through gunicorn, for every client wire (each against an upstream of its own
wire): the connection closed or reset mid-event, a malformed SSE line, an error event, a stall past the read
timeout, a 200 whose body is not SSE, gzip garbage. The official SDK sees its own wire's error (an error
event, or an error status before the first byte), never a hang or a parse failure, and the request has
exactly one spend-log row, settled as failed."""

from __future__ import annotations

import socket
import struct
import time
import zlib
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Tuple

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.gateway import GatewayProcess
from tests.support.raw_upstream import RawUpstream
from tests.support.upstream import Reply
from tests.support.wires import ALL_WIRES, via_wires_config

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 1.0
# The events of each wire's answer (weather_upstream's "Hello from <wire>.") up to its first text.
OPENING = {"openai_chat": 2, "anthropic_messages": 3, "openai_responses": 5, "gemini": 1}
ERROR_EVENT = {
    "openai_chat": b'data: {"error": {"message": "upstream broke", "type": "server_error"}}\n\n',
    "anthropic_messages": b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
                          b'"message": "upstream broke"}}\n\n',
    "openai_responses": b'event: error\ndata: {"type": "error", "code": "server_error", "message": "upstream broke", '
                        b'"param": null, "sequence_number": 9}\n\n',
    "gemini": b'data: {"error": {"code": 500, "message": "upstream broke", "status": "INTERNAL"}}\r\n\r\n',
}
Script = Callable[[socket.socket, List[bytes]], None]  # (connection, the wire's answer as events)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_head(extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n{extra}"
            "Connection: close\r\n\r\n").encode()


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ScriptedUpstream(RawUpstream):
    """A raw-socket upstream that plays the next script on each connection."""

    def __init__(self) -> None:
        self.scripts: Deque[Script] = deque()
        super().__init__()

    def answer(self, conn: socket.socket, reply: Reply) -> None:
        self.scripts.popleft()(conn, list(reply.chunks or []))


def cut_mid_event(how: str) -> Script:
    def play(conn: socket.socket, events: List[bytes]) -> None:
        n = OPENING[wire_of(events)]
        conn.sendall(sse_head() + chunk(b"".join(events[:n]) + events[n][:12]))
        time.sleep(0.2)  # the gateway reads what came before the cut
        if how == "end":
            conn.sendall(b"0\r\n\r\n")  # the body ends cleanly, inside an event
        elif how == "reset":
            reset(conn)
        # "close": FIN without the chunked terminator
    return play


def malformed_line(conn: socket.socket, events: List[bytes]) -> None:
    n = OPENING[wire_of(events)]
    bad = b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"}\n\n"  # JSON cut short
    conn.sendall(sse_head() + chunk(b"".join(events[:n])) + chunk(bad) + chunk(b"".join(events[n:])) + b"0\r\n\r\n")


def error_event(conn: socket.socket, events: List[bytes]) -> None:
    wire = wire_of(events)
    n = OPENING[wire]
    conn.sendall(sse_head() + chunk(b"".join(events[:n])) + chunk(ERROR_EVENT[wire]) + b"0\r\n\r\n")


def stall(conn: socket.socket, events: List[bytes]) -> None:
    n = OPENING[wire_of(events)]
    conn.sendall(sse_head() + chunk(b"".join(events[:n])))
    time.sleep(READ_TIMEOUT + 2)


def not_sse(conn: socket.socket, events: List[bytes]) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(page), page))


def gzip_garbage(conn: socket.socket, events: List[bytes]) -> None:
    garbage = b"\x1f\x8b\x08\x00this is not deflate data at all" * 4
    conn.sendall(sse_head("Content-Encoding: gzip\r\n") + chunk(garbage) + b"0\r\n\r\n")


def gzip_garbage_mid(conn: socket.socket, events: List[bytes]) -> None:
    n = OPENING[wire_of(events)]
    gz = zlib.compressobj(wbits=31)
    opening = gz.compress(b"".join(events[:n])) + gz.flush(zlib.Z_SYNC_FLUSH)
    conn.sendall(sse_head("Content-Encoding: gzip\r\n") + chunk(opening))
    time.sleep(0.2)
    conn.sendall(chunk(b"\xff" * 64) + b"0\r\n\r\n")


def wire_of(events: List[bytes]) -> str:
    first = events[0]
    if b"message_start" in first:
        return "anthropic_messages"
    if b"response.created" in first:
        return "openai_responses"
    if b"candidates" in first:
        return "gemini"
    return "openai_chat"


FAULTS: Dict[str, Script] = {
    "closed_mid_event": cut_mid_event("close"),
    "reset_mid_event": cut_mid_event("reset"),
    "body_ends_mid_event": cut_mid_event("end"),
    "malformed_line": malformed_line,
    "error_event": error_event,
    "stall": stall,
    "not_sse": not_sse,
    "gzip_garbage": gzip_garbage,
    "gzip_garbage_mid": gzip_garbage_mid,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[GatewayProcess, ScriptedUpstream, str]]:
    up = ScriptedUpstream()
    config = via_wires_config(up.url, timeouts={"connect": 2.0, "read": READ_TIMEOUT})
    config["fallback"] = {"cooldown": {"failures": 0}}
    db = f"sqlite:///{tmp_path_factory.mktemp('s11-faults')}/rp.db"
    config["database"] = {"url": db}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    yield gw, up, db
    gw.stop()
    up.sock.close()


def rows_of(db: str, rid: str) -> List[Dict[str, Any]]:
    """The request's spend-log rows, once one is there, and a moment later (a second settlement would show)."""
    store = Store.from_url(db)
    try:
        deadline = time.monotonic() + 10
        rows: List[Dict[str, Any]] = []
        while not rows and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = spend_rows(store, f"WHERE request_id = {store.param}", (rid,))
        time.sleep(0.3)
        return spend_rows(store, f"WHERE request_id = {store.param}", (rid,))
    finally:
        store.close()


def call(gw: GatewayProcess, wire: str, rid: str) -> Tuple[str, Any]:
    """Stream one request with the wire's SDK: ("error", what the SDK raised or the error event it yielded),
    or ("ok", the events) when the stream ended without one."""
    headers = {"x-request-id": rid}
    model = f"via-{wire}"
    hi: Any = [{"role": "user", "content": "hi"}]
    try:
        if wire == "openai_chat":
            with openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20) as oai:
                return "ok", list(oai.chat.completions.create(model=model, messages=hi, stream=True,
                                                              extra_headers=headers))
        if wire == "openai_responses":
            with openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20) as oai:
                events = list(oai.responses.create(model=model, input="hi", stream=True, extra_headers=headers))
            failed = [e for e in events if e.type in ("error", "response.failed")]
            return ("error", events[-2:]) if failed else ("ok", events)
        if wire == "anthropic_messages":
            with anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0, timeout=20) as claude:
                return "ok", list(claude.messages.create(model=model, max_tokens=50, messages=hi, stream=True,
                                                         extra_headers=headers))
        client = genai.Client(api_key="k", http_options=genai_types.HttpOptions(base_url=gw.url, timeout=20_000))
        config = genai_types.GenerateContentConfig(http_options=genai_types.HttpOptions(headers=headers))
        return "ok", list(client.models.generate_content_stream(model=model, contents="hi", config=config))
    except (openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError) as exc:
        return "error", exc
    except openai.APIError as exc:  # the Chat SDK's error for an `error` chunk after the first byte
        if isinstance(exc, openai.APIConnectionError):
            raise
        return "error", exc


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("wire", ALL_WIRES)
def test_an_upstream_fault_mid_stream_is_a_clean_error_settled_once(served: Any, wire: str, fault: str) -> None:
    gw, up, db = served
    up.scripts.append(FAULTS[fault])
    rid = f"req_s11_fault_{wire}_{fault}"
    kind, seen = call(gw, wire, rid)
    assert kind == "error", f"the stream ended without an error: {seen!r}"[:2000]
    assert "Traceback" not in repr(seen)
    rows = rows_of(db, rid)
    assert len(rows) == 1, rows
    assert rows[0]["outcome"] == "upstream_error" and rows[0]["status"] in (502, 504), rows[0]
    assert not up.scripts, "the gateway did not call the upstream once"
    if fault == "not_sse":  # named as what it is, not as a stream that lacked its terminator
        assert "answered the stream request with an HTML page" in str(seen), seen
