"""Bad input over HTTP (Flask test client): always a 4xx in the OpenAI error shape, never a 500 or a traceback."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

import pytest

from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook
from routeplane.testing import Gateway

CONFIG: Dict[str, Any] = {
    "server": {"max_body_bytes": 4096},
    "providers": {"local": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}},
}
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gw() -> Gateway:
    return Gateway(config=CONFIG)


def assert_openai_error(resp: Any, status: int, *, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    """The OpenAI envelope, the right status, JSON, and nothing that looks like a traceback or HTML."""
    raw = resp.get_data(as_text=True) if hasattr(resp, "get_data") else resp.body.decode()
    got = resp.status_code if hasattr(resp, "status_code") else resp.status
    assert got == status, raw
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), ctype
    assert "Traceback" not in raw and "<html" not in raw.lower() and 'File "' not in raw
    body = json.loads(raw)
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    assert isinstance(err["type"], str) and err["type"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def post(gw: Gateway, data: Any, content_type: Optional[str] = "application/json", **kw: Any) -> Any:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return gw.client.post(CHAT, data=data, headers=headers, **kw)


def test_valid_request_works(gw):
    r = gw.chat("hello")
    assert r.status == 200 and r.json["choices"][0]["message"]["content"] == "You said: hello"
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("data", [b"{", b"{'model': 'x'}", b'{"model": "default",}', b"nul", b"\xef\xbb\xbf{}x"])
def test_malformed_json(gw, data):
    err = assert_openai_error(post(gw, data), 400)
    assert err["type"] == "invalid_request_error"
    assert "JSON" in err["message"] or "UTF-8" in err["message"]


def test_empty_body(gw):
    err = assert_openai_error(post(gw, b""), 400)
    assert "empty" in err["message"]


@pytest.mark.parametrize("payload", ['[]', '"text"', 'null', '42'])
def test_body_that_is_not_an_object(gw, payload):
    assert_openai_error(post(gw, payload), 400)


@pytest.mark.parametrize("body, param", [
    ({"model": 42, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "default", "messages": {"role": "user"}}, "messages"),
    ({"model": "default", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"model": "default", "messages": [{"role": "user", "content": "x"}], "stream": "true"}, "stream"),
    ({"model": "default", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens"),
    ({"model": "default", "messages": [{"role": "user", "content": {"text": "x"}}]}, "messages[0].content"),
])
def test_wrong_field_types(gw, body, param):
    err = assert_openai_error(post(gw, json.dumps(body)), 400, param=param)
    assert "Invalid type" in err["message"] or param in err["message"]


def test_missing_model_and_messages(gw):
    err = assert_openai_error(post(gw, json.dumps({"messages": [{"role": "user", "content": "x"}]})), 400,
                              param="model", code="missing_required_parameter")
    assert "model" in err["message"]
    assert_openai_error(post(gw, json.dumps({"model": "default"})), 400, param="messages")


def test_unknown_model_is_404_with_a_hint(gw):
    err = assert_openai_error(post(gw, json.dumps({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]})),
                              404, param="model", code="model_not_found")
    assert "gpt-nope" in err["message"] and "/v1/models" in err["message"]
    assert_openai_error(gw.client.get("/v1/models/gpt-nope"), 404)


def test_oversized_body_is_413(gw):
    big = json.dumps({"model": "default", "messages": [{"role": "user", "content": "x" * 10_000}]})
    err = assert_openai_error(post(gw, big), 413)
    assert "4096" in err["message"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_non_json_content_type_is_415(gw, ctype):
    body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "x"}]})
    err = assert_openai_error(post(gw, body, content_type=ctype), 415)
    assert "application/json" in err["message"]


def test_json_content_type_with_charset_is_accepted(gw):
    body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "x"}]})
    assert post(gw, body, content_type="application/json; charset=utf-8").status_code == 200


def test_invalid_utf8(gw):
    err = assert_openai_error(post(gw, b'{"model": "default", "messages": [{"role": "user", "content": "\xff\xfe"}]}'),
                              400)
    assert "UTF-8" in err["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(gw, constant):
    raw = '{"model": "default", "messages": [{"role": "user", "content": "x"}], "temperature": %s}' % constant
    err = assert_openai_error(post(gw, raw), 400)
    assert constant.lstrip("-") in err["message"]


def test_deeply_nested_json():
    gw = Gateway(config={**CONFIG, "server": {"max_body_bytes": 1 << 20}})
    raw = '{"model": "default", "messages": [{"role": "user", "content": "x"}], "metadata": ' + "[" * 3000 + "]" * 3000 + "}"
    resp = post(gw, raw)
    # Either a clear 400 (too deep) or accepted as an extra: never a 500.
    assert resp.status_code in (200, 400)
    deeper = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_openai_error(post(gw, deeper), 400)


def test_unknown_path_is_404_json(gw):
    err = assert_openai_error(gw.client.get("/v1/nothing-here"), 404)
    assert err["type"] == "invalid_request_error"
    assert_openai_error(gw.client.post("/v2/chat/completions", json={}), 404)


def test_wrong_method_is_405_json(gw):
    assert_openai_error(gw.client.get(CHAT), 405)
    assert_openai_error(gw.client.delete("/v1/models"), 405)


def test_models_list_shape(gw):
    body = gw.client.get("/v1/models").get_json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["default"]
    assert body["data"][0]["object"] == "model"


def test_upstream_failure_is_openai_shaped():
    gw = Gateway(config={"providers": {"local": {"protocol": "mock"}},
                         "models": {"down": {"targets": [{"provider": "local", "model": "fail-503"}]}}},
                 executor=None)
    r = gw.request({"model": "down", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 502
    assert r.json["error"]["message"] and len(r.settlements) == 1


# --- hook decisions over HTTP ----------------------------------------------------------------


class Limit(PreRequestHook):
    def check(self, ctx):
        return HookDecision.deny(DenyReason.rate_limited("Too many requests for this key.", retry_after=2.2))


class Crash(PreRequestHook):
    def check(self, ctx):
        raise RuntimeError("secret internal detail sk-should-not-leak")


def test_rate_limited_deny_has_retry_after_header():
    gw = Gateway(config=CONFIG, hooks=[Limit()])
    r = gw.chat("x")
    assert r.status == 429 and r.headers["Retry-After"] == "3"
    assert r.json["error"]["message"] == "Too many requests for this key."
    assert r.settlements == []


def test_crashing_hook_is_a_clean_500_without_details():
    gw = Gateway(config=CONFIG, hooks=[Crash()])
    r = gw.chat("x")
    assert r.status == 500
    raw = r.body.decode()
    assert "sk-should-not-leak" not in raw and "Traceback" not in raw and "RuntimeError" not in raw
    assert r.json["error"]["type"] == "server_error"


def test_stream_closed_by_client_before_reading_is_settled():
    gw = Gateway(config=CONFIG)
    resp = gw.client.post(CHAT, json={"model": "default", "stream": True,
                                      "messages": [{"role": "user", "content": "a b c"}]}, buffered=False)
    assert resp.status_code == 200
    assert gw.settlements.items == []
    resp.close()
    [s] = gw.settlements.items
    assert s.outcome == "client_disconnected"


def test_stream_error_after_first_byte_is_an_error_frame():
    from routeplane.errors import UpstreamConnectionError
    from routeplane.language_model.types import ResponseStart, TextDelta, TextStart

    gw = Gateway(config=CONFIG, script=[[ResponseStart("r", "m"), TextStart(0), TextDelta(0, "partial"),
                                         UpstreamConnectionError("local: connection reset", provider="local")]])
    r = gw.chat("x", stream=True)
    assert r.status == 200
    frames = r.sse
    assert frames[-1] != "[DONE]" and "error" in frames[-1]
    assert "connection reset" in frames[-1]["error"]["message"]
    assert not any(isinstance(f, dict) and f.get("choices") and f["choices"][0].get("finish_reason") for f in frames)
    [s] = r.settlements
    assert s.outcome == "upstream_error"
