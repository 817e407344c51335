"""The editor's provider keys never reach the gateway an agent's LLM calls are pointed at (unless configured).

An agent on the official openai / anthropic SDKs, started through the relay, calls the gateway its
environment names; a small HTTP server standing in for the gateway records what each call carried.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from routeplane.acp.agents import NO_KEY_PLACEHOLDER, agent_environment
from routeplane.acp.settings import AgentConfig
from tests.support.acp_script import line_agent
from tests.test_hunt_acp import Editor

EDITOR_KEYS = {"OPENAI_API_KEY": "sk-editor-openai-secret", "ANTHROPIC_API_KEY": "sk-ant-editor-secret",
               "ANTHROPIC_AUTH_TOKEN": "editor-oauth-secret", "GEMINI_API_KEY": "editor-gemini-secret",
               "GOOGLE_API_KEY": "editor-google-secret"}

# On a prompt: one chat completion and one message, each SDK configured from the environment only.
SDK_AGENT = line_agent(setup="""
    import anthropic, openai
""", on_message="""
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": 1, "agentCapabilities": {}}})
    elif method == "session/new":
        send({"jsonrpc": "2.0", "id": rid, "result": {"sessionId": "s1"}})
    elif method == "session/prompt":
        calls = []
        for call in (lambda: openai.OpenAI(max_retries=0, timeout=10).chat.completions.create(
                         model="m", messages=[{"role": "user", "content": "hi"}]),
                     lambda: anthropic.Anthropic(max_retries=0, timeout=10).messages.create(
                         model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])):
            try:
                call()
                calls.append("ok")
            except Exception as exc:  # the stand-in gateway answers 401: only the request matters
                calls.append(type(exc).__name__)
        send({"jsonrpc": "2.0", "id": rid, "result": {"stopReason": "end_turn", "_meta": {"calls": calls}}})
""")


class Recorder(BaseHTTPRequestHandler):
    seen: List[Dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        body = json.dumps({"error": {"type": "authentication_error", "message": "no"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def gateway_url() -> Iterator[str]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _prompt_through_relay(tmp_path: Path, agent: Dict[str, Any], editor_env: Dict[str, str]) -> List[Dict[str, str]]:
    script = tmp_path / "sdk_agent.py"
    script.write_text(SDK_AGENT)
    ed = Editor({"a": dict({"command": sys.executable, "args": [str(script)]}, **agent)}, "a")
    ed.relay._env = dict(editor_env, PATH=os.environ.get("PATH", ""))  # what the editor started us with
    try:
        ed.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": 1}})
        assert "result" in ed.response(0, timeout=30)
        ed.send({"jsonrpc": "2.0", "id": 1, "method": "session/new", "params": {"cwd": "/x", "mcpServers": []}})
        sid = ed.response(1)["result"]["sessionId"]
        ed.send({"jsonrpc": "2.0", "id": 2, "method": "session/prompt",
                 "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "go"}]}})
        answer = ed.response(2, timeout=60)
        assert answer["result"]["_meta"]["calls"] == ["AuthenticationError", "AuthenticationError"], answer
    finally:
        ed.close()
    return list(Recorder.seen)


def test_the_editors_provider_keys_are_not_sent_to_the_gateway(tmp_path: Path, gateway_url: str) -> None:
    """Without `gateway.token_env` the agent inherited the editor's OPENAI_API_KEY / ANTHROPIC_API_KEY
    while its base URLs pointed at the gateway: its SDKs sent the real provider keys there."""
    seen = _prompt_through_relay(tmp_path, {"gateway": {"base_url": gateway_url}}, EDITOR_KEYS)
    assert [r["path"] for r in seen] == ["/v1/chat/completions", "/v1/messages"]
    sent = json.dumps(seen)
    for secret in EDITOR_KEYS.values():
        assert secret not in sent
    for request in seen:  # the credential each SDK sent (newer anthropic SDKs send a Bearer too)
        credentials = {request.get("authorization"), request.get("x-api-key")} - {None}
        assert credentials and credentials <= {f"Bearer {NO_KEY_PLACEHOLDER}", NO_KEY_PLACEHOLDER}, request


def test_a_key_configured_for_the_agent_is_still_passed_on(tmp_path: Path, gateway_url: str) -> None:
    """Opting in: `agents.<name>.env` sets a key explicitly (e.g. `OPENAI_API_KEY: ${OPENAI_API_KEY}`)."""
    agent = {"gateway": {"base_url": gateway_url}, "env": {"OPENAI_API_KEY": "sk-configured-for-the-agent"}}
    seen = _prompt_through_relay(tmp_path, agent, EDITOR_KEYS)
    assert seen[0]["authorization"] == "Bearer sk-configured-for-the-agent"
    assert "sk-ant-editor-secret" not in json.dumps(seen)


def test_agent_environment_rules() -> None:
    base = dict(EDITOR_KEYS, PATH="/bin", ROUTEPLANE_API_KEY="rp-editor", AGENT_KEY="rp-scoped")
    plain = agent_environment(AgentConfig("a", "x"), "0.0.0.0:8080", base)
    assert not set(EDITOR_KEYS.values()) & set(plain.values())
    assert plain["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1" and plain["PATH"] == "/bin"
    assert "ANTHROPIC_AUTH_TOKEN" not in plain and "GOOGLE_API_KEY" not in plain
    assert plain["ROUTEPLANE_API_KEY"] == "rp-editor"  # a key of the gateway itself, meant for it
    scoped = agent_environment(AgentConfig("a", "x", gateway_token_env="AGENT_KEY"), "0.0.0.0:8080", base)
    assert {scoped[k] for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")} == {"rp-scoped"}
    assert "GOOGLE_API_KEY" not in scoped and "ANTHROPIC_AUTH_TOKEN" not in scoped  # SDKs prefer these
    off = agent_environment(AgentConfig("a", "x", gateway_enabled=False), "0.0.0.0:8080", base)
    assert off == base  # calls go to the providers themselves: the editor's keys are the agent's to use
