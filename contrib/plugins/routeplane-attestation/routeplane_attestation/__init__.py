"""routeplane-attestation: route only to confidential targets whose signed attestation report verifies."""

from __future__ import annotations

from .cache import VerdictCache
from .hook import AttestationRouteHook, NoVerifiedTarget
from .options import options_schema_for
from .plugin import AttestationPlugin
from .verdict import Verdict, VerificationFailed
from .verifiers import BUILTIN_VERIFIERS, SignedReportVerifier, Verifier, canonical_json

__version__ = "0.1.0"

__all__ = [
    "AttestationPlugin", "AttestationRouteHook", "BUILTIN_VERIFIERS", "NoVerifiedTarget", "SignedReportVerifier",
    "Verdict", "VerdictCache", "VerificationFailed", "Verifier", "__version__", "canonical_json", "options_schema_for",
]
