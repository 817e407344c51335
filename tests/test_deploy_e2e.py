"""Operations under a real gunicorn: graceful close of long streams, worker recycling, /health and /ready; mounting."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, Optional

import pytest
import requests

from routeplane.config import parse_config
from tests.support.nginx import children_of
from tests.support.settle_log import read_settlements, settle_log_env
from tests.support.upstream import RecordedRequest, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e


def upstream_config(url: str, settle_path: Optional[str] = None) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {
        "server": {"log_level": "warning"},
        "providers": {"up": {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": "sk-up"}},
        "models": {"m": {"targets": [{"provider": "up", "model": "up-model"}]}},
    }
    if settle_path:
        cfg["plugins"] = {"settle_log": {"path": settle_path}}
    return cfg


def long_stream(req: RecordedRequest) -> Reply:
    parts = [openai_chunk({"role": "assistant", "content": ""})] + [openai_chunk({"content": f"t{i} "})
                                                                   for i in range(40)]
    return Reply.sse(parts, chunk_delay=0.25)  # 10 s: longer than the graceful timeout below


def sigterm_mid_stream(gateway_process, upstream, tmp_path, reply, request_id: str, started: bytes):
    """Start a stream, SIGTERM the master once `started` arrived, read to the end.

    Checks what every case shares: the stream ended with the shutting_down event
    about graceful_timeout − margin after SIGTERM, the master exited cleanly before
    graceful_timeout (no SIGKILL), and the request was settled once, as streamed.
    Returns (text, settlement).
    """
    settle_path = str(tmp_path / "settlements.jsonl")
    upstream.default = reply
    gw = gateway_process(upstream_config(upstream.url, settle_path), workers=1, threads=4,
                         env={**settle_log_env(str(tmp_path)), "ROUTEPLANE_GRACEFUL_TIMEOUT": "7"})
    body = b""
    with requests.post(gw.url + "/v1/chat/completions", stream=True, timeout=30, headers={"x-request-id": request_id},
                       json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status_code == 200
        pieces = resp.iter_content(chunk_size=None)
        while started not in body:
            body += next(pieces)
        t_term = time.monotonic()
        gw.signal(signal.SIGTERM)
        for piece in pieces:
            body += piece
    closed_after = time.monotonic() - t_term
    assert gw.proc is not None
    code = gw.proc.wait(15)
    exited_after = time.monotonic() - t_term
    text = body.decode()
    assert '"shutting_down"' in text, text[-300:]
    assert 2.5 < closed_after < 3.8, f"closed {closed_after:.2f}s after SIGTERM (graceful_timeout 7 s, margin 4 s)"
    assert code == 0 and exited_after < 7.0, (code, exited_after, gw.logs())
    assert "SIGKILL" not in gw.logs(), gw.logs()
    settled = [s for s in read_settlements(settle_path) if s["request_id"] == request_id]
    assert len(settled) == 1 and settled[0]["streamed"] is True
    return text, settled[0]


def test_sigterm_closes_a_stream_that_outlives_graceful_timeout_settled(gateway_process, upstream, tmp_path):
    text, _ = sigterm_mid_stream(gateway_process, upstream, tmp_path, long_stream, "req-long", b"data:")
    # Kept streaming through the drain, then ended with an error event: not cut, not run to the end.
    assert text.count("t1 ") and "t39 " not in text


def test_sigterm_cuts_a_silent_upstream_stream_settled_before_the_hard_kill(gateway_process, upstream, tmp_path):
    # The upstream sends its first chunk, then nothing for a minute: the stream has no
    # "next part" at which to notice the shutdown. It must still end with the error event,
    # be settled once (as cut by the gateway, not blamed on the provider), and let the
    # worker exit before graceful_timeout's SIGKILL.
    def silent(req: RecordedRequest) -> Reply:
        return Reply.sse([openai_chunk({"role": "assistant", "content": "first "}), openai_chunk({"content": "never"})],
                         chunk_delay=60)

    text, settled = sigterm_mid_stream(gateway_process, upstream, tmp_path, silent, "req-silent", b"first")
    assert "never" not in text
    assert settled["outcome"] == "aborted" and settled["status"] == 503, settled


def test_sigterm_ends_a_call_still_waiting_on_a_slow_upstream_settled(gateway_process, upstream, tmp_path):
    # A non-streaming call whose upstream takes a minute (a long reasoning answer): it
    # must not die unsettled in the SIGKILL at graceful_timeout. It gets a 503
    # shutting_down in its own protocol and is settled once, before the worker exits.
    settle_path = str(tmp_path / "settlements.jsonl")
    upstream.default = lambda req: Reply.json(openai_completion("too late"), delay=60)
    gw = gateway_process(upstream_config(upstream.url, settle_path), workers=1, threads=4,
                         env={**settle_log_env(str(tmp_path)), "ROUTEPLANE_GRACEFUL_TIMEOUT": "7"})
    answer: Dict[str, Any] = {}

    def call() -> None:
        r = requests.post(gw.url + "/v1/chat/completions", timeout=30, headers={"x-request-id": "req-slow"},
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        answer.update(status=r.status_code, body=r.json(), at=time.monotonic())

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while not upstream.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.requests, "the gateway never called the upstream"
    t_term = time.monotonic()
    assert gw.proc is not None
    gw.signal(signal.SIGTERM)
    t.join(20)
    code = gw.proc.wait(15)
    exited_after = time.monotonic() - t_term
    assert answer["status"] == 503 and answer["body"]["error"]["code"] == "shutting_down", answer
    assert 2.5 < answer["at"] - t_term < 3.8, answer["at"] - t_term
    assert code == 0 and exited_after < 7.0, (code, exited_after, gw.logs())
    assert "SIGKILL" not in gw.logs(), gw.logs()
    settled = [s for s in read_settlements(settle_path) if s["request_id"] == "req-slow"]
    assert len(settled) == 1 and settled[0]["status"] == 503 and settled[0]["streamed"] is False, settled


def test_sigterm_to_every_process_at_once_still_stops_at_once(gateway_process, upstream):
    # What a supervisor signalling the whole process group does (supervisord's stopasgroup,
    # `kill -TERM -PGID`): each worker gets SIGTERM from it and again from the master, the
    # second one while its handler still runs. That deadlocked the handler until the SIGKILL.
    upstream.default = lambda req: Reply.json(openai_completion("ok"))
    gw = gateway_process(upstream_config(upstream.url), workers=2, threads=4,
                         env={"ROUTEPLANE_GRACEFUL_TIMEOUT": "10"})
    assert gw.proc is not None
    r = requests.post(gw.url + "/v1/chat/completions", timeout=10,
                      json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    t0 = time.monotonic()
    for pid in [gw.proc.pid, *children_of(gw.proc.pid)]:
        os.kill(pid, signal.SIGTERM)
    gw.proc.wait(30)
    assert time.monotonic() - t0 < 5  # the graceful timeout (10 s) would mean a hung worker


def test_workers_recycle_after_max_requests_without_failures(gateway_process, upstream):
    upstream.default = lambda req: Reply.json(openai_completion("ok"))
    gw = gateway_process(upstream_config(upstream.url), workers=1, threads=4,
                         env={"ROUTEPLANE_MAX_REQUESTS": "20"})
    assert gw.proc is not None
    pids = set(children_of(gw.proc.pid))
    statuses = []
    with requests.Session() as s:
        for _ in range(70):  # 20 + jitter (≤ 2) per worker: at least two recycles
            r = s.post(gw.url + "/v1/chat/completions", timeout=10,
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            statuses.append(r.status_code)
            r.close()
            pids.update(children_of(gw.proc.pid))
    assert statuses == [200] * 70
    assert len(pids) >= 3, f"expected recycled workers, saw pids {pids}"


def test_health_and_ready(gateway_process, upstream):
    gw = gateway_process(upstream_config(upstream.url))
    h = requests.get(gw.url + "/health", timeout=5)
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    r = requests.get(gw.url + "/ready", timeout=5)
    body = r.json()
    assert r.status_code == 200, body
    assert body["status"] == "ready" and body["providers"] == ["up"] and body["store"] == "ok"
    assert "sk-up" not in r.text


def test_ready_is_503_without_a_usable_provider_or_store(tmp_path):
    from routeplane.app import build_app

    cfg = {"providers": {"openai": {"protocol": "openai_chat"}},
           "models": {"m": {"targets": [{"provider": "openai", "model": "gpt-4o"}]}},
           "database": {"url": f"sqlite:///{tmp_path}/ok.db"}}
    app = build_app(parse_config(cfg, "<test>"))
    client = app.flask_app().test_client()
    r = client.get("/ready")
    assert r.status_code == 503 and "no usable provider" in json.dumps(r.json["problems"])

    class Broken:
        def ping(self) -> None:
            raise OSError("connection refused to postgresql://u:secret@db/x")

    cfg["providers"]["openai"]["api_key"] = "sk-x"
    app2 = build_app(parse_config(cfg, "<test>"))
    client2 = app2.flask_app().test_client()
    assert client2.get("/ready").status_code == 200
    app2.lifecycle.begin_drain(close_after=None)
    r = client2.get("/ready")
    assert r.status_code == 503 and r.json["problems"] == ["draining: the worker is shutting down"]
    app2.store = Broken()
    r = client2.get("/ready")
    assert r.status_code == 503 and r.json["store"] == "unreachable" and "secret" not in r.get_data(as_text=True)


def test_gunicorn_settings(monkeypatch):
    for k in ("ROUTEPLANE_CONFIG", "ROUTEPLANE_MAX_REQUESTS", "ROUTEPLANE_THREADS", "ROUTEPLANE_WORKERS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(sys.prefix)  # no routeplane.yaml here: built-in defaults
    sys.modules.pop("routeplane.gunicorn_conf", None)
    conf = importlib.import_module("routeplane.gunicorn_conf")
    try:
        assert conf.worker_class == "routeplane.gunicorn_worker.ThreadWorker" and conf.preload_app is False
        assert conf.max_requests > 0 and 0 < conf.max_requests_jitter < conf.max_requests
        assert conf.graceful_timeout - conf.close_margin(conf.graceful_timeout) > 0
        assert conf.keepalive >= 5  # deploy/nginx.conf closes its idle upstream connections after 4 s
    finally:
        sys.modules.pop("routeplane.gunicorn_conf", None)


@pytest.mark.parametrize("name, value", [
    ("ROUTEPLANE_WORKERS", "abc"), ("ROUTEPLANE_THREADS", "0"), ("ROUTEPLANE_GRACEFUL_TIMEOUT", "1.5"),
    ("ROUTEPLANE_MAX_REQUESTS", "-1"), ("ROUTEPLANE_STOP_KEEPALIVE_LINGER", "soon"), ("ROUTEPLANE_LISTEN", ":4356"),
])
def test_a_bad_environment_setting_stops_the_start_naming_it(monkeypatch, name, value):
    """`int()` said only "invalid literal for int() with base 10: '1.5'", a bad linger was a traceback, and a
    ROUTEPLANE_LISTEN of ":4356" made gunicorn listen on every interface (serve checks it; `gunicorn
    wsgi:app`, the other documented path, did not)."""
    monkeypatch.delenv("ROUTEPLANE_CONFIG", raising=False)
    monkeypatch.chdir(sys.prefix)  # no routeplane.yaml here: built-in defaults
    monkeypatch.setenv(name, value)
    sys.modules.pop("routeplane.gunicorn_conf", None)
    try:
        with pytest.raises(SystemExit) as stop:
            importlib.import_module("routeplane.gunicorn_conf")
        assert str(stop.value).startswith(f"routeplane: {name}") and repr(value) in str(stop.value), stop.value
    finally:
        sys.modules.pop("routeplane.gunicorn_conf", None)


# --- mounting ------------------------------------------------------------------


@pytest.fixture
def host_app(tmp_path):
    from examples.mounted_app import create_host_app

    cfg = parse_config({"database": {"url": f"sqlite:///{tmp_path}/host.db"},
                        "providers": {"mock": {"protocol": "mock"}},
                        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]},
                                   "mock-echo": {"targets": [{"provider": "mock", "model": "echo"}]}}}, "<test>")
    return create_host_app(cfg, secret_key="test-secret")


def _chat(client: Any, model: str = "default", **kw: Any) -> Any:
    return client.post("/llm/v1/chat/completions", json={"model": model, "messages": [
        {"role": "user", "content": "hello"}]}, **kw)


def test_mounted_under_prefix_shares_the_host_login(host_app):
    client = host_app.test_client()
    assert client.get("/").json == {"app": "host", "user": None}
    denied = _chat(client)
    assert denied.status_code == 401 and denied.json["error"]["type"] == "authentication_error"
    assert client.post("/login", data={"user": "alice"}).status_code == 302
    ok = _chat(client)
    assert ok.status_code == 200 and ok.json["choices"][0]["message"]["content"] == "You said: hello"
    assert client.get("/llm/health").json == {"status": "ok"}
    assert client.get("/v1/models").status_code == 404  # nothing outside the prefix


def test_mounted_accepts_host_api_tokens_and_plan_limits(host_app):
    client = host_app.test_client()
    r = _chat(client, headers={"Authorization": "Bearer host-token-alice"})
    assert r.status_code == 200
    assert _chat(client, headers={"Authorization": "Bearer host-token-nobody"}).status_code == 401
    bob = {"Authorization": "Bearer host-token-bob"}
    assert _chat(client, "mock-echo", headers=bob).status_code == 200
    r = _chat(client, "default", headers=bob)
    assert r.status_code == 403 and "plan" in r.json["error"]["message"]


def test_mounted_identity_reaches_the_spend_log(host_app, tmp_path):
    import sqlite3

    client = host_app.test_client()
    client.post("/login", data={"user": "alice"})
    assert _chat(client, headers={"x-request-id": "req-alice"}).status_code == 200
    bob = host_app.test_client()
    assert _chat(bob, "mock-echo", headers={"Authorization": "Bearer host-token-bob",
                                            "x-request-id": "req-bob"}).status_code == 200
    with sqlite3.connect(str(tmp_path / "host.db")) as db:
        rows = dict(db.execute("SELECT request_id, account_id FROM spend_log").fetchall())
    db.close()
    assert rows == {"req-alice": "alice", "req-bob": "bob"}
