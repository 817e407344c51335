"""Smoke: the real gateway under gunicorn answers the official openai SDK from the mock provider and a real upstream."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.support.upstream import Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e


def test_mock_provider_plain_and_stream(gateway_process):
    gw = gateway_process()
    client = OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hello"}])
    assert r.choices[0].message.content == "You said: hello"
    chunks = list(client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi there"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hi there"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_openai_compatible_upstream(gateway_process, upstream):
    config = {
        "providers": {"up": {"protocol": "openai_chat", "base_url": upstream.url + "/v1", "api_key": "sk-test-upstream"}},
        "models": {"m": {"targets": [{"provider": "up", "model": "up-model"}]}},
    }
    upstream.enqueue(Reply.json(openai_completion("from upstream")))
    upstream.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "str"}),
                                openai_chunk({"content": "eam"}), openai_chunk({}, "stop"),
                                openai_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})]))
    gw = gateway_process(config)
    client = OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "from upstream"
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-test-upstream"
    assert upstream.requests[0].json["model"] == "up-model"
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stream"
    assert upstream.requests[1].json["stream_options"] == {"include_usage": True}
