"""routeplane mounted under a prefix inside a separate Flask app (`app.init_app(host, url_prefix="/llm")`)."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest
from flask import Flask, jsonify
from openai import OpenAI
from werkzeug.serving import make_server

from routeplane.app import App, build_app
from routeplane.config import parse_config

CONFIG = {
    "providers": {"local": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
}


def make_host() -> Flask:
    host = Flask("host_app")

    @host.get("/")
    def index() -> Any:
        return "host home"

    @host.get("/api/ping")
    def ping() -> Any:
        return jsonify({"pong": True})

    @host.errorhandler(404)
    def host_404(exc: Any) -> Any:
        return jsonify({"host_error": "not found"}), 404

    gateway: App = build_app(parse_config(CONFIG, "<mount test>"))
    gateway.init_app(host, url_prefix="/llm/")  # trailing slash tolerated
    return host


@pytest.fixture(scope="module")
def host() -> Flask:
    return make_host()


def chat_body(**extra: Any) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": "mounted"}], **extra}


def test_prefixed_chat_completion(host):
    with host.test_client() as c:
        r = c.post("/llm/v1/chat/completions", json=chat_body())
        assert r.status_code == 200
        assert r.get_json()["choices"][0]["message"]["content"] == "You said: mounted"


def test_prefixed_stream(host):
    with host.test_client() as c:
        r = c.post("/llm/v1/chat/completions", json=chat_body(stream=True, stream_options={"include_usage": True}))
        assert r.status_code == 200 and r.mimetype == "text/event-stream"
        frames = [line[6:] for line in r.get_data(as_text=True).split("\n") if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        chunks = [json.loads(f) for f in frames[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "You said: mounted"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_prefixed_models_health_and_errors(host):
    with host.test_client() as c:
        assert [m["id"] for m in c.get("/llm/v1/models").get_json()["data"]] == ["default"]
        assert c.get("/llm/health").get_json() == {"status": "ok"}
        bad = c.post("/llm/v1/chat/completions", data=b"{nope", content_type="application/json")
        assert bad.status_code == 400 and "JSON" in bad.get_json()["error"]["message"]
        missing = c.post("/llm/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "model_not_found"


def test_host_routes_and_handlers_still_work(host):
    with host.test_client() as c:
        assert c.get("/").get_data(as_text=True) == "host home"
        assert c.get("/api/ping").get_json() == {"pong": True}
        # The host keeps its own 404 handler: mounting does not take over the host's error pages.
        assert c.get("/elsewhere").get_json() == {"host_error": "not found"}


def test_unprefixed_paths_are_not_served(host):
    with host.test_client() as c:
        assert c.post("/v1/chat/completions", json=chat_body()).status_code == 404
        assert c.get("/v1/models").status_code == 404
        assert c.get("/health").status_code == 404


def test_gateway_state_lives_on_the_host_app(host):
    assert isinstance(host.extensions["routeplane"], App)


def test_two_gateways_in_two_hosts_are_independent():
    a, b = make_host(), Flask("other_host")
    other = build_app(parse_config({"providers": {"p": {"protocol": "mock"}},
                                    "models": {"only-b": {"targets": [{"provider": "p", "model": "echo"}]}}}, "<b>"))
    other.init_app(b, url_prefix="/gw")
    with a.test_client() as ca, b.test_client() as cb:
        assert [m["id"] for m in ca.get("/llm/v1/models").get_json()["data"]] == ["default"]
        assert [m["id"] for m in cb.get("/gw/v1/models").get_json()["data"]] == ["only-b"]


@pytest.fixture(scope="module")
def served_host(host: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, host, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="mounted-host")
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_openai_sdk_against_mounted_gateway(served_host):
    with OpenAI(base_url=served_host + "/llm/v1", api_key="unused", max_retries=0, timeout=20) as client:
        r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "via sdk"}])
        assert r.choices[0].message.content == "You said: via sdk"
        chunks = list(client.chat.completions.create(model="default", stream=True,
                                                     messages=[{"role": "user", "content": "streamed"}],
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: streamed"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        assert [m.id for m in client.models.list()] == ["default"]
    with OpenAI(base_url=served_host + "/v1", api_key="unused", max_retries=0, timeout=20) as wrong:
        with pytest.raises(Exception) as info:
            wrong.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}])
        assert getattr(info.value, "status_code", None) == 404


def test_host_max_content_length_is_a_413_in_the_wire_shape():
    """A host app's own MAX_CONTENT_LENGTH (smaller than routeplane's limit) still gives an OpenAI-shaped 413."""
    host = Flask("host_with_limit")
    host.config["MAX_CONTENT_LENGTH"] = 2000
    build_app(parse_config(CONFIG, "<limit test>")).init_app(host, url_prefix="/llm")
    big = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 5000}]))
    with host.test_client() as c:
        r = c.post("/llm/v1/chat/completions", data=big, content_type="application/json")
        assert r.status_code == 413
        assert r.get_json()["error"]["message"]
        assert c.post("/llm/v1/chat/completions", json=chat_body()).status_code == 200
