"""A HUP after `pip install -e` of a new plugin: the master must see the new .pth file before it forks workers."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import site
import sys
import time
import uuid
from typing import Any

import pytest
import requests

from routeplane.import_paths import PthWatch


def test_a_pth_file_added_after_start_up_makes_its_module_importable(tmp_path: Any) -> None:
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    (tmp_path / "old").mkdir()
    (site_dir / "old.pth").write_text(str(tmp_path / "old") + "\n")  # run at start-up already (not here)
    watch = PthWatch([str(site_dir)])  # the master at start-up
    src = tmp_path / "src"
    src.mkdir()
    (src / "late_plugin_mod.py").write_text("VALUE = 42\n")
    (site_dir / "__editable__.late_plugin.pth").write_text(str(src) + "\n")  # what `pip install -e` writes
    try:
        assert watch.refresh() == ["__editable__.late_plugin.pth"]
        assert importlib.import_module("late_plugin_mod").VALUE == 42
        assert str(tmp_path / "old") not in sys.path  # files seen at start-up are not run again
        assert watch.refresh() == []
        (site_dir / "bad.pth").write_bytes(b"/opt/caf\xe9\n")  # not UTF-8: site raises while reading it
        (site_dir / "exits.pth").write_text("import sys; sys.exit(3)\n")
        assert watch.refresh() == ["bad.pth", "exits.pth"]  # skipped, logged, and the master goes on
        assert watch.refresh() == []
    finally:
        sys.path[:] = [p for p in sys.path if p not in (str(src), str(tmp_path / "old"))]
        sys.modules.pop("late_plugin_mod", None)


def test_hup_after_an_editable_install_serves_the_new_plugin(tmp_path: Any) -> None:
    """What `pip install -e ./plugin` leaves (a .pth naming the source, a dist-info with the entry point),
    written into this venv after the gateway started, then a HUP: the workers failed to import the plugin
    and gunicorn shut the whole server down."""
    from tests.support.gateway import GatewayProcess

    name = f"rp_late_{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(
        "from routeplane import Plugin, PluginId\n"
        "from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook\n"
        "class Deny(PreRequestHook):\n"
        "    def check(self, ctx):\n"
        "        return HookDecision.deny(DenyReason.forbidden('denied by the late plugin'))\n"
        f"class Late(Plugin):\n    id = PluginId('{name}')\n"
        "    def install(self, app):\n        app.language_model_builder().pre_request_hook(Deny())\n")
    site_dir = next(d for d in site.getsitepackages() if d.startswith(sys.prefix))
    if not os.access(site_dir, os.W_OK):  # what `pip install -e` does needs a writable venv
        pytest.skip(f"{site_dir} is not writable: the editable install cannot be played")
    pth = f"{site_dir}/__editable__.{name}-0.0.pth"
    dist = f"{site_dir}/{name}-0.0.dist-info"
    config: Any = {"providers": {"mock": {"protocol": "mock"}},
                   "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}}
    gw = GatewayProcess(config, workers=2, threads=2).start()
    try:
        def chat() -> Any:
            return requests.post(gw.url + "/v1/chat/completions", timeout=10,
                                 json={"model": "default", "messages": [{"role": "user", "content": "hi"}]})

        assert chat().status_code == 200
        os.makedirs(dist)
        with open(f"{dist}/METADATA", "w") as fh:
            fh.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0\n")
        with open(f"{dist}/entry_points.txt", "w") as fh:
            fh.write(f"[routeplane.plugins]\n{name} = {name}:Late\n")
        with open(pth, "w") as fh:
            fh.write(f"{src}\n")
        config["plugins"] = {name: {}}
        gw.write_config(config)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status != 403:
            try:
                status = chat().status_code
            except requests.ConnectionError:
                status = None  # the old code: the whole server is gone
                break
            time.sleep(0.2)
        assert status == 403, gw.logs()[-3000:]
        assert gw.proc is not None and gw.proc.poll() is None
    finally:
        gw.stop()
        if os.path.exists(pth):
            os.remove(pth)
        shutil.rmtree(dist, ignore_errors=True)
