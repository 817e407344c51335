"""routeplane-guardrails: secret, PII and dangerous-command detectors with warn/redact/block in both directions."""

from __future__ import annotations

from .detectors import BUILTIN_DETECTORS
from .plugin import GuardrailsPlugin

__version__ = "0.1.0"

__all__ = ["BUILTIN_DETECTORS", "GuardrailsPlugin", "__version__"]
