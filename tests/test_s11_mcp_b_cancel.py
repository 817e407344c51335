"""MCP gateway (s11): a client's `notifications/cancelled` forwarded to the upstream under the gateway's own
request id (HTTP and stdio upstreams) and the cancelled call no longer waited for; upstream errors whose code
is no JSON-RPC error code (the SDK's `0`) made -32602/-32603 — the official `mcp` client and raw HTTP against
routeplane under gunicorn, fronting real SDK MCP servers."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import anyio
import pytest
import requests
from mcp import ClientSession
from mcp.shared.exceptions import MCPError as SDKError

from routeplane.config import DEFAULT_CONFIG
from routeplane.mcp.inflight import Flights
from routeplane.mcp.jsonrpc import MCPError
from routeplane.mcp.upstream import _result_of
from tests.support.gateway import GatewayProcess, free_port
from tests.support.mcp_client import session_run

pytestmark = pytest.mark.e2e

STUBBORN_SECONDS = 6.0  # far longer than a cancelled call may keep its client waiting

# A real SDK MCP server that records which of its requests were cancelled (under its own ids).
WATCH = textwrap.dedent('''
    import json, sys, time
    import anyio
    from mcp.server.mcpserver import Context, MCPServer

    srv = MCPServer("watch")
    CANCELLED = []

    @srv.tool()
    async def hang(ctx: Context) -> str:
        """Waits until cancelled; records the id it was cancelled under."""
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            CANCELLED.append(ctx.request_id)
            raise
        return "woke"

    @srv.tool()
    def stubborn(seconds: float) -> str:
        """Blocks a thread: the SDK answers only when it ends, cancelled or not."""
        time.sleep(seconds)
        return "done"

    @srv.tool()
    def cancels() -> str:
        return json.dumps(CANCELLED)

    @srv.prompt()
    def greet(who: str) -> str:
        return "hello " + who

    @srv.prompt()
    def broken() -> str:
        raise RuntimeError("the template is gone")

    if sys.argv[1] == "stdio":
        srv.run("stdio")
    else:
        srv.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]), json_response=sys.argv[1] == "http-json")
''')

SERVERS = ("alpha", "beta", "gamma")  # HTTP answering with SSE, HTTP answering JSON, stdio


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("s11-mcp-b")
    script = tmp / "watch_server.py"
    script.write_text(WATCH)
    ports = {"alpha": free_port(), "beta": free_port()}
    procs = [subprocess.Popen([sys.executable, str(script), kind, str(ports[sid])], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for sid, kind in (("alpha", "http"), ("beta", "http-json"))]
    gateway = None
    try:
        for proc, sid in zip(procs, ("alpha", "beta")):
            _wait_up(proc, f"http://127.0.0.1:{ports[sid]}/mcp")
        c = copy.deepcopy(DEFAULT_CONFIG)
        c["database"] = {"url": f"sqlite:///{tmp}/rp.db"}
        c["mcp"] = {"list_cache_seconds": 0}
        c["mcp_servers"] = {
            "alpha": {"type": "http", "url": f"http://127.0.0.1:{ports['alpha']}/mcp", "timeout": 20},
            "beta": {"type": "http", "url": f"http://127.0.0.1:{ports['beta']}/mcp", "timeout": 20},
            "gamma": {"type": "stdio", "command": sys.executable, "args": [str(script), "stdio"], "timeout": 20},
        }
        gateway = GatewayProcess(c, workers=1, threads=16).start()
        yield gateway
    finally:
        if gateway is not None:
            gateway.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    # The stdio child's own stderr (its SDK logs the failing prompt in a box) shares this log.
    assert "Traceback (most recent call last)" not in gateway.logs()


def _wait_up(proc: "subprocess.Popen[bytes]", url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the watch MCP server exited with {proc.returncode}"
        try:
            with requests.get(url, timeout=1, headers={"Accept": "text/event-stream"}) as r:
                if r.status_code < 500:
                    return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("the watch MCP server did not start")


# --- raw HTTP: the client picks its own request ids ------------------------------------------------


class RawSession:
    """A legacy MCP session over plain HTTP, so the test chooses the ids (never ones the gateway uses)."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.url = gw.url + "/mcp"
        first = self._post({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        assert first.status_code == 200, first.text
        self.headers = {"Mcp-Session-Id": first.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
        assert self.notify("notifications/initialized").status_code == 202

    def _post(self, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None, sse: bool = False,
              timeout: float = 30) -> requests.Response:
        accept = "application/json, text/event-stream" if sse else "application/json"
        return requests.post(self.url, data=json.dumps(body), timeout=timeout,
                             headers={"Content-Type": "application/json", "Accept": accept, **(headers or {})})

    def notify(self, method: str, params: Optional[Dict[str, Any]] = None) -> requests.Response:
        body: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        return self._post(body, getattr(self, "headers", None))

    def call(self, request_id: Any, name: str, arguments: Dict[str, Any], sse: bool = False,
             timeout: float = 30) -> Dict[str, Any]:
        params: Dict[str, Any] = {"name": name, "arguments": arguments}
        if sse:
            params["_meta"] = {"progressToken": "p-1"}  # answered as a stream (the progress relay)
        r = self._post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params},
                       self.headers, sse, timeout)
        assert r.status_code == 200, r.text
        if r.headers["Content-Type"].startswith("text/event-stream"):
            frames = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
            return frames[-1]
        return r.json()

    def cancels(self, server: str) -> List[str]:
        return json.loads(self.call("seen", f"{server}__cancels", {})["result"]["content"][0]["text"])


def _in_background(fn: Any) -> Tuple[threading.Thread, Dict[str, Any]]:
    out: Dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            out["answer"] = fn()
        except Exception as exc:  # reported by the test's assertion
            out["error"] = exc
        out["seconds"] = time.monotonic() - started

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@pytest.mark.parametrize("server", SERVERS)
def test_a_cancel_reaches_the_upstream_under_the_gateway_s_own_request_id(gw: GatewayProcess, server: str) -> None:
    """`notifications/cancelled` was answered 202 and dropped: the upstream worked on (here: waited 60s) and
    the client's POST stayed open until the upstream timed out. Now the cancel goes upstream naming the id
    the gateway used there (the client's `"client-7"` is unknown upstream), the upstream's handler is
    cancelled, and the client's POST ends at once with -32800, never a late result."""
    s = RawSession(gw)
    before = s.cancels(server)
    t, out = _in_background(lambda: s.call("client-7", f"{server}__hang", {}, timeout=15))
    time.sleep(1.0)  # the call is with the upstream
    r = s.notify("notifications/cancelled", {"requestId": "client-7", "reason": "the user gave up"})
    assert r.status_code == 202 and not r.content
    t.join(15)
    assert "error" not in out, out
    answer = out["answer"]
    assert answer["id"] == "client-7" and answer["error"]["code"] == -32800 and "result" not in answer, answer
    assert out["seconds"] < 5, out
    deadline = time.monotonic() + 5
    while len(s.cancels(server)) == len(before) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = s.cancels(server)
    assert len(after) == len(before) + 1, (before, after)
    assert after[-1] != "client-7"


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("server", SERVERS)
def test_a_cancelled_call_is_not_waited_for_while_the_upstream_works_on(gw: GatewayProcess, server: str,
                                                                       sse: bool) -> None:
    """A tool that ignores cancellation (a blocking sync tool: the SDK answers only when it ends) kept the
    client's POST — and a gateway thread — until its result, then sent that result. Now the POST ends at
    once with -32800 (as a JSON body, or as the last event of the progress stream), and the session goes on."""
    s = RawSession(gw)
    t, out = _in_background(lambda: s.call(41, f"{server}__stubborn", {"seconds": STUBBORN_SECONDS}, sse=sse))
    time.sleep(1.0)
    assert s.notify("notifications/cancelled", {"requestId": 41}).status_code == 202
    t.join(30)
    assert "error" not in out, out
    assert out["answer"]["id"] == 41 and out["answer"]["error"]["code"] == -32800, out
    assert out["seconds"] < STUBBORN_SECONDS - 2, out
    assert isinstance(s.cancels(server), list)  # the session and the upstream serve on


@pytest.mark.parametrize("server", ("alpha", "gamma"))
def test_a_cancel_for_an_unknown_or_finished_request_is_dropped_quietly(gw: GatewayProcess, server: str) -> None:
    s = RawSession(gw)
    before = s.cancels(server)
    done = s.call(5, f"{server}__stubborn", {"seconds": 0})
    assert done["result"]["content"][0]["text"] == "done"
    for params in ({"requestId": 5}, {"requestId": "never-sent"}, {"requestId": True}, {}, {"requestId": None}):
        r = s.notify("notifications/cancelled", params)
        assert r.status_code == 202 and not r.content, (params, r.text)
    # `5` and `"5"` are different ids: the cancel of one leaves the other running.
    t, out = _in_background(lambda: s.call("5", f"{server}__stubborn", {"seconds": 1.5}))
    time.sleep(0.5)
    assert s.notify("notifications/cancelled", {"requestId": 5}).status_code == 202
    t.join(10)
    assert out["answer"]["result"]["content"][0]["text"] == "done", out
    assert s.cancels(server) == before


def test_another_session_cannot_cancel_a_call(gw: GatewayProcess) -> None:
    owner, other = RawSession(gw), RawSession(gw)
    t, out = _in_background(lambda: owner.call(9, "alpha__stubborn", {"seconds": 1.5}))
    time.sleep(0.5)
    assert other.notify("notifications/cancelled", {"requestId": 9}).status_code == 202
    t.join(10)
    assert out["answer"]["result"]["content"][0]["text"] == "done", out


# --- the official SDK client ----------------------------------------------------------------------




@pytest.mark.parametrize("server", SERVERS)
def test_the_sdk_client_s_cancel_stops_the_upstream_tool(gw: GatewayProcess, server: str) -> None:
    """The SDK sends `notifications/cancelled` when a caller stops waiting; the upstream's tool is cancelled."""

    async def seen(s: ClientSession) -> List[str]:
        return json.loads((await s.call_tool(f"{server}__cancels", {})).content[0].text)

    async def body(s: ClientSession) -> Tuple[List[str], List[str], str]:
        before = await seen(s)
        with anyio.move_on_after(1.0):
            await s.call_tool(f"{server}__hang", {})
            raise AssertionError("hang answered")
        with anyio.fail_after(5):
            while len(after := await seen(s)) == len(before):
                await anyio.sleep(0.1)
        done = await s.call_tool(f"{server}__stubborn", {"seconds": 0})
        return before, after, done.content[0].text

    before, after, done = session_run(gw, body)
    assert len(after) == len(before) + 1 and done == "done"


# --- upstream error codes -------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_an_sdk_server_s_code_0_reaches_the_client_as_a_json_rpc_error_code(gw: GatewayProcess,
                                                                            server: str) -> None:
    """The Python SDK's servers answer `code: 0` for a prompt's missing argument or a failing prompt; it was
    passed through, so clients saw error code 0. Missing arguments are -32602 (mcp.md §6), the rest -32603,
    with the upstream's message kept."""

    async def body(s: ClientSession) -> List[Any]:
        errors = []
        for name, args in (("greet", {}), ("broken", None), ("nope", None)):
            try:
                await s.get_prompt(f"{server}__{name}", args)
            except SDKError as exc:
                errors.append(exc.error)
            else:
                errors.append(None)
        return errors

    missing, broken, unknown = session_run(gw, body)
    assert missing.code == -32602 and missing.message == "Missing required arguments: {'who'}", missing
    assert broken.code == -32603 and broken.message == "Error rendering prompt broken", broken
    assert unknown.code == -32602, unknown  # the gateway's own: no such prompt in its catalog


@pytest.mark.parametrize("code, message, expected", [
    (0, "Missing required arguments: {'who'}", -32602),
    (0, "Unknown tool: x", -32602),
    (0, "Invalid params: bad cursor", -32602),
    (0, "something broke", -32603),
    (True, "boom", -32603),
    (False, "boom", -32603),
    ("-32602", "boom", -32603),
    (1.5, "boom", -32603),
    (None, "boom", -32603),
    (-32002, "Resource not found", -32002),  # a real code is the upstream's to choose
    (-32602, "something broke", -32602),
    (42, "app-defined", 42),
])
def test_upstream_error_codes(code: Any, message: str, expected: int) -> None:
    secret = "upstream-credential-0123456789"
    err = {"message": f"{message} ({secret})", "data": {"why": secret}}
    if code is not None:
        err["code"] = code
    with pytest.raises(MCPError) as raised:
        _result_of("s", {"jsonrpc": "2.0", "id": 1, "error": err}, (secret,))
    assert raised.value.code == expected and isinstance(raised.value.code, int)
    assert raised.value.message == f"{message} ([redacted])" and raised.value.data == {"why": "[redacted]"}


# --- the registry, without a server ---------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.cancelled: List[Tuple[Any, Optional[str]]] = []

    def cancel(self, upstream_id: Any, reason: Optional[str]) -> None:
        self.cancelled.append((upstream_id, reason))


def test_flights_map_the_client_s_id_to_the_upstream_s() -> None:
    flights, up = Flights(), Recorder()
    flight = flights.open("sess", "c-1")
    assert flight.bind(up, 17)  # type: ignore[arg-type]
    flights.cancel("other-session", {"requestId": "c-1"})
    flights.cancel("sess", {"requestId": 1})
    assert not flight.cancelled and up.cancelled == []
    flights.cancel("sess", {"requestId": "c-1", "reason": "x" * 1000})
    assert flight.cancelled and flight.wake.is_set() and up.cancelled == [(17, "x" * 200)]
    flights.cancel("sess", {"requestId": "c-1"})  # once is enough
    assert len(up.cancelled) == 1


def test_a_flight_cancelled_before_it_is_sent_is_never_sent_and_a_closed_one_forwards_nothing() -> None:
    flights, up = Flights(), Recorder()
    early = flights.open("sess", 1)
    flights.cancel("sess", {"requestId": 1})
    assert not early.bind(up, 5) and up.cancelled == []  # type: ignore[arg-type]
    done = flights.open("sess", 2)
    assert done.bind(up, 6)  # type: ignore[arg-type]
    done.unbind()
    flights.close("sess", 2, done)
    flights.cancel("sess", {"requestId": 2})
    assert not done.cancelled and up.cancelled == []
    # A reused id: closing the older call leaves the newer one cancellable.
    old, new = flights.open("sess", 3), flights.open("sess", 3)
    flights.close("sess", 3, old)
    flights.cancel("sess", {"requestId": 3})
    assert new.cancelled and not old.cancelled
