"""A hunt of the Anthropic Messages wire with the official SDK as the client of a real gateway: an error's `type`
agrees with the status the client gets (another wire's upstream 402 is `billing_error`), and the SDK's tool runner,
which threads its turns (`thread`, SDK 2.12), keeps its conversation on every wire: bound for another wire a
thread is a 400 the runner recovers from by sending the whole conversation; on Anthropic a continuation's tool
results stay results, and a thread the upstream lost reaches the runner, which replays it."""

from __future__ import annotations

import json
from typing import Any, Iterator

import anthropic
import pytest
import requests
from anthropic import beta_tool

from routeplane.errors import RouteplaneError
from routeplane.protocols.anthropic_messages.response import error_body
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply
from tests.support.wires import via_wires_config, weather_upstream

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url), workers=1, threads=4).start()
    yield gw
    gw.stop()


@beta_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"18C in {city}"


def run_tools(claude: anthropic.Anthropic, model: str, stream: bool) -> Any:
    """The SDK's tool runner to its last message (threads on, as by default)."""
    runner = claude.beta.messages.tool_runner(model=model, max_tokens=300, tools=[get_weather], messages=QUESTION,
                                              stream=stream)
    last = None
    for item in runner:
        if stream:
            for _event in item:
                pass
            last = item.get_final_message()
        else:
            last = item
    return last


# --- 1. an error's type agrees with its status ---------------------------------------------------------


@pytest.mark.parametrize("model", ["via-openai_chat", "via-gemini"])
def test_another_wires_upstream_402_is_billing_error(up: FakeUpstream, claude: anthropic.Anthropic, model: str) -> None:
    """An OpenAI-compatible server out of credit answers 402: an Anthropic client gets 402 `billing_error`, as from
    Anthropic (it was `invalid_request_error` beside the 402)."""
    up.enqueue(Reply.json({"error": {"message": "Insufficient credits", "code": 402}}, 402))
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.create(model=model, max_tokens=20, messages=QUESTION)
    assert err.value.status_code == 402
    assert err.value.body["error"]["type"] == "billing_error"


@pytest.mark.parametrize(("status", "kind", "expected"), [
    (429, "custom", "rate_limit_error"), (529, "custom", "overloaded_error"), (404, "custom", "not_found_error"),
    (401, "invalid_request", "authentication_error"), (400, "custom", "invalid_request_error"),
    (503, "overloaded", "overloaded_error"), (429, "budget", "billing_error"), (502, "upstream", "api_error"),
])
def test_a_hooks_custom_status_gets_the_type_anthropic_pairs_with_it(status: int, kind: str, expected: str) -> None:
    """A hook's DenyReason.custom(429) (kind "custom") was `invalid_request_error` with a 429."""
    assert error_body(RouteplaneError("no", status=status, kind=kind))["error"]["type"] == expected


# --- 2. the SDK's tool runner through another wire ----------------------------------------------------------


def _history_of(req: RecordedRequest) -> str:
    return json.dumps(req.json.get("messages") or req.json.get("contents") or req.json.get("input"))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("wire", ["openai_chat", "gemini", "openai_responses"])
def test_the_tool_runner_through_another_wire_sends_the_whole_conversation(up: FakeUpstream, claude: anthropic.Anthropic,
                                                                         wire: str, stream: bool) -> None:
    """The runner's second turn continues a thread with only the tool result; another wire's upstream got that
    result alone (as text, or dangling) and no tools. Now a thread is a 400 `thread_unsupported_request`,
    and the runner sends the whole conversation without one."""
    last = run_tools(claude, f"via-{wire}", stream)
    assert last.stop_reason == "end_turn"
    assert last.content[-1].text == "It is 18C in Paris."
    final = up.requests[-1]
    assert "Weather in Paris?" in _history_of(final)  # the question, the call and its result, in one request
    assert "get_weather" in _history_of(final) and "18C in Paris" in _history_of(final)
    assert final.json.get("tools"), "the tools go with every turn"


def test_a_thread_bound_for_another_wire_is_the_400_the_sdk_recovers_from(up: FakeUpstream,
                                                                           gateway: GatewayProcess) -> None:
    r = requests.post(gateway.url + "/v1/messages", timeout=30,
                      headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                      json={"model": "via-gemini", "max_tokens": 20, "messages": QUESTION,
                            "thread": {"type": "create"}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "'thread'" in error["message"]
    assert error["details"] == {"error_code": "thread_unsupported_request"}
    assert up.requests == []


# --- 3. a thread on Anthropic ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_thread_continuation_sends_its_tool_results_as_results(up: FakeUpstream, claude: anthropic.Anthropic,
                                                                 stream: bool) -> None:
    """Continuing a thread sends only the new turn: its tool results answer calls Anthropic holds. They were
    turned into user text as orphans, which Anthropic refuses (its held tool_use then has no result)."""
    last = run_tools(claude, "via-anthropic_messages", stream)
    assert last.content[-1].text == "It is 18C in Paris."
    first, second = (r.json for r in up.requests[-2:])
    assert first["thread"] == {"type": "create"}
    assert second["thread"] == {"type": "continue", "previous_message_id": "msg_up"}
    assert second["messages"] == [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_an1", "content": "18C in Paris"}]}]


def test_a_thread_the_upstream_lost_is_replayed_by_the_sdk(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    """Anthropic answers a continuation of a thread it no longer holds with `error.details.error_code`
    "thread_not_found"; the runner replays the whole conversation under a new thread only when told so."""
    lost = {"type": "error", "error": {"type": "not_found_error", "message": "No thread for msg_up.",
                                       "details": {"error_code": "thread_not_found"}}}

    def forgetful(req: RecordedRequest) -> Reply:
        if (req.json.get("thread") or {}).get("type") == "continue":
            return Reply.json(lost, 404)
        return weather_upstream(req)

    up.default = forgetful
    try:
        last = run_tools(claude, "via-anthropic_messages", False)
    finally:
        up.default = weather_upstream
    assert last.content[-1].text == "It is 18C in Paris."
    replay = up.requests[-1].json
    assert replay["thread"] == {"type": "create"}
    assert [m["role"] for m in replay["messages"]] == ["user", "assistant", "user"]


def test_the_gateways_400s_name_no_thread_code_otherwise() -> None:
    body = error_body(RouteplaneError("bad", status=400, kind="invalid_request", param="messages"))
    assert "details" not in body["error"]


def test_an_empty_thread_continuation_reaches_an_anthropic_upstream(up: FakeUpstream, gateway: GatewayProcess) -> None:
    """After a `pause_turn` the tool runner continues the thread with no new message; only a continuation may
    be empty, and it goes to the Anthropic upstream as sent."""
    import requests

    headers = {"x-api-key": "client-key", "anthropic-version": "2023-06-01"}
    body = {"model": "via-anthropic_messages", "max_tokens": 64, "messages": [],
            "thread": {"type": "continue", "previous_message_id": "msg_up"}}
    up.enqueue(Reply.json({"id": "msg_up2", "type": "message", "role": "assistant", "model": "up",
                           "content": [{"type": "text", "text": "Resumed."}], "stop_reason": "end_turn",
                           "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 2}}))
    r = requests.post(gateway.url + "/v1/messages", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "Resumed."
    sent = up.requests[-1].json
    assert sent["messages"] == [] and sent["thread"] == body["thread"]
    r = requests.post(gateway.url + "/v1/messages", json=dict(body, thread=None), headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
