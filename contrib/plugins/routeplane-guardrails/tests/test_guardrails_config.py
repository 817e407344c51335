"""Options: validation with key paths at start-up, entry-point discovery, and what each option changes."""

from __future__ import annotations

from typing import Any, Dict

import pytest
import yaml
from marshmallow import ValidationError
from routeplane_guardrails import GuardrailsPlugin

from routeplane import cli
from routeplane.app import build_app, discover_plugins
from routeplane.config import ConfigError, parse_config
from routeplane.testing import Gateway, run_request

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
BASE: Dict[str, Any] = {
    "providers": {"mock": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
}


def config_with(options: Any) -> Dict[str, Any]:
    return {**BASE, "plugins": {"guardrails": options}}


def chat(plugin: GuardrailsPlugin, text: str) -> Any:
    return run_request({"model": "default", "messages": [{"role": "user", "content": text}]}, plugins=[plugin])


BAD_OPTIONS = [
    ({"custom_patterns": [{"name": "ticket", "regex": "TICKET-(\\d+"}]}, "plugins.guardrails.custom_patterns.0.regex"),
    ({"custom_patterns": [{"name": "any", "regex": "x*"}]}, "plugins.guardrails.custom_patterns.0.regex"),
    ({"custom_patterns": [{"name": "t", "regex": "t", "direction": "sideways"}]},
     "plugins.guardrails.custom_patterns.0.direction"),
    ({"custom_patterns": [{"name": "api_keys", "regex": "x"}]}, "plugins.guardrails.custom_patterns.0.name"),
    ({"upgoing": {"api_kyes": "block"}}, "plugins.guardrails.upgoing.api_kyes"),
    ({"upgoing": {"api_keys": "shout"}}, "plugins.guardrails.upgoing.api_keys"),
    ({"upgoing": {"suspicious_commands": "block"}}, "plugins.guardrails.upgoing.suspicious_commands"),
    ({"disabled_patterns": ["pii_email"]}, "plugins.guardrails.disabled_patterns.0"),
    ({"custom_upgoing": {"nope": "block"}}, "plugins.guardrails.custom_upgoing.nope"),
    ({"custom_patterns": [{"name": "down", "regex": "d0wn", "direction": "downgoing"}], "custom_upgoing": {"down": "block"}},
     "plugins.guardrails.custom_upgoing.down"),
    ({"block_message": {"include_help_link": True}}, "plugins.guardrails.block_message.help_url"),
    ({"stream_window": 2}, "plugins.guardrails.stream_window"),
    ({"unknown_key": 1}, "plugins.guardrails.unknown_key"),
]


@pytest.mark.parametrize("options,key_path", BAD_OPTIONS, ids=[k.rsplit(".", 1)[-1] for _, k in BAD_OPTIONS])
def test_bad_options_fail_at_start_up_with_the_key_path(options: Dict[str, Any], key_path: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_app(parse_config(config_with(options), "routeplane.yaml"))
    assert "routeplane.yaml: plugins.guardrails: invalid options" in str(info.value)
    assert key_path + ":" in str(info.value)
    with pytest.raises(ValidationError):  # the same check when a plugin author builds it in Python
        GuardrailsPlugin(**options)


def test_routeplane_check_reports_the_key_path(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "routeplane.yaml"
    path.write_text(yaml.safe_dump(config_with({"custom_patterns": [{"name": "t", "regex": "(unclosed"}]})))
    assert cli.main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "plugins.guardrails.custom_patterns.0.regex: invalid regular expression" in err
    path.write_text(yaml.safe_dump(config_with({"downgoing": {"api_keys": "redact"}})))
    assert cli.main(["check", str(path)]) == 0


def test_found_through_the_entry_point_and_configured_from_the_file() -> None:
    (plugin,) = discover_plugins(parse_config(config_with({"upgoing": {"api_keys": "block"}}), "routeplane.yaml"))
    assert isinstance(plugin, GuardrailsPlugin)
    result = chat(plugin, f"my key is {KEY}")
    assert result.status == 400 and result.json["error"]["code"] == "guardrail_violation"


def test_enabled_false_loads_nothing() -> None:
    assert discover_plugins(parse_config(config_with({"enabled": False, "upgoing": {"api_keys": "block"}}))) == []
    plugin = GuardrailsPlugin(enabled=False, upgoing={"api_keys": "block"})
    assert chat(plugin, f"my key is {KEY}").status == 200 and plugin.stats() == {}


def test_disabled_patterns_turn_a_detector_off() -> None:
    plugin = GuardrailsPlugin(upgoing={"api_keys": "block", "pii_emails": "block"}, disabled_patterns=["api_keys"])
    assert chat(plugin, f"my key is {KEY}").status == 200
    assert chat(plugin, "mail me at a@example.com").status == 400


def test_defaults_warn_only_and_change_nothing() -> None:
    plugin = GuardrailsPlugin()
    gw = Gateway(plugins=[plugin])
    result = gw.chat(f"key {KEY} mail a@example.com")
    assert result.json["choices"][0]["message"]["content"] == f"You said: key {KEY} mail a@example.com"
    assert plugin.stats()["upgoing"] == {"api_keys": {"warn": 1}, "pii_emails": {"warn": 1}}


def test_custom_patterns_follow_their_direction() -> None:
    plugin = GuardrailsPlugin(
        custom_patterns=[{"name": "ticket", "regex": r"TICKET-\d{4}", "direction": "downgoing"},
                         {"name": "codename", "regex": r"(?i)project\s+(?P<secret>falcon)"}],
        custom_downgoing={"ticket": "redact", "codename": "redact"}, custom_upgoing={"codename": "block"})
    gw = Gateway(plugins=[plugin])
    result = gw.chat("see TICKET-1234 please")
    assert gw.executor.calls[-1].prompt.messages[-1].text() == "see TICKET-1234 please"  # downgoing only
    assert result.json["choices"][0]["message"]["content"] == "You said: see [REDACTED:ticket] please"
    blocked = gw.chat("what is Project Falcon?")
    assert blocked.status == 400 and "codename" in blocked.json["error"]["message"]


def test_block_message_options() -> None:
    detailed = chat(GuardrailsPlugin(upgoing={"api_keys": "block"}), f"k {KEY}").json["error"]["message"]
    assert detailed == "The request was blocked by a guardrail (api_keys in messages[0] (user) text)."
    plugin = GuardrailsPlugin(upgoing={"api_keys": "block"},
                              block_message={"include_details": False, "include_help_link": True,
                                             "help_url": "https://example.com/guardrails"})
    plain = chat(plugin, f"k {KEY}").json["error"]["message"]
    assert plain == "The request was blocked by a guardrail. See https://example.com/guardrails"
    assert KEY[:10] not in detailed + plain


def test_from_options_accepts_what_the_schema_loaded() -> None:
    loaded = GuardrailsPlugin.options_schema().load({"downgoing": {"api_keys": "redact"}})
    plugin = GuardrailsPlugin.from_options(loaded)
    assert plugin.options == loaded
