"""A new operator's first hour: config messages that say what to fix, and a mounted app under gunicorn.

Each test is a place where following the docs (README, docs/configuration.md, docs/mounting.md) went wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict

import pytest
import requests
import yaml

from routeplane.cli import main
from routeplane.config import ConfigError, load_config, parse_config
from tests.support.gateway import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(**overrides: Any) -> Dict[str, Any]:
    raw: Dict[str, Any] = {
        "providers": {"up": {"protocol": "openai_chat", "base_url": "http://127.0.0.1:9/v1",
                             "api_key": "${UP_KEY}"}},
        "models": {"default": {"targets": [{"provider": "up", "model": "m"}]}},
    }
    raw.update(overrides)
    return raw


def problems(raw: Dict[str, Any], env: Any = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "op.yaml", env={"UP_KEY": "sk-live-secret"} if env is None else env)
    return str(info.value)


# --- environment references that would be sent upstream as literal text ---------------------------------


@pytest.mark.parametrize("written", ["$UP_KEY", "${UP_KEY:?}", "${UP_KEY-none}", " $UP_KEY "])
def test_an_unexpanded_reference_is_an_error_not_the_literal_key(written):
    """`api_key: $UP_KEY` passed check and sent `Bearer $UP_KEY` upstream: a 401 at request time."""
    raw = config()
    raw["providers"]["up"]["api_key"] = written
    msg = problems(raw)
    assert "providers.up.api_key" in msg and "${UP_KEY}" in msg and "not expanded" in msg
    assert "sk-live-secret" not in msg


def test_dollar_text_that_is_no_reference_still_loads():
    raw = config(database={"url": "postgresql://u:p$ss@db/rp"})
    raw["providers"]["up"]["headers"] = {"x-literal": "${NOT_SET_ANYWHERE:-$KEEP}"}  # the documented way out
    cfg = parse_config(raw, "op.yaml", env={"UP_KEY": "k"})
    assert cfg.database_url == "postgresql://u:p$ss@db/rp"
    assert cfg.providers["up"].headers["x-literal"] == "$KEEP"


# --- schema messages ----------------------------------------------------------------------------------


def test_a_misspelt_key_names_the_key_meant():
    raw = config(auth={"mode": "api_keys", "budget": {"account_limit_usd": 5}})
    raw["providers"]["up"]["baseurl"] = raw["providers"]["up"].pop("base_url")
    msg = problems(raw)
    assert "providers.up.baseurl: Unknown field; did you mean 'base_url'?" in msg
    assert "auth.budget.account_limit_usd: Unknown field; did you mean 'account_limit_micro_usd'?" in msg


def test_a_misspelt_providers_section_is_one_problem_not_one_per_target():
    raw = config()
    raw["provider"] = raw.pop("providers")
    msg = problems(raw)
    assert "provider: Unknown field; did you mean 'providers'?" in msg
    assert "providers: Missing data" in msg and "Unknown provider" not in msg


def test_a_scalar_where_a_mapping_belongs_says_what_was_expected():
    raw = config(auth={"mode": "api_keys", "budget": {"account_window": 86400}})
    raw["models"]["default"]["targets"].append("up")
    raw["providers"]["up"]["timeouts"] = "${UP_KEY}"  # described by its type, never echoed
    msg = problems(raw)
    assert "_schema" not in msg and "Invalid input type" not in msg
    assert "models.default.targets.1: expected a mapping like {provider: …, model: …}, got a string." in msg
    assert "auth.budget.account_window: expected a mapping of rounds / seconds, got a number." in msg
    assert "providers.up.timeouts: expected a mapping of connect / read / total, got a string." in msg
    assert "sk-live-secret" not in msg


def test_a_wrong_type_says_which_type_was_given():
    msg = problems(config(server={"listen": 4356, "workers": "two"}))
    assert "server.listen: Not a valid string: got a number; write it in quotes." in msg
    assert "server.workers: Not a valid integer: got a string." in msg


# --- routeplane check ---------------------------------------------------------------------------------


def test_check_lists_the_plugins_that_will_run(tmp_path, monkeypatch, capsys):
    """It said "0 plugins" for a file that turns API keys and budgets on (the `plugins:` section was empty)."""
    path = tmp_path / "op.yaml"
    path.write_text(yaml.safe_dump(config(auth={"mode": "api_keys"},
                                          database={"url": f"sqlite:///{tmp_path}/op.db"})))
    monkeypatch.setenv("UP_KEY", "k")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK (1 providers, 1 routes, plugins: " in out and "auth" in out and "budget" in out, out


# --- mounting (docs/mounting.md) ----------------------------------------------------------------------


def test_load_config_without_a_path_reads_routeplane_config(tmp_path, monkeypatch):
    (tmp_path / "routeplane.yaml").write_text(yaml.safe_dump(
        {"providers": {"m": {"protocol": "mock"}}, "models": {"cwd-route": {"targets": [{"provider": "m", "model": "e"}]}}}))
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump(
        {"providers": {"m": {"protocol": "mock"}}, "models": {"env-route": {"targets": [{"provider": "m", "model": "e"}]}}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROUTEPLANE_CONFIG", str(named))
    assert [r.name for r in load_config().routes] == ["env-route"]
    monkeypatch.delenv("ROUTEPLANE_CONFIG")
    assert [r.name for r in load_config().routes] == ["cwd-route"]


HOST_APP = """
from flask import Flask, jsonify
from routeplane.app import build_app
from routeplane.config import load_config

def create_app():
    host = Flask(__name__)

    @host.get("/")
    def home():
        return jsonify(app="host")

    build_app(load_config()).init_app(host, url_prefix="/llm")   # as docs/mounting.md shows
    return host
"""


def test_a_host_app_mounted_as_documented_boots_under_routeplanes_gunicorn_settings(tmp_path):
    """The docs' `load_config("routeplane.yaml")` (or a path of the host's) loaded another file than the one
    the gunicorn master checked and migrated: every worker refused an unmigrated store and gunicorn stopped."""
    (tmp_path / "host_mount.py").write_text(textwrap.dedent(HOST_APP))
    conf = tmp_path / "etc" / "gateway.yaml"
    conf.parent.mkdir()
    conf.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path}/gateway.db"},
        "providers": {"local": {"protocol": "mock"}},
        "models": {"mounted": {"targets": [{"provider": "local", "model": "echo"}]}},
    }))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    env.update(ROUTEPLANE_CONFIG=str(conf), ROUTEPLANE_LISTEN=f"127.0.0.1:{port}", ROUTEPLANE_WORKERS="1",
               ROUTEPLANE_THREADS="4", ROUTEPLANE_STOP_KEEPALIVE_LINGER="0.1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:routeplane.gunicorn_conf",
                             "host_mount:create_app()"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base, deadline, answer = f"http://127.0.0.1:{port}", time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = requests.post(base + "/llm/v1/chat/completions", timeout=5, json={
                    "model": "mounted", "messages": [{"role": "user", "content": "hi"}]})
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        logs = (tmp_path / "gunicorn.log").read_text(errors="replace")
        assert answer is not None and answer.status_code == 200, logs
        assert answer.json()["choices"][0]["message"]["content"] == "You said: hi"
        assert not (tmp_path / "routeplane.db").exists()  # no store of the built-in default beside it
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
