"""Server-side tools billed by the call (Anthropic's web search, $10 per 1,000 searches) are part of a
request's cost: the spend log and budgets counted only tokens, so every search was free."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest

from routeplane.config import ConfigError, parse_config
from routeplane.language_model.provider_registry import load_registry
from routeplane.language_model.routing import Prices
from routeplane.language_model.settlement import cost_micro_usd
from routeplane.language_model.types import Usage
from routeplane.protocols.anthropic_messages.response import decode_usage
from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import FakeUpstream, Reply

USAGE = {"input_tokens": 1000, "output_tokens": 100, "server_tool_use": {"web_search_requests": 3,
                                                                         "web_fetch_requests": 1}}


def test_anthropic_usage_counts_the_server_tool_calls() -> None:
    usage = decode_usage(USAGE)
    assert usage is not None and usage.tool_calls == (("web_fetch", 1), ("web_search", 3))
    assert decode_usage({"input_tokens": 1, "server_tool_use": {"web_search_requests": 0}}).tool_calls == ()
    # A stream's message_delta repeats the cumulative counters: the last ones win, the base's are kept.
    start = decode_usage({"input_tokens": 1000, "output_tokens": 1})
    assert decode_usage({"output_tokens": 100, "server_tool_use": {"web_search_requests": 2}}, start).tool_calls == \
        (("web_search", 2),)
    assert decode_usage({"input_tokens": 1, "server_tool_use": {"web_search_requests": "x"}}).tool_calls == ()


def test_the_registry_prices_anthropic_searches_by_the_call() -> None:
    prices = load_registry().get("anthropic").model_prices["claude-sonnet-4-5"]
    assert prices.call_price("web_search") == 0.01 and prices.call_price("web_fetch") == 0.0
    # 1000 input x $3/M + 100 output x $15/M + 3 searches x $0.01 (the fetch costs its tokens only)
    assert cost_micro_usd(decode_usage(USAGE), prices) == 3000 + 1500 + 30000


def test_an_unpriced_tool_makes_the_cost_unknown_never_free() -> None:
    usage = Usage(input_tokens=10, tool_calls=(("code_interpreter", 1),))
    assert cost_micro_usd(usage, Prices(input=1.0)) is None
    assert cost_micro_usd(usage, Prices(input=1.0, per_call={"code_interpreter": 0.03})) == 10 + 30000
    assert Prices(per_call={"b": 1, "a": 2}) == Prices(per_call=(("a", 2.0), ("b", 1.0)))
    hash(Prices(per_call={"a": 1}))  # prices stay hashable


def _config(**prices: Any) -> Dict[str, Any]:
    provider: Dict[str, Any] = {"base_url": "http://127.0.0.1:9", "api_key": "k"}
    provider.update(prices)
    return {"providers": {"anthropic": provider},
            "models": {"m": {"targets": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}}}


def test_a_config_overrides_one_tool_price_and_keeps_the_others() -> None:
    cfg = parse_config(_config(model_prices={"claude-sonnet-4-5": {"per_call": {"web_search": 0.025}}}), "<t>")
    prices = next(r for r in cfg.routes if r.name == "m").targets[0].prices
    assert prices.call_price("web_search") == 0.025 and prices.call_price("web_fetch") == 0.0
    assert prices.input == 3.0  # the rest of the registry's prices stay
    with pytest.raises(ConfigError, match="per_call"):
        parse_config(_config(prices={"per_call": {"web_search": -1}}), "<t>")


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    db = f"sqlite:///{tmp_path_factory.mktemp('tool-pricing')}/rp.db"
    config = {"database": {"url": db},
              "providers": {"anthropic": {"base_url": fake.url, "api_key": "sk-up"}},
              "models": {"m": {"targets": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}}}
    gw = GatewayProcess(config).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


SEARCH = [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
          {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
          {"type": "text", "text": "Found it."}]


def _message(usage: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": SEARCH,
            "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}


def _stream(usage: Dict[str, Any]) -> Reply:
    start = _message({"input_tokens": usage["input_tokens"], "output_tokens": 1})
    start["content"] = []
    events = [{"type": "message_start", "message": start},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Found it."}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
               "usage": {"output_tokens": usage["output_tokens"], "server_tool_use": usage["server_tool_use"]}},
              {"type": "message_stop"}]
    return Reply.anthropic_sse(events)


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True])
def test_the_spend_log_bills_the_searches(gateway: GatewayProcess, up: FakeUpstream, stream: bool) -> None:
    import anthropic

    up.enqueue(_stream(USAGE) if stream else Reply.json(_message(USAGE)))
    client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    kwargs = dict(model="m", max_tokens=100, messages=[{"role": "user", "content": "search"}],
                  tools=[{"type": "web_search_20250305", "name": "web_search"}])
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
            rid = s.response.headers["x-request-id"]
    else:
        raw = client.messages.with_raw_response.create(**kwargs)
        message, rid = raw.parse(), raw.headers["x-request-id"]
    assert message.usage.server_tool_use.web_search_requests == 3
    row = spend_row(gateway.db_url, rid)  # type: ignore[attr-defined]
    assert row["cost_micro_usd"] == 3000 + 1500 + 30000


def test_kept_blocks_count_in_the_token_estimates() -> None:
    """A history holding a 40,000-character code result or fetched page counted as 0 characters in the
    local estimates (count_tokens, budget reservations, a stream without usage)."""
    from routeplane.language_model.stream import GenerationAccumulator, output_chars, prompt_text
    from routeplane.language_model.types import Generation, Message, OpaqueBlock, OpaquePart, Prompt, Role, TextPart

    page = {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_1", "content": {"text": "x" * 40000}}
    prompt = Prompt(model="m", messages=(Message(Role.USER, (TextPart("hi"),)),
                                         Message(Role.ASSISTANT, (OpaquePart("anthropic_messages", page),))))
    assert len(prompt_text(prompt)) > 40000
    assert output_chars(Generation("g", "m", (OpaquePart("anthropic_messages", page),))) > 40000
    acc = GenerationAccumulator()
    acc.add(OpaqueBlock(0, "anthropic_messages", page))
    assert acc.output_chars > 40000


def test_responses_usage_counts_the_hosted_tool_calls_of_its_output() -> None:
    """A Responses answer's web searches were free: OpenAI bills them by the call ($10 per 1,000)."""
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.protocols.openai_responses.response import decode_response
    from routeplane.protocols.openai_responses.stream_decode import ResponsesStreamDecoder
    from routeplane.protocols.sse import SSEEvent

    output = [{"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
              {"type": "web_search_call", "id": "ws_2", "status": "completed", "action": {"type": "search"}},
              {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]},
              {"type": "mcp_call", "id": "mcp_1", "name": "t", "arguments": "{}", "server_label": "s"},
              {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Found.", "annotations": []}]}]
    body = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-5",
            "output": output, "usage": {"input_tokens": 1000, "output_tokens": 100}}
    target = RoutingTarget("openai", "gpt-5", "openai_responses", base_url="http://127.0.0.1:9/v1",
                           prices=load_registry().get("openai").model_prices["gpt-5"])
    usage = decode_response(body, target).usage
    assert usage.tool_calls == (("file_search", 1), ("web_search", 2))
    # 1000 x $1.25/M + 100 x $10/M + 2 searches x $0.01 + 1 file search x $0.0025
    assert cost_micro_usd(usage, target.prices) == 1250 + 1000 + 20000 + 2500
    dec = ResponsesStreamDecoder(target)
    parts = dec.feed(SSEEvent(data=json.dumps({"type": "response.completed", "response": body}),
                              event="response.completed"))
    assert [p.usage.tool_calls for p in parts if hasattr(p, "usage") and p.usage is not None][-1] == \
        (("file_search", 1), ("web_search", 2))
    unpriced = Usage(input_tokens=1, tool_calls=(("code_interpreter", 1),))
    assert cost_micro_usd(unpriced, target.prices) is None  # per container: priced by no one, never free
