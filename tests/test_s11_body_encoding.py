"""A compressed request body is a 415 naming Content-Encoding, in the client's own protocol."""

from __future__ import annotations

import gzip
import json
from typing import Iterator

import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

CHAT = {"model": "via-openai_chat", "messages": [{"role": "user", "content": "hi"}]}
PATHS = {
    "/v1/chat/completions": CHAT,
    "/v1/messages": {"model": "via-openai_chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": "via-openai_chat", "input": "hi"},
    "/v1beta/models/via-openai_chat:generateContent": {"contents": [{"parts": [{"text": "hi"}]}]},
}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ("openai_chat",))).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("path", list(PATHS))
def test_a_gzip_body_is_a_415_naming_the_encoding(gateway: GatewayProcess, up: FakeUpstream, path: str) -> None:
    r = requests.post(gateway.url + path, data=gzip.compress(json.dumps(PATHS[path]).encode()), timeout=10,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 415, r.text
    err = r.json()["error"]
    assert "Content-Encoding 'gzip'" in err["message"]
    if path == "/v1/messages":
        assert r.json()["type"] == "error"
    assert not up.requests


def test_identity_is_accepted(gateway: GatewayProcess, up: FakeUpstream) -> None:
    r = requests.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=10,
                      headers={"Content-Encoding": "identity"})
    assert r.status_code == 200, r.text
