"""MCP gateway (s10): tool-error results scrubbed of the gateway's credentials, the client's request `_meta`
forwarded upstream (and a result's kept), and listings that ask the upstreams in parallel under a deadline —
the official `mcp` client against routeplane under gunicorn, fronting real MCP servers."""

from __future__ import annotations

import copy
import gc
import json
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, Optional

import anyio
import pytest
import requests
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from routeplane.config import DEFAULT_CONFIG
from routeplane.mcp.settings import MCPServerConfig
from routeplane.mcp.upstream_http import HttpUpstream
from tests.support.gateway import GatewayProcess, free_port
from tests.support.mcp_client import session_run
from tests.support.mcp_upstream import MCPUpstreamProcess

pytestmark = pytest.mark.e2e

TOKEN = "vault-upstream-credential-5e6f7a8b"  # not key-shaped: only the configured value can find it
HANG_SECONDS = 30.0
DEADLINE_SECONDS = 1.0

# A real SDK MCP server whose tools see the request they were called with.
VAULT = textwrap.dedent('''
    import json, sys
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp_types import CallToolResult, TextContent

    srv = MCPServer("vault")

    @srv.tool()
    def login(ctx: Context) -> str:
        """Refuses the credential it was sent, quoting it."""
        raise ToolError("credential " + (ctx.headers or {}).get("authorization", "") + " was rejected")

    @srv.tool()
    def whoami(ctx: Context) -> str:
        """Succeeds with the credential it was sent: a successful result is the tool's own."""
        return (ctx.headers or {}).get("authorization", "")

    @srv.tool()
    def echo_meta(ctx: Context) -> CallToolResult:
        """The request's _meta as the server received it, in a result that carries its own _meta."""
        meta = dict(ctx.request_context.meta or {})
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(meta, sort_keys=True))],
                              _meta={"vault.example/trace": "t-1"})

    srv.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
''')


class HungLister(BaseHTTPRequestHandler):
    """An upstream that initializes and then takes HANG_SECONDS to answer any request (a hung server)."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if "id" not in msg:
            body: Optional[Dict[str, Any]] = None
        elif msg["method"] == "initialize":
            body = {"jsonrpc": "2.0", "id": msg["id"], "result": {
                "protocolVersion": "2025-11-25", "serverInfo": {"name": "hung"},
                "capabilities": {"tools": {}, "prompts": {}, "resources": {}}}}
        else:
            self.release.wait(HANG_SECONDS)
            key = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources",
                   "resources/templates/list": "resourceTemplates"}.get(msg["method"], "items")
            body = {"jsonrpc": "2.0", "id": msg["id"], "result": {key: []}}
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(202 if body is None else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the gateway hanging up on a hung request is expected here


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("s10-mcp")
    script = tmp / "vault_server.py"
    script.write_text(VAULT)
    port = free_port()
    vault = subprocess.Popen([sys.executable, str(script), str(port)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    alpha = MCPUpstreamProcess("alpha").start()
    hung = QuietServer(("127.0.0.1", 0), HungLister)
    threading.Thread(target=hung.serve_forever, daemon=True).start()
    gw = None
    try:
        _wait_up(vault, f"http://127.0.0.1:{port}/mcp")
        c = copy.deepcopy(DEFAULT_CONFIG)
        c["database"] = {"url": f"sqlite:///{tmp}/rp.db"}
        c["mcp"] = {"list_cache_seconds": 0, "list_deadline_seconds": DEADLINE_SECONDS}
        c["mcp_servers"] = {
            "alpha": {"type": "http", "url": alpha.url, "timeout": 10},
            "vault": {"type": "http", "url": f"http://127.0.0.1:{port}/mcp", "timeout": 10,
                      "headers": {"Authorization": f"Bearer {TOKEN}"}},
            # Its own timeout is twice the hang: without the deadline a listing would wait out the hang.
            "hung": {"type": "http", "url": f"http://127.0.0.1:{hung.server_address[1]}/mcp",
                     "timeout": 2 * HANG_SECONDS},
        }
        gw = GatewayProcess(c, workers=1, threads=8).start()
        yield gw
    finally:
        HungLister.release.set()
        if gw is not None:
            gw.stop()
        hung.shutdown()
        hung.server_close()
        alpha.stop()
        vault.terminate()
        vault.wait(10)
    assert TOKEN not in gw.logs()


def _wait_up(proc: "subprocess.Popen[bytes]", url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the vault MCP server exited with {proc.returncode}"
        try:
            with requests.get(url, timeout=1, headers={"Accept": "text/event-stream"}) as r:
                if r.status_code < 500:
                    return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("the vault MCP server did not start")




# --- 1. tool-error results ---------------------------------------------------------------


def test_a_tool_error_never_quotes_the_gateway_held_credentials(stack: Any) -> None:
    """An `isError: true` result carried the upstream's text untouched: a tool failing with the bearer token
    the gateway sent it (its configured `headers`) handed that token to every caller. JSON-RPC errors were
    already scrubbed; a tool error now is too."""

    async def body(s: ClientSession) -> Any:
        return await s.call_tool("vault__login", {}), await s.call_tool("vault__whoami", {})

    failed, ok = session_run(stack, body)
    assert failed.is_error
    text = " ".join(block.text for block in failed.content)
    assert TOKEN not in text, text
    assert text == "Error executing tool login: credential [redacted] was rejected"
    # A successful result belongs to the tool: never rewritten.
    assert not ok.is_error and ok.content[0].text == f"Bearer {TOKEN}"


def test_only_text_and_structured_content_of_an_error_result_are_scrubbed() -> None:
    up = HttpUpstream(MCPServerConfig(id="v", type="http", prefix="v__", url="http://127.0.0.1:9/mcp",
                                      headers={"Authorization": f"Bearer {TOKEN}"}), lambda *a: None)
    result = {"isError": True, "structuredContent": {"why": f"token {TOKEN}", TOKEN: 1},
              "content": [{"type": "text", "text": f"no: {TOKEN}"}, {"type": "image", "data": "AAAA",
                                                                       "mimeType": "image/png"}]}
    out = up.redact_tool_error(result)
    assert TOKEN not in json.dumps(out)
    assert out["content"] == [{"type": "text", "text": "no: [redacted]"}, result["content"][1]]
    assert out["structuredContent"] == {"why": "token [redacted]", "[redacted]": 1}
    assert TOKEN in json.dumps(result)  # the upstream's own object is not changed in place


# --- 2. request and result _meta ---------------------------------------------------------


def test_request_meta_reaches_the_upstream_and_result_meta_comes_back(stack: Any) -> None:
    """The gateway dropped every request `_meta` key but progressToken on its way upstream (tracing ids,
    vendor keys: the spec lets clients send them). Keys the gateway owns stay behind: MCP-reserved ones
    (the client's own era and connection) and `routeplane/…`."""
    meta = {"trace.example/id": "abc-123", "plain": {"n": 1}, "routeplane/route": "x",
            "io.modelcontextprotocol/related-task": {"taskId": "t"}, "dev.mcp/x": 1}

    async def body(s: ClientSession) -> Any:
        return await s.call_tool("vault__echo_meta", {}, meta=meta)

    result = session_run(stack, body)
    assert not result.is_error, result
    assert json.loads(result.content[0].text) == {"trace.example/id": "abc-123", "plain": {"n": 1}}
    assert result.meta == {"vault.example/trace": "t-1"}
    # The same through the pass-through endpoint.
    result = session_run(stack, lambda s: s.call_tool("echo_meta", {}, meta={"trace.example/id": "p"}),
                         path="/mcp/vault")
    assert json.loads(result.content[0].text) == {"trace.example/id": "p"}


def test_modern_era_request_meta_is_forwarded_without_the_eras_own_keys(stack: Any) -> None:
    """A 2026-07-28 request carries its era in `_meta` (protocol version, client info, capabilities): those
    describe the client's connection to the gateway and stay behind (forwarded, they would switch the
    upstream's era), while the client's other keys go on; the result keeps the upstream's `_meta` beside the
    gateway's serverInfo."""

    async def body() -> Any:
        async with Client(streamable_http_client(gw.url + "/mcp", http_client=create_mcp_http_client()),
                          mode="2026-07-28") as c:
            with anyio.fail_after(60):
                return await c.call_tool("vault__echo_meta", {}, meta={"trace.example/id": "m-1"})

    gw = stack
    try:
        result = anyio.run(body)
    finally:
        gc.collect()
    assert not result.is_error, result
    assert json.loads(result.content[0].text) == {"trace.example/id": "m-1"}
    assert result.meta["vault.example/trace"] == "t-1"
    assert result.meta["io.modelcontextprotocol/serverInfo"]["name"] == "routeplane"


# --- 3. listings under a deadline ----------------------------------------------------------


def test_a_hung_upstream_costs_a_listing_its_deadline_not_its_timeout(stack: Any) -> None:
    """Listings asked the upstreams one after the other, each for up to its own timeout: one hung server
    delayed every client's tools/list by that timeout (here 60 s; it answers after 30 s). The upstreams are
    now asked in parallel and a listing waits `mcp.list_deadline_seconds` (1 s here) in all: the hung
    server's items are left out and noted, as a failing server's are, and the others' arrive."""

    async def body(s: ClientSession) -> Any:
        timings = []
        t0 = time.monotonic()
        tools = await s.list_tools()
        timings.append(time.monotonic() - t0)
        t0 = time.monotonic()
        again = await s.list_tools()  # its fetch of the hung server is still running: not waited on again
        timings.append(time.monotonic() - t0)
        t0 = time.monotonic()
        resource = await s.read_resource("mem://alpha/hello")  # the URI lookup asks every server too
        timings.append(time.monotonic() - t0)
        return tools, again, resource, timings

    tools, again, resource, timings = session_run(stack, body)
    assert all(t < 10.0 for t in timings), timings
    names = {t.name for t in tools.tools}
    assert {"alpha__add", "vault__login"} <= names and not any(n.startswith("hung__") for n in names)
    notes = {n["server"]: n["error"] for n in tools.meta["routeplane/unavailable"]}
    assert list(notes) == ["hung"] and "1s listing deadline" in notes["hung"], notes
    assert {t.name for t in again.tools} == names
    assert [n["server"] for n in again.meta["routeplane/unavailable"]] == ["hung"]
    assert resource.contents[0].text == "hello from alpha"


def test_the_deadline_applies_on_the_pass_through_endpoint(stack: Any) -> None:
    async def body(s: ClientSession) -> Any:
        t0 = time.monotonic()
        prompts = await s.list_prompts()
        return prompts, time.monotonic() - t0

    prompts, took = session_run(stack, body, path="/mcp/hung")
    assert took < 10.0
    assert prompts.prompts == [] and prompts.meta["routeplane/unavailable"][0]["server"] == "hung"
