"""Through deploy/nginx.conf: nginx's own refusals (body too large, gateway down) reach each SDK in its wire's shape."""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import anthropic
import openai
import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support.gateway import GatewayProcess, free_port
from tests.support.nginx import NginxProcess
from tests.support.upstream import FakeUpstream
from tests.test_nginx_e2e import _require_nginx, deploy_nginx_body, gateway_config, stream_reply

pytestmark = pytest.mark.e2e

OVER_LIMIT = "x" * (10 * 1024 * 1024 + 10)  # one character past client_max_body_size 10m = server.max_body_bytes


@pytest.fixture(scope="module")
def stack() -> Iterator[Tuple[GatewayProcess, NginxProcess]]:
    _require_nginx()
    up = FakeUpstream().start()
    up.default = stream_reply
    config = gateway_config(up.url)
    # A provider nothing listens for: the gateway answers 502 itself.
    config["providers"]["dead"] = {"protocol": "openai_chat", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                                   "api_key": "sk-dead"}
    config["models"]["dead"] = {"targets": [{"provider": "dead", "model": "gone"}]}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    nginx = NginxProcess(deploy_nginx_body(gw.port)).start()
    yield gw, nginx
    nginx.stop()
    gw.stop()
    up.stop()


def _genai(url: str) -> genai.Client:
    return genai.Client(api_key="client-key", http_options=genai_types.HttpOptions(base_url=url))


def test_a_body_past_the_limit_is_the_openai_sdks_own_413(stack: Any) -> None:
    _, nginx = stack
    client = openai.OpenAI(base_url=nginx.url + "/v1", api_key="client-key", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": OVER_LIMIT}])
    assert caught.value.status_code == 413
    assert caught.value.body == {"message": "The request body exceeds the size limit of this gateway.",
                                 "type": "invalid_request_error", "param": None, "code": "request_too_large"}
    assert caught.value.code == "request_too_large"


def test_a_body_past_the_limit_is_the_anthropic_sdks_own_413(stack: Any) -> None:
    _, nginx = stack
    client = anthropic.Anthropic(base_url=nginx.url, api_key="client-key", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": OVER_LIMIT}])
    assert caught.value.status_code == 413
    assert caught.value.body == {"type": "error", "error": {
        "type": "request_too_large", "message": "The request body exceeds the size limit of this gateway."}}


def test_a_body_past_the_limit_is_the_genai_sdks_own_413(stack: Any) -> None:
    _, nginx = stack
    client = _genai(nginx.url)  # held: a dropped Client closes its HTTP client
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model="m", contents=OVER_LIMIT)
    assert caught.value.code == 413
    assert caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message == "The request body exceeds the size limit of this gateway."


def test_a_body_past_the_limit_on_mcp_is_a_json_rpc_error(stack: Any) -> None:
    _, nginx = stack
    r = requests.post(nginx.url + "/mcp", data='{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + OVER_LIMIT
                      + '"}}', headers={"Content-Type": "application/json",
                                        "Accept": "application/json, text/event-stream"}, timeout=30)
    assert r.status_code == 413 and r.headers["Content-Type"] == "application/json"
    assert r.json()["jsonrpc"] == "2.0" and r.json()["error"]["code"] == -32600


def test_a_body_within_the_limit_still_reaches_the_gateway(stack: Any) -> None:
    _, nginx = stack
    client = openai.OpenAI(base_url=nginx.url + "/v1", api_key="client-key", max_retries=0)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 1000}])
    assert answer.choices[0].message.content == "plain answer"


def test_the_gateway_down_is_a_502_in_each_wires_shape() -> None:
    _require_nginx()
    with NginxProcess(deploy_nginx_body(free_port())) as nginx:  # nothing listens on the gateway's port
        openai_client = openai.OpenAI(base_url=nginx.url + "/v1", api_key="client-key", max_retries=0)
        with pytest.raises(openai.APIStatusError) as oai:
            openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert oai.value.status_code == 502 and oai.value.code == "gateway_unavailable"
        claude = anthropic.Anthropic(base_url=nginx.url, api_key="client-key", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as ant:
            claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert ant.value.status_code == 502 and ant.value.body["error"]["type"] == "api_error"
        gclient = _genai(nginx.url)
        with pytest.raises(genai_errors.ServerError) as gem:
            gclient.models.generate_content(model="m", contents="hi")
        assert gem.value.code == 502 and gem.value.status == "UNAVAILABLE"
        health = requests.get(nginx.url + "/health", timeout=10)
        assert health.status_code == 502 and health.headers["Content-Type"] == "application/json"


def test_the_gateways_own_5xx_passes_through_nginx_untouched(stack: Any) -> None:
    gw, nginx = stack
    body = {"model": "dead", "messages": [{"role": "user", "content": "hi"}]}
    direct = requests.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
    proxied = requests.post(nginx.url + "/v1/chat/completions", json=body, timeout=30)
    assert proxied.status_code == direct.status_code == 502
    assert proxied.json()["error"]["message"] == direct.json()["error"]["message"]
