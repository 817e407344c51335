"""Real gunicorn under hostile load: an upstream that fails at random, clients that vanish or send garbage,
and the configured limits; no 500s, one spend row per request, open-stream slots released, RSS measured."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e

LOAD_SECONDS = float(os.environ.get("HARDENING_LOAD_SECONDS") or 12)
LOAD_MAX_REQUESTS = int(os.environ.get("HARDENING_LOAD_MAX") or 600)
MAX_STREAMS = 6  # per worker, one worker
UP_KEY = "sk-hardening-upstream-0123456789abcdef"
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def chaos(rng: random.Random) -> Any:
    """The fake provider: answers well half the time; otherwise errors, stalls, resets, truncations, junk."""
    lock = threading.Lock()

    def reply(req: RecordedRequest) -> Reply:
        stream = bool((req.json or {}).get("stream"))
        if (req.json or {}).get("model") == "huge":  # over limits.max_response_bytes
            return Reply.json(openai_completion("a" * (2 * 1024 * 1024), usage=USAGE))
        if (req.json or {}).get("model") == "slow":
            words = [openai_chunk({"content": f"w{i} "}) for i in range(40)]
            return Reply.sse([openai_chunk({"role": "assistant", "content": ""})] + words
                             + [openai_chunk({}, "stop"), openai_chunk(None, usage=USAGE)], chunk_delay=0.1)
        with lock:
            roll = rng.random()
        if roll < 0.5:
            if stream:
                return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "ok"}),
                                  openai_chunk({}, "stop"), openai_chunk(None, usage=USAGE)])
            return Reply.json(openai_completion("ok", usage=USAGE))
        if roll < 0.58:
            return Reply.json({"error": {"message": "boom", "type": "server_error"}}, 500)
        if roll < 0.64:
            return Reply.json({"error": {"message": "busy", "type": "server_error"}}, 503, headers={"Retry-After": "1"})
        if roll < 0.70:
            return Reply.json({"error": {"message": "slow down", "type": "rate_limit"}}, 429,
                              headers={"Retry-After": "2"})
        if roll < 0.76:
            return Reply(hang=1.2)  # stall past the 0.4 s read timeout
        if roll < 0.82:
            return Reply(reset=True)
        if roll < 0.88:
            return Reply(200, {"Content-Type": "application/json"}, b'{"choices": [{"mess')  # truncated JSON
        if stream and roll < 0.94:  # stream cut after the first event
            return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "par"}),
                              openai_chunk({"content": "tial"})], reset_after=2)
        if stream:  # no [DONE], no finish_reason: the stream just ends
            return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "x"})],
                             done=None)
        return Reply(200, {"Content-Type": "application/json"}, b"\xff\xfenot json")
    return reply


def gateway_config(db_url: str, up_url: str) -> Dict[str, Any]:
    return {
        "database": {"url": db_url},
        "providers": {"up": {"protocol": "openai_chat", "base_url": up_url + "/v1", "api_key": UP_KEY,
                             "timeouts": {"connect": 1, "read": 0.4}, "prices": {"input": 1, "output": 1}},
                      "mock": {"protocol": "mock"}},
        "models": {"chaos": {"targets": [{"provider": "up", "model": "chaos"}]},
                   "slow": {"targets": [{"provider": "up", "model": "slow"}]},
                   "huge": {"targets": [{"provider": "up", "model": "huge"}]},
                   "mock-echo": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "fallback": {"cooldown": {"failures": 0}},  # every request reaches the chaos upstream
        "limits": {"max_open_streams": MAX_STREAMS, "max_json_depth": 32, "max_messages": 50, "max_tools": 4,
                   "max_parts": 60, "max_header_bytes": 2048, "max_response_bytes": 1024 * 1024},
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[GatewayProcess, FakeUpstream, str]]:
    up = FakeUpstream().start()
    up.default = chaos(random.Random(1606))
    db = f"sqlite:///{tmp_path_factory.mktemp('hardening')}/rp.db"
    gw = GatewayProcess(gateway_config(db, up.url), workers=1, threads=32,
                        env={"ROUTEPLANE_ACCESS_LOG": "-"}).start()
    try:
        yield gw, up, db
    finally:
        gw.stop()
        up.stop()


def worker_pids(gw: GatewayProcess) -> List[int]:
    assert gw.proc is not None
    with open(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def count_rows(db: str, prefix: str, expected: int, wait: float = 20.0) -> List[Dict[str, Any]]:
    """The spend rows whose request id starts with `prefix`, once `expected` arrived (or the wait ran out)."""
    store = Store.from_url(db)
    try:
        deadline = time.monotonic() + wait
        rows: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [r for r in spend_rows(store) if str(r["request_id"]).startswith(prefix)]
            if len(rows) >= expected:
                break
            time.sleep(0.2)
        time.sleep(0.3)
        return [r for r in spend_rows(store) if str(r["request_id"]).startswith(prefix)]
    finally:
        store.close()


def chat(stream: bool, content: str = "hi", model: str = "chaos") -> Dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}


def one_load_request(base: str, rid: str, rng: random.Random) -> Tuple[int, str]:
    """One request on a random wire; returns (status, outcome) where outcome is 'ok', 'error_frame' or the type."""
    stream = rng.random() < 0.5
    if rng.random() < 0.3:
        path, body = "/v1/messages", {"model": "chaos", "max_tokens": 20, "stream": stream,
                                      "messages": [{"role": "user", "content": "hi"}]}
    else:
        path, body = "/v1/chat/completions", chat(stream)
    with requests.post(base + path, json=body, headers={"x-request-id": rid}, stream=stream, timeout=30) as resp:
        raw = resp.content
    if resp.status_code != 200:
        assert resp.headers.get("Content-Type", "").startswith("application/json"), raw[:200]
        err = json.loads(raw)
        kind = str(err["error"]["type"])
        if "streams open" in err["error"]["message"]:
            kind = "too_many_streams"  # refused at admission by limits.max_open_streams: not served
        return resp.status_code, kind
    if stream:
        text = raw.decode()
        if '"error"' in text and ("event: error" in text or '"error":' in text):
            return 200, "error_frame"
    return 200, "ok"


def test_upstream_chaos_under_load(env: Tuple[GatewayProcess, FakeUpstream, str], capsys: Any) -> None:
    gw, _up, db = env
    workers = worker_pids(gw)
    rss_start = {pid: rss_kib(pid) for pid in workers}
    run = "load-" + uuid.uuid4().hex[:6]
    deadline = time.monotonic() + LOAD_SECONDS
    counter = iter(range(LOAD_MAX_REQUESTS))
    half = LOAD_MAX_REQUESTS // 2
    rss_mid: Dict[int, int] = {}
    results: List[Tuple[int, str]] = []
    sent: Dict[str, Tuple[int, str]] = {}
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
                if i == half:  # halfway: the second half must not grow the worker like the first
                    rss_mid.update({pid: rss_kib(pid) for pid in workers})
            if i is None:
                return
            outcome = one_load_request(gw.url, f"{run}-{i}", rng)
            with lock:
                results.append(outcome)
                sent[f"{run}-{i}"] = outcome

    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(client, range(12)))
    n = len(results)
    rows = count_rows(db, run, n)
    rss_end = {pid: rss_kib(pid) for pid in workers}
    statuses: Dict[str, int] = {}
    for status, outcome in results:
        key = f"{status} {outcome}"
        statuses[key] = statuses.get(key, 0) + 1
    have = {r["request_id"] for r in rows}
    missing: Dict[str, int] = {}
    for rid, (status, outcome) in sent.items():
        if rid not in have:
            missing[f"{status} {outcome}"] = missing.get(f"{status} {outcome}", 0) + 1
    report = {"requests": n, "not_admitted": missing, "seconds": LOAD_SECONDS, "statuses": statuses, "spend_rows": len(rows),
              "distinct_request_ids": len({r["request_id"] for r in rows}),
              "rss_kib_start": rss_start, "rss_kib_half": rss_mid,
              "rss_kib_end": rss_end}
    with capsys.disabled():
        print("\nhardening load:", json.dumps(report, sort_keys=True))
    assert n >= 50, report
    assert all(s in (200, 429, 502, 503, 504, 529) for s, _ in results), report
    assert not any(s >= 500 and s not in (502, 503, 504, 529) for s, _ in results), report
    assert any(o == "ok" for _, o in results) and any(s != 200 for s, _ in results), report
    refused = sum(1 for _, o in results if o == "too_many_streams")
    assert len(rows) == n - refused and len({r["request_id"] for r in rows}) == n - refused, report
    assert not [k for k in missing if not k.endswith("too_many_streams")], report
    assert worker_pids(gw) == workers, "a worker died under load"
    # Flat: a few MiB of warm-up (pools, caches) at most, not growth with the request count.
    assert all(rss_end[p] - rss_start[p] < 40 * 1024 for p in workers), report
    if rss_mid:  # (the time bound can end the run before half the requests)
        assert all(rss_end[p] - rss_mid[p] < 12 * 1024 for p in workers), report
    assert "Traceback" not in gw.logs(), gw.logs()[-3000:]


def raw_http(gw: GatewayProcess, payload: bytes, read: bool = True, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as sock:
        sock.sendall(payload)
        if not read:
            return b""
        out = b""
        try:
            while len(out) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        return out


def post_head(path: str, length: int, rid: str = "x") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"x-request-id: {rid}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def open_streams_all_free(gw: GatewayProcess) -> List[int]:
    """MAX_STREAMS slow streams at once all open (200), and one more gets 429: the counter is back to 0."""
    responses = []
    try:
        for i in range(MAX_STREAMS):
            r = requests.post(gw.url + "/v1/chat/completions", json=chat(True, model="slow"), stream=True, timeout=10,
                              headers={"x-request-id": f"probe-{uuid.uuid4().hex[:6]}-{i}"})
            responses.append(r)
        extra = requests.post(gw.url + "/v1/chat/completions", json=chat(True, model="slow"), timeout=10,
                              headers={"x-request-id": f"probe-{uuid.uuid4().hex[:6]}-x"})
        statuses = [r.status_code for r in responses] + [extra.status_code]
        if extra.status_code == 429:
            assert extra.headers.get("Retry-After") == "1"
            assert extra.json()["error"]["code"] == "too_many_streams"
        anth = requests.post(gw.url + "/v1/messages", timeout=10, json={
            "model": "slow", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        statuses.append(anth.status_code)
        if anth.status_code == 429:
            assert anth.json()["type"] == "error" and anth.headers.get("Retry-After") == "1"
        return statuses
    finally:
        for r in responses:
            r.close()


def test_client_faults_are_settled_and_release_stream_slots(env: Tuple[GatewayProcess, FakeUpstream, str]) -> None:
    gw, _up, db = env
    run = "cf-" + uuid.uuid4().hex[:6]
    body = json.dumps(chat(True, model="slow")).encode()
    # 1. Half a body, then close: never reaches the pipeline, nothing to settle, no worker stuck.
    for i in range(5):
        raw_http(gw, post_head("/v1/chat/completions", len(body), f"{run}-half-{i}") + body[: len(body) // 2],
                 read=False)
    # 2. Hang up mid-stream: settled (client_disconnected) and the slot freed.
    mid = 8
    refused = 0
    for i in range(mid):
        for _attempt in range(50):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
                sock.sendall(post_head("/v1/chat/completions", len(body), f"{run}-mid-{i}") + body)
                seen = b""
                while b"data:" not in seen and b"\r\n\r\n{" not in seen:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    seen += chunk
            if seen.startswith(b"HTTP/1.1 200"):
                break
            # Slots of the streams hung up before are freed when the worker's next write fails.
            assert seen.startswith(b"HTTP/1.1 429"), seen[:300]
            refused += 1
            time.sleep(0.1)
    assert refused < 40, refused
    # 3. Slow readers: read one byte a while, then everything; still complete and settled once.
    slow = 3

    def slow_reader(i: int) -> bytes:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.sendall(post_head("/v1/chat/completions", len(body), f"{run}-slow-{i}") + body)
            out = b""
            for _ in range(20):
                out += sock.recv(1)
                time.sleep(0.05)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return out
                out += chunk
    with ThreadPoolExecutor(max_workers=slow) as pool:
        outs = list(pool.map(slow_reader, range(slow)))
    assert all(b"data: [DONE]" in o for o in outs), [o[-200:] for o in outs]
    # 4. Pipelined garbage on one connection: a 4xx or a closed socket, never a 500 or a hang.
    garbage = [b"GARBAGE\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
               b"\x00\xff\xfe" * 100 + b"\r\n\r\n",
               post_head("/v1/chat/completions", 5) + b"{]}}}" + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3,
               b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n",
               b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n"]
    for g in garbage:
        out = raw_http(gw, g)
        assert b" 500 " not in out.split(b"\r\n", 1)[0], out[:300]
        assert out == b"" or out.startswith(b"HTTP/1.1 4") or out.startswith(b"HTTP/1.0 4"), out[:300]
    rows = count_rows(db, run, mid + slow)
    by_kind: Dict[str, List[str]] = {}
    for r in rows:
        by_kind.setdefault(r["request_id"].split("-")[2], []).append(r["outcome"])
    assert sorted(by_kind) == ["mid", "slow"], by_kind
    assert len(by_kind["mid"]) == mid and set(by_kind["mid"]) == {"client_disconnected"}, by_kind
    assert len(by_kind["slow"]) == slow and set(by_kind["slow"]) == {"success"}, by_kind
    statuses = open_streams_all_free(gw)
    assert statuses == [200] * MAX_STREAMS + [429, 429], statuses
    assert "Traceback" not in gw.logs(), gw.logs()[-3000:]


def test_limits_answer_4xx_in_the_wire_shape(env: Tuple[GatewayProcess, FakeUpstream, str]) -> None:
    gw, _up, _db = env
    url = gw.url + "/v1/chat/completions"
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    cases = [
        ({"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}], "metadata": deep}, "too_deeply_nested"),
        ({"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}] * 51}, "too_many_messages"),
        ({"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}],
          "tools": [{"type": "function", "function": {"name": f"f{i}", "parameters": {"type": "object"}}}
                    for i in range(5)]}, "too_many_tools"),
        ({"model": "mock-echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 61}]},
         "too_many_parts"),
    ]
    for body, code in cases:
        r = requests.post(url, json=body, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (code, r.status_code, r.text[:300])
    r = requests.post(url, data=b'{"model": "mock-echo", "temperature": 1e999, "messages": []}',
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    r = requests.post(gw.url + "/v1/messages", json={"model": "mock-echo", "max_tokens": 5, "messages": deep},
                      timeout=10)
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    r = requests.post(url, json=chat(False, model="huge"), timeout=10)
    assert r.status_code == 502 and "over 1048576 bytes" in r.json()["error"]["message"], r.text[:300]
    r = requests.get(gw.url + "/health", headers={"X-Big": "a" * 5000}, timeout=10)
    assert r.status_code in (400, 431), r.status_code  # gunicorn: Request Header Fields Too Large


def _error_shape(wire: str, r: requests.Response) -> str:
    """The error message, checking the body is in the wire's own error shape."""
    body = r.json()
    if wire == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        return body["error"]["message"]
    if wire == "gemini":
        assert body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["code"] == 400, body
        return body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error", body
    return body["error"]["message"]


BIG = "1" + "0" * 400  # an integer no float holds
HUGE = "1" + "0" * 5000  # past int()'s 4300-digit limit
NUMBER_CASES = [
    ("chat", "/v1/chat/completions", '{"model":"mock-echo","temperature":%s,"messages":[{"role":"user","content":"hi"}]}'),
    ("chat", "/v1/chat/completions", '{"model":"mock-echo","max_tokens":%s,"messages":[{"role":"user","content":"hi"}]}'),
    ("responses", "/v1/responses", '{"model":"mock-echo","top_p":%s,"input":"hi"}'),
    ("anthropic", "/v1/messages", '{"model":"mock-echo","max_tokens":5,"temperature":%s,'
                                  '"messages":[{"role":"user","content":"hi"}]}'),
    ("gemini", "/v1beta/models/mock-echo:generateContent",
     '{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"presencePenalty":%s}}'),
    ("gemini", "/v1beta/models/mock-echo:streamGenerateContent?alt=sse",
     '{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":%s}}'),
]


@pytest.mark.parametrize("number", [BIG, HUGE], ids=["400-digits", "5000-digits"])
@pytest.mark.parametrize("wire,path,template", NUMBER_CASES)
def test_numbers_past_a_float_are_a_400_on_every_wire(env: Tuple[GatewayProcess, FakeUpstream, str], wire: str,
                                                      path: str, template: str, number: str) -> None:
    """An integer too big for a float was a 500 (OverflowError in a codec; past 4300 digits a ValueError)."""
    gw, _up, _db = env
    r = requests.post(gw.url + path, data=(template % number).encode(), timeout=10,
                      headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400, r.text[:300]
    assert "out of range" in _error_shape(wire, r)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("metadata", [1, "x", ["a"], {"k": 1}])
def test_responses_metadata_of_the_wrong_type_is_a_400_before_any_call(env: Tuple[GatewayProcess, FakeUpstream, str],
                                                                        metadata: Any, stream: bool) -> None:
    """It was echoed onto the response object after the upstream call: a billed 500, or gunicorn's HTML page streaming."""
    gw, _up, _db = env
    r = requests.post(gw.url + "/v1/responses", timeout=10,
                      json={"model": "mock-echo", "input": "hi", "metadata": metadata, "stream": stream})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json"), r.text[:300]
    assert "metadata" in _error_shape("responses", r)
    r = requests.post(gw.url + "/v1/responses", timeout=10,
                      json={"model": "mock-echo", "input": "hi", "metadata": {"k": "v"}})
    assert r.status_code == 200 and r.json()["metadata"] == {"k": "v"}


@pytest.mark.parametrize("part", [{"fileData": {"mimeType": 1, "fileUri": "gs://b/x.png"}},
                                  {"inlineData": {"mimeType": ["image/png"], "data": "aGk="}}])
def test_gemini_media_type_of_the_wrong_type_is_a_400(env: Tuple[GatewayProcess, FakeUpstream, str],
                                                      part: Dict[str, Any]) -> None:
    gw, _up, _db = env
    r = requests.post(gw.url + "/v1beta/models/mock-echo:generateContent", timeout=10,
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}, part]}]})
    assert r.status_code == 400, r.text[:300]
    assert "mimeType" in _error_shape("gemini", r)


SURROGATE_CASES = [
    ("chat", "/v1/chat/completions", {"model": "mock-echo", "messages": [{"role": "user", "content": "a\ud800b"}]}),
    ("responses", "/v1/responses", {"model": "mock-echo", "input": "a\ud800b"}),
    ("anthropic", "/v1/messages", {"model": "mock-echo", "max_tokens": 50, "system": "s\udfff",
                                   "messages": [{"role": "user", "content": "a\ud800b"}]}),
    ("gemini", "/v1beta/models/mock-echo:generateContent", {"contents": [{"role": "user", "parts": [{"text": "a\ud800b"}]}]}),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("wire,path,body", SURROGATE_CASES)
def test_the_mock_answers_text_with_a_lone_surrogate(env: Tuple[GatewayProcess, FakeUpstream, str], wire: str,
                                                     path: str, body: Dict[str, Any], stream: bool) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); the built-in mock hashed the prompt as UTF-8 and answered 500."""
    gw, _up, _db = env
    if stream:
        path = path.replace(":generateContent", ":streamGenerateContent?alt=sse")
        body = body if wire == "gemini" else dict(body, stream=True)
    r = requests.post(gw.url + path, data=json.dumps(body).encode(), timeout=10,
                      headers={"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text[:300]
    assert "\\ud800" in r.text or "a\ud800b".encode("utf-8", "surrogatepass").decode("utf-8", "replace") in r.text


@pytest.mark.parametrize("schema", [{"type": "object", "required": True},
                                    {"type": "object", "required": [[]], "properties": {"a": {"type": "string"}}},
                                    {"type": "object", "required": ["a"], "properties": {"a": {"enum": {"x": 1}}}},
                                    {"type": "object", "required": ["a"], "properties": {"a": "string"}}])
def test_the_mock_answers_any_tool_schema(env: Tuple[GatewayProcess, FakeUpstream, str], schema: Dict[str, Any]) -> None:
    gw, _up, _db = env
    r = requests.post(gw.url + "/v1/chat/completions", timeout=10, json={
        "model": "mock-echo", "messages": [{"role": "user", "content": "call f"}], "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]})
    assert r.status_code in (200, 400), r.text[:300]
    if r.status_code == 200:
        assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"


@pytest.mark.parametrize("case", ["request-line", "one-big-header", "too-many-headers"])
def test_gunicorns_own_refusals_are_json_every_sdk_reads(env: Tuple[GatewayProcess, FakeUpstream, str],
                                                        case: str) -> None:
    """Past a header limit gunicorn answers before the app runs; that page was HTML (414/431 text/html)."""
    gw, _up, _db = env
    headers = {"Content-Type": "application/json"}
    url = gw.url + "/v1/chat/completions"
    if case == "request-line":
        url += "?q=" + "a" * 9000
    elif case == "one-big-header":
        headers["X-Big"] = "a" * 5000
    else:
        headers.update({f"X-H{i}": "v" for i in range(120)})
    r = requests.post(url, data=b"{}", headers=headers, timeout=10)
    assert r.status_code in (400, 414, 431) and r.headers["Content-Type"] == "application/json", (r.status_code, r.text)
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # Anthropic's shape
    assert body["error"]["message"] and body["error"]["code"] == r.status_code  # OpenAI's and Gemini's
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert requests.get(gw.url + "/health", timeout=10).status_code == 200
