"""Fees billed by the call that the spend log missed: Gemini's grounding with Google Search ($35 per 1,000
grounded prompts on Gemini 2.x, $14 per 1,000 search queries on Gemini 3) and an OpenAI Chat search model's
web search (one per request) were free, since neither answer carries a billed counter."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import pytest

from routeplane.language_model.executor import HttpExecutor
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import UsageUpdate
from routeplane.protocols.gemini.response import decode_response
from routeplane.protocols.gemini.stream import GeminiStreamDecoder
from routeplane.protocols.sse import SSEEvent
from routeplane.testing import Gateway
from tests.support.upstream import Reply, openai_chunk, openai_completion
from tests.support.wires import gemini_sse

TARGET = RoutingTarget("gemini", "gemini-2.5-flash", "gemini", base_url="http://127.0.0.1:9")
USAGE = {"promptTokenCount": 1000, "candidatesTokenCount": 100, "totalTokenCount": 1100}
# What Gemini 3 sends: an empty query among them, which Google does not bill.
GROUNDING = {"webSearchQueries": ["euro 2024 winner", "", "euro 2024 final score"],
             "groundingChunks": [{"web": {"uri": "https://example.com/a", "title": "a"}}],
             "searchEntryPoint": {"renderedContent": "<div></div>"}}
SEARCHED = (("google_search_prompt", 1), ("google_search_query", 2))


def _answer(grounding: Optional[Dict[str, Any]], text: str = "Spain won.") -> Dict[str, Any]:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                            "index": 0}
    if grounding is not None:
        cand["groundingMetadata"] = grounding
    return {"candidates": [cand], "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash", "responseId": "r1"}


def test_a_gemini_answer_counts_its_grounded_prompt_and_search_queries() -> None:
    assert decode_response(_answer(GROUNDING), TARGET).usage.tool_calls == SEARCHED
    assert decode_response(_answer(None), TARGET).usage.tool_calls == ()
    # URL context reports `web` chunks with no search: it costs its tokens only.
    url_context = {"groundingChunks": [{"web": {"uri": "https://ai.google.dev/pricing", "title": "p"}}]}
    assert decode_response(_answer(url_context), TARGET).usage.tool_calls == ()
    assert decode_response(_answer({"webSearchQueries": ["", " "]}), TARGET).usage.tool_calls == ()
    maps = {"groundingChunks": [{"maps": {"uri": "https://maps.google.com/?cid=1", "title": "Cafe"}}]}
    assert decode_response(_answer(maps), TARGET).usage.tool_calls == (("google_maps_prompt", 1),)
    hostile = {"webSearchQueries": "q", "groundingChunks": {"maps": 1}}
    assert decode_response(_answer(hostile), TARGET).usage.tool_calls == ()


def _feed(chunks: List[Dict[str, Any]]) -> List[Any]:
    dec = GeminiStreamDecoder(TARGET)
    parts: List[Any] = []
    for chunk in chunks:
        parts.extend(dec.feed(SSEEvent(data=json.dumps(chunk))))
    return parts + dec.finish()


def test_a_gemini_stream_counts_grounding_of_its_last_chunks_once() -> None:
    first = _answer(None, "Spain")
    del first["candidates"][0]["finishReason"]
    # The metadata comes after the final counts, and again in the chunk after it.
    last = _answer(GROUNDING, " won.")
    again = {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "index": 0,
                             "groundingMetadata": GROUNDING}], "usageMetadata": USAGE}
    updates = [p.usage for p in _feed([first, last, again]) if isinstance(p, UsageUpdate)]
    assert updates[-1].tool_calls == SEARCHED and updates[-1].total_input == 1000
    updates = [p.usage for p in _feed([first, _answer(None, " won.")]) if isinstance(p, UsageUpdate)]
    assert updates[-1].tool_calls == ()


def _gemini_config(url: str, **model_prices: Any) -> Dict[str, Any]:
    provider: Dict[str, Any] = {"base_url": url, "api_key": "k-up"}
    if model_prices:
        provider["model_prices"] = model_prices
    return {"providers": {"gemini": provider},
            "models": {"m": {"targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
                       "g3": {"targets": [{"provider": "gemini", "model": "gemini-3-pro-preview"}]}}}


def _gemini_reply(stream: bool, grounding: Optional[Dict[str, Any]] = GROUNDING) -> Reply:
    if not stream:
        return Reply.json(_answer(grounding))
    first = _answer(None, "Spain")
    del first["candidates"][0]["finishReason"]
    return gemini_sse([first, _answer(grounding, " won.")])


ASK = {"contents": [{"role": "user", "parts": [{"text": "Who won euro 2024?"}]}], "tools": [{"googleSearch": {}}]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_grounded_gemini_2_answer_costs_its_grounded_prompt(up: Any, stream: bool) -> None:
    up.enqueue(_gemini_reply(stream))
    gw = Gateway(config=_gemini_config(up.url), executor=HttpExecutor())
    r = gw.request(ASK, wire="gemini", model="m", stream=stream)
    assert r.status == 200 and r.text == "Spain won."
    settled = r.settlements[0]
    assert settled.usage.tool_calls == SEARCHED
    # 1000 input x $0.30/M + 100 output x $2.50/M + one grounded prompt x $0.035 (the queries cost 0)
    assert settled.cost_micro_usd == 300 + 250 + 35000


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_3_grounding_costs_by_the_query_or_is_unknown(up: Any, stream: bool) -> None:
    priced = {"input": 2.0, "output": 12.0}
    up.enqueue(_gemini_reply(stream), _gemini_reply(stream), _gemini_reply(stream, grounding=None))
    by_query = Gateway(config=_gemini_config(up.url, **{"gemini-3-pro-preview": dict(
        priced, per_call={"google_search_query": 0.014, "google_search_prompt": 0})}), executor=HttpExecutor())
    r = by_query.request(ASK, wire="gemini", model="g3", stream=stream)
    assert r.status == 200 and r.settlements[0].cost_micro_usd == 2000 + 1200 + 2 * 14000
    # Token prices alone: the searches have no price, so the cost is unknown, not the tokens' alone.
    unpriced = Gateway(config=_gemini_config(up.url, **{"gemini-3-pro-preview": priced}), executor=HttpExecutor())
    r = unpriced.request(ASK, wire="gemini", model="g3", stream=stream)
    assert r.status == 200 and r.settlements[0].usage.tool_calls == SEARCHED
    assert r.settlements[0].cost_micro_usd is None
    r = unpriced.request(ASK, wire="gemini", model="g3", stream=stream)  # no search: the tokens' cost
    assert r.settlements[0].usage.tool_calls == () and r.settlements[0].cost_micro_usd == 2000 + 1200


CHAT_USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}


def _chat_config(url: str, model: str, **prices: Any) -> Dict[str, Any]:
    return {"providers": {"openai": {"base_url": url + "/v1", "api_key": "k-up",
                                     "model_prices": {model: {"input": 2.5, "output": 10.0, **prices}}}},
            "models": {"m": {"targets": [{"provider": "openai", "model": model}]}}}


def _chat_reply(stream: bool, model: str) -> Reply:
    if not stream:
        return Reply.json(openai_completion("Spain won.", usage=CHAT_USAGE, model=model))
    return Reply.sse([openai_chunk({"role": "assistant", "content": "Spain won."}, model=model),
                      openai_chunk({}, "stop", model=model), openai_chunk(None, model=model, usage=CHAT_USAGE)])


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_search_model_answer_costs_one_web_search(up: Any, stream: bool) -> None:
    model = "gpt-4o-search-preview"
    dated = model + "-2025-03-11"  # the answer names the snapshot
    ask = {"model": "m", "messages": [{"role": "user", "content": "Who won euro 2024?"}], "stream": stream,
           "web_search_options": {}}
    up.enqueue(_chat_reply(stream, dated), _chat_reply(stream, dated))
    priced = Gateway(config=_chat_config(up.url, model, per_call={"chat_web_search": 0.025}), executor=HttpExecutor())
    r = priced.request(ask)
    assert r.status == 200 and r.text == "Spain won."
    assert r.settlements[0].usage.tool_calls == (("chat_web_search", 1),)
    assert r.settlements[0].cost_micro_usd == 2500 + 1000 + 25000  # 1000 x $2.50/M + 100 x $10/M + $0.025
    unpriced = Gateway(config=_chat_config(up.url, model), executor=HttpExecutor())
    r = unpriced.request(ask)
    assert r.status == 200 and r.settlements[0].cost_micro_usd is None


@pytest.mark.parametrize("stream", [False, True])
def test_another_chat_model_counts_no_search(up: Any, stream: bool) -> None:
    up.enqueue(_chat_reply(stream, "gpt-4o-2024-11-20"))
    gw = Gateway(config=_chat_config(up.url, "gpt-4o"), executor=HttpExecutor())
    r = gw.request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    assert r.status == 200 and r.settlements[0].usage.tool_calls == ()
    assert r.settlements[0].cost_micro_usd == 2500 + 1000


def test_a_search_answer_without_usage_keeps_its_search_in_the_estimate(up: Any) -> None:
    """An upstream that reports no usage is billed an estimate: the search it ran is still part of it."""
    model = "gpt-4o-search-preview"
    body = openai_completion("Spain won.", model=model)
    body.pop("usage", None)
    up.enqueue(Reply.json(body))
    gw = Gateway(config=_chat_config(up.url, model, per_call={"chat_web_search": 0.025}), executor=HttpExecutor())
    r = gw.request({"model": "m", "messages": [{"role": "user", "content": "Who won euro 2024?"}]})
    [s] = r.settlements
    assert r.status == 200 and not s.usage.reported and s.usage.input_tokens > 0
    assert s.usage.tool_calls == (("chat_web_search", 1),) and s.cost_micro_usd is not None
    assert s.cost_micro_usd >= 25000
