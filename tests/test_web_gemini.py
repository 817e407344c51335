"""The Gemini and Responses endpoints in process: paths, credentials, framing and error shapes."""

from __future__ import annotations

import json
from typing import List, Optional

import pytest

from routeplane.hooks.language_model import HookDecision, PreRequestHook
from routeplane.testing import Gateway

BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


class CredentialSpy(PreRequestHook):
    def __init__(self) -> None:
        self.seen: List[Optional[str]] = []

    def check(self, ctx) -> HookDecision:  # type: ignore[no-untyped-def]
        self.seen.append(ctx.credential)
        return HookDecision.allow()


@pytest.fixture
def spy() -> CredentialSpy:
    return CredentialSpy()


@pytest.fixture
def gw(spy: CredentialSpy) -> Gateway:
    return Gateway(hooks=[spy])


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_generate_content_on_both_api_versions(gw: Gateway, version: str) -> None:
    r = gw.request(BODY, path=f"/{version}/models/default:generateContent")
    assert r.status == 200
    assert r.json["candidates"][0]["content"]["parts"] == [{"text": "You said: hi"}]
    assert r.json["usageMetadata"]["totalTokenCount"] > 0


@pytest.mark.parametrize("path,headers,expected", [
    ("/v1beta/models/default:generateContent", {"x-goog-api-key": "g-key"}, "g-key"),
    ("/v1beta/models/default:generateContent?key=q-key", {}, "q-key"),
    ("/v1beta/models/default:generateContent", {"Authorization": "Bearer b-key"}, "b-key"),
    ("/v1beta/models/default:generateContent", {}, None),
])
def test_credential_sources(gw: Gateway, spy: CredentialSpy, path: str, headers: dict, expected: Optional[str]) -> None:
    assert gw.request(BODY, path=path, headers=headers).status == 200
    assert spy.seen == [expected]


def test_sse_stream_and_json_array_stream(gw: Gateway) -> None:
    sse = gw.request(BODY, path="/v1beta/models/default:streamGenerateContent?alt=sse")
    assert sse.status == 200 and sse.headers["Content-Type"].startswith("text/event-stream")
    lines = [line for line in sse.body.split(b"\r\n") if line]
    assert lines and all(line.startswith(b"data: {") for line in lines)
    array = gw.request(BODY, path="/v1beta/models/default:streamGenerateContent")
    assert array.headers["Content-Type"].startswith("application/json")
    chunks = json.loads(array.body)
    assert "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"]) == "You said: hi"


@pytest.mark.parametrize("path,body,status,name", [
    ("/v1beta/models/default:embedContent", BODY, 404, "NOT_FOUND"),
    ("/v1beta/models/default", BODY, 404, "NOT_FOUND"),
    ("/v1beta/models/no-such-model:generateContent", BODY, 404, "NOT_FOUND"),
    ("/v1beta/models/default:generateContent", b"{oops", 400, "INVALID_ARGUMENT"),
    ("/v1beta/models/default:generateContent", {"contents": [{"role": "user", "parts": [{"nope": 1}]}]}, 400,
     "INVALID_ARGUMENT"),
])
def test_errors_are_google_shaped(gw: Gateway, path: str, body, status: int, name: str) -> None:  # type: ignore[no-untyped-def]
    r = gw.request(body, path=path)
    assert r.status == status
    assert set(r.json) == {"error"} and r.json["error"]["code"] == status and r.json["error"]["status"] == name


def test_wrong_content_type_is_google_shaped(gw: Gateway) -> None:
    resp = gw.client.post("/v1beta/models/default:generateContent", data=b"hi", content_type="text/plain")
    assert resp.status_code == 415 and resp.get_json()["error"]["code"] == 415
    resp.close()


def test_openai_model_endpoints_still_answer_on_v1(gw: Gateway) -> None:
    resp = gw.client.get("/v1/models")
    assert resp.status_code == 200 and resp.get_json()["object"] == "list"
    resp.close()


def test_responses_endpoint_errors_are_openai_shaped(gw: Gateway) -> None:
    r = gw.request({"model": "default", "input": "x", "previous_response_id": "resp_1"}, path="/v1/responses")
    assert r.status == 400 and r.json["error"]["type"] == "invalid_request_error"
    assert r.json["error"]["param"] == "previous_response_id"
    r = gw.request({"model": "default", "input": "hello"}, path="/v1/responses")
    assert r.status == 200 and r.json["output"][0]["content"][0]["text"] == "You said: hello"


def test_count_tokens_is_a_marked_estimate(gw: Gateway) -> None:
    r = gw.request({"contents": [{"role": "user", "parts": [{"text": "x" * 40}]}]},
                   path="/v1/models/default:countTokens")
    assert r.status == 200 and r.json == {"totalTokens": 10} and r.headers["x-routeplane-estimate"] == "true"
    wrapped = gw.request({"generateContentRequest": {"contents": [{"role": "user", "parts": [{"text": "x" * 40}]}]}},
                         path="/v1beta/models/default:countTokens")
    assert wrapped.json == {"totalTokens": 10}
    missing = gw.request(BODY, path="/v1beta/models/nope:countTokens")
    assert missing.status == 404 and missing.json["error"]["status"] == "NOT_FOUND"


def test_v1beta_model_list_is_gemini_shaped(gw: Gateway) -> None:
    resp = gw.client.get("/v1beta/models", headers={"x-goog-api-key": "k"})
    names = [m["name"] for m in resp.get_json()["models"]]
    resp.close()
    assert "models/default" in names
    one = gw.client.get("/v1beta/models/models/default")
    assert one.get_json()["supportedGenerationMethods"] == ["generateContent", "streamGenerateContent", "countTokens"]
    one.close()
    missing = gw.client.get("/v1beta/models/nope")
    assert missing.status_code == 404 and missing.get_json()["error"]["status"] == "NOT_FOUND"
    missing.close()


@pytest.mark.parametrize("method,path", [("get", "/v1/responses/resp_1"), ("delete", "/v1/responses/resp_1"),
                                         ("post", "/v1/responses/resp_1/cancel"),
                                         ("get", "/v1/responses/resp_1/input_items")])
def test_stored_response_endpoints_say_the_gateway_is_stateless(gw: Gateway, method: str, path: str) -> None:
    resp = getattr(gw.client, method)(path)
    body = resp.get_json()
    resp.close()
    assert resp.status_code == 404 and body["error"]["code"] == "response_not_found"
    assert "stateless" in body["error"]["message"] and "'resp_1'" in body["error"]["message"]
