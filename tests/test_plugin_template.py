"""`routeplane plugin new` writes a package whose own tests pass as generated; `routeplane plugins` lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from routeplane.scaffold import new_plugin


def test_generated_plugin_tests_pass_fast(tmp_path):
    root = subprocess.run([sys.executable, "-m", "routeplane.cli", "plugin", "new", "word_filter",
                           "--directory", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "routeplane-word-filter" in root.stdout
    pkg = tmp_path / "routeplane-word-filter"
    assert (pkg / "setup.cfg").read_text().count("routeplane.plugins") == 1
    env = dict(os.environ, PYTHONPATH=str(pkg))
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")],
                         cwd=pkg, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout
    # Speed is reported, not asserted (a loaded CI machine is no benchmark): pytest's own timing.
    print(f"template suite: {run.stdout.strip().splitlines()[-1]} (wall {wall:.2f}s incl. interpreter start)")


def test_invalid_names_refused(tmp_path):
    for bad in ("Bad", "1x", "class", "a-b", ""):
        with pytest.raises(ValueError):
            new_plugin(bad, str(tmp_path))
    new_plugin("ok", str(tmp_path))
    with pytest.raises(FileExistsError):
        new_plugin("ok", str(tmp_path))


def test_plugins_command_lists_installed_plugins():
    run = subprocess.run([sys.executable, "-m", "routeplane.cli", "plugins", "--json"], capture_output=True,
                         text=True, check=True)
    rows = json.loads(run.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert {"id", "target", "enabled"} <= set(row)
        assert "hooks" in row or "error" in row
