"""`routeplane check` with no FILE checks the config serve and migrate would load: $ROUTEPLANE_CONFIG first."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

GOOD = ("providers:\n  mock: {protocol: mock}\n"
        "models:\n  default: {targets: [{provider: mock, model: echo}]}\n")
ROUTEPLANE = os.path.join(os.path.dirname(sys.executable), "routeplane")


def _run(args: List[str], cwd: Any, **env: str) -> subprocess.CompletedProcess:
    base: Dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    return subprocess.run([ROUTEPLANE, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def test_check_without_a_file_reads_routeplane_config(tmp_path: Any) -> None:
    (tmp_path / "env.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text("providers: {}\nmodels: {x: {targets: [{provider: nope, model: m}]}}\n")
    # A broken ./routeplane.yaml in the working directory: $ROUTEPLANE_CONFIG wins over it, as for serve.
    (tmp_path / "routeplane.yaml").write_text("not: [valid\n")
    ok = _run(["check"], tmp_path, ROUTEPLANE_CONFIG=str(tmp_path / "env.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{tmp_path / 'env.yaml'}: OK (1 providers, 1 routes")
    bad = _run(["check"], tmp_path, ROUTEPLANE_CONFIG=str(tmp_path / "bad.yaml"))
    assert bad.returncode == 1 and "Unknown provider 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    # FILE (or --config) still wins over the environment.
    explicit = _run(["check", "env.yaml"], tmp_path, ROUTEPLANE_CONFIG=str(tmp_path / "bad.yaml"))
    assert explicit.returncode == 0, explicit.stderr
    flag = _run(["check", "--config", "env.yaml"], tmp_path, ROUTEPLANE_CONFIG=str(tmp_path / "bad.yaml"))
    assert flag.returncode == 0 and flag.stdout.startswith("env.yaml: OK"), flag.stderr
    both = _run(["check", "env.yaml", "--config", "bad.yaml"], tmp_path)
    assert both.returncode == 2 and "once" in both.stderr


@pytest.mark.parametrize("has_local", [True, False])
def test_check_without_a_file_or_env_follows_serve(tmp_path: Any, has_local: bool) -> None:
    if has_local:
        (tmp_path / "routeplane.yaml").write_text(GOOD)
    r = _run(["check"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("routeplane.yaml: OK" if has_local else "<built-in defaults>: OK")
