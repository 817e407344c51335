"""The shipped provider registry: its data, env activation, config inheritance and overrides."""

from __future__ import annotations

import pytest

from routeplane.config import ConfigError, parse_config
from routeplane.language_model.provider_registry import load_registry
from routeplane.language_model.routing import PROTOCOLS
from routeplane.language_model.url_safety import URLPolicy, check_base_url

WELL_KNOWN = ("openai", "anthropic", "gemini", "openrouter", "deepseek", "groq", "together", "mistral", "xai",
              "ollama", "vllm", "openai_compatible")


def route_to(provider: str, model: str = "x") -> dict:
    return {"models": {"m": {"targets": [{"provider": provider, "model": model}]}}}


def test_registry_data_is_complete_and_sane():
    reg = load_registry()
    assert set(WELL_KNOWN) <= set(reg.providers)
    assert reg.prices_checked and reg.prices_checked != "unknown"
    for pid, spec in reg.providers.items():
        assert spec.protocol in PROTOCOLS, pid
        assert spec.auth_header, pid
        if spec.base_url is not None:
            check_base_url(spec.base_url, URLPolicy())  # the shipped defaults pass the URL policy
        for model, prices in spec.model_prices.items():
            assert prices.input is not None and prices.output is not None, (pid, model)
            for value in (prices.input, prices.cache_read, prices.cache_write, prices.output):
                assert value is None or 0 <= value < 200, (pid, model)
            if prices.cache_read is not None:
                assert prices.cache_read <= prices.input, (pid, model)  # a cache hit never costs more
    assert reg.get("anthropic").auth_header == "x-api-key"
    assert reg.get("gemini").auth_header == "x-goog-api-key"
    assert reg.get("ollama").key_env is None and reg.get("openai_compatible").base_url is None


def test_a_key_env_var_turns_a_registry_provider_on():
    cfg = parse_config({"providers": {}, **route_to("deepseek", "deepseek-chat")}, "f.yaml",
                       env={"DEEPSEEK_API_KEY": "sk-ds"})
    [t] = cfg.routes[0].targets
    assert (t.protocol, t.base_url, t.api_key) == ("openai_chat", "https://api.deepseek.com/v1", "sk-ds")
    assert t.prices.input == 0.28 and t.prices.cache_read == 0.028
    assert "openai" not in cfg.providers  # its key is not set


def test_a_route_to_an_inactive_registry_provider_says_which_variable_to_set():
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {}, **route_to("mistral")}, "f.yaml", env={})
    assert "models.m.targets.0.provider" in str(info.value) and "MISTRAL_API_KEY" in str(info.value)


def test_config_overrides_registry_fields_one_by_one():
    raw = {"providers": {"anthropic": {"api_key": "sk-cfg", "timeouts": {"read": 600},
                                       "model_prices": {"claude-sonnet-4-5": {"input": 2.7}}}},
           "timeouts": {"connect": 3},
           **route_to("anthropic", "claude-sonnet-4-5")}
    cfg = parse_config(raw, "f.yaml", env={"ANTHROPIC_API_KEY": "sk-env"})
    [t] = cfg.routes[0].targets
    assert t.protocol == "anthropic_messages" and t.base_url == "https://api.anthropic.com"
    assert t.api_key == "sk-cfg"  # config wins over the env var
    assert (t.timeouts.connect, t.timeouts.read, t.timeouts.total) == (3.0, 600.0, None)
    assert (t.prices.input, t.prices.output, t.prices.cache_write) == (2.7, 15.0, 3.75)


def test_extends_and_enabled_false():
    raw = {"providers": {"openai-eu": {"extends": "openai", "base_url": "https://eu.example.com/v1",
                                       "api_key": "sk-eu"},
                         "groq": {"enabled": False}},
           **route_to("openai-eu", "gpt-4.1")}
    cfg = parse_config(raw, "f.yaml", env={"GROQ_API_KEY": "gsk"})
    [t] = cfg.routes[0].targets
    assert (t.provider, t.protocol, t.base_url, t.prices.output) == ("openai-eu", "openai_chat",
                                                                       "https://eu.example.com/v1", 8.0)
    assert t.auth_header == "Authorization" and t.auth_prefix == "Bearer "
    assert "groq" not in cfg.providers  # disabled although its key is set
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"x": {"extends": "nope"}}, **route_to("x")}, "f.yaml", env={})
    assert "providers.x.extends" in str(info.value)


def test_local_servers_need_configuring_and_openai_compatible_needs_a_base_url():
    cfg = parse_config({"providers": {"ollama": {}}, **route_to("ollama", "llama3.2")}, "f.yaml", env={})
    [t] = cfg.routes[0].targets
    assert t.base_url == "http://127.0.0.1:11434/v1" and t.prices.input == 0 and t.prices.output == 0
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"openai_compatible": {}}, **route_to("openai_compatible")}, "f.yaml", env={})
    assert "providers.openai_compatible.base_url" in str(info.value)


def test_the_routing_doc_examples_parse():
    import os
    import re

    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "routing.md")
    with open(path, encoding="utf-8") as fh:
        blocks = re.findall(r"^```yaml\n(.*?)^```", fh.read(), re.S | re.M)
    settings, providers = yaml.safe_load(blocks[0]), yaml.safe_load(blocks[1])
    raw = {**settings, **providers, "models": {"m": {"targets": [{"provider": "openai-eu", "model": "gpt-4.1"},
                                                                  {"provider": "lan-vllm", "model": "llama"}]}}}
    cfg = parse_config(raw, "docs/routing.md", env={"OPENAI_EU_KEY": "sk-eu", "GROQ_API_KEY": "gsk"})
    assert [t.provider for t in cfg.routes[0].targets] == ["openai-eu", "lan-vllm"]
    assert cfg.fallback.cooldown.failures == 3 and cfg.fallback.retry_after_max == 60
    assert "groq" not in cfg.providers and cfg.providers["anthropic"].timeouts.read == 600
