"""A stuck observer costs responses nothing; what its full queue drops is counted in /admin/metrics and /metrics."""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Dict

from routeplane.app import AppBuilder, Plugin, PluginId, build_app
from routeplane.config import parse_config
from routeplane.hooks.language_model import ObserveHook

BODY = {"model": "default", "messages": [{"role": "user", "content": "x"}]}


class StuckObserver(ObserveHook):
    """Holds the one observer thread until released; raises afterwards."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def on_request_end(self, event: Any) -> None:
        self.release.wait(30)
        raise RuntimeError("observer failure")


def build(tmp_path: Any, observer: ObserveHook) -> Any:
    config = parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/bp.db"},
        "server": {"observer_queue": 3, "observer_threads": 1, "stats_flush_seconds": 3600},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "plugins": {"observe": {"prometheus_public": True}, "request_log": {"enabled": False}},
    })

    class Stuck(Plugin):
        id = PluginId("s11_stuck")

        def install(self, app: AppBuilder) -> None:
            app.language_model_builder().observe_hook(observer)

    return build_app(config, [Stuck()])


def metric(text: str, name: str, pipeline: str = "language_model") -> int:
    m = re.search(rf'^{name}{{pipeline="{pipeline}"}} (\d+)$', text, re.M)
    assert m, f"{name} missing:\n{text}"
    return int(m.group(1))


def test_full_observer_queue_drops_counts_and_never_slows_a_response(tmp_path: Any) -> None:
    observer = StuckObserver()
    app = build(tmp_path, observer)
    client = app.flask_app().test_client()
    started = time.monotonic()
    for _ in range(20):
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200
    assert time.monotonic() - started < 5  # the stuck observer holds nothing: 20 requests, not 20 x 30 s

    dispatcher = app.pipeline.observers
    assert dispatcher.dropped >= 20 - 3
    admin: Dict[str, Any] = client.get("/admin/metrics").get_json()
    merged = admin["plugins"]["counters"]["routeplane"]["observers"]["language_model"]
    assert merged["dropped"] == dispatcher.dropped  # stored, so summed over workers like the plugins' counters
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "routeplane_observer_events_dropped_total") == dispatcher.dropped
    assert "# TYPE routeplane_observer_errors_total counter" in text

    observer.release.set()
    dispatcher.drain(10)
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "routeplane_observer_errors_total") == dispatcher.errors >= 1
    assert metric(text, "routeplane_observer_events_delivered_total") == dispatcher.delivered
    assert dispatcher.delivered + dispatcher.dropped == 20
    app.shutdown()
