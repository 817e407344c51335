"""`routeplane plugin new` writes a package whose own tests pass as generated; `routeplane plugins` lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from routeplane.scaffold import new_plugin


def _run_pytest(target, cwd):
    """Plain `pytest TARGET` from `cwd`, as an author runs it before `pip install -e .`.

    No PYTHONPATH, and the `pytest` script rather than `python -m pytest`, which puts `cwd` on
    sys.path and would hide a package the generated tests cannot import (PYTHONSAFEPATH stops
    that where there is no script, on Python 3.11+).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONSAFEPATH"] = "1"
    script = os.path.join(os.path.dirname(sys.executable), "pytest")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "pytest"]
    return subprocess.run(command + ["-q", "-p", "no:cacheprovider", str(target)],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_generated_plugin_tests_pass_fast(tmp_path):
    root = subprocess.run([sys.executable, "-m", "routeplane.cli", "plugin", "new", "word_filter",
                           "--directory", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "routeplane-word-filter" in root.stdout
    pkg = tmp_path / "routeplane-word-filter"
    assert (pkg / "setup.cfg").read_text().count("routeplane.plugins") == 1
    t0 = time.monotonic()
    run = _run_pytest(pkg, tmp_path)  # from outside the package: its own pytest config finds the package
    wall = time.monotonic() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    # Speed is reported, not asserted (a loaded CI machine is no benchmark): pytest's own timing.
    print(f"template suite: {run.stdout.strip().splitlines()[-1]} (wall {wall:.2f}s incl. interpreter start)")


def test_generated_tests_run_in_place_without_install(tmp_path):
    """`pytest tests` inside the package, never installed: no ModuleNotFoundError."""
    pkg = new_plugin("word_filter", str(tmp_path))
    run = _run_pytest("tests", pkg)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_hyphenated_names_as_the_docs_write_them(tmp_path):
    pkg = tmp_path / "routeplane-banned-phrase"
    assert new_plugin("banned-phrase", str(tmp_path)) == str(pkg)
    assert (pkg / "routeplane_banned_phrase" / "__init__.py").exists()
    source = (pkg / "routeplane_banned_phrase" / "__init__.py").read_text()
    assert 'PluginId("banned-phrase")' in source and "class BannedPhrasePlugin(Plugin)" in source
    assert "banned-phrase = routeplane_banned_phrase:BannedPhrasePlugin" in (pkg / "setup.cfg").read_text()
    assert "banned-phrase:" in (pkg / "README.md").read_text()
    run = _run_pytest(pkg, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_invalid_names_refused(tmp_path):
    for bad in ("Bad", "1x", "class", "a--b", "-ab", "ab-", "a_-b", "a b", "x" * 42, ""):
        with pytest.raises(ValueError):
            new_plugin(bad, str(tmp_path))
    new_plugin("ok", str(tmp_path))
    with pytest.raises(FileExistsError):
        new_plugin("ok", str(tmp_path))
    new_plugin("a-b", str(tmp_path))
    with pytest.raises(FileExistsError):  # the same directory, routeplane-a-b
        new_plugin("a_b", str(tmp_path))


def test_plugins_command_lists_installed_plugins():
    run = subprocess.run([sys.executable, "-m", "routeplane.cli", "plugins", "--json"], capture_output=True,
                         text=True, check=True)
    rows = json.loads(run.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert {"id", "target", "enabled"} <= set(row)
        assert "hooks" in row or "error" in row
