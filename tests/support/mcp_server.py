"""A real MCP server (the `mcp` package's MCPServer) for tests: `python mcp_server.py NAME stdio|http|http-json [PORT]`."""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import Context, MCPServer


def build(name: str) -> MCPServer:
    srv = MCPServer(name)

    @srv.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @srv.tool()
    def whoami() -> str:
        """The server's name and process id."""
        return f"{name}:{os.getpid()}"

    @srv.tool()
    def crash() -> str:
        """Kill this server process mid-call (tests an upstream that dies)."""
        os._exit(3)

    @srv.tool()
    def slow(seconds: float) -> str:
        """Answer after a delay (tests upstream timeouts)."""
        time.sleep(seconds)
        return f"slept {seconds}"

    @srv.tool()
    async def count(n: int, ctx: Context) -> str:
        """Report progress n times, then answer."""
        for i in range(n):
            await ctx.report_progress(i + 1, n, f"step {i + 1}")
        return f"counted {n}"

    @srv.tool(name="secret.read")
    def secret_read() -> str:
        """A tool an allowlist should hide."""
        return "classified"

    @srv.resource(f"mem://{name}/hello")
    def hello() -> str:
        return f"hello from {name}"

    @srv.resource("mem://shared/readme")
    def shared() -> str:
        return f"readme of {name}"

    @srv.prompt()
    def greet(who: str) -> str:
        """Greets someone."""
        return f"{name} says hello to {who}"

    return srv


if __name__ == "__main__":
    server_name, transport = sys.argv[1], sys.argv[2]
    server = build(server_name)
    if transport == "stdio":
        server.run("stdio")
    else:  # "http" answers with SSE streams, "http-json" with plain JSON bodies
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[3]), json_response=transport == "http-json")
