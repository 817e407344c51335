"""ACP hooks on the relay (in process, real agent processes): route by cwd/_meta, deny a prompt, turn events, stats."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

pytest.importorskip("acp")

from routeplane.acp.context import ACPRequestContext, ACPTarget, ACPTurnEvent  # noqa: E402
from routeplane.acp.relay import ACPRelay  # noqa: E402
from routeplane.app import App, Plugin, PluginId  # noqa: E402
from routeplane.config import parse_config  # noqa: E402
from routeplane.hooks.acp import ACPDecision, ACPObserveHook, ACPPreRequestHook, ACPRouteHook  # noqa: E402
from routeplane.hooks.language_model import PreRequestHook  # noqa: E402
from routeplane.hooks.mcp import MCPPreRequestHook  # noqa: E402

AGENT = str(Path(__file__).parent / "support" / "acp_agent.py")


class ByWorkspace(ACPRouteHook):
    """Sessions under /repos/beta (or with `_meta.agent`) go to beta."""

    def resolve(self, target: ACPTarget, ctx: ACPRequestContext) -> ACPTarget:
        meta = ctx.params.get("_meta") or {}
        if meta.get("agent"):
            return target.replace(agent=meta["agent"])
        if str(ctx.params.get("cwd", "")).startswith("/repos/beta"):
            return target.replace(agent="beta")
        return target


class NoSecrets(ACPPreRequestHook):
    def check(self, ctx: ACPRequestContext) -> ACPDecision:
        if ctx.method == "session/prompt" and "password" in json.dumps(ctx.params.get("prompt")):
            return ACPDecision.deny("Prompts may not contain passwords.", -32003, {"agent": ctx.agent})
        return ACPDecision.allow()


class Turns(ACPObserveHook):
    def __init__(self) -> None:
        self.events: List[ACPTurnEvent] = []

    def on_turn_end(self, event: ACPTurnEvent) -> None:
        self.events.append(event)


class HooksPlugin(Plugin):
    id = PluginId("acp-test")

    def __init__(self) -> None:
        self.turns = Turns()

    def install(self, app: Any) -> None:
        app.acp_builder().route_hook(ByWorkspace()).pre_request_hook(NoSecrets()).observe_hook(self.turns)


class Editor:
    """The relay's editor side over a real pipe: writes lines in, reads the relay's lines back."""

    def __init__(self, relay_factory: Any) -> None:
        r, w = os.pipe()
        self._out = os.fdopen(w, "wb", buffering=0)
        self._in = os.fdopen(r, "rb")
        self.relay: ACPRelay = relay_factory(self._out)
        self.lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._in:
            self.lines.put(json.loads(line))

    def send(self, message: Dict[str, Any]) -> None:
        self.relay.handle_client_line(json.dumps(message).encode())

    def response(self, rid: int, timeout: float = 15.0) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
        """The response to `rid`, and the notifications that came before it."""
        seen: List[Dict[str, Any]] = []
        while True:
            message = self.lines.get(timeout=timeout)
            if message.get("id") == rid and "method" not in message:
                return message, seen
            seen.append(message)

    def close(self) -> None:
        self.relay.close()
        self._out.close()
        self._reader.join(timeout=5)
        self._in.close()


@pytest.fixture()
def editor() -> Iterator[Tuple[Editor, HooksPlugin, App]]:
    config = parse_config({
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "agents": {"alpha": {"command": sys.executable, "args": [AGENT, "alpha"], "default": True},
                   "beta": {"command": sys.executable, "args": [AGENT, "beta"]}},
    }, "t")
    plugin = HooksPlugin()
    app = App.builder().config(config).inline_observers().plugin(plugin).build()
    ed = Editor(lambda out: ACPRelay(app.acp, "alpha", out, os.environ, "127.0.0.1:4356"))
    yield ed, plugin, app
    ed.close()


def test_route_hook_deny_hook_turn_events_and_stats(editor: Tuple[Editor, HooksPlugin, App]) -> None:
    ed, plugin, app = editor
    ed.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1,
                                                                          "clientCapabilities": {}}})
    init, _ = ed.response(0)
    assert init["result"]["agentInfo"]["name"] == "alpha"
    ed.send({"jsonrpc": "2.0", "id": 1, "method": "session/new", "params": {"cwd": "/repos/beta/x", "mcpServers": []}})
    beta_sid = ed.response(1)[0]["result"]["sessionId"]
    ed.send({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": "/repos/other", "mcpServers": []}})
    alpha_sid = ed.response(2)[0]["result"]["sessionId"]
    ed.send({"jsonrpc": "2.0", "id": 3, "method": "session/new",
             "params": {"cwd": "/repos/other", "mcpServers": [], "_meta": {"agent": "beta"}}})
    beta_sid2 = ed.response(3)[0]["result"]["sessionId"]
    assert (beta_sid, alpha_sid, beta_sid2) == ("beta:sess_1", "alpha:sess_1", "beta:sess_2")

    # beta started lazily and was initialized with the editor's own initialize params; its turn runs there.
    ed.send({"jsonrpc": "2.0", "id": 4, "method": "session/prompt",
             "params": {"sessionId": beta_sid, "prompt": [{"type": "text", "text": "env"}]}})
    resp, updates = ed.response(4)
    assert resp["result"]["stopReason"] == "end_turn"
    assert {u["params"]["sessionId"] for u in updates} == {beta_sid}
    assert updates[0]["params"]["update"]["content"]["text"] == "OPENAI_BASE_URL=http://127.0.0.1:4356/v1"

    # A denied prompt never reaches the agent: the client gets the hook's JSON-RPC error.
    ed.send({"jsonrpc": "2.0", "id": 5, "method": "session/prompt",
             "params": {"sessionId": alpha_sid, "prompt": [{"type": "text", "text": "my password is x"}]}})
    denied, before = ed.response(5)
    assert denied["error"] == {"code": -32003, "message": "Prompts may not contain passwords.",
                               "data": {"agent": "alpha"}}
    assert before == []

    # A route hook naming an unknown agent is a clear error, not a crash.
    ed.send({"jsonrpc": "2.0", "id": 6, "method": "session/new",
             "params": {"cwd": "/x", "mcpServers": [], "_meta": {"agent": "nobody"}}})
    routed, _ = ed.response(6)
    assert routed["error"]["code"] == -32603 and "'nobody'" in routed["error"]["message"]

    # Malformed input gets JSON-RPC errors, and the relay keeps serving.
    ed.relay.handle_client_line(b"{not json")
    assert ed.lines.get(timeout=5)["error"]["code"] == -32700
    ed.send({"jsonrpc": "2.0", "id": 7, "method": "session/prompt", "params": [1, 2]})
    assert ed.response(7)[0]["error"]["code"] == -32602

    # A crash mid-turn is an error turn, and an agent exit.
    ed.send({"jsonrpc": "2.0", "id": 8, "method": "session/prompt",
             "params": {"sessionId": beta_sid2, "prompt": [{"type": "text", "text": "crash"}]}})
    crashed, _ = ed.response(8)
    assert crashed["error"]["code"] == -32603 and "exited with code 3" in crashed["error"]["message"]

    events = plugin.turns.events
    assert [(e.agent, e.session_id, e.stop_reason, e.error_code) for e in events] == [
        ("beta", beta_sid, "end_turn", None), ("beta", beta_sid2, None, -32603)]
    assert events[0].latency_ms > 0
    stats = app.acp.stats()
    assert stats["beta"]["turns"] == 2 and stats["beta"]["end_turn"] == 1 and stats["beta"]["error"] == 1
    deadline = time.monotonic() + 10  # the exit is counted by the agent's reader thread
    while app.acp.stats()["beta"].get("exited") != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.acp.stats()["beta"]["exited"] == 1
    assert stats["alpha"]["denied"] == 1 and stats["alpha"]["turns"] == 0


def test_hooks_of_other_pipelines_are_type_errors() -> None:
    class LMHook(PreRequestHook):
        def check(self, ctx: Any) -> Any:
            return None

    class MCPHook_(MCPPreRequestHook):
        def check(self, ctx: Any) -> Any:
            return None

    builder = App.builder()
    with pytest.raises(TypeError, match="not an ACP hook"):
        builder.acp_builder().pre_request_hook(LMHook())
    with pytest.raises(TypeError, match="not an ACP hook"):
        builder.acp_builder().route_hook(MCPHook_())
    with pytest.raises(TypeError, match="another pipeline"):
        builder.language_model_builder().pre_request_hook(NoSecrets())
    with pytest.raises(TypeError):
        builder.mcp_builder().pre_request_hook(NoSecrets())
    with pytest.raises(TypeError, match="is not a ACPRouteHook"):
        builder.acp_builder().route_hook(NoSecrets())

    class BadArity(ACPObserveHook):
        def on_turn_end(self) -> None:  # type: ignore[override]
            return None

    with pytest.raises(TypeError, match="must take 1 argument"):
        builder.acp_builder().observe_hook(BadArity())


def _editor_for(agents: Dict[str, Any], initial: str) -> Editor:
    config = parse_config({"providers": {"mock": {"protocol": "mock"}},
                           "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
                           "agents": agents}, "t")
    app = App.builder().config(config).inline_observers().build()
    return Editor(lambda out: ACPRelay(app.acp, initial, out, {"PATH": os.environ.get("PATH", "")},
                                       "127.0.0.1:4356"))


def test_an_agent_that_cannot_start_or_stays_silent_is_a_clear_error() -> None:
    ed = _editor_for({"ghost": {"command": "/nonexistent/agent-binary"},
                      "mute": {"command": sys.executable, "args": ["-c", "import time; time.sleep(30)"],
                               "startup_timeout_seconds": 0.5},
                      "keyless": {"command": sys.executable, "gateway": {"token_env": "ACP_UNSET_KEY_VAR"}}},
                     "ghost")
    try:
        ed.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}})
        err = ed.response(0)[0]["error"]
        assert err["code"] == -32603 and "Agent 'ghost' cannot start" in err["message"]
        ed.send({"jsonrpc": "2.0", "id": 1, "method": "session/new",
                 "params": {"cwd": "/x", "mcpServers": [], "_meta": {"agent": "mute"}}})
        ed.relay.runtime.route = (ByWorkspace(),)  # _meta.agent picks the agent
        ed.send({"jsonrpc": "2.0", "id": 2, "method": "session/new",
                 "params": {"cwd": "/x", "mcpServers": [], "_meta": {"agent": "mute"}}})
        assert "cannot start" in ed.response(1)[0]["error"]["message"]  # before the hook: ghost again
        mute = ed.response(2, timeout=15)[0]["error"]
        assert mute["code"] == -32603 and "did not answer initialize within 0.5 s" in mute["message"]
        ed.send({"jsonrpc": "2.0", "id": 3, "method": "session/new",
                 "params": {"cwd": "/x", "mcpServers": [], "_meta": {"agent": "keyless"}}})
        keyless = ed.response(3)[0]["error"]
        assert "ACP_UNSET_KEY_VAR is not set" in keyless["message"]
    finally:
        ed.close()


def test_the_docs_hook_example_registers() -> None:
    import re

    text = (Path(__file__).parent.parent / "docs" / "acp.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert blocks
    ns: Dict[str, Any] = {"__name__": "docs_acp_example"}
    exec(compile("\n".join(blocks), "docs/acp.md", "exec"), ns)
    app = App.builder().plugin(ns["AgentPolicy"]()).build()
    assert [type(h).__name__ for h in app.acp.route] == ["ByRepository"]
    ctx = ACPRequestContext("session/new", {"cwd": "/src/go/x"}, "claude")
    assert app.acp.route[0].resolve(ACPTarget("claude"), ctx).agent == "codex"
    denied = app.acp.pre_request[0].check(ACPRequestContext("session/prompt", {"prompt": "drop prod-db"}, "claude"))
    assert not denied.allowed and denied.code == -32003


def test_the_docs_config_example_loads() -> None:
    import re

    import yaml

    text = (Path(__file__).parent.parent / "docs" / "acp.md").read_text(encoding="utf-8")
    block = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)[0]
    raw = dict(yaml.safe_load(block), providers={"mock": {"protocol": "mock"}},
               models={"default": {"targets": [{"provider": "mock", "model": "echo"}]}})
    agents = parse_config(raw, "docs/acp.md").agents
    assert sorted(agents) == ["claude", "codex"] and agents["claude"].default
    assert agents["claude"].gateway_token_env == "CLAUDE_AGENT_KEY"
