"""An agent that stalled (stopped reading its stdin) and then exited: what it is refused for is the exit.

A real agent process on real pipes (`AgentProcess`, as the relay runs it): it never reads its stdin, so
the lines sent to it queue up past the bound, and then it exits while a tool process it started still
holds its stdout (the relay drains that for `DRAIN_SECONDS` before it reports the exit).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from routeplane.acp.agents import AgentProcess
from routeplane.acp.settings import AgentConfig

# Never reads its stdin; once told (a file `exit` appears), starts a tool process that keeps its stdout
# (not its stdin) open and exits with code 3.
STALLS_THEN_EXITS = textwrap.dedent("""
    import os, subprocess, sys, time
    scratch = sys.argv[1]
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(scratch, "exit")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)
    with open(os.path.join(scratch, "child.pid"), "w") as f:
        f.write(str(child.pid))
    os._exit(3)
""")

BIG = "x" * (256 * 1024)  # five of these are past the 1 MiB bound set below


def _refusal(agent: AgentProcess) -> Dict[str, Any]:
    answers: "queue.Queue[Dict[str, Any]]" = queue.Queue()
    agent.request("session/prompt", {"sessionId": "s1", "prompt": [{"type": "text", "text": BIG}]}, answers.put)
    return answers.get(timeout=5)["error"]


def test_a_broken_pipe_after_a_stall_reports_the_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stalled` stayed set once the agent's stdin pipe broke: until the exit was reported, a request
    was refused as "not reading its input (0.0 MiB waiting)" instead of for the agent's exit."""
    monkeypatch.setattr(AgentProcess, "MAX_QUEUED_BYTES", 1024 * 1024)
    monkeypatch.setattr(AgentProcess, "DRAIN_SECONDS", 4.0)  # holds open the window before the exit is reported
    script = tmp_path / "agent.py"
    script.write_text(STALLS_THEN_EXITS)
    exits: "queue.Queue[Any]" = queue.Queue()
    agent = AgentProcess(AgentConfig("stuck", sys.executable, (str(script), str(tmp_path))),
                         {"PATH": os.environ.get("PATH", "")}, 1, on_message=lambda *_: None,
                         on_exit=lambda _, code: exits.put(code))
    agent.start()
    try:
        for _ in range(10):
            if not agent.send({"jsonrpc": "2.0", "method": "note", "params": {"text": BIG}}):
                break
        stall = _refusal(agent)
        assert "Agent 'stuck' is not reading its input" in stall["message"], stall

        (tmp_path / "exit").touch()
        deadline = time.monotonic() + 10
        while (agent.proc is None or agent.proc.returncode is None) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the writer, blocked on the full pipe, sees it break at the exit
        assert not agent.dead, "the exit was reported before the window under test"
        error = _refusal(agent)
        assert error["message"] == "Agent 'stuck' exited with code 3; session/prompt cannot complete.", error
        assert error["data"] == {"agent": "stuck", "exitCode": 3}
        assert exits.get(timeout=20) == 3
        assert _refusal(agent)["message"] == error["message"]
    finally:
        pid_file = tmp_path / "child.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        agent.close(timeout=5)
