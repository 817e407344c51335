"""The official `mcp` SDK as a client of a gateway under test: one session, one body, run to the end."""

from __future__ import annotations

import gc
from typing import Any, Awaitable, Callable

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.support.gateway import GatewayProcess


def session_run(gw: GatewayProcess, body: Callable[[ClientSession], Awaitable[Any]], path: str = "/mcp",
                limit: float = 90.0) -> Any:
    """`body(session)` on an initialized session to `gw`'s `path`; a hang fails after `limit` seconds."""
    async def run() -> Any:
        async with streamable_http_client(gw.url + path, http_client=create_mcp_http_client()) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                with anyio.fail_after(limit):
                    return await body(s)

    try:
        return anyio.run(run)
    finally:
        gc.collect()  # the SDK's leftovers are finalized here, not in the middle of a later test
