"""The `plugins.guardrails` options schema: every mistake fails at start-up with its key path."""

from __future__ import annotations

import re
from typing import Any, Dict, List

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from .detectors import BUILTIN_DETECTORS
from .rules import ACTIONS

_ACTION = fields.String(validate=validate.OneOf(ACTIONS))
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class CustomPatternSchema(_Strict):
    name = fields.String(required=True, validate=validate.Regexp(_NAME, error="use letters, digits, '_' or '-'"))
    regex = fields.String(required=True)
    direction = fields.String(load_default="both", validate=validate.OneOf(("upgoing", "downgoing", "both")))

    @validates_schema
    def _compiles(self, data: Dict[str, Any], **_: Any) -> None:
        regex = data.get("regex")
        if regex is None:
            return
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise ValidationError(f"invalid regular expression: {exc}", "regex") from None
        if compiled.search("") is not None:
            raise ValidationError("the regular expression matches the empty string", "regex")


class BlockMessageSchema(_Strict):
    include_details = fields.Boolean(load_default=True)
    include_help_link = fields.Boolean(load_default=False)
    help_url = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def _link(self, data: Dict[str, Any], **_: Any) -> None:
        if data.get("include_help_link") and not data.get("help_url"):
            raise ValidationError("include_help_link needs help_url", "help_url")


class GuardrailOptionsSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    disabled_patterns = fields.List(fields.String(), load_default=list)
    upgoing = fields.Dict(keys=fields.String(), values=_ACTION, load_default=dict)
    downgoing = fields.Dict(keys=fields.String(), values=_ACTION, load_default=dict)
    custom_patterns = fields.List(fields.Nested(CustomPatternSchema), load_default=list)
    custom_upgoing = fields.Dict(keys=fields.String(), values=_ACTION, load_default=dict)
    custom_downgoing = fields.Dict(keys=fields.String(), values=_ACTION, load_default=dict)
    block_message = fields.Nested(BlockMessageSchema, load_default=lambda: BlockMessageSchema().load({}))
    # Characters of streamed text held back so a secret split across chunks is still caught.
    stream_window = fields.Integer(load_default=256, validate=validate.Range(min=16, max=8192))
    # Hard cap on held text (a PEM block is held whole up to this size).
    max_hold_chars = fields.Integer(load_default=16384, validate=validate.Range(min=256, max=1 << 20))

    @validates_schema
    def _names(self, data: Dict[str, Any], **_: Any) -> None:
        errors: Dict[str, Any] = {}
        custom = {}
        for i, spec in enumerate(data.get("custom_patterns") or ()):
            name = spec["name"]
            if name in BUILTIN_DETECTORS:
                errors.setdefault("custom_patterns", {})[i] = {"name": [f"{name!r} is a built-in detector name"]}
            elif name in custom:
                errors.setdefault("custom_patterns", {})[i] = {"name": [f"duplicate custom pattern {name!r}"]}
            custom[name] = spec.get("direction", "both")
        known = sorted(BUILTIN_DETECTORS)
        for i, name in enumerate(data.get("disabled_patterns") or ()):
            if name not in BUILTIN_DETECTORS and name not in custom:
                errors.setdefault("disabled_patterns", {})[i] = [f"unknown detector {name!r} (built-in: {known})"]
        for direction in ("upgoing", "downgoing"):
            for name in data.get(direction) or {}:
                detector = BUILTIN_DETECTORS.get(name)
                if detector is None:
                    hint = " (a custom pattern: use custom_" + direction + ")" if name in custom else ""
                    _put(errors, direction, name, f"unknown detector {name!r}{hint}; built-in: {known}")
                elif direction not in detector.directions:
                    _put(errors, direction, name, f"{name!r} only applies {'/'.join(detector.directions)}")
            key = "custom_" + direction
            for name in data.get(key) or {}:
                if name not in custom:
                    _put(errors, key, name, f"no custom pattern is named {name!r}")
                elif custom[name] not in (direction, "both"):
                    _put(errors, key, name, f"custom pattern {name!r} has direction {custom[name]!r}")
        if errors:
            raise ValidationError(errors)


def _put(errors: Dict[str, Any], key: str, name: str, message: str) -> None:
    errors.setdefault(key, {}).setdefault(name, []).append(message)


def validate_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """Load (and re-load: the output is plain data, so loading is idempotent) the options."""
    loaded: Dict[str, Any] = GuardrailOptionsSchema().load(dict(options))
    return loaded


__all__: List[str] = ["GuardrailOptionsSchema", "validate_options"]
