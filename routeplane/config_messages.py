"""How a config's schema problems read in `routeplane check`: the key meant, the shape expected, the type given.

marshmallow's own words ("Unknown field.", "_schema: Invalid input type.", "Not a valid string.") name neither
the key an operator probably meant nor what was written instead. Values are described by their type only,
never echoed: the file may hold a secret where a mapping was expected.
"""

from __future__ import annotations

import difflib
from typing import Any, List, Optional, Tuple

from marshmallow import Schema, fields

_MISSING = object()
_TYPE_MESSAGES = ("Not a valid string.", "Not a valid integer.", "Not a valid number.", "Not a valid boolean.")


def problem_lines(messages: Any, raw: Any, schema: Schema) -> List[str]:
    """`key.path: message` lines for marshmallow's `messages`, checked against the `raw` tree that failed."""
    lines = []
    for parts, message in leaves(messages, []):
        parts, message = _reworded(parts, message, raw, schema)
        lines.append(f"{'.'.join(parts)}: {message}")
    return lines


def leaves(messages: Any, parts: List[str]) -> List[Tuple[List[str], str]]:
    """(key path, message) pairs of marshmallow's nested error messages."""
    if isinstance(messages, dict):
        out: List[Tuple[List[str], str]] = []
        for key, value in messages.items():
            if isinstance(value, dict) and isinstance(value.get("value"), (dict, list)):
                value = value["value"]  # a Dict field nests its values' errors under "value"
            out.extend(leaves(value, parts + [str(key)]))
        return out
    if isinstance(messages, list):
        return [leaf for m in messages for leaf in (leaves(m, parts) if isinstance(m, (dict, list))
                                                    else [(parts, str(m))])]
    return [(parts, str(messages))]


def _reworded(parts: List[str], message: str, raw: Any, schema: Schema) -> Tuple[List[str], str]:
    if parts and parts[-1] == "_schema":  # a problem of the mapping as a whole, not of a key named _schema
        parts = parts[:-1]
        if message == "Invalid input type.":
            return parts, f"expected {_shape(_schema_at(schema, parts))}, got {_kind(_value_at(raw, parts))}."
    elif message == "Unknown field." and parts:
        known = _schema_at(schema, parts[:-1])
        close = difflib.get_close_matches(parts[-1], list(known.fields) if known else [], n=1, cutoff=0.7)
        if close:
            return parts, f"Unknown field; did you mean {close[0]!r}?"
    elif message in _TYPE_MESSAGES:
        value = _value_at(raw, parts)
        if value is not _MISSING:
            quote = "; write it in quotes" if message == _TYPE_MESSAGES[0] and not isinstance(value, (dict, list)) else ""
            return parts, f"{message[:-1]}: got {_kind(value)}{quote}."
    return parts, message


def _schema_at(schema: Schema, parts: List[str]) -> Optional[Schema]:
    """The schema of the mapping at `parts`, following nested schemas, dict values and list items."""
    node: Any = schema
    for part in parts:
        if isinstance(node, Schema):
            node = node.fields.get(part)
        elif isinstance(node, fields.Dict):
            node = node.value_field  # `part` is one of the dict's keys
        elif isinstance(node, fields.List):
            node = node.inner  # `part` is an index
        else:
            return None
        if isinstance(node, fields.Nested):
            node = node.schema
    return node if isinstance(node, Schema) else None


def _value_at(raw: Any, parts: List[str]) -> Any:
    for part in parts:
        if isinstance(raw, dict):
            raw = next((v for k, v in raw.items() if str(k) == part), _MISSING)
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return _MISSING
    return raw


def _shape(schema: Optional[Schema]) -> str:
    if schema is None:
        return "a mapping (key: value)"
    required = [name for name, f in schema.fields.items() if f.required]
    if required:
        return "a mapping like {" + ", ".join(f"{name}: …" for name in required) + "}"
    if len(schema.fields) <= 4:
        return "a mapping of " + " / ".join(schema.fields)
    return "a mapping (key: value)"


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "something else"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else "nothing (null)"
