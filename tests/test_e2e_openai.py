"""End to end: real gunicorn, driven by the official openai SDK, against the mock provider and a fake upstream server."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Dict, Iterator, List

import openai
import pytest
import requests
from openai import OpenAI

from tests.support.gateway import GatewayProcess, free_port
from tests.support.settle_log import read_settlements, settle_log_env
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def settle_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("settle") / "settlements.jsonl")


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, settle_path: str) -> Iterator[GatewayProcess]:
    config = {
        # A test plugin (tests/support/settle_log.py) that appends each settlement to a file.
        "plugins": {"settle_log": {"path": settle_path}},
        "server": {"max_body_bytes": 65536},
        "providers": {
            "local": {"protocol": "mock"},
            "up": {"protocol": "openai_chat", "base_url": fake.url + "/v1", "api_key": "sk-test-upstream-secret",
                   "timeouts": {"connect": 2, "read": 5}},
            "slow": {"protocol": "openai_chat", "base_url": fake.url + "/v1", "api_key": "sk-test-upstream-secret",
                     "timeouts": {"connect": 2, "read": 0.5}},
            "dead": {"protocol": "openai_chat", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                     "timeouts": {"connect": 1, "read": 2}},
        },
        "models": {
            "default": {"targets": [{"provider": "local", "model": "echo"}]},
            "up": {"targets": [{"provider": "up", "model": "up-model"}]},
            "slow": {"targets": [{"provider": "slow", "model": "up-model"}]},
            "fallback": {"targets": [{"provider": "dead", "model": "x"}, {"provider": "local", "model": "echo"}]},
        },
    }
    proc = GatewayProcess(config, workers=1, threads=8,
                          env=settle_log_env(os.path.dirname(settle_path))).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[OpenAI]:
    with OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=20) as c:
        yield c


def settled(path: str, request_id: str, timeout: float = 5.0) -> List[Dict[str, Any]]:
    """The settlements recorded for one request id (waits briefly: settlement runs in the close path)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in read_settlements(path) if r["request_id"] == request_id]
        if rows or time.monotonic() > deadline:
            time.sleep(0.2)  # and a little longer, so that a second (duplicate) settlement would show up
            return [r for r in read_settlements(path) if r["request_id"] == request_id]
        time.sleep(0.05)


def rid() -> str:
    return "e2e-" + uuid.uuid4().hex


def assert_clean_log(gw: GatewayProcess) -> None:
    logs = gw.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert "sk-test-upstream-secret" not in logs


# --- (a) the built-in mock provider ----------------------------------------------------------


def test_mock_plain(client):
    raw = client.chat.completions.with_raw_response.create(model="default", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    assert raw.headers["x-request-id"] and raw.headers["x-routeplane-target"] == "local:echo"
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == "default"
    assert r.choices[0].message.content == "You said: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens == len("You said: hello there") // 4 + 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_mock_streaming_with_usage(client):
    chunks = list(client.chat.completions.create(model="default", messages=[{"role": "user", "content": "one two"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: one two"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    plain = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "one two"}])
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_mock_streaming_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}],
                                                 stream=True))
    assert chunks and all(c.choices for c in chunks)


def test_mock_tool_call_non_stream_and_follow_up(client):
    r = client.chat.completions.create(model="default", messages=USER, tools=[WEATHER])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    [call] = msg.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example"}
    follow = client.chat.completions.create(model="default", tools=[WEATHER], messages=USER + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C, cloudy"}])
    assert follow.choices[0].message.content == "Tool results: 18C, cloudy"


def test_mock_tool_call_stream_helper_final_completion(client):
    plain = client.chat.completions.create(model="default", messages=USER, tools=[WEATHER])
    with client.chat.completions.stream(model="default", messages=USER, tools=[WEATHER]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    [call] = final.choices[0].message.tool_calls
    # The SDK's accumulator concatenates repeated strings: id/name must come exactly once.
    assert call.id == plain.choices[0].message.tool_calls[0].id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example"}
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].finish_reason == "tool_calls"


def test_models_endpoint(client):
    ids = [m.id for m in client.models.list()]
    assert sorted(ids) == ["default", "fallback", "slow", "up"]


def test_fallback_from_dead_provider_to_mock(client, gw):
    r = client.chat.completions.with_raw_response.create(model="fallback", messages=[{"role": "user", "content": "x"}])
    assert r.headers["x-routeplane-target"] == "local:echo"
    assert r.parse().choices[0].message.content == "You said: x"


# --- (b) an OpenAI-compatible upstream ----------------------------------------------------------


def test_upstream_non_stream(client, up):
    up.enqueue(Reply.json(openai_completion("from upstream", usage={
        "prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 10}})))
    r = client.chat.completions.create(model="up", messages=USER, temperature=0.2, max_tokens=64,
                                       extra_body={"logit_bias": {"1": -1}})
    assert r.choices[0].message.content == "from upstream"
    assert r.model == "up"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (120, 30, 150)
    assert r.usage.prompt_tokens_details.cached_tokens == 100
    assert r.usage.completion_tokens_details.reasoning_tokens == 10
    [sent] = up.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-upstream-secret"
    body = sent.json
    assert body["model"] == "up-model" and body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert body["logit_bias"] == {"1": -1} and "stream" not in body
    assert "client-key" not in json.dumps(sent.headers)


def test_upstream_stream_parallel_tool_calls_in_fragments(client, up):
    up.enqueue(Reply.sse([
        openai_chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"Par"}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ""}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\": \"Oslo\"}"}}]}),
        openai_chunk({}, "tool_calls"),
        openai_chunk(None, usage={"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}),
    ], chunk_delay=0.01))
    with client.chat.completions.stream(model="up", messages=USER, tools=[WEATHER],
                                        stream_options={"include_usage": True}) as stream:
        for _event in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [("call_a", "get_weather"), ("call_b", "get_weather")]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 32
    sent = up.requests[0].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["tools"] == [WEATHER]


def test_upstream_stream_text_without_client_usage(client, up):
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "Bon"}),
                          openai_chunk({"content": "jour é€"}), openai_chunk({}, "stop"),
                          openai_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})]))
    chunks = list(client.chat.completions.create(model="up", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour é€"
    assert all(c.choices for c in chunks), "no usage chunk: the client did not ask for one"


@pytest.mark.parametrize("status, exc", [(400, openai.BadRequestError), (404, openai.NotFoundError),
                                         (422, openai.UnprocessableEntityError)])
def test_upstream_4xx_passthrough(client, up, gw, status, exc):
    up.enqueue(Reply.json({"error": {"message": "Invalid value for 'temperature': too hot",
                                     "type": "invalid_request_error", "param": "temperature", "code": None}}, status))
    with pytest.raises(exc) as info:
        client.chat.completions.create(model="up", messages=USER)
    assert info.value.status_code == status
    assert "too hot" in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body.get("message")
    assert len(up.requests) == 1, "a client error is not retried on another target"


def test_upstream_429_keeps_status_and_retry_after(client, up):
    up.enqueue(Reply.json({"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}, 429,
                          headers={"Retry-After": "7"}))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="up", messages=USER)
    assert info.value.response.headers["retry-after"] == "7"


def test_upstream_credential_rejection_does_not_blame_the_client(client, up):
    up.enqueue(Reply.json({"error": {"message": "Incorrect API key provided: sk-test-upstream-secret"}}, 401))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="up", messages=USER)
    assert info.value.status_code == 502  # the gateway's key is wrong, not the caller's
    assert "sk-test-upstream-secret" not in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    # ... so an SDK with retries on gives up at once instead of hammering the provider.
    up.enqueue(Reply.json({"error": {"message": "Incorrect API key"}}, 401))
    with OpenAI(base_url=client.base_url, api_key="k", max_retries=2, timeout=20) as retrying:
        with pytest.raises(openai.APIStatusError):
            retrying.chat.completions.create(model="up", messages=USER)
    assert len(up.requests) == 2


def test_upstream_error_mid_stream_raises_api_error(client, up, gw, settle_path):
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "partial"}),
                          {"error": {"message": "upstream overloaded", "type": "server_error", "code": "overloaded"}}],
                         done=None))
    got: List[str] = []
    request_id = rid()
    with pytest.raises(openai.APIError) as info:
        for c in client.chat.completions.create(model="up", messages=USER, stream=True,
                                                extra_headers={"x-request-id": request_id}):
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "upstream overloaded" in info.value.message
    assert "".join(got) == "partial"
    rows = settled(settle_path, request_id)
    assert [(r["outcome"], r["streamed"]) for r in rows] == [("upstream_error", True)]
    # The gateway survived and logged no traceback; the next request works.
    up.enqueue(Reply.json(openai_completion("after the error")))
    assert client.chat.completions.create(model="up", messages=USER).choices[0].message.content == "after the error"
    assert_clean_log(gw)


def raw_stream(gw: GatewayProcess, model: str = "up", request_id: str = "") -> List[Any]:
    with requests.post(gw.url + "/v1/chat/completions", json={"model": model, "messages": USER, "stream": True},
                       headers={"x-request-id": request_id or rid()}, stream=True, timeout=20) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Accel-Buffering"] == "no"
        frames = []
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                data = line[6:].decode()
                frames.append(data if data == "[DONE]" else json.loads(data))
        return frames


def test_stream_cut_without_done_is_an_error_frame(client, up, gw, settle_path):
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "half"}),
                          openai_chunk({}, "stop")], done=None))
    request_id = rid()
    frames = raw_stream(gw, request_id=request_id)
    assert [r["outcome"] for r in settled(settle_path, request_id)] == ["upstream_error"]
    assert frames[-1] != "[DONE]" and "error" in frames[-1]
    assert "DONE" in frames[-1]["error"]["message"]
    assert not any(isinstance(f, dict) and f.get("choices") and f["choices"][0]["finish_reason"] for f in frames), \
        "a cut stream must not be dressed up as a normal finish"
    up.enqueue(Reply.sse([openai_chunk({"content": "half"})], done=None))
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="up", messages=USER, stream=True))
    assert_clean_log(gw)


def test_connection_reset_mid_stream_is_an_error_frame(up, gw, settle_path):
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "a"}),
                          openai_chunk({"content": "b"}), openai_chunk({}, "stop")], reset_after=2))
    request_id = rid()
    frames = raw_stream(gw, request_id=request_id)
    assert [r["outcome"] for r in settled(settle_path, request_id)] == ["upstream_error"]
    assert "".join(f["choices"][0]["delta"].get("content", "") for f in frames[:-1] if f.get("choices")) == "a"
    assert "error" in frames[-1] and frames[-1]["error"]["message"]
    assert_clean_log(gw)


def test_upstream_5xx_before_stream_keeps_http_status(client, up):
    up.enqueue(Reply.json({"error": {"message": "overloaded"}}, 503, headers={"Retry-After": "1"}))
    with pytest.raises(openai.InternalServerError) as info:
        list(client.chat.completions.create(model="up", messages=USER, stream=True))
    assert info.value.status_code == 503


# --- the HTTP edge under gunicorn ---------------------------------------------------------------


def test_oversized_bodies_are_413_under_gunicorn(gw):
    big = json.dumps({"model": "default", "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    r = requests.post(gw.url + "/v1/chat/completions", data=big, headers={"Content-Type": "application/json"},
                      timeout=20)
    assert r.status_code == 413 and r.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = requests.post(gw.url + "/v1/chat/completions", data=chunked(), headers={"Content-Type": "application/json"},
                      timeout=20)
    assert r.status_code == 413 and r.json()["error"]["message"]


def test_chunked_request_body_is_read(gw):
    body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "chunked"}]}).encode()
    r = requests.post(gw.url + "/v1/chat/completions", data=iter([body[:10], body[10:]]),
                      headers={"Content-Type": "application/json"}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "You said: chunked"


def test_errors_under_gunicorn_are_json(gw):
    for method, path, status in (("GET", "/nope", 404), ("GET", "/v1/chat/completions", 405)):
        r = requests.request(method, gw.url + path, timeout=10)
        assert r.status_code == status and r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"]["message"]
    r = requests.post(gw.url + "/v1/chat/completions", data=b"{bad", headers={"Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    assert_clean_log(gw)


def test_client_disconnect_mid_stream_is_settled_once(up, gw, settle_path):
    chunks = [openai_chunk({"role": "assistant", "content": ""})] + [openai_chunk({"content": f"w{i} "})
                                                                      for i in range(40)]
    up.enqueue(Reply.sse(chunks + [openai_chunk({}, "stop")], chunk_delay=0.05))
    request_id = rid()
    with requests.post(gw.url + "/v1/chat/completions", json={"model": "up", "messages": USER, "stream": True},
                       headers={"x-request-id": request_id}, stream=True, timeout=20) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: "))
        assert b"chat.completion.chunk" in first
    # We hung up after one frame; the gateway notices on its next write and settles from the close path.
    rows = settled(settle_path, request_id, timeout=10)
    assert [r["outcome"] for r in rows] == ["client_disconnected"]
    assert_clean_log(gw)


def test_successful_requests_are_settled_exactly_once(client, gw, settle_path):
    a, b = rid(), rid()
    client.chat.completions.create(model="default", messages=USER, extra_headers={"x-request-id": a})
    list(client.chat.completions.create(model="default", messages=USER, stream=True,
                                        extra_headers={"x-request-id": b}))
    assert [(r["outcome"], r["streamed"]) for r in settled(settle_path, a)] == [("success", False)]
    assert [(r["outcome"], r["streamed"]) for r in settled(settle_path, b)] == [("success", True)]


def test_upstream_silent_before_headers_is_504(client, up):
    up.enqueue(Reply(hang=1.5))
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="slow", messages=USER)
    assert info.value.status_code == 504
    assert time.monotonic() - t0 < 1.4, "the read timeout (0.5 s) bounds the wait"


def test_upstream_stalling_mid_stream_is_an_error_frame(up, gw, settle_path):
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": "x"}), openai_chunk({"content": "a"}),
                          openai_chunk({"content": "b"})], chunk_delay=1.5))
    request_id = rid()
    frames = raw_stream(gw, model="slow", request_id=request_id)
    assert "error" in frames[-1] and "timeout" in frames[-1]["error"]["message"]
    assert [r["outcome"] for r in settled(settle_path, request_id)] == ["upstream_error"]


@pytest.mark.parametrize("reply", [
    Reply(200, {"Content-Type": "application/json"}, b"<html>not json</html>"),
    Reply.json({"id": "x", "object": "chat.completion", "choices": []}),
    Reply(502, {"Content-Type": "text/html"}, b"<html><body>Bad Gateway</body></html>"),
])
def test_invalid_upstream_response_is_502(client, up, reply):
    up.enqueue(reply)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="up", messages=USER)
    assert info.value.status_code == 502
    assert info.value.message


def test_concurrent_streams_do_not_mix(gw):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        with OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=30) as c:
            chunks = c.chat.completions.create(model="default", stream=True,
                                               messages=[{"role": "user", "content": f"request number {i}"}])
            return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(24)))
    assert results == [f"You said: request number {i}" for i in range(24)]
