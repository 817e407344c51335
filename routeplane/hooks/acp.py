"""Hook contracts of the ACP pipeline (routing only: no settlement stage).

The ACP pipeline lands with its own issue; the contracts exist now so that
cross-pipeline registration is a `TypeError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class ACPHook:
    """Marker base of every ACP hook contract."""


class ACPPreRequestHook(ACPHook, ABC):
    """Fires before a prompt turn is relayed to an agent."""

    @abstractmethod
    def check(self, ctx: Any) -> Any: ...


class ACPRouteHook(ACPHook, ABC):
    """Chooses or rewrites the agent a session is routed to."""

    @abstractmethod
    def resolve(self, target: Any, ctx: Any) -> Any: ...


class ACPObserveHook(ACPHook):
    """Read-only observer of ACP turns."""

    def on_turn_end(self, event: Any) -> None:
        return None
