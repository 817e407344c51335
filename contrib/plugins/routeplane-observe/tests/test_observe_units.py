"""Observe plugin units: traceparent parsing, options, label folding, entry-point discovery."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError
from routeplane_observe import ObservePlugin
from routeplane_observe.labels import Labels
from routeplane_observe.tracecontext import parse_traceparent, traceparent

from routeplane.app import discover_plugins
from routeplane.config import ConfigError, parse_config

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_round_trip_and_rejects() -> None:
    p = parse_traceparent(TP)
    assert p is not None and (p.trace_id, p.span_id, p.sampled) == ("4bf92f3577b34da6a3ce929d0e0e4736",
                                                                    "00f067aa0ba902b7", True)
    assert traceparent(p.trace_id, p.span_id) == TP
    for bad in (None, "", "garbage", TP.replace("00-", "ff-", 1), "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", TP + "-extra"):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future") is not None


def test_labels_fold_unknown_names_to_other() -> None:
    config = parse_config({"providers": {"mock": {"protocol": "mock"}},
                           "models": {"chat": {"targets": [{"provider": "mock", "model": "echo"}]}}}, "t")
    lab = Labels.from_config(config)
    assert (lab.route("chat"), lab.route("mock:x"), lab.route(None)) == ("chat", "other", "other")
    assert (lab.provider("mock"), lab.provider("evil"), lab.provider(None)) == ("mock", "other", "none")
    assert (lab.model("echo"), lab.model("x" * 300)) == ("echo", "other")
    assert (lab.outcome("success"), lab.outcome("weird")) == ("success", "other")


def test_options_are_validated_with_key_paths() -> None:
    with pytest.raises(ValidationError):
        ObservePlugin(otlp_endpoint="collector:4318")
    config: Any = parse_config({"providers": {"mock": {"protocol": "mock"}},
                                "models": {"chat": {"targets": [{"provider": "mock", "model": "echo"}]}},
                                "plugins": {"observe": {"otlp_timeout_seconds": -1}}}, "gw.yaml")
    with pytest.raises(ConfigError, match="plugins.observe.otlp_timeout_seconds"):
        discover_plugins(config)


def test_found_through_the_entry_point() -> None:
    config: Any = parse_config({"providers": {"mock": {"protocol": "mock"}},
                                "models": {"chat": {"targets": [{"provider": "mock", "model": "echo"}]}},
                                "plugins": {"observe": {"prometheus": False}}}, "gw.yaml")
    (plugin,) = discover_plugins(config)
    assert isinstance(plugin, ObservePlugin) and plugin.options["prometheus"] is False
