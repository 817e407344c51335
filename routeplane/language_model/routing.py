"""Routing: virtual model names to ordered chains of provider targets."""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ModelNotFound
from .cooldown import CredentialKey, credential_fingerprint
from .url_safety import URLPolicy

PROTOCOLS = ("openai_chat", "openai_responses", "anthropic_messages", "gemini", "mock")
STRATEGIES = ("priority", "round_robin", "weighted")


@dataclass(frozen=True)
class PriceTier:
    """Prices for a whole request whose input (all input buckets) exceeds `above_input_tokens`
    (long-context pricing); a field left None keeps the price below it."""

    above_input_tokens: int
    input: Optional[float] = None
    cache_read: Optional[float] = None
    cache_write: Optional[float] = None
    output: Optional[float] = None
    reasoning: Optional[float] = None


@dataclass(frozen=True)
class Prices:
    """USD per million tokens; None means unknown (cost recorded as unknown, never zero)."""

    input: Optional[float] = None
    cache_read: Optional[float] = None
    cache_write: Optional[float] = None
    output: Optional[float] = None
    reasoning: Optional[float] = None  # billed as output when unset
    tiers: Tuple[PriceTier, ...] = ()
    # USD per call of a server-side tool the provider bills by the call ({"web_search": 0.01}); given
    # as a mapping, kept as sorted pairs (the prices stay hashable). A kind used and not named is unknown.
    per_call: Tuple[Tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(sorted(
            (t if isinstance(t, PriceTier) else PriceTier(**t) for t in self.tiers or ()),
            key=lambda t: t.above_input_tokens)))
        calls = self.per_call.items() if isinstance(self.per_call, Mapping) else self.per_call or ()
        object.__setattr__(self, "per_call", tuple(sorted((str(k), float(v)) for k, v in calls)))

    def call_price(self, kind: str) -> Optional[float]:
        """USD per call of the server-side tool `kind`, or None when unknown."""
        return next((price for name, price in self.per_call if name == kind), None)

    def for_input(self, input_tokens: int) -> "Prices":
        """The prices for a request with this many input tokens: every tier it exceeds applies in
        order, each overriding the fields it sets (so a higher tier inherits from the one below)."""
        changes: Dict[str, float] = {}
        for t in self.tiers:
            if input_tokens > t.above_input_tokens:
                changes.update({k: getattr(t, k) for k in ("input", "cache_read", "cache_write", "output", "reasoning")
                                if getattr(t, k) is not None})
        return dataclasses.replace(self, tiers=(), **changes) if changes else self


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` is an idle timeout (it restarts with every byte received,
    so it guards a stalled stream without capping a long one); `total` caps one
    upstream call from connect to the last byte, streams included."""

    connect: float = 10.0
    read: float = 300.0
    total: Optional[float] = None


@dataclass(frozen=True)
class RoutingTarget:
    """One concrete upstream call: a provider, its wire and a model id."""

    provider: str
    model: str
    protocol: str
    base_url: Optional[str] = None
    api_key: Optional[str] = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeouts: Timeouts = Timeouts()
    prices: Prices = Prices()
    weight: float = 1.0
    confidential: bool = False
    options: Mapping[str, object] = field(default_factory=dict)
    # The credential header; None lets the wire's codec choose (Bearer, x-api-key, ...).
    auth_header: Optional[str] = None
    auth_prefix: str = ""
    url_policy: URLPolicy = URLPolicy()
    # The credential this target was configured with (api_key, headers): set when it is built, carried
    # by replace(), so a route hook's per-tenant key is told apart from it (breaker_key).
    configured_credential: Optional[Tuple[Optional[str], Mapping[str, str]]] = field(
        default=None, repr=False, compare=False)
    # The base URL it was configured with, likewise: a route hook's per-tenant endpoint is another upstream.
    configured_base_url: Optional[str] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.configured_credential is None:
            object.__setattr__(self, "configured_credential", (self.api_key, dict(self.headers)))
        if self.configured_base_url is None:
            object.__setattr__(self, "configured_base_url", self.base_url or "")

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def breaker_key(self) -> str:
        """The circuit breaker this call feeds (language_model/cooldown.py): `label` with the configured
        credential; with another (a tenant's key) `label#` and a fingerprint of it, so one tenant's rate
        limit does not sideline the target for all. Another base URL than the configured one is another
        upstream altogether: `label@` and a fingerprint of the URL, under which the same applies. Cached on the object: targets are immutable, and
        this is the hot path (not functools.cached_property: before 3.12 it locks across all targets)."""
        key = self.__dict__.get("_breaker_key")
        if key is None:
            key = self._credential_breaker_key()
            object.__setattr__(self, "_breaker_key", key)
        return key

    def _credential_breaker_key(self) -> str:
        label = self.label
        if (self.base_url or "") != self.configured_base_url:
            # Another endpoint (a tenant's own deployment) fails on its own: its outages must not
            # sideline the configured one, nor the other way round.
            label = f"{label}@{credential_fingerprint(self.base_url, {})}"
        key, headers = self.configured_credential or (None, {})
        if self.api_key == key and dict(self.headers) == dict(headers):
            return label
        return CredentialKey(label, credential_fingerprint(self.api_key, self.headers))

    def replace(self, **changes: Any) -> "RoutingTarget":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Route:
    name: str
    targets: Tuple[RoutingTarget, ...]
    strategy: str = "priority"


class RoutingTable:
    """Resolves a client's model name to an ordered chain (head first, the rest fallbacks)."""

    def resolve(self, model: str) -> List[RoutingTarget]:  # pragma: no cover - interface
        raise NotImplementedError

    def preview(self, model: str) -> List[RoutingTarget]:
        """The chain `resolve` would give now, for a dry run (count_tokens, explain) that calls nothing.
        A table whose `resolve` moves state (a rotation) overrides this, so that looking moves nothing."""
        return self.resolve(model)

    def routes(self) -> Sequence[Route]:  # pragma: no cover - interface
        raise NotImplementedError

    def provider_models(self) -> Sequence[RoutingTarget]:
        return ()


class StaticRoutingTable(RoutingTable):
    """Routes declared up front, plus `provider:model` direct routing.

    Round-robin rotation state is per table instance, so per worker process:
    consistent within a worker, which is all a WSGI deployment can promise
    without a shared store on the hot path.
    """

    def __init__(
        self,
        routes: Sequence[Route] = (),
        providers: Optional[Mapping[str, RoutingTarget]] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._routes: Dict[str, Route] = {r.name: r for r in routes}
        # Provider templates for direct routing: a RoutingTarget with an empty model.
        self._providers: Dict[str, RoutingTarget] = dict(providers or {})
        self._turns: Dict[str, int] = {}  # round_robin: requests each route has served
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def routes(self) -> Sequence[Route]:
        return tuple(self._routes.values())

    def providers(self) -> Mapping[str, RoutingTarget]:
        return dict(self._providers)

    def provider_models(self) -> Sequence[RoutingTarget]:
        return tuple(t for r in self._routes.values() for t in r.targets)

    def resolve(self, model: str) -> List[RoutingTarget]:
        return self._resolve(model, advance=True)

    def preview(self, model: str) -> List[RoutingTarget]:
        """The next request's chain, without turning the rotation: a client that counts tokens before
        each message would otherwise send every message to the same one of two round-robin targets."""
        return self._resolve(model, advance=False)

    def _resolve(self, model: str, advance: bool) -> List[RoutingTarget]:
        route = self._routes.get(model)
        if route is not None:
            return self._order(route, advance)
        direct = self._direct(model)
        if direct is None:
            raise ModelNotFound(model)
        return [direct]

    def targets_of(self, model: str) -> List[RoutingTarget]:
        """Every target a request for `model` may reach, in config order (no rotation advanced, as
        resolve() would); [] for an unknown model. Budgets price the worst of them."""
        route = self._routes.get(model)
        if route is not None:
            return list(route.targets)
        direct = self._direct(model)
        return [direct] if direct is not None else []

    def _direct(self, model: str) -> Optional[RoutingTarget]:
        """`provider:model`: the provider's target for that model, at the model's own price."""
        provider, sep, model_id = model.partition(":")
        if not (sep and model_id and provider in self._providers):
            return None
        template = self._providers[provider]
        prices = template.options.get("model_prices", {})
        return template.replace(model=model_id, prices=prices.get(model_id, template.prices))  # type: ignore[union-attr]

    def _order(self, route: Route, advance: bool = True) -> List[RoutingTarget]:
        targets = list(route.targets)
        if len(targets) < 2 or route.strategy == "priority":
            return targets
        if route.strategy == "round_robin":
            with self._lock:
                n = self._turns.get(route.name, 0)
                if advance:
                    self._turns[route.name] = n + 1
            head = n % len(targets)
            return targets[head:] + targets[:head]
        # weighted: draw the head by weight, then the rest by weight without replacement
        ordered: List[RoutingTarget] = []
        pool = targets[:]
        while pool:
            total = sum(max(t.weight, 0.0) for t in pool)
            if total <= 0:
                ordered.extend(pool)
                break
            with self._lock:
                x = self._rng.uniform(0, total)
            acc = 0.0
            for i, t in enumerate(pool):
                acc += max(t.weight, 0.0)
                if x <= acc:
                    ordered.append(pool.pop(i))
                    break
            else:  # float rounding at the top end
                ordered.append(pool.pop())
        return ordered
