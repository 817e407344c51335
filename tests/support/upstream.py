"""A real local HTTP server that plays an upstream provider, scripted per test.

    up = FakeUpstream().start()
    up.enqueue(Reply.json({...}), Reply.sse([...]), Reply(status=503, headers={"Retry-After": "2"}))
    ... point a provider's base_url at up.url ...
    up.requests[0].json   # what the gateway sent

Replies are served in order; when the queue is empty, `up.default` (a
callable taking the RecordedRequest) answers, or a 500 says the script ran out.
Fault modes: `delay` before the status line, `chunk_delay` between chunks,
`reset` (RST instead of an answer), `reset_after` (RST after N chunks),
`hang` (sleep that long, then close without answering).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Union


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: Optional[List[bytes]] = None  # streamed with chunked transfer encoding
    delay: float = 0.0
    chunk_delay: float = 0.0
    reset: bool = False
    reset_after: Optional[int] = None
    hang: float = 0.0

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: Optional[Dict[str, str]] = None, **kw: Any) -> "Reply":
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode(), **kw)

    @classmethod
    def sse(cls, events: Sequence[Union[str, bytes, dict]], *, done: Optional[str] = "[DONE]",
            headers: Optional[Dict[str, str]] = None, **kw: Any) -> "Reply":
        """`events`: dicts become `data: {json}`; strings and bytes are sent verbatim."""
        chunks: List[bytes] = []
        for ev in events:
            if isinstance(ev, dict):
                chunks.append(b"data: " + json.dumps(ev).encode() + b"\n\n")
            elif isinstance(ev, str):
                chunks.append(ev.encode())
            else:
                chunks.append(ev)
        if done is not None:
            chunks.append(f"data: {done}\n\n".encode())
        return cls(200, {"Content-Type": "text/event-stream", **(headers or {})}, chunks=chunks, **kw)

    @classmethod
    def anthropic_sse(cls, events: Sequence[dict], **kw: Any) -> "Reply":
        """Anthropic framing: `event: <type>` + `data:`; no [DONE]."""
        raw = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]
        return cls.sse(raw, done=None, **kw)


class _QuietServer(ThreadingHTTPServer):
    """A gateway that hangs up mid-answer (a client gone, a stream cut on purpose) is what many tests do:
    not a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: List[RecordedRequest] = []
        self._queue: Deque[Reply] = deque()
        self._lock = threading.Lock()
        self.default: Optional[Callable[[RecordedRequest], Reply]] = None
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def enqueue(self, *replies: Reply) -> "FakeUpstream":
        with self._lock:
            self._queue.extend(replies)
        return self

    @contextlib.contextmanager
    def script(self) -> Iterator["FakeUpstream"]:
        """One test's use of a shared upstream: an empty script and request log, and a failure if the
        test leaves scripted replies unused."""
        with self._lock:
            self._queue.clear()
        self.requests.clear()
        yield self
        with self._lock:
            leftover = len(self._queue)
            self._queue.clear()
        assert leftover == 0, "the test left scripted replies unused"

    def _next(self, req: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(req)
            if self._queue:
                return self._queue.popleft()
        if self.default is not None:
            return self.default(req)
        return Reply.json({"error": {"message": "fake upstream: script exhausted", "type": "server_error"}}, 500)

    def start(self) -> "FakeUpstream":
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = upstream._next(req)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.hang:
                    time.sleep(reply.hang)
                    self.close_connection = True
                    return
                if reply.reset:
                    self._rst()
                    return
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.chunks is None:
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for i, chunk in enumerate(reply.chunks):
                    if reply.chunk_delay and i:
                        time.sleep(reply.chunk_delay)
                    if reply.reset_after is not None and i >= reply.reset_after:
                        # Let the peer read what was sent first: a RST discards data still
                        # unread in the receiver's buffer, which would turn a mid-stream
                        # cut into a cut before the first byte (a flaky test, not a bug).
                        time.sleep(0.2)
                        self._rst()
                        return
                    try:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _rst(self) -> None:
                # SO_LINGER 0: close() sends RST, as a crashed or reset peer does.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            do_POST = do_GET = do_PUT = do_DELETE = _handle

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="fake-upstream").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def running_upstream() -> Iterator[FakeUpstream]:
    """A started FakeUpstream, stopped afterwards: the body of a module-scoped `upstream` fixture, as
    `upstream = pytest.fixture(scope="module", name="upstream")(running_upstream)`."""
    up = FakeUpstream().start()
    yield up
    up.stop()


def openai_chunk(delta: Dict[str, Any], finish: Optional[str] = None, *, id: str = "chatcmpl-up",
                 model: str = "up-model", usage: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One OpenAI chat.completion.chunk (usage chunks: pass delta=None for `choices: []`)."""
    chunk: Dict[str, Any] = {"id": id, "object": "chat.completion.chunk", "created": 1763800000, "model": model,
                             "choices": [] if delta is None else
                             [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def openai_completion(content: Optional[str] = "Hello!", *, tool_calls: Optional[list] = None,
                      finish: str = "stop", usage: Optional[Dict[str, Any]] = None,
                      model: str = "up-model") -> Dict[str, Any]:
    message: Dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
