"""Compiled rules per direction, finding matches in text, and applying redactions."""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .detectors import BUILTIN_DETECTORS, DOWNGOING, UPGOING, Rule, fold

log = logging.getLogger("routeplane.guardrails")

WARN, REDACT, BLOCK = "warn", "redact", "block"
ACTIONS = (WARN, REDACT, BLOCK)


@dataclass(frozen=True)
class Finding:
    """One match: absolute offsets of the match and of the part that redaction replaces. Never the text."""

    detector: str
    action: str
    start: int
    end: int
    red_start: int
    red_end: int
    placeholder: str
    rule: Rule


@dataclass(frozen=True)
class DirectionRules:
    direction: str
    rules: Tuple[Tuple[Rule, str], ...]

    @property
    def holds(self) -> bool:
        """Streams are held back only when something may be rewritten or stopped; warn never delays a byte."""
        return any(action != WARN for _rule, action in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def without_redaction(self) -> "DirectionRules":
        """For reasoning: its provider signature covers the text, so it may be stopped but never rewritten."""
        return DirectionRules(self.direction, tuple((r, WARN if a == REDACT else a) for r, a in self.rules))

    def redaction_as_block(self) -> "DirectionRules":
        """For names (tools, tool calls, messages): a name cannot be rewritten, so what should not pass is stopped."""
        return DirectionRules(self.direction, tuple((r, BLOCK if a == REDACT else a) for r, a in self.rules))


@dataclass(frozen=True)
class BlockMessage:
    include_details: bool = True
    include_help_link: bool = False
    help_url: Optional[str] = None

    def render(self, direction: str, findings: Sequence[Finding], where: str) -> str:
        what = "request" if direction == UPGOING else "response"
        msg = f"The {what} was blocked by a guardrail"
        if self.include_details:
            names = ", ".join(sorted({f.detector for f in findings}))
            msg += f" ({names} in {where})"
        msg += "."
        if self.include_help_link and self.help_url:
            msg += f" See {self.help_url}"
        return msg


@dataclass(frozen=True)
class RuleSet:
    """Everything the hooks need, compiled once at start-up and shared read-only by every request."""

    upgoing: DirectionRules
    downgoing: DirectionRules
    block_message: BlockMessage = BlockMessage()
    stream_window: int = 256
    max_hold_chars: int = 16384
    context_chars: int = 64

    def direction(self, name: str) -> DirectionRules:
        return self.upgoing if name == UPGOING else self.downgoing


def compile_rules(options: Mapping) -> RuleSet:
    """Build the RuleSet from validated options (see `options.GuardrailOptionsSchema`)."""
    disabled = set(options.get("disabled_patterns") or ())
    custom: List[Tuple[str, str, Tuple[str, ...]]] = []
    for spec in options.get("custom_patterns") or ():
        direction = spec.get("direction", "both")
        dirs = (UPGOING, DOWNGOING) if direction == "both" else (direction,)
        custom.append((spec["name"], spec["regex"], dirs))

    def for_direction(direction: str, actions: Mapping[str, str], custom_actions: Mapping[str, str]) -> DirectionRules:
        rules: List[Tuple[Rule, str]] = []
        for name, detector in BUILTIN_DETECTORS.items():
            if name in disabled or direction not in detector.directions:
                continue
            action = actions.get(name, WARN)  # an unlisted detector is live in warn mode
            rules.extend((rule, action) for rule in detector.rules)
        for name, regex, dirs in custom:
            if name in disabled or direction not in dirs:
                continue
            rules.append((Rule(name, name, re.compile(regex)), custom_actions.get(name, WARN)))
        return DirectionRules(direction, tuple(rules))

    bm = options.get("block_message") or {}
    return RuleSet(
        upgoing=for_direction(UPGOING, options.get("upgoing") or {}, options.get("custom_upgoing") or {}),
        downgoing=for_direction(DOWNGOING, options.get("downgoing") or {}, options.get("custom_downgoing") or {}),
        block_message=BlockMessage(bm.get("include_details", True), bm.get("include_help_link", False),
                                   bm.get("help_url")),
        stream_window=options.get("stream_window", 256),
        max_hold_chars=options.get("max_hold_chars", 16384),
    )


def candidates(rules: DirectionRules, texts: Sequence[str]) -> DirectionRules:
    """The rules whose cheap pre-checks pass on any of `texts`, checked once on all of them.

    The pre-checks (literal triggers, a prefilter) only say "may match": one
    passing on one text passes on the texts joined, so scanning each text
    with these rules finds exactly what scanning it with all of them finds.
    """
    folded = fold("\n".join(texts))
    return DirectionRules(rules.direction, tuple((r, a) for r, a in rules.rules if r.may_match("", folded)))


def find(text: str, rules: DirectionRules, offset: int = 0) -> List[Finding]:
    """Every validated match in `text`, positions shifted by `offset`, ordered by start."""
    out: List[Finding] = []
    folded = fold(text)
    for rule, action in rules.rules:
        if not rule.may_match(text, folded):
            continue
        group = rule.secret_group
        for m in rule.pattern.finditer(text):
            if m.end() == m.start() or (rule.validate is not None and not rule.validate(text, m)):
                continue
            rs, re_ = (m.span(group) if group and m.group(group) is not None else m.span())
            out.append(Finding(rule.detector, action, m.start() + offset, m.end() + offset, rs + offset,
                               re_ + offset, f"[REDACTED:{rule.placeholder}]", rule))
    out.sort(key=lambda f: (f.start, -f.end))
    return out


def redact(text: str, spans: Iterable[Tuple[int, int, str]], offset: int = 0,
           edits: Optional[List[Tuple[int, int, int]]] = None) -> str:
    """Replace (start, end, placeholder) spans, given in absolute offsets; overlapping spans merge into one.

    `edits`: gets each replacement made, as (start, end, placeholder length) in absolute offsets, in order
    (for annotations that index the text, see `offsets`)."""
    merged: List[List] = []
    # The span that starts first (the longer one on a tie) names the merged placeholder.
    for s, e, ph in sorted(spans, key=lambda sp: (sp[0], -sp[1])):
        s, e = max(s - offset, 0), min(e - offset, len(text))
        if e <= s:
            continue
        if merged and s < merged[-1][1]:  # adjacent matches keep a placeholder each
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e, ph])
    if edits is not None:
        edits.extend((s + offset, e + offset, len(ph)) for s, e, ph in merged)
    out, pos = [], 0
    for s, e, ph in merged:
        out.append(text[pos:s])
        out.append(ph)
        pos = e
    out.append(text[pos:])
    return "".join(out)


class Stats:
    """Thread-safe counters per (direction, detector, action); gunicorn threads share one plugin object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def add(self, direction: str, detector: str, action: str) -> None:
        with self._lock:
            self._counts[(direction, detector, action)] += 1

    def snapshot(self) -> Dict[str, Dict[str, Dict[str, int]]]:
        with self._lock:
            items = list(self._counts.items())
        out: Dict[str, Dict[str, Dict[str, int]]] = {}
        for (direction, detector, action), n in sorted(items):
            out.setdefault(direction, {}).setdefault(detector, {})[action] = n
        return out


@dataclass
class Reporter:
    """Counts and logs findings for one request; the log names detector and position, never the text."""

    stats: Stats
    request_id: str
    per_request: Dict[str, int] = field(default_factory=dict)

    def report(self, direction: str, finding: Finding, where: str) -> None:
        self.stats.add(direction, finding.detector, finding.action)
        key = f"{direction}.{finding.detector}.{finding.action}"
        self.per_request[key] = self.per_request.get(key, 0) + 1
        level = logging.WARNING if finding.action != REDACT else logging.INFO
        log.log(level, "guardrail %s: %s %s in %s at chars %d-%d (request %s)", finding.action, direction,
                finding.detector, where, finding.start, finding.end, self.request_id)
