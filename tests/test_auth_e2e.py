"""Auth end to end under real gunicorn: SDK clients with API keys and Web3 JWTs, admin scope, secrets kept out
of logs, and budgets that hold under a parallel burst across workers (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from routeplane.auth.caip10 import BASE_MAINNET, SOLANA_MAINNET
from routeplane.auth.crypto import Wallet
from routeplane.auth.jwt import mint_token
from routeplane.cli import main
from routeplane.config import DEFAULT_CONFIG
from routeplane.store import Store
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

# Mock echo of "hi": 1 input + 3 output tokens at 1000 USD/M each = 4000 micro-USD; the worst case
# reserved at admission is (1 + max_tokens 5) x 1000 = 6000.
COST, RESERVE = 4000, 6000
BODY = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def gateway_config(db_url: str) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": db_url}
    c["providers"]["mock"]["prices"] = {"input": 1000, "output": 1000}
    c["models"]["slow"] = {"targets": [{"provider": "mock", "model": "slow-150"}]}
    c["auth"] = {"mode": "api_keys+jwt"}
    c["server"] = {"log_level": "debug"}
    return c


def create_key(config_path: str, capsys: pytest.CaptureFixture, *args: str) -> str:
    capsys.readouterr()
    assert main(["keys", "create", "--config", config_path, *args]) == 0
    return capsys.readouterr().out.strip()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('auth-e2e')}/rp.db"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database("auth_" + uuid.uuid4().hex[:8])
    gw = GatewayProcess(gateway_config(url), workers=2, threads=16, env={"ROUTEPLANE_ACCESS_LOG": "-"}).start()
    gw.db_url = url  # type: ignore[attr-defined]
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet.generate()


def jwt(w: Wallet, chain: str = "solana", **claims: Any) -> str:
    iss = f"{SOLANA_MAINNET}:{w.solana_address}" if chain == "solana" else f"{BASE_MAINNET}:{w.evm_address}"
    claims.setdefault("exp", int(time.time()) + 600)
    claims.setdefault("jti", uuid.uuid4().hex)
    return mint_token(w, iss, claims)


def test_sdk_clients_with_keys_and_tokens(gateway: GatewayProcess, wallet: Wallet, capsys: Any) -> None:
    import anthropic
    import openai

    key = create_key(gateway.config_path, capsys, "--name", "sdk")
    for credential in (key, jwt(wallet), jwt(wallet, chain="evm")):
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key=credential, max_retries=0) as client:
            out = client.chat.completions.create(model="mock-echo", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "You said: hi"
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        msg = client.messages.create(model="mock-echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "You said: hi"
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key[:-2] + "xx", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="mock-echo", messages=[{"role": "user", "content": "hi"}])
    with anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.create(model="mock-echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}])


def test_model_listing_errors_come_in_each_sdks_own_shape(gateway: GatewayProcess, capsys: Any) -> None:
    """/v1/models serves three SDKs; its 401 and 404 were OpenAI-shaped for all of them."""
    import anthropic
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types

    with anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as exc:
            client.models.list()
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "authentication_error"
    key = create_key(gateway.config_path, capsys, "--name", "models")
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        assert "mock-echo" in [m.id for m in client.models.list()]
        with pytest.raises(anthropic.NotFoundError) as nf:
            client.models.retrieve("no-such-model")
    assert nf.value.body["type"] == "error" and nf.value.body["error"]["type"] == "not_found_error"
    gclient = genai.Client(api_key="wrong-key", http_options=genai_types.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai_errors.ClientError) as gexc:
        list(gclient.models.list())
    assert gexc.value.code == 401 and gexc.value.status == "UNAUTHENTICATED", gexc.value


def test_refusals_over_http(gateway: GatewayProcess, wallet: Wallet, capsys: Any) -> None:
    url = gateway.url
    with requests.Session() as http:
        def chat(cred: str, model: str = "mock-echo") -> requests.Response:
            return http.post(url + "/v1/chat/completions", json=dict(BODY, model=model),
                             headers={"Authorization": f"Bearer {cred}"}, timeout=10)

        forged = jwt(wallet)[:-4] + "AAAA"
        r = chat(forged)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = chat(jwt(wallet, exp=int(time.time()) - 3600))
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        r = chat(jwt(wallet, models=["mock-*"]), model="default")
        assert r.status_code == 403 and "'default'" in r.json()["error"]["message"]
        r = http.get(url + "/admin/whoami", headers={"Authorization": f"Bearer {jwt(wallet)}"}, timeout=10)
        assert r.status_code == 403
        admin = create_key(gateway.config_path, capsys, "--scope", "admin")
        r = http.get(url + "/admin/whoami", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code == 200 and r.json()["scope"] == "admin"


def burst(url: str, credential: str, n: int) -> List[Tuple[int, Dict[str, Any]]]:
    def one(_i: int) -> Tuple[int, Dict[str, Any]]:
        r = requests.post(url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {credential}"},
                          timeout=30)
        try:
            return r.status_code, r.json()
        finally:
            r.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("kind", ["api_key", "jwt"])
def test_parallel_burst_never_overspends_by_more_than_one_reservation(gateway: GatewayProcess, wallet: Wallet,
                                                                      kind: str, capsys: Any) -> None:
    budget = 10 * COST
    if kind == "api_key":
        key = create_key(gateway.config_path, capsys, "--budget", str(budget))
        account = "key_" + key.split("_")[1]
        credential = key
    else:
        w = Wallet.generate()  # a fresh account
        credential = jwt(w, budget=budget, budget_scope="account")
        account = requests.get(gateway.url + "/admin/whoami", timeout=10,
                               headers={"Authorization": f"Bearer {jwt(w, scope='admin')}"}).json()["account_id"]
    results = burst(gateway.url, credential, 40)
    codes = sorted(code for code, _ in results)
    admitted = codes.count(200)
    assert set(codes) <= {200, 402}, results
    assert admitted >= budget // RESERVE, codes  # reservations never admit fewer than the budget covers
    for code, body in results:
        if code == 402:
            assert body["error"]["code"] == "budget_exhausted"
    store = Store(gateway.db_url)  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 10
        while True:  # settlement runs in the response's close path: wait for the last rows
            spent = store.execute("SELECT COALESCE(SUM(cost_micro_usd), 0), COUNT(*) FROM spend_log "
                                  f"WHERE account_id = {store.param}", (account,))[0]
            if int(spent[1]) >= admitted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ledger = store.execute("SELECT COALESCE(SUM(amount_micro_usd), 0) FROM auth_budget_ledger "
                               f"WHERE account_id = {store.param} AND state = 'pending'", (account,))[0][0]
    finally:
        store.close()
    print(f"{kind}: {admitted} of 40 admitted, spend {spent[0]} for a budget of {budget} (+ one reservation {RESERVE})")
    assert int(spent[1]) == admitted and int(spent[0]) == admitted * COST
    assert int(spent[0]) <= budget + RESERVE, (spent, codes)
    assert int(ledger) == 0  # every reservation was settled


def test_secrets_never_reach_the_gunicorn_log(gateway: GatewayProcess, wallet: Wallet, capsys: Any) -> None:
    key = create_key(gateway.config_path, capsys, "--budget", "1")
    token = jwt(wallet, budget=1, jti="log-check")
    with requests.Session() as http:
        for cred in (key, token, key[:-1] + ("Z" if key[-1] != "Z" else "Y"), token[:-2] + "zz"):
            for model in ("mock-echo", "nope", "mock:fail-500"):
                for stream in (False, True):
                    r = http.post(gateway.url + "/v1/chat/completions", timeout=10,
                                  json=dict(BODY, model=model, stream=stream),
                                  headers={"Authorization": f"Bearer {cred}", "x-api-key": cred})
                    r.close()
            http.get(gateway.url + "/admin/whoami", headers={"x-api-key": cred}, timeout=10).close()
            gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
            http.post(gateway.url + "/v1beta/models/mock-echo:generateContent", params={"key": cred}, json=gemini,
                      timeout=10).close()
    time.sleep(0.3)
    log = gateway.logs()
    assert "POST /v1/chat/completions" in log  # access log on: the haystack is real
    for needle in (key, key.split("_", 2)[2], token, token.split(".")[2]):
        assert needle not in log
    store = Store(gateway.db_url)  # type: ignore[attr-defined]
    try:
        rows = store.execute("SELECT * FROM spend_log")
    finally:
        store.close()
    dump = json.dumps([[str(v) for v in row] for row in rows])
    assert rows and key not in dump and token not in dump
