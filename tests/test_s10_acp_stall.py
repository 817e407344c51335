"""An agent that stops reading its stdin holds up neither the editor nor another agent.

The relay serves a real pipe (`ACPRelay.run`, as `routeplane acp` does) with two agents: the real ACP
test agent, and a scripted one that stops reading once a prompt reaches it.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

pytest.importorskip("acp")

from routeplane.acp.agents import AgentProcess  # noqa: E402
from routeplane.acp.context import ACPRequestContext, ACPTarget  # noqa: E402
from routeplane.acp.relay import ACPRelay  # noqa: E402
from routeplane.app import App, Plugin, PluginId  # noqa: E402
from routeplane.config import parse_config  # noqa: E402
from routeplane.hooks.acp import ACPRouteHook  # noqa: E402

AGENT = str(Path(__file__).parent / "support" / "acp_agent.py")

# Answers initialize and session/new, then at its first prompt stops reading its stdin for good.
STUCK = textwrap.dedent("""
    import json, os, sys, time
    for line in sys.stdin:
        m = json.loads(line)
        out = None
        if m.get("method") == "initialize":
            out = {"protocolVersion": 1, "agentCapabilities": {}}
        elif m.get("method") == "session/new":
            out = {"sessionId": "s1"}
        elif m.get("method") == "session/prompt":
            parent = os.getppid()
            while os.getppid() == parent:  # never reads again; gone with the relay's process
                time.sleep(0.2)
            sys.exit(0)
        if out is not None:
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": out}) + "\\n")
            sys.stdout.flush()
""")

BIG = "x" * (256 * 1024)  # four of these are far past a pipe's buffer (64 KiB on Linux)


class ByMeta(ACPRouteHook):
    def resolve(self, target: ACPTarget, ctx: ACPRequestContext) -> ACPTarget:
        agent = (ctx.params.get("_meta") or {}).get("agent")
        return target.replace(agent=agent) if agent else target


class Routing(Plugin):
    id = PluginId("s10-stall")

    def install(self, app: Any) -> None:
        app.acp_builder().route_hook(ByMeta())


class PipeEditor:
    """Writes the editor's lines into the relay's stdin pipe (served by `ACPRelay.run` on a thread)."""

    def __init__(self, relay_factory: Any) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        self._to_relay = os.fdopen(in_w, "wb", buffering=0)
        self._from_relay = os.fdopen(out_r, "rb")
        self._relay_out = os.fdopen(out_w, "wb", buffering=0)
        self.relay: ACPRelay = relay_factory(self._relay_out)
        self._relay_in = os.fdopen(in_r, "rb")
        self.serving = threading.Thread(target=self.relay.run, args=(self._relay_in,), daemon=True)
        self.serving.start()
        self.lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.answers: Dict[Any, Dict[str, Any]] = {}
        self._outbox: "queue.Queue[Any]" = queue.Queue()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._writer.start()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._from_relay:
            self.lines.put(json.loads(line))

    def send(self, message: Dict[str, Any]) -> None:
        """Queued, like an editor's async writes: a relay that stops reading must not block the test."""
        self._outbox.put(json.dumps(message).encode() + b"\n")

    def _write(self) -> None:
        while True:
            data = self._outbox.get()
            if data is None:
                break
            try:
                self._to_relay.write(data)
            except OSError:
                break
        self._to_relay.close()

    def responses(self, ids: List[int], timeout: float) -> Dict[int, Dict[str, Any]]:
        """The answers to `ids` (notifications skipped), or those that came before the deadline."""
        deadline = time.monotonic() + timeout
        while set(ids) - set(self.answers):
            try:
                message = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if "method" not in message:
                self.answers[message.get("id")] = message
        return {rid: self.answers[rid] for rid in ids if rid in self.answers}

    def end(self, timeout: float) -> float:
        """Close the relay's stdin (the editor quits); seconds until the relay stopped every agent."""
        started = time.monotonic()
        self._outbox.put(None)
        self.serving.join(timeout=timeout)
        return time.monotonic() - started

    def kill_agents(self) -> None:
        for link in list(self.relay._links.values()):
            link.kill()


@pytest.fixture()
def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipeEditor]:
    monkeypatch.setattr(AgentProcess, "MAX_QUEUED_BYTES", 1024 * 1024, raising=False)
    stuck = tmp_path / "stuck.py"
    stuck.write_text(STUCK)
    config = parse_config({
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "agents": {"good": {"command": sys.executable, "args": [AGENT, "good"], "default": True},
                   "stuck": {"command": sys.executable, "args": [str(stuck)]}},
    }, "t")
    app = App.builder().config(config).inline_observers().plugin(Routing()).build()
    ed = PipeEditor(lambda out: ACPRelay(app.acp, "good", out, {"PATH": os.environ.get("PATH", "")},
                                         "127.0.0.1:4356"))
    try:
        yield ed
    finally:
        ed.kill_agents()  # before the code under test let a stalled agent block it: never hang the suite
        ed.end(timeout=10)


def _new_session(rid: int, agent: str) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "session/new",
            "params": {"cwd": "/project", "mcpServers": [], "_meta": {"agent": agent}}}


def _prompt(rid: int, sid: str, text: str) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "session/prompt",
            "params": {"sessionId": sid, "prompt": [{"type": "text", "text": text}]}}


def test_an_agent_that_stops_reading_does_not_delay_another(editor: PipeEditor) -> None:
    """The relay wrote to each agent's stdin on its one editor-reading thread: once the stuck
    agent's pipe was full, that write blocked, and the other agent's prompt was never relayed."""
    editor.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}})
    editor.send(_new_session(1, "stuck"))
    editor.send(_new_session(2, "good"))
    first = editor.responses([0, 1, 2], timeout=30)
    assert first[1]["result"]["sessionId"] == "stuck:s1", first
    good_sid = first[2]["result"]["sessionId"]
    assert good_sid == "good:sess_1"
    # The stuck agent stops reading at its first prompt; 1.25 MiB more is sent its way.
    for rid in range(10, 15):
        editor.send(_prompt(rid, "stuck:s1", BIG))
    started = time.monotonic()
    editor.send(_prompt(20, good_sid, "env"))
    answered = editor.responses([20], timeout=20)
    assert 20 in answered, "the good agent's prompt was held up by the stuck agent"
    assert answered[20]["result"]["stopReason"] == "end_turn"
    assert time.monotonic() - started < 15
    # Past the bound of what may wait for the stuck agent, its requests are refused, not queued forever.
    refused = editor.responses(list(range(10, 15)), timeout=5)
    assert refused, "no request to the stalled agent was refused past MAX_QUEUED_BYTES"
    for message in refused.values():
        assert message["error"]["code"] == -32603
        assert "Agent 'stuck' is not reading its input" in message["error"]["message"]
        assert "session/prompt was not sent" in message["error"]["message"]
    # The editor quitting still stops every agent in bounded time, the stalled one included.
    assert editor.end(timeout=20) < 15
    assert not editor.serving.is_alive()
    pending = editor.responses(list(set(range(10, 15)) - set(refused)), timeout=5)
    assert all(m["error"]["code"] == -32603 for m in pending.values())
