"""A plugin that cannot start (bad options, an `install` that raises) stops `routeplane check`/`serve` and
gunicorn with one message naming `plugins.<id>`, never a traceback; a hook failing at request time is
named in the log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from routeplane.app import App, Plugin, PluginId, build_app
from routeplane.config import DEFAULT_CONFIG, ConfigError, parse_config
from routeplane.hooks.language_model import HookDecision, PreRequestHook, StreamAction, StreamHook
from routeplane.hooks.mcp import MCPPreRequestHook
from tests.support.gateway import ROOT

# A distribution installed the way a plugin author's is (a dist-info with its entry points), so the CLI and
# gunicorn run as child processes find these plugins exactly as they find a real one.
PLUGIN_MODULE = '''
from marshmallow import ValidationError
from routeplane.app import Plugin, PluginId
from routeplane.hooks.mcp import MCPPreRequestHook


class Limit(Plugin):
    """Refuses a bad `limit` in its constructor with a ValueError."""

    id = PluginId("s11-limit")

    def __init__(self, limit=1):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")

    def install(self, app):
        pass


class Shape(Plugin):
    """Validates its options itself, raising marshmallow's ValidationError."""

    id = PluginId("s11-shape")

    def __init__(self, mode="fast"):
        if mode not in ("fast", "slow"):
            raise ValidationError({"mode": ["must be fast or slow"]})

    def install(self, app):
        pass


class McpOnLlm(MCPPreRequestHook):
    def check(self, ctx):
        return None


class WrongPipeline(Plugin):
    """Registers an MCP hook on the language-model pipeline: a TypeError at install."""

    id = PluginId("s11-wrong-pipeline")

    def install(self, app):
        app.language_model_builder().pre_request_hook(McpOnLlm())
'''

ENTRY_POINTS = {"s11-limit": "Limit", "s11-shape": "Shape", "s11-wrong-pipeline": "WrongPipeline"}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "s11_startup_plugins.py").write_text(PLUGIN_MODULE)
    info = site / "s11_startup_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: s11-startup-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[routeplane.plugins]\n" + "".join(
        f"{name} = s11_startup_plugins:{attr}\n" for name, attr in ENTRY_POINTS.items()))
    return site


def _config(tmp_path: Path, plugins: Dict[str, Any]) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({**DEFAULT_CONFIG, "database": {"url": f"sqlite:///{tmp_path}/rp.db"},
                                    "plugins": plugins}))
    return path


def _env(site: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), ROOT])
    env.update(extra)
    return env


def _cli(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routeplane.cli", *args], cwd=cwd, env=_env(site),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("plugins,expected", [
    ({"s11-limit": {"limit": 0}}, "plugins.s11-limit: invalid options: limit must be at least 1, got 0"),
    ({"s11-shape": {"mode": "warp"}}, "plugins.s11-shape.mode: must be fast or slow"),
])
def test_check_names_the_section_of_options_a_constructor_refuses(plugin_site, tmp_path, plugins, expected):
    """A ValueError or ValidationError from the constructor escaped as a traceback without a key path."""
    r = _cli(plugin_site, "check", str(_config(tmp_path, plugins)), cwd=tmp_path)
    assert r.returncode == 1, r.stdout
    assert expected in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_check_reports_every_plugin_with_bad_options(plugin_site, tmp_path):
    plugins = {"s11-limit": {"limit": -3}, "s11-shape": {"mode": "warp"}, "s11-nowhere": {}}
    r = _cli(plugin_site, "check", str(_config(tmp_path, plugins)), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    for part in ("plugins.s11-limit: invalid options: limit must be at least 1, got -3",
                 "plugins.s11-shape.mode: must be fast or slow",
                 "plugins.s11-nowhere: no installed plugin has this id"):
        assert part in r.stderr, r.stderr


def test_check_gives_one_line_for_a_plugin_whose_install_raises(plugin_site, tmp_path):
    r = _cli(plugin_site, "check", str(_config(tmp_path, {"s11-wrong-pipeline": {}})), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "plugins.s11-wrong-pipeline: the plugin failed to install: TypeError" in line
    assert "another pipeline" in line


@pytest.mark.parametrize("plugins,expected", [
    ({"s11-wrong-pipeline": {}}, "plugins.s11-wrong-pipeline: the plugin failed to install"),
    ({"s11-limit": {"limit": 0}}, "plugins.s11-limit: invalid options"),
])
def test_serve_stops_cleanly_before_gunicorn(plugin_site, tmp_path, plugins, expected):
    """serve handed such a config to gunicorn, whose workers then failed to boot with a traceback."""
    r = _cli(plugin_site, "serve", "--config", str(_config(tmp_path, plugins)), "--listen", "127.0.0.1:1",
             cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr and "serving" not in r.stderr, r.stderr


def test_gunicorn_started_directly_stops_with_the_message(plugin_site, tmp_path):
    """`gunicorn -c python:routeplane.gunicorn_conf` (the mounted and the wsgi path): the master's migrate
    builds the plugins first and stops with their message."""
    from tests.support.gateway import free_port

    env = _env(plugin_site, ROUTEPLANE_CONFIG=str(_config(tmp_path, {"s11-wrong-pipeline": {}})),
               ROUTEPLANE_LISTEN=f"127.0.0.1:{free_port()}", ROUTEPLANE_WORKERS="1")
    r = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "python:routeplane.gunicorn_conf"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "plugins.s11-wrong-pipeline: the plugin failed to install" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


# --- in process: build_app and the builder ------------------------------------------------------------------


class _McpOnLlm(MCPPreRequestHook):
    def check(self, ctx: Any) -> Any:
        return None


class _WrongPipeline(Plugin):
    id = PluginId("host-wrong")

    def install(self, app: Any) -> None:
        app.language_model_builder().pre_request_hook(_McpOnLlm())


def test_build_app_names_the_plugin_whose_install_raises():
    with pytest.raises(ConfigError, match=r"^<t>: plugins\.host-wrong: the plugin failed to install: TypeError: "
                                          r".*another pipeline"):
        build_app(parse_config(DEFAULT_CONFIG, "<t>"), extra_plugins=[_WrongPipeline()])


def test_the_builder_still_raises_the_registration_type_error():
    """App.builder().plugin() keeps its contract (STYLE.md: a clear TypeError naming the plugin)."""
    with pytest.raises(TypeError, match="host-wrong"):
        App.builder().plugin(_WrongPipeline())


# --- request time: the log names the failing hook and its plugin ---------------------------------------------


class _Crashes(PreRequestHook):
    def check(self, ctx: Any) -> HookDecision:
        raise KeyError("boom")


class _StreamCrashes(StreamHook):
    def on_part(self, ctx: Any, part: Any) -> StreamAction:
        raise KeyError("boom")

    def on_stream_end(self, ctx: Any, outcome: Any) -> None:
        raise KeyError("end")


class _CrashPlugin(Plugin):
    def __init__(self, pid: str, kind: str, hook: Any) -> None:
        self.id, self.kind, self.hook = PluginId(pid), kind, hook

    def install(self, app: Any) -> None:
        getattr(app.language_model_builder(), self.kind)(self.hook)


@pytest.fixture
def pipeline_log() -> Iterator[List[logging.LogRecord]]:
    records: List[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("routeplane.pipeline")
    handler = Keep(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _chat(plugin: Plugin, stream: bool) -> Any:
    app = App.builder().config(parse_config(DEFAULT_CONFIG, "<t>")).inline_observers().plugin(plugin).build()
    client = app.flask_app().test_client()
    r = client.post("/v1/chat/completions", json={"model": "default", "stream": stream,
                                                  "messages": [{"role": "user", "content": "hello"}]})
    body = r.get_data(as_text=True)
    return r, body


def test_a_failing_pre_request_hook_is_named_in_the_log(pipeline_log):
    r, _body = _chat(_CrashPlugin("crashy-auth", "pre_request_hook", _Crashes()), stream=False)
    assert r.status_code == 500  # unchanged: fail closed
    [message] = [rec.getMessage() for rec in pipeline_log]
    assert "_Crashes" in message and "'crashy-auth'" in message, message


def test_a_failing_stream_hook_is_named_in_the_log(pipeline_log):
    r, body = _chat(_CrashPlugin("crashy-filter", "stream_hook", _StreamCrashes()), stream=True)
    assert r.status_code == 200 and '"error"' in body  # unchanged: the wire's error frame
    messages = [rec.getMessage() for rec in pipeline_log]
    assert any(m.startswith("stream of request") and "_StreamCrashes" in m and "'crashy-filter'" in m
               for m in messages), messages
    assert any("on_stream_end" in m and "_StreamCrashes" in m and "'crashy-filter'" in m for m in messages), messages


def test_options_refused_by_a_constructor_are_config_errors_in_process():
    from routeplane.app import make_plugin

    class Picky(Plugin):
        id = PluginId("picky")

        def __init__(self, n: int = 1) -> None:
            if n < 1:
                raise ValueError("n must be positive")

        def install(self, app: Any) -> None:
            pass

    with pytest.raises(ConfigError, match=r"^gw\.yaml: plugins\.picky: invalid options: n must be positive$"):
        make_plugin(Picky, {"n": 0}, "picky", "gw.yaml: plugins.picky")

