"""Model allowlist patterns in which only `*` is special (no `?`, no `[...]`, no case folding)."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence


def glob_match(pattern: str, name: str) -> bool:
    """True when `name` matches `pattern`; `*` is any run of characters (possibly empty).

    Written out instead of `fnmatch`, which also treats `?` and `[...]` as
    wildcards and folds case on some platforms: a model allowlist must mean
    exactly what it says.
    """
    if "*" not in pattern:
        return name == pattern
    parts = pattern.split("*")
    first, last, middle = parts[0], parts[-1], parts[1:-1]
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    pos, end = len(first), len(name) - len(last)
    for segment in middle:  # greedy left-to-right is exact when only `*` is special
        found = name.find(segment, pos, end)
        if found < 0:
            return False
        pos = found + len(segment)
    return True


def model_allowed(patterns: Optional[Sequence[str]], model: str) -> bool:
    """None (no allowlist) allows every model; an explicit empty list allows none.

    An empty list is what a caller wrote to mean "nothing" (`"models": []`, `keys create --models ''`):
    reading it as "no list" would turn the narrowest grant into the widest one.
    """
    if patterns is None:
        return True
    return any(glob_match(p, model) for p in patterns)


def valid_patterns(patterns: Iterable[object]) -> bool:
    return all(isinstance(p, str) and 0 < len(p) <= 256 for p in patterns)
