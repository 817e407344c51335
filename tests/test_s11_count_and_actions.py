"""Anthropic count_tokens counts what is billed; a GET on a POST-only Responses action is a 405."""

from __future__ import annotations

from typing import Any, Iterator

import anthropic
import pytest
import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_completion
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

CHINESE = "请用三句话介绍一下北京的历史、文化和美食。" * 5


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ("openai_chat",))).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("text", [CHINESE, "Tell me about the history of Beijing in three sentences. " * 3])
def test_count_tokens_is_the_input_billed_when_the_upstream_reports_none(claude: anthropic.Anthropic,
                                                                         up: FakeUpstream, text: str) -> None:
    messages: Any = [{"role": "user", "content": text}]
    counted = claude.messages.count_tokens(model="via-openai_chat", messages=messages).input_tokens
    body = openai_completion("好的。")
    body.pop("usage", None)
    up.enqueue(Reply.json(body))
    billed = claude.messages.create(model="via-openai_chat", max_tokens=20, messages=messages).usage.input_tokens
    assert counted == billed


@pytest.mark.parametrize("action", ["input_tokens", "compact"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_post_only_responses_action_asked_otherwise_is_a_405(gateway: GatewayProcess, action: str,
                                                               method: str) -> None:
    r = requests.request(method, f"{gateway.url}/v1/responses/{action}", timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST", r.text
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_a_stored_response_id_is_still_the_stateless_404(gateway: GatewayProcess) -> None:
    r = requests.get(f"{gateway.url}/v1/responses/resp_123", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "response_not_found"
