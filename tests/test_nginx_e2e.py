"""Through a real nginx (deploy/nginx.conf) in front of a real gunicorn: streaming unbuffered, SIGTERM and HUP lose nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

import pytest
import requests

from tests.support.gateway import ROOT, GatewayProcess
from tests.support.nginx import NginxProcess, children_of, nginx_binary
from tests.support.settle_log import read_settlements, settle_log_env
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e


def _require_nginx() -> None:
    if nginx_binary() is not None:
        return
    message = "nginx is not installed: run scripts/test-services (installs Debian's nginx) to run the nginx e2e tests"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    print(f"\n*** SKIPPING: {message} ***")
    pytest.skip(message)


def deploy_nginx_body(gateway_port: int) -> str:
    """deploy/nginx.conf with only the upstream address and the listen port rewritten."""
    with open(os.path.join(ROOT, "deploy", "nginx.conf")) as fh:
        text = fh.read()
    text, n1 = re.subn(r"server 127\.0\.0\.1:4356\b", f"server 127.0.0.1:{gateway_port}", text)
    text, n2 = re.subn(r"listen 80;", "listen 127.0.0.1:{port};", text)
    text, n3 = re.subn(r"access_log /var/log/nginx/routeplane\.access\.log ", "access_log {dir}/access.log ", text)
    assert n1 == n2 == n3 == 1, "deploy/nginx.conf no longer has the addresses this test rewrites"
    return text


def stream_reply(req: RecordedRequest, chunks: int = 5, delay: float = 0.1) -> Reply:
    if not (req.json or {}).get("stream"):
        return Reply.json(openai_completion("plain answer"))
    parts = [openai_chunk({"role": "assistant", "content": ""})]
    parts += [openai_chunk({"content": f"c{i} "}) for i in range(chunks)]
    parts += [openai_chunk({}, "stop"),
              openai_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": chunks, "total_tokens": 3 + chunks})]
    return Reply.sse(parts, chunk_delay=delay)


def gateway_config(upstream_url: str, settle_path: Optional[str] = None) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {
        "server": {"log_level": "warning"},
        "providers": {"up": {"protocol": "openai_chat", "base_url": upstream_url + "/v1", "api_key": "sk-up"}},
        "models": {"m": {"targets": [{"provider": "up", "model": "up-model"}]}},
    }
    if settle_path:
        cfg["plugins"] = {"settle_log": {"path": settle_path}}
    return cfg


@pytest.fixture
def fake_upstream():
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def stack(fake_upstream, tmp_path):
    """A started (upstream, gateway, nginx, settlement log path); everything stopped after the test."""
    _require_nginx()
    started: List[Any] = []

    def start(*, upstream_default=stream_reply, workers: int = 2, threads: int = 16,
              env: Optional[Dict[str, str]] = None):
        fake_upstream.default = upstream_default
        settle_path = str(tmp_path / "settlements.jsonl")
        gw = GatewayProcess(gateway_config(fake_upstream.url, settle_path), workers=workers, threads=threads,
                            env={**settle_log_env(str(tmp_path)), **(env or {})}).start()
        started.append(gw)
        nginx = NginxProcess(deploy_nginx_body(gw.port)).start()
        started.append(nginx)
        return gw, nginx, settle_path

    yield start
    for proc in reversed(started):
        proc.stop()


def chat(url: str, stream: bool, rid: str, timeout: float = 20.0) -> requests.Response:
    return requests.post(url + "/v1/chat/completions", timeout=timeout, stream=stream,
                         headers={"x-request-id": rid},
                         json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def test_first_chunk_reaches_the_client_while_the_upstream_still_sends(stack):
    gw, nginx, _ = stack(upstream_default=lambda req: stream_reply(req, chunks=6, delay=0.5))
    t0 = time.monotonic()
    first: Optional[float] = None
    body = b""
    with chat(nginx.url, True, "req-ttfb") as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for piece in resp.iter_content(chunk_size=None):
            if first is None and b"data:" in piece:
                first = time.monotonic() - t0
            body += piece
    total = time.monotonic() - t0
    assert body.rstrip().endswith(b"data: [DONE]")
    assert total >= 3.0, f"the upstream paces 7 gaps of 0.5 s; the whole stream took only {total:.2f}s"
    assert first is not None and first < 1.0, f"first chunk after {first}s of {total:.2f}s: nginx buffered the stream"


def test_nginx_enforces_the_gateway_body_limit(stack):
    gw, nginx, _ = stack()
    big = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * (10 * 1024 * 1024 + 10) + b'"}]}'
    r = requests.post(nginx.url + "/v1/chat/completions", data=big, headers={"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == 413
    r.close()
    ok = chat(nginx.url, False, "req-small")
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "plain answer"
    ok.close()


class LoadLoop:
    """Client threads POSTing streams (and plain calls) through nginx until stopped; every outcome recorded."""

    def __init__(self, url: str, clients: int, stream_every: int = 1) -> None:
        self.url = url
        self.clients = clients
        self.stream_every = stream_every
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: List[Dict[str, Any]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "LoadLoop":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, i: int) -> None:
        n = 0
        deadline = time.monotonic() + 60  # bounded even if stop is never set
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            stream = n % self.stream_every == 0
            rid = f"req-{uuid.uuid4().hex}"
            rec: Dict[str, Any] = {"rid": rid, "stream": stream, "start": time.monotonic()}
            try:
                with chat(self.url, stream, rid) as resp:
                    rec["status"] = resp.status_code
                    data = resp.content
                rec["complete"] = (data.rstrip().endswith(b"data: [DONE]") if stream
                                   else resp.status_code == 200 and json.loads(data)["choices"][0]["message"]
                                   ["content"] == "plain answer")
                rec["error_event"] = b'"error"' in data if stream else False
            except Exception as exc:  # the record says what happened; the test decides
                rec["status"], rec["complete"], rec["exc"] = None, False, f"{type(exc).__name__}: {exc}"
            rec["end"] = time.monotonic()
            with self.lock:
                self.results.append(rec)


def test_sigterm_during_load_loses_no_request_and_settles_every_stream(stack):
    gw, nginx, settle_path = stack(env={"ROUTEPLANE_GRACEFUL_TIMEOUT": "15"})
    with LoadLoop(nginx.url, clients=6) as loop:
        time.sleep(1.5)
        term_at = time.monotonic()
        gw.signal(signal.SIGTERM)
        assert gw.proc is not None
        code = gw.proc.wait(20)
        time.sleep(0.3)
    assert code == 0, gw.logs()
    results = loop.results
    served = [r for r in results if r["status"] == 200]
    assert served and all(r["complete"] for r in served), [r for r in served if not r["complete"]][:3]
    in_flight = [r for r in served if r["start"] < term_at < r["end"]]
    assert in_flight, "no stream was open when SIGTERM arrived; the test proves nothing"
    # Requests after the gateway stopped never reached it: nginx answers 502 and nothing was half-done.
    refused = [r for r in results if r["status"] != 200]
    assert all(r["status"] == 502 for r in refused), refused[:3]
    settled = read_settlements(settle_path)
    ids = [s["request_id"] for s in settled]
    assert len(ids) == len(set(ids)), "a request was settled twice"
    assert set(ids) == {r["rid"] for r in served}, "settlements differ from what clients were served"
    assert all(s["outcome"] == "success" for s in settled)


def test_hup_reloads_config_with_zero_failed_requests(stack, fake_upstream):
    gw, nginx, _ = stack()
    assert gw.proc is not None and gw.config is not None
    old_workers = set(children_of(gw.proc.pid))
    with LoadLoop(nginx.url, clients=4, stream_every=2) as loop:
        time.sleep(1.0)
        cfg = dict(gw.config)
        cfg["models"] = {**cfg["models"], "m2": {"targets": [{"provider": "up", "model": "second-model"}]}}
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = set(children_of(gw.proc.pid))
            if len(now) == 2 and not (now & old_workers):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"workers were not replaced after HUP: {old_workers} → {children_of(gw.proc.pid)}")
        time.sleep(1.0)  # keep the load going on the new workers
    failed = [r for r in loop.results if not (r["status"] == 200 and r["complete"])]
    assert not failed, failed[:3]
    assert len(loop.results) > 20
    r = requests.post(nginx.url + "/v1/chat/completions", timeout=10,
                      json={"model": "m2", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert fake_upstream.requests[-1].json["model"] == "second-model"
    r.close()


def test_the_access_log_never_holds_a_query_string_credential(stack):
    """The Gemini wire takes the gateway key as `?key=`; nginx's default format logged it to disk."""
    gw, nginx, _ = stack()
    r = requests.post(nginx.url + "/v1beta/models/m:generateContent?key=rpk_SECRET_in_the_query&alt=x",
                      headers={"x-request-id": "req-logged"}, timeout=20,
                      json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 200, r.text
    log_path = os.path.join(nginx.dir, "access.log")
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline and "req-logged" not in text:
        with open(log_path) as fh:
            text = fh.read()
        time.sleep(0.05)
    assert '"POST /v1beta/models/m:generateContent HTTP/1.1" 200' in text and "rid=req-logged" in text
    assert "SECRET" not in text and "key=" not in text



def test_no_cookie_makes_a_proxied_caller_the_local_admin(stack):
    """auth.mode none behind nginx: admin is for direct loopback callers only. The dashboard's cookie
    path rebuilt the headers from the cookie alone, dropping nginx's X-Forwarded-For, so any cookie
    (and any "credential" at the login form) made a remote caller the local admin."""
    gw, nginx, _ = stack()
    assert requests.get(nginx.url + "/admin/config", timeout=10).status_code == 403
    for path in ("/admin/config", "/admin/", "/admin/spend", "/admin/requests"):
        r = requests.get(nginx.url + path, cookies={"routeplane_admin": "x"}, timeout=10)
        assert r.status_code == 403, (path, r.status_code)
    r = requests.post(nginx.url + "/admin/login", data={"credential": "anything"}, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "routeplane_admin" not in r.headers.get("Set-Cookie", "")
    # directly on loopback, without a proxy, the same gateway still answers its operator
    assert requests.get(gw.url + "/admin/config", timeout=10).status_code == 200


def test_a_same_origin_login_through_nginx_on_another_port_is_accepted(tmp_path, capsys):
    """Browsers without Fetch Metadata (plain http to a non-localhost host) send only Origin, with the
    port; nginx forwarded `Host: $host`, which drops it, so every such sign-in was refused as cross-site."""
    _require_nginx()
    from routeplane.cli import main

    cfg = {"database": {"url": f"sqlite:///{tmp_path}/rp.db"}, "auth": {"mode": "api_keys"},
           "providers": {"mock": {"protocol": "mock"}},
           "models": {"m": {"targets": [{"provider": "mock", "model": "echo"}]}}}
    gw = GatewayProcess(cfg, workers=1, threads=4).start()
    nginx = None
    try:
        capsys.readouterr()
        assert main(["keys", "create", "--config", gw.config_path, "--scope", "admin"]) == 0
        admin = capsys.readouterr().out.strip()
        nginx = NginxProcess(deploy_nginx_body(gw.port)).start()
        r = requests.post(nginx.url + "/admin/login", data={"credential": admin}, allow_redirects=False,
                          headers={"Origin": nginx.url}, timeout=10)  # what a browser sends for the form
        assert r.status_code == 303 and "routeplane_admin=" in r.headers.get("Set-Cookie", ""), r.text[:300]
        r = requests.post(nginx.url + "/admin/login", data={"credential": admin}, allow_redirects=False,
                          headers={"Origin": "http://evil.example"}, timeout=10)
        assert r.status_code == 403
    finally:
        if nginx is not None:
            nginx.stop()
        gw.stop()
