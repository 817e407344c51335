"""limits.max_stream_bytes: a runaway upstream stream is ended with an error event, settled, never relayed without bound."""

from __future__ import annotations

import json

from routeplane.app import build_app
from routeplane.config import parse_config
from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import Reply, openai_chunk

USAGE = {"prompt_tokens": 5, "completion_tokens": 300, "total_tokens": 305}


def config(url: str) -> dict:
    return {"providers": {"up": {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "sk-up-aaaaaaaaaaaa"}},
            "models": {"m": {"targets": [{"provider": "up", "model": "x"}]}}}


def long_stream(words: int) -> Reply:
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""})]
                     + [openai_chunk({"content": f"word{i:04d} "}) for i in range(words)]
                     + [openai_chunk({}, "stop"), openai_chunk(None, usage=USAGE)])


def test_a_stream_over_the_byte_limit_ends_with_an_error_event_and_is_settled(upstream):
    upstream.enqueue(long_stream(300))  # ~40 kB of SSE
    gw = Gateway(executor=HttpExecutor(max_stream_bytes=8192), config=config(upstream.url))
    r = gw.chat("hi", model="m", stream=True)
    text = r.body.decode()
    assert r.status == 200  # the stream had started: the error comes as its last event
    assert "word0000" in text and "word0299" not in text
    assert "over 8192 bytes" in text and not text.rstrip().endswith("data: [DONE]")
    [s] = r.settlements
    assert s.outcome == "upstream_error" and s.streamed
    assert s.usage.output_tokens > 0  # what was delivered is billed (estimated), not a silent zero


def test_a_stream_under_the_limit_is_untouched(upstream):
    upstream.enqueue(long_stream(300))
    gw = Gateway(executor=HttpExecutor(max_stream_bytes=1024 * 1024), config=config(upstream.url))
    r = gw.chat("hi", model="m", stream=True)
    text = r.body.decode()
    assert "word0299" in text and "data: [DONE]" in text
    assert r.settlements[0].outcome == "success" and r.settlements[0].usage.output_tokens == 300


def test_the_limit_comes_from_the_config():
    app = build_app(parse_config({"limits": {"max_stream_bytes": 5000}, **config("http://127.0.0.1:9")}, "<test>"))
    assert app.pipeline.executor._max_stream_bytes == 5000
    assert parse_config(config("http://127.0.0.1:9"), "<test>").limits.max_stream_bytes == 256 * 1024 * 1024


class CloseDelimitedSSE:
    """An upstream whose SSE body has no chunked framing and no length: it ends when the server closes."""

    def __init__(self, first_events: int, then_bytes: int = 0, pause: float = 0.0) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.first_events, self.then_bytes, self.pause = first_events, then_bytes, pause
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import time

        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            try:
                for i in range(self.first_events):
                    event = openai_chunk({"role": "assistant", "content": f"early{i} "})
                    conn.sendall(b"data: " + json.dumps(event).encode() + b"\n\n")
                time.sleep(self.pause)
                filler = b"data: " + json.dumps(openai_chunk({"content": "x" * 1000})).encode() + b"\n\n"
                while self.sent < self.then_bytes:
                    conn.sendall(filler)
                    self.sent += len(filler)
            except OSError:
                pass  # the gateway hung up (the byte limit)

    def close(self) -> None:
        self.sock.close()


def test_a_stream_without_chunked_framing_is_relayed_as_it_arrives():
    import time

    up = CloseDelimitedSSE(first_events=2, pause=1.5)
    try:
        gw = Gateway(executor=HttpExecutor(), config=config(up.url))
        t0 = time.monotonic()
        result = gw.app.pipeline.run(_stream_ctx())
        parts = iter(result)
        first = next(p for p in parts if getattr(p, "text", None))
        assert time.monotonic() - t0 < 1.0, "the first event waited for the upstream to finish"
        assert "early0" in first.text
        result.close()
    finally:
        up.close()


def test_the_byte_limit_holds_without_reading_the_whole_stream_into_memory():
    up = CloseDelimitedSSE(first_events=1, then_bytes=50 * 1024 * 1024)
    try:
        gw = Gateway(executor=HttpExecutor(max_stream_bytes=256 * 1024), config=config(up.url))
        r = gw.chat("hi", model="m", stream=True)
        assert "over 262144 bytes" in r.body.decode()
        assert up.sent < 8 * 1024 * 1024  # cut soon after the limit, not after the upstream's 50 MB
    finally:
        up.close()


def _stream_ctx():
    from routeplane.language_model.context import PipelineContext
    from routeplane.language_model.types import Message, Prompt, TextPart

    return PipelineContext("r-cd", "openai_chat", Prompt(model="m", messages=(Message("user", (TextPart("hi"),)),),
                                                         stream=True), {})
