"""MCP gateway end to end: the official `mcp` client against routeplane under gunicorn (3 workers) fronting two
real MCP servers (streamable HTTP and stdio), with Web3-JWT auth and a tools allowlist."""

from __future__ import annotations

import copy
import gc
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional

import anyio
import pytest
import requests
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from routeplane.auth.caip10 import SOLANA_MAINNET
from routeplane.auth.crypto import Wallet
from routeplane.auth.jwt import mint_token
from routeplane.config import DEFAULT_CONFIG
from tests.support.gateway import GatewayProcess
from tests.support.mcp_upstream import SCRIPT, MCPUpstreamProcess

pytestmark = pytest.mark.e2e

TOOLS = ("add", "whoami", "crash", "slow", "count", "secret.read")  # what tests/support/mcp_server.py offers
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def token(w: Wallet, **claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 600)
    claims.setdefault("jti", uuid.uuid4().hex)
    return mint_token(w, f"{SOLANA_MAINNET}:{w.solana_address}", claims)


def config(db_url: str, alpha_url: str, gamma_url: str) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": db_url}
    c["auth"] = {"mode": "jwt"}
    c["mcp"] = {"page_size": 3, "list_cache_seconds": 30}
    c["mcp_servers"] = {
        "alpha": {"type": "http", "url": alpha_url, "timeout": 10},
        "beta": {"type": "stdio", "command": sys.executable, "args": [SCRIPT, "beta", "stdio"], "timeout": 10},
        "gamma": {"type": "http", "url": gamma_url, "timeout": 5, "prefix": "g_"},
    }
    return c


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet.generate()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Dict[str, MCPUpstreamProcess]]:
    # alpha answers with SSE streams, gamma with plain JSON: the gateway's client must read both.
    ups = {"alpha": MCPUpstreamProcess("alpha").start(), "gamma": MCPUpstreamProcess("gamma", json_response=True).start()}
    yield ups
    for up in ups.values():
        up.stop()


@pytest.fixture(scope="module")
def stack(upstreams: Dict[str, MCPUpstreamProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = f"sqlite:///{tmp_path_factory.mktemp('mcp-e2e')}/rp.db"
    cfg = config(db, upstreams["alpha"].url, upstreams["gamma"].url)
    gw = GatewayProcess(cfg, workers=3, threads=8).start()
    # A second gateway on the same store: a "worker" (here a whole host) that never saw a session.
    gw2 = GatewayProcess(cfg, workers=2, threads=8).start()
    yield gw, gw2
    gw.stop()
    gw2.stop()


async def _with_session(url: str, bearer: str, body: Any) -> Any:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {bearer}"})
    async with streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            return await body(s, init)


def run(url: str, bearer: str, body: Any) -> Any:
    try:
        return anyio.run(_with_session, url, bearer, body)
    finally:
        gc.collect()  # the SDK's leftovers are finalized here, not in the middle of a later import


async def all_tools(s: ClientSession) -> List[str]:
    from mcp.types import PaginatedRequestParams

    names: List[str] = []
    cursor: Optional[str] = None
    for _ in range(20):
        page = await s.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            break
    return names


def test_sdk_client_through_the_gateway(stack: Any, wallet: Wallet) -> None:
    gw, _ = stack

    async def body(s: ClientSession, init: Any) -> Dict[str, Any]:
        out: Dict[str, Any] = {"version": init.protocol_version, "server": init.server_info.name}
        names: List[str] = []
        cursor: Optional[str] = None
        pages = 0
        while True:  # page_size 3: the cursor must carry the listing across servers
            from mcp.types import PaginatedRequestParams

            page = await s.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            names += [t.name for t in page.tools]
            pages += 1
            cursor = page.next_cursor
            if not cursor or pages > 20:
                break
        out["tools"], out["pages"] = names, pages
        out["alpha_add"] = await s.call_tool("alpha__add", {"a": 2, "b": 40})
        out["beta_add"] = await s.call_tool("beta__add", {"a": 1, "b": 2})
        out["resource"] = await s.read_resource("mem://beta/hello")
        out["prompt"] = await s.get_prompt("alpha__greet", {"who": "Bob"})
        out["prompts"] = [p.name for p in (await s.list_prompts()).prompts]
        out["resources"] = [str(r.uri) for r in (await s.list_resources()).resources]
        try:
            await s.read_resource("mem://shared/readme")
        except MCPError as exc:
            out["ambiguous"] = exc.code
        return out

    out = run(gw.url + "/mcp", token(wallet), body)
    assert out["version"] == "2025-11-25" and out["server"] == "routeplane"
    for server in ("alpha__", "beta__", "g_"):
        assert {server + n for n in TOOLS} <= set(out["tools"])
    assert len(out["tools"]) == 18 and len(set(out["tools"])) == 18 and out["pages"] == 6
    assert out["alpha_add"].content[0].text == "42" and not out["alpha_add"].is_error
    assert out["beta_add"].content[0].text == "3"
    assert out["resource"].contents[0].text == "hello from beta"
    assert out["prompt"].messages[0].content.text == "alpha says hello to Bob"
    assert set(out["prompts"]) == {"alpha__greet", "beta__greet", "g_greet"}
    assert "mem://alpha/hello" in out["resources"] and "mem://beta/hello" in out["resources"]
    assert out["ambiguous"] == -32602  # two owners: an error, never a guess


def test_pass_through_endpoint_uses_native_names(stack: Any, wallet: Wallet) -> None:
    gw, _ = stack

    async def body(s: ClientSession, init: Any) -> Any:
        tools = await all_tools(s)
        readme = await s.read_resource("mem://shared/readme")  # one server: no ambiguity
        return tools, (await s.call_tool("add", {"a": 5, "b": 6})).content[0].text, readme.contents[0].text

    tools, text, readme = run(gw.url + "/mcp/beta", token(wallet), body)
    assert set(tools) == set(TOOLS)
    assert text == "11" and readme == "readme of beta"


def test_tools_allowlist_denies_and_hides(stack: Any, wallet: Wallet) -> None:
    gw, _ = stack
    bearer = token(wallet, tools=["alpha__*", "beta__add"])

    async def body(s: ClientSession, init: Any) -> Any:
        tools = await all_tools(s)
        ok = await s.call_tool("beta__add", {"a": 1, "b": 1})
        with pytest.raises(MCPError) as denied:
            await s.call_tool("beta__secret.read", {})
        return tools, ok, denied.value

    tools, ok, denied = run(gw.url + "/mcp", bearer, body)
    assert set(tools) == {"alpha__" + t for t in TOOLS} | {"beta__add"}
    assert ok.content[0].text == "2"
    assert denied.code == -32003 and "beta__secret.read" in denied.message
    # The same policy on the pass-through endpoint (patterns match the aggregate name), over raw HTTP: 403.
    h = {**ACCEPT, "Authorization": f"Bearer {bearer}"}
    r = requests.post(gw.url + "/mcp/beta", json=INIT, headers=h, timeout=10)
    h.update({"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"})
    r = requests.post(gw.url + "/mcp/beta", headers=h, timeout=10, json={
        "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
    assert r.status_code == 403 and r.json()["error"]["code"] == -32003 and r.json()["id"] == 7


def test_missing_or_bad_credentials_are_401(stack: Any, wallet: Wallet) -> None:
    gw, _ = stack
    r = requests.post(gw.url + "/mcp", json=INIT, headers=ACCEPT, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == -32001
    assert r.headers["WWW-Authenticate"] == "Bearer"
    bad = token(wallet, tools="not-a-list")
    r = requests.post(gw.url + "/mcp", json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {bad}"}, timeout=30)
    assert r.status_code == 401
    # Which server ids exist is not told to a caller without credentials (it was a 404 before the 401).
    for path in ("/mcp/nosuch", "/mcp/beta"):
        r = requests.post(gw.url + path, json=INIT, headers=ACCEPT, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == -32001, (path, r.text)


def _session(url: str, bearer: str) -> Dict[str, str]:
    h = {**ACCEPT, "Authorization": f"Bearer {bearer}", "Connection": "close"}
    r = requests.post(url, json=INIT, headers=h, timeout=10)
    assert r.status_code == 200, r.text
    h.update({"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"})
    return h


def _call(url: str, h: Dict[str, str], name: str, i: int = 2, **args: Any) -> requests.Response:
    return requests.post(url, headers=h, timeout=30, json={
        "jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}})


def test_sessions_are_accepted_by_workers_and_hosts_that_never_saw_them(stack: Any, wallet: Wallet) -> None:
    gw, gw2 = stack
    bearer = token(wallet)
    h = _session(gw.url + "/mcp", bearer)
    # A fresh connection per call, in parallel: gunicorn spreads them over the 3 workers; each worker
    # has its own stdio child, so the pids show how many workers served this one session.
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: _call(gw.url + "/mcp", h, "beta__whoami", i), range(24)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    pids = {a.json()["result"]["content"][0]["text"] for a in answers}
    assert all(p.startswith("beta:") for p in pids)
    print(f"one session served by {len(pids)} worker(s)")
    # Another gateway on the same store has never seen the session: it verifies the signature and serves it.
    r = _call(gw2.url + "/mcp", h, "alpha__add", a=1, b=1)
    assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "2"
    # DELETE ends it everywhere (the end is recorded in the shared store).
    d = requests.delete(gw.url + "/mcp", headers=h, timeout=10)
    assert d.status_code == 204
    for url in (gw.url, gw2.url, gw.url):
        r = _call(url + "/mcp", h, "alpha__add", a=1, b=1)
        assert r.status_code == 404 and r.json()["error"]["code"] == -32600
    # A session belongs to its caller: another account presenting it gets 404.
    h2 = _session(gw.url + "/mcp", bearer)
    other = Wallet.generate()
    h2["Authorization"] = f"Bearer {token(other)}"
    assert _call(gw.url + "/mcp", h2, "alpha__add", a=1, b=1).status_code == 404


def test_upstreams_that_die_are_reported_cleanly(stack: Any, wallet: Wallet,
                                                 upstreams: Dict[str, MCPUpstreamProcess]) -> None:
    gw, _ = stack
    url = gw.url + "/mcp"
    h = _session(url, token(wallet))
    # A stdio server dying mid-call: a JSON-RPC error naming the server, then a fresh process serves.
    r = _call(url, h, "beta__crash")
    assert r.status_code == 502 and r.json()["error"]["code"] == -32010
    assert "beta" in r.json()["error"]["message"] and r.json()["id"] == 2
    assert _call(url, h, "beta__add", a=2, b=2).json()["result"]["content"][0]["text"] == "4"
    # An HTTP server that goes away mid-session.
    upstreams["gamma"].stop()
    r = _call(url, h, "g_add", a=1, b=1)
    assert r.status_code == 502 and "gamma" in r.json()["error"]["message"]
    # Listing still works without it (each worker may still hold gamma's list until its TTL; the
    # omission note itself is checked in test_mcp_gateway.py, where no cache can hide it).
    r = requests.post(url, headers=h, timeout=30, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert r.status_code == 200 and r.json()["result"]["tools"]
    # gamma comes back (a new process: our upstream session id is unknown to it, 404 -> initialize again).
    revived = MCPUpstreamProcess("gamma", json_response=True, port=upstreams["gamma"].port).start()
    upstreams["gamma"] = revived
    r = _call(url, h, "g_add", a=20, b=22)
    assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "42"


@pytest.mark.parametrize("mode", ["auto", "2026-07-28"])
def test_high_level_client_in_the_modern_era(stack: Any, wallet: Wallet, mode: str) -> None:
    """`Client(url)` probes server/discover (2026-07-28, stateless) first: the gateway serves that era too."""
    from mcp import Client

    gw, _ = stack
    bearer = token(wallet, tools=["beta__*"])

    async def body() -> Any:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {bearer}"})
        async with Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode=mode) as c:
            tools: List[str] = []
            cursor: Optional[str] = None
            for _ in range(10):  # page_size 3, pages filtered by the allowlist
                page = await c.list_tools(cursor=cursor)
                tools += [t.name for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            added = await c.call_tool("beta__add", {"a": 4, "b": 5})
            text = (await c.read_resource("mem://beta/hello")).contents[0].text
            with pytest.raises(MCPError) as denied:
                await c.call_tool("alpha__add", {"a": 1, "b": 1})
            return tools, added.content[0].text, text, denied.value.code

    try:
        tools, added, text, denied = anyio.run(body)
    finally:
        gc.collect()
    assert set(tools) == {"beta__" + t for t in TOOLS}
    assert (added, text, denied) == ("9", "hello from beta", -32003)


def test_progress_is_relayed_on_an_sse_answer(stack: Any, wallet: Wallet) -> None:
    gw, _ = stack

    async def body(s: ClientSession, init: Any) -> Any:
        out = {}
        for name in ("beta__count", "alpha__count"):  # stdio, and HTTP answering with SSE
            seen: List[Any] = []

            async def progress(value: float, total: Optional[float], message: Optional[str],
                               seen: List[Any] = seen) -> None:
                seen.append((value, total, message))

            result = await s.call_tool(name, {"n": 3}, progress_callback=progress)
            out[name] = (result.content[0].text, seen)
        return out

    out = run(gw.url + "/mcp", token(wallet), body)
    for name in ("beta__count", "alpha__count"):
        text, seen = out[name]
        assert text == "counted 3"
        assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")], name
