"""Resilience under real gunicorn: fallback and timeouts over real sockets, and HUP reload under load."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from typing import Any, Dict, Iterator, List

import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ups() -> Iterator[Any]:
    a, b = FakeUpstream().start(), FakeUpstream().start()
    yield a, b
    a.stop()
    b.stop()


def gateway_config(a_url: str, b_url: str, **extra: Any) -> Dict[str, Any]:
    fast = {"connect": 1.0, "read": 0.8}
    return {
        "server": {"log_level": "warning"},
        "providers": {
            "a": {"protocol": "openai_chat", "base_url": a_url + "/v1", "timeouts": dict(fast)},
            "b": {"protocol": "openai_chat", "base_url": b_url + "/v1", "timeouts": dict(fast)},
            "local": {"protocol": "mock"},
        },
        "models": {
            "ab": {"targets": [{"provider": "a", "model": "ma"}, {"provider": "b", "model": "mb"}]},
            "a-only": {"targets": [{"provider": "a", "model": "ma"}]},
            "stable": {"targets": [{"provider": "local", "model": "echo"}]},
            "before": {"targets": [{"provider": "local", "model": "echo"}]},
        },
        "fallback": {"cooldown": {"failures": 0}},  # deterministic per request in this module
        **extra,
    }


@pytest.fixture(scope="module")
def gw(ups: Any) -> Iterator[GatewayProcess]:
    a, b = ups
    g = GatewayProcess(gateway_config(a.url, b.url), workers=1, threads=8).start()
    yield g
    g.stop()


def chat(gw: GatewayProcess, model: str, stream: bool = False, timeout: float = 10) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", timeout=timeout,
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})


def sse_payloads(text: str) -> List[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def reset_queues(*ups: FakeUpstream) -> None:
    for u in ups:
        u._queue.clear()
        u.requests.clear()


def test_e2e_503_then_fallback_and_all_429(gw, ups):
    a, b = ups
    reset_queues(a, b)
    a.enqueue(Reply.json({"error": {"message": "overloaded"}}, 503))
    b.enqueue(Reply.json(openai_completion("from b")))
    r = chat(gw, "ab")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "from b"
    assert r.headers["x-routeplane-target"] == "b:mb"
    assert len(a.requests) == 1 and len(b.requests) == 1

    a.enqueue(Reply.json({"error": {"message": "rl"}}, 429, headers={"Retry-After": "9"}))
    b.enqueue(Reply.json({"error": {"message": "rl"}}, 429, headers={"Retry-After": "4"}))
    r = chat(gw, "ab")
    assert r.status_code == 429 and r.headers["Retry-After"] == "4"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_e2e_hang_is_504_within_the_read_timeout(gw, ups):
    a, b = ups
    reset_queues(a, b)
    a.enqueue(Reply(hang=3.0))
    t0 = time.monotonic()
    r = chat(gw, "a-only")
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert time.monotonic() - t0 < 2.5


def test_e2e_stream_cut_mid_way_is_an_error_frame_without_fallback(gw, ups):
    a, b = ups
    reset_queues(a, b)
    chunks = [openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "par"}),
              openai_chunk({"content": "tial"}), openai_chunk({}, "stop")]
    a.enqueue(Reply.sse(chunks, reset_after=2))
    r = chat(gw, "ab", stream=True)
    assert r.status_code == 200
    events = sse_payloads(r.text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))
    assert text == "par"
    assert any(isinstance(e, dict) and e.get("error", {}).get("code") == "upstream" for e in events)
    assert "[DONE]" not in events and len(b.requests) == 0


def test_e2e_stalled_stream_gets_an_error_frame(gw, ups):
    a, b = ups
    reset_queues(a, b)
    chunks = [openai_chunk({"role": "assistant", "content": "w"}), openai_chunk({"content": "x"}),
              openai_chunk({}, "stop")]
    a.enqueue(Reply.sse(chunks, chunk_delay=3.0))
    t0 = time.monotonic()
    r = chat(gw, "a-only", stream=True)
    assert time.monotonic() - t0 < 2.5
    events = sse_payloads(r.text)
    assert any(isinstance(e, dict) and e.get("error", {}).get("code") == "timeout" for e in events)


def test_e2e_connection_refused_falls_back(ups, tmp_path):
    _, b = ups
    reset_queues(b)
    from tests.support.gateway import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    b.enqueue(Reply.json(openai_completion("alive")))
    with GatewayProcess(gateway_config(dead, b.url), workers=1, threads=4) as g:
        r = chat(g, "ab")
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "alive"


# --- HUP reload ----------------------------------------------------------------------------


class LoadLoop:
    """Threads sending requests until stopped; every outcome counted."""

    def __init__(self, url: str, threads: int = 4, model: str = "stable", keepalive: bool = False) -> None:
        self.url, self.model, self.keepalive = url, model, keepalive
        self.ok = 0
        self.failures: List[str] = []
        self.statuses: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session() if self.keepalive else None
        body = {"model": self.model, "messages": [{"role": "user", "content": "load"}]}
        try:
            while not self._stop.is_set():
                try:
                    post = session.post if session is not None else requests.post
                    r = post(self.url + "/v1/chat/completions", json=body, timeout=10)
                    good = r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "You said: load"
                    with self._lock:
                        self.statuses[r.status_code] += 1
                        if good:
                            self.ok += 1
                        else:
                            self.failures.append(f"{r.status_code} {r.text[:200]}")
                except requests.RequestException as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
        finally:
            if session is not None:
                session.close()

    def __enter__(self) -> "LoadLoop":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def worker_pids(gw: GatewayProcess) -> set:
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(gw.proc.pid)], stdout=subprocess.PIPE, text=True)
    return {int(p) for p in out.stdout.split()}


def models(gw: GatewayProcess) -> List[str]:
    return [m["id"] for m in requests.get(gw.url + "/v1/models", timeout=5).json()["data"]]


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("keepalive", [False, True], ids=["new-connections", "keep-alive"])
def test_hup_reload_under_load_drops_nothing(ups, keepalive):
    a, b = ups
    reset_queues(a, b)
    slow = [openai_chunk({"role": "assistant", "content": ""})] + [openai_chunk({"content": f"{i} "})
                                                                  for i in range(6)] + [openai_chunk({}, "stop")]
    a.enqueue(Reply.sse(slow, chunk_delay=0.4))  # a stream open across the HUP: ~2.4 s
    config = gateway_config(a.url, b.url)
    with GatewayProcess(config, workers=2, threads=8) as g:
        old_workers = worker_pids(g)
        assert "after" not in models(g)
        streamed: Dict[str, Any] = {}

        def long_stream() -> None:
            r = chat(g, "a-only", stream=True, timeout=15)
            streamed["status"], streamed["events"] = r.status_code, sse_payloads(r.text)

        streamer = threading.Thread(target=long_stream)
        with LoadLoop(g.url, threads=4, keepalive=keepalive) as load:
            streamer.start()
            time.sleep(1.0)
            new_config = dict(config, models=dict(config["models"], after=config["models"]["stable"]))
            del new_config["models"]["before"]
            g.write_config(new_config)
            hup_at = time.monotonic()
            g.signal(signal.SIGHUP)
            assert wait_for(lambda: "after" in models(g), timeout=45), g.logs()
            reloaded_in = time.monotonic() - hup_at
            time.sleep(1.5)  # keep the load going on the new workers
        streamer.join(15)
        assert wait_for(lambda: not (worker_pids(g) & old_workers), timeout=45), "old workers did not exit"
        assert g.proc.poll() is None
        total = load.ok + len(load.failures)
        print(f"HUP under load ({'keep-alive' if keepalive else 'new connections'}): {total} requests, "
              f"{load.ok} ok, {len(load.failures)} failed, new config live after {reloaded_in:.2f} s")
        assert load.failures == [], load.failures[:5]
        assert load.ok > 50
        # the stream that was open across the HUP finished normally on its old worker
        assert streamed["status"] == 200 and streamed["events"][-1] == "[DONE]"
        assert "before" not in models(g) and chat(g, "after").status_code == 200
        assert chat(g, "before").status_code == 404


def test_hup_with_a_broken_config_keeps_serving_the_previous_one(ups):
    a, b = ups
    config = gateway_config(a.url, b.url)
    with GatewayProcess(config, workers=1, threads=4) as g:
        old = worker_pids(g)
        with open(g.config_path, "w") as fh:
            fh.write("providers: {x: {protocol: nope}}\nmodels: {}\n")
        g.signal(signal.SIGHUP)
        assert wait_for(lambda: worker_pids(g) and not (worker_pids(g) & old), timeout=45), g.logs()
        assert g.proc.poll() is None, g.logs()
        assert chat(g, "before").status_code == 200  # the previous config still serves
        assert "is invalid, keeping the previous config" in g.logs()
        assert "providers.x.protocol" in g.logs()
        # fixing the file and HUP again applies it
        new_config = dict(config, models=dict(config["models"], after=config["models"]["stable"]))
        g.write_config(new_config)
        g.signal(signal.SIGHUP)
        assert wait_for(lambda: "after" in models(g), timeout=45), g.logs()
        assert os.path.basename(str(g.config_path)) == "routeplane.yaml"
