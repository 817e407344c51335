"""The README and docs/ stay true for a new user: what they show runs, and what runs is what they show.

Found by following the README and every doc literally from a fresh clone: a snippet the loader
refused, an environment variable the docs list that `routeplane serve` ignored, commands and
variables the docs did not list, and a check output that differed from the one shown.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from typing import Any, Dict, List

import pytest
import yaml

from routeplane import cli
from routeplane.config import ConfigError, ConfigSchema, load_config, parse_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
_YAML = re.compile(r"^```ya?ml\n(.*?)^```", re.S | re.M)
_REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
BASE: Dict[str, Any] = {
    "providers": {"local": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _doc_files() -> List[str]:
    return [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))


def _config_blocks() -> List[Any]:
    """(label, yaml) of every yaml block whose top-level keys are all config keys (fragments are skipped)."""
    keys = set(ConfigSchema().fields)
    out = []
    for path in _doc_files():
        for i, block in enumerate(_YAML.findall(_read(path))):
            raw = yaml.safe_load(block)
            if isinstance(raw, dict) and raw and set(raw) <= keys:
                label = f"{os.path.relpath(path, ROOT)}#{i}"
                out.append(pytest.param(label, block, id=label))
    return out


@pytest.mark.parametrize("label,block", _config_blocks())
def test_every_config_snippet_in_the_docs_loads(label: str, block: str) -> None:
    """Each snippet, merged into a minimal config, is accepted as written. `${VAR}` (required) gets a value,
    as the reader would export one; `${VAR:-…}` is left unset, so its default is what is loaded."""
    raw = yaml.safe_load(block)
    env = {name: "placeholder-secret-0123456789" for name in _REQUIRED_VAR.findall(block)}
    env.update({"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "GEMINI_API_KEY": "AIza-test"})
    config = dict(BASE)
    if "providers" in raw and "models" not in raw:
        config["models"] = {}
    config.update(raw)
    try:
        parse_config(config, label, env=env)
    except ConfigError as exc:
        pytest.fail(f"{label} does not load as documented:\n{exc}")


def test_an_optional_mcp_session_secret_left_empty_falls_back_like_an_unset_one() -> None:
    """docs/mcp.md shows `session_secret: ${MCP_SESSION_SECRET:-}`: with the variable unset the value is "",
    which must mean "not set" (env var, then the store's secret), not a too-short secret that stops start-up."""
    config = parse_config({**BASE, "mcp": {"session_secret": "${MCP_SESSION_SECRET:-}"}}, "f.yaml", env={})
    assert config.mcp.session_secret is None
    with pytest.raises(ConfigError, match="mcp.session_secret"):
        parse_config({**BASE, "mcp": {"session_secret": "too-short"}}, "f.yaml", env={})


# --- routeplane serve: the environment the docs list ---------------------------------------------


class _Exec(Exception):
    """Raised instead of exec'ing gunicorn: carries the environment it would have had."""


@pytest.fixture()
def exec_env(monkeypatch, tmp_path) -> Dict[str, Any]:
    captured: Dict[str, Any] = {}

    def fake_exec(_file: str, _argv: List[str], env: Dict[str, str]) -> None:
        captured.update(env)
        raise _Exec()

    monkeypatch.setattr(cli.os, "execvpe", fake_exec)
    monkeypatch.chdir(tmp_path)  # no ./routeplane.yaml: the built-in defaults
    for name in [k for k in os.environ if k.startswith("ROUTEPLANE_")]:
        monkeypatch.delenv(name)
    return captured


def test_serve_listens_where_routeplane_listen_says(exec_env, monkeypatch) -> None:
    """configuration.md lists ROUTEPLANE_LISTEN among the variables the gunicorn settings read; `routeplane
    serve` used to overwrite it with the config's address, so the variable was silently ignored."""
    monkeypatch.setenv("ROUTEPLANE_LISTEN", "127.0.0.1:5999")
    with pytest.raises(_Exec):
        cli.main(["serve"])
    assert exec_env["ROUTEPLANE_LISTEN"] == "127.0.0.1:5999"
    exec_env.clear()
    with pytest.raises(_Exec):
        cli.main(["serve", "--listen", "127.0.0.1:6000"])  # the command line wins
    assert exec_env["ROUTEPLANE_LISTEN"] == "127.0.0.1:6000"


def test_serve_refuses_a_public_routeplane_listen_without_auth(exec_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROUTEPLANE_LISTEN", "0.0.0.0:5999")
    assert cli.main(["serve"]) == 2
    assert exec_env == {}, "nothing may start"
    assert "refusing to listen on 0.0.0.0:5999" in capsys.readouterr().err


@pytest.mark.parametrize("listen", [":5999", "localhost", "0.0.0.0", "127.0.0.1:", "127.0.0.1:99999",
                                    "::1:5999", "[not-ip]:5999", "[abc]:5999", "unix:"])
def test_serve_refuses_a_listen_address_gunicorn_would_read_otherwise(exec_env, monkeypatch, capsys,
                                                                       listen: str) -> None:
    """`--listen :5999` passed the loopback check (an empty host read as 127.0.0.1) and gunicorn then
    listened on every interface with auth.mode none; `localhost` listened on port 8000. HOST:PORT, both."""
    assert cli.main(["serve", "--listen", listen]) == 2
    assert exec_env == {} and "--listen" in capsys.readouterr().err
    monkeypatch.setenv("ROUTEPLANE_LISTEN", listen)
    assert cli.main(["serve"]) == 2
    assert exec_env == {} and "ROUTEPLANE_LISTEN" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="server.listen"):
        parse_config({**BASE, "server": {"listen": listen}}, "f.yaml", env={})


@pytest.mark.parametrize("listen", ["127.0.0.1:5999", "localhost:5999", "[::1]:5999", "unix:/run/rp.sock"])
def test_listen_addresses_gunicorn_binds_as_written_are_accepted(listen: str) -> None:
    assert parse_config({**BASE, "server": {"listen": listen}}, "f.yaml", env={}).server.listen == listen


@pytest.mark.parametrize("listen, starts", [("unix:/run/rp.sock", True), ("tcp://127.0.0.1:5999", True),
                                            ("tcp://0.0.0.0:5999", False), ("fd://3", False)])
def test_serve_without_auth_takes_only_addresses_no_other_host_can_reach(exec_env, capsys, listen: str,
                                                                        starts: bool) -> None:
    """A Unix socket (nginx on the same host) was refused as "non-loopback" with auth.mode none; a tcp://
    loopback address too. An inherited socket (fd://) could be anything, so it still needs the opt-in."""
    if starts:
        with pytest.raises(_Exec):
            cli.main(["serve", "--listen", listen])
        assert exec_env["ROUTEPLANE_LISTEN"] == listen
    else:
        assert cli.main(["serve", "--listen", listen]) == 2
        assert exec_env == {} and f"refusing to listen on {listen}" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers", "-1"], ["--workers", "257"],
                                  ["--threads", "0"], ["--threads", "4097"], ["--threads", "many"]])
def test_serve_refuses_worker_and_thread_counts_the_config_would_refuse(exec_env, capsys, args) -> None:
    """`--workers 0` was ignored silently and `--threads 100000` reached gunicorn, past the config's bounds."""
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", *args])
    assert info.value.code == 2 and exec_env == {}
    assert args[0] in capsys.readouterr().err


# --- configuration.md: commands, environment and the check output it shows -----------------------


def _subcommands() -> List[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 - argparse has no public API
    return sorted(sub.choices)


def test_configuration_md_lists_every_command() -> None:
    text = _read(os.path.join(DOCS, "configuration.md"))
    table = text[text.index("## Commands"):]
    missing = [name for name in _subcommands() if f"`routeplane {name}" not in table]
    assert not missing, f"docs/configuration.md's Commands table does not list: {missing}"


def test_configuration_md_lists_every_environment_variable_of_the_gunicorn_settings() -> None:
    text = _read(os.path.join(DOCS, "configuration.md"))
    settings = _read(os.path.join(ROOT, "routeplane", "gunicorn_conf.py"))
    internal = {"ROUTEPLANE_MIGRATED", "ROUTEPLANE_CONFIG_SOURCE"}  # set by the master for its children
    read = set(re.findall(r"\"(ROUTEPLANE_[A-Z_]+)\"", settings)) - internal
    missing = sorted(name for name in read if f"`{name}`" not in text)
    assert not missing, f"docs/configuration.md does not list: {missing}"


def test_check_prints_what_configuration_md_shows(tmp_path, monkeypatch, capsys) -> None:
    text = _read(os.path.join(DOCS, "configuration.md"))
    shown = re.search(r"plugin options once the plugins load\):\n\n```\n(.*?)```", text, re.S)
    assert shown, "configuration.md shows the output of a failing `routeplane check`"
    (tmp_path / "routeplane.yaml").write_text(textwrap.dedent("""\
        providers:
          openai: {protocol: openai_chatt, base_url: "https://api.openai.com/v1", api_key: x}
          anthropic: {protocol: anthropic_messages, base_url: "https://api.anthropic.com", api_key: y}
        models:
          default: {targets: [{provider: opneai, model: gpt-4.1}]}
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert cli.main(["check", "routeplane.yaml"]) == 1
    assert capsys.readouterr().err == shown.group(1).replace("$ routeplane check routeplane.yaml\n", "")


# --- markdown that renders -----------------------------------------------------------------------


def _fence_problems(text: str) -> List[str]:
    """A fence closes only with a bare ``` line: "``` text" does not close it (CommonMark), so the block
    swallows the prose after it (docs/auth.md once did that to its admin section)."""
    problems, opened = [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("```"):
            continue
        if not opened:
            opened = number
        elif line.rstrip() == "```":
            opened = 0
        else:
            problems.append(f"line {number}: {line!r} inside the block opened on line {opened}")
    if opened:
        problems.append(f"the block opened on line {opened} never closes")
    return problems


@pytest.mark.parametrize("path", _doc_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_code_fences_close(path: str) -> None:
    assert not _fence_problems(_read(path))


# --- the file: "unknown keys are errors (a typo should not silently do nothing)" ----------------


def test_a_key_given_twice_is_an_error_not_a_silently_dropped_section(tmp_path, capsys) -> None:
    """YAML lets a later key replace an earlier one: a second `models:` block dropped the first one's
    routes without a word. Merge keys (`<<: *base`) still override as YAML defines."""
    path = tmp_path / "routeplane.yaml"
    path.write_text(textwrap.dedent("""\
        providers: {local: {protocol: mock}}
        models:
          default: {targets: [{provider: local, model: echo}]}
        models:
          fast: {targets: [{provider: local, model: echo}]}
    """))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(path) in str(info.value) and "'models'" in str(info.value) and "line 4" in str(info.value)
    assert cli.main(["check", str(path)]) == 1
    assert "'models'" in capsys.readouterr().err
    path.write_text(textwrap.dedent("""\
        providers:
          local: {protocol: mock}
          local: {protocol: openai_chat}
        models: {default: {targets: [{provider: local, model: echo}]}}
    """))
    with pytest.raises(ConfigError, match="'local'"):
        load_config(str(path))
    path.write_text(textwrap.dedent("""\
        providers: {local: &local {protocol: mock}, other: {<<: *local, protocol: mock}}
        models: {default: {targets: [{provider: local, model: echo}]}}
    """))
    assert sorted(load_config(str(path)).providers) == ["local", "other"]


def test_a_self_referencing_alias_is_a_config_error_not_a_recursion_error(tmp_path) -> None:
    """`a: &a [*a]` built a list that contains itself, and `${VAR}` interpolation recursed until
    RecursionError: a traceback from `routeplane check` instead of a line naming the file."""
    path = tmp_path / "routeplane.yaml"
    path.write_text("providers: &p {local: {protocol: mock}, self: [*p]}\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(str(path))


@pytest.mark.parametrize("protocol,options,path", [
    ("openai_chat", {"max_token_field": "max_tokens"}, "providers.up.options.max_token_field"),
    ("anthropic_messages", {"default_max_token": 1024}, "providers.up.options.default_max_token"),
    ("anthropic_messages", {"default_max_tokens": "lots"}, "providers.up.options.default_max_tokens"),
    ("anthropic_messages", {"default_max_tokens": 0}, "providers.up.options.default_max_tokens"),
    ("anthropic_messages", {"anthropic_version": 20230601}, "providers.up.options.anthropic_version"),
    ("openai_chat", {"max_tokens_field": ["max_tokens"]}, "providers.up.options.max_tokens_field"),
    ("gemini", {"gemini_schema_field": "schema"}, "providers.up.options.gemini_schema_field"),
    ("gemini", {"thought_signature_placeholder": 1}, "providers.up.options.thought_signature_placeholder"),
])
def test_provider_options_are_checked_like_every_other_key(protocol: str, options: Dict[str, Any],
                                                           path: str) -> None:
    """`options` was a free-form map: a misspelt option did nothing, and `default_max_tokens: lots`
    loaded fine and then failed every request to that provider with a 400 blaming the client ("The
    request carries a number that is not finite.")."""
    raw = {"providers": {"up": {"protocol": protocol, "base_url": "https://up.example.com/v1", "api_key": "k",
                                "options": options}},
           "models": {"default": {"targets": [{"provider": "up", "model": "m"}]}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "f.yaml", env={})
    assert path in str(info.value)


def test_documented_provider_options_load() -> None:
    raw = {"providers": {
        "a": {"protocol": "anthropic_messages", "base_url": "https://a.example.com", "api_key": "k",
              "options": {"default_max_tokens": 4096, "anthropic_version": "2023-06-01", "custom_tools": False}},
        "g": {"protocol": "gemini", "base_url": "https://g.example.com", "api_key": "k",
              "options": {"thought_signature_placeholder": "ctx", "gemini_schema_field": "parameters"}},
        "o": {"protocol": "openai_chat", "base_url": "https://o.example.com/v1", "api_key": "k",
              "options": {"max_tokens_field": "max_tokens", "reasoning_efforts": {"m*": ["high"]}}}},
        "models": {"default": {"targets": [{"provider": "a", "model": "m"}]}}}
    config = parse_config(raw, "f.yaml", env={})
    assert config.providers["a"].options["default_max_tokens"] == 4096
    assert config.providers["g"].options["thought_signature_placeholder"] == "ctx"


# --- routeplane plugin new ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spend_log", "request_log", "auth", "budget", "mcp", "routeplane"])
def test_plugin_new_refuses_the_ids_of_routeplanes_own_plugins(tmp_path, capsys, name: str) -> None:
    """A package written as `spend_log` would, once installed and named under `plugins:`, replace the
    built-in spend log (an entry point is found first) and share its migration history."""
    assert cli.main(["plugin", "new", name, "--directory", str(tmp_path)]) == 2
    assert "reserved" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_the_reserved_ids_are_the_ids_routeplanes_plugins_have() -> None:
    from routeplane.auth.budget import BUDGET_ID
    from routeplane.auth.plugin import AUTH_ID
    from routeplane.mcp.builder import mcp_plugin_class
    from routeplane.request_log import RequestLogPlugin
    from routeplane.scaffold import RESERVED_IDS
    from routeplane.store.migrations import CORE
    from routeplane.store.spend_log import SpendLogPlugin

    ids = {CORE, AUTH_ID, BUDGET_ID, SpendLogPlugin.id, RequestLogPlugin.id, mcp_plugin_class().id}
    assert ids == set(RESERVED_IDS)


# --- routeplane plugins ---------------------------------------------------------------------------


def test_plugins_says_when_its_config_cannot_be_read(tmp_path, monkeypatch, capsys) -> None:
    """`routeplane plugins --config missing.yaml` exited 0 and showed every plugin as not enabled."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROUTEPLANE_CONFIG", raising=False)
    assert cli.main(["plugins", "--config", "missing.yaml", "--json"]) == 1
    out = capsys.readouterr()
    assert "missing.yaml: no such file" in out.err
    assert isinstance(json.loads(out.out), list), "the listing itself is still printed"


def test_plugins_reads_routeplane_config_like_the_other_commands(tmp_path, monkeypatch, capsys) -> None:
    """serve, migrate, spend and acp default to $ROUTEPLANE_CONFIG; `plugins` ignored it."""
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({**BASE, "database": {"url": ""}, "plugins": {"guardrails": {}}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROUTEPLANE_CONFIG", str(path))
    assert cli.main(["plugins", "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    if "guardrails" not in rows:
        pytest.skip("routeplane-guardrails is not installed")
    assert rows["guardrails"]["enabled"] is True


def _link_cases() -> List[Any]:
    return [pytest.param(path, id=os.path.relpath(path, ROOT)) for path in _doc_files()]


@pytest.mark.parametrize("path", _link_cases())
def test_relative_links_stay_inside_the_repository(path: str) -> None:
    """A fresh clone has only the repository: a link to `../../shared/…` (the maintainers' notes) is dead
    there, and so is a name like `DESIGN.md` or `translation.md` that only those notes have."""
    text = _read(path)
    problems = []
    for target in re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s#]+)[^)]*\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        full = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if not full.startswith(ROOT + os.sep) or not os.path.exists(full):
            problems.append(target)
    problems += [name for name in ("DESIGN.md", "translation.md", "STYLE.md") if name in text]
    assert not problems, f"{os.path.relpath(path, ROOT)} points outside the repository: {problems}"
