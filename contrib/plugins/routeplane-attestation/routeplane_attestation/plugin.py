"""The AttestationPlugin: validated options in, one verifier per configured provider, one route hook."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Type

from routeplane.app import AppBuilder, Plugin, PluginId

from .cache import VerdictCache
from .hook import AttestationRouteHook
from .options import load_options, options_schema_for
from .verifiers import BUILTIN_VERIFIERS, Verifier

log = logging.getLogger("routeplane.attestation")


class AttestationPlugin(Plugin):
    """`AttestationPlugin(policy="enforce", providers={"tee": {"url": ..., "signing_keys": [...]}})`,
    or `plugins: {attestation: {...}}` in the config.

    A subclass adds verifier kinds by extending `verifiers` and rebuilding the
    schema: `verifiers = {**AttestationPlugin.verifiers, "near-ai": NearVerifier}`,
    `options_schema = options_schema_for(verifiers)`.
    """

    id = PluginId("attestation")
    verifiers: ClassVar[Dict[str, Type[Verifier]]] = dict(BUILTIN_VERIFIERS)
    options_schema = options_schema_for(BUILTIN_VERIFIERS)

    def __init__(self, *, clock: Optional[Callable[[], float]] = None,
                 wall_clock: Optional[Callable[[], float]] = None, **options: Any) -> None:
        self.options = load_options(options, self.verifiers)
        self.enabled: bool = self.options["enabled"]
        self.policy: str = self.options["policy"]
        wall = wall_clock or time.time
        cache = self.options["cache"]
        self.cache = VerdictCache(cache["verified_ttl"], cache["unverified_ttl"], clock or time.monotonic,
                                  cache["wait_timeout"], cache["max_entries"])
        self.provider_verifiers: Dict[str, Verifier] = {
            pid: self.verifiers[section["verifier"]](pid, {k: v for k, v in section.items() if k != "verifier"},
                                                     clock=wall)
            for pid, section in self.options["providers"].items()
        }
        self.hook = AttestationRouteHook(self.policy, self.provider_verifiers, self.cache, str(self.id), wall)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "AttestationPlugin":
        return cls(**dict(options))

    def install(self, app: AppBuilder) -> None:
        if not self.enabled:
            return
        config = app.current_config
        if config is not None:
            providers = getattr(config, "providers", {}) or {}
            confidential = {pid for pid, t in providers.items() if getattr(t, "confidential", False)}
            for pid in sorted(confidential - set(self.provider_verifiers)):
                log.warning("provider %r is confidential but plugins.attestation.providers has no section for it: "
                            "its targets will never verify", pid)
            for pid in sorted(set(self.provider_verifiers) - confidential):
                log.warning("plugins.attestation.providers.%s: no active provider %r is marked confidential: true; "
                            "its verifier is never used", pid, pid)
        app.language_model_builder().route_hook(self.hook)
