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
        # The folded names' label: `other`, unless the config itself uses that name (then `(other)`, as
        # /admin/metrics says): a configured route must not be credited with strangers' requests.
        self._other = {dim: _other_label(known) for dim, known in
                       (("route", routes), ("provider", providers), ("model", models))}
        # No provider or model (a request refused before routing): `none`, unless the config names one so.
        self._none = {dim: _other_label(known, "none") for dim, known in (("provider", providers), ("model", models))}

    @classmethod
    def from_config(cls, config: Any) -> "Labels":
        if config is None:
            return cls()
        routes = frozenset(r.name for r in config.routes)
        providers = frozenset(config.providers)
        models = frozenset(t.model for r in config.routes for t in r.targets if t.model)
        return cls(routes, providers, models)

    def route(self, value: Optional[str]) -> str:
        return value if value in self.routes else self._other["route"]

    def provider(self, value: Optional[str]) -> str:
        if value is None:
            return self._none["provider"]
        return value if value in self.providers else self._other["provider"]

    def model(self, value: Optional[str]) -> str:
        if value is None:
            return self._none["model"]
        return value if value in self.models else self._other["model"]

    @staticmethod
    def outcome(value: Optional[str]) -> str:
        return value if value in OUTCOMES else OTHER


def _other_label(known: FrozenSet[str], label: str = OTHER) -> str:
    while label in known:
        label = f"({label})"
    return label
