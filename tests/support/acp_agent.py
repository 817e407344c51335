"""A small real ACP agent (agent-client-protocol package) the ACP relay tests launch over stdio.

Prompt text decides the turn: "hello" streams text, a tool call, asks permission and reads
a file through the client; "wait" runs until cancelled; "crash" dies mid-turn; "env" reports
the gateway environment it was given. argv[1] is the agent's name (in its session ids).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Dict

from acp import (
    PROTOCOL_VERSION,
    InitializeResponse,
    NewSessionResponse,
    PromptResponse,
    run_agent,
    start_tool_call,
    text_block,
    tool_content,
    update_agent_message_text,
    update_tool_call,
    update_user_message_text,
)
from acp.schema import AgentCapabilities, Implementation, LoadSessionResponse, PermissionOption, ToolCallUpdate

NAME = sys.argv[1] if len(sys.argv) > 1 else "agent"


class TestAgent:
    def __init__(self) -> None:
        self.conn: Any = None
        self.cancelled: Dict[str, asyncio.Event] = {}
        self.count = 0

    def on_connect(self, conn: Any) -> None:
        self.conn = conn

    async def initialize(self, protocol_version: int, client_capabilities: Any = None, client_info: Any = None,
                         **kw: Any) -> InitializeResponse:
        return InitializeResponse(protocol_version=PROTOCOL_VERSION,
                                  agent_capabilities=AgentCapabilities(load_session=True),
                                  agent_info=Implementation(name=NAME, version="1.0"))

    async def new_session(self, cwd: str, mcp_servers: Any = None, **kw: Any) -> NewSessionResponse:
        self.count += 1
        return NewSessionResponse(session_id=f"sess_{self.count}")  # same ids in every agent: the relay namespaces

    async def load_session(self, cwd: str, session_id: str, mcp_servers: Any = None, **kw: Any) -> Any:
        await self.conn.session_update(session_id, update_user_message_text(f"replayed {session_id}"))
        return LoadSessionResponse()

    async def cancel(self, session_id: str, **kw: Any) -> None:
        self.cancelled.setdefault(session_id, asyncio.Event()).set()

    async def prompt(self, session_id: str, prompt: Any, **kw: Any) -> PromptResponse:
        text = " ".join(getattr(b, "text", "") for b in prompt)
        send = self.conn.session_update
        if text == "crash":
            await send(session_id, update_agent_message_text("about to crash"))
            await asyncio.sleep(0.05)
            os._exit(3)
        if text == "wait":
            event = self.cancelled.setdefault(session_id, asyncio.Event())
            await send(session_id, update_agent_message_text("waiting"))
            try:
                await asyncio.wait_for(event.wait(), timeout=20)
            except asyncio.TimeoutError:
                return PromptResponse(stop_reason="end_turn")
            return PromptResponse(stop_reason="cancelled")
        if text == "term":
            term = await self.conn.create_terminal(session_id=session_id, command="make", args=["test"])
            out = await self.conn.terminal_output(session_id=session_id, terminal_id=term.terminal_id)
            await self.conn.release_terminal(session_id=session_id, terminal_id=term.terminal_id)
            await send(session_id, update_agent_message_text(f"{term.terminal_id}: {out.output}"))
            return PromptResponse(stop_reason="end_turn")
        if text == "env":
            for key in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ROUTEPLANE_API_KEY", "AGENT_EXTRA"):
                await send(session_id, update_agent_message_text(f"{key}={os.environ.get(key, '')}"))
            return PromptResponse(stop_reason="end_turn")
        await send(session_id, update_agent_message_text(f"{NAME} echo: {text}"))
        await send(session_id, start_tool_call("call_1", "Read file", kind="read", status="pending"))
        permission = await self.conn.request_permission(
            session_id=session_id, tool_call=ToolCallUpdate(tool_call_id="call_1"),
            options=[PermissionOption(option_id="ok", name="Allow", kind="allow_once"),
                     PermissionOption(option_id="no", name="Reject", kind="reject_once")])
        outcome = permission.outcome.model_dump(by_alias=True)
        if outcome.get("optionId") != "ok":
            await send(session_id, update_tool_call("call_1", status="failed"))
            return PromptResponse(stop_reason="refusal")
        read = await self.conn.read_text_file(session_id=session_id, path="/project/notes.txt")
        await send(session_id, update_tool_call("call_1", status="completed",
                                                content=[tool_content(text_block(read.content))]))
        return PromptResponse(stop_reason="end_turn")


if __name__ == "__main__":
    asyncio.run(run_agent(TestAgent()))
