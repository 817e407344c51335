"""MCP gateway in process (Flask test client) over real stdio MCP servers: JSON-RPC errors and statuses,
sessions, hooks (pre-request deny, route rewrite, observers), caching and list_changed, config validation."""

from __future__ import annotations

import copy
import json
import sys
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

from routeplane.app import App, Plugin, PluginId
from routeplane.config import DEFAULT_CONFIG, ConfigError, parse_config
from routeplane.hooks.language_model import HookDecision, PreRequestHook
from routeplane.hooks.mcp import MCPDecision, MCPDenial, MCPObserveHook, MCPPreRequestHook, MCPRouteHook
from routeplane.mcp.context import MCPCallEvent, MCPRequestContext, MCPTarget
from tests.support.gateway import free_port
from tests.support.mcp_upstream import SCRIPT

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def stdio(name: str, **extra: Any) -> Dict[str, Any]:
    return {"type": "stdio", "command": sys.executable, "args": [SCRIPT, name, "stdio"], "timeout": 10, **extra}


class Deny429(MCPPreRequestHook):
    def check(self, ctx: MCPRequestContext) -> MCPDecision:
        if ctx.method == "tools/call" and ctx.arguments.get("a") == 13:
            return MCPDecision.deny(MCPDenial.rate_limited("Unlucky number; slow down.", retry_after=2.5))
        return MCPDecision.allow()


class AddGoesToDelta(MCPRouteHook):
    def resolve(self, target: MCPTarget, ctx: MCPRequestContext) -> MCPTarget:
        return target.replace(server="delta") if target.name == "whoami" else target


class Capture(MCPObserveHook):
    def __init__(self) -> None:
        self.events: List[MCPCallEvent] = []

    def on_call_end(self, event: MCPCallEvent) -> None:
        self.events.append(event)


class Policy(Plugin):
    id = PluginId("mcp-policy")

    def __init__(self) -> None:
        self.capture = Capture()

    def install(self, app: Any) -> None:
        app.mcp_builder().pre_request_hook(Deny429()).route_hook(AddGoesToDelta()).observe_hook(self.capture)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Any]:
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["mcp"] = {"session_secret": "s" * 32, "list_cache_seconds": 300}
    raw["mcp_servers"] = {"beta": stdio("beta"), "delta": stdio("delta", prefix="d-"),
                          "ghost": {"type": "http", "url": f"http://127.0.0.1:{free_port()}/mcp", "timeout": 2},
                          "nocmd": {"type": "stdio", "command": "/nonexistent/mcp-server"},
                          "slowpoke": stdio("slowpoke", timeout=1)}
    policy = Policy()
    app = App.builder().config(parse_config(raw)).inline_observers().plugin(policy).build()
    client = app.flask_app().test_client()
    client.policy = policy  # type: ignore[attr-defined]
    client.app_ = app  # type: ignore[attr-defined]
    yield client
    app.shutdown()


def session(client: Any, path: str = "/mcp") -> Dict[str, str]:
    r = client.post(path, json=INIT, headers=ACCEPT)
    assert r.status_code == 200, r.data
    assert r.get_json()["result"]["protocolVersion"] == "2025-06-18"  # a supported version is echoed
    return {**ACCEPT, "Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-06-18"}


def rpc(client: Any, h: Dict[str, str], method: str, params: Optional[Dict[str, Any]] = None, path: str = "/mcp",
        i: int = 5) -> Any:
    body: Dict[str, Any] = {"jsonrpc": "2.0", "id": i, "method": method}
    if params is not None:
        body["params"] = params
    return client.post(path, json=body, headers=h)


# --- bad JSON-RPC ---------------------------------------------------------------


def test_invalid_json_is_parse_error(gateway: Any) -> None:
    r = gateway.post("/mcp", data=b'{"jsonrpc": "2.0", "id": 1,', headers=ACCEPT)
    assert r.status_code == 400
    assert r.get_json() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": r.get_json()[
        "error"]["message"]}}
    assert gateway.post("/mcp", data=b"\xff\xfe", headers=ACCEPT).get_json()["error"]["code"] == -32700


@pytest.mark.parametrize("body", [
    {"id": 1, "method": "ping"},  # missing jsonrpc
    {"jsonrpc": "1.0", "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1, "method": 7},
    [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],  # batches were removed in 2025-06-18
    "ping",
])
def test_invalid_requests_are_32600(gateway: Any, body: Any) -> None:
    r = gateway.post("/mcp", data=json.dumps(body), headers=ACCEPT)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32600


def test_unknown_method_and_wrong_params(gateway: Any) -> None:
    h = session(gateway)
    r = rpc(gateway, h, "tools/frobnicate")
    assert r.status_code == 200 and r.get_json()["error"]["code"] == -32601 and r.get_json()["id"] == 5
    for params in ({}, {"name": 3}, {"name": "beta__add", "arguments": [1, 2]}):
        r = rpc(gateway, h, "tools/call", params)
        assert r.get_json()["error"]["code"] == -32602, params
    assert rpc(gateway, h, "tools/call", {"name": "nobody__add"}).get_json()["error"]["code"] == -32602
    assert rpc(gateway, h, "tools/list", {"cursor": "forged.cursor"}).get_json()["error"]["code"] == -32602
    assert rpc(gateway, h, "prompts/get", {"name": "beta__greet", "arguments": {"who": 1}}).get_json()[
        "error"]["code"] == -32602
    r = gateway.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, headers=h)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32602
    r = gateway.post("/mcp", json={**INIT, "params": {}}, headers=ACCEPT)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32602


def test_session_rules(gateway: Any) -> None:
    h = session(gateway)
    assert rpc(gateway, h, "ping").get_json()["result"] == {}
    missing = {k: v for k, v in h.items() if k != "Mcp-Session-Id"}
    r = rpc(gateway, missing, "ping")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32600
    sid = h["Mcp-Session-Id"]
    head, body, sig = sid.split(".")
    for forged in ("nope", f"{head}.{body}.{sig[:-2]}AA", f"{head}.{body[:-2]}AA.{sig}", sid + "x"):
        r = rpc(gateway, {**h, "Mcp-Session-Id": forged}, "ping")
        assert r.status_code == 404 and r.get_json()["error"]["code"] == -32600, forged
    # a session of /mcp is not a session of /mcp/beta
    assert rpc(gateway, h, "ping", path="/mcp/beta").status_code == 404
    r = rpc(gateway, {**h, "MCP-Protocol-Version": "1999-01-01"}, "ping")
    assert r.status_code == 400
    assert gateway.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                        headers=h).status_code == 202
    assert gateway.post("/mcp", json={"jsonrpc": "2.0", "id": 99, "result": {}}, headers=h).status_code == 202
    assert gateway.get("/mcp", headers=h).status_code == 405
    assert gateway.delete("/mcp", headers=h).status_code == 204
    assert rpc(gateway, h, "ping").status_code == 404  # ended


def test_transport_level_refusals(gateway: Any) -> None:
    r = gateway.post("/mcp", data=json.dumps(INIT), headers={"Accept": "text/plain", "Content-Type": "application/json"})
    assert r.status_code == 406
    r = gateway.post("/mcp", data=json.dumps(INIT), headers={**ACCEPT, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = gateway.post("/mcp", data=b"{" + b" " * (11 * 1024 * 1024) + b"}", headers=ACCEPT)
    assert r.status_code == 413
    r = gateway.post("/mcp/nosuch", json=INIT, headers=ACCEPT)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == -32600
    r = gateway.post("/mcp", json=INIT, headers={**ACCEPT, "Origin": "http://evil.example"})
    assert r.status_code == 403


@pytest.mark.parametrize("args", ['[' * 50000 + ']' * 50000, "NaN", "1e999", "1" + "0" * 400])
def test_bodies_the_gateway_refuses_everywhere_are_parse_errors(gateway: Any, args: str) -> None:
    """Deep nesting was a 500 (RecursionError); NaN and 1e999 went upstream as invalid JSON."""
    body = ('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"beta__add","arguments":{"a":'
            + args + ',"b":1}}}')
    r = gateway.post("/mcp", data=body, headers={**session(gateway), "Content-Type": "application/json"})
    assert r.status_code == 400, r.get_data(as_text=True)[:200]
    assert r.get_json()["error"]["code"] == -32700


@pytest.mark.parametrize("host,origin,status", [
    ("evil.example:4356", "http://evil.example:4356", 403),  # DNS rebinding: both name the attacker's domain
    ("gw.example.com", "https://gw.example.com", 403),  # a domain must be listed in mcp.allowed_origins
    ("127.0.0.1:4356", "http://127.0.0.1:4356", 200),
    ("localhost:4356", "http://localhost:4356", 200),
    ("[::1]:4356", "http://[::1]:4356", 200),
    ("127.0.0.1:4356", "http://localhost:4356", 403),
])
def test_origin_guard_stops_dns_rebinding(gateway: Any, host: str, origin: str, status: int) -> None:
    r = gateway.post("/mcp", json=INIT, headers={**ACCEPT, "Origin": origin, "Host": host})
    assert r.status_code == status, r.get_data(as_text=True)


def test_sse_answer_when_only_sse_is_accepted(gateway: Any) -> None:
    h = {**session(gateway), "Accept": "text/event-stream"}
    r = rpc(gateway, h, "tools/call", {"name": "beta__add", "arguments": {"a": 1, "b": 2}})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache"
    text = r.get_data(as_text=True)
    assert text.startswith("event: message\ndata: ") and text.endswith("\n\n")
    assert json.loads(text.split("data: ", 1)[1])["result"]["content"][0]["text"] == "3"


# --- hooks ----------------------------------------------------------------------


def test_pre_request_deny_route_rewrite_and_observers(gateway: Any) -> None:
    h = session(gateway)
    capture = gateway.policy.capture
    capture.events.clear()
    r = rpc(gateway, h, "tools/call", {"name": "beta__add", "arguments": {"a": 13, "b": 1}}, i=8)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.get_json() == {"jsonrpc": "2.0", "id": 8,
                            "error": {"code": -32029, "message": "Unlucky number; slow down."}}
    # The route hook sends whoami to delta whatever the prefix said.
    r = rpc(gateway, h, "tools/call", {"name": "beta__whoami", "arguments": {}})
    assert r.get_json()["result"]["content"][0]["text"].startswith("delta:")
    r = rpc(gateway, h, "tools/call", {"name": "d-add", "arguments": {"a": 2, "b": 3}})
    assert r.get_json()["result"]["content"][0]["text"] == "5"
    outcomes = [(e.method, e.server, e.name, e.exposed_name, e.outcome) for e in capture.events]
    assert outcomes == [("tools/call", None, None, "beta__add", "denied"),
                        ("tools/call", "delta", "whoami", "beta__whoami", "ok"),
                        ("tools/call", "delta", "add", "d-add", "ok")]
    assert all(e.account_id == "local" and e.latency_ms >= 0 for e in capture.events)
    counts = gateway.app_.mcp.counts()
    assert counts["tools/call|delta|ok"] >= 2 and counts["tools/call|-|denied"] >= 1


def test_hooks_of_another_pipeline_are_type_errors() -> None:
    class LLMHook(PreRequestHook):
        def check(self, ctx: Any) -> HookDecision:
            return HookDecision.allow()

    class BadArity(MCPPreRequestHook):
        def check(self) -> MCPDecision:  # type: ignore[override]
            return MCPDecision.allow()

    builder = App.builder()
    with pytest.raises(TypeError, match="not an MCP hook"):
        builder.mcp_builder().pre_request_hook(LLMHook())
    with pytest.raises(TypeError, match="another pipeline"):
        builder.language_model_builder().pre_request_hook(Deny429())
    with pytest.raises(TypeError, match="MCPRouteHook"):
        builder.mcp_builder().route_hook(Deny429())
    with pytest.raises(TypeError, match="argument"):
        builder.mcp_builder().pre_request_hook(BadArity())
    with pytest.raises(TypeError):
        MCPDecision.deny("no")  # type: ignore[arg-type]


# --- caching and list_changed -----------------------------------------------------


def test_lists_are_cached_and_list_changed_invalidates(gateway: Any) -> None:
    h = session(gateway)
    pipeline = gateway.app_.mcp.pipeline
    assert "beta__add" in [t["name"] for t in rpc(gateway, h, "tools/list").get_json()["result"]["tools"]]
    before = pipeline.catalog.fetches
    rpc(gateway, h, "tools/list")
    assert pipeline.catalog.fetches == before  # served from cache
    # The stdio reader receives the upstream's notification exactly as the child would write it.
    pipeline.upstream("beta")._line(b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n')
    rpc(gateway, h, "tools/list")
    assert pipeline.catalog.fetches == before + 1
    calls = pipeline.counts().get("tools/call|beta|ok", 0)
    rpc(gateway, h, "tools/call", {"name": "beta__add", "arguments": {"a": 1, "b": 1}})
    rpc(gateway, h, "tools/call", {"name": "beta__add", "arguments": {"a": 1, "b": 1}})
    assert pipeline.counts()["tools/call|beta|ok"] == calls + 2  # calls are never cached


def test_stdio_process_restarts_after_dying(gateway: Any) -> None:
    h = session(gateway, "/mcp/beta")
    up = gateway.app_.mcp.pipeline.upstream("beta")
    rpc(gateway, h, "ping", path="/mcp/beta")
    r = rpc(gateway, h, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}}, path="/mcp/beta")
    first = up.pid()
    starts = up.starts
    r = rpc(gateway, h, "tools/call", {"name": "crash", "arguments": {}}, path="/mcp/beta")
    assert r.status_code == 502 and r.get_json()["error"]["code"] == -32010
    r = rpc(gateway, h, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}}, path="/mcp/beta")
    assert r.get_json()["result"]["content"][0]["text"] == "2"
    assert up.starts == starts + 1 and up.pid() != first


def test_a_dead_upstream_is_omitted_from_listings_with_a_note(gateway: Any) -> None:
    h = session(gateway)
    for method, key in (("tools/list", "tools"), ("prompts/list", "prompts"), ("resources/list", "resources")):
        result = rpc(gateway, h, method).get_json()["result"]
        assert result[key], method  # beta and delta still listed
        notes = result["_meta"]["routeplane/unavailable"]
        assert [n["server"] for n in notes] == ["ghost", "nocmd"] and "unreachable" in notes[0]["error"]
        assert "could not be started" in notes[1]["error"]
    # Listings now skip the failed servers for a few seconds instead of waiting on them again.
    catalog = gateway.app_.mcp.pipeline.catalog
    assert {"ghost", "nocmd"} <= set(catalog._failed)
    ghost = gateway.app_.mcp.pipeline.upstream("ghost")
    calls: List[str] = []
    original = ghost.request
    ghost.request = lambda *a, **kw: calls.append(a[0]) or original(*a, **kw)  # type: ignore[method-assign]
    try:
        rpc(gateway, h, "tools/list")
        assert calls == []
        r = rpc(gateway, h, "tools/call", {"name": "ghost__add", "arguments": {}})
        assert calls == ["tools/call"]  # calls are always tried
    finally:
        del ghost.request
    assert r.status_code == 502 and r.get_json()["error"]["data"] == {"server": "ghost"}
    assert "127.0.0.1" not in r.get_json()["error"]["message"]  # the upstream's address stays private


def test_a_slow_upstream_times_out_and_the_next_call_still_works(gateway: Any) -> None:
    h = session(gateway)
    r = rpc(gateway, h, "tools/call", {"name": "slowpoke__slow", "arguments": {"seconds": 3}}, i=11)
    assert r.status_code == 504 and r.get_json()["error"]["code"] == -32010 and r.get_json()["id"] == 11
    assert "within 1s" in r.get_json()["error"]["message"]
    # The same process answers the next call with its own id; the late answer to the first is dropped.
    r = rpc(gateway, h, "tools/call", {"name": "slowpoke__add", "arguments": {"a": 1, "b": 2}}, i=12)
    assert r.get_json() == {"jsonrpc": "2.0", "id": 12, "result": r.get_json()["result"]}
    assert r.get_json()["result"]["content"][0]["text"] == "3"


# --- config -------------------------------------------------------------------------


@pytest.mark.parametrize("prefixes,bad", [({"a": None, "a__b": None}, "a__b"),  # "a__" starts "a__b__"
                                           ({"x": "", "y": None}, "y"),  # "" starts everything
                                           ({"x": "t_", "y": "t_"}, "y")])
def test_a_prefix_that_starts_another_is_refused(prefixes: Dict[str, Any], bad: str) -> None:
    """Server a's tool b__x was listed as a__b__x, which routed to server a__b's tool x."""
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["mcp_servers"] = {sid: dict({"type": "stdio", "command": "x"}, **({} if p is None else {"prefix": p}))
                          for sid, p in prefixes.items()}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "gw.yaml")
    assert f"mcp_servers.{bad}.prefix: " in str(err.value)


def test_prefixes_that_do_not_start_one_another_are_fine() -> None:
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["mcp_servers"] = {"a": {"type": "stdio", "command": "x"}, "ab": {"type": "stdio", "command": "x"},
                          "b": {"type": "stdio", "command": "x", "prefix": "bb_"}}
    assert set(parse_config(raw).mcp_servers) == {"a", "ab", "b"}


def test_config_errors_name_key_paths() -> None:
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["mcp_servers"] = {
        "web": {"type": "http", "url": "http://169.254.169.254/mcp"},
        "lan": {"type": "http", "url": "https://10.1.2.3/mcp"},
        "proc": {"type": "stdio", "url": "http://127.0.0.1/x"},
        "typo": {"type": "ftp"},
        "dup": {"type": "stdio", "command": "x", "prefix": "web__"},
        "extra": {"type": "stdio", "command": "x", "colour": "red"},
    }
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "gw.yaml")
    text = str(err.value)
    for expected in ("mcp_servers.web.url: ", "metadata", "mcp_servers.lan.url: ", "allow_private_network",
                     "mcp_servers.proc.command: required", "mcp_servers.proc.url: only for type http",
                     "mcp_servers.typo.type: ", "mcp_servers.dup.prefix: ", "mcp_servers.extra.colour: "):
        assert expected in text, (expected, text)
    assert text.startswith("gw.yaml: ")
    raw["mcp_servers"] = {"lan": {"type": "http", "url": "https://10.1.2.3/mcp", "allow_private_network": True,
                                  "headers": {"Authorization": "Bearer upstream-secret"}}}
    cfg = parse_config(raw)
    assert cfg.mcp_servers["lan"].prefix == "lan__" and "upstream-secret" not in repr(cfg.mcp_servers)


def test_the_docs_hook_example_runs() -> None:
    import os
    import re

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "mcp.md")) as fh:
        blocks = re.findall(r"^```python\n(.*?)^```", fh.read(), re.S | re.M)
    ns: Dict[str, Any] = {"__name__": "docs_mcp_example"}
    exec(compile("\n".join(blocks), "docs/mcp.md", "exec"), ns)
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["mcp"] = {"session_secret": "d" * 32}
    raw["mcp_servers"] = {"beta": stdio("beta")}
    app = App.builder().config(parse_config(raw)).plugin(ns["NoDeletesPlugin"]()).build()
    try:
        client = app.flask_app().test_client()
        h = session(client)
        r = rpc(client, h, "tools/call", {"name": "beta__delete_all", "arguments": {}})
        assert r.status_code == 403 and r.get_json()["error"]["code"] == -32003
    finally:
        app.shutdown()


# --- 2026-07-28 (stateless) era ---------------------------------------------------------

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
               "io.modelcontextprotocol/clientCapabilities": {}}


def modern(client: Any, method: str, params: Optional[Dict[str, Any]] = None, version: str = "2026-07-28",
           **headers: str) -> Any:
    meta = {**MODERN_META, "io.modelcontextprotocol/protocolVersion": version}
    h = {**ACCEPT, "MCP-Protocol-Version": version, "Mcp-Method": method}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return client.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 3, "method": method,
                                                "params": {**(params or {}), "_meta": meta}})


def test_modern_requests_need_no_session_and_carry_result_metadata(gateway: Any) -> None:
    r = modern(gateway, "server/discover")
    assert r.status_code == 200 and "Mcp-Session-Id" not in r.headers
    result = r.get_json()["result"]
    assert "2026-07-28" in result["supportedVersions"] and "tools" in result["capabilities"]
    assert result["resultType"] == "complete" and result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == \
        "routeplane"
    r = modern(gateway, "tools/call", {"name": "beta__add", "arguments": {"a": 2, "b": 2}}, Mcp_Name="beta__add")
    assert r.get_json()["result"]["content"][0]["text"] == "4" and r.get_json()["result"]["resultType"] == "complete"
    # Mcp-Name may be base64-encoded (=?base64?...?=)
    r = modern(gateway, "tools/call", {"name": "beta__add", "arguments": {"a": 2, "b": 3}},
               Mcp_Name="=?base64?YmV0YV9fYWRk?=")
    assert r.get_json()["result"]["content"][0]["text"] == "5"
    # progress in the modern era: on the request's own SSE answer too
    meta = {**MODERN_META, "progressToken": 7}
    r = gateway.post("/mcp", headers={**ACCEPT, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                                      "Mcp-Name": "beta__count"},
                     json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                           "params": {"name": "beta__count", "arguments": {"n": 1}, "_meta": meta}})
    events = [json.loads(c.split("data: ", 1)[1]) for c in r.get_data(as_text=True).split("\n\n") if c]
    assert events[0]["params"]["progressToken"] == 7 and events[-1]["result"]["resultType"] == "complete"
    listing = modern(gateway, "tools/list").get_json()["result"]
    assert listing["cacheScope"] == "private" and listing["ttlMs"] == 0


def test_modern_era_errors(gateway: Any) -> None:
    r = modern(gateway, "tools/call", {"name": "beta__add", "arguments": {}}, Mcp_Name="beta__other")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32020
    r = modern(gateway, "tools/call", {"name": "beta__add", "arguments": {}})  # no Mcp-Name at all
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32020
    r = modern(gateway, "tools/list", Mcp_Method="prompts/list")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32020
    r = modern(gateway, "tools/list", version="2099-01-01")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == -32022
    assert r.get_json()["error"]["data"]["requested"] == "2099-01-01"
    for method in ("tools/frobnicate", "ping"):  # ping was removed in 2026-07-28
        r = modern(gateway, method)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == -32601
    r = modern(gateway, "resources/read", {"uri": "mem://nobody/x"}, Mcp_Name="mem://nobody/x")
    assert r.get_json()["error"]["code"] == -32602  # -32002 is retired in 2026-07-28


def test_stdio_child_does_not_inherit_gateway_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from routeplane.mcp.settings import MCPServerConfig
    from routeplane.mcp.upstream_stdio import StdioUpstream

    script = tmp_path / "env_server.py"
    script.write_text(
        "import json, os, sys\n"
        "for line in sys.stdin:\n"
        "    m = json.loads(line)\n"
        "    if 'id' not in m: continue\n"
        "    r = {'protocolVersion': '2025-11-25', 'capabilities': {}, 'serverInfo': {'name': 'e'}}\n"
        "    if m['method'] != 'initialize': r = {'env': sorted(os.environ)}\n"
        "    print(json.dumps({'jsonrpc': '2.0', 'id': m['id'], 'result': r}), flush=True)\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("ROUTEPLANE_MCP_SESSION_SECRET", "x" * 32)
    monkeypatch.setenv("LC_MESSAGES", "C")  # docs/mcp.md: children get LANG and every LC_*
    up = StdioUpstream(MCPServerConfig(id="e", type="stdio", prefix="e__", command=sys.executable,
                                       args=(str(script),), env={"CALC_MODE": "fast"}, timeout=10), lambda *a: None)
    try:
        names = up.request("env/dump")["env"]
    finally:
        up.close()
    assert "CALC_MODE" in names and "PATH" in names and "LC_MESSAGES" in names
    assert "OPENAI_API_KEY" not in names and "ROUTEPLANE_MCP_SESSION_SECRET" not in names


def test_http_upstream_reads_notifications_on_a_response_stream() -> None:
    from routeplane.mcp.settings import MCPServerConfig
    from routeplane.mcp.upstream_http import HttpUpstream

    seen: List[Any] = []
    up = HttpUpstream(MCPServerConfig(id="h", type="http", prefix="h__", url="http://127.0.0.1:9/mcp"),
                      lambda server, method, params: seen.append((server, method)))
    try:
        assert up._event('{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}', 4) is None
        assert up._event('{"jsonrpc":"2.0","id":3,"result":{}}', 4) is None  # not ours
        assert up._event('{"jsonrpc":"2.0","id":4,"result":{"ok":1}}', 4) == {"jsonrpc": "2.0", "id": 4,
                                                                              "result": {"ok": 1}}
    finally:
        up.close()
    assert seen == [("h", "notifications/tools/list_changed")]


def test_every_mcp_hook_contract_is_documented() -> None:
    import inspect as _inspect
    import os

    from routeplane.hooks import mcp as contracts

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "mcp.md")) as fh:
        doc = fh.read()
    for kind, (contract, methods) in contracts.MCP_HOOK_KINDS.items():
        assert contract.__doc__ and f"{contract.__name__}.{next(iter(methods))}(" in doc, contract
        assert kind.replace("_hook", "") in doc or kind in doc
    for value in (contracts.MCPDecision, contracts.MCPDenial):
        assert value.__name__ in doc
        assert _inspect.getdoc(value)


def test_session_secret_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from routeplane.mcp.sessions import SecretSource, SessionSigner
    from routeplane.store import Store

    monkeypatch.delenv("ROUTEPLANE_MCP_SESSION_SECRET", raising=False)
    assert SecretSource("c" * 20, None).get() == b"c" * 20
    monkeypatch.setenv("ROUTEPLANE_MCP_SESSION_SECRET", "e" * 20)
    env = SecretSource(None, None)
    assert env.get() == b"e" * 20 and env.origin == "env"
    monkeypatch.delenv("ROUTEPLANE_MCP_SESSION_SECRET")
    # The store: the mcp plugin's migration wrote one random secret that every worker reads.
    from routeplane.mcp.builder import mcp_plugin_class
    from routeplane.store.migrations import migrate

    store = Store.from_url(f"sqlite:///{tmp_path}/s.db")
    try:
        migrate(store, [mcp_plugin_class()()])
        a, b = SecretSource(None, store), SecretSource(None, store)
        assert a.get() == b.get() and len(a.get()) == 64 and a.origin == "store"
        signer_a, signer_b = SessionSigner(a, 3600, store), SessionSigner(b, 3600, store)
        sid = signer_a.mint("2025-11-25", "acct", None)
        session = signer_b.verify(sid, "acct", None)  # another "worker" accepts it
        signer_b.revoke(session)
        from routeplane.mcp.jsonrpc import MCPError

        with pytest.raises(MCPError) as gone:
            signer_a.verify(sid, "acct", None)  # and the end is seen by the first one through the store
        assert gone.value.status == 404
    finally:
        store.close()
    # A store without the table: a per-process key, asked again later (not cached forever).
    empty = Store.from_url(f"sqlite:///{tmp_path}/e.db")
    try:
        src = SecretSource(None, empty)
        first = src.get()
        assert src.origin == "process" and src.get() == first and src._value is None
    finally:
        empty.close()


def test_progress_stream_frames_and_refusals_keep_their_status(gateway: Any) -> None:
    h = session(gateway)
    call = {"name": "beta__count", "arguments": {"n": 2}, "_meta": {"progressToken": "tok-1"}}
    r = rpc(gateway, h, "tools/call", call, i=21)
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    events = [json.loads(chunk.split("data: ", 1)[1]) for chunk in r.get_data(as_text=True).split("\n\n") if chunk]
    assert [e.get("method") for e in events] == ["notifications/progress", "notifications/progress", None]
    assert [e["params"]["progressToken"] for e in events[:2]] == ["tok-1", "tok-1"]  # the client's own token
    assert events[-1]["id"] == 21 and events[-1]["result"]["content"][0]["text"] == "counted 2"
    # A pre-request denial is still an HTTP error, not a 200 stream.
    r = rpc(gateway, h, "tools/call", {**call, "arguments": {"a": 13}}, i=22)
    assert r.status_code == 429 and r.mimetype == "application/json"
    # Without SSE in Accept, the same call is a plain JSON answer.
    r = rpc(gateway, {**h, "Accept": "application/json"}, "tools/call", call, i=23)
    assert r.mimetype == "application/json" and r.get_json()["result"]["content"][0]["text"] == "counted 2"


class _Scripted:
    """A one-answer HTTP server for HttpUpstream: `mode` picks the answer."""

    def __init__(self, mode: str) -> None:
        import http.server
        import threading

        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if scripted.mode == "wrong-id":
                    data = json.dumps({"jsonrpc": "2.0", "id": 999999, "result": {"tools": []}}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if scripted.mode in ("trickle-sse", "trickle-json", "sparse-sse"):
                    # no length and no chunking: the body ends when the connection closes, and a
                    # byte arrives every 0.1 s, so no single read ever waits as long as the timeout
                    sse = scripted.mode != "trickle-json"
                    gap = 0.45 if scripted.mode == "sparse-sse" else 0.1  # just under the caller's 0.5 s
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream" if sse else "application/json")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for _ in range(40):
                        if scripted.release.wait(gap):
                            break
                        try:
                            self.wfile.write(b": ping\n\n" if sse else b" ")
                            self.wfile.flush()
                        except OSError:
                            break
                    self.close_connection = True
                    return
                # slow SSE: a comment at once, then nothing for longer than the caller waits
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                ping = b": ping\n\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ping), ping))
                self.wfile.flush()
                scripted.release.wait(5)
                answer = b"data: " + json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": {}}).encode() + b"\n\n"
                try:
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(answer), answer))
                except OSError:
                    pass

        self.mode = mode
        self.release = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode,timeout,reason", [("slow-sse", True, "did not answer within 0.5s"),
                                                 ("trickle-sse", True, "did not answer within 0.5s"),
                                                 ("trickle-json", True, "did not answer within 0.5s"),
                                                 ("sparse-sse", True, "did not answer within 0.5s"),
                                                 ("wrong-id", False, "answered another request's id")])
def test_http_upstream_timeouts_and_foreign_answers(mode: str, timeout: bool, reason: str) -> None:
    """A read timeout inside an SSE body was a 502 'broke the connection' (requests calls it
    ConnectionError); a JSON answer with another request's id was taken as this request's answer."""
    from routeplane.mcp.settings import MCPServerConfig
    from routeplane.mcp.upstream import UpstreamFailure
    from routeplane.mcp.upstream_http import HttpUpstream

    srv = _Scripted(mode)
    up = HttpUpstream(MCPServerConfig(id="h", type="http", prefix="h__", url=srv.url), lambda *a: None)
    up.session_id = "s1"
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamFailure) as exc:
            up._post({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, 0.5, False)
        # a body that trickles in for 4 s was read to its end before the deadline was checked; and a
        # read that began just before the deadline could wait a whole timeout more (0.9 s here)
        assert time.monotonic() - started < 0.8
        assert exc.value.timeout is timeout and exc.value.reason == reason
        assert exc.value.to_error().status == (504 if timeout else 502)
    finally:
        up.close()
        srv.close()
