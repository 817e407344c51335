"""Configuration: interpolation, validation messages that name file and key path, routing, `routeplane check`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any, Dict

import pytest

from routeplane.app import create_app
from routeplane.config import DEFAULT_CONFIG, ConfigError, interpolate, load_config, parse_config
from routeplane.errors import ModelNotFound
from routeplane.language_model.routing import StaticRoutingTable
from routeplane.testing import Gateway

MINIMAL: Dict[str, Any] = {
    "providers": {"local": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
}


def write(tmp_path, text: str, name: str = "routeplane.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# --- interpolation ------------------------------------------------------------------


def test_var_and_default_interpolation():
    env = {"KEY": "sk-abc", "EMPTY": "", "HOST": "10.0.0.1"}
    raw = {"a": "${KEY}", "b": "${MISSING:-fallback}", "c": "${EMPTY:-used-when-empty}", "d": "x-${HOST}-y",
           "e": ["${KEY}", {"f": "${MISSING:-}"}], "n": 5, "t": True}
    assert interpolate(raw, env) == {"a": "sk-abc", "b": "fallback", "c": "used-when-empty", "d": "x-10.0.0.1-y",
                                     "e": ["sk-abc", {"f": ""}], "n": 5, "t": True}


def test_set_but_empty_var_without_default_stays_empty():
    assert interpolate("${EMPTY}", {"EMPTY": ""}) == ""


def test_unset_var_error_names_file_and_key_path():
    raw = {"providers": {"openai": {"protocol": "openai_chat", "api_key": "${ROUTEPLANE_TEST_UNSET_KEY}"}},
           "models": {"m": {"targets": [{"provider": "openai", "model": "gpt"}]}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "my.yaml", env={})
    msg = str(info.value)
    assert msg.startswith("my.yaml: ")
    assert "providers.openai.api_key" in msg and "ROUTEPLANE_TEST_UNSET_KEY" in msg


def test_interpolated_values_reach_the_typed_config():
    raw = {"providers": {"up": {"protocol": "openai_chat", "base_url": "${UP_URL:-http://127.0.0.1:1/v1}",
                                "api_key": "${UP_KEY}"}},
           "models": {"m": {"targets": [{"provider": "up", "model": "x"}]}}}
    cfg = parse_config(raw, "f.yaml", env={"UP_KEY": "sk-1"})
    assert cfg.providers["up"].base_url == "http://127.0.0.1:1/v1"
    assert cfg.providers["up"].api_key == "sk-1"
    assert "sk-1" not in repr(cfg.providers["up"])  # keys stay out of reprs (and so out of logs)


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("patch, path", [
    ({"server": {"listen": "127.0.0.1:1", "lisen": "typo"}}, "server.lisen"),
    ({"provders": {}}, "provders"),
    ({"providers": {"local": {"protocol": "grpc"}}}, "providers.local.protocol"),
    ({"providers": {"local": {"protocol": "mock", "api_kye": "x"}}}, "providers.local.api_kye"),
    ({"models": {"default": {"targets": [{"provider": "nope", "model": "m"}]}}}, "models.default.targets.0.provider"),
    ({"models": {"default": {"strategy": "random", "targets": [{"provider": "local", "model": "m"}]}}},
     "models.default.strategy"),
    ({"models": {"default": {"targets": []}}}, "models.default.targets"),
    ({"models": {"default": {"targets": [{"model": "m"}]}}}, "models.default.targets.0.provider"),
    ({"models": {"default": {"targets": [{"provider": "local", "model": "m", "wieght": 1}]}}},
     "models.default.targets.0.wieght"),
    ({"server": {"max_body_bytes": "lots"}}, "server.max_body_bytes"),
])
def test_validation_errors_name_file_and_key_path(patch, path):
    raw = {**MINIMAL, **patch}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "conf/routeplane.yaml", env={})
    msg = str(info.value)
    assert msg.startswith("conf/routeplane.yaml: ")
    assert f"{path}:" in msg, msg


def test_unknown_provider_message_lists_declared_ones():
    raw = {**MINIMAL, "models": {"default": {"targets": [{"provider": "opneai", "model": "m"}]}}}
    with pytest.raises(ConfigError, match=r"Unknown provider 'opneai'.*local"):
        parse_config(raw, "f.yaml", env={})


def test_missing_required_sections():
    with pytest.raises(ConfigError) as info:
        parse_config({}, "empty.yaml", env={})
    assert "providers:" in str(info.value) and "models:" in str(info.value)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["a"], "list.yaml", env={})


def test_load_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "absent.yaml"))
    bad = write(tmp_path, "providers: [unclosed\n", "bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(bad) and "YAML" in str(info.value)


def test_the_masters_checked_copy_is_named_after_the_operators_file(tmp_path, monkeypatch):
    # Under gunicorn, workers and the master's check/migrate children load a private copy of the file
    # (ROUTEPLANE_CONFIG); messages and /ready name the file it was taken from (ROUTEPLANE_CONFIG_SOURCE).
    copy = write(tmp_path, "providers: [unclosed\n", "serving.yaml")
    monkeypatch.setenv("ROUTEPLANE_CONFIG", copy)
    monkeypatch.setenv("ROUTEPLANE_CONFIG_SOURCE", "/etc/routeplane/routeplane.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(copy)
    assert str(info.value).startswith("/etc/routeplane/routeplane.yaml: not valid YAML")
    write(tmp_path, "providers: {m: {protocol: mock}}\nmodels: {d: {targets: [{provider: m, model: x}]}}\n",
          "serving.yaml")
    assert load_config(copy).source == "/etc/routeplane/routeplane.yaml"
    assert load_config(copy, source="named").source == "named"
    other = write(tmp_path, "providers: {m: {protocol: mock}}\nmodels: {d: {targets: [{provider: m, model: x}]}}\n",
                  "other.yaml")
    assert load_config(other).source == other  # any other file keeps its own name


def test_load_config_reads_yaml_and_env(tmp_path):
    path = write(tmp_path, """
        server:
          listen: 127.0.0.1:5000
          max_body_bytes: 2048
        providers:
          local: {protocol: mock}
          up: {protocol: openai_chat, base_url: "${UP_BASE:-http://127.0.0.1:9/v1}", api_key: "${UP_KEY}"}
        models:
          default:
            strategy: round_robin
            targets:
              - {provider: local, model: echo}
              - {provider: up, model: gpt-x, weight: 2}
    """)
    cfg = load_config(path, env={"UP_KEY": "sk-file"})
    assert cfg.source == path
    assert cfg.server.listen == "127.0.0.1:5000" and cfg.server.max_body_bytes == 2048
    [route] = cfg.routes
    assert route.strategy == "round_robin" and [t.model for t in route.targets] == ["echo", "gpt-x"]
    assert route.targets[1].api_key == "sk-file" and route.targets[1].weight == 2


# --- routing -------------------------------------------------------------------------------


def test_provider_model_direct_routing():
    cfg = parse_config({**MINIMAL, "providers": {"local": {"protocol": "mock"},
                                                 "up": {"protocol": "openai_chat", "base_url": "https://x/v1"}}},
                       "f.yaml", env={})
    table = StaticRoutingTable(cfg.routes, cfg.providers)
    [t] = table.resolve("up:gpt-4.1-mini")
    assert (t.provider, t.model, t.protocol, t.base_url) == ("up", "gpt-4.1-mini", "openai_chat", "https://x/v1")
    [t] = table.resolve("local:anything:with:colons")
    assert t.model == "anything:with:colons"
    for unknown in ("nope:gpt", "gpt-4.1", "up:", "default:x"):
        with pytest.raises(ModelNotFound):
            table.resolve(unknown)


def test_direct_routing_through_the_gateway():
    gw = Gateway(config=MINIMAL)
    r = gw.chat("hi", model="local:echo-2")
    assert r.status == 200 and r.json["choices"][0]["message"]["content"] == "You said: hi"
    assert r.settlements[0].provider == "local" and r.settlements[0].model == "echo-2"
    assert gw.chat("hi", model="ghost:x").status == 404


def test_default_config_runs_with_the_mock_provider(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no routeplane.yaml here
    monkeypatch.delenv("ROUTEPLANE_CONFIG", raising=False)
    cfg = load_config(None)
    assert cfg.source == "<built-in defaults>" and [p.protocol for p in cfg.providers.values()] == ["mock"]
    flask_app = create_app()
    with flask_app.test_client() as client:
        r = client.post("/v1/chat/completions", json={"model": "default",
                                                      "messages": [{"role": "user", "content": "ping"}]})
        assert r.status_code == 200 and r.get_json()["choices"][0]["message"]["content"] == "You said: ping"
        models = [m["id"] for m in client.get("/v1/models").get_json()["data"]]
        assert set(DEFAULT_CONFIG["models"]) <= set(models)


def test_create_app_honours_routeplane_config(tmp_path, monkeypatch):
    path = write(tmp_path, """
        providers: {local: {protocol: mock}}
        models: {only-this: {targets: [{provider: local, model: echo}]}}
    """, "custom.yaml")
    monkeypatch.setenv("ROUTEPLANE_CONFIG", path)
    flask_app = create_app()
    with flask_app.test_client() as client:
        ids = [m["id"] for m in client.get("/v1/models").get_json()["data"]]
        assert ids == ["only-this"]
        r = client.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404


def test_routeplane_yaml_in_working_directory_is_used(tmp_path, monkeypatch):
    write(tmp_path, """
        providers: {local: {protocol: mock}}
        models: {cwd-route: {targets: [{provider: local, model: echo}]}}
    """)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROUTEPLANE_CONFIG", raising=False)
    assert [r.name for r in load_config(None).routes] == ["cwd-route"]


# --- routeplane check -----------------------------------------------------------------------


def check(path: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "routeplane.cli", "check", path], capture_output=True, text=True,
                          timeout=60, env=full_env)


def test_check_cli_exit_codes(tmp_path):
    good = write(tmp_path, """
        providers:
          local: {protocol: mock}
          up: {protocol: openai_chat, base_url: "https://up.example/v1", api_key: "${CHECK_KEY:-}"}
        models:
          default: {targets: [{provider: local, model: echo}]}
    """, "good.yaml")
    r = check(good)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "2 providers" in r.stdout

    bad = write(tmp_path, """
        providers:
          local: {protocol: smoke-signals}
        models:
          default: {targets: [{provider: remote, model: echo}]}
    """, "bad.yaml")
    r = check(bad)
    assert r.returncode == 1
    assert bad in r.stderr
    assert "providers.local.protocol" in r.stderr and "models.default.targets.0.provider" in r.stderr
    assert "Traceback" not in r.stderr

    unset = write(tmp_path, """
        providers: {up: {protocol: openai_chat, base_url: "https://up.example/v1", api_key: "${CHECK_UNSET_VAR}"}}
        models: {default: {targets: [{provider: up, model: x}]}}
    """, "unset.yaml")
    r = check(unset)
    assert r.returncode == 1 and "providers.up.api_key" in r.stderr and "CHECK_UNSET_VAR" in r.stderr
    r = check(unset, CHECK_UNSET_VAR="sk-now-set")
    assert r.returncode == 0, r.stderr
    assert "sk-now-set" not in r.stdout + r.stderr

    r = check(str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_check_cli_unknown_plugin(tmp_path):
    path = write(tmp_path, """
        providers: {local: {protocol: mock}}
        models: {default: {targets: [{provider: local, model: echo}]}}
        plugins: {no-such-plugin-xyz: {}}
    """)
    r = check(path)
    assert r.returncode == 1
    assert "plugins.no-such-plugin-xyz" in r.stderr and "Traceback" not in r.stderr


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "routeplane")
    if not os.path.exists(exe):
        pytest.skip("routeplane console script not installed in this environment")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "serve" in r.stdout and "check" in r.stdout


# --- routeplane serve ---------------------------------------------------------------------------


def test_default_listen_address():
    assert parse_config(MINIMAL, "f.yaml", env={}).server.listen == "127.0.0.1:4356"


def serve(args: list, env: Dict[str, str], cwd: str) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    full_env.update(env)
    return subprocess.Popen([sys.executable, "-m", "routeplane.cli", "serve", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_serve_refuses_public_address_without_auth_and_bad_config(tmp_path):
    p = serve(["--listen", "0.0.0.0:1"], {}, str(tmp_path))
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and b"refusing to listen on 0.0.0.0:1" in out
    bad = write(tmp_path, "providers: {x: {protocol: nope}}\nmodels: {}\n", "bad.yaml")
    p = serve(["--config", bad, "--listen", "127.0.0.1:1"], {}, str(tmp_path))
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and b"providers.x.protocol" in out and b"Traceback" not in out


def test_serve_runs_gunicorn_with_the_config_listen_address(tmp_path):
    import signal
    import time

    import requests

    from tests.support.gateway import free_port

    port = free_port()
    path = write(tmp_path, f"""
        server: {{listen: "127.0.0.1:{port}", workers: 1, threads: 4}}
        providers: {{local: {{protocol: mock}}}}
        models: {{served-route: {{targets: [{{provider: local, model: echo}}]}}}}
    """, "serve.yaml")
    p = serve([], {"ROUTEPLANE_CONFIG": path}, str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert p.poll() is None, p.stdout.read().decode() if p.stdout else ""
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "routeplane serve did not become healthy"
            time.sleep(0.1)
        r = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                          json={"model": "served-route", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "You said: hi"
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung gunicorn
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()
    assert p.returncode == 0
