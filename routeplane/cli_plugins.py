"""`routeplane plugins` (list installed plugins) and `routeplane plugin new NAME` (a template package)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata
from typing import Any, Dict, List

from .app import ENTRY_POINT_GROUP, App, Plugin, make_plugin, plugin_options
from .config import ConfigError, load_config, plugin_enabled


def describe_plugins(config_path: Any = None) -> List[Dict[str, Any]]:
    """Every installed plugin: id, distribution, hooks it registers, migrations, enabled in the config."""
    try:
        config = load_config(config_path)
        sections = dict(config.plugins)
        enabled = {pid for pid, opts in sections.items() if plugin_enabled(opts) is not False}
        database_url = config.database_url
    except ConfigError:
        sections, enabled, database_url = {}, set(), ""
    store = _lazy_store(database_url)
    out: List[Dict[str, Any]] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        row: Dict[str, Any] = {"id": ep.name, "target": ep.value, "enabled": ep.name in enabled,
                               "distribution": getattr(getattr(ep, "dist", None), "name", None)}
        try:
            factory = ep.load()
            # Built as the gateway builds it: with its config section's options (a plugin may require some).
            plugin = make_plugin(factory, plugin_options(sections.get(ep.name)), ep.name, f"plugins.{ep.name}")
            if not isinstance(plugin, Plugin):
                raise TypeError("not a routeplane Plugin")
            builder = App.builder().store(store)  # as the gateway installs it (no connection is opened)
            builder.plugin(plugin)
            hooks = builder.language_model_builder().hooks()
            row["hooks"] = {kind: [type(h).__name__ for _pid, h in items]
                            for kind, items in hooks.__dict__.items() if items}
            row["migrations"] = [f"{m.version}:{m.name}" for m in plugin.migrations()]
        except Exception as exc:  # listing must not die on one broken plugin
            row["error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
    return out


def _lazy_store(database_url: str) -> Any:
    """The config's store, unopened: a plugin that keeps state reads `app.current_store` in `install`."""
    if not database_url:
        return None
    from .store import Store, StoreError

    try:
        return Store.from_url(database_url)
    except StoreError:
        return None  # `routeplane check` says what is wrong with the URL; the listing carries on


def cmd_plugins(args: argparse.Namespace) -> int:
    args.config = args.config or os.environ.get("ROUTEPLANE_CONFIG") or None  # as serve, migrate, spend
    try:  # listed either way, but a config that cannot be read is said (it showed nothing as enabled)
        load_config(args.config)
        problem = ""
    except ConfigError as exc:
        problem = f"routeplane: {exc} (no plugin is shown as enabled)"
    rows = describe_plugins(args.config)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_rows(rows)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


def _print_rows(rows: List[Dict[str, Any]]) -> None:
    if not rows:
        print("no plugins installed (entry point group routeplane.plugins)")
    for row in rows:
        state = "enabled" if row["enabled"] else "installed"
        print(f"{row['id']}  [{state}]  {row['target']}")
        if "error" in row:
            error = row["error"].replace("\n", "\n    ")  # a multi-line message (invalid options) stays indented
            print(f"    error: {error}")
            continue
        for kind, names in row["hooks"].items():
            print(f"    {kind}: {', '.join(names)}")
        if row["migrations"]:
            print(f"    migrations: {', '.join(row['migrations'])}")


def cmd_plugin_new(args: argparse.Namespace) -> int:
    from .scaffold import new_plugin

    try:
        root = new_plugin(args.name, args.directory)
    except (ValueError, FileExistsError) as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {root}: `pytest {root}` (its tests run in place), `pip install -e {root}` to serve it")
    return 0


def add_commands(sub: Any) -> None:
    plugins = sub.add_parser("plugins", help="list installed plugins, their hooks and migrations")
    plugins.add_argument("--config", help="config file, to show which plugins are enabled (default: "
                                          "$ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in)")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)
    plugin = sub.add_parser("plugin", help="plugin authoring tools")
    psub = plugin.add_subparsers(dest="plugin_command", required=True)
    new = psub.add_parser("new", help="write a plugin package (entry point, plugin class, tests using the kit)")
    new.add_argument("name")
    new.add_argument("--directory", default=".")
    new.set_defaults(func=cmd_plugin_new)
