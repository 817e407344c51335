"""MCP gateway hunt (s9): the official `mcp` client against routeplane under gunicorn, fronting real SDK MCP servers
that restart, go down or quote the gateway's credentials back; plus transport details on the in-process app."""

from __future__ import annotations

import copy
import gc
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator

import anyio
import pytest
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from routeplane.app import App, Plugin, PluginId
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook
from tests.support.gateway import GatewayProcess
from tests.support.mcp_upstream import SCRIPT, MCPUpstreamProcess

TOKEN = "mcp-upstream-credential-9a8b7c6d"  # not key-shaped: only the configured value can find it
API_KEY = "gateway-held-api-key-1f2e3d4c"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None, **headers: str) -> None:
        raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _message(self) -> Dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))


class RestartingUpstream(_Handler):
    """An upstream MCP server that just restarted: it knows no session (404) and cannot initialize yet (503)."""

    def do_POST(self) -> None:
        if self._message().get("method") == "initialize":
            return self._send(503, b"starting up")
        self._send(404, {"jsonrpc": "2.0", "id": "server-error", "error": {"code": -32600,
                                                                          "message": "Session not found"}})


class QuotingUpstream(_Handler):
    """An upstream that refuses its `login` tool with a JSON-RPC error quoting the credentials it was sent."""

    def do_POST(self) -> None:
        msg = self._message()
        if "id" not in msg:
            return self._send(202)
        if msg["method"] == "initialize":
            return self._send(200, {"jsonrpc": "2.0", "id": msg["id"], "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "q"}}},
                **{"Mcp-Session-Id": "q1"})
        token = self.headers.get("Authorization", "").split(" ")[-1]
        self._send(200, {"jsonrpc": "2.0", "id": msg["id"], "error": {
            "code": -32001, "message": f"Credential {token} was rejected",
            "data": {"sent": {"x-api-key": self.headers.get("X-Api-Key")}, "hint": ["rotate " + token]}}})


def serve(handler: type, port: int = 0) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ups = {"alpha": MCPUpstreamProcess("alpha").start(), "gamma": MCPUpstreamProcess("gamma", json_response=True).start()}
    quoting = serve(QuotingUpstream)
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('s9-mcp')}/rp.db"}
    c["mcp"] = {"list_cache_seconds": 0}
    c["mcp_servers"] = {
        "alpha": {"type": "http", "url": ups["alpha"].url, "timeout": 5},
        "beta": {"type": "stdio", "command": sys.executable, "args": [SCRIPT, "beta", "stdio"], "timeout": 10},
        "gamma": {"type": "http", "url": ups["gamma"].url, "timeout": 5},
        "quoting": {"type": "http", "url": f"http://127.0.0.1:{quoting.server_address[1]}/mcp", "timeout": 5,
                    "headers": {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": API_KEY}},
    }
    gw = GatewayProcess(c, workers=1, threads=8).start()  # one worker: the upstream session under test is its own
    yield gw, ups
    gw.stop()
    quoting.shutdown()
    quoting.server_close()
    for up in ups.values():
        up.stop()
    assert TOKEN not in gw.logs() and API_KEY not in gw.logs()


def call(gw: GatewayProcess, name: str, args: Dict[str, Any]) -> Any:
    """One SDK session calling one tool: the result, or the MCPError the client raised."""

    async def body() -> Any:
        async with streamable_http_client(gw.url + "/mcp", http_client=create_mcp_http_client()) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                with anyio.fail_after(30):
                    try:
                        return await s.call_tool(name, args)
                    except MCPError as exc:
                        return exc

    try:
        return anyio.run(body)
    finally:
        gc.collect()


def read(gw: GatewayProcess, uri: str) -> Any:
    """One SDK session reading one resource: the result, or the MCPError the client raised."""

    async def body() -> Any:
        async with streamable_http_client(gw.url + "/mcp", http_client=create_mcp_http_client()) as (rx, tx):
            async with ClientSession(rx, tx) as s:
                await s.initialize()
                try:
                    return await s.read_resource(uri)
                except MCPError as exc:
                    return exc

    try:
        return anyio.run(body)
    finally:
        gc.collect()


@pytest.mark.e2e
def test_an_http_upstream_whose_reinitialize_failed_is_initialized_again(stack: Any) -> None:
    """The upstream restarted (our session: 404) and failed the re-initialize (503): the worker kept the upstream
    marked initialized with no session id, so every later call and listing went out session-less and failed,
    for good, even once the upstream was back."""
    gw, ups = stack
    assert call(gw, "alpha__add", {"a": 1, "b": 2}).content[0].text == "3"
    port = ups["alpha"].port
    ups["alpha"].stop()
    restarting = serve(RestartingUpstream, port)
    try:
        err = call(gw, "alpha__add", {"a": 1, "b": 2})
        assert isinstance(err, MCPError) and err.code == -32010 and "503" in err.message
    finally:
        restarting.shutdown()
        restarting.server_close()
    ups["alpha"] = MCPUpstreamProcess("alpha", port=port).start()
    result = call(gw, "alpha__add", {"a": 20, "b": 22})
    assert not isinstance(result, MCPError), result
    assert result.content[0].text == "42"


@pytest.mark.e2e
def test_a_resource_of_a_server_that_is_down_is_not_reported_plainly_missing(stack: Any) -> None:
    """`resources/read` answered a bare -32002 "Resource not found" when the server owning the URI was down:
    a final-sounding answer for an outage. A listing notes the servers it left out; the read now does too."""
    gw, ups = stack
    assert read(gw, "mem://gamma/hello").contents[0].text == "hello from gamma"
    ups["gamma"].stop()
    err = read(gw, "mem://gamma/hello")
    assert isinstance(err, MCPError) and err.code == -32002, err
    assert "'gamma'" in err.message and "could not be asked" in err.message
    assert err.data == {"uri": "mem://gamma/hello", "unavailable": ["gamma"]}
    assert read(gw, "mem://beta/hello").contents[0].text == "hello from beta"  # the others still serve


@pytest.mark.e2e
def test_an_upstream_error_never_quotes_the_gateway_held_credentials(stack: Any) -> None:
    """An upstream's JSON-RPC error is passed through; one quoting the credentials the gateway sent it (its
    configured `headers`) handed them to every caller."""
    gw, _ = stack
    err = call(gw, "quoting__login", {})
    assert isinstance(err, MCPError) and err.code == -32001
    text = json.dumps({"message": err.message, "data": err.data})
    assert TOKEN not in text and API_KEY not in text, text
    assert err.message == "Credential [redacted] was rejected"
    assert err.data == {"sent": {"x-api-key": "[redacted]"}, "hint": ["rotate [redacted]"]}


# --- transport details on the in-process app ------------------------------------------


class ThrottlingLogin(PreRequestHook):
    """A host's login that rate-limits a credential (an `authenticates` hook guards /mcp too)."""

    authenticates = True

    def check(self, ctx: Any) -> HookDecision:
        if ctx.credential == "hammering":
            return HookDecision.deny(DenyReason.rate_limited("Too many logins.", retry_after=7))
        return HookDecision.allow()


class ThrottlingPlugin(Plugin):
    id = PluginId("s9-throttling-login")

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(ThrottlingLogin())


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["mcp"] = {"session_secret": "t" * 32}
    raw["mcp_servers"] = {"beta": {"type": "stdio", "command": sys.executable, "args": [SCRIPT, "beta", "stdio"]}}
    app = App.builder().config(parse_config(raw)).inline_observers().plugin(ThrottlingPlugin()).build()
    yield app.flask_app().test_client()
    app.shutdown()


def session(client: Any) -> Dict[str, str]:
    r = client.post("/mcp", json=INIT, headers=ACCEPT)
    assert r.status_code == 200, r.data
    return {**ACCEPT, "Mcp-Session-Id": r.headers["Mcp-Session-Id"]}


def test_an_auth_hooks_rate_limit_keeps_its_retry_after(client: Any) -> None:
    r = client.post("/mcp", json=INIT, headers={**ACCEPT, "Authorization": "Bearer hammering"})
    assert r.status_code == 429 and r.get_json()["error"]["code"] == -32029
    assert r.headers.get("Retry-After") == "7"


def test_head_is_method_not_allowed_like_get(client: Any) -> None:
    """HEAD (which Flask routes with GET) was read as a POST: a 400 parse error for its empty body."""
    h = session(client)
    for method in ("get", "head"):
        r = getattr(client, method)("/mcp", headers=h)
        assert r.status_code == 405 and r.headers["Allow"] == "POST, DELETE", method


@pytest.mark.parametrize("body,code", [
    ({"jsonrpc": "2.0", "id": 41, "method": "ping", "params": [1]}, -32602),
    ({"jsonrpc": "2.0", "id": "r-41", "method": "ping", "params": None}, -32602),
    ({"jsonrpc": "1.0", "id": 41, "method": "ping"}, -32600),
])
def test_a_refused_message_answers_its_own_id(client: Any, body: Dict[str, Any], code: int) -> None:
    """An invalid message with a usable id was answered with `id: null`: a client cannot tell which request
    failed (JSON-RPC: the id is null only when it cannot be read)."""
    r = client.post("/mcp", data=json.dumps(body), headers=session(client))
    assert r.status_code == 400
    assert r.get_json() == {"jsonrpc": "2.0", "id": body["id"], "error": {"code": code,
                                                                         "message": r.get_json()["error"]["message"]}}
