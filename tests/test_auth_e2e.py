"""Auth end to end under real gunicorn: SDK clients with API keys and Web3 JWTs, admin scope, secrets kept out
of logs, budgets that hold under a parallel burst across workers, and JWT revocation that reaches every worker
within its documented bound (SQLite, PostgreSQL and MariaDB)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from routeplane.auth.caip10 import BASE_MAINNET, SOLANA_MAINNET, parse_caip10
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
# auth.revocation.cache_seconds: how long a worker may still admit a token revoked by another process.
REVOCATION_BOUND = 2.0
BODY = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def gateway_config(db_url: str) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": db_url}
    c["providers"]["mock"]["prices"] = {"input": 1000, "output": 1000}
    c["models"]["slow"] = {"targets": [{"provider": "mock", "model": "slow-150"}]}
    c["auth"] = {"mode": "api_keys+jwt", "leeway_seconds": 1, "revocation": {"cache_seconds": REVOCATION_BOUND}}
    c["server"] = {"log_level": "debug"}
    return c


def create_key(config_path: str, capsys: pytest.CaptureFixture, *args: str) -> str:
    capsys.readouterr()
    assert main(["keys", "create", "--config", config_path, *args]) == 0
    return capsys.readouterr().out.strip()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mysql"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('auth-e2e')}/rp.db"
    else:
        server = request.getfixturevalue("postgres_cluster" if request.param == "postgresql" else "mariadb_server")
        url = server.create_database("auth_" + uuid.uuid4().hex[:8])
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
        account = parse_caip10(f"{SOLANA_MAINNET}:{w.solana_address}").account_id
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


# --- JWT revocation ----------------------------------------------------------------


def sdk_chat(url: str, token: str) -> str:
    """One completion with the official SDK on a fresh connection (so both gunicorn workers get requests)."""
    import openai

    with openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0) as client:
        out = client.chat.completions.create(model="mock-echo", messages=[{"role": "user", "content": "hi"}])
    return out.choices[0].message.content or ""


def revoke_with(how: str, gateway: GatewayProcess, capsys: Any, token: str, w: Wallet, jti: str,
                tmp_path: Any) -> None:
    iss = f"{SOLANA_MAINNET}:{w.solana_address}"
    if how == "cli_token_file":  # another process, no worker's cache is told: only the bound helps
        path = tmp_path / "token"
        path.write_text(token)
        assert main(["token", "revoke", "--config", gateway.config_path, "--token-file", str(path)]) == 0
        assert token not in capsys.readouterr().out
        return
    admin = create_key(gateway.config_path, capsys, "--scope", "admin", "--name", "revoker")
    body: Dict[str, Any] = {"jti": jti, "iss": iss} if how == "admin_jti" else {"all_before": "now", "iss": iss}
    r = requests.post(gateway.url + "/admin/token-revocations", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    assert r.json()["cache_seconds"] == REVOCATION_BOUND


@pytest.mark.parametrize("how", ["cli_token_file", "admin_jti", "admin_all_before"])
def test_a_revoked_token_is_refused_by_every_worker_within_the_bound(gateway: GatewayProcess, capsys: Any,
                                                                     tmp_path: Any, how: str) -> None:
    import openai

    w, other = Wallet.generate(), Wallet.generate()
    jti = "agent-" + uuid.uuid4().hex[:8]
    token, same_jti_elsewhere = jwt(w, jti=jti), jwt(other, jti=jti)
    for _ in range(6):  # every worker has seen the token and holds a "not revoked" verdict
        assert sdk_chat(gateway.url, token) == "You said: hi"
    revoke_with(how, gateway, capsys, token, w, jti, tmp_path)
    revoked_at = time.monotonic()
    admitted_late: List[float] = []
    refusals = 0
    while refusals < 12:
        started = time.monotonic() - revoked_at
        assert started < REVOCATION_BOUND + 10, "the revoked token was never refused"
        try:
            sdk_chat(gateway.url, token)
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401 and "This token has been revoked." in str(exc)
            refusals += 1
            continue
        refusals = 0  # a worker still inside the bound: start counting again
        admitted_late.append(started)
    # A request that started after the bound was refused by whichever worker took it.
    assert all(t < REVOCATION_BOUND for t in admitted_late), admitted_late
    print(f"{how}: {len(admitted_late)} admitted after the revocation, the last {max(admitted_late, default=0):.2f} s"
          f" after it (bound {REVOCATION_BOUND} s)")
    assert sdk_chat(gateway.url, same_jti_elsewhere) == "You said: hi"  # another account's jti is its own
    if how == "admin_all_before":  # a token minted after the cut-off works again
        time.sleep(2.1)  # iat has whole seconds, and must clear the cut-off by leeway_seconds (1)
        assert sdk_chat(gateway.url, jwt(w)) == "You said: hi"
    assert token not in gateway.logs()


def test_other_callers_cannot_revoke_a_token(gateway: GatewayProcess, capsys: Any) -> None:
    victim_wallet, stranger = Wallet.generate(), Wallet.generate()
    victim = jwt(victim_wallet, jti="victim")
    iss = f"{SOLANA_MAINNET}:{victim_wallet.solana_address}"
    stranger_admin = jwt(stranger, scope="admin")  # self-signed: not an issuer named in auth.admin_issuers
    admin = create_key(gateway.config_path, capsys, "--scope", "admin")
    h, p, _s = victim.split(".")
    attempts = [
        (jwt(victim_wallet, scope="api"), {"token": victim}, 403),  # not admin
        (stranger_admin[:-6] + ("BBBBBB" if stranger_admin.endswith("AAAAAA") else "AAAAAA"), {"token": victim},
         401),  # a forged credential
        (stranger_admin, {"token": victim}, 403),  # another account's admin token
        (stranger_admin, {"jti": "victim", "iss": iss}, 403),
        (stranger_admin, {"all_before": "now", "iss": iss}, 403),
        (admin, {"token": f"{h}.{p}.{jwt(stranger, jti='victim').split('.')[2]}"}, 400),  # signed by another key
    ]
    with requests.Session() as http:
        for credential, body, status in attempts:
            r = http.post(gateway.url + "/admin/token-revocations", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {credential}"})
            assert r.status_code == status, (body, r.text)
            assert victim not in r.text
        for path in ("/admin/whoami", "/admin/spend", "/admin/requests", "/admin/metrics"):
            # before auth.admin_issuers, any wallet's self-signed admin claim read every account's spend
            r = http.get(gateway.url + path, timeout=10, headers={"Authorization": f"Bearer {stranger_admin}"})
            assert r.status_code == 403, (path, r.text[:200])
        stranger_iss = f"{SOLANA_MAINNET}:{stranger.solana_address}"
        r = http.post(gateway.url + "/admin/token-revocations", json={"jti": "victim", "iss": stranger_iss},
                      timeout=10, headers={"Authorization": f"Bearer {admin}"})  # the stranger's own "victim" jti
        assert r.status_code == 200 and r.json()["account_id"] == parse_caip10(stranger_iss).account_id
        assert r.json()["account_id"] != parse_caip10(iss).account_id
    time.sleep(REVOCATION_BOUND + 0.2)
    for _ in range(4):
        assert sdk_chat(gateway.url, victim) == "You said: hi"
