"""A hunt of the Anthropic Messages wire with the official SDK against a real gateway: an Anthropic upstream's
count_tokens answer that is not a count (nested past the parser's depth, 1e400, negative, a boolean) is the
upstream's fault, a clean 502 `api_error`, not the gateway's 500 with a traceback in its log; a thinking budget
below Anthropic's minimum of 1024 is the 400 Anthropic answers, not sent on (an OpenAI upstream was told
`reasoning_effort: "none"` for -5, a Gemini one `thinkingBudget: -5`); so are two tools of one name or a tool
without one (sent on as such to another wire)."""

from __future__ import annotations

from typing import Iterator

import anthropic
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url), workers=1, threads=4).start()
    yield gw
    gw.stop()


def _answer(body: bytes) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, body)


@pytest.mark.parametrize("body", [
    b'{"input_tokens": 1e400}', b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"input_tokens": -5}',
    b'{"input_tokens": true}', b'{"input_tokens": 12.5}', b"[1]", b"<html>",
], ids=["overflow", "deep", "negative", "boolean", "fraction", "array", "html"])
def test_an_upstream_count_that_is_no_count_is_a_502(
        up: FakeUpstream, claude: anthropic.Anthropic, gateway: GatewayProcess, body: bytes) -> None:
    up.enqueue(_answer(body))
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.count_tokens(model="via-anthropic_messages", messages=QUESTION)
    assert err.value.status_code == 502
    assert err.value.body["error"] == {"type": "api_error",
                                       "message": "up_anthropic_messages sent an invalid count_tokens answer"}
    assert "Traceback" not in gateway.logs()


def test_an_upstream_count_is_passed_on(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.enqueue(_answer(b'{"input_tokens": 2095}'))
    assert claude.messages.count_tokens(model="via-anthropic_messages", messages=QUESTION).input_tokens == 2095
    assert up.requests[-1].path == "/v1/messages/count_tokens"


@pytest.mark.parametrize("budget", [-5, 0, 1023])
@pytest.mark.parametrize("model", ["via-openai_chat", "via-gemini", "via-anthropic_messages"])
def test_a_thinking_budget_below_1024_is_a_400(
        up: FakeUpstream, claude: anthropic.Anthropic, model: str, budget: int) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model=model, max_tokens=4000, messages=QUESTION,
                               thinking={"type": "enabled", "budget_tokens": budget})
    assert err.value.body["error"] == {"type": "invalid_request_error",
                                       "message": "'thinking.budget_tokens' must be at least 1024."}
    assert up.requests == []


def test_a_thinking_budget_of_1024_is_sent_on(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    claude.messages.create(model="via-openai_chat", max_tokens=4000, messages=QUESTION,
                           thinking={"type": "enabled", "budget_tokens": 1024})
    assert up.requests[-1].json["reasoning_effort"] == "minimal"


@pytest.mark.parametrize(("names", "bad"), [(["f", "f"], 1), ([""], 0), (["f", "g", "f"], 2)],
                         ids=["duplicate", "empty", "duplicate-later"])
def test_tool_names_must_be_unique_and_non_empty(
        up: FakeUpstream, claude: anthropic.Anthropic, names: list, bad: int) -> None:
    tools = [{"name": n, "input_schema": {"type": "object"}} for n in names]
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="via-openai_chat", max_tokens=50, messages=QUESTION, tools=tools)
    assert err.value.body["error"]["message"] == (
        f"'tools[{bad}].name' must be a non-empty name no other tool has (got {names[bad]!r}).")
    assert up.requests == []
