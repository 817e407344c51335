"""ACP relay hunt (session 9): odd but well-formed agent answers, a hook without a decision, a socket listen.

Each failure an editor can meet is a JSON-RPC answer to its request id, never a request left unanswered.
The agents are scripted line agents (one behaviour per argv[1]); the relay runs in process with its
editor side on a real pipe, as in test_hunt_acp.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from routeplane.acp.relay import ACPRelay
from routeplane.app import App, Plugin, PluginId
from routeplane.config import parse_config
from routeplane.hooks.acp import ACPDecision, ACPPreRequestHook
from tests.support.acp_script import line_agent

AGENT = line_agent(setup="""
    mode, scratch = sys.argv[1], sys.argv[2]
""", on_message="""
    if method is None:
        continue
    with open(os.path.join(scratch, "seen.log"), "a") as f:
        f.write(method + "\\n")
    if method == "initialize":
        caps = None if mode == "nullcaps" else {"loadSession": True}
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": 1, "agentCapabilities": caps}})
    elif method == "session/new":
        send({"jsonrpc": "2.0", "id": rid, "result": {"sessionId": "s1"}})
    elif method == "session/prompt":
        stop = {"reason": "end_turn"} if mode == "objectstop" else "end_turn"
        send({"jsonrpc": "2.0", "id": rid, "result": {"stopReason": stop}})
""")

NEW = {"cwd": "/x", "mcpServers": []}


class Editor:
    """The relay's editor side over a real pipe: writes lines in, reads the relay's lines back."""

    def __init__(self, agents: Dict[str, Any], initial: Optional[str], listen: str = "127.0.0.1:4356",
                 plugins: tuple = ()) -> None:
        config = parse_config({"providers": {"mock": {"protocol": "mock"}},
                               "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
                               "agents": agents}, "t")
        builder = App.builder().config(config).inline_observers()
        for plugin in plugins:
            builder = builder.plugin(plugin)
        self.app = builder.build()
        r, w = os.pipe()
        self._out = os.fdopen(w, "wb", buffering=0)
        self._in = os.fdopen(r, "rb")
        self.relay = ACPRelay(self.app.acp, initial, self._out, {"PATH": os.environ.get("PATH", "")}, listen)
        self.lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._in:
            self.lines.put(json.loads(line))

    def call(self, rid: int, method: str, params: Dict[str, Any], timeout: float = 5.0) -> Dict[str, Any]:
        """Send a request and return its answer; queue.Empty (a failed test) when it is never answered."""
        self.relay.handle_client_line(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                                  "params": params}).encode())
        while True:
            message = self.lines.get(timeout=timeout)
            if message.get("id") == rid and "method" not in message:
                return message

    def close(self) -> None:
        self.relay.close()
        self._out.close()
        self._reader.join(timeout=5)
        self._in.close()


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "agent.py").write_text(AGENT)
    return tmp_path


@pytest.fixture()
def editor_for(scratch: Path) -> Iterator[Any]:
    editors: List[Editor] = []

    def make(mode: str, initial: Optional[str] = "a", **kw: Any) -> Editor:
        agent = {"command": sys.executable, "args": [str(scratch / "agent.py"), mode, str(scratch)]}
        agent.update(kw.pop("agent_extra", {}))
        ed = Editor({"a": agent, **kw.pop("more_agents", {})}, initial, **kw)
        editors.append(ed)
        return ed

    yield make
    for ed in editors:
        ed.close()


def _seen(scratch: Path) -> List[str]:
    path = scratch / "seen.log"
    return path.read_text().split() if path.exists() else []


def test_a_prompt_answer_with_an_object_stop_reason_still_reaches_the_editor(editor_for: Any) -> None:
    """The turn's bookkeeping counted stop reasons in a dict keyed by `stopReason`: an object there
    (unhashable) raised on the agent's reader after the answer was taken off the pending table, so the
    editor's session/prompt was never answered: the turn hung for good."""
    ed = editor_for("objectstop")
    assert "result" in ed.call(0, "initialize", {"protocolVersion": 1})
    sid = ed.call(1, "session/new", NEW)["result"]["sessionId"]
    answer = ed.call(2, "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]})
    assert answer["result"] == {"stopReason": {"reason": "end_turn"}}  # relayed as the agent wrote it
    stats = ed.app.acp.stats()["a"]
    assert stats["turns"] == 1 and stats["unknown"] == 1


def test_session_load_on_an_agent_with_null_capabilities_is_method_not_found_not_a_hang(editor_for: Any) -> None:
    """`"agentCapabilities": null` made the loadSession check raise: a session/load waiting for the
    agent's initialize was never answered (it ran on the agent's reader), a later one got -32603."""
    ed = editor_for("nullcaps")
    load = {"sessionId": "a:s1", "cwd": "/x", "mcpServers": []}
    for rid in (1, 2):  # the first waits for the agent to start and initialize, the second does not
        error = ed.call(rid, "session/load", load)["error"]
        assert error["code"] == -32601 and "does not support session/load" in error["message"]


class ForgetsToReturn(ACPPreRequestHook):
    """Means to deny prompts mentioning prod, but its allow path falls off the end (returns None)."""

    def check(self, ctx: Any) -> Any:
        if ctx.method == "session/prompt" and "prod" in json.dumps(ctx.params.get("prompt")):
            return ACPDecision.deny("No prompts about prod.", -32003)
        if ctx.method == "session/new":
            return ACPDecision.allow()


class Policy(Plugin):
    id = PluginId("s9-acp-policy")

    def install(self, app: Any) -> None:
        app.acp_builder().pre_request_hook(ForgetsToReturn())


def test_a_pre_request_hook_returning_no_decision_denies_fail_closed(editor_for: Any, scratch: Path) -> None:
    """None from check() was read as allow (the LLM and MCP pipelines fail closed on it): a policy hook
    with a missing `return` let every request through."""
    ed = editor_for("plain", plugins=(Policy(),))
    sid = ed.call(1, "session/new", NEW)["result"]["sessionId"]
    error = ed.call(2, "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "hi"}]})["error"]
    assert error == {"code": -32603, "message": "The request could not be checked."}
    assert "session/prompt" not in _seen(scratch)
    assert ed.app.acp.stats()["a"]["denied"] == 1


@pytest.mark.parametrize("version", [True, 1.0, 7, "1"])
def test_the_gateways_own_initialize_answers_protocol_version_1(editor_for: Any, version: Any) -> None:
    """With no agent chosen yet, routeplane answers initialize itself: `true` and `1.0` (equal to 1
    in Python) were echoed back as the protocol version, which is an integer (acp.md §3)."""
    ed = editor_for("plain", initial=None, more_agents={"b": {"command": "unused"}})
    result = ed.call(0, "initialize", {"protocolVersion": version})["result"]
    assert result["protocolVersion"] == 1 and type(result["protocolVersion"]) is int


@pytest.mark.parametrize("listen", ["unix:/run/routeplane.sock", "fd://3"])
def test_a_socket_listen_without_gateway_base_url_fails_the_session_naming_the_key(editor_for: Any,
                                                                                   listen: str) -> None:
    """The agent's gateway URL was derived from `server.listen` as written: `http://unix:/run/…` and
    `http://fd://3`, so every LLM call of the agent failed on a host named "unix" or "fd"."""
    ed = editor_for("plain", listen=listen)
    error = ed.call(1, "session/new", NEW)["error"]
    assert error["code"] == -32603
    assert "agents.a.gateway.base_url" in error["message"] and listen in error["message"]


def test_a_socket_listen_with_gateway_base_url_starts_the_agent(editor_for: Any) -> None:
    ed = editor_for("plain", listen="unix:/run/routeplane.sock",
                    agent_extra={"gateway": {"base_url": "http://127.0.0.1:8080"}})
    assert ed.call(1, "session/new", NEW)["result"]["sessionId"] == "a:s1"
