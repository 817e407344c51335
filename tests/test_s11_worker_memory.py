"""The per-worker memory budget: when it reads the RSS, and what it says."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
import requests

from routeplane import worker_memory
from routeplane.worker_memory import MemoryBudget, rss_mb
from tests.support.nginx import children_of
from tests.support.upstream import RecordedRequest, Reply, openai_chunk, openai_completion
from tests.test_deploy_e2e import upstream_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reads:
    def __init__(self, values: List[Optional[float]]) -> None:
        self.values = values
        self.calls = 0

    def __call__(self) -> Optional[float]:
        self.calls += 1
        return self.values.pop(0)


def test_rss_is_read_at_most_once_per_interval() -> None:
    clock, reads = Clock(), Reads([50.0, 300.0])
    budget = MemoryBudget(200, every=5.0, clock=clock, read=reads)
    assert budget.exceeded() is None and reads.calls == 0  # the first check is one interval after start
    clock.now += 5.0
    assert budget.exceeded() is None and reads.calls == 1  # 50 MB: under
    clock.now += 4.9
    assert budget.exceeded() is None and reads.calls == 1  # not due yet
    clock.now += 0.1
    assert budget.exceeded() == 300.0 and reads.calls == 2


def test_a_limit_of_zero_never_reads() -> None:
    clock, reads = Clock(), Reads([])
    budget = MemoryBudget(0, every=1.0, clock=clock, read=reads)
    clock.now += 100
    assert budget.exceeded() is None and reads.calls == 0


def test_no_proc_means_no_verdict() -> None:
    clock = Clock()
    budget = MemoryBudget(1, every=1.0, clock=clock, read=lambda: None)
    clock.now += 1
    assert budget.exceeded() is None


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_rss_mb_reads_this_process() -> None:
    before = rss_mb()
    block = bytearray(64 * 1024 * 1024)  # touched: resident
    for i in range(0, len(block), 4096):
        block[i] = 1
    after = rss_mb()
    assert before is not None and after is not None
    assert after - before > 48
    del block


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(worker_memory.ENV, raising=False)
    assert worker_memory.limit_from_env() == worker_memory.DEFAULT_MB
    monkeypatch.setenv(worker_memory.ENV, "0")
    assert worker_memory.limit_from_env() == 0
    monkeypatch.setenv(worker_memory.ENV, "256")
    assert worker_memory.limit_from_env() == 256


# --- under gunicorn: a worker over its budget retires, its replacement serves, its stream ends whole ----------


def _reply(req: RecordedRequest) -> Reply:
    if (req.json or {}).get("stream"):
        parts = [openai_chunk({"content": f"t{i} "}) for i in range(28)] + [openai_chunk({}, "stop")]
        return Reply.sse(parts, chunk_delay=0.25)  # about 7 s: open across the first check (5 s)
    return Reply.json(openai_completion("ok"))


@pytest.mark.e2e
def test_a_worker_over_its_memory_budget_is_replaced_and_its_stream_ends_whole(gateway_process: Any,
                                                                             upstream: Any) -> None:
    upstream.default = _reply
    # 1 MB: every worker is over it at its first check, five seconds after it starts.
    gw = gateway_process(upstream_config(upstream.url), workers=1, threads=8,
                         env={worker_memory.ENV: "1", "ROUTEPLANE_MAX_REQUESTS": "0"})
    assert gw.proc is not None
    first = children_of(gw.proc.pid)
    body: Dict[str, bytes] = {}
    body_ended: List[float] = []

    def read_stream() -> None:
        with requests.post(gw.url + "/v1/chat/completions", stream=True, timeout=60,
                           json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            body["stream"] = b"".join(r.iter_content(chunk_size=None))
        body_ended.append(time.monotonic())

    reader = threading.Thread(target=read_stream)
    reader.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "recycling it once its open requests end" not in gw.logs():
        time.sleep(0.2)
    assert f"over {worker_memory.ENV}=1" in gw.logs(), gw.logs()
    latencies = []
    for _ in range(3):  # the replacement serves while the retiring worker finishes its stream
        t0 = time.monotonic()
        r = requests.post(gw.url + "/v1/chat/completions", timeout=10,
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        latencies.append(time.monotonic() - t0)
        assert r.status_code == 200, r.text
    served_at = time.monotonic()
    reader.join(30)
    assert served_at < body_ended[0], "the stream ended first: the test proves nothing"
    assert max(latencies) < 4.0, latencies  # not queued behind the retiring worker's stream
    assert body["stream"].rstrip().endswith(b"data: [DONE]") and b"shutting_down" not in body["stream"]
    assert children_of(gw.proc.pid) != first
    assert "Traceback" not in gw.logs()


def test_the_start_refuses_a_limit_that_is_not_a_whole_number(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    env[worker_memory.ENV] = "lots"
    r = subprocess.run([sys.executable, "-c", "import routeplane.gunicorn_conf"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and f"{worker_memory.ENV} must be a whole number" in r.stderr, r.stderr
