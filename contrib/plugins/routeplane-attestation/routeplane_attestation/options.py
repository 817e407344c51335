"""The `plugins.attestation` options schema; each provider's section is checked by its verifier's own schema."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from .verifiers import BUILTIN_VERIFIERS, Verifier

POLICIES = ("record", "enforce")
DEFAULT_VERIFIER = "signed_report"


class CacheOptions(Schema):
    class Meta:
        unknown = RAISE

    verified_ttl = fields.Float(load_default=600.0, validate=validate.Range(min=0, max=86400))
    unverified_ttl = fields.Float(load_default=60.0, validate=validate.Range(min=0, max=86400))
    wait_timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=600))
    max_entries = fields.Integer(load_default=4096, validate=validate.Range(min=1, max=1_000_000))


def verifier_name(provider: str, section: Mapping[str, Any], registry: Mapping[str, Type[Verifier]]) -> str:
    """An explicit `verifier:` wins; else a verifier registered under the provider's id; else `signed_report`."""
    explicit = section.get("verifier")
    if explicit:
        return str(explicit)
    return provider if provider in registry else DEFAULT_VERIFIER


def _without_verifier(section: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in section.items() if k != "verifier"}


def options_schema_for(registry: Mapping[str, Type[Verifier]]) -> Type[Schema]:
    """The options schema for a plugin whose verifiers are `registry` (name → class)."""
    known = dict(registry)

    class AttestationOptions(Schema):
        class Meta:
            unknown = RAISE

        enabled = fields.Boolean(load_default=True)
        policy = fields.String(load_default="record", validate=validate.OneOf(POLICIES))
        cache = fields.Nested(CacheOptions, load_default=lambda: CacheOptions().load({}))
        providers = fields.Dict(keys=fields.String(), values=fields.Dict(), load_default=dict)

        @validates_schema
        def _providers(self, data: Dict[str, Any], **_: Any) -> None:
            errors: Dict[str, Any] = {}
            for pid, section in (data.get("providers") or {}).items():
                name = verifier_name(pid, section, known)
                cls = known.get(name)
                if cls is None:
                    errors[pid] = {"verifier": [f"unknown verifier {name!r} (known: {sorted(known)})"]}
                    continue
                try:
                    cls.options_schema().load(_without_verifier(section))
                except ValidationError as exc:
                    errors[pid] = exc.messages
            if errors:
                raise ValidationError({"providers": errors})

        @post_load
        def _load_sections(self, data: Dict[str, Any], **_: Any) -> Dict[str, Any]:
            # Each section with its verifier's defaults filled in (validated above).
            data["providers"] = {
                pid: dict(known[verifier_name(pid, s, known)].options_schema().load(_without_verifier(s)),
                          verifier=verifier_name(pid, s, known))
                for pid, s in (data.get("providers") or {}).items()
            }
            return data

    return AttestationOptions


def load_options(options: Mapping[str, Any], registry: Optional[Mapping[str, Type[Verifier]]] = None) -> Dict[str, Any]:
    """Validated options (raises marshmallow's ValidationError naming the key)."""
    return options_schema_for(registry or BUILTIN_VERIFIERS)().load(dict(options))
