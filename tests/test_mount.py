"""routeplane mounted under a prefix inside a separate Flask app (`app.init_app(host, url_prefix="/llm")`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests
import yaml
from flask import Flask, jsonify
from openai import OpenAI
from werkzeug.serving import make_server

from routeplane.app import App, Plugin, PluginId, build_app
from routeplane.config import parse_config
from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook
from tests.support.upstream import FakeUpstream, Reply

CONFIG = {
    "providers": {"local": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
}


def make_host() -> Flask:
    host = Flask("host_app")

    @host.get("/")
    def index() -> Any:
        return "host home"

    @host.get("/api/ping")
    def ping() -> Any:
        return jsonify({"pong": True})

    @host.errorhandler(404)
    def host_404(exc: Any) -> Any:
        return jsonify({"host_error": "not found"}), 404

    gateway: App = build_app(parse_config(CONFIG, "<mount test>"))
    gateway.init_app(host, url_prefix="/llm/")  # trailing slash tolerated
    return host


@pytest.fixture(scope="module")
def host() -> Flask:
    return make_host()


def chat_body(**extra: Any) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": "mounted"}], **extra}


def test_prefixed_chat_completion(host):
    with host.test_client() as c:
        r = c.post("/llm/v1/chat/completions", json=chat_body())
        assert r.status_code == 200
        assert r.get_json()["choices"][0]["message"]["content"] == "You said: mounted"


def test_prefixed_stream(host):
    with host.test_client() as c:
        r = c.post("/llm/v1/chat/completions", json=chat_body(stream=True, stream_options={"include_usage": True}))
        assert r.status_code == 200 and r.mimetype == "text/event-stream"
        frames = [line[6:] for line in r.get_data(as_text=True).split("\n") if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        chunks = [json.loads(f) for f in frames[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "You said: mounted"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_prefixed_models_health_and_errors(host):
    with host.test_client() as c:
        assert [m["id"] for m in c.get("/llm/v1/models").get_json()["data"]] == ["default"]
        assert c.get("/llm/health").get_json() == {"status": "ok"}
        bad = c.post("/llm/v1/chat/completions", data=b"{nope", content_type="application/json")
        assert bad.status_code == 400 and "JSON" in bad.get_json()["error"]["message"]
        missing = c.post("/llm/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "model_not_found"


def test_host_routes_and_handlers_still_work(host):
    with host.test_client() as c:
        assert c.get("/").get_data(as_text=True) == "host home"
        assert c.get("/api/ping").get_json() == {"pong": True}
        # The host keeps its own 404 handler: mounting does not take over the host's error pages.
        assert c.get("/elsewhere").get_json() == {"host_error": "not found"}


def test_unprefixed_paths_are_not_served(host):
    with host.test_client() as c:
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 404
        assert c.get("/v1/models").status_code == 404
        assert c.get("/health").status_code == 404


def test_gateway_state_lives_on_the_host_app(host):
    assert isinstance(host.extensions["routeplane"], App)


def test_two_gateways_in_two_hosts_are_independent():
    a, b = make_host(), Flask("other_host")
    other = build_app(parse_config({"providers": {"p": {"protocol": "mock"}},
                                    "models": {"only-b": {"targets": [{"provider": "p", "model": "echo"}]}}}, "<b>"))
    other.init_app(b, url_prefix="/gw")
    with a.test_client() as ca, b.test_client() as cb:
        assert [m["id"] for m in ca.get("/llm/v1/models").get_json()["data"]] == ["default"]
        assert [m["id"] for m in cb.get("/gw/v1/models").get_json()["data"]] == ["only-b"]


@pytest.fixture(scope="module")
def served_host(host: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, host, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="mounted-host")
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_openai_sdk_against_mounted_gateway(served_host):
    with OpenAI(base_url=served_host + "/llm/v1", api_key="unused", max_retries=0, timeout=20) as client:
        r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "via sdk"}])
        assert r.choices[0].message.content == "You said: via sdk"
        chunks = list(client.chat.completions.create(model="default", stream=True,
                                                     messages=[{"role": "user", "content": "streamed"}],
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: streamed"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        assert [m.id for m in client.models.list()] == ["default"]
    with OpenAI(base_url=served_host + "/v1", api_key="unused", max_retries=0, timeout=20) as wrong:
        with pytest.raises(Exception) as info:
            wrong.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
        assert getattr(info.value, "status_code", None) == 404


def test_host_max_content_length_is_a_413_in_the_wire_shape():
    """A host app's own MAX_CONTENT_LENGTH (smaller than routeplane's limit) still gives an OpenAI-shaped 413."""
    host = Flask("host_with_limit")
    host.config["MAX_CONTENT_LENGTH"] = 2000
    build_app(parse_config(CONFIG, "<limit test>")).init_app(host, url_prefix="/llm")
    big = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 5000}]))
    with host.test_client() as c:
        r = c.post("/llm/v1/chat/completions", data=big, content_type="application/json")
        assert r.status_code == 413
        assert r.get_json()["error"]["message"]
        assert c.post("/llm/v1/chat/completions", json=chat_body()).status_code == 200


# --- unrouted paths under the prefix: the wire's error shape, as standalone -----------------------------------


@pytest.mark.parametrize("method,path,status,shape", [
    ("GET", "/llm/v1/chat/completions", 405, "openai"),
    ("POST", "/llm/v1/chat/completion", 404, "openai"),
    ("POST", "/llm/v1/messages/batches", 404, "anthropic"),
    ("GET", "/llm/v1/messages", 405, "anthropic"),
    ("PUT", "/llm/v1beta/models/default:generateContent", 405, "gemini"),
    ("GET", "/llm", 404, "openai"),
])
def test_unrouted_paths_under_the_prefix_answer_in_the_wire_shape(host, method, path, status, shape):
    with host.test_client() as c:
        r = c.open(path, method=method, json={})
        assert r.status_code == status and r.mimetype == "application/json", r.get_data(as_text=True)[:200]
        body = r.get_json()
        if shape == "anthropic":
            assert body["type"] == "error" and body["error"]["type"] in ("not_found_error", "invalid_request_error")
        elif shape == "gemini":
            assert body["error"]["code"] == status and body["error"]["status"]
        else:
            assert body["error"]["message"] and body["error"]["type"]
        assert r.headers["x-request-id"]
        if status == 405:
            assert "POST" in r.headers["Allow"]
        # Outside the prefix the host's own 404 page answers, as before.
        assert c.get(path.replace("/llm", "/other", 1)).get_json() == {"host_error": "not found"}


def test_the_prefix_does_not_swallow_a_lookalike_host_path():
    host = make_host()

    @host.get("/llm-status")
    def status() -> Any:
        return "host status"

    with host.test_client() as c:
        assert c.get("/llm-status").get_data(as_text=True) == "host status"
        assert c.get("/llmx/nothing").get_json() == {"host_error": "not found"}


# --- auth outside the pipeline when mounted --------------------------------------------------------------------

PROVIDER_KEY = "sk-ant-PROVIDER-SECRET-0123456789"
ANTHROPIC = {"anthropic-version": "2023-06-01"}
ACCEPT_MCP = {"Accept": "application/json, text/event-stream"}
MCP_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
ALICE = {"Authorization": "Bearer host-token-alice"}  # examples/mounted_app.py: alice is a host admin
BOB = {"Authorization": "Bearer host-token-bob"}  # bob is not, and his plan covers mock-echo only


def mounted_config(anthropic_url: str, db: Optional[str] = None) -> Dict[str, Any]:
    return {**({"database": {"url": f"sqlite:///{db}"}} if db else {}),
            "mcp": {"session_secret": "s" * 32},
            "providers": {"mock": {"protocol": "mock"},
                          "anth": {"protocol": "anthropic_messages", "base_url": anthropic_url, "api_key": PROVIDER_KEY}},
            "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]},
                       "mock-echo": {"targets": [{"provider": "mock", "model": "echo"}]},
                       "claude": {"targets": [{"provider": "anth", "model": "claude-x"}]}}}


@pytest.fixture(scope="module")
def anthropic_up() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = lambda req: Reply.json({"input_tokens": 42})
    yield up
    up.stop()


@pytest.fixture(scope="module")
def example(anthropic_up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """examples/mounted_app.py as docs/mounting.md sets it up: auth.mode none, the host's login as the hook."""
    from examples.mounted_app import create_host_app

    db = tmp_path_factory.mktemp("example") / "host.db"
    return create_host_app(parse_config(mounted_config(anthropic_up.url, str(db)), "<example>"),
                           secret_key="test-secret")


def test_anonymous_count_tokens_is_refused_like_every_other_wire_call(example, anthropic_up):
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    before = len(anthropic_up.requests)
    with example.test_client() as c:
        assert c.post("/llm/v1/messages", json=dict(body, max_tokens=5), headers=ANTHROPIC).status_code == 401
        r = c.post("/llm/v1/messages/count_tokens", json=body, headers=ANTHROPIC)
        assert r.status_code == 401 and r.get_json()["error"]["type"] == "authentication_error"
        assert len(anthropic_up.requests) == before  # the provider key was not spent on an anonymous caller
        r = c.post("/llm/v1/messages/count_tokens", json=body, headers={**ANTHROPIC, **BOB})
        assert r.status_code == 403 and "plan" in r.get_json()["error"]["message"]
        assert len(anthropic_up.requests) == before
        r = c.post("/llm/v1/messages/count_tokens", json=body, headers={**ANTHROPIC, "x-api-key": "host-token-alice"})
        assert r.status_code == 200 and r.get_json() == {"input_tokens": 42}
        assert [q.headers.get("x-api-key") for q in anthropic_up.requests[before:]] == [PROVIDER_KEY]


ADMIN_CALLS = [("GET", "/llm/admin/whoami", None), ("GET", "/llm/admin/metrics", None),
               ("POST", "/llm/admin/explain", {"wire": "openai_chat", "request": {
                   "model": "default", "messages": [{"role": "user", "content": "x"}]}}),
               ("GET", "/llm/admin/", None), ("GET", "/llm/admin/config", None)]


@pytest.mark.parametrize("method,path,body", ADMIN_CALLS)
def test_the_host_login_guards_the_admin_endpoints(example, method, path, body):
    with example.test_client() as c:  # the test client calls from 127.0.0.1: loopback is no pass when mounted
        assert c.open(path, method=method, json=body).status_code == 401
        assert c.open(path, method=method, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.open(path, method=method, json=body, headers=BOB).status_code == 403  # not a host admin
        assert c.open(path, method=method, json=body, headers=ALICE).status_code == 200
    with example.test_client() as browser:  # the host's session login works for the dashboard pages too
        assert browser.post("/login", data={"user": "alice"}).status_code == 302
        assert browser.open(path, method=method, json=body).status_code == 200
    with example.test_client() as browser:
        browser.post("/login", data={"user": "bob"})
        assert browser.open(path, method=method, json=body).status_code == 403


def test_whoami_is_the_host_user(example):
    with example.test_client() as c:
        me = c.get("/llm/admin/whoami", headers=ALICE).get_json()
    assert (me["account_id"], me["scope"]) == ("alice", "admin")


def test_the_host_login_guards_mcp_and_the_model_list(example):
    with example.test_client() as c:
        r = c.post("/llm/mcp", json=MCP_INIT, headers=ACCEPT_MCP)
        assert r.status_code == 401 and r.get_json()["error"]["code"] == -32001
        assert c.post("/llm/mcp", json=MCP_INIT, headers={**ACCEPT_MCP, **BOB}).status_code == 200
        assert c.get("/llm/v1/models").status_code == 401
        assert [m["id"] for m in c.get("/llm/v1/models", headers=BOB).get_json()["data"]] == ["mock-echo"]


def test_mounted_without_any_auth_refuses_admin_even_from_loopback(host):
    with host.test_client() as c:
        r = c.get("/llm/admin/whoami", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert r.status_code == 403 and "mounted in a host app" in r.get_json()["error"]["message"].lower()
        assert c.post("/llm/admin/explain", json={"request": {}}).status_code == 403
        assert c.get("/llm/v1/models").status_code == 200  # nothing guards the model calls either: consistent


class PlainHostHook(PreRequestHook):
    """The hook as docs/mounting.md showed it before `authenticates` existed."""

    def check(self, ctx: Any) -> HookDecision:
        if ctx.credential != "host-token":
            return HookDecision.deny(DenyReason.unauthorized("Log in first."))
        return HookDecision.allow()


class PlainHostPlugin(Plugin):
    id = PluginId("plain_host")

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(PlainHostHook())


def test_an_unmarked_host_hook_still_guards_count_tokens_and_admin_stays_shut(anthropic_up):
    host = Flask("old_style_host")
    gateway = build_app(parse_config(mounted_config(anthropic_up.url), "<old style>"),
                        extra_plugins=[PlainHostPlugin()])
    gateway.init_app(host, url_prefix="/llm")
    before = len(anthropic_up.requests)
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    with host.test_client() as c:
        assert c.post("/llm/v1/messages/count_tokens", json=body).status_code == 401
        assert len(anthropic_up.requests) == before
        assert c.get("/llm/admin/whoami", headers={"Authorization": "Bearer host-token"}).status_code == 403


# --- behind the documented nginx (deploy/nginx.conf), under the documented gunicorn command --------------------


@pytest.fixture(scope="module")
def mounted_behind_nginx(anthropic_up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`gunicorn -c python:routeplane.gunicorn_conf 'examples.mounted_app:create_host_app()'` with
    deploy/nginx.conf in front: every caller reaches the host from nginx's 127.0.0.1."""
    from tests.support.gateway import ROOT, free_port
    from tests.support.nginx import NginxProcess
    from tests.test_nginx_e2e import _require_nginx, deploy_nginx_body

    _require_nginx()
    d = tmp_path_factory.mktemp("mounted-nginx")
    (d / "rp.yaml").write_text(yaml.safe_dump(mounted_config(anthropic_up.url, str(d / "host.db"))))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    env.update(ROUTEPLANE_CONFIG=str(d / "rp.yaml"), ROUTEPLANE_LISTEN=f"127.0.0.1:{port}", ROUTEPLANE_WORKERS="1",
               ROUTEPLANE_THREADS="8", HOST_SECRET_KEY="host-secret")
    with open(d / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:routeplane.gunicorn_conf",
                                 "examples.mounted_app:create_host_app()"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        nginx = None
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/llm/health", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, (d / "gunicorn.log").read_text()
                time.sleep(0.2)
            nginx = NginxProcess(deploy_nginx_body(port)).start()
            yield nginx.url
        finally:
            if nginx is not None:
                nginx.stop()
            proc.terminate()
            proc.wait(30)


@pytest.mark.e2e
def test_behind_the_documented_nginx_the_host_login_guards_every_endpoint(mounted_behind_nginx, anthropic_up):
    url = mounted_behind_nginx
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    assert requests.post(url + "/llm/v1/chat/completions", json=chat).status_code == 401
    before = len(anthropic_up.requests)
    r = requests.post(url + "/llm/v1/messages/count_tokens", headers=ANTHROPIC,
                      json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and len(anthropic_up.requests) == before
    for method, path, body in ADMIN_CALLS:
        assert requests.request(method, url + path, json=body).status_code == 401, path
        assert requests.request(method, url + path, json=body, headers=BOB).status_code == 403, path
        assert requests.request(method, url + path, json=body, headers=ALICE).status_code == 200, path
    assert requests.post(url + "/llm/mcp", json=MCP_INIT, headers=ACCEPT_MCP).status_code == 401
    r = requests.get(url + "/llm/v1/chat/completions", headers=ALICE)
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/json")


@pytest.mark.e2e
def test_behind_the_documented_nginx_a_standalone_gateway_without_auth_keeps_admin_shut():
    """auth.mode none trusts loopback callers with admin; behind nginx every caller is loopback, but nginx
    says so (X-Forwarded-For): the proxied caller is not local. Direct loopback callers still are."""
    from tests.support.gateway import GatewayProcess
    from tests.support.nginx import NginxProcess
    from tests.test_nginx_e2e import _require_nginx, deploy_nginx_body

    _require_nginx()
    gw = GatewayProcess({"providers": {"mock": {"protocol": "mock"}},
                         "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}},
                        workers=1, threads=4).start()
    nginx = None
    try:
        nginx = NginxProcess(deploy_nginx_body(gw.port)).start()
        for path in ("/admin/whoami", "/admin/metrics", "/admin/"):
            assert requests.get(nginx.url + path).status_code == 403, path
            assert requests.get(gw.url + path).status_code == 200, path
        assert requests.get(nginx.url + "/v1/models").status_code == 200
    finally:
        if nginx is not None:
            nginx.stop()
        gw.stop()


class SlowTokenHook(PreRequestHook):
    authenticates = True

    def check(self, ctx: Any) -> HookDecision:
        time.sleep(0.3)  # the host's token lookup is slow for a moment
        if ctx.credential != "good-token":
            return HookDecision.deny(DenyReason.unauthorized("Log in first."))
        return HookDecision.allow()


class SlowHostAuth(Plugin):
    id = PluginId("slow_host_auth")
    timeout_ms = 50  # a time budget, with the default fail_open

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(SlowTokenHook())


def test_an_authenticating_hook_that_times_out_denies_instead_of_admitting() -> None:
    """A time budget skips a slow hook when its plugin fails open: for the hook that authenticates,
    that admitted every anonymous caller while the host's lookup was slow."""
    h = Flask("host-slow")
    build_app(parse_config(CONFIG, "<t>"), extra_plugins=[SlowHostAuth()]).init_app(h, url_prefix="/llm")
    client = h.test_client()
    r = client.post("/llm/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and r.json["error"]["message"].startswith("The slow_host_auth check timed out")
    assert client.get("/llm/v1/models").status_code == 503


class DryRunProbe(PreRequestHook):
    authenticates = True
    seen: List[Any] = []

    def check(self, ctx: Any) -> HookDecision:
        DryRunProbe.seen.append((ctx.inbound_protocol, ctx.dry_run))
        return HookDecision.allow()


class DryRunPlugin(Plugin):
    id = PluginId("dry_run_probe")

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(DryRunProbe())


def test_both_count_tokens_endpoints_run_the_hooks_as_a_dry_run() -> None:
    """A host hook that charges quota on real calls must not be charged for counting tokens; Gemini's
    countTokens ran the hooks as a real call (dry_run false), Anthropic's as a dry run."""
    h = Flask("host-dry")
    build_app(parse_config(CONFIG, "<t>"), extra_plugins=[DryRunPlugin()]).init_app(h, url_prefix="/llm")
    client = h.test_client()
    DryRunProbe.seen.clear()
    assert client.post("/llm/v1beta/models/default:countTokens",
                       json={"contents": [{"parts": [{"text": "hi"}]}]}).status_code == 200
    assert DryRunProbe.seen and all(dry for _wire, dry in DryRunProbe.seen), DryRunProbe.seen


class GrantingHook(PreRequestHook):
    """A host login that sets who the caller is and trusts the gateway with the allowlist (it checks none)."""

    authenticates = True
    models: tuple = ()

    def check(self, ctx: Any) -> HookDecision:
        from routeplane.language_model.context import Identity

        ctx.identity = Identity(account_id="host-user", models=GrantingHook.models)
        return HookDecision.allow()


class GrantingPlugin(Plugin):
    id = PluginId("granting_host")

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(GrantingHook())


@pytest.mark.parametrize("models, allowed", [((), False), (("def*",), True), (("other",), False)])
def test_the_gateway_enforces_the_model_allowlist_of_an_identity_a_host_hook_set(models: tuple,
                                                                                 allowed: bool) -> None:
    """Only the auth plugin's own hook checked `Identity.models`: a host hook that set `models=()` hid every
    model from /v1/models while a chat call to one still got 200. Both count_tokens endpoints too."""
    GrantingHook.models = models
    h = Flask("host-granting")
    build_app(parse_config(CONFIG, "<t>"), extra_plugins=[GrantingPlugin()]).init_app(h, url_prefix="/llm")
    client = h.test_client()
    calls = {
        "chat": client.post("/llm/v1/chat/completions", json=chat_body()),
        "messages": client.post("/llm/v1/messages", json={"model": "default", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": "x"}]}),
        "count_tokens": client.post("/llm/v1/messages/count_tokens", json={
            "model": "default", "messages": [{"role": "user", "content": "x"}]}),
        "countTokens": client.post("/llm/v1beta/models/default:countTokens",
                                   json={"contents": [{"parts": [{"text": "hi"}]}]}),
    }
    statuses = {name: r.status_code for name, r in calls.items()}
    assert statuses == {name: 200 if allowed else 403 for name in calls}, statuses
    if not allowed:
        assert "model_not_allowed" in calls["chat"].get_data(as_text=True)
