"""ACP hook registration (validated like the other pipelines'), and the runtime the App holds (hooks, stats)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, Tuple

from ..hook_builder import HookBuilder
from ..hooks.acp import ACP_HOOK_KINDS, ACPHook
from ..observers import ObserverDispatcher

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from .context import ACPTurnEvent


class ACPBuilder(HookBuilder):
    """`app.acp_builder()`: registers ACP hooks; a hook of another pipeline is a TypeError here."""

    kinds = ACP_HOOK_KINDS
    marker = ACPHook
    pipeline = "ACP"

    def build(self, config: "Config", inline_observers: bool) -> "ACPRuntime":
        observers = ObserverDispatcher(self.hooks("observe_hook"), workers=config.server.observer_threads,
                                       max_queue=config.server.observer_queue, inline=inline_observers)
        return ACPRuntime(config, self.hooks("pre_request_hook"), self.hooks("route_hook"), observers)


class ACPRuntime:
    """What the App holds for ACP: the agents, hooks, observers and turn counters (`stats()`)."""

    def __init__(self, config: "Config", pre_request: Tuple[Any, ...], route: Tuple[Any, ...],
                 observers: ObserverDispatcher) -> None:
        self.config = config
        self.agents = config.agents
        self.pre_request = pre_request
        self.route = route
        self.observers = observers
        self._lock = threading.Lock()
        self._counts: Dict[str, Dict[str, int]] = {}
        self._latency_ms: Dict[str, float] = {}

    def record_turn(self, event: "ACPTurnEvent") -> None:
        """Count the turn (by agent and stop reason / error) and hand it to the observers."""
        outcome = event.stop_reason if event.error is None else "error"
        with self._lock:
            per = self._counts.setdefault(event.agent, {"turns": 0})
            per["turns"] += 1
            per[outcome or "unknown"] = per.get(outcome or "unknown", 0) + 1
            self._latency_ms[event.agent] = self._latency_ms.get(event.agent, 0.0) + event.latency_ms
        self.observers.emit("on_turn_end", event)

    def count(self, agent: str, what: str) -> None:
        """Other per-agent counters (denied requests, agent exits)."""
        with self._lock:
            per = self._counts.setdefault(agent, {"turns": 0})
            per[what] = per.get(what, 0) + 1

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per agent: turns, counts per stop reason, `error`, `denied`, `exited`, total latency in ms."""
        with self._lock:
            return {agent: dict(c, latency_ms_total=round(self._latency_ms.get(agent, 0.0), 3))
                    for agent, c in self._counts.items()}

    def close(self) -> None:
        self.observers.drain(timeout=2.0)
