"""The shipped price registry is internally consistent: units, cache and output ratios, long-context
tiers, per-call fees, dated snapshots priced as their alias, OpenRouter mirrors and doc examples.

`registry_problems` reads the registry as `parse_registry` does and names every inconsistency; the
tests below run it on the shipped file and, rule by rule, on small registries that break one rule.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Dict, List, Mapping

import pytest
import yaml

from routeplane.language_model.provider_registry import load_registry, parse_registry
from routeplane.language_model.routing import Prices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN_FIELDS = ("input", "cache_read", "cache_write", "output", "reasoning")
# USD per million tokens. Below this a non-zero price is almost surely USD per token (or per 1K).
SMALLEST_PLAUSIBLE = 0.001
LARGEST_PLAUSIBLE = 200.0
# USD per call; a fee above this was most likely written per 1,000 calls.
LARGEST_PER_CALL = 1.0
# Anthropic's pricing page: a 5-minute cache write costs 1.25x the base input price, on every model.
CACHE_WRITE_FACTOR = {"anthropic": 1.25}
# A dated snapshot (`-20250929`, `-2025-04-14`) or a Gemini stable version (`-001`) and the alias it
# pins: the alias itself, Anthropic's `-0` form (claude-sonnet-4-0) or a `-latest` one.
SNAPSHOT = re.compile(r"^(?P<base>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2}|\d{3})$")
# OpenRouter ids `vendor/model` and the registry provider that sells the same model first-hand.
OPENROUTER_VENDORS = {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}


def _effective(prices: Prices) -> Dict[str, float]:
    """The prices a request is billed at: an unset cache price falls back to the input price, so
    only a cache-read price set on purpose is kept (it must then be a discount)."""
    out = {k: getattr(prices, k) for k in ("input", "output", "cache_read") if getattr(prices, k) is not None}
    if prices.input is not None:
        out["cache_write"] = prices.cache_write if prices.cache_write is not None else prices.input
    return out


def _ratio_problems(where: str, pid: str, p: Dict[str, float]) -> List[str]:
    out = []
    if "input" in p and p["input"] > 0:
        if "cache_read" in p and p["cache_read"] >= p["input"]:
            out.append(f"{where}: cache_read {p['cache_read']} not below input {p['input']}")
        if p["cache_write"] < p["input"]:
            out.append(f"{where}: cache_write {p['cache_write']} below input {p['input']}")
        factor = CACHE_WRITE_FACTOR.get(pid)
        if factor and not math.isclose(p["cache_write"], p["input"] * factor, rel_tol=1e-9):
            out.append(f"{where}: cache_write {p['cache_write']} is not {factor} x input {p['input']}")
    if "input" in p and "output" in p and p["output"] < p["input"]:
        out.append(f"{where}: output {p['output']} below input {p['input']}")
    return out


def _value_problems(where: str, entry: Mapping[str, Any]) -> List[str]:
    out = []
    for k in TOKEN_FIELDS:
        v = entry.get(k)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            out.append(f"{where}.{k}: {v!r} is not a non-negative number")
        elif v and not SMALLEST_PLAUSIBLE <= v <= LARGEST_PLAUSIBLE:
            out.append(f"{where}.{k}: {v} is not plausible in USD per million tokens")
    for kind, fee in (entry.get("per_call") or {}).items():
        if not isinstance(fee, (int, float)) or not 0 <= fee <= LARGEST_PER_CALL:
            out.append(f"{where}.per_call.{kind}: {fee!r} is not a fee in USD per call")
    return out


def _tier_problems(where: str, pid: str, entry: Mapping[str, Any], base: Prices) -> List[str]:
    out = []
    last = 0
    for i, tier in enumerate(entry.get("tiers") or ()):
        at = f"{where}.tiers.{i}"
        above = tier.get("above_input_tokens")
        if not isinstance(above, int) or isinstance(above, bool) or above <= 0:
            out.append(f"{at}.above_input_tokens: {above!r} is not a positive token count")
            continue
        if above <= last:
            out.append(f"{at}.above_input_tokens: {above} does not rise above the tier before ({last})")
        last = above
        out += _value_problems(at, tier)
        priced = base.for_input(above + 1)
        for k in TOKEN_FIELDS:
            if tier.get(k) is not None and getattr(base, k) is not None and tier[k] < getattr(base, k):
                out.append(f"{at}.{k}: {tier[k]} below the base {getattr(base, k)} (a long context never costs less)")
        out += _ratio_problems(at, pid, _effective(priced))
    return out


def _snapshot_problems(pid: str, prices: Mapping[str, Prices]) -> List[str]:
    out = []
    for model, p in prices.items():
        m = SNAPSHOT.match(model)
        if not m:
            continue
        base = m.group("base")
        aliases = [a for a in (base, f"{base}-0", f"{base}-latest") if a in prices and a != model]
        if not aliases:
            out.append(f"{pid}.{model}: a snapshot whose alias is not in the registry")
        for alias in aliases:
            if prices[alias] != p:
                out.append(f"{pid}.{model}: priced apart from its alias {alias}")
    return out


def _openrouter_problems(registry: Mapping[str, Mapping[str, Prices]]) -> List[str]:
    out = []
    for model, p in registry.get("openrouter", {}).items():
        vendor, _, name = model.partition("/")
        first_hand = registry.get(OPENROUTER_VENDORS.get(vendor, ""), {})
        twin = next((first_hand[n] for n in (name, name.replace(".", "-")) if n in first_hand), None)
        if twin is None:
            continue
        for k in ("input", "cache_read", "cache_write", "output"):
            if getattr(twin, k) != getattr(p, k):
                out.append(f"openrouter.{model}.{k}: {getattr(p, k)} but {vendor} sells it at {getattr(twin, k)}")
    return out


def registry_problems(raw: Mapping[str, Any]) -> List[str]:
    """Every internal inconsistency of a registry document (the shape of routeplane/data/providers.yaml)."""
    problems: List[str] = []
    parsed = parse_registry(raw)
    for pid, entry in (raw.get("providers") or {}).items():
        hosted = entry.get("key_env") is not None
        problems += _value_problems(f"{pid}.per_call", {"per_call": entry.get("per_call")})
        for model, price in (entry.get("models") or {}).items():
            where = f"{pid}.{model}"
            price = price or {}
            if hosted and (price.get("input") is None or price.get("output") is None):
                problems.append(f"{where}: a hosted chat model needs both an input and an output price")
            problems += _value_problems(where, price)
            parsed_prices = parsed.providers[pid].model_prices[model]
            problems += _ratio_problems(where, pid, _effective(parsed_prices))
            problems += _tier_problems(where, pid, price, parsed_prices)
        problems += _snapshot_problems(pid, parsed.providers[pid].model_prices)
    problems += _openrouter_problems({pid: spec.model_prices for pid, spec in parsed.providers.items()})
    return problems


def _shipped() -> Dict[str, Any]:
    with open(os.path.join(ROOT, "routeplane", "data", "providers.yaml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_the_shipped_registry_has_no_internal_inconsistency():
    assert registry_problems(_shipped()) == []


def _one(pid: str = "openai", key_env: Any = "KEY", **models: Any) -> Dict[str, Any]:
    return {"providers": {pid: {"protocol": "openai_chat", "key_env": key_env, "models": models}}}


@pytest.mark.parametrize("raw, expected", [
    (_one(m={"input": 1.0, "cache_read": 1.5, "output": 2.0}), "cache_read 1.5 not below input 1.0"),
    (_one(m={"input": 1.0, "cache_read": 1.0, "output": 2.0}), "cache_read 1.0 not below input 1.0"),
    (_one(m={"input": 1.0, "cache_write": 0.5, "output": 2.0}), "cache_write 0.5 below input 1.0"),
    (_one(m={"input": 2.0, "output": 1.0}), "output 1.0 below input 2.0"),
    (_one(m={"input": 1.0}), "needs both an input and an output price"),
    (_one(m={"input": 0.000002, "output": 0.000008}), "not plausible in USD per million tokens"),
    (_one(m={"input": -1.0, "output": 1.0}), "not a non-negative number"),
    (_one(m={"input": 1.0, "output": 2.0, "per_call": {"web_search": 10}}), "not a fee in USD per call"),
    (_one("anthropic", m={"input": 3.0, "cache_read": 0.3, "cache_write": 3.0, "output": 15.0}),
     "cache_write 3.0 is not 1.25 x input 3.0"),
    (_one(m={"input": 1.0, "output": 2.0, "tiers": [{"above_input_tokens": 0, "input": 2.0}]}),
     "is not a positive token count"),
    (_one(m={"input": 1.0, "output": 2.0, "tiers": [{"above_input_tokens": 200000, "input": 2.0},
                                                     {"above_input_tokens": 200000, "input": 3.0}]}),
     "does not rise above the tier before"),
    (_one(m={"input": 1.0, "output": 2.0, "tiers": [{"above_input_tokens": 200000, "input": 0.5}]}),
     "below the base 1.0"),
    (_one(m={"input": 1.0, "cache_read": 0.1, "output": 2.0,
             "tiers": [{"above_input_tokens": 200000, "input": 2.0, "output": 4.0}]}), None),
    (_one(**{"gpt-x": {"input": 1.0, "output": 2.0}, "gpt-x-2025-04-14": {"input": 1.0, "output": 3.0}}),
     "priced apart from its alias gpt-x"),
    (_one(**{"claude-x-4-0": {"input": 1.0, "output": 2.0}, "claude-x-4-20250514": {"input": 2.0, "output": 2.0}}),
     "priced apart from its alias claude-x-4-0"),
    (_one(**{"gpt-y-2025-04-14": {"input": 1.0, "output": 2.0}}), "alias is not in the registry"),
])
def test_each_rule_catches_its_inconsistency(raw, expected):
    problems = registry_problems(raw)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_an_openrouter_mirror_priced_apart_from_the_vendor_is_caught():
    raw = {"providers": {
        "anthropic": {"protocol": "anthropic_messages", "key_env": "K", "models": {
            "claude-z-4-5": {"input": 3.0, "cache_read": 0.3, "cache_write": 3.75, "output": 15.0}}},
        "openrouter": {"protocol": "openai_chat", "key_env": "K", "models": {
            "anthropic/claude-z-4.5": {"input": 3.0, "cache_read": 0.3, "cache_write": 3.75, "output": 16.0}}}}}
    assert registry_problems(raw) == ["openrouter.anthropic/claude-z-4.5.output: 16.0 but anthropic sells it at 15.0"]


def _doc_references() -> List[tuple]:
    """(provider, model) pairs named by the README and docs examples: `{provider: p, model: m}` targets
    and `provider:model` direct names."""
    found = []
    paths = [os.path.join(ROOT, "README.md")] + [
        os.path.join(ROOT, "docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs"))) if f.endswith(".md")]
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        found += re.findall(r"provider: *([\w-]+), *model: *([\w./-]+)", text)
        found += re.findall(r"`([a-z_]+):([\w./-]+)`", text)
    return found


def test_every_registry_model_the_docs_name_is_in_the_registry():
    registry = load_registry()
    refs = [(p, m) for p, m in _doc_references() if registry.get(p) is not None and registry.get(p).model_prices]
    assert refs, "the docs name no registry model: the pattern above no longer matches them"
    missing = [(p, m) for p, m in refs if m not in registry.get(p).model_prices]
    assert missing == []
