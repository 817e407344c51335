"""A thinking budget becomes the same effort on every wire (translation.md's effort→budget table, inverted)."""

from __future__ import annotations

import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols import gemini, openai_responses
from routeplane.protocols.anthropic_messages.request import decode_request as decode_anthropic
from routeplane.protocols.base import effort_for_budget

BUDGETS = [(1024, "minimal"), (1025, "low"), (2048, "low"), (4096, "medium"), (8192, "medium"), (8193, "high"),
           (32000, "high"), (100000, "high")]


@pytest.mark.parametrize("budget,effort", BUDGETS)
def test_an_anthropic_and_a_gemini_budget_give_the_same_effort(budget: int, effort: str) -> None:
    anthropic = decode_anthropic({"model": "m", "max_tokens": budget + 1000, "messages": [{"role": "user", "content": "x"}],
                                  "thinking": {"type": "enabled", "budget_tokens": budget}})
    google = gemini.CLIENT.for_path("m", False).decode_request({
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": budget}}})
    assert anthropic.params.reasoning_effort == google.params.reasoning_effort == effort


@pytest.mark.parametrize("budget,effort", BUDGETS)
def test_a_responses_upstream_hears_that_effort(budget: int, effort: str) -> None:
    prompt = decode_anthropic({"model": "m", "max_tokens": budget + 1000, "messages": [{"role": "user", "content": "x"}],
                               "thinking": {"type": "enabled", "budget_tokens": budget}})
    target = RoutingTarget("r", "gpt-x", "openai_responses", base_url="http://up", api_key="sk-x")
    body = openai_responses.PROVIDER.encode_request(prompt, target, stream=False)
    assert body["reasoning"]["effort"] == effort


def test_no_budget_is_no_thinking() -> None:
    assert effort_for_budget(0) == "none" and effort_for_budget(-5) == "none"
