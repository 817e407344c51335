"""Hunt: budget enforcement under a real deployment (gunicorn, 2 workers, PostgreSQL, the official openai SDK).

docs/auth.md promises that parallel requests overspend a budget by at most one request's reservation, the
request's worst case. Each test pins a way that promise broke: a reservation below what the request could
cost (a cached prompt, a max_tokens the gateway itself chose for Anthropic), and admissions that read the
ledger from a snapshot older than the lock they waited for (a database whose default isolation is not
READ COMMITTED).
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List

import pytest
import requests

from routeplane.auth.keys import create_key
from routeplane.auth.store import AuthStore
from routeplane.config import DEFAULT_CONFIG
from routeplane.store import Store
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, running_upstream

pytestmark = pytest.mark.e2e

# USD per million tokens = micro-USD per token. Anthropic bills a 5-minute cache write at cache_write and
# a 1-hour one at twice the input price.
PRICES = {"input": 1000.0, "cache_write": 1250.0, "output": 1000.0}


def gateway_config(db_url: str, upstream_url: str) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": db_url}
    c["providers"]["mock"]["prices"] = {"input": 1000, "output": 1000}
    c["providers"]["an"] = {"protocol": "anthropic_messages", "base_url": upstream_url, "api_key": "up-key",
                            "prices": PRICES}
    c["models"]["claude"] = {"targets": [{"provider": "an", "model": "claude-x"}]}
    c["auth"] = {"mode": "api_keys"}
    return c


upstream = pytest.fixture(scope="module", name="upstream")(running_upstream)


@pytest.fixture(scope="module")
def gateway(postgres_cluster: Any, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    url = postgres_cluster.create_database("s9_acct_" + uuid.uuid4().hex[:8])
    gw = GatewayProcess(gateway_config(url, upstream.url), workers=2, threads=16).start()
    gw.db_url = url  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def new_key(db_url: str, budget: int) -> str:
    store = Store.from_url(db_url)
    try:
        return create_key(AuthStore(store), budget_micro_usd=budget)[1]
    finally:
        store.close()


def account_of(key: str) -> str:
    return "key_" + key.split("_")[1]


def settled_spend(db_url: str, account: str, rows: int) -> int:
    """The account's spend-log total once `rows` requests are settled (settlement ends each response)."""
    store = Store.from_url(db_url)
    try:
        deadline = time.monotonic() + 15
        while True:
            count, total = store.execute("SELECT COUNT(*), COALESCE(SUM(cost_micro_usd), 0) FROM spend_log "
                                         f"WHERE account_id = {store.param}", (account,))[0]
            if int(count) >= rows or time.monotonic() > deadline:
                assert int(count) == rows
                return int(total)
            time.sleep(0.1)
    finally:
        store.close()


def anthropic_answer(usage: Dict[str, Any]) -> Callable[[RecordedRequest], Reply]:
    """The upstream's answer, slow enough that every parallel request is admitted before one settles."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
               "usage": usage}
    return lambda _req: Reply.json(message, delay=1.5)


def sdk_burst(gateway: GatewayProcess, key: str, n: int, **create: Any) -> List[int]:
    import openai

    def one(_i: int) -> int:
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
            try:
                client.chat.completions.create(model="claude", **create)
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_parallel_cached_prompts_overspend_by_at_most_one_request(gateway: GatewayProcess,
                                                                  upstream: FakeUpstream) -> None:
    """A prompt Anthropic bills as a 1-hour cache write costs twice its input price; the reservation priced
    it as plain input, so parallel requests each held half their cost and the budget was overspent by
    three times one request's cost (6.03 for a limit of 3 USD)."""
    prompt = "x" * 4000  # 1000 tokens as the gateway estimates them, and as the upstream bills them
    cost = 1000 * 2000 + 10 * 1000  # 1000 one-hour cache-write tokens at 2x input, 10 output tokens
    upstream.default = anthropic_answer({
        "input_tokens": 0, "output_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000}})
    limit = 3_000_000
    key = new_key(gateway.db_url, limit)  # type: ignore[attr-defined]
    try:
        codes = sdk_burst(gateway, key, 8, max_tokens=10, messages=[{"role": "user", "content": prompt}])
    finally:
        upstream.default = None
    admitted = codes.count(200)
    assert set(codes) <= {200, 402} and admitted >= 1, codes
    spent = settled_spend(gateway.db_url, account_of(key), admitted)  # type: ignore[attr-defined]
    assert spent == admitted * cost
    assert spent <= limit + cost, f"{admitted} admitted, {spent} spent for a limit of {limit}"


def test_a_request_without_max_tokens_reserves_what_anthropic_is_sent(gateway: GatewayProcess,
                                                                      upstream: FakeUpstream) -> None:
    """An OpenAI client asking for reasoning without max_tokens: the gateway sends Anthropic max_tokens
    4096 plus a 24576-token thinking budget, but reserved 4096 tokens of output, a seventh of what
    each request could (and here did) cost."""
    upstream.default = anthropic_answer({"input_tokens": 1, "output_tokens": 4096 + 24576})
    cost = 1 * 1000 + (4096 + 24576) * 1000
    limit = 8_000_000
    key = new_key(gateway.db_url, limit)  # type: ignore[attr-defined]
    upstream.requests.clear()
    try:
        codes = sdk_burst(gateway, key, 4, reasoning_effort="high", messages=[{"role": "user", "content": "hi"}])
    finally:
        upstream.default = None
    sent = upstream.requests[0].json
    assert sent["max_tokens"] == 4096 + 24576 and sent["thinking"]["budget_tokens"] == 24576
    admitted = codes.count(200)
    assert set(codes) <= {200, 402} and admitted >= 1, codes
    spent = settled_spend(gateway.db_url, account_of(key), admitted)  # type: ignore[attr-defined]
    assert spent <= limit + cost, f"{admitted} admitted, {spent} spent for a limit of {limit}"


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_admissions_see_reservations_committed_while_they_waited(postgres_cluster: Any, upstream: FakeUpstream,
                                                                 isolation: str) -> None:
    """On a PostgreSQL database whose default isolation is REPEATABLE READ, an admission read the ledger
    from the snapshot it took before waiting for the account's lock: five requests queued behind the lock
    were all admitted against room for one. Under SERIALIZABLE, four of them failed (503) instead."""
    import psycopg2

    url = postgres_cluster.create_database("s9_iso_" + uuid.uuid4().hex[:8])
    holder = psycopg2.connect(url)
    holder.autocommit = True
    holder.cursor().execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_isolation = "
                            f"'{isolation}'")
    holder.autocommit = False
    gw = GatewayProcess(gateway_config(url, upstream.url), workers=2, threads=16).start()
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    try:
        key = new_key(url, 4001)  # the mock's "hi" costs 4000: room for the first request and one more
        headers = {"Authorization": f"Bearer {key}"}
        assert requests.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10).status_code == 200
        with holder.cursor() as cur:  # hold the account's lock while five admissions queue behind it
            cur.execute("SELECT account_id FROM auth_budget_locks WHERE account_id = %s FOR UPDATE",
                        (account_of(key),))
            codes: List[int] = []

            def one() -> None:
                r = requests.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
                codes.append(r.status_code)

            threads = [threading.Thread(target=one) for _ in range(5)]
            for t in threads:
                t.start()
            time.sleep(1.5)
        holder.commit()
        for t in threads:
            t.join()
    finally:
        holder.close()
        gw.stop()
    assert sorted(codes) == [200, 402, 402, 402, 402], codes
