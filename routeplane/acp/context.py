"""Values the ACP hooks see: the target agent, the request context, the turn event."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional


@dataclass(frozen=True)
class ACPTarget:
    """The configured agent (name under `agents:`) a session is routed to."""

    agent: str

    def replace(self, **changes: Any) -> "ACPTarget":
        return dataclasses.replace(self, **changes)


@dataclass
class ACPRequestContext:
    """One client request: its method, params as sent, the agent it goes to and the client's session id."""

    method: str
    params: Mapping[str, Any]
    agent: str
    session_id: Optional[str] = None  # client-visible (agent-prefixed) id; None for session/new
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ACPTurnEvent:
    """One finished prompt turn: `stop_reason` from the agent, or `error` (JSON-RPC error message)."""

    agent: str
    session_id: str
    stop_reason: Optional[str]
    latency_ms: float
    error: Optional[str] = None
    error_code: Optional[int] = None
    usage: Optional[Mapping[str, Any]] = None
