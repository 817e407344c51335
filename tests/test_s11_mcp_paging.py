"""MCP list pagination across fanned-out servers (s11): a client walking the cursor sees every item once
whatever order the servers answer in, and gets no trailing empty page the gateway could have spared it —
the official `mcp` client against routeplane under gunicorn, fronting scripted slow, hung and changing
MCP servers, plus the catalog called directly for what an allowlist hides."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import anyio
import pytest
from mcp import ClientSession, types

from routeplane.config import DEFAULT_CONFIG
from routeplane.mcp.catalog import Catalog
from routeplane.mcp.cursors import Walk
from routeplane.mcp.jsonrpc import MCPError
from routeplane.mcp.settings import MCPServerConfig
from tests.support.gateway import GatewayProcess
from tests.support.mcp_client import session_run
from tests.support.mcp_scripted import JsonRpcHandler, QuietServer

pytestmark = pytest.mark.e2e

HANG_SECONDS = 60.0


class Scripted(JsonRpcHandler):
    """Streamable-HTTP MCP servers by path: `/many/N/mcp` lists tools t0…tN-1; `/slow/S/N/mcp` the same
    after S seconds; `/hang/mcp` never lists (until `release`); `/grow/mcp` lists `grown` and its tool
    `grow` puts a new tool first and says so with a list_changed; `/tail/mcp` lists four tools and
    then one whose name is not a string."""

    release = threading.Event()
    grown: List[str] = []

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if "id" not in msg:
            return self._send(202, b"")
        if msg["method"] == "initialize":
            return self._answer(msg, {"protocolVersion": "2025-11-25", "serverInfo": {"name": self.path},
                                      "capabilities": {"tools": {"listChanged": True}}})
        parts = self.path.strip("/").split("/")
        if msg["method"] == "tools/call" and parts[0] == "grow":
            Scripted.grown = ["new"] + Scripted.grown
            events = [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
                      {"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "ok"}]}}]
            return self._send(200, b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events),
                              "text/event-stream")
        if msg["method"] != "tools/list":
            return self._answer(msg, {})
        names: List[Any] = []
        if parts[0] == "many":
            names = [f"t{i}" for i in range(int(parts[1]))]
        elif parts[0] == "slow":
            time.sleep(float(parts[1]))
            names = [f"t{i}" for i in range(int(parts[2]))]
        elif parts[0] == "hang":
            self.release.wait(HANG_SECONDS)
        elif parts[0] == "grow":
            names = list(Scripted.grown)
        elif parts[0] == "tail":
            names = ["t0", "t1", "t2", "t3", 7]
        self._answer(msg, {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]})


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        Scripted.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway(tmp_path: Any, base: str) -> Iterator[Callable[..., GatewayProcess]]:
    started: List[GatewayProcess] = []
    Scripted.release.clear()

    def start(servers: Dict[str, str], **mcp: Any) -> GatewayProcess:
        c = copy.deepcopy(DEFAULT_CONFIG)
        c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
        c["mcp"] = mcp
        c["mcp_servers"] = {sid: {"type": "http", "url": f"{base}/{path}/mcp", "timeout": 2 * HANG_SECONDS}
                            for sid, path in servers.items()}
        gw = GatewayProcess(c, workers=1, threads=8).start()
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        Scripted.release.set()
        for gw in started:
            gw.stop()




async def walk(s: ClientSession, pause: float = 0.0, first: Optional[types.ListToolsResult] = None
               ) -> Tuple[List[types.ListToolsResult], List[float]]:
    """Every page of tools/list (each page's time too), `pause` seconds apart."""
    pages: List[types.ListToolsResult] = [first] if first else []
    took: List[float] = []
    while not pages or pages[-1].next_cursor:
        if pages:
            await anyio.sleep(pause)
        t0 = time.monotonic()
        cursor = pages[-1].next_cursor if pages else None
        pages.append(await s.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None))
        took.append(time.monotonic() - t0)
        assert len(pages) < 50
    return pages, took


def names(pages: List[types.ListToolsResult]) -> List[str]:
    return [t.name for p in pages for t in p.tools]


def unavailable(pages: List[types.ListToolsResult]) -> List[str]:
    return [n["server"] for p in pages for n in (p.meta or {}).get("routeplane/unavailable", [])]


def test_a_slow_server_that_answers_between_two_pages_is_listed_once(
        gateway: Callable[..., GatewayProcess]) -> None:
    """A page waited for a slow server it reached before filling (here the first), and past the deadline left
    it out of the walk for good: its tools were missing though it answered while the client was still
    paging. Now a page fills from the servers that have answered; the slow one stays in the cursor and is
    shown by the page that finds it answered."""
    gw = gateway({"a": "slow/2/3", "b": "many/10"}, page_size=4, list_deadline_seconds=1)  # in name order

    async def body(s: ClientSession) -> Any:
        return await walk(s, pause=1.5)

    pages, took = session_run(gw, body)
    got = names(pages)
    assert sorted(got) == sorted([f"a__t{i}" for i in range(3)] + [f"b__t{i}" for i in range(10)]), got
    assert len(got) == len(set(got))
    assert unavailable(pages) == []
    assert took[0] < 0.9, took  # the healthy server filled page 1: it did not wait for the slow one
    assert all(p.tools for p in pages)


def test_a_hung_server_costs_one_deadline_and_no_healthy_item(gateway: Callable[..., GatewayProcess]) -> None:
    """A hung server first in line: the pages the healthy ones fill never wait for it; the page that has
    room waits its one deadline, then ends the walk naming it."""
    gw = gateway({"a": "hang", "b": "many/5", "c": "many/2"}, page_size=4, list_deadline_seconds=2)

    pages, took = session_run(gw, walk)
    got = names(pages)
    assert got == [f"b__t{i}" for i in range(5)] + [f"c__t{i}" for i in range(2)]
    assert unavailable(pages) == ["a"] and len(pages) == 2
    assert took[0] < 1.0 and took[1] >= 1.9, took


def test_a_tool_added_upstream_between_two_pages_does_not_repeat_one(
        gateway: Callable[..., GatewayProcess]) -> None:
    """The cursor was an index into the server's list: a tool added at its front (list_changed) between
    two pages shifted the list, and page 2 began with the last tool of page 1 again. It now goes on after
    the item the last page ended with, wherever that item is now."""
    Scripted.grown = [f"t{i}" for i in range(6)]
    gw = gateway({"g": "grow"}, page_size=4)

    async def body(s: ClientSession) -> Any:
        first = await s.list_tools()
        # Sent as is: the SDK's call_tool would list the tools afterwards (for output schemas).
        await s.send_request(types.CallToolRequest(params=types.CallToolRequestParams(name="g__grow", arguments={})),
                             types.CallToolResult)
        return await walk(s, first=first)

    pages, _ = session_run(gw, body)
    assert names(pages) == [f"g__t{i}" for i in range(6)]


def test_no_empty_last_page_after_items_the_gateway_drops(gateway: Callable[..., GatewayProcess]) -> None:
    """Page 1 filled on the server's fourth tool and handed out a cursor for the fifth, which the gateway
    drops (no string name): page 2 was empty. A full page now looks on for a next item before it promises one."""
    gw = gateway({"t": "tail", "e": "many/0"}, page_size=4)

    async def body(s: ClientSession) -> Any:
        await walk(s)  # every list cached: a page that fills before a server answers cannot know
        return await walk(s)

    pages, _ = session_run(gw, body)
    assert len(pages) == 1 and names(pages) == [f"t__t{i}" for i in range(4)]


class Listed:
    """An upstream that lists `tools` at once."""

    def __init__(self, tools: List[str]) -> None:
        self.capabilities = {"tools": {}}
        self.tools = tools

    def ensure_initialized(self) -> None:
        pass

    def request(self, method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {"tools": [{"name": n} for n in self.tools]}


def catalog_of(tools: Dict[str, List[str]], page_size: int) -> Catalog:
    configs = {sid: MCPServerConfig(id=sid, type="http", prefix=f"{sid}__", url="http://127.0.0.1:9/mcp")
               for sid in tools}
    ups = {sid: Listed(t) for sid, t in tools.items()}
    catalog = Catalog(configs, ups.__getitem__, ttl=60, page_size=page_size, cursor_key=lambda: b"k" * 32,
                      deadline=5)
    lists = catalog.gather([(sid, "tools/list") for sid in tools])
    for sid in tools:  # cached: every list is known when the page is made
        lists[(sid, "tools/list")]
    return catalog


def test_no_cursor_when_what_is_left_is_hidden_by_the_allowlist() -> None:
    """A caller whose `tools` allowlist hides the rest of the list: page 1 was full, so it promised a page 2
    that came back empty. Hidden items are looked past before a cursor is promised."""
    catalog = catalog_of({"a": ["x1", "x2", "secret1"], "b": ["secret2"]}, page_size=2)
    try:
        page = catalog.listing("tools/list", ["a", "b"], True, None, lambda n: "secret" not in n, "")
    finally:
        catalog.close()
    assert [t["name"] for t in page["tools"]] == ["a__x1", "a__x2"] and "nextCursor" not in page


def test_cursors_are_checked_before_use() -> None:
    """A cursor from another listing, another configuration, or edited by the client is -32602, never a 500."""
    catalog = catalog_of({"a": ["x1", "x2", "x3"], "b": ["y1"]}, page_size=1)
    other = catalog_of({"a": ["x1", "x2", "x3"], "c": ["y1"]}, page_size=1)
    try:
        cursor = catalog.listing("tools/list", ["a", "b"], True, None, lambda n: True, "")["nextCursor"]
        assert catalog.listing("tools/list", ["a", "b"], True, cursor, lambda n: True, "")["tools"][0]["name"] == "a__x2"
        body, mac = cursor.split(".")
        for bad, listing in [(cursor, ("prompts/list", ["a", "b"], "")), (cursor, ("tools/list", ["a", "b"], "a")),
                             (body + "." + mac[:-2] + "é", ("tools/list", ["a", "b"], "")),
                             ("x" * 20000 + "." + mac, ("tools/list", ["a", "b"], "")),
                             (cursor, ("tools/list", ["a", "c"], ""))]:
            method, servers, endpoint = listing
            target = other if servers == ["a", "c"] else catalog
            with pytest.raises(MCPError) as info:
                target.listing(method, servers, True, bad, lambda n: True, endpoint)
            assert info.value.code == -32602
    finally:
        catalog.close()
        other.close()


def test_a_cursor_through_thousands_of_servers_is_accepted_back() -> None:
    """The cursor names every server the walk has left: with thousands configured it must still fit the
    bound its decoder checks."""
    servers = [f"server-{i:05d}" for i in range(5000)]
    catalog = catalog_of({sid: ["x"] for sid in servers[:3]}, page_size=1)
    try:
        codec = catalog._cursors
        walk = Walk(list(servers), 0, "", set(servers[-2000:]))
        back = codec.decode(codec.encode("tools/list", "", servers, walk), "tools/list", "", servers)
    finally:
        catalog.close()
    assert back == walk
