"""The `routeplane_gateway` fixture closes the stores its gateways opened from a URL, as `with Gateway(...)`
does: before, a plugin author's `routeplane_gateway(store="sqlite:///...")` left the connection open."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_AUTHOR_TESTS = '''
from routeplane.testing import Gateway

made = []


def test_uses_a_store(routeplane_gateway, tmp_path):
    gw = routeplane_gateway(store=f"sqlite:///{tmp_path}/kit.db")
    assert gw.chat("hi").status == 200
    made.append(gw)


def test_the_store_was_closed_after_the_test():
    (gw,) = made
    assert gw.store._db.is_closed()
'''


def test_the_gateway_fixture_closes_stores_it_opened(tmp_path):
    (tmp_path / "test_author.py").write_text(textwrap.dedent(_AUTHOR_TESTS))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                          str(tmp_path / "test_author.py")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout
