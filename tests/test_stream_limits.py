"""limits.max_stream_bytes: a runaway upstream stream is ended with an error event, settled, never relayed without bound."""

from __future__ import annotations

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
