"""The observe plugin tested the way any plugin author would: with routeplane's kit, synchronously."""

from __future__ import annotations

from routeplane_observe import ObservePlugin

from routeplane.testing import Gateway, check_plugin


def test_keeps_the_plugin_contract_with_an_unreachable_collector() -> None:
    # Port 9 on loopback answers nothing: exports fail, requests must not notice.
    plugin = ObservePlugin(otlp_endpoint="http://127.0.0.1:9", propagate=True)
    report = check_plugin(plugin)
    assert report.hooks["route_hook"] == 1 and report.hooks["observe_hook"] == 1
    plugin.telemetry.shutdown()


def test_traceparent_reaches_every_target_and_honours_the_inbound_trace() -> None:
    gw = Gateway(plugins=[ObservePlugin(propagate=True)])
    inbound = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = gw.request({"model": "default", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"traceparent": inbound})
    assert r.status == 200
    [call] = gw.executor.calls
    sent = call.target.headers["traceparent"]
    assert sent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and sent != inbound
