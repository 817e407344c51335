"""Hostile agents and editors on the ACP relay: every failure is a JSON-RPC error with a code, never a hang.

The agents here are small scripted line agents (no ACP package: they start in a few ms), one
behaviour per argv[1]; the relay runs in process with its editor side on a real pipe.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from routeplane.acp.relay import ACPRelay
from routeplane.app import App
from routeplane.config import parse_config
from tests.support.acp_script import line_agent

AGENT = line_agent(setup="""
    import subprocess
    mode, scratch = sys.argv[1], sys.argv[2]
""", on_message="""
    if method is None:
        continue
    if method == "initialize":
        if mode == "initerr":
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "protocol 1 unsupported"}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": 1, "agentCapabilities": {}}})
    elif method == "session/new":
        send({"jsonrpc": "2.0", "id": rid, "result": {"sessionId": "s1"}})
    elif method == "session/prompt":
        if mode == "orphan":
            # A tool process that inherits stdout (Python's default) outlives the agent's crash.
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            with open(os.path.join(scratch, "child.pid"), "w") as f:
                f.write(str(child.pid))
            os._exit(3)
        if mode == "badanswer":
            send({"jsonrpc": "2.0", "id": rid, "error": "boom"})
        elif mode == "nan":
            sys.stdout.write('{"jsonrpc":"2.0","id":%d,"result":{"stopReason":"end_turn","cost":NaN}}\\n' % rid)
            sys.stdout.flush()
""")


class Editor:
    """The relay's editor side over a real pipe: writes lines in, reads the relay's lines back."""

    def __init__(self, agents: Dict[str, Any], initial: str) -> None:
        config = parse_config({"providers": {"mock": {"protocol": "mock"}},
                               "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
                               "agents": agents}, "t")
        self.app = App.builder().config(config).inline_observers().build()
        r, w = os.pipe()
        self._out = os.fdopen(w, "wb", buffering=0)
        self._in = os.fdopen(r, "rb")
        self.raw: List[bytes] = []
        self.relay = ACPRelay(self.app.acp, initial, self._out, {"PATH": os.environ.get("PATH", "")},
                              "127.0.0.1:4356")
        self.lines: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._in:
            self.raw.append(line)
            try:  # strict JSON, as an editor in another language parses it (no NaN / Infinity)
                self.lines.put(json.loads(line, parse_constant=_not_json))
            except ValueError:
                self.lines.put({"not_json": line.decode("utf-8", "replace")})

    def send(self, message: Any) -> None:
        self.relay.handle_client_line(message if isinstance(message, bytes) else json.dumps(message).encode())

    def response(self, rid: Any, timeout: float = 5.0) -> Dict[str, Any]:
        while True:
            message = self.lines.get(timeout=timeout)
            if message.get("id") == rid and "method" not in message:
                return message

    def close(self) -> None:
        self.relay.close()
        self._out.close()
        self._reader.join(timeout=5)
        self._in.close()


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@pytest.fixture(scope="module")
def agent_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hunt_acp") / "agent.py"
    path.write_text(AGENT)
    return path


def _agent(script: Path, mode: str, **extra: Any) -> Dict[str, Any]:
    return dict({"command": sys.executable, "args": [str(script), mode, str(script.parent)]}, **extra)


@pytest.fixture()
def editor_for(agent_script: Path) -> Iterator[Any]:
    editors: List[Editor] = []

    def make(mode: str, **extra: Any) -> Editor:
        ed = Editor({"a": _agent(agent_script, mode, **extra)}, "a")
        editors.append(ed)
        return ed

    yield make
    for ed in editors:
        ed.close()


def _init_and_session(ed: Editor) -> str:
    ed.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}})
    assert "result" in ed.response(0)
    ed.send({"jsonrpc": "2.0", "id": 1, "method": "session/new", "params": {"cwd": "/x", "mcpServers": []}})
    return str(ed.response(1)["result"]["sessionId"])


def test_an_agent_refusing_initialize_fails_each_request_instead_of_hanging_the_next(editor_for: Any) -> None:
    """After the agent answered `initialize` with an error, the link stayed 'initializing' forever:
    the next request was queued behind an initialize that was never sent again and never answered."""
    ed = editor_for("initerr")
    ed.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}})
    assert ed.response(0)["error"] == {"code": -32602, "message": "protocol 1 unsupported"}
    for rid in (1, 2):
        ed.send({"jsonrpc": "2.0", "id": rid, "method": "session/new", "params": {"cwd": "/x", "mcpServers": []}})
        error = ed.response(rid)["error"]
        assert error["code"] in (-32602, -32603) and "protocol 1 unsupported" in error["message"]


def test_a_crash_is_seen_even_when_a_child_of_the_agent_holds_its_stdout(editor_for: Any,
                                                                         agent_script: Path) -> None:
    """The relay noticed an agent's death only at EOF on its stdout: a tool process the agent had
    started (inheriting stdout) kept the pipe open, and the prompt hung until that process ended."""
    ed = editor_for("orphan")
    sid = _init_and_session(ed)
    pid_file = agent_script.parent / "child.pid"
    try:
        started = time.monotonic()
        ed.send({"jsonrpc": "2.0", "id": 2, "method": "session/prompt",
                 "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]}})
        error = ed.response(2, timeout=8)["error"]
        assert time.monotonic() - started < 5
        assert error["code"] == -32603 and "exited with code 3" in error["message"]
        assert error["data"] == {"agent": "a", "exitCode": 3}
        link = ed.relay._links["a"]
        assert link.proc is not None and link.proc.returncode == 3  # reaped: no zombie
        # Nothing the orphan writes later is relayed as the dead agent's; a new session starts a new life.
        ed.send({"jsonrpc": "2.0", "id": 3, "method": "session/new", "params": {"cwd": "/x", "mcpServers": []}})
        assert ed.response(3)["result"]["sessionId"] == "a~2:s1"
    finally:
        _kill_pid_in(pid_file)


def _kill_pid_in(path: Path) -> None:
    try:
        os.kill(int(path.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def test_an_error_that_is_not_a_jsonrpc_error_object_reaches_the_editor_as_one(editor_for: Any) -> None:
    """`"error": "boom"` was relayed verbatim: not a JSON-RPC error object (no code), which a
    strict client cannot match to its request."""
    ed = editor_for("badanswer")
    sid = _init_and_session(ed)
    ed.send({"jsonrpc": "2.0", "id": 2, "method": "session/prompt",
             "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]}})
    error = ed.response(2)["error"]
    assert error["code"] == -32603 and isinstance(error["message"], str) and "boom" in error["message"]
    stats = ed.app.acp.stats()["a"]
    assert stats["turns"] == 1 and stats["error"] == 1  # the turn failed: not counted as a success


def test_nan_and_overflowing_numbers_never_reach_the_editor_as_invalid_json(editor_for: Any) -> None:
    """Python's json reads NaN/Infinity and 1e400 (→ inf) and wrote them back as `NaN`/`Infinity`,
    which is not JSON: the editor could not parse the line, so the turn never ended for it."""
    ed = editor_for("nan")
    sid = _init_and_session(ed)
    ed.send({"jsonrpc": "2.0", "id": 2, "method": "session/prompt",
             "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]}})
    answer = ed.response(2)  # strict parse in Editor._read
    assert answer.get("result", {}).get("stopReason") == "end_turn" or answer["error"]["code"] == -32603
    ed.send(b'{"jsonrpc":"2.0","id":1e400,"method":"session/new","params":{"cwd":"/x","mcpServers":[]}}')
    ed.send(b'{"jsonrpc":"2.0","id":NaN,"method":"session/new","params":{"cwd":"/x","mcpServers":[]}}')
    ed.send({"jsonrpc": "2.0", "id": 9, "method": "session/new", "params": {"cwd": "/x", "mcpServers": []}})
    assert "result" in ed.response(9)
    assert all(b"NaN" not in line and b"Infinity" not in line for line in ed.raw)


@pytest.mark.parametrize("line, code", [
    (b'{"jsonrpc":"2.0","id":5,"method":7,"params":{}}', -32600),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"session/new","params":{"cwd":"/x","mcpServers":[]}}', -32600),
    (b'{"jsonrpc":"2.0","id":[1],"method":"session/new","params":{"cwd":"/x","mcpServers":[]}}', -32600),
])
def test_invalid_requests_are_invalid_request_errors(editor_for: Any, line: bytes, code: int) -> None:
    """A non-string method was relayed as str(method); an object id was echoed back as the id."""
    ed = editor_for("plain")
    ed.send(line)
    answer = ed.lines.get(timeout=5)
    assert answer["error"]["code"] == code
    assert answer["id"] in (None, 5)


def test_a_request_racing_the_agents_death_is_answered_once() -> None:
    """The agent dies between registering a request and writing it: the exit fails the pending
    request, and the failed write answered it a second time (two answers for one id)."""
    from routeplane.acp.agents import AgentProcess
    from routeplane.acp.settings import AgentConfig

    link = AgentProcess(AgentConfig("a", "true"), {}, 1, lambda *_: None, lambda *_: None)

    class DyingWriter:
        def send(self, message: Any) -> bool:
            link._died(3)  # the watcher saw the exit while this thread was about to write
            return False

    link._writer = DyingWriter()  # type: ignore[assignment]
    answers: List[Dict[str, Any]] = []
    link.request("session/prompt", {}, answers.append)
    assert len(answers) == 1 and answers[0]["error"]["code"] == -32603
    assert "exited with code 3" in answers[0]["error"]["message"]


STUBBORN = textwrap.dedent("""
    import json, os, sys, time
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    for line in sys.stdin:
        m = json.loads(line)
        if m.get("method") == "initialize":
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": m["id"],
                                         "result": {"protocolVersion": 1, "agentCapabilities": {}}}) + "\\n")
            sys.stdout.flush()
    time.sleep(60)  # does not exit at the end of its stdin: only when it is stopped
""")


def test_sigterm_stops_the_agents_instead_of_orphaning_them(tmp_path: Path) -> None:
    """An editor stops `routeplane acp` with SIGTERM: routeplane died at once and an agent that does
    not exit at the end of its stdin kept running, orphaned."""
    import subprocess

    import yaml

    script, pid_file = tmp_path / "stubborn.py", tmp_path / "agent.pid"
    script.write_text(STUBBORN)
    config = tmp_path / "routeplane.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "agents": {"s": {"command": sys.executable, "args": [str(script), str(pid_file)]}}}))
    proc = subprocess.Popen([sys.executable, "-m", "routeplane.cli", "acp", "--config", str(config)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=str(Path(__file__).parent.parent))
    agent_pid = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":1}}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["result"]["protocolVersion"] == 1
        agent_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert _wait(lambda: not _alive(agent_pid), timeout=5), "the agent outlived routeplane acp"
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if agent_pid is not None and _alive(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(predicate())


@pytest.mark.parametrize("capabilities, problem", [
    ("{since: 2024-01-01}", "a date at since is not a JSON value"),
    ("{ratio: .nan}", "nan at ratio is not a JSON number"),
    ("{limits: [1, .inf]}", "inf at limits[1] is not a JSON number"),
])
def test_agent_capabilities_that_are_not_json_are_a_config_error(capabilities: str, problem: str) -> None:
    """`capabilities` is free-form YAML: a date made `routeplane serve` fail in every worker (the card
    is rendered as JSON at start-up) and `acp --card` crash with a traceback, while `routeplane check`
    said OK; `.nan` was served on /agents as `NaN`, which is not JSON."""
    import yaml

    from routeplane.config import ConfigError

    raw = yaml.safe_load("agents: {c: {command: x, capabilities: %s}}" % capabilities)
    raw.update(providers={"mock": {"protocol": "mock"}},
               models={"default": {"targets": [{"provider": "mock", "model": "echo"}]}})
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "t")
    assert "agents.c.capabilities" in str(err.value) and problem in str(err.value)


def test_sigterm_during_the_shutdown_that_the_end_of_stdin_began_still_stops_the_agents(tmp_path: Path) -> None:
    """An editor closes the agent server's stdin and sends SIGTERM at once. The end of stdin starts close(),
    which waits on each agent (2 s, then terminate, then kill); the signal raised KeyboardInterrupt inside that
    wait, and the second close() (cli's `except KeyboardInterrupt`) returned at once (`_closing`): an agent that
    does not exit at the end of its stdin was never terminated, orphaned."""
    import subprocess

    import yaml

    script, pid_file = tmp_path / "stubborn.py", tmp_path / "agent.pid"
    script.write_text(STUBBORN)
    config = tmp_path / "routeplane.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "agents": {"s": {"command": sys.executable, "args": [str(script), str(pid_file)]}}}))
    proc = subprocess.Popen([sys.executable, "-m", "routeplane.cli", "acp", "--config", str(config)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=str(Path(__file__).parent.parent))
    agent_pid = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":1}}\n')
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["result"]["protocolVersion"] == 1
        agent_pid = int(pid_file.read_text())
        proc.stdin.close()  # close() begins: it waits up to 2 s for the agent to exit on its own
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert _wait(lambda: not _alive(agent_pid), timeout=5), "the agent outlived routeplane acp"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if agent_pid is not None and _alive(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
