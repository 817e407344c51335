"""A new user's walk through the README and docs/, on a fresh clone: what they run must work as shown.

Found by following the quickstart, configuration, auth, deploy and mounting docs literally: the README
asked for a Python that gunicorn >= 24 cannot be installed on, `routeplane check` on deploy.md's
config named one unset secret per run, YAML errors pointed into "<byte string>", a command piped
into `head` ended in a traceback, and deploy.md never said how to create the first API key.
(tests/test_docs_examples.py and tests/test_hunt_docs.py run the other doc examples.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from typing import List

import pytest
from packaging.specifiers import SpecifierSet

from routeplane import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
_SHELL_BLOCK = re.compile(r"^```(?:sh|console|bash)\n(.*?)^```", re.S | re.M)
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
_SUBCOMMANDS = ("serve", "check", "plugins", "plugin", "migrate", "spend", "token", "keys", "acp")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


# --- the Python the README asks for ----------------------------------------------------------------


def _readme_python() -> str:
    found = re.search(r"Python (3\.\d+)\+", _read(os.path.join(ROOT, "README.md")))
    assert found, "the README's quickstart names the Python it needs"
    return found.group(1)


def test_the_python_the_readme_asks_for_can_install_gunicorn() -> None:
    """The README said Python 3.9+, but gunicorn >= 24 (setup.cfg) needs 3.10: `make serve` on 3.9 failed in
    pip with "Package 'gunicorn' requires a different Python"."""
    needs = metadata.metadata("gunicorn")["Requires-Python"]
    assert f"{_readme_python()}.0" in SpecifierSet(needs or ""), f"gunicorn needs Python {needs}"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_refuses_an_older_python_before_building_a_venv(tmp_path) -> None:
    """`make serve` with a Python older than the README's says so in one line, instead of a venv that pip
    then cannot fill."""
    fake = tmp_path / "python-3.9"
    fake.write_text("#!/bin/sh\n"  # a python3 that reports 3.9.18 for the `-c` check, and nothing else
                    f"exec {shlex.quote(sys.executable)} -c 'import sys; sys.version_info = (3, 9, 18); "
                    "sys.version = \"3.9.18\"; exec(sys.argv[1])' \"$2\"\n")
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-C", ROOT, "venv", f"VENV={venv}", f"PYTHON={fake}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"routeplane needs Python {_readme_python()}+" in out.stderr and "not 3.9.18" in out.stderr
    assert not venv.exists()


# --- routeplane check: every unset secret at once, errors that point into the file -------------------


def test_check_names_every_unset_secret_of_deploy_md_at_once(tmp_path, monkeypatch, capsys) -> None:
    """deploy.md's config run through `routeplane check` before the secrets file was sourced: both missing
    keys are named in one run (configuration.md: every key's problem at once), not one per attempt."""
    block = _YAML_BLOCK.findall(_read(os.path.join(DOCS, "deploy.md")))[0]
    assert "${OPENAI_API_KEY}" in block and "${ANTHROPIC_API_KEY}" in block
    path = tmp_path / "routeplane.yaml"
    path.write_text(block)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ROUTEPLANE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "providers.openai.api_key: environment variable OPENAI_API_KEY is not set" in err
    assert "providers.anthropic.api_key: environment variable ANTHROPIC_API_KEY is not set" in err
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert cli.main(["check", str(path)]) == 0, capsys.readouterr().err


def test_one_unset_secret_keeps_its_one_line_message(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "routeplane.yaml"
    path.write_text("providers:\n  openai: {protocol: openai_chat, api_key: '${NEWUSER_UNSET_KEY}'}\n"
                    "models:\n  default: {targets: [{provider: openai, model: gpt-4.1}]}\n")
    monkeypatch.delenv("NEWUSER_UNSET_KEY", raising=False)
    assert cli.main(["check", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"routeplane: {path}: providers.openai.api_key: environment variable NEWUSER_UNSET_KEY is not set "
        "(use ${NEWUSER_UNSET_KEY:-default} to make it optional)\n")


def test_a_yaml_error_points_into_the_file_not_a_byte_string(tmp_path, capsys) -> None:
    path = tmp_path / "routeplane.yaml"
    path.write_text("providers:\n  local: {protocol: mock\n")
    assert cli.main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f'in "{path}", line 2' in err and "<byte string>" not in err


# --- commands in a pipe --------------------------------------------------------------------------------


def test_a_command_whose_reader_went_away_exits_without_a_traceback(tmp_path) -> None:
    """`routeplane plugins | head -3` printed a BrokenPipeError traceback once head had its lines."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write is EPIPE
    try:
        out = subprocess.run([sys.executable, "-m", "routeplane.cli", "plugins"], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, cwd=str(tmp_path), timeout=60)
    finally:
        os.close(write_end)
    assert out.returncode == 1
    assert out.stderr == "", out.stderr


# --- every routeplane command the docs show parses -----------------------------------------------------


def _doc_commands() -> List[pytest.param]:
    """`routeplane <subcommand> …` lines of the README's and docs' shell blocks (and `$ routeplane …` lines of
    plain ones, which show output too), as a reader would type them (synopses with `[…]` and placeholders
    with `…` are not commands)."""
    out = []
    for path in [os.path.join(ROOT, "README.md")] + sorted(
            os.path.join(DOCS, n) for n in os.listdir(DOCS) if n.endswith(".md")):
        for lang, block in _FENCE.findall(_read(path)):
            if lang not in ("sh", "console", "bash", ""):
                continue
            for line in block.replace("\\\n", " ").splitlines():
                if not lang and not line.startswith("$ "):
                    continue
                inner = re.search(r"sh -c '(.*)'", line)
                line = inner.group(1) if inner else line
                found = re.search(rf"(?:^|[\s/$])routeplane ((?:{'|'.join(_SUBCOMMANDS)})\b.*)", line)
                if not found or "[" in found.group(1) or "…" in found.group(1):
                    continue
                words = shlex.split(found.group(1), comments=True)
                out.append(pytest.param(words, id=f"{os.path.basename(path)}: {' '.join(words)}"))
    return out


def test_the_docs_show_routeplane_commands() -> None:
    shown = {p.values[0][0] for p in _doc_commands()}
    assert {"check", "migrate", "keys", "token", "spend"} <= shown, shown


@pytest.mark.parametrize("words", _doc_commands())
def test_every_routeplane_command_the_docs_show_parses(words: List[str]) -> None:
    try:
        cli.build_parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"`routeplane {' '.join(words)}` is refused by the command's own options")


def test_deploy_md_creates_the_first_keys_as_the_service_user_with_its_config() -> None:
    """deploy.md turns on `auth.mode: api_keys` and never said how to get a key: every call was a 401. The
    keys must be made in the service's store, as its user (a SQLite file root writes is not the service's)."""
    text = _read(os.path.join(DOCS, "deploy.md"))
    lines = [b for block in _SHELL_BLOCK.findall(text) for b in block.splitlines() if "keys create" in b]
    assert any("--scope admin" in b for b in lines) and any("--scope" not in b for b in lines)
    for line in lines:
        assert "runuser -u routeplane" in line and "--config /etc/routeplane/routeplane.yaml" in line
        assert ". /etc/routeplane/secrets.env" in line
