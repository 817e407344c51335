"""JSON Schema ⇄ Gemini's OpenAPI-subset `Schema` (used only for the legacy `parameters` field)."""

from __future__ import annotations

from typing import Any, Dict, List

# Keywords Gemini's `Schema` message knows; anything else is a 400 upstream.
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties", "required",
    "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
    "default", "items", "minimum", "maximum",
})
# Gemini accepts only these string formats.
_FORMATS = frozenset({"enum", "date-time"})


def strip_meta(schema: Dict[str, Any]) -> Dict[str, Any]:
    """For `parametersJsonSchema` / `responseJsonSchema`: real JSON Schema, minus the `$schema` header."""
    return {k: v for k, v in schema.items() if k != "$schema"}


def clean_for_gemini(schema: Any, defs: Any = None) -> Any:
    """A JSON Schema as the OpenAPI subset Gemini's `parameters` accepts: local
    `$ref`s inlined, `type: [X, "null"]` → nullable, unknown keywords dropped."""
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        name = ref.rsplit("/", 1)[-1]
        if name in defs:
            return clean_for_gemini({**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}},
                                    {k: v for k, v in defs.items() if k != name})  # no infinite recursion
    out: Dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        types = [t for t in kind if t != "null"]
        if len(types) < len(kind):
            out["nullable"] = True
        kind = types[0] if types else "string"
    if isinstance(kind, str):
        out["type"] = kind.upper()
    if "const" in schema:
        out["enum"] = [schema["const"]]
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS or key == "type":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: clean_for_gemini(v, defs) for k, v in value.items()}
        elif key == "items":
            out[key] = clean_for_gemini(value, defs)
        elif key == "anyOf" and isinstance(value, list):
            variants = [v for v in value if not (isinstance(v, dict) and v.get("type") == "null")]
            if len(variants) < len(value):
                out["nullable"] = True
            if len(variants) == 1:
                out.update(clean_for_gemini(variants[0], defs))
            else:
                out[key] = [clean_for_gemini(v, defs) for v in variants]
        elif key == "format":
            if value in _FORMATS:
                out[key] = value
        elif key == "enum" and isinstance(value, list):
            out[key] = [str(v) for v in value]  # Gemini enums are strings
        else:
            out[key] = value
    if out.get("type") == "OBJECT" and isinstance(out.get("required"), list):
        props = out.get("properties") or {}
        out["required"] = [r for r in out["required"] if r in props]
    return out


# Gemini `Schema` field → JSON Schema keyword. google-genai serialises `types.Schema` with its
# snake_case field names (`any_of`, `max_items`, `property_ordering`, `ref`, `defs`, ...), which
# the proto3-JSON parser accepts; REST samples use lowerCamelCase. Both spellings map here.
_SCHEMA_FIELDS = {
    "any_of": "anyOf", "max_items": "maxItems", "min_items": "minItems", "max_length": "maxLength",
    "min_length": "minLength", "max_properties": "maxProperties", "min_properties": "minProperties",
    "additional_properties": "additionalProperties", "defs": "$defs", "ref": "$ref",
    "property_ordering": "propertyOrdering",
}


def from_gemini_schema(schema: Any) -> Any:
    """Gemini `Schema` (upper-case types, nullable, either key spelling) → JSON Schema."""
    if isinstance(schema, list):
        return [from_gemini_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: Dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = _SCHEMA_FIELDS.get(raw_key, raw_key)
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key in ("nullable", "propertyOrdering"):
            continue
        elif key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {k: from_gemini_schema(v) for k, v in value.items()}  # names stay as they are
        elif key in ("items", "anyOf") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = from_gemini_schema(value)
        else:
            out[key] = value
    if schema.get("nullable"):
        if isinstance(out.get("type"), str):
            types: List[str] = [out["type"], "null"]
            out["type"] = types
        elif isinstance(out.get("anyOf"), list):
            out["anyOf"] = out["anyOf"] + [{"type": "null"}]
    return out
