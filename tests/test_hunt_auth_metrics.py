"""Hunt: auth, budgets, metrics and logs under a real gunicorn (2 workers) on PostgreSQL, with the official SDKs.

Each test pins a bug found by attacking the gateway the way a hostile caller or a careless operator would:
non-canonical issuers, malformed token headers, a budget store that fails, secrets in gunicorn's own
refusals, and Prometheus series that must stay exact and bounded.
"""

from __future__ import annotations

import copy
import json
import socket
import time
import uuid
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from routeplane.auth.caip10 import SOLANA_MAINNET
from routeplane.auth.crypto import Wallet, b64url
from routeplane.auth.keys import create_key
from routeplane.auth.store import AuthStore
from routeplane.config import DEFAULT_CONFIG
from routeplane.store import Store
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(postgres_cluster: Any) -> Iterator[GatewayProcess]:
    url = postgres_cluster.create_database("hunt_am_" + uuid.uuid4().hex[:8])
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": url}
    c["providers"]["mock"]["prices"] = {"input": 1000, "output": 1000}
    # A configured route that is itself called "other": unknown names must not be counted under it.
    c["models"]["other"] = {"targets": [{"provider": "mock", "model": "echo-other"}]}
    c["auth"] = {"mode": "api_keys+jwt", "leeway_seconds": 1, "revocation": {"cache_seconds": 1}}
    c["server"] = {"log_level": "debug"}
    c["plugins"] = {"observe": {"prometheus": True}}
    gw = GatewayProcess(c, workers=2, threads=8, env={"ROUTEPLANE_ACCESS_LOG": "-"}).start()
    gw.db_url = url  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def new_key(gateway: GatewayProcess, **kw: Any) -> str:
    store = Store.from_url(gateway.db_url)  # type: ignore[attr-defined]
    try:
        return create_key(AuthStore(store), **kw)[1]
    finally:
        store.close()


def signed(wallet: Wallet, header: Dict[str, Any], claims: Dict[str, Any]) -> str:
    """A token signed by `wallet` over exactly these JSON objects (mint_token would validate them first)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(wallet.sign_ed25519(signing_input.encode("ascii")))


def sdk_calls(url: str, credential: str) -> Dict[str, Tuple[int, Any]]:
    """One non-streamed call per wire with each official SDK: {wire: (status, error body)}; (200, None) if it worked."""
    import anthropic
    import openai
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types

    out: Dict[str, Tuple[int, Any]] = {}
    with openai.OpenAI(base_url=url + "/v1", api_key=credential, max_retries=0) as client:
        try:
            client.chat.completions.create(model="mock-echo", messages=CHAT, max_tokens=5)  # type: ignore[arg-type]
            out["chat"] = (200, None)
        except openai.APIStatusError as exc:  # the SDK keeps only the inner `error` object
            out["chat"] = (exc.status_code, {"error": exc.body})
        try:
            client.responses.create(model="mock-echo", input="hi", max_output_tokens=16)
            out["responses"] = (200, None)
        except openai.APIStatusError as exc:
            out["responses"] = (exc.status_code, {"error": exc.body})
    with anthropic.Anthropic(base_url=url, api_key=credential, max_retries=0) as aclient:
        try:
            aclient.messages.create(model="mock-echo", max_tokens=5, messages=CHAT)  # type: ignore[arg-type]
            out["anthropic"] = (200, None)
        except anthropic.APIStatusError as exc:
            out["anthropic"] = (exc.status_code, exc.body)
    gclient = genai.Client(api_key=credential, http_options=genai_types.HttpOptions(base_url=url))
    try:
        gclient.models.generate_content(model="mock-echo", contents="hi")
        out["gemini"] = (200, None)
    except genai_errors.APIError as exc:
        out["gemini"] = (exc.code, exc.details)
    return out


# --- auth ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["address", "reference"])
def test_an_issuer_with_a_trailing_newline_is_not_a_second_account(gateway: GatewayProcess, where: str) -> None:
    """`$` in the CAIP-10 patterns matched before a final newline, and base58 decoding strips it: the same
    wallet signed in as `...ADDR\\n`, a different account id (so a second operator account_limit, budgets and
    revocation cut-offs of its own)."""
    import openai

    w = Wallet.generate()
    iss = (f"{SOLANA_MAINNET}:{w.solana_address}\n" if where == "address"
           else f"{SOLANA_MAINNET}\n:{w.solana_address}")
    token = signed(w, {"alg": "SOL_EDDSA", "typ": "JWT"}, {"iss": iss, "exp": int(time.time()) + 600, "jti": "nl"})
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as exc:
            client.chat.completions.create(model="mock-echo", messages=CHAT)  # type: ignore[arg-type]
    assert "iss" in exc.value.message and token not in exc.value.message
    admin = new_key(gateway, scope="admin")
    r = requests.post(gateway.url + "/admin/token-revocations", json={"all_before": "now", "iss": iss}, timeout=10,
                      headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "account", r.text


@pytest.mark.parametrize("alg", [["SOL_EDDSA"], {"SOL_EDDSA": 1}])
def test_a_token_header_with_a_non_string_alg_is_401_on_every_wire(gateway: GatewayProcess, alg: Any) -> None:
    """`alg not in frozenset(...)` raised TypeError (unhashable) for a list or object: a 500 "internal error"."""
    w = Wallet.generate()
    token = signed(w, {"alg": alg, "typ": "JWT"},
                   {"iss": f"{SOLANA_MAINNET}:{w.solana_address}", "exp": int(time.time()) + 600})
    results = sdk_calls(gateway.url, token)
    assert {wire: status for wire, (status, _b) in results.items()} == dict.fromkeys(results, 401), results
    assert results["anthropic"][1]["error"]["type"] == "authentication_error"
    assert results["chat"][1]["error"]["type"] == "authentication_error"
    assert results["gemini"][1]["error"]["status"] == "UNAUTHENTICATED"
    assert "algorithm" in json.dumps(results) and token not in json.dumps(results)


def test_gemini_model_listing_takes_the_key_from_the_query_like_generate_content(gateway: GatewayProcess) -> None:
    """`GET /v1beta/models?key=…` is Gemini's own curl sample, and generateContent honours `?key=`; the
    model views read headers only and answered 401 "Missing credentials"."""
    key = new_key(gateway, models=("mock-*",))
    with requests.Session() as http:
        r = http.get(gateway.url + "/v1beta/models", params={"key": key}, timeout=10)
        assert r.status_code == 200, r.text
        assert [m["name"] for m in r.json()["models"]] == ["models/mock-echo"]  # the key's allowlist applied
        r = http.get(gateway.url + "/v1beta/models/mock-echo", params={"key": key}, timeout=10)
        assert r.status_code == 200 and r.json()["name"] == "models/mock-echo", r.text
        r = http.get(gateway.url + "/v1beta/models", params={"key": key[:-2] + "xx"}, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED", r.text
        r = http.get(gateway.url + "/v1beta/models", params={"key": key}, headers={"x-goog-api-key": "wrong"},
                     timeout=10)
        assert r.status_code == 401, r.text  # a header credential wins, as on generateContent
    assert key.split("_", 2)[2] not in gateway.logs()


# --- budgets ---------------------------------------------------------------------------------------------------


def test_a_budget_store_outage_is_a_503_not_a_billing_error_on_any_wire(gateway: GatewayProcess) -> None:
    """The budget's 503 `budget_unavailable` had the kind `budget`, which every wire renders as "out of
    money": Anthropic turned it into 402 billing_error (not retried by the SDK), Gemini said
    RESOURCE_EXHAUSTED, OpenAI insufficient_quota. It is an outage the client should retry."""
    key = new_key(gateway, budget_micro_usd=10 ** 9)
    store = Store.from_url(gateway.db_url)  # type: ignore[attr-defined]
    store.execute("ALTER TABLE auth_budget_ledger RENAME TO auth_budget_ledger_away")
    try:
        results = sdk_calls(gateway.url, key)
    finally:
        store.execute("ALTER TABLE auth_budget_ledger_away RENAME TO auth_budget_ledger")
        store.close()
    assert {wire: status for wire, (status, _b) in results.items()} == dict.fromkeys(results, 503), results
    assert results["anthropic"][1]["error"]["type"] != "billing_error"
    assert results["gemini"][1]["error"]["status"] == "UNAVAILABLE"
    for wire in ("chat", "responses"):
        error = results[wire][1]["error"]
        assert error["code"] == "budget_unavailable" and error["type"] != "insufficient_quota", results[wire]
    assert "checked right now" in results["anthropic"][1]["error"]["message"]
    assert sdk_calls(gateway.url, key)["chat"] == (200, None)  # the store is back: admitted again


# --- logs ------------------------------------------------------------------------------------------------------


def raw_exchange(gateway: GatewayProcess, request: bytes) -> bytes:
    host, port = gateway.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        chunks: List[bytes] = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def test_a_gemini_query_key_in_a_refused_request_line_is_neither_logged_nor_echoed(gateway: GatewayProcess) -> None:
    """gunicorn refuses a request line with a control character before the app runs, logs it at WARNING
    with its query string, and our JSON error body echoed it: a `?key=` credential in both."""
    key = new_key(gateway)
    secret = key.split("_", 2)[2]
    requests_ = [
        f"POST /v1beta/models/mock-echo:generateContent?key={key}&alt=\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1beta/models?foo=1&key={key}\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        f"POST /v1beta/models/mock-echo:generateContent?key={key} HTTP/9.9\r\nHost: x\r\n\r\n",
        f"PROXY TCP4 {key} HTTP/1.1\r\n\r\n",  # a key where no credential belongs: still a key
    ]
    for raw in requests_:
        answer = raw_exchange(gateway, raw.encode("latin-1"))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer[:300]
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error" and error["status"] == "INVALID_ARGUMENT"
        assert secret.encode() not in answer, answer
    time.sleep(0.2)
    log = gateway.logs()
    assert "Invalid" in log  # gunicorn did log the refusals: the haystack is real
    assert "[redacted]" in log
    assert secret not in log


# --- metrics ---------------------------------------------------------------------------------------------------


def _render(rows: List[Tuple[Any, ...]], labels: Any) -> str:
    from routeplane_observe.prometheus import render

    class _Store:
        dialect = "postgresql"
        param = "%s"

        def execute(self, sql: str, params: Any = ()) -> List[Tuple[Any, ...]]:
            return list(rows) if "GROUP BY route, provider, model, outcome" in sql else []

    class _App:
        store = _Store()

    return render(_App(), labels)  # type: ignore[arg-type]


def test_prometheus_cost_counter_does_not_depend_on_the_row_order() -> None:
    """The cost counter summed floats in whatever order the database grouped the rows: 0.1 + 0.2 + 0.3 is
    0.6000000000000001 one way and 0.6 the other, so a scrape could read less than the one before it, which
    Prometheus takes for a counter reset (a rate() spike of the whole total)."""
    from routeplane_observe.labels import Labels

    labels = Labels(frozenset({"mock-echo"}), frozenset({"mock"}), frozenset({"echo"}))
    rows = [("mock-echo", "mock", "echo", outcome, 1, 1, 1, micro)
            for outcome, micro in (("success", 100000), ("upstream_error", 200000), ("aborted", 300000))]
    one, other = _render(rows, labels), _render(rows[::-1], labels)
    assert one == other
    line = next(s for s in one.splitlines() if s.startswith("routeplane_cost_usd_total{"))
    assert line.endswith(" 0.6"), line


def test_prometheus_unknown_routes_are_not_counted_under_a_route_named_other(gateway: GatewayProcess) -> None:
    """Unknown and direct `provider:model` routes fold into `other`; with a configured route called `other`
    their requests were added to its series (/admin/metrics already says `(other)` then)."""
    from tests.test_observability import parse_prometheus

    key = new_key(gateway)
    admin = new_key(gateway, scope="admin")
    with requests.Session() as http:
        for model in ("other", "mock:echo", "mock:echo"):
            r = http.post(gateway.url + "/v1/chat/completions", json={"model": model, "messages": CHAT}, timeout=10,
                          headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        scrape = http.get(gateway.url + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert scrape.status_code == 200
    samples = parse_prometheus(scrape.text)
    requests_by_route: Dict[Tuple[str, str], float] = {}
    for (name, pairs), value in samples.items():
        if name == "routeplane_requests_total":
            labels = dict(pairs)
            k = (labels["route"], labels["model"])
            requests_by_route[k] = requests_by_route.get(k, 0) + value
    assert requests_by_route.get(("other", "echo-other"), 0) >= 1
    assert {model for route, model in requests_by_route if route == "other"} == {"echo-other"}, requests_by_route
    assert requests_by_route.get(("(other)", "echo"), 0) >= 2, requests_by_route


def test_the_redacting_filter_covers_formatted_arguments_and_keeps_the_rest() -> None:
    """gunicorn logs a request that fails outside the app as `"Error handling request %s", req.uri`: the query
    is an argument, not the format, and the traceback must survive the rewrite."""
    import logging

    from routeplane.auth.keys import new_key
    from routeplane.logs import RedactingFilter

    key = new_key()[1]
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 1, "Error handling request %s %s",
                                   ("POST", f"/v1beta/models/m:generateContent?alt=sse&key={key}"), sys.exc_info())
    assert RedactingFilter().filter(record) is True
    message = logging.Formatter().format(record)
    assert key.split("_", 2)[2] not in message and "key=[redacted]" in message
    assert "?alt=sse&key=" in message and "RuntimeError: boom" in message


def test_redacting_a_long_line_is_linear() -> None:
    """The JWT pattern was tried at every `eyJ` inside a run of base64url characters, each try scanning the
    rest of the run: a refused request line of `eyJ` repeated (gunicorn logs it, and echoes it in the error
    body, both redacted) cost 5 ms of a worker's CPU at 4 KB, 3.5 s at 100 KB."""
    from routeplane.logs import redact

    started = time.perf_counter()
    assert redact("Invalid request line: '" + "eyJ" * 33_000 + "'").count("eyJ") == 33_000
    assert time.perf_counter() - started < 1.0
    jwt = "eyJhbGciOiJFSVAxOTFLIn0.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
    for line in (f"Bearer {jwt}", f"token={jwt}&x=1", f"'{jwt}'", f"/{jwt}"):
        assert jwt not in redact(line) and "[redacted]" in redact(line), line
