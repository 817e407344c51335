"""max_requests recycling while a stream is open: the replacement worker starts at once, nothing waits for the stream."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any, Dict, List

import pytest
import requests

from tests.support.nginx import children_of
from tests.support.upstream import RecordedRequest, Reply, openai_chunk, openai_completion
from tests.test_deploy_e2e import upstream_config


def _reply(req: RecordedRequest) -> Reply:
    if (req.json or {}).get("stream"):
        parts = [openai_chunk({"content": f"t{i} "}) for i in range(30)] + [openai_chunk({}, "stop")]
        return Reply.sse(parts, chunk_delay=0.25)  # about 7.5 s
    return Reply.json(openai_completion("ok"))


@pytest.mark.e2e
def test_a_worker_recycled_mid_stream_is_replaced_before_the_stream_ends(gateway_process: Any, upstream: Any) -> None:
    upstream.default = _reply
    gw = gateway_process(upstream_config(upstream.url), workers=1, threads=8,
                         env={"ROUTEPLANE_MAX_REQUESTS": "3", "ROUTEPLANE_GRACEFUL_TIMEOUT": "30"})
    assert gw.proc is not None
    first_worker = children_of(gw.proc.pid)
    stream: Dict[str, Any] = {}

    def read_stream() -> None:
        with requests.post(gw.url + "/v1/chat/completions", stream=True, timeout=60,
                           json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            stream["body"] = b"".join(r.iter_content(chunk_size=None))
        stream["ended"] = time.monotonic()

    reader = threading.Thread(target=read_stream)
    reader.start()
    time.sleep(0.5)
    latencies: List[float] = []
    for _ in range(5):  # the worker retires at its 3rd or 4th request, the stream still open
        t0 = time.monotonic()
        r = requests.post(gw.url + "/v1/chat/completions", timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        latencies.append(time.monotonic() - t0)
        assert r.status_code == 200, r.text
    finished_at = time.monotonic()
    reader.join(30)
    assert stream["body"].rstrip().endswith(b"data: [DONE]") and b"shutting_down" not in stream["body"]
    # Without the early replacement the request after the recycle waited for the stream's end (~6 s).
    assert max(latencies) < 4.0, latencies
    assert finished_at < stream["ended"], "the stream ended first: the test proves nothing"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(children_of(gw.proc.pid)) != 1 or
                                           children_of(gw.proc.pid) == first_worker):
        time.sleep(0.1)
    assert len(children_of(gw.proc.pid)) == 1, "the extra worker was not given back"
    assert "Traceback" not in gw.logs(), gw.logs()


@pytest.fixture
def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    for name in list(os.environ):
        if name.startswith("ROUTEPLANE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    import routeplane.gunicorn_conf as conf

    monkeypatch.setattr(conf, "_private_dir", [str(tmp_path)])
    sent: List[Any] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(conf, "sent", sent, raising=False)  # what announce_recycle signalled
    return conf


class _Master:
    def __init__(self, workers: int) -> None:
        self.num_workers = workers
        self.cfg = SimpleNamespace(workers=workers)
        self.wakeups = 0

    def wakeup(self) -> None:
        self.wakeups += 1


def test_the_master_adds_a_slot_per_retiring_worker_and_gives_it_back(conf: Any) -> None:
    master, worker = _Master(2), SimpleNamespace(pid=4242, ppid=99)
    conf.announce_recycle(worker)
    assert conf.sent == [(99, conf.RECYCLE_SIGNAL)]
    conf._start_replacements(master)
    conf._start_replacements(master)  # counted once
    assert master.num_workers == 3 and master.wakeups == 2
    conf.child_exit(master, SimpleNamespace(pid=1))  # another worker's exit changes nothing
    assert master.num_workers == 3
    conf.child_exit(master, worker)
    assert master.num_workers == 2


def test_a_worker_gone_before_the_master_counted_it_adds_no_slot(conf: Any) -> None:
    master, worker = _Master(2), SimpleNamespace(pid=4243, ppid=99)
    conf.announce_recycle(worker)
    conf.child_exit(master, worker)  # SIGCHLD handled before the recycle signal
    conf._start_replacements(master)
    assert master.num_workers == 2


def test_a_reload_during_the_drain_keeps_the_configured_count(conf: Any) -> None:
    master, worker = _Master(2), SimpleNamespace(pid=4244, ppid=99)
    conf.announce_recycle(worker)
    conf._start_replacements(master)
    master.num_workers = 2  # HUP: gunicorn's setup() resets the count to the setting
    conf._replacements.new_generation(master)  # what on_reload does
    conf.child_exit(master, worker)
    assert master.num_workers == 2


def test_the_recycle_signal_is_not_one_gunicorn_uses(conf: Any) -> None:
    from gunicorn.arbiter import Arbiter

    assert conf.RECYCLE_SIGNAL not in Arbiter.SIGNALS + [signal.SIGCHLD]
