"""`POST /v1/responses/input_tokens` (the openai SDK's `responses.input_tokens.count`), `POST /v1/responses/compact`,
and the price of the older `web_search_preview` tool.

input_tokens and compact fell into the stored-response catch-all (a 404 saying 'input_tokens' cannot be retrieved);
web_search_preview searches were billed as GA `web_search` ($10 per 1,000) though OpenAI bills them $25 per 1,000
on gpt-4o and gpt-4.1. The SDK talks to the gateway in-process; the gateway to a fake upstream over HTTP.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Tuple

import httpx2
import openai
import pytest

from routeplane.language_model.executor import HttpExecutor
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import UsageUpdate
from routeplane.protocols import openai_responses as wire
from routeplane.protocols.sse import iter_events
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply
from tests.support.wires import responses_sse
from tests.test_anthropic_web import RedactOrBlock
from tests.test_auth_keys import Gateway as KeyedGateway

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]

Env = Tuple[FakeUpstream, Gateway, openai.OpenAI]


def _client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://gateway/v1", api_key="client-key", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))


def _gateway(up: FakeUpstream, hooks: Any = ()) -> Gateway:
    config = {
        "providers": {"or": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "k-or"},
                      "oc": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": "k-oc"},
                      # the registry's openai entry (its prices), on the Responses wire
                      "openai": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "k-openai"}},
        "models": {"via-or": {"targets": [{"provider": "or", "model": "up"}]},
                   "via-oc": {"targets": [{"provider": "oc", "model": "up"}]},
                   **{m: {"targets": [{"provider": "openai", "model": m}]} for m in ("gpt-4o", "gpt-4.1-mini", "o3")}},
    }
    return Gateway(config=config, executor=HttpExecutor(), hooks=list(hooks))


@pytest.fixture
def env() -> Iterator[Env]:
    up = FakeUpstream().start()
    gw = _gateway(up)
    client = _client(gw)
    try:
        yield up, gw, client
    finally:
        client.close()
        up.stop()


# --- input_tokens ----------------------------------------------------------------------------------------


def test_input_tokens_is_forwarded_to_a_responses_upstream(env: Env) -> None:
    up, gw, client = env
    up.enqueue(Reply.json({"object": "response.input_tokens", "input_tokens": 42}))
    raw = client.responses.input_tokens.with_raw_response.count(
        model="via-or", instructions="Be terse.", input="Weather in Paris?", tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "name": "get_weather"})
    counted = raw.parse()
    assert counted.object == "response.input_tokens" and counted.input_tokens == 42
    assert "x-routeplane-estimate" not in raw.headers and raw.headers["x-request-id"]
    sent = up.requests[0]
    assert sent.path == "/v1/responses/input_tokens" and sent.headers["authorization"] == "Bearer k-or"
    assert sent.json == {"model": "up", "instructions": "Be terse.", "input": "Weather in Paris?", "tools": TOOLS,
                         "tool_choice": {"type": "function", "name": "get_weather"}}
    assert gw.settlements.items == []  # counting is not a billed call


def test_input_tokens_is_estimated_for_another_wire(env: Env) -> None:
    up, _, client = env
    raw = client.responses.input_tokens.with_raw_response.count(model="via-oc", input="x" * 400)
    assert raw.parse().input_tokens == 100 and raw.headers["x-routeplane-estimate"] == "true"
    assert up.requests == []


def test_input_tokens_errors_are_the_responses_ones(env: Env) -> None:
    up, _, client = env
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_tokens.count(model="via-or", input="hi", previous_response_id="resp_1")
    assert caught.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model="no-such-route", input="hi")
    up.enqueue(Reply.json({"error": {"message": "Unknown parameter: 'personality'.", "type": "invalid_request_error",
                                     "param": "personality", "code": "unknown_parameter"}}, status=400),
               Reply.json({"tokens": "many"}))
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_tokens.count(model="via-or", input="hi")
    assert "Unknown parameter" in caught.value.message
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.input_tokens.count(model="via-or", input="hi")
    assert "invalid input_tokens answer" in caught.value.message
    assert caught.value.status_code == 502


def test_input_tokens_runs_the_request_hooks_as_a_dry_run() -> None:
    up = FakeUpstream().start()
    up.default = lambda req: Reply.json({"object": "response.input_tokens", "input_tokens": 7})
    hook = RedactOrBlock()
    gw = _gateway(up, hooks=[hook])
    try:
        with _client(gw) as client:
            with pytest.raises(openai.BadRequestError) as created:
                client.responses.create(model="via-or", input="deploy SECRET")
            with pytest.raises(openai.BadRequestError) as counted:
                client.responses.input_tokens.count(model="via-or", input="deploy SECRET")
            assert counted.value.body == created.value.body and "secret" in counted.value.message
            assert up.requests == []
            assert client.responses.input_tokens.count(model="via-or", input="mail jane@example.com",
                                                       instructions="Be terse.").input_tokens == 7
    finally:
        up.stop()
    assert hook.dry_runs[1:] == [True, True]
    sent = up.requests[0].json
    assert b"jane@example.com" not in up.requests[0].body and sent["model"] == "up"
    assert sent["input"] == [{"role": "user", "content": "mail [EMAIL]"}] and sent["instructions"] == "Be terse."
    assert set(sent) == {"model", "input", "instructions"}  # what the gateway encodes, less `store: false`


def test_input_tokens_needs_credentials_but_reserves_nothing(tmp_path: Any) -> None:
    gw = KeyedGateway(tmp_path, {"mode": "api_keys"})
    try:
        key = gw.key(models=["mock-*"], budget_micro_usd=1)
        path, body = "/v1/responses/input_tokens", {"model": "mock-echo", "input": "hi"}
        r = gw.client.post(path, json=body)
        assert r.status_code == 401 and r.json["error"]["type"] == "authentication_error"
        auth = {"Authorization": f"Bearer {key}"}
        assert gw.client.post(path, json=dict(body, model="default"), headers=auth).status_code == 403
        for _ in range(3):  # a budget of 1 micro-USD: counting is not a billed call
            r = gw.client.post(path, json=body, headers=auth)
            assert r.status_code == 200 and r.json == {"object": "response.input_tokens", "input_tokens": 1}
        assert gw.ledger() == []
    finally:
        gw.app.store.close()


def test_compact_is_refused_plainly(env: Env) -> None:
    up, _, client = env
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.compact(model="via-or", input="hi")  # type: ignore[arg-type]
    assert caught.value.code == "unsupported_endpoint" and "compaction" in caught.value.message
    assert up.requests == []


# --- web_search_preview pricing ------------------------------------------------------------------------

USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 100,
         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1100}
SEARCH = {"type": "web_search_call", "id": "ws_1", "status": "completed",
          "action": {"type": "search", "query": "paris news"}}
MESSAGE = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Paris news.", "annotations": [], "logprobs": []}]}


def _searched(tools: Any, model: str = "gpt-4o") -> Dict[str, Any]:
    """An answer that searched twice; like OpenAI's, it repeats the request's `tools`."""
    return {"id": "resp_up", "object": "response", "created_at": 1, "status": "completed", "model": model,
            "tools": tools, "output": [SEARCH, dict(SEARCH, id="ws_2"), MESSAGE], "usage": USAGE}


def _upstream_answer(req: RecordedRequest) -> Reply:
    body = req.json
    final = _searched(body.get("tools") or [], body["model"])
    if not body.get("stream"):
        return Reply.json(final)
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    events: List[Dict[str, Any]] = [{"type": "response.created", "response": shell}]
    for i, item in enumerate(final["output"]):
        events.append({"type": "response.output_item.done", "output_index": i, "item": item})
    return responses_sse(events + [{"type": "response.completed", "response": final}])


TARGET = RoutingTarget("openai", "gpt-4o", "openai_responses", base_url="http://127.0.0.1:9/v1")


@pytest.mark.parametrize("tool, kind", [("web_search_preview", "web_search_preview"),
                                        ("web_search_preview_2025_03_11", "web_search_preview"),
                                        ("web_search", "web_search"), ("web_search_2025_08_26", "web_search")])
def test_searches_count_as_the_web_search_tool_the_request_offered(tool: str, kind: str) -> None:
    tools = [{"type": tool}, TOOLS[0]]
    assert wire.PROVIDER.decode_response(_searched(tools), TARGET).usage.tool_calls == ((kind, 2),)
    reply = _upstream_answer(RecordedRequest("POST", "/v1/responses", {}, json.dumps(
        {"model": "gpt-4o", "tools": tools, "stream": True}).encode()))
    dec = wire.PROVIDER.stream_decoder(TARGET)
    parts = [p for ev in iter_events(reply.chunks or []) for p in dec.feed(ev)]
    assert [p.usage.tool_calls for p in parts if isinstance(p, UsageUpdate)] == [((kind, 2),)]


def test_a_stream_whose_terminal_response_lacks_tools_uses_the_created_ones() -> None:
    dec = wire.PROVIDER.stream_decoder(TARGET)
    final = _searched([{"type": "web_search_preview"}])
    events = [{"type": "response.created", "response": {**final, "output": [], "usage": None}},
              {"type": "response.completed", "response": {k: v for k, v in final.items() if k != "tools"}}]
    parts = [p for ev in iter_events(responses_sse(events).chunks or []) for p in dec.feed(ev)]
    assert [p.usage.tool_calls for p in parts if isinstance(p, UsageUpdate)] == [(("web_search_preview", 2),)]


# gpt-4o: 1000 x $2.50/M + 100 x $10/M = 3500 micro-USD of tokens; o3: 1000 x $2/M + 100 x $8/M = 2800.
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model, tool, cost", [
    ("gpt-4o", "web_search_preview", 3500 + 2 * 25000),
    ("gpt-4o", "web_search_preview_2025_03_11", 3500 + 2 * 25000),
    ("gpt-4o", "web_search", 3500 + 2 * 10000),
    ("gpt-4.1-mini", "web_search_preview", 400 + 160 + 2 * 25000),
    ("o3", "web_search_preview", 2800 + 2 * 10000),
])
def test_web_search_preview_costs_what_openai_bills(env: Env, stream: bool, model: str, tool: str,
                                                    cost: int) -> None:
    up, gw, client = env
    up.default = _upstream_answer
    if stream:
        with client.responses.stream(model=model, input="Paris news?", tools=[{"type": tool}]) as events:  # type: ignore[list-item]
            answer = events.get_final_response()
    else:
        answer = client.responses.create(model=model, input="Paris news?", tools=[{"type": tool}])  # type: ignore[list-item]
    assert answer.output_text == "Paris news." and up.requests[0].json["tools"] == [{"type": tool}]
    settled = gw.settlements.items[-1]
    assert settled.usage.tool_calls == (("web_search_preview" if "preview" in tool else "web_search", 2),)
    assert settled.cost_micro_usd == cost
