"""MCP listing fan-out (s10 review follow-ups): a page waits only for the servers it reaches, a healthy server's
fetch never queues behind hung ones, closing the pool ends the fetches it dropped, and a list_changed outdates
the fetches already running — the official `mcp` client against routeplane under gunicorn, fronting a real SDK
MCP server and scripted ones (hung, or changing their list mid-fetch)."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from mcp import ClientSession, types

from routeplane.config import DEFAULT_CONFIG
from routeplane.mcp import catalog as catalog_module
from routeplane.mcp.catalog import MAX_REFETCHES, Catalog
from routeplane.mcp.fanout import FanOut
from routeplane.mcp.settings import MCPServerConfig
from routeplane.mcp.upstream import UpstreamFailure
from tests.support.gateway import GatewayProcess
from tests.support.mcp_client import session_run
from tests.support.mcp_scripted import JsonRpcHandler, QuietServer
from tests.support.mcp_upstream import MCPUpstreamProcess

pytestmark = pytest.mark.e2e

HANG_SECONDS = 60.0
ALPHA_TOOLS = ["add", "whoami", "crash", "slow", "count", "secret.read"]
LIST_KEYS = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources",
             "resources/templates/list": "resourceTemplates"}


class Scripted(JsonRpcHandler):
    """Scripted streamable-HTTP MCP servers, by path: `/hang/mcp` initializes and then answers nothing for
    HANG_SECONDS; `/change/mcp` lists `tools` (its first tools/list held until `release`, with the answer it
    read on arrival), and its tool `bump` changes that list and says so with a list_changed."""

    release = threading.Event()  # ends every held answer
    first_list_arrived = threading.Event()
    tools: List[str] = ["bump", "old"]
    lists_asked = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if "id" not in msg:
            return self._send(202, b"")
        if msg["method"] == "initialize":
            return self._answer(msg, {"protocolVersion": "2025-11-25", "serverInfo": {"name": self.path},
                                      "capabilities": {"tools": {"listChanged": True}, "prompts": {},
                                                       "resources": {}}})
        if self.path.startswith("/hang/"):
            self.release.wait(HANG_SECONDS)
            return self._answer(msg, {LIST_KEYS.get(msg["method"], "items"): []})
        if msg["method"] == "tools/list":
            with self.lock:
                Scripted.lists_asked += 1
                first = Scripted.lists_asked == 1
                tools = [{"name": n, "inputSchema": {"type": "object"}} for n in self.tools]
            if first:  # read before the change, answered after it
                self.first_list_arrived.set()
                self.release.wait(HANG_SECONDS)
            return self._answer(msg, {"tools": tools})
        if msg["method"] == "tools/call" and msg["params"]["name"] == "bump":
            with self.lock:
                Scripted.tools = ["bump", "new"]
            events = [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
                      {"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "ok"}]}}]
            return self._send(200, b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events),
                              "text/event-stream")
        return self._answer(msg, {LIST_KEYS.get(msg["method"], "items"): []})


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Dict[str, str]]:
    alpha = MCPUpstreamProcess("alpha").start()
    scripted = QuietServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=scripted.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{scripted.server_address[1]}"
    try:
        yield {"alpha": alpha.url, "hang": base + "/hang/mcp", "change": base + "/change/mcp"}
    finally:
        Scripted.release.set()
        scripted.shutdown()
        scripted.server_close()
        alpha.stop()


@pytest.fixture
def gateway(tmp_path: Any, upstreams: Dict[str, str]) -> Iterator[Callable[..., GatewayProcess]]:
    """Starts a gateway for one test's servers and MCP settings; lets hung answers go at the end."""
    started: List[GatewayProcess] = []
    Scripted.release.clear()

    def start(servers: Dict[str, str], **mcp: Any) -> GatewayProcess:
        c = copy.deepcopy(DEFAULT_CONFIG)
        c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
        c["mcp"] = mcp
        # Each upstream's own timeout outlasts the hang: only the listing deadline ends a wait on it.
        c["mcp_servers"] = {sid: {"type": "http", "url": upstreams[kind], "timeout": 2 * HANG_SECONDS}
                            for sid, kind in servers.items()}
        gw = GatewayProcess(c, workers=1, threads=8).start()
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        Scripted.release.set()
        for gw in started:
            gw.stop()




def unavailable(result: Any) -> List[str]:
    return [n["server"] for n in (result.meta or {}).get("routeplane/unavailable", [])]


# --- 1. a page waits only for the servers it reaches ----------------------------------------------


def test_a_full_page_does_not_wait_for_a_hung_server_after_it(gateway: Callable[..., GatewayProcess]) -> None:
    """Since the fan-out, every listing page waited for every server it might reach: with `one` and `two`
    filling page 1, a hung `zed` held that page its whole deadline and was named unavailable, though none
    of its items had room there. Page 1 now returns once it is full; page 2 is the one that waits for it."""
    gw = gateway({"one": "alpha", "two": "alpha", "zed": "hang"}, page_size=8, list_cache_seconds=0,
                 list_deadline_seconds=6)  # listed in name order

    async def body(s: ClientSession) -> Any:
        t0 = time.monotonic()
        first = await s.list_tools()
        took = time.monotonic() - t0
        second = await s.list_tools(params=types.PaginatedRequestParams(cursor=first.next_cursor))
        return first, took, second

    first, took, second = session_run(gw, body)
    assert took < 3.0, took  # it waited out the 6 s deadline before
    assert len(first.tools) == 8 and first.next_cursor and unavailable(first) == []
    names = [t.name for t in first.tools + second.tools]
    assert sorted(names) == sorted(f"{sid}__{n}" for sid in ("one", "two") for n in ALPHA_TOOLS)
    assert second.next_cursor is None and unavailable(second) == ["zed"]


# --- 2. a healthy server's fetch never queues behind hung ones ----------------------------------------


def test_hung_servers_cannot_starve_a_healthy_ones_fetch(gateway: Callable[..., GatewayProcess]) -> None:
    """The pool had 32 threads: ten hung servers' fetches of four lists (40) took them all, and a healthy
    server's fetch queued behind them until its listing's deadline passed, so it was reported as hung too.
    The pool now has a thread for each configured server and list kind."""
    hung = [f"h{i}" for i in range(10)]
    gw = gateway({**{sid: "hang" for sid in hung}, "ok1": "alpha", "ok2": "alpha"}, list_cache_seconds=0,
                 list_deadline_seconds=1.5)

    async def body(s: ClientSession) -> Any:
        # Each listing leaves its ten hung fetches running; prompts come last, when 30 are.
        return [await s.list_tools(), await s.list_resources(), await s.list_resource_templates(),
                await s.list_prompts()]

    tools, resources, templates, prompts = session_run(gw, body)
    for result in (tools, resources, templates, prompts):
        assert unavailable(result) == hung, result.meta
    assert {p.name for p in prompts.prompts} == {"ok1__greet", "ok2__greet"}
    assert {t.name for t in tools.tools} == {f"{sid}__{n}" for sid in ("ok1", "ok2") for n in ALPHA_TOOLS}


# --- 3. closing the pool ends the fetches it dropped ----------------------------------------------------


class BlockedUpstream:
    """Lists nothing until `release`: holds the pool's one thread."""

    def __init__(self) -> None:
        self.capabilities = {"tools": {}, "prompts": {}}
        self.release = threading.Event()
        self.asked = threading.Event()

    def ensure_initialized(self) -> None:
        pass

    def request(self, method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        self.asked.set()
        self.release.wait(30)
        return {LIST_KEYS[method]: []}


def test_closing_the_pool_fails_the_fetches_still_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """`FanOut.close()` threw away the queued tasks: their fetches stayed unfinished in the catalog's
    in-flight table, so a listing waiting on one (or joining it later) waited out its deadline and was
    told the server had been too slow. A dropped fetch now ends at once, failed."""
    monkeypatch.setattr(catalog_module, "MAX_FETCH_THREADS", 1)  # the second fetch must queue
    up = BlockedUpstream()
    config = MCPServerConfig(id="s", type="http", prefix="s__", url="http://127.0.0.1:9/mcp")
    catalog = Catalog({"s": config}, lambda sid: up, ttl=0, page_size=10, cursor_key=lambda: b"k" * 32,
                      deadline=10)
    try:
        lists = catalog.gather([("s", "tools/list"), ("s", "prompts/list")])
        assert up.asked.wait(10)  # tools/list runs; prompts/list waits in the queue
        catalog.close()
        t0 = time.monotonic()
        outcome = lists[("s", "prompts/list")]
        assert time.monotonic() - t0 < 2.0
        assert isinstance(outcome, UpstreamFailure) and "shutting down" in str(outcome)
        assert ("s", "prompts/list") not in catalog._inflight
    finally:
        up.release.set()
    assert lists[("s", "tools/list")] == []  # the running one ends as usual


def test_fanout_close_cancels_queued_tasks_and_lets_running_ones_end() -> None:
    pool = FanOut(1, "t")
    started, gate, finished = threading.Event(), threading.Event(), threading.Event()
    ran: List[str] = []
    cancelled: List[str] = []
    pool.submit(lambda: (started.set(), gate.wait(10), ran.append("first"), finished.set()))
    assert started.wait(10)
    pool.submit(ran.append, "second", cancel=lambda: cancelled.append("second"))
    pool.close()
    assert cancelled == ["second"]
    gate.set()
    assert finished.wait(10)
    assert ran == ["first"]


# --- 4. a list_changed outdates the fetches already running ---------------------------------------------


def test_a_listing_after_list_changed_never_gets_the_list_from_before(
        gateway: Callable[..., GatewayProcess]) -> None:
    """A listing after `notifications/tools/list_changed` joined the fetch that had started before it, got
    the list the upstream read before the change, and that fetch cached it for `list_cache_seconds`. The
    notification now outdates the running fetch: it asks again, and caches only an answer that is current."""
    Scripted.tools, Scripted.lists_asked = ["bump", "old"], 0
    Scripted.first_list_arrived.clear()
    gw = gateway({"c": "change"}, list_cache_seconds=300, list_deadline_seconds=30)
    results: Dict[str, Any] = {}

    def listing(name: str) -> None:
        results[name] = session_run(gw, lambda s: s.list_tools())

    before = threading.Thread(target=listing, args=("before",))
    before.start()
    assert Scripted.first_list_arrived.wait(20)  # the fetch has read ["bump", "old"] and is held
    # Sent as is: the SDK's call_tool would list the tools afterwards (for output schemas), and that listing
    # would join the held fetch.
    bumped = session_run(gw, lambda s: s.send_request(
        types.CallToolRequest(params=types.CallToolRequestParams(name="c__bump", arguments={})),
        types.CallToolResult))
    assert not bumped.is_error and bumped.content[0].text == "ok"
    after = threading.Thread(target=listing, args=("after",))
    after.start()
    time.sleep(1.0)  # it joins the held fetch
    Scripted.release.set()
    before.join(60)
    after.join(60)
    later = session_run(gw, lambda s: s.list_tools())  # from the cache
    for result in (results["after"], later):
        assert {t.name for t in result.tools} == {"c__bump", "c__new"}
    assert Scripted.lists_asked == 2


class ChangingUpstream:
    """Every answer arrives with a list_changed from the same server."""

    def __init__(self) -> None:
        self.capabilities = {"tools": {}}
        self.catalog: Optional[Catalog] = None
        self.asked = 0

    def ensure_initialized(self) -> None:
        pass

    def request(self, method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        self.asked += 1
        assert self.catalog is not None
        self.catalog.invalidate("s", ["tools"])
        return {"tools": [{"name": f"v{self.asked}"}]}


def test_a_fetch_every_answer_outdates_ends_uncached() -> None:
    up = ChangingUpstream()
    config = MCPServerConfig(id="s", type="http", prefix="s__", url="http://127.0.0.1:9/mcp")
    catalog = up.catalog = Catalog({"s": config}, lambda sid: up, ttl=300, page_size=10,
                                   cursor_key=lambda: b"k" * 32, deadline=10)
    try:
        outcome = catalog.gather([("s", "tools/list")])[("s", "tools/list")]
    finally:
        catalog.close()
    assert up.asked == 1 + MAX_REFETCHES
    assert outcome == [{"name": f"v{1 + MAX_REFETCHES}"}]
    assert ("s", "tools/list") not in catalog._cache
