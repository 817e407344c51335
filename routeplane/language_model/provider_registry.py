"""The shipped registry of well-known providers (`routeplane/data/providers.yaml`): wire, base URL, auth, prices."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Dict, Mapping, Optional

import yaml

from .routing import Prices, PriceTier


@dataclass(frozen=True)
class ProviderSpec:
    """One registry entry: the defaults a `providers.<id>` config block inherits."""

    id: str
    display_name: str
    protocol: str
    base_url: Optional[str]
    auth_header: Optional[str]
    auth_prefix: str
    key_env: Optional[str]
    model_prices: Mapping[str, Prices] = field(default_factory=dict)
    default_price: Optional[Prices] = None
    options: Mapping[str, Any] = field(default_factory=dict)  # defaults for `providers.<id>.options`


@dataclass(frozen=True)
class ProviderRegistry:
    providers: Mapping[str, ProviderSpec]
    prices_checked: str

    def get(self, provider_id: str) -> Optional[ProviderSpec]:
        return self.providers.get(provider_id)


def _prices(raw: Any, per_call: Any = None) -> Prices:
    """A model's prices; `per_call` (the provider's, for every model) under the model's own."""
    raw = dict(raw or {})
    tiers = raw.pop("tiers", None) or ()  # long-context prices: [{above_input_tokens: N, input: ..., ...}]
    calls = {**(per_call or {}), **(raw.pop("per_call", None) or {})}
    return Prices(**{k: (float(v) if v is not None else None) for k, v in raw.items()}, per_call=calls,
                  tiers=tuple(PriceTier(int(t["above_input_tokens"]),
                                        **{k: (float(v) if v is not None else None) for k, v in t.items()
                                           if k != "above_input_tokens"})
                              for t in tiers))


def parse_registry(raw: Mapping[str, Any]) -> ProviderRegistry:
    specs: Dict[str, ProviderSpec] = {}
    for pid, entry in (raw.get("providers") or {}).items():
        auth = entry.get("auth") or {}
        specs[pid] = ProviderSpec(
            id=pid,
            display_name=entry.get("display_name") or pid,
            protocol=entry["protocol"],
            base_url=entry.get("base_url"),
            auth_header=auth.get("header"),
            auth_prefix=auth.get("prefix") or "",
            key_env=entry.get("key_env"),
            model_prices={m: _prices(p, entry.get("per_call")) for m, p in (entry.get("models") or {}).items()},
            default_price=(_prices(entry["default_price"], entry.get("per_call"))
                           if entry.get("default_price") else None),
            options=dict(entry.get("options") or {}),
        )
    return ProviderRegistry(specs, str(raw.get("prices_checked") or "unknown"))


def load_registry(path: Optional[str] = None) -> ProviderRegistry:
    """The registry shipped in the package, or one from `path` (tests, private forks).

    Read on each config load rather than cached in a module global: it is a
    few kilobytes, and a HUP reload should see an upgraded package's file.
    """
    if path is None:
        text = resources.files("routeplane").joinpath("data/providers.yaml").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    return parse_registry(yaml.safe_load(text) or {})
