"""Attestation verdicts and the errors a verifier raises while producing one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional


class VerificationFailed(Exception):
    """A check failed; the message is the verdict's public `reason` (no secrets, no report bodies)."""


@dataclass(frozen=True)
class Verdict:
    """What the gateway concluded about one (provider, model) at `checked_at` (unix seconds).

    `verified` is True only when every check passed; every failure, including
    an error inside the verifier, is `verified=False` with a `reason`.
    """

    provider: str
    model: str
    verified: bool
    verifier: str
    reason: str = ""
    checked_at: float = 0.0
    # Facts from a report that verified (measurement, signing key, report timestamp): public values.
    claims: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, provider: str, model: str, verifier: str, checked_at: float,
           claims: Optional[Mapping[str, Any]] = None) -> "Verdict":
        return cls(provider, model, True, verifier, "", checked_at, dict(claims or {}))

    @classmethod
    def failed(cls, provider: str, model: str, verifier: str, reason: str, checked_at: float) -> "Verdict":
        return cls(provider, model, False, verifier, reason, checked_at)

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}"

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"provider": self.provider, "model": self.model, "verified": self.verified,
                               "verifier": self.verifier, "checked_at": round(self.checked_at, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.claims:
            out["claims"] = dict(self.claims)
        return out
