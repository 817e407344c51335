"""Hook contracts of the MCP pipeline (routing only: no settlement stage).

The MCP pipeline itself lands with its own issue; the contracts exist now so
that registering an MCP hook on the language-model pipeline (or the reverse)
is a `TypeError` at registration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class MCPHook:
    """Marker base of every MCP hook contract."""


class MCPPreRequestHook(MCPHook, ABC):
    """Fires before a JSON-RPC request is routed to an upstream MCP server."""

    @abstractmethod
    def check(self, ctx: Any) -> Any: ...


class MCPRouteHook(MCPHook, ABC):
    """Chooses or rewrites the upstream MCP server target."""

    @abstractmethod
    def resolve(self, target: Any, ctx: Any) -> Any: ...


class MCPObserveHook(MCPHook):
    """Read-only observer of MCP calls."""

    def on_call_end(self, event: Any) -> None:
        return None
