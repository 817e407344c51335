"""MCP gateway bug hunt: the official `mcp` client against routeplane under gunicorn, fronting upstreams that
misbehave (Connection: close, redirects, garbage capabilities/notifications, a stdio child that stops reading)."""

from __future__ import annotations

import copy
import gc
import json
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Tuple

import anyio
import pytest
import requests
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from routeplane.config import DEFAULT_CONFIG
from routeplane.mcp.settings import MCPServerConfig
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

SECRET = "upstream-secret-7f3a"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}

# A hand-written stdio MCP server: `wedge` stops reading stdin for good (a hung child); `noisy` sends a
# notification with garbage params before its answer.
STDIO_SERVER = textwrap.dedent("""
    import json, sys, time
    def send(msg):
        sys.stdout.write(json.dumps(msg) + "\\n"); sys.stdout.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg or "method" not in msg:
            continue
        method, params = msg["method"], msg.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("wedge", "noisy", "echo")]}
        elif params.get("name") == "wedge":
            time.sleep(3600)
        else:
            if params.get("name") == "noisy":
                send({"jsonrpc": "2.0", "method": "notifications/progress", "params": [1, 2]})
            result = {"content": [{"type": "text", "text": "fine"}]}
        send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
""")


class FakeHTTPMCP(BaseHTTPRequestHandler):
    """Plain-JSON MCP server that closes every connection (`Connection: close`, as HTTP/1.0 servers and many
    proxies do). `/redirect` answers 307 to `/steal` on another host name; `/badcaps` declares capabilities
    as a list; the `noisy` tool answers over SSE after a notification with garbage params."""

    protocol_version = "HTTP/1.1"
    seen: List[Tuple[str, Dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_DELETE(self) -> None:
        self._send(204)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        FakeHTTPMCP.seen.append((self.path, dict(self.headers)))
        if self.path == "/redirect":
            port = self.server.server_address[1]
            return self._send(307, Location=f"http://localhost:{port}/steal")
        msg = json.loads(raw)
        if "id" not in msg:
            return self._send(202)
        method, params = msg["method"], msg.get("params") or {}
        if method == "initialize":
            caps: Any = ["tools"] if self.path == "/badcaps" else {"tools": {}, "resources": {}, "completions": {}}
            result: Dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": caps,
                                      "serverInfo": {"name": "fake", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "noisy")]}
        elif method == "resources/list":
            result = {"resources": []}
        elif method == "resources/templates/list":
            result = {"resourceTemplates": [{"uriTemplate": "weather://{city}-{country}/forecast", "name": "w"}]}
        elif method == "resources/read":
            result = {"contents": [{"uri": params["uri"], "text": "sunny"}]}
        elif method == "tools/call" and params.get("name") == "longline":  # one SSE line that never ends
            return self._send(200, b"data: " + b"x" * 100, "text/event-stream")
        elif method == "tools/call" and params.get("name") == "noisy":
            events = [{"jsonrpc": "2.0", "method": "notifications/progress", "params": "garbage"},
                      {"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "loud"}]}}]
            body = "".join(f"event: message\ndata: {json.dumps(e)}\n\n" for e in events).encode()
            return self._send(200, body, "text/event-stream")
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": json.dumps(params.get("arguments"))}],
                      "structuredContent": {"echo": params.get("arguments")}, "isError": False}
        else:
            return self._send(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {
                "code": -32601, "message": "Method not found"}}).encode())
        self._send(200, json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode())


@pytest.fixture(scope="module")
def fake_http() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeHTTPMCP)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def gw(fake_http: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    script = tmp_path_factory.mktemp("hunt-mcp") / "stdio_server.py"
    script.write_text(STDIO_SERVER)
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["mcp"] = {"session_secret": "h" * 32, "list_cache_seconds": 0}
    secret_headers = {"X-Api-Key": SECRET, "Authorization": f"Bearer {SECRET}"}
    c["mcp_servers"] = {
        "closer": {"type": "http", "url": fake_http + "/mcp", "timeout": 5, "headers": secret_headers},
        "redir": {"type": "http", "url": fake_http + "/redirect", "timeout": 5, "headers": secret_headers},
        "badcaps": {"type": "http", "url": fake_http + "/badcaps", "timeout": 5},
        "wedge": {"type": "stdio", "command": sys.executable, "args": [str(script)], "timeout": 1},
        "noisy": {"type": "stdio", "command": sys.executable, "args": [str(script)], "timeout": 5},
    }
    g = GatewayProcess(c, workers=1, threads=16).start()
    yield g
    g.stop()
    assert SECRET not in g.logs()


async def _session(url: str, body: Any) -> Any:
    async with streamable_http_client(url, http_client=create_mcp_http_client()) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            with anyio.fail_after(30):  # never a hang
                return await body(s, init)


def run(url: str, body: Any) -> Any:
    try:
        return anyio.run(_session, url, body)
    finally:
        gc.collect()


def test_upstream_answering_connection_close_works(gw: GatewayProcess) -> None:
    """An upstream that closes each connection (`Connection: close`) was a 500 on every call and listing."""

    async def body(s: ClientSession, init: Any) -> Any:
        tools = [t.name for t in (await s.list_tools()).tools]
        return tools, await s.call_tool("closer__echo", {"x": 1})

    tools, result = run(gw.url + "/mcp", body)
    assert {"closer__echo", "closer__noisy"} <= set(tools)
    assert not result.is_error and json.loads(result.content[0].text) == {"x": 1}
    assert result.structured_content == {"echo": {"x": 1}}


def test_upstream_redirects_are_not_followed(gw: GatewayProcess) -> None:
    """A 307 from an upstream was followed: its configured credential headers went to another host (and the
    URL checks on `url` were sidestepped)."""
    FakeHTTPMCP.seen.clear()

    async def body(s: ClientSession, init: Any) -> Any:
        listing = await s.list_tools()
        with pytest.raises(MCPError) as err:
            await s.call_tool("redir__echo", {})
        return listing, err.value

    listing, err = run(gw.url + "/mcp", body)
    unavailable = {u["server"]: u["error"] for u in listing.meta["routeplane/unavailable"]}
    assert "redirect" in unavailable["redir"]
    assert err.code == -32010 and "redirect" in err.message and "localhost" not in err.message
    assert not [h for path, h in FakeHTTPMCP.seen if path == "/steal"]


def test_garbage_upstream_capabilities_are_an_upstream_failure(gw: GatewayProcess) -> None:
    r = requests.post(gw.url + "/mcp/badcaps", json=INIT, headers=ACCEPT, timeout=30)
    assert r.status_code == 200 and r.json()["result"]["protocolVersion"] == "2025-11-25"
    h = {**ACCEPT, "Mcp-Session-Id": r.headers["Mcp-Session-Id"]}
    r = requests.post(gw.url + "/mcp/badcaps", headers=h, timeout=30, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}})
    assert r.status_code == 502 and r.json()["error"]["code"] == -32010, r.text
    assert "capabilities" in r.json()["error"]["message"]


def test_pass_through_does_not_advertise_completions_it_cannot_serve(gw: GatewayProcess) -> None:
    async def body(s: ClientSession, init: Any) -> Any:
        with pytest.raises(MCPError) as err:
            await s.complete({"type": "ref/prompt", "name": "x"}, {"name": "a", "value": ""})
        return init.capabilities, err.value.code

    caps, code = run(gw.url + "/mcp/closer", body)
    assert caps.tools is not None and caps.completions is None
    assert code == -32601


def test_non_ascii_session_id_is_404_not_500(gw: GatewayProcess) -> None:
    h = {**ACCEPT, "Mcp-Session-Id": "rpmcp1.\u00e9t\u00e9.x"}
    r = requests.post(gw.url + "/mcp", headers=h, timeout=30, json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert r.status_code == 404 and r.json()["error"] == {"code": -32600, "message": "Session not found"}
    assert requests.delete(gw.url + "/mcp", headers=h, timeout=30).status_code == 404


def test_garbage_notification_params_do_not_break_calls(gw: GatewayProcess) -> None:
    """A notification with non-object params was an AttributeError: a 500 on HTTP, and on stdio it killed the
    reader thread, failing the call (502) and restarting the child."""

    async def body(s: ClientSession, init: Any) -> Any:
        out = []
        for name in ("closer__noisy", "noisy__noisy", "noisy__echo"):
            r = await s.call_tool(name, {})
            out.append((r.is_error, r.content[0].text))
        return out

    assert run(gw.url + "/mcp", body) == [(False, "loud"), (False, "fine"), (False, "fine")]


def test_stdio_child_that_stops_reading_cannot_hang_calls(gw: GatewayProcess) -> None:
    """A child that no longer reads stdin fills the pipe: a request thread blocked in write() (under the write
    lock) hung past its timeout, and every later request to that server with it."""

    async def body(s: ClientSession, init: Any) -> Any:
        errors = []
        for name, args in (("wedge__wedge", {}), ("wedge__echo", {"blob": "x" * 1_000_000}),
                           ("wedge__echo", {"small": 1})):
            started = time.monotonic()
            with pytest.raises(MCPError) as err:
                await s.call_tool(name, args)
            errors.append((err.value.code, time.monotonic() - started))
        return errors

    errors = run(gw.url + "/mcp", body)
    assert [code for code, _ in errors] == [-32010, -32010, -32010]
    assert all(took < 10 for _, took in errors), errors


def test_http_upstream_socket_and_sse_errors_are_upstream_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError/OSError while reading an answer (here: an SSE line over the parser's limit) was a 500."""
    from routeplane.mcp import upstream_http
    from routeplane.mcp.upstream import UpstreamFailure
    from routeplane.protocols.sse import SSEParser

    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeHTTPMCP)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(upstream_http, "SSEParser", lambda: SSEParser(max_line_bytes=8))
        up = upstream_http.HttpUpstream(MCPServerConfig(id="x", type="http", prefix="x__", timeout=5,
                                                        url=f"http://127.0.0.1:{srv.server_address[1]}/mcp"),
                                        lambda *a: None)
        with pytest.raises(UpstreamFailure) as err:
            up.request("tools/call", {"name": "longline"})
        assert err.value.server == "x" and err.value.reason == "sent a stream event over the 8 bytes limit"
        up.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_resource_template_matching_cannot_be_made_to_backtrack(gw: GatewayProcess) -> None:
    """`resources/read` matched URIs against templates with a backtracking regex: `{city}-{country}` against a
    crafted URI of dashes took minutes of a worker thread (quadratic; `{a}{b}{c}…` exponential)."""

    async def body(s: ClientSession, init: Any) -> Any:
        ok = await s.read_resource("weather://paris-fr/forecast")
        started = time.monotonic()
        with pytest.raises(MCPError) as err:
            await s.read_resource("weather://" + "-" * 400_000)
        return ok.contents[0].text, err.value.code, time.monotonic() - started

    text, code, took = run(gw.url + "/mcp", body)
    assert text == "sunny" and code == -32002 and took < 10
