"""Registry prices checked against a source, pinned so that a careless edit shows up, and the dated
snapshots the official SDKs name priced like their alias (a client that sends the snapshot id is
billed, not recorded as unknown).

Each pin names where it was checked; routeplane/data/providers.yaml says per provider which prices
are verified and which are not. USD per million tokens: (input, cache_read, cache_write, output).
"""

from __future__ import annotations

import re
import typing

import pytest

from routeplane.language_model.provider_registry import load_registry

# A dated snapshot id and its alias: `gpt-4.1-2025-04-14` -> `gpt-4.1`, `claude-haiku-4-5-20251001`
# -> `claude-haiku-4-5`.
SNAPSHOT = re.compile(r"^(?P<base>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2})$")
# Snapshots the vendor prices apart from their alias, left unpriced (unknown) rather than guessed:
# gpt-4o-2024-05-13 is $5 / $15 on OpenAI's sheet (gpt-4o is $2.50 / $10), its hosted-tool fees unknown.
PRICED_APART = {("openai", "gpt-4o-2024-05-13")}

PINS = {
    # OpenAI's "Text tokens, Standard" table, as copied in github.com/photiary/ai-foo
    # prompts/OpenAI-Pricing.md; a second source each: github/docs data/tables/copilot/models-and-pricing.yml
    # (gpt-4.1, gpt-5-mini), hex.pm openai_responses lib/responses/pricing.ex (gpt-4.1 family, gpt-4o),
    # simonw/llm-prices data/openai.json (gpt-4o, gpt-4o-mini), aipromptshub.co (GPT-5 cache = 10% of input).
    ("openai", "gpt-5"): (1.25, 0.125, 1.25, 10.0),
    ("openai", "gpt-5-mini"): (0.25, 0.025, 0.25, 2.0),
    ("openai", "gpt-5-nano"): (0.05, 0.005, 0.05, 0.40),
    ("openai", "gpt-4.1"): (2.0, 0.50, 2.0, 8.0),
    ("openai", "gpt-4.1-mini"): (0.40, 0.10, 0.40, 1.60),
    ("openai", "gpt-4.1-nano"): (0.10, 0.025, 0.10, 0.40),
    ("openai", "gpt-4o"): (2.50, 1.25, 2.50, 10.0),
    ("openai", "gpt-4o-mini"): (0.15, 0.075, 0.15, 0.60),
    # Anthropic's pricing page (docs.anthropic.com/en/docs/about-claude/pricing and its successor
    # platform.claude.com/docs/en/about-claude/pricing) for Opus 4.5, Opus 4.1, Sonnet 4 and Haiku 3.5;
    # the model pages platform.claude.com/docs/*/models/{sonnet-4-5,haiku-4-5}/overview for the input and
    # output of Sonnet 4.5 and Haiku 4.5, their cache prices by the page's 1.25x / 0.1x caching multipliers.
    ("anthropic", "claude-opus-4-5"): (5.0, 0.50, 6.25, 25.0),
    ("anthropic", "claude-opus-4-1"): (15.0, 1.50, 18.75, 75.0),
    ("anthropic", "claude-sonnet-4-5"): (3.0, 0.30, 3.75, 15.0),
    ("anthropic", "claude-sonnet-4-0"): (3.0, 0.30, 3.75, 15.0),
    ("anthropic", "claude-haiku-4-5"): (1.0, 0.10, 1.25, 5.0),
    ("anthropic", "claude-3-5-haiku-latest"): (0.80, 0.08, 1.0, 4.0),
    # grok-3-mini: xAI's models page as archived on 2 June 2025 (archive.fo/dYUtw).
    ("xai", "grok-3-mini"): (0.30, 0.075, 0.30, 0.50),
    # Groq: $0.15 / $0.60 in braintrustdata/braintrust-proxy issues #925 and #566 (both quoting Groq's
    # models and pricing pages) and in the aicost crate's data_groq.rs; the registry had $0.75 output.
    ("groq", "openai/gpt-oss-120b"): (0.15, None, None, 0.60),
}


@pytest.mark.parametrize("provider, model", sorted(PINS))
def test_a_verified_price_is_what_its_source_says(provider, model):
    prices = load_registry().get(provider).model_prices[model]
    assert (prices.input, prices.cache_read, prices.cache_write, prices.output) == PINS[(provider, model)]


def test_sonnet_long_context_is_billed_whole_above_200k_input_tokens():
    """Anthropic's page: more than 200K input tokens on the 1M-context Sonnet costs $6 in / $22.50 out."""
    for model in ("claude-sonnet-4-5", "claude-sonnet-4-0", "claude-sonnet-4-5-20250929"):
        prices = load_registry().get("anthropic").model_prices[model]
        at_limit, above = prices.for_input(200_000), prices.for_input(200_001)
        assert (at_limit.input, at_limit.output) == (3.0, 15.0)
        assert (above.input, above.output, above.cache_read, above.cache_write) == (6.0, 22.5, 0.6, 7.5)


def _literal_ids(annotation) -> set:
    """Every string of a `Literal[...]` (nested in a Union or not): an SDK's list of model ids."""
    out = set()
    for arg in typing.get_args(annotation):
        if isinstance(arg, str):
            out.add(arg)
        else:
            out |= _literal_ids(arg)
    return out


def _sdk_models():
    from anthropic.types.model import Model
    from openai.types.shared.chat_model import ChatModel

    return {"openai": _literal_ids(ChatModel), "anthropic": _literal_ids(Model)}


def test_every_sdk_snapshot_of_a_priced_alias_is_priced_as_the_alias():
    registry = load_registry()
    unpriced, apart = [], []
    for provider, ids in _sdk_models().items():
        prices = registry.get(provider).model_prices
        for model in sorted(ids):
            m = SNAPSHOT.match(model)
            if not m or m.group("base") not in prices or (provider, model) in PRICED_APART:
                continue
            if model not in prices:
                unpriced.append(f"{provider}:{model}")
            elif prices[model] != prices[m.group("base")]:
                apart.append(f"{provider}:{model}")
    assert unpriced == [] and apart == []


def test_a_snapshot_priced_apart_by_the_vendor_stays_unknown():
    assert "gpt-4o-2024-05-13" not in load_registry().get("openai").model_prices
