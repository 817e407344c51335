"""Honest budget reservations: per-call fees of declared server tools, non-Latin text, and spend made while
the store was down (fail_closed: false).

Through the real Flask app, the real wire codecs and the registry's prices; the upstream is a real local HTTP
server (FakeUpstream) or the mock provider; the outage is a real PostgreSQL server stopped and started again.
"""

from __future__ import annotations

import copy
import logging
import time
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import pytest

from routeplane.app import build_app
from routeplane.auth.budget import BudgetPlugin
from routeplane.auth.caip10 import SOLANA_MAINNET
from routeplane.auth.crypto import Wallet
from routeplane.auth.jwt import mint_token
from routeplane.auth.keys import create_key
from routeplane.auth.plugin import AuthSettings, StoreHandle
from routeplane.auth.store import AuthStore
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.language_model.stream import estimate_tokens, estimate_tokens_upper, prompt_text
from routeplane.protocols import anthropic_messages, openai_chat, openai_responses
from routeplane.protocols.gemini import GeminiClientCodec
from routeplane.store import migrate
from tests.support.upstream import FakeUpstream
from tests.support.wires import weather_upstream

# Registry prices (routeplane/data/providers.yaml), USD per call, as micro-USD.
PREVIEW_ON_GPT_4O, GROUNDED_PROMPT, ANTHROPIC_SEARCH = 25_000, 35_000, 10_000
DEFAULT_CALLS = 5  # auth.budget.default_server_tool_calls

# The mock provider at 1000 USD per million tokens in and out: 1000 micro-USD a token.
MOCK_PRICES = {"input": 1000, "output": 1000}
BODY = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
COST = 4000  # mock echo of "hi": 1 input + 3 output tokens

# 78 characters. Its real token count, measured with the tiktoken-compatible `bpe-openai` 0.1.4: 87 on
# cl100k_base (GPT-4), 60 on o200k_base (GPT-4o). At 4 characters a token it was estimated at 20.
CHINESE = ("请用三段话解释一下量子计算的基本原理，包括量子比特、叠加态和纠缠，并举例说明它与经典计算的区别。"
           "在回答中请尽量避免使用过于专业的术语，让一个高中生也能理解。")
CHINESE_REAL_TOKENS = 87


def gateway_config(db_url: str, auth: Dict[str, Any], upstream: Optional[str] = None) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": db_url}
    c["providers"]["mock"]["prices"] = dict(MOCK_PRICES)
    base = upstream or "http://127.0.0.1:9"
    c["providers"]["openai"] = {"protocol": "openai_responses", "base_url": base + "/v1", "api_key": "sk-up-secret"}
    c["providers"]["gemini"] = {"base_url": base, "api_key": "up-secret"}
    c["providers"]["anthropic"] = {"base_url": base, "api_key": "sk-ant-up-secret"}
    c["models"]["gpt-4o"] = {"targets": [{"provider": "openai", "model": "gpt-4o"}]}
    c["auth"] = auth
    return c


def plugin_for(tmp_path: Any, budget: Optional[Dict[str, Any]] = None) -> BudgetPlugin:
    config = parse_config(gateway_config(f"sqlite:///{tmp_path}/rp.db", {"mode": "api_keys", "budget": budget or {}}))
    return BudgetPlugin(AuthSettings.from_config(config.auth).budget, StoreHandle(), config)


def reserved(plugin: BudgetPlugin, prompt: Any) -> int:
    return plugin.worst_case(SimpleNamespace(prompt=prompt))  # type: ignore[arg-type]


def responses(**body: Any) -> Any:
    return openai_responses.CLIENT.decode_request({"model": "gpt-4o", "input": "What happened today?",
                                                   "max_output_tokens": 64, **body})


# --- 1. per-call fees of declared server tools ----------------------------------------------------------------


def test_a_declared_web_search_preview_reserves_its_calls(tmp_path: Any) -> None:
    plugin = plugin_for(tmp_path)
    plain = reserved(plugin, responses())
    preview = [{"type": "web_search_preview"}]
    # No cap on the wire: default_server_tool_calls searches, at gpt-4o's $25 per 1,000.
    assert reserved(plugin, responses(tools=preview)) - plain == DEFAULT_CALLS * PREVIEW_ON_GPT_4O
    # The Responses max_tool_calls caps every built-in tool call of the response.
    assert reserved(plugin, responses(tools=preview, max_tool_calls=2)) - plain == 2 * PREVIEW_ON_GPT_4O
    # Offered beside the preview, the GA tool's searches are billed as the preview's (response.py).
    both = [{"type": "web_search"}, {"type": "web_search_preview_2025_03_11"}]
    assert reserved(plugin, responses(tools=both)) - plain == 2 * DEFAULT_CALLS * PREVIEW_ON_GPT_4O
    # Under one cap for all, the calls go to the dearest kind first: 3 searches, not 3 file searches.
    mixed = [{"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search_preview"}]
    assert reserved(plugin, responses(tools=mixed, max_tool_calls=3)) - plain == 3 * PREVIEW_ON_GPT_4O
    # A tool billed by the call whose price is unknown (the settlement is then unknown) reserves the
    # configured unknown-price amount; tools that cost tokens only add nothing.
    unpriced = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    assert reserved(plugin, responses(tools=unpriced)) - plain == 10_000
    mcp = [{"type": "mcp", "server_label": "x", "server_url": "https://mcp.example.com"}]
    assert reserved(plugin, responses(tools=mcp)) == plain


def test_gemini_grounding_reserves_one_grounded_prompt(tmp_path: Any) -> None:
    plugin = plugin_for(tmp_path)
    codec = GeminiClientCodec("gemini:gemini-2.5-flash", stream=False)
    body = {"contents": [{"role": "user", "parts": [{"text": "Who won the match yesterday?"}]}],
            "generationConfig": {"maxOutputTokens": 64}}
    plain = reserved(plugin, codec.decode_request(body))
    for key in ("googleSearch", "google_search"):
        grounded = codec.decode_request(dict(body, tools=[{key: {}}]))
        assert reserved(plugin, grounded) - plain == GROUNDED_PROMPT, key  # its queries cost 0 on Gemini 2.x
    url_context = codec.decode_request(dict(body, tools=[{"urlContext": {}}]))
    assert reserved(plugin, url_context) == plain


def test_anthropic_web_search_reserves_max_uses(tmp_path: Any) -> None:
    plugin = plugin_for(tmp_path)
    body = {"model": "anthropic:claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Search the news."}]}
    plain = reserved(plugin, anthropic_messages.CLIENT.decode_request(body))
    tool = {"type": "web_search_20250305", "name": "web_search"}
    capped = anthropic_messages.CLIENT.decode_request(dict(body, tools=[dict(tool, max_uses=3)]))
    assert reserved(plugin, capped) - plain == 3 * ANTHROPIC_SEARCH
    uncapped = anthropic_messages.CLIENT.decode_request(dict(body, tools=[tool]))
    assert reserved(plugin, uncapped) - plain == DEFAULT_CALLS * ANTHROPIC_SEARCH
    fewer = plugin_for(tmp_path, {"default_server_tool_calls": 1})
    assert reserved(fewer, uncapped) - reserved(fewer, anthropic_messages.CLIENT.decode_request(body)) == \
        ANTHROPIC_SEARCH


@pytest.fixture
def gw(tmp_path: Any) -> Iterator[SimpleNamespace]:
    up = FakeUpstream().start()
    up.default = weather_upstream
    app = build_app(parse_config(gateway_config(f"sqlite:///{tmp_path}/rp.db", {"mode": "api_keys"}, up.url)))
    migrate(app.store, app.plugins)
    yield SimpleNamespace(app=app, client=app.flask_app().test_client(), keys=AuthStore(app.store), up=up)
    app.store.close()
    up.stop()


def ledger(app: Any) -> List[Any]:
    return app.store.execute("SELECT amount_micro_usd, state FROM auth_budget_ledger ORDER BY created_at")


def test_a_search_in_flight_holds_its_fees_against_the_budget(gw: SimpleNamespace) -> None:
    """A request offering gpt-4o web search reserved its tokens only (about 700 micro-USD) while its
    searches could cost $0.125: a second request of a $0.05 budget was admitted beside it."""
    key = create_key(gw.keys, budget_micro_usd=50_000)[1]
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "gpt-4o", "input": "What happened today?", "max_output_tokens": 64, "stream": True,
            "tools": [{"type": "web_search_preview"}]}
    searching = gw.client.post("/v1/responses", json=body, headers=auth, buffered=False)
    try:
        assert searching.status_code == 200
        [(amount, state)] = ledger(gw.app)
        assert state == "pending" and amount >= DEFAULT_CALLS * PREVIEW_ON_GPT_4O
        second = gw.client.post("/v1/responses", json=dict(body, stream=False, tools=[]), headers=auth)
        assert second.status_code == 402 and second.json["error"]["code"] == "budget_exhausted", second.json
    finally:
        assert b"response.completed" in b"".join(searching.response)
        searching.close()
    assert [state for _a, state in ledger(gw.app)] == ["settled"]  # no rounds window: a refusal has no row


# --- 2. non-Latin text --------------------------------------------------------------------------------------


def chat(content: str, max_tokens: int = 1) -> Any:
    return openai_chat.CLIENT.decode_request({"model": "default", "max_tokens": max_tokens,
                                              "messages": [{"role": "user", "content": content}]})


def test_a_chinese_prompt_is_reserved_at_no_fewer_tokens_than_it_has(tmp_path: Any) -> None:
    plugin = plugin_for(tmp_path)
    assert estimate_tokens(CHINESE) == 20 < CHINESE_REAL_TOKENS  # the old estimate
    # One output token (max_tokens 1) at 1000 micro-USD; the rest is the input's.
    assert reserved(plugin, chat(CHINESE)) // 1000 - 1 >= CHINESE_REAL_TOKENS


def test_latin_text_costs_what_it_did(tmp_path: Any) -> None:
    plugin = plugin_for(tmp_path)
    english = "Explain the basic principles of quantum computing to a high-school student. " * 27  # ~2 KB
    prompt = chat(english)
    assert reserved(plugin, prompt) == (estimate_tokens(prompt_text(prompt)) + 1) * 1000
    assert estimate_tokens_upper(english) == estimate_tokens(english)


def test_a_lone_surrogate_is_counted_not_a_crash(tmp_path: Any) -> None:
    plugin = plugin_for(tmp_path)
    assert reserved(plugin, chat("\ud800 broken pair")) > 0  # JSON "\\ud800" decodes to a lone surrogate


def test_a_chinese_prompt_in_flight_holds_its_real_size(gw: SimpleNamespace) -> None:
    """Streamed through the gateway: the pending reservation covers the prompt's real tokens."""
    key = create_key(gw.keys, budget_micro_usd=10 ** 9)[1]
    body = {"model": "default", "stream": True, "max_tokens": 1, "messages": [{"role": "user", "content": CHINESE}]}
    r = gw.client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, buffered=False)
    try:
        [(amount, state)] = ledger(gw.app)
        assert state == "pending" and amount >= (CHINESE_REAL_TOKENS + 1) * 1000, amount
    finally:
        b"".join(r.response)
        r.close()


# --- 3. spend made while the store was down (fail_closed: false) --------------------------------------------


@pytest.fixture
def wallet() -> Wallet:
    return Wallet(bytes(range(11, 43)))


def token(w: Wallet, budget: int) -> str:
    return mint_token(w, f"{SOLANA_MAINNET}:{w.solana_address}", {"exp": time.time() + 600, "budget": budget})


@pytest.fixture
def pg_gw(private_postgres_cluster: Any, tmp_path: Any) -> Iterator[SimpleNamespace]:
    pg = private_postgres_cluster
    auth = {"mode": "jwt", "budget": {"fail_closed": False, "spool": str(tmp_path / "budget.spool")}}
    config = gateway_config(pg.url, auth)
    config["plugins"] = {"spend_log": {"spool": str(tmp_path / "spend.spool")}}  # not the working directory's
    app = build_app(parse_config(config))
    migrate(app.store, app.plugins)
    yield SimpleNamespace(app=app, client=app.flask_app().test_client(), pg=pg)
    app.store.close()


def pg_ledger(pg: Any) -> List[Any]:
    from routeplane.store import Store

    store = Store.from_url(pg.url)
    try:
        return store.execute("SELECT amount_micro_usd, state FROM auth_budget_ledger")
    finally:
        store.close()


def capture(caplog: pytest.LogCaptureFixture) -> Any:
    routeplane_log = logging.getLogger("routeplane")  # may not propagate (configure_logging)
    routeplane_log.addHandler(caplog.handler)
    return routeplane_log


@pytest.mark.postgres
def test_spend_admitted_during_an_outage_is_recorded_once_the_store_is_back(pg_gw: SimpleNamespace,
                                                                           wallet: Wallet) -> None:
    """Admitted unchecked while PostgreSQL was down, the request never entered the ledger, and its
    settlement (the store back by then) had no row to settle: the budget never saw the spend."""
    jwt = token(wallet, budget=COST)
    auth = {"Authorization": f"Bearer {jwt}"}
    pg_gw.pg.pause()
    try:
        stream = pg_gw.client.post("/v1/chat/completions", json=dict(BODY, stream=True), headers=auth, buffered=False)
        assert stream.status_code == 200  # fail_closed: false
    finally:
        pg_gw.pg.resume()
    assert b"[DONE]" in b"".join(stream.response)
    stream.close()  # settled now, with the store back
    assert pg_ledger(pg_gw.pg) == [(COST, "settled")]
    r = pg_gw.client.post("/v1/chat/completions", json=BODY, headers=auth)
    assert r.status_code == 402 and r.json["error"]["code"] == "budget_exhausted", r.json


@pytest.mark.postgres
def test_spend_settled_during_an_outage_is_kept_and_counted_once_it_is_back(pg_gw: SimpleNamespace, wallet: Wallet,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    jwt = token(wallet, budget=COST)
    auth = {"Authorization": f"Bearer {jwt}"}
    caplog.set_level(logging.WARNING)
    routeplane_log = capture(caplog)
    try:
        pg_gw.pg.pause()
        try:
            assert pg_gw.client.post("/v1/chat/completions", json=BODY, headers=auth).status_code == 200
        finally:
            pg_gw.pg.resume()
        records = {id(r): r for r in caplog.records}.values()  # a record reaches caplog's handler once or twice
        kept = [r.getMessage() for r in records if "budget: the store is unavailable" in r.getMessage()]
        assert len(kept) == 1 and f"{COST} micro-USD spent by request" in kept[0], kept
        assert jwt not in caplog.text and "secret" not in caplog.text
        # The next admission writes what was kept first, so it sees the budget spent.
        r = pg_gw.client.post("/v1/chat/completions", json=BODY, headers=auth)
        assert r.status_code == 402 and r.json["error"]["code"] == "budget_exhausted", r.json
    finally:
        routeplane_log.removeHandler(caplog.handler)
    assert pg_ledger(pg_gw.pg) == [(COST, "settled")]
