"""Values of one MCP request as hooks see them: the request context, the upstream target, the call event."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional

from ..language_model.context import SECRET_HEADERS, Identity


@dataclass(frozen=True)
class MCPTarget:
    """Where a routed call goes: a configured upstream server id and the upstream's own name (or URI)."""

    server: str
    name: str

    def replace(self, **changes: Any) -> "MCPTarget":
        return replace(self, **changes)


class MCPRequestContext:
    """One JSON-RPC request on its way through the MCP pipeline (hooks may write `metadata` only)."""

    def __init__(self, request_id: str, method: str, params: Mapping[str, Any], identity: Identity,
                 headers: Mapping[str, str], endpoint: Optional[str], session_key: Optional[str]) -> None:
        self.request_id = request_id
        self.method = method
        self.params: Mapping[str, Any] = params
        self.identity = identity
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in headers.items()
                                           if k.lower() not in SECRET_HEADERS}
        self.endpoint = endpoint  # None: the aggregate /mcp; else the server of /mcp/<server>
        self.session_key = session_key
        self.metadata: Dict[str, Any] = {}
        self.started = time.monotonic()

    @property
    def name(self) -> Optional[str]:
        """The exposed tool/prompt name (`tools/call`, `prompts/get`) or the URI (`resources/read`)."""
        value = self.params.get("uri" if self.method == "resources/read" else "name")
        return value if isinstance(value, str) else None

    @property
    def arguments(self) -> Mapping[str, Any]:
        value = self.params.get("arguments")
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class MCPCallEvent:
    """One routed call, finished: what observers and the request log get."""

    request_id: str
    method: str  # tools/call | prompts/get | resources/read
    server: Optional[str]
    name: Optional[str]  # the upstream's own tool/prompt name, or the URI
    exposed_name: Optional[str]
    outcome: str  # ok | tool_error | error | denied
    latency_ms: float
    account_id: Optional[str]
    endpoint: Optional[str]
    error_code: Optional[int] = None
    error_message: Optional[str] = None
    started_at: float = field(default_factory=time.time)
