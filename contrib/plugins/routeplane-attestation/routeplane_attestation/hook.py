"""The route hook: a verdict for every confidential target; `record` tags them, `enforce` drops the unverified."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Tuple

from routeplane.errors import NoTargetAvailable
from routeplane.hooks.language_model import RouteHook
from routeplane.language_model.routing import RoutingTarget

from .cache import VerdictCache
from .verdict import Verdict
from .verifiers import Verifier

log = logging.getLogger("routeplane.attestation")


class NoVerifiedTarget(NoTargetAvailable):
    """Every target of the chain was a confidential target that did not verify (policy `enforce`)."""

    status = 503
    kind = "unavailable"  # not "overloaded": an Anthropic client must not read it as a retriable 529

    def __init__(self, model: str, failed: List[Verdict]) -> None:
        why = "; ".join(f"{v.label}: {v.reason or 'not verified'}" for v in failed[:5])
        super().__init__(
            f"No verified target is available for model {model!r}: every target is a confidential provider "
            f"whose attestation did not verify ({why}).",
            code="no_verified_target",
        )
        self.verdicts = tuple(failed)


class AttestationRouteHook(RouteHook):
    """For each distinct confidential (provider, model) in the chain, a verdict from the cache or its verifier.

    The verdicts go to `ctx.plugin_metadata(plugin_id)` as
    `{"policy", "verdicts": [...], "dropped": [...]}` and from there to the
    settlement and the request-end event. A provider without a verifier, a
    verifier error, or a verification that another thread did not finish in
    time are all unverified verdicts (fail-closed).
    """

    def __init__(self, policy: str, verifiers: Mapping[str, Verifier], cache: VerdictCache,
                 plugin_id: str = "attestation", clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.verifiers = dict(verifiers)
        self.cache = cache
        self.plugin_id = plugin_id
        self.clock = clock

    def resolve(self, chain: List[RoutingTarget], ctx: Any) -> List[RoutingTarget]:
        verdicts: Dict[Tuple[str, str], Tuple[Verdict, bool]] = {}
        for target in chain:
            key = (target.provider, target.model)
            if target.confidential and key not in verdicts:
                verdicts[key] = self.verdict_for(target)
        if not verdicts:
            return chain
        meta = ctx.plugin_metadata(self.plugin_id)
        meta["policy"] = self.policy
        meta["verdicts"] = [dict(v.to_dict(), cached=cached) for v, cached in verdicts.values()]
        if self.policy != "enforce":
            return chain
        kept = [t for t in chain if not t.confidential or verdicts[(t.provider, t.model)][0].verified]
        dropped = [t.label for t in chain if t not in kept]
        meta["dropped"] = dropped
        if chain and not kept:
            raise NoVerifiedTarget(ctx.prompt.model, [v for v, _c in verdicts.values() if not v.verified])
        return kept

    def verdict_for(self, target: RoutingTarget) -> Tuple[Verdict, bool]:
        """(verdict, came from the cache)."""
        verifier = self.verifiers.get(target.provider)
        if verifier is None:
            return Verdict.failed(target.provider, target.model, "none",
                                  "no attestation verifier is configured for this provider", self.clock()), False
        return self.cache.get_or_verify(
            (target.provider, target.model),
            lambda: self._verify(verifier, target.model),
            lambda: Verdict.failed(target.provider, target.model, verifier.name,
                                   "another request's verification did not finish in time", self.clock()),
        )

    def _verify(self, verifier: Verifier, model: str) -> Verdict:
        try:
            verdict = verifier.verify(model)
        except Exception as exc:  # a verifier that overrides verify() and raises: still fail-closed
            log.warning("attestation verifier %s raised for %s:%s: %s", verifier.name, verifier.provider, model,
                        type(exc).__name__)
            return Verdict.failed(verifier.provider, model, verifier.name, f"verifier error ({type(exc).__name__})",
                                  self.clock())
        if not verdict.verified:
            log.info("attestation of %s:%s did not verify: %s", verifier.provider, model, verdict.reason)
        return verdict
