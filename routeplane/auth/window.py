"""Budget windows: the last N requests (`rounds`) or the last S seconds; None = all time (or the session)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

MAX_WINDOW = 10 ** 9
MAX_BUDGET = 10 ** 15  # a billion USD in micro-USD: anything bigger is a mistake


@dataclass(frozen=True)
class BudgetWindow:
    rounds: Optional[int] = None
    seconds: Optional[int] = None

    def to_json(self) -> Dict[str, int]:
        return {"rounds": self.rounds} if self.rounds is not None else {"seconds": int(self.seconds or 0)}

    def describe(self) -> str:
        return f"the last {self.rounds} requests" if self.rounds is not None else f"the last {self.seconds} s"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_WINDOW


def valid_budget(value: Any) -> bool:
    """A budget in micro-USD: a whole number from 0 to MAX_BUDGET (a bool is not one). The one bound for a key's
    budget and a token's `budget` claim: a key's was unbounded, and past a BIGINT the store's own error was the
    answer (`Python int too large to convert to SQLite INTEGER`, PostgreSQL's `bigint out of range`)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BUDGET


def parse_window(value: Any) -> Optional[BudgetWindow]:
    """`{"rounds": N}` or `{"seconds": S}` (exactly one key); raises ValueError."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError('budget_window must be {"rounds": N} or {"seconds": S}')
    (key, n), = value.items()
    if key not in ("rounds", "seconds") or not _positive_int(n):
        raise ValueError('budget_window must be {"rounds": N} or {"seconds": S} with a positive integer')
    return BudgetWindow(rounds=n) if key == "rounds" else BudgetWindow(seconds=n)


_CLI = re.compile(r"^(rounds|seconds):([0-9]+)$")


def parse_window_cli(text: str) -> BudgetWindow:
    """`rounds:10` or `seconds:3600` (the CLI form)."""
    m = _CLI.match(text.strip())
    if not m:
        raise ValueError("a window is rounds:N or seconds:S")
    window = parse_window({m.group(1): int(m.group(2))})
    assert window is not None
    return window
