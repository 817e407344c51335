"""Honest accounting end to end (gunicorn, the official SDKs, scripted upstreams): each request's tokens and
cost are counted once, and the budget ledger settles exactly the spend log's cost for the same request."""

from __future__ import annotations

import copy
import json
import socket
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from routeplane.auth.keys import create_key
from routeplane.auth.store import AuthStore
from routeplane.config import DEFAULT_CONFIG
from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.gateway import GatewayProcess
from tests.support.responses_script import final_response, reasoning_events
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion, running_upstream

pytestmark = pytest.mark.e2e

# USD per million tokens = micro-USD per token; every bucket has its own price, so a token in the wrong
# bucket changes the cost. Above 1000 input tokens the whole request costs more (a long-context tier).
PRICES = {"input": 1.0, "cache_read": 0.1, "cache_write": 1.25, "output": 10.0, "reasoning": 20.0,
          "tiers": [{"above_input_tokens": 100_000, "input": 2.0, "cache_read": 0.2, "cache_write": 2.5,
                     "output": 15.0, "reasoning": 30.0}]}
SECRET = "sk-upstream-secret-0123456789"


def cost(inp: int = 0, read: int = 0, write: int = 0, out: int = 0, reasoning: int = 0, long: bool = False) -> int:
    f = 2 if long else 1
    return round(f * (inp * 1.0 + read * 0.1 + write * 1.25 + reasoning * 20.0) + out * (15.0 if long else 10.0))


upstream = pytest.fixture(scope="module", name="upstream")(running_upstream)


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    db = f"sqlite:///{tmp_path_factory.mktemp('s10-accounting')}/rp.db"
    url = upstream.url
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": db}
    wires = {"an": ("anthropic_messages", url), "oc": ("openai_chat", url + "/v1"), "ge": ("gemini", url),
             "orr": ("openai_responses", url + "/v1")}
    for name, (wire, base) in wires.items():
        c["providers"][name] = {"protocol": wire, "base_url": base, "api_key": SECRET, "prices": PRICES}
        c["models"][name] = {"targets": [{"provider": name, "model": f"{name}-model"}]}
    c["providers"]["broke"] = {"protocol": "openai_chat", "base_url": url + "/v1", "api_key": SECRET,
                               "prices": PRICES}
    c["models"]["fb402"] = {"targets": [{"provider": "broke", "model": "b"}, {"provider": "an", "model": "an-model"}]}
    # Registry providers (routeplane/data/providers.yaml prices) at the scripted upstream.
    c["providers"]["anthropic"] = {"base_url": url, "api_key": SECRET}
    c["providers"]["gemini"] = {"base_url": url, "api_key": SECRET}
    c["models"]["sonnet"] = {"targets": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}
    c["models"]["gpro"] = {"targets": [{"provider": "gemini", "model": "gemini-2.5-pro"}]}
    c["auth"] = {"mode": "api_keys"}
    gw = GatewayProcess(c, workers=1, threads=8).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def new_key(gw: GatewayProcess, budget: int = 10 ** 12) -> Tuple[str, str]:
    store = Store.from_url(gw.db_url)  # type: ignore[attr-defined]
    try:
        row, key = create_key(AuthStore(store), budget_micro_usd=budget)
        return key, row.account_id
    finally:
        store.close()


def books(gw: GatewayProcess, account: str, rows: int = 1, timeout: float = 10.0) -> Tuple[List[Dict[str, Any]], List[Any]]:
    """The account's spend rows and ledger rows, once `rows` requests are settled."""
    store = Store.from_url(gw.db_url)  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + timeout
        while True:
            spend = spend_rows(store, f"WHERE account_id = {store.param}", (account,))
            ledger = store.execute("SELECT amount_micro_usd, state FROM auth_budget_ledger WHERE account_id = "
                                   f"{store.param}", (account,))
            settled = [r for r in ledger if r[1] != "pending"]
            if (len(spend) >= rows and len(settled) >= rows) or time.monotonic() > deadline:
                return spend, ledger
            time.sleep(0.05)
    finally:
        store.close()


def buckets(row: Dict[str, Any]) -> List[int]:
    return [row[k] for k in ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                             "reasoning_tokens")]


def one_row(gw: GatewayProcess, account: str) -> Dict[str, Any]:
    spend, ledger = books(gw, account)
    assert len(spend) == 1, spend
    [row] = spend
    assert ledger == [(row["cost_micro_usd"], "settled")], (ledger, row)
    assert SECRET not in json.dumps(row)
    return row


# --- this session's changes, end to end (regressions) ----------------------------------------------------

def vllm_chunks(usage_final: Dict[str, Any]) -> List[Dict[str, Any]]:
    """vLLM with continuous_usage_stats: every chunk carries the usage so far."""
    def u(n: int) -> Dict[str, Any]:
        return {"prompt_tokens": 1000, "completion_tokens": n, "total_tokens": 1000 + n,
                "prompt_tokens_details": {"cached_tokens": 800}}
    return [openai_chunk({"role": "assistant", "content": ""}, usage=u(0)), openai_chunk({"content": "one "}, usage=u(1)),
            openai_chunk({"content": "two "}, usage=u(2)), openai_chunk({"content": "three"}, usage=u(3)),
            openai_chunk({}, "stop", usage=u(3)), openai_chunk(None, usage=usage_final)]


def test_vllm_continuous_usage_is_counted_once_openai_sdk(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    import openai
    key, account = new_key(gateway)
    final = {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003,
             "prompt_tokens_details": {"cached_tokens": 800}}
    upstream.enqueue(Reply.sse(vllm_chunks(final)))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="oc", messages=[{"role": "user", "content": "hi"}],
                                                     stream=True, stream_options={"include_usage": True}))
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [3]
    row = one_row(gateway, account)
    assert buckets(row) == [200, 800, 0, 3, 0]
    assert row["cost_micro_usd"] == cost(200, 800, 0, 3)


def test_vllm_continuous_usage_is_counted_once_anthropic_sdk(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    import anthropic
    key, account = new_key(gateway)
    final = {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003,
             "prompt_tokens_details": {"cached_tokens": 800}}
    upstream.enqueue(Reply.sse(vllm_chunks(final)))
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        with client.messages.stream(model="oc", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
            assert s.get_final_message().usage.output_tokens == 3
    row = one_row(gateway, account)
    assert buckets(row) == [200, 800, 0, 3, 0]


def test_a_402_attempt_costs_nothing(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    import openai
    key, account = new_key(gateway)
    upstream.enqueue(Reply.json({"error": {"message": "pay up", "type": "insufficient_quota",
                                           "code": "insufficient_quota"}}, 402),
                     Reply.json({"id": "msg_1", "type": "message", "role": "assistant", "model": "an-model",
                                 "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                                 "stop_sequence": None,
                                 "usage": {"input_tokens": 40, "cache_read_input_tokens": 100,
                                           "cache_creation_input_tokens": 20, "output_tokens": 7}}))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        r = client.chat.completions.create(model="fb402", messages=[{"role": "user", "content": "hi"}])
    assert r.usage is not None and r.usage.prompt_tokens == 160
    row = one_row(gateway, account)
    assert (row["provider"], row["attempts"]) == ("an", 2)
    assert buckets(row) == [40, 100, 20, 7, 0]
    assert row["cost_micro_usd"] == cost(40, 100, 20, 7)


def test_a_402_attempt_of_a_stream_costs_nothing(gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    import openai
    key, account = new_key(gateway)
    upstream.enqueue(Reply.json({"error": {"message": "pay up", "type": "insufficient_quota",
                                           "code": "insufficient_quota"}}, 402),
                     Reply.anthropic_sse([
                         {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                               "model": "an-model", "content": [], "stop_reason": None,
                                                               "stop_sequence": None,
                                                               "usage": {"input_tokens": 40, "cache_read_input_tokens": 100,
                                                                         "cache_creation_input_tokens": 20,
                                                                         "output_tokens": 1}}},
                         {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                         {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}},
                         {"type": "content_block_stop", "index": 0},
                         {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                          "usage": {"output_tokens": 7}},
                         {"type": "message_stop"}]))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="fb402", messages=[{"role": "user", "content": "hi"}],
                                                     stream=True, stream_options={"include_usage": True}))
    assert [c.usage.prompt_tokens for c in chunks if c.usage] == [160]
    row = one_row(gateway, account)
    assert (row["provider"], row["attempts"]) == ("an", 2)
    assert buckets(row) == [40, 100, 20, 7, 0]


R_USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 800},
           "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 1030}
FINAL = final_response("orr-model", R_USAGE)


def responses_events(final: Dict[str, Any] = FINAL) -> List[Dict[str, Any]]:
    return [dict(e, sequence_number=i) for i, e in enumerate(reasoning_events(final))]


@pytest.mark.parametrize("client", ["responses", "chat", "anthropic", "responses-plain"])
def test_responses_reasoning_is_counted_once(gateway: GatewayProcess, upstream: FakeUpstream, client: str) -> None:
    import anthropic
    import openai
    key, account = new_key(gateway)
    if client == "responses-plain":
        upstream.enqueue(Reply.json(FINAL))
    else:
        upstream.enqueue(Reply.sse(responses_events(), done=None))
    hi = [{"role": "user", "content": "hi"}]
    if client.startswith("responses"):
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
            if client == "responses":
                with c.responses.stream(model="orr", input="hi", reasoning={"effort": "low", "summary": "auto"}) as s:
                    assert s.get_final_response().usage.output_tokens == 30
            else:
                assert c.responses.create(model="orr", input="hi").usage.output_tokens == 30
    elif client == "chat":
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
            assert [ch.usage.completion_tokens for ch in c.chat.completions.create(
                model="orr", messages=hi, stream=True, stream_options={"include_usage": True}) if ch.usage] == [30]
    else:
        with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as a:
            with a.messages.stream(model="orr", max_tokens=2048, messages=hi,
                                   thinking={"type": "enabled", "budget_tokens": 1024}) as s:
                assert s.get_final_message().usage.output_tokens == 30
    row = one_row(gateway, account)
    assert buckets(row) == [200, 800, 0, 10, 20]
    assert row["cost_micro_usd"] == cost(200, 800, 0, 10, 20)


# 78 characters; 87 tokens on cl100k_base, 60 on o200k_base (tests/test_s10_budget.py). At 4 characters a
# token, 20.
CHINESE = ("请用三段话解释一下量子计算的基本原理，包括量子比特、叠加态和纠缠，并举例说明它与经典计算的区别。"
           "在回答中请尽量避免使用过于专业的术语，让一个高中生也能理解。")


@pytest.mark.parametrize("stream", [False, True])
def test_an_estimate_counts_a_chinese_prompt_as_its_budget_reserved_it(gateway: GatewayProcess, upstream: FakeUpstream, stream: bool) -> None:
    import openai
    key, account = new_key(gateway)
    if stream:
        upstream.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": CHINESE}), openai_chunk({}, "stop")]))
    else:
        body = openai_completion(CHINESE)
        del body["usage"]
        upstream.enqueue(Reply.json(body))
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as c:
        if stream:
            usage = [ch.usage for ch in c.chat.completions.create(model="oc", messages=[{"role": "user", "content": CHINESE}],
                     stream=True, stream_options={"include_usage": True}) if ch.usage][-1]
        else:
            usage = c.chat.completions.create(model="oc", messages=[{"role": "user", "content": CHINESE}]).usage
    row = one_row(gateway, account)
    assert (usage.prompt_tokens, usage.completion_tokens) == (row["input_tokens"], row["output_tokens"])
    assert row["input_tokens"] >= 87 and not row["usage_reported"]
    if not stream:  # (a stream's output is weighed in the pipeline: see the report)
        assert row["output_tokens"] >= 87


def leave_after(gw: GatewayProcess, key: str, body: Dict[str, Any], marker: Optional[bytes], path: str = "/v1/chat/completions") -> None:
    """POST a stream, read until `marker` (None: not at all), then hang up."""
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    data = json.dumps(body).encode()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    seen = b""
    if marker is None:
        time.sleep(0.3)
    while marker is not None and marker not in seen:
        chunk = s.recv(65536)
        if not chunk:
            break
        seen += chunk
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


@pytest.mark.parametrize("when", ["before-first-byte", "mid-stream"])
def test_a_client_that_leaves_is_billed_the_upstreams_last_counts(gateway: GatewayProcess, upstream: FakeUpstream, when: str) -> None:
    key, account = new_key(gateway)
    final = {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003,
             "prompt_tokens_details": {"cached_tokens": 800}}
    upstream.enqueue(Reply.sse(vllm_chunks(final), chunk_delay=0.4, delay=0.6 if when == "before-first-byte" else 0))
    body = {"model": "oc", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    leave_after(gateway, key, body, None if when == "before-first-byte" else b"one ")
    time.sleep(3)
    spend, ledger = books(gateway, account)
    [row] = spend
    assert ledger == [(row["cost_micro_usd"], "settled")]
    assert row["outcome"] == "client_disconnected"
    # Before the first byte the upstream had reported 1 output token when the hang-up was seen (the first
    # write); mid-stream, 2 ("one ", "two " read together). Never more than was generated, never a sum.
    assert buckets(row) == [200, 800, 0, 1 if when == "before-first-byte" else 2, 0], buckets(row)


# --- the registry's long-context prices ---------------------------------------------------------------------

# claude-sonnet-4-5 past 200K input tokens (all buckets): input $6, cache read $0.60, 5-minute write $7.50,
# 1-hour write 2x input ($12), output $22.50; web search $0.01 a call. Billed at the short-context prices
# (3, 0.30, 3.75, 6, 15), this request cost 148,800 micro-USD.
SONNET_USAGE = {"input_tokens": 1000, "cache_read_input_tokens": 240_000, "cache_creation_input_tokens": 10_000,
                "cache_creation": {"ephemeral_5m_input_tokens": 4000, "ephemeral_1h_input_tokens": 6000},
                "output_tokens": 500, "server_tool_use": {"web_search_requests": 2}}
SONNET_COST = round(1000 * 6.0 + 240_000 * 0.60 + 4000 * 7.50 + 6000 * 12.0 + 500 * 22.50 + 2 * 10_000)


def sonnet_reply(stream: bool) -> Reply:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "Found it."}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": SONNET_USAGE}
    if not stream:
        return Reply.json(message)
    opening = {k: v for k, v in SONNET_USAGE.items() if k not in ("output_tokens", "server_tool_use")}
    return Reply.anthropic_sse([
        {"type": "message_start", "message": dict(message, content=[], stop_reason=None,
                                                  usage=dict(opening, output_tokens=1))},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Found it."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": SONNET_USAGE},
        {"type": "message_stop"}])


@pytest.mark.parametrize("stream", [False, True])
def test_sonnet_past_200k_input_tokens_costs_its_long_context_price(gateway: GatewayProcess, upstream: FakeUpstream,
                                                                   stream: bool) -> None:
    import anthropic
    key, account = new_key(gateway)
    upstream.enqueue(sonnet_reply(stream))
    kw: Any = {"model": "sonnet", "max_tokens": 1000, "messages": [{"role": "user", "content": "Search it."}],
               "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        if stream:
            with client.messages.stream(**kw) as s:
                usage = s.get_final_message().usage
        else:
            usage = client.messages.create(**kw).usage
    assert (usage.cache_read_input_tokens, usage.output_tokens) == (240_000, 500)
    row = one_row(gateway, account)
    assert buckets(row) == [1000, 240_000, 10_000, 500, 0]
    assert row["cost_micro_usd"] == SONNET_COST


# gemini-2.5-pro past 200K prompt tokens (cached included): input $2.50, cache read $0.25, output and
# thoughts $15. Billed at the short-context prices (1.25, 0.125, 10), this request cost 292,500 micro-USD.
GPRO_USAGE = {"promptTokenCount": 300_000, "cachedContentTokenCount": 100_000, "candidatesTokenCount": 1000,
              "thoughtsTokenCount": 2000, "totalTokenCount": 303_000}
GPRO_COST = round(200_000 * 2.50 + 100_000 * 0.25 + 1000 * 15.0 + 2000 * 15.0)


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_pro_past_200k_prompt_tokens_costs_its_long_context_price(gateway: GatewayProcess,
                                                                        upstream: FakeUpstream, stream: bool) -> None:
    import openai
    key, account = new_key(gateway)
    answer = {"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "index": 0,
                              "finishReason": "STOP"}], "usageMetadata": GPRO_USAGE, "modelVersion": "gemini-2.5-pro"}
    upstream.enqueue(Reply.sse([answer], done=None) if stream else Reply.json(answer))
    hi = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        if stream:
            usage = [c.usage for c in client.chat.completions.create(model="gpro", messages=hi, stream=True,
                     stream_options={"include_usage": True}) if c.usage][-1]
        else:
            usage = client.chat.completions.create(model="gpro", messages=hi).usage
    assert usage is not None and usage.prompt_tokens == 300_000
    row = one_row(gateway, account)
    assert buckets(row) == [200_000, 100_000, 0, 1000, 2000]
    assert row["cost_micro_usd"] == GPRO_COST
