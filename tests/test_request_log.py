"""One structured log line per request, with the request id, never prompt text or credentials."""

from __future__ import annotations

import json
import logging
import shlex

from routeplane.app import build_app
from routeplane.config import parse_config


def make_client(fmt="json"):
    config = parse_config({
        "database": {"url": ""},
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "plugins": {"request_log": {"format": fmt}},
    })
    app = build_app(config)
    app.pipeline.observers.inline = True
    return app.flask_app().test_client()


def test_json_line_per_request_with_inbound_request_id(caplog):
    client = make_client("json")
    with caplog.at_level(logging.INFO, logger="routeplane.requests"):
        r = client.post("/v1/chat/completions", json={"model": "default", "messages": [
            {"role": "user", "content": "my secret prompt text"}]},
            headers={"x-request-id": "abc-123", "Authorization": "Bearer sk-caller-secret-key"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "routeplane.requests"]
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["request_id"] == "abc-123" and data["status"] == 200 and data["route"] == "default"
    assert data["input_tokens"] > 0 and data["attempts"] == 1
    assert "secret prompt" not in lines[0] and "sk-caller" not in lines[0]


def test_text_line_for_a_failure(caplog):
    client = make_client("text")
    with caplog.at_level(logging.INFO, logger="routeplane.requests"):
        r = client.post("/v1/chat/completions", json={"model": "mock:fail-503", "messages": [
            {"role": "user", "content": "x"}]})
    assert r.status_code >= 500
    line = [rec.getMessage() for rec in caplog.records if rec.name == "routeplane.requests"][0]
    assert f"request_id={r.headers['x-request-id']}" in line and "outcome=upstream_error" in line


def test_a_client_chosen_model_name_cannot_forge_a_log_line(caplog):
    client = make_client("text")
    forged = "nope request_id=req_forged status=200 outcome=success"
    with caplog.at_level(logging.INFO, logger="routeplane.requests"):
        client.post("/v1/chat/completions", json={"model": forged, "messages": [{"role": "user", "content": "x"}]})
        # a line break in a model name never gets this far: 400 at decoding (docs/configuration.md, Limits)
        r = client.post("/v1/chat/completions",
                        json={"model": "nope\nrequest_id=req_forged", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "routeplane.requests"]
    fields = dict(token.split("=", 1) for token in shlex.split(line))  # quoted: one value, not three fields
    assert fields["route"] == forged and fields["request_id"] != "req_forged" and fields["status"] == "404"
