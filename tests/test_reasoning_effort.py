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


# --- efforts a model accepts (providers.<id>.options.reasoning_efforts) ---------------------------

O_SERIES = {"o3": ["low", "medium", "high"], "o4-mini*": ["low", "medium", "high"], "o4-mini-high*": ["high"],
            "tiny": ["minimal", "medium"]}


@pytest.mark.parametrize("model,asked,sent", [
    ("o3", "minimal", "low"), ("o3", "none", "low"), ("o3", "low", "low"), ("o3", "high", "high"),
    ("o3", "xhigh", "high"),  # nothing above: the highest accepted
    ("o4-mini-2025-04-16", "minimal", "low"),  # a prefix
    ("o4-mini-high-x", "low", "high"),  # the longest prefix wins
    ("tiny", "low", "medium"), ("tiny", "none", "minimal"),
    ("gpt-5", "minimal", "minimal"),  # a model the table does not name: as asked
    ("o3", "turbo", "turbo"),  # an effort the gateway does not know: as asked (the upstream judges)
])
def test_an_effort_the_model_refuses_becomes_the_nearest_it_accepts(model: str, asked: str, sent: str) -> None:
    from routeplane.protocols.base import effort_for_target

    target = RoutingTarget("openai", model, "openai_chat", options={"reasoning_efforts": O_SERIES})
    assert effort_for_target(asked, target) == sent


@pytest.mark.parametrize("model,asked,sent", [
    ("gpt-5", "none", "minimal"), ("gpt-5-2025-08-07", "max", "high"), ("gpt-5-mini", "xhigh", "high"),
    ("gpt-5.1", "minimal", "low"), ("gpt-5.1", "max", "high"), ("gpt-5.1", "none", "none"),
    ("gpt-5.2", "max", "xhigh"), ("gpt-5.2-2025-12-11", "none", "none"), ("gpt-5-pro", "low", "high"),
    ("gpt-5.1-codex", "max", "max"),  # not named: as asked
])
def test_the_shipped_registry_names_the_gpt5_efforts(model: str, asked: str, sent: str) -> None:
    """An Anthropic client's "max" effort (or a Gemini client's "none") reached gpt-5 models as asked,
    and every one of them answers 400 to it."""
    from routeplane.language_model.provider_registry import load_registry
    from routeplane.protocols.base import effort_for_target

    options = load_registry().get("openai").options
    target = RoutingTarget("openai", model, "openai_responses", options=options)
    assert effort_for_target(asked, target) == sent


def test_an_anthropic_client_small_budget_reaches_o3_as_an_effort_it_accepts(gateway_process, upstream) -> None:
    """o3 and o4-mini answer 400 to "minimal", which every thinking budget <= 1024 used to become.
    The shipped registry names their efforts; a config's table adds to it."""
    import anthropic

    from tests.support.upstream import Reply, openai_completion

    upstream.default = lambda req: Reply.json(openai_completion("ok"))
    gw = gateway_process({
        "providers": {"openai": {"base_url": upstream.url + "/v1", "api_key": "sk-up",
                                 "options": {"reasoning_efforts": {"house-model": ["high"]}}}},
        "models": {"o3": {"targets": [{"provider": "openai", "model": "o3"}]},
                   "house": {"targets": [{"provider": "openai", "model": "house-model"}]},
                   "gpt": {"targets": [{"provider": "openai", "model": "gpt-5"}]}},
    })
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)
    sent = []
    for model in ("o3", "house", "gpt"):
        client.messages.create(model=model, max_tokens=3000, messages=[{"role": "user", "content": "x"}],
                               thinking={"type": "enabled", "budget_tokens": 1024})
        sent.append((upstream.requests[-1].json["model"], upstream.requests[-1].json["reasoning_effort"]))
    assert sent == [("o3", "low"), ("house-model", "high"), ("gpt-5", "minimal")]


def test_a_malformed_efforts_table_is_a_config_error(tmp_path) -> None:
    from routeplane.config import ConfigError, load_config

    path = tmp_path / "routeplane.yaml"
    path.write_text("providers:\n  openai:\n    api_key: sk-x\n    options:\n"
                    "      reasoning_efforts: {o3: [low, ludicrous]}\n"
                    "models:\n  m: {targets: [{provider: openai, model: o3}]}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    assert "reasoning_efforts" in str(exc.value)
