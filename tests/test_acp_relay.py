"""`routeplane acp` as a subprocess, driven by the agent-client-protocol package's client, relaying to real agents."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

acp = pytest.importorskip("acp")
from acp import (  # noqa: E402
    PROTOCOL_VERSION,
    ReadTextFileResponse,
    RequestError,
    RequestPermissionResponse,
    spawn_agent_process,
    text_block,
)
from acp.schema import (  # noqa: E402
    AllowedOutcome,
    ClientCapabilities,
    CreateTerminalResponse,
    FileSystemCapabilities,
    Implementation,
    TerminalOutputResponse,
)

AGENT = str(Path(__file__).parent / "support" / "acp_agent.py")
TIMEOUT = 20.0


class RecordingClient:
    """An editor: records updates and permission requests, allows, serves files from a dict."""

    def __init__(self) -> None:
        self.updates: List[Dict[str, Any]] = []
        self.update_sessions: List[str] = []
        self.permissions: List[Dict[str, Any]] = []
        self.reads: List[str] = []
        self.terminals: List[str] = []
        self.got_update = asyncio.Event()

    def on_connect(self, conn: Any) -> None:
        pass

    async def session_update(self, session_id: str, update: Any, **kw: Any) -> None:
        self.updates.append(update.model_dump(by_alias=True, exclude_none=True))
        self.update_sessions.append(session_id)
        self.got_update.set()

    async def request_permission(self, session_id: str, tool_call: Any, options: Any, **kw: Any) -> Any:
        self.permissions.append({"sessionId": session_id, "toolCallId": tool_call.tool_call_id,
                                 "options": [o.option_id for o in options]})
        return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=options[0].option_id))

    async def read_text_file(self, session_id: str, path: str, line: Any = None, limit: Any = None, **kw: Any) -> Any:
        self.reads.append(f"{session_id} {path}")
        return ReadTextFileResponse(content="notes from the editor\n")

    async def write_text_file(self, session_id: str, path: str, content: str, **kw: Any) -> None:
        return None

    async def create_terminal(self, session_id: str, command: str, args: Any = None, **kw: Any) -> Any:
        self.terminals.append(f"{session_id} create {command} {' '.join(args or [])}")
        return CreateTerminalResponse(terminal_id="term_7")

    async def terminal_output(self, session_id: str, terminal_id: str, **kw: Any) -> Any:
        self.terminals.append(f"{session_id} output {terminal_id}")
        return TerminalOutputResponse(output="4 passed", truncated=False)

    async def release_terminal(self, session_id: str, terminal_id: str, **kw: Any) -> None:
        self.terminals.append(f"{session_id} release {terminal_id}")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("acp") / "routeplane.yaml"
    config = {
        "server": {"listen": "0.0.0.0:48123"},
        "database": {"url": "sqlite:///" + str(path.parent / "rp.db")},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "agents": {
            "alpha": {"command": sys.executable, "args": [AGENT, "alpha"], "default": True,
                      "description": "Alpha", "env": {"AGENT_EXTRA": "x1"},
                      "gateway": {"token_env": "ACP_TEST_AGENT_KEY"}},
            "beta": {"command": sys.executable, "args": [AGENT, "beta"]},
        },
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def _gateway(config_file: str, *extra: str) -> Any:
    env = dict(os.environ, ACP_TEST_AGENT_KEY="rp-agent-test-key")
    return sys.executable, ["-m", "routeplane.cli", "acp", "--config", config_file, *extra], env


async def _init(conn: Any) -> Any:
    return await conn.initialize(
        protocol_version=PROTOCOL_VERSION,
        client_capabilities=ClientCapabilities(fs=FileSystemCapabilities(read_text_file=True, write_text_file=True),
                                               terminal=True),
        client_info=Implementation(name="acp-test", version="0.1"))


def test_prompt_streams_updates_and_relays_permission_and_fs(config_file: str) -> None:
    async def main() -> None:
        client = RecordingClient()
        cmd, args, env = _gateway(config_file)
        async with spawn_agent_process(client, cmd, *args, env=env) as (conn, _proc):
            init = await _init(conn)
            assert init.agent_info.name == "alpha"  # the chosen (default) agent's own answer
            assert init.agent_capabilities.load_session is True
            sess = await conn.new_session(cwd="/project", mcp_servers=[])
            assert sess.session_id == "alpha:sess_1"
            resp = await conn.prompt(session_id=sess.session_id, prompt=[text_block("hello")])
            assert resp.stop_reason == "end_turn"
            kinds = [u["sessionUpdate"] for u in client.updates]
            assert kinds == ["agent_message_chunk", "tool_call", "tool_call_update"]
            assert client.updates[0]["content"]["text"] == "alpha echo: hello"
            assert client.updates[2]["status"] == "completed"
            assert client.updates[2]["content"][0]["content"]["text"] == "notes from the editor\n"
            assert set(client.update_sessions) == {"alpha:sess_1"}
            assert client.permissions == [{"sessionId": "alpha:sess_1", "toolCallId": "call_1",
                                           "options": ["ok", "no"]}]
            assert client.reads == ["alpha:sess_1 /project/notes.txt"]
            # A second session and turn: ids in both directions keep mapping (agent ids restart per turn).
            sess2 = await conn.new_session(cwd="/project", mcp_servers=[])
            assert sess2.session_id == "alpha:sess_2"
            resp2 = await conn.prompt(session_id=sess2.session_id, prompt=[text_block("again")])
            assert resp2.stop_reason == "end_turn" and len(client.permissions) == 2
            # terminal/* requests go to the editor and their answers back, in order.
            count = len(client.updates)
            resp3 = await conn.prompt(session_id=sess2.session_id, prompt=[text_block("term")])
            assert resp3.stop_reason == "end_turn"
            assert client.terminals == ["alpha:sess_2 create make test", "alpha:sess_2 output term_7",
                                        "alpha:sess_2 release term_7"]
            assert client.updates[count]["content"]["text"] == "term_7: 4 passed"
            # session/load (the agent advertises it): the replay arrives under the client's id.
            await conn.load_session(cwd="/project", session_id="alpha:sess_1", mcp_servers=[])
            assert client.updates[-1]["sessionUpdate"] == "user_message_chunk"
            assert client.updates[-1]["content"]["text"] == "replayed sess_1"
            assert client.update_sessions[-1] == "alpha:sess_1"
            with pytest.raises(RequestError) as err:
                await conn.prompt(session_id="nobody:sess_1", prompt=[text_block("x")])
            assert err.value.code == -32602

    _run(main())


def test_cancel_ends_the_turn_cancelled(config_file: str) -> None:
    async def main() -> None:
        client = RecordingClient()
        cmd, args, env = _gateway(config_file)
        async with spawn_agent_process(client, cmd, *args, env=env) as (conn, _proc):
            await _init(conn)
            sess = await conn.new_session(cwd="/project", mcp_servers=[])
            turn = asyncio.ensure_future(conn.prompt(session_id=sess.session_id, prompt=[text_block("wait")]))
            await asyncio.wait_for(client.got_update.wait(), 10)
            assert client.updates[0]["content"]["text"] == "waiting"
            await conn.cancel(session_id=sess.session_id)
            resp = await asyncio.wait_for(turn, 10)
            assert resp.stop_reason == "cancelled"

    _run(main())


def test_agent_crash_mid_turn_is_a_jsonrpc_error_and_new_sessions_never_collide(config_file: str) -> None:
    async def main() -> None:
        client = RecordingClient()
        cmd, args, env = _gateway(config_file)
        async with spawn_agent_process(client, cmd, *args, env=env) as (conn, _proc):
            await _init(conn)
            sess = await conn.new_session(cwd="/project", mcp_servers=[])
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RequestError) as err:
                await asyncio.wait_for(conn.prompt(session_id=sess.session_id, prompt=[text_block("crash")]), 10)
            assert loop.time() - started < 8
            assert err.value.code == -32603
            assert "exited with code 3" in str(err.value) and "session/prompt" in str(err.value)
            assert client.updates[0]["content"]["text"] == "about to crash"
            # The dead agent's session is over; a new session starts the agent again under a new namespace.
            with pytest.raises(RequestError) as gone:
                await conn.prompt(session_id=sess.session_id, prompt=[text_block("hello")])
            assert gone.value.code == -32603 and "ended" in str(gone.value)
            again = await conn.new_session(cwd="/project", mcp_servers=[])
            assert again.session_id == "alpha~2:sess_1" and again.session_id != sess.session_id
            resp = await conn.prompt(session_id=again.session_id, prompt=[text_block("hello")])
            assert resp.stop_reason == "end_turn"
            # The old session can be loaded into the new life; it keeps the id the client knows.
            await conn.load_session(cwd="/project", session_id=sess.session_id, mcp_servers=[])
            assert client.updates[-1]["content"]["text"] == "replayed sess_1"
            assert client.update_sessions[-1] == sess.session_id
            count = len(client.updates)
            resp = await conn.prompt(session_id=sess.session_id, prompt=[text_block("hello")])
            assert resp.stop_reason == "end_turn" and set(client.update_sessions[count:]) == {sess.session_id}

    _run(main())


def test_agent_flag_and_gateway_environment(config_file: str) -> None:
    async def main() -> None:
        client = RecordingClient()
        cmd, args, env = _gateway(config_file, "--agent", "beta")
        async with spawn_agent_process(client, cmd, *args, env=env) as (conn, _proc):
            init = await _init(conn)
            assert init.agent_info.name == "beta"
            sess = await conn.new_session(cwd="/project", mcp_servers=[])
            assert sess.session_id == "beta:sess_1"
        client = RecordingClient()
        cmd, args, env = _gateway(config_file)
        async with spawn_agent_process(client, cmd, *args, env=env) as (conn, _proc):
            await _init(conn)
            sess = await conn.new_session(cwd="/project", mcp_servers=[])
            await conn.prompt(session_id=sess.session_id, prompt=[text_block("env")])
            lines = [u["content"]["text"] for u in client.updates]
            assert lines == ["OPENAI_BASE_URL=http://127.0.0.1:48123/v1", "ANTHROPIC_BASE_URL=http://127.0.0.1:48123",
                             "ROUTEPLANE_API_KEY=rp-agent-test-key", "AGENT_EXTRA=x1"]

    _run(main())


def test_unknown_agent_and_missing_agents_are_start_up_errors(config_file: str, tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "routeplane.cli", "acp", "--config", config_file, "--agent", "zeta"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "no agent 'zeta'" in out.stderr and out.stdout == ""
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"providers": {"mock": {"protocol": "mock"}},
                                    "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}}))
    out = subprocess.run([sys.executable, "-m", "routeplane.cli", "acp", "--config", str(bare)],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    assert out.returncode == 2 and "no agents configured" in out.stderr and out.stdout == ""
