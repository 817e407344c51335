"""A plugin's config section: what `routeplane check`/`serve` refuse, and how `routeplane plugins` builds each plugin."""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any, Dict

import pytest
import yaml

from routeplane import Plugin, PluginId
from routeplane.cli_plugins import describe_plugins
from routeplane.config import DEFAULT_CONFIG, ConfigError, parse_config


@pytest.mark.parametrize("plugins,expected", [
    ({"redactor": [1, 2]}, "plugins.redactor: a plugin's section is a mapping of its options"),
    ({"redactor": "yes"}, "plugins.redactor: a plugin's section is a mapping of its options"),
    ({"redactor": {"enabled": "maybe"}}, "plugins.redactor.enabled: true or false"),
])
def test_a_bad_plugin_section_is_refused_by_key_path(plugins: Dict[str, Any], expected: str) -> None:
    """A list was a TypeError traceback; a string that is no boolean silently enabled the plugin."""
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["plugins"] = plugins
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "gw.yaml")
    assert expected in str(err.value)


@pytest.mark.parametrize("value,enabled", [("no", False), ("false", False), (0, False), (False, False),
                                           ("true", True), ("yes", True), (None, True), (True, True)])
def test_enabled_reads_like_every_other_boolean(value: Any, enabled: bool) -> None:
    """`${VAR}` interpolation gives strings: "false" from the environment disables, as for any boolean."""
    from routeplane.app import discover_plugins

    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["plugins"] = {"no-such-plugin": {"enabled": value}}
    if enabled:
        with pytest.raises(ConfigError, match="no installed plugin has this id"):
            discover_plugins(parse_config(raw, "gw.yaml"))
    else:
        assert discover_plugins(parse_config(raw, "gw.yaml")) == []


class PhrasePlugin(Plugin):
    """Needs its option, as docs/plugins.md's BannedPhrasePlugin does."""

    id = PluginId("phrase-needed")

    def __init__(self, phrase: str) -> None:
        self.phrase = phrase

    def install(self, app: Any) -> None:
        pass


def test_routeplane_plugins_builds_a_plugin_with_its_configured_options(tmp_path: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`routeplane plugins` built every plugin with no options: one that needs some was listed as broken."""
    ep = metadata.EntryPoint("phrase-needed", f"{__name__}:PhrasePlugin", "routeplane.plugins")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "routeplane.plugins" else real(**kw))
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["plugins"] = {"phrase-needed": {"phrase": "secret project", "timeout_ms": 20}}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    [row] = describe_plugins(str(path))
    assert "error" not in row and row["enabled"] is True, row
    [unconfigured] = describe_plugins(str(tmp_path / "missing.yaml"))
    assert "phrase" in unconfigured["error"]  # without its options it cannot be built: said, not hidden


class _Hits(Plugin):
    def migrations(self) -> Any:
        from routeplane import MigrationItem

        return [MigrationItem(1, "hits", "CREATE TABLE shared_hits (n INTEGER)", tables=("shared_hits",))]

    def install(self, app: Any) -> None:
        pass


class HitsA(_Hits):
    id = PluginId("hits-a")


class HitsB(_Hits):
    id = PluginId("hits-b")


def test_check_refuses_plugin_migrations_serve_would_refuse(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """`check` said OK to two plugins owning one table, which serve then refused; a HUP's pre-check is
    `check`, so the reload went through and the workers could not boot."""
    from routeplane.cli import main

    eps = [metadata.EntryPoint(n, f"{__name__}:{c}", "routeplane.plugins") for n, c in (("hits-a", "HitsA"),
                                                                                       ("hits-b", "HitsB"))]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: eps if kw.get("group") == "routeplane.plugins" else real(**kw))
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    raw["plugins"] = {"hits-a": {}}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 0
    raw["plugins"] = {"hits-a": {}, "hits-b": {}}
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 1
    assert "table 'shared_hits' belongs to plugin 'hits-a'" in capsys.readouterr().err


class _Migrating(Plugin):
    def __init__(self, pid: str, tables: Any, sql: str) -> None:
        self.id = PluginId(pid)
        self._tables, self._sql = tables, sql

    def migrations(self) -> Any:
        from routeplane import MigrationItem

        return [MigrationItem(1, "m", self._sql, tables=self._tables)]

    def install(self, app: Any) -> None:
        pass


@pytest.mark.parametrize("tables,sql,message", [
    (("routeplane",), "DROP INDEX routeplane_plugin_stats_updated", "table 'routeplane' is reserved for the core"),
    (("spend",), "DROP INDEX spend_log_request_id", "index 'spend_log_request_id' is on table 'spend_log' of "
                                                     "plugin 'spend_log'"),
])
def test_a_plugin_migration_cannot_drop_another_owners_index(tables: Any, sql: str, message: str) -> None:
    """docs/operations.md: a plugin may only touch the tables it declares; declaring 'spend' or
    'routeplane' let a migration drop spend_log's or the core's indexes."""
    from routeplane.store.migrations import MigrationError, plugin_migrations
    from routeplane.store.spend_log import SpendLogPlugin

    with pytest.raises(MigrationError) as err:
        plugin_migrations([SpendLogPlugin(None), _Migrating("vandal", tables, sql)], "sqlite")  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize("tables,sql", [(("spend",), "DROP INDEX spend_log_request_id"),
                                         (("auth",), "DROP INDEX auth_budget_ledger_account"),
                                         (("spend_log",), "CREATE TABLE spend_log (x INTEGER)")])
def test_built_in_tables_are_owned_even_when_their_plugin_is_off(tables: Any, sql: str) -> None:
    """With the spend log disabled or auth.mode none, their tables had no owner to protect them."""
    from routeplane.store.migrations import MigrationError, plugin_migrations

    with pytest.raises(MigrationError):
        plugin_migrations([_Migrating("vandal", tables, sql)], "sqlite")


def test_a_plugin_may_drop_its_own_index_beside_a_shorter_named_table() -> None:
    from routeplane.store.migrations import plugin_migrations

    plugin = _Migrating("mine", ("mine", "mine_log"), "DROP INDEX mine_log_at; DROP INDEX mine_x")
    assert [m.plugin for m in plugin_migrations([plugin], "sqlite")] == ["mine"]


class Impostor(Plugin):
    id = PluginId("spend_log")

    def install(self, app: Any) -> None:
        pass


def test_an_installed_package_cannot_take_a_builtin_plugins_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point named `spend_log` was found before the built-in one: `plugins: {spend_log: …}` then
    loaded that package instead, and the gateway recorded no spend."""
    from routeplane.app import discover_plugins
    from routeplane.config import parse_config
    from routeplane.store.spend_log import SpendLogPlugin

    ep = metadata.EntryPoint("spend_log", f"{__name__}:Impostor", "routeplane.plugins")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "routeplane.plugins" else real(**kw))
    raw = copy.deepcopy(DEFAULT_CONFIG)
    raw["plugins"] = {"spend_log": {"enabled": True}}
    [plugin] = discover_plugins(parse_config(raw, "gw.yaml"))
    assert isinstance(plugin, SpendLogPlugin), plugin
