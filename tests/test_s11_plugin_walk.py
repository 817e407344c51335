"""A new plugin author's walk (docs/plugins.md): time budgets on a hook class, and three plugins installed
by entry point running under a real gunicorn."""

from __future__ import annotations

import os
import textwrap
import time

import pytest
import requests

from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook
from routeplane.testing import Gateway
from tests.support.gateway import GatewayProcess


class SlowCheck(PreRequestHook):
    """Denies after a second: any answer within the budget means the budget was applied."""

    timeout_ms = 50
    fail_open = False

    def check(self, ctx):
        time.sleep(1.0)
        return HookDecision.deny(DenyReason.forbidden("too late"))


class SlowButOptional(SlowCheck):
    fail_open = True


def test_a_budget_on_the_hook_class_denies_a_slow_check_with_503():
    gw = Gateway(hooks=[SlowCheck()])
    started = time.monotonic()
    result = gw.chat("hi")
    assert result.status == 503, result.body
    assert time.monotonic() - started < 0.8


def test_a_fail_open_budget_on_the_hook_class_skips_a_slow_check():
    gw = Gateway(hooks=[SlowButOptional()])
    started = time.monotonic()
    result = gw.chat("hi")
    assert result.status == 200, result.body
    assert time.monotonic() - started < 0.8


def test_a_hook_budget_that_is_not_a_number_fails_at_build():
    class Broken(PreRequestHook):
        timeout_ms = "50ms"

        def check(self, ctx):
            return HookDecision.allow()

    with pytest.raises(TypeError, match="Broken.*timeout_ms must be a positive number"):
        Gateway(hooks=[Broken()])


_WALK_PLUGINS = '''
import re
import threading
from collections import Counter

from marshmallow import Schema, fields

from routeplane import Plugin, PluginId
from routeplane.hooks.hold_back import HoldBackStreamHook
from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook, SettlementRecorder


class HeaderDeny(PreRequestHook):
    def __init__(self, header):
        self.header = header.lower()

    def check(self, ctx):
        if ctx.headers.get(self.header):
            return HookDecision.deny(DenyReason.forbidden("Blocked by header."))
        return HookDecision.allow()


class HeaderDenyPlugin(Plugin):
    id = PluginId("walk-header-deny")

    class options_schema(Schema):
        header = fields.String(required=True)

    def __init__(self, header):
        self.header = header

    def install(self, app):
        app.language_model_builder().pre_request_hook(HeaderDeny(self.header))


class RedactWordPlugin(Plugin):
    id = PluginId("walk-redact")

    class options_schema(Schema):
        word = fields.String(required=True)

    def __init__(self, word):
        self.word = word

    def install(self, app):
        app.language_model_builder().stream_hook(
            HoldBackStreamHook(re.escape(self.word), "***", hold=len(self.word) - 1))


class SpendPerAccount(SettlementRecorder):
    def __init__(self):
        self.lock, self.requests = threading.Lock(), Counter()

    def record(self, settlement):
        with self.lock:
            self.requests[settlement.account_id or "anonymous"] += 1


class SpendPlugin(Plugin):
    id = PluginId("walk-spend")

    def __init__(self):
        self.recorder = SpendPerAccount()

    def stats(self):
        return {"requests": dict(self.recorder.requests)}

    def install(self, app):
        app.language_model_builder().settlement_recorder(self.recorder)
'''


def _install(site: str) -> None:
    """What `pip install` leaves: the package and a dist-info whose entry points name the plugins."""
    os.makedirs(os.path.join(site, "routeplane_walk"))
    with open(os.path.join(site, "routeplane_walk", "__init__.py"), "w") as fh:
        fh.write(_WALK_PLUGINS)
    info = os.path.join(site, "routeplane_walk-0.1.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\nName: routeplane-walk\nVersion: 0.1.0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as fh:
        fh.write(textwrap.dedent("""\
            [routeplane.plugins]
            walk-header-deny = routeplane_walk:HeaderDenyPlugin
            walk-redact = routeplane_walk:RedactWordPlugin
            walk-spend = routeplane_walk:SpendPlugin
            """))


def test_three_entry_point_plugins_under_gunicorn(tmp_path):
    site = str(tmp_path / "site")
    _install(site)
    config = {
        "providers": {"local": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
        "plugins": {"walk-header-deny": {"header": "X-Block"}, "walk-redact": {"word": "secret"}, "walk-spend": {}},
    }
    pythonpath = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
    with GatewayProcess(config, env={"PYTHONPATH": pythonpath}) as gw:
        chat = gw.url + "/v1/chat/completions"
        body = {"model": "default", "messages": [{"role": "user", "content": "my secret plan"}]}
        denied = requests.post(chat, json=body, headers={"X-Block": "1"}, timeout=10)
        assert denied.status_code == 403 and denied.json()["error"]["message"] == "Blocked by header."
        anthropic = requests.post(gw.url + "/v1/messages", headers={"x-block": "yes"}, timeout=10, json={
            "model": "default", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        assert anthropic.status_code == 403 and anthropic.json()["type"] == "error"
        streamed = requests.post(chat, json={**body, "stream": True}, timeout=10)
        assert streamed.status_code == 200
        assert "secret" not in streamed.text and "***" in streamed.text
        assert requests.post(chat, json=body, timeout=10).status_code == 200
    assert "Traceback" not in gw.logs()


def test_bad_options_of_an_entry_point_plugin_stop_gunicorn_with_the_key(tmp_path):
    site = str(tmp_path / "site")
    _install(site)
    config = {
        "providers": {"local": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
        "plugins": {"walk-header-deny": {"headr": "X-Block"}},
    }
    gw = GatewayProcess(config, env={"PYTHONPATH": site})
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        gw.start(timeout=20)
    gw.stop()
    logs = gw.logs()
    assert "plugins.walk-header-deny.header" in logs and "plugins.walk-header-deny.headr" in logs
