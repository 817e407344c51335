"""ACP hook registration (validated like the other pipelines'), and the runtime the App holds (hooks, stats)."""

from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from ..hooks.acp import ACP_HOOK_KINDS, ACPHook
from ..observers import ObserverDispatcher

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from .context import ACPTurnEvent


class ACPBuilder:
    """`app.acp_builder()`: registers ACP hooks; a hook of another pipeline is a TypeError here."""

    def __init__(self) -> None:
        self._hooks: Dict[str, List[Tuple[str, Any]]] = {kind: [] for kind in ACP_HOOK_KINDS}
        self._current_plugin = "app"

    def pre_request_hook(self, hook: Any) -> "ACPBuilder":
        return self._register("pre_request_hook", hook)

    def route_hook(self, hook: Any) -> "ACPBuilder":
        return self._register("route_hook", hook)

    def observe_hook(self, hook: Any) -> "ACPBuilder":
        return self._register("observe_hook", hook)

    def _register(self, kind: str, hook: Any) -> "ACPBuilder":
        contract, methods = ACP_HOOK_KINDS[kind]
        who = f"{type(hook).__name__} (plugin {self._current_plugin!r})"
        if not isinstance(hook, ACPHook):
            raise TypeError(f"{who} is not an ACP hook (a hook of another pipeline cannot be registered on the "
                            f"ACP pipeline); {kind}() takes an instance of {contract.__name__}")
        if not isinstance(hook, contract):
            raise TypeError(f"{who} is not a {contract.__name__}; {kind}() takes an instance of it")
        for name, arity in methods.items():
            method = getattr(hook, name, None)
            if not callable(method):
                raise TypeError(f"{who} has no method {name}()")
            try:
                inspect.signature(method).bind(*([None] * arity))
            except TypeError:
                raise TypeError(f"{who}.{name}() must take {arity} argument(s) besides self") from None
        self._hooks[kind].append((self._current_plugin, hook))
        return self

    def hooks(self, kind: str) -> Tuple[Any, ...]:
        return tuple(h for _pid, h in self._hooks[kind])

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
