"""A test plugin that appends every settlement as one JSON line to a file, installable into a gunicorn process.

    env = settle_log_env(tmpdir)            # PYTHONPATH with a tiny dist-info declaring the entry point
    config["plugins"] = {"settle_log": {"path": log_path}}
    GatewayProcess(config, env=env)
    read_settlements(log_path)              # one dict per settlement, from every worker
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from routeplane.app import AppBuilder, Plugin, PluginId
from routeplane.hooks.language_model import SettlementRecorder
from routeplane.language_model.settlement import Settlement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Recorder(SettlementRecorder):
    def __init__(self, path: str) -> None:
        self.path = path

    def record(self, settlement: Settlement) -> None:
        line = json.dumps({"request_id": settlement.request_id, "outcome": settlement.outcome,
                           "streamed": settlement.streamed, "status": settlement.status,
                           "error_type": settlement.error_type, "pid": os.getpid()}) + "\n"
        # One O_APPEND write per line: lines from several workers do not interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class SettleLogPlugin(Plugin):
    id = PluginId("settle_log")

    def __init__(self, path: str) -> None:
        self.path = path

    def install(self, app: AppBuilder) -> None:
        app.language_model_builder().settlement_recorder(_Recorder(self.path))


def settle_log_env(tmpdir: str) -> Dict[str, str]:
    """Environment for a gateway process in which `plugins: {settle_log: {path: ...}}` resolves."""
    dist = os.path.join(tmpdir, "routeplane_test_settle_log-0.dist-info")
    os.makedirs(dist, exist_ok=True)
    with open(os.path.join(dist, "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\nName: routeplane-test-settle-log\nVersion: 0\n")
    with open(os.path.join(dist, "entry_points.txt"), "w") as fh:
        fh.write("[routeplane.plugins]\nsettle_log = tests.support.settle_log:SettleLogPlugin\n")
    path = os.pathsep.join(p for p in (tmpdir, ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def read_settlements(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
