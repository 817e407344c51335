"""Credentials a client puts where a name belongs never reach the request log, the spend log, spans or `spend`."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List

import pytest
from opentelemetry.sdk.resources import Resource
from routeplane_observe.labels import Labels
from routeplane_observe.otel import request_spans

from routeplane.app import AppBuilder, Plugin, PluginId, build_app
from routeplane.cli import main
from routeplane.config import parse_config
from routeplane.logs import redact
from routeplane.testing import CapturedEvents

RPK = "rpk_0123456789abcdef_" + "A" * 43
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
ANTHROPIC_KEY = "sk-ant-api03-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"
GOOGLE_KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
SECRETS = (RPK, JWT, OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY)
SECRET_PARTS = ("A" * 43, "c2lnbmF0dXJl", "Ab3dEf6hIj9kLm2n", "Zz9Yy8Xx7Ww6Vv5U", "SyA1b2C3d4E5f6G7")


def leaked(text: str) -> List[str]:
    return [p for p in SECRET_PARTS if p in text]


@pytest.mark.parametrize("key", [OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY])
def test_upstream_key_shapes_are_redacted_whole(key: str) -> None:
    assert redact(f"model={key} x") == "model=[redacted] x"
    assert redact(f"openai:{key}") == "openai:[redacted]"


def test_names_that_only_contain_sk_or_aiza_are_left_alone() -> None:
    for name in ("task-abcdefghijklmnopqrstuvwxyz", "desk-2024-abcdefghijklmnopqrstu", "sk-short", "gpt-4.1-mini",
                 "AIzaShort", "claude-sonnet-4-5"):
        assert redact(name) == name


def build(tmp_path: Any, fmt: str) -> Any:
    config = parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/s11.db"},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "plugins": {"request_log": {"format": fmt}},
    })
    events = CapturedEvents()

    class Capture(Plugin):
        id = PluginId("s11_capture")

        def install(self, app: AppBuilder) -> None:
            app.language_model_builder().observe_hook(events)

    app = build_app(config, [Capture()])
    app.pipeline.observers.inline = True
    return app, events


def send_secrets(client: Any) -> None:
    for key in SECRETS:
        for model in (key, f"mock:{key}"):  # an unknown route (404) and a direct provider:model (200)
            r = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code in (200, 404)
    for key in (RPK, JWT):  # both pass the x-request-id syntax check; a credential is not kept as the id
        r = client.post("/v1/chat/completions", headers={"x-request-id": key},
                        json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_request_log_lines_carry_no_credential_from_model_or_request_id(tmp_path: Any, caplog: Any, fmt: str) -> None:
    # caplog's handler is not the gateway's (like a mounting app's own handler): the line itself must be clean.
    app, _events = build(tmp_path, fmt)
    with caplog.at_level(logging.INFO, logger="routeplane.requests"):
        send_secrets(app.flask_app().test_client())
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "routeplane.requests"]
    assert len(lines) == 2 * len(SECRETS) + 2
    assert [leaked(line) for line in lines if leaked(line)] == []
    assert sum("[redacted]" in line for line in lines) == len(lines) - 2  # the two requests with a fresh id
    if fmt == "json":
        served = [json.loads(line) for line in lines if json.loads(line)["status"] == 200]
        assert {d["model"] for d in served} >= {"[redacted]", "echo"}


def test_spans_carry_no_credential_and_span_names_are_bounded(tmp_path: Any) -> None:
    app, events = build(tmp_path, "json")
    send_secrets(app.flask_app().test_client())
    ends = events.named("on_request_end")
    assert len(ends) == 2 * len(SECRETS) + 2
    labels = Labels.from_config(app.config)
    names = set()
    for event in ends:
        for span in request_spans(event, Resource.create({}), labels):
            text = span.name + json.dumps(dict(span.attributes or {}), default=str)
            assert leaked(text) == [], text
            names.add(span.name)
    assert names <= {"chat default", "chat other", "chat echo"}


def test_spend_cli_by_route_and_model_shows_no_upstream_key(tmp_path: Any, capsys: Any) -> None:
    app, _events = build(tmp_path, "json")
    client = app.flask_app().test_client()
    for key in (OPENAI_KEY, ANTHROPIC_KEY, GOOGLE_KEY):
        client.post("/v1/chat/completions", json={"model": f"mock:{key}", "messages": [{"role": "user", "content": "x"}]})
    app.shutdown()
    out: Dict[str, str] = {}
    for by in ("route", "model"):
        assert main(["spend", "--database", f"sqlite:///{tmp_path}/s11.db", "--by", by, "--json"]) == 0
        out[by] = capsys.readouterr().out
        assert leaked(out[by]) == []
    rows = json.loads(out["model"])["rows"]
    assert [(r["key"], r["requests"]) for r in rows] == [("[redacted]", 3)]


def test_an_upstream_error_that_echoes_its_key_reaches_no_log_span_or_spend_row(tmp_path: Any, caplog: Any) -> None:
    from tests.support.upstream import FakeUpstream, Reply

    key = "azure-0f3c9b2e7d4a4e1f9c8b7a6d5e4f3a2b"  # no known key shape: only the config knows it is one
    up = FakeUpstream().start()
    up.default = lambda _req: Reply.json({"error": {"message": f"Incorrect API key provided: {key}",
                                                    "type": "invalid_request_error"}}, 401)
    try:
        config = parse_config({
            "database": {"url": f"sqlite:///{tmp_path}/echo.db"},
            "providers": {"up": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": key}},
            "models": {"default": {"targets": [{"provider": "up", "model": "m"}]}},
            "plugins": {"request_log": {"format": "json"}},
        })
        events = CapturedEvents()

        class Capture(Plugin):
            id = PluginId("s11_capture")

            def install(self, app: AppBuilder) -> None:
                app.language_model_builder().observe_hook(events)

        app = build_app(config, [Capture()])
        app.pipeline.observers.inline = True
        with caplog.at_level(logging.INFO, logger="routeplane"):
            r = app.flask_app().test_client().post(
                "/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code >= 400 and key not in r.get_data(as_text=True)
        assert caplog.records and all(key not in rec.getMessage() for rec in caplog.records)
        [event] = events.named("on_request_end")
        assert key not in repr(event)
        spans = request_spans(event, Resource.create({}), Labels.from_config(config))
        assert all(key not in json.dumps(dict(s.attributes or {}), default=str) for s in spans)
        assert key not in repr(app.store.execute("SELECT * FROM spend_log"))
        app.shutdown()
    finally:
        up.stop()
