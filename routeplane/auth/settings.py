"""Typed view of the config's `auth:` section (validated by routeplane.config.AuthSchema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, FrozenSet, Mapping, Optional

from .caip10 import CaipError, parse_caip10, parse_chain
from .jwt import VerifierSettings
from .window import BudgetWindow

MODES = ("none", "api_keys", "jwt", "api_keys+jwt")


def _audience(value: Any) -> FrozenSet[str]:
    """`auth.audience` (a string or a list, validated by AuthSchema) as a set; None or absent: empty."""
    if value is None:
        return frozenset()
    return frozenset([value] if isinstance(value, str) else value)


@dataclass(frozen=True)
class BudgetSettings:
    account_limit_micro_usd: Optional[int] = None
    account_window: Optional[BudgetWindow] = None
    default_max_output_tokens: int = 4096
    # Calls reserved for each billed server tool a request declares without a cap (tool_fees.py).
    default_server_tool_calls: int = 5
    unknown_price_reservation_micro_usd: int = 10000
    reservation_ttl_seconds: int = 900
    fail_closed: bool = True
    mid_stream: bool = False
    # The file that keeps settlements the store could not take (None: the default path, "": none).
    spool: Optional[str] = None


@dataclass(frozen=True)
class RevocationSettings:
    # How long a worker may trust its last answer on a token's revocation: the bound on how late a
    # revocation takes effect on a worker that already saw the token (0 = ask the store every request).
    cache_seconds: float = 5.0


@dataclass(frozen=True)
class AuthSettings:
    mode: str = "none"
    verifier: VerifierSettings = field(default_factory=VerifierSettings)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    revocation: RevocationSettings = field(default_factory=RevocationSettings)

    @property
    def api_keys(self) -> bool:
        return "api_keys" in self.mode

    @property
    def jwt(self) -> bool:
        return "jwt" in self.mode

    @classmethod
    def from_config(cls, auth: Mapping[str, Any]) -> "AuthSettings":
        """Raises ValueError with the key path on a bad issuer or chain."""
        issuers, chains, admins = set(), set(), set()
        for key, into in (("allowed_issuers", issuers), ("admin_issuers", admins)):
            for i, iss in enumerate(auth.get(key) or ()):
                try:
                    into.add(str(parse_caip10(iss)))
                except CaipError as exc:
                    raise ValueError(f"auth.{key}[{i}]: {exc}") from None
        for i, chain in enumerate(auth.get("allowed_chains") or ()):
            try:
                chains.add(parse_chain(chain))
            except CaipError as exc:
                raise ValueError(f"auth.allowed_chains[{i}]: {exc}") from None
        verifier = VerifierSettings(
            leeway_seconds=float(auth.get("leeway_seconds", 30.0)),
            max_token_bytes=int(auth.get("max_token_bytes", 4096)),
            require_exp=bool(auth.get("require_exp", False)),
            allowed_issuers=frozenset(issuers),
            allowed_chains=frozenset(chains),
            admin_issuers=frozenset(admins),
            audience=_audience(auth.get("audience")),
        )
        b = dict(auth.get("budget") or {})
        window = b.get("account_window")
        budget = BudgetSettings(
            account_limit_micro_usd=b.get("account_limit_micro_usd"),
            account_window=BudgetWindow(window.get("rounds"), window.get("seconds")) if window else None,
            default_max_output_tokens=int(b.get("default_max_output_tokens", 4096)),
            default_server_tool_calls=int(b.get("default_server_tool_calls", 5)),
            unknown_price_reservation_micro_usd=int(b.get("unknown_price_reservation_micro_usd", 10000)),
            reservation_ttl_seconds=int(b.get("reservation_ttl_seconds", 900)),
            fail_closed=bool(b.get("fail_closed", True)),
            mid_stream=bool(b.get("mid_stream", False)),
            spool=None if b.get("spool") is None else str(b["spool"]),
        )
        revocation = RevocationSettings(cache_seconds=float((auth.get("revocation") or {}).get("cache_seconds", 5.0)))
        return cls(mode=str(auth.get("mode", "none")), verifier=verifier, budget=budget, revocation=revocation)
