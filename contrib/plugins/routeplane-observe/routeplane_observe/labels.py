"""Bounded metric labels: only configured route, provider and model names; anything else is "other"."""

from __future__ import annotations

from typing import Any, FrozenSet, Optional

OTHER = "other"
OUTCOMES = frozenset({"success", "upstream_error", "aborted", "client_disconnected", "denied", "error"})


class Labels:
    """Maps raw names to label values from a closed set taken from the config."""

    def __init__(self, routes: FrozenSet[str] = frozenset(), providers: FrozenSet[str] = frozenset(),
                 models: FrozenSet[str] = frozenset()) -> None:
        self.routes, self.providers, self.models = routes, providers, models

    @classmethod
    def from_config(cls, config: Any) -> "Labels":
        if config is None:
            return cls()
        routes = frozenset(r.name for r in config.routes)
        providers = frozenset(config.providers)
        models = frozenset(t.model for r in config.routes for t in r.targets if t.model)
        return cls(routes, providers, models)

    def route(self, value: Optional[str]) -> str:
        return value if value in self.routes else OTHER

    def provider(self, value: Optional[str]) -> str:
        if value is None:
            return "none"
        return value if value in self.providers else OTHER

    def model(self, value: Optional[str]) -> str:
        if value is None:
            return "none"
        return value if value in self.models else OTHER

    @staticmethod
    def outcome(value: Optional[str]) -> str:
        return value if value in OUTCOMES else OTHER
