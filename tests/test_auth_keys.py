"""API keys (hash-only storage, CLI, revocation), scopes, allowlists and budgets through the real Flask app."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from types import SimpleNamespace
from typing import Any, Dict, Iterator, Optional

import pytest
import yaml

from routeplane.app import build_app
from routeplane.auth.budget import BudgetPlugin
from routeplane.auth.caip10 import BASE_MAINNET, SOLANA_MAINNET
from routeplane.auth.crypto import Wallet
from routeplane.auth.jwt import mint_token
from routeplane.auth.keys import KeyError_, check_key, create_key
from routeplane.auth.plugin import AuthSettings, StoreHandle
from routeplane.auth.store import AuthStore
from routeplane.auth.window import BudgetWindow
from routeplane.cli import main
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.language_model.settlement import MAX_COST_MICRO_USD
from routeplane.protocols import openai_chat
from routeplane.store import migrate

CHAT = "/v1/chat/completions"
BODY = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
# Mock echo of "hi": 1 input + 3 output tokens; at 1000 USD/M tokens each that is 4000 micro-USD,
# and the worst case reserved at admission is (1 + max_tokens 5) x 1000 = 6000.
COST, RESERVE = 4000, 6000


def config_dict(tmp_path: Any, auth: Dict[str, Any], prices: bool = True) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    if prices:
        c["providers"]["mock"]["prices"] = {"input": 1000, "output": 1000}
    c["auth"] = auth
    return c


class Gateway:
    def __init__(self, tmp_path: Any, auth: Dict[str, Any], prices: bool = True) -> None:
        self.app = build_app(parse_config(config_dict(tmp_path, auth, prices)))
        migrate(self.app.store, self.app.plugins)
        self.client = self.app.flask_app().test_client()
        self.auth_store = AuthStore(self.app.store)

    def chat(self, credential: Optional[str], body: Optional[Dict[str, Any]] = None, **headers: str) -> Any:
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        return self.client.post(CHAT, json=body or BODY, headers=headers)

    def key(self, **kw: Any) -> str:
        return create_key(self.auth_store, **kw)[1]

    def ledger(self) -> list:
        return self.app.store.execute("SELECT account_id, session_id, amount_micro_usd, state FROM auth_budget_ledger")


@pytest.fixture
def gw(tmp_path: Any) -> Iterator[Gateway]:
    g = Gateway(tmp_path, {"mode": "api_keys+jwt"})
    yield g
    g.app.store.close()


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet(bytes(range(7, 39)))


def jwt(w: Wallet, chain: str = "solana", **claims: Any) -> str:
    iss = f"{SOLANA_MAINNET}:{w.solana_address}" if chain == "solana" else f"{BASE_MAINNET}:{w.evm_address}"
    claims.setdefault("exp", time.time() + 600)
    return mint_token(w, iss, claims)


# --- keys --------------------------------------------------------------------


def test_a_key_is_stored_only_as_its_hash(gw: Gateway) -> None:
    row, key = create_key(gw.auth_store, name="ci", scope="api")
    assert key.startswith(f"rpk_{row.id}_") and len(key) > 40
    rows = gw.app.store.execute("SELECT * FROM auth_api_keys")
    assert len(rows) == 1
    flat = " ".join(str(v) for v in rows[0])
    assert key not in flat and key.split("_", 2)[2] not in flat
    assert hashlib.sha256(key.encode()).hexdigest() in flat


def test_check_key_refuses_wrong_unknown_malformed_revoked_expired(gw: Gateway) -> None:
    row, key = create_key(gw.auth_store)
    assert check_key(gw.auth_store, key).id == row.id
    wrong_secret = key[:-2] + ("AA" if key[-2:] != "AA" else "BB")
    unknown_id = "rpk_" + "0" * 16 + key[20:]
    for bad in (wrong_secret, unknown_id, "rpk_nope", key + "x", key.upper()):
        with pytest.raises(KeyError_, match="not valid"):
            check_key(gw.auth_store, bad)
    assert gw.auth_store.revoke_key(row.id) and not gw.auth_store.revoke_key(row.id)
    with pytest.raises(KeyError_, match="revoked"):
        check_key(gw.auth_store, key)
    _, short = create_key(gw.auth_store, expires_at=time.time() - 1)
    with pytest.raises(KeyError_, match="expired"):
        check_key(gw.auth_store, short)


def test_requests_need_valid_credentials(gw: Gateway) -> None:
    key = gw.key()
    assert gw.chat(None).status_code == 401
    assert gw.chat("sk-not-ours").status_code == 401
    r = gw.chat(key[:-1] + ("Q" if key[-1] != "Q" else "R"))  # a key ending in Q would stay itself (1 in 64)
    assert r.status_code == 401 and r.json["error"]["type"] == "authentication_error"
    r = gw.chat(key)
    assert r.status_code == 200, r.json
    assert r.json["choices"][0]["message"]["content"] == "You said: hi"


def test_anthropic_wire_takes_x_api_key(gw: Gateway) -> None:
    key = gw.key()
    body = {"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    r = gw.client.post("/v1/messages", json=body, headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.json
    r = gw.client.post("/v1/messages", json=body, headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json["type"] == "error"


def test_anthropic_count_tokens_needs_credentials_but_reserves_nothing(gw: Gateway) -> None:
    key = gw.key(models=["mock-*"], budget_micro_usd=1)
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}]}
    path = "/v1/messages/count_tokens"
    r = gw.client.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json["error"]["type"] == "authentication_error"
    r = gw.client.post(path, json=dict(body, model="default"), headers={"x-api-key": key})
    assert r.status_code == 403
    for _ in range(3):  # a budget of 1 micro-USD: counting is not a billed call
        assert gw.client.post(path, json=body, headers={"x-api-key": key}).status_code == 200
    assert gw.ledger() == []


def test_gemini_wire_takes_goog_key_bearer_and_query_key(gw: Gateway) -> None:
    key = gw.key()
    path = "/v1beta/models/mock-echo:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert gw.client.post(path, json=body, headers={"x-goog-api-key": key}).status_code == 200
    assert gw.client.post(path, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert gw.client.post(path + "?key=" + key, json=body).status_code == 200
    r = gw.client.post(path, json=body)
    assert r.status_code == 401 and r.json["error"]["status"] == "UNAUTHENTICATED"


def test_scopes_on_admin_endpoints(gw: Gateway, wallet: Wallet, tmp_path: Any) -> None:
    api, admin = gw.key(scope="api"), gw.key(scope="admin")
    r = gw.client.get("/admin/whoami", headers={"Authorization": f"Bearer {api}"})
    assert r.status_code == 403 and r.json["error"]["code"] == "insufficient_scope"
    assert gw.client.get("/admin/whoami").status_code == 401
    r = gw.client.get("/admin/whoami", headers={"x-api-key": admin})
    assert r.status_code == 200 and r.json["scope"] == "admin" and r.json["kind"] == "api_key"
    assert gw.chat(admin).status_code == 200  # admin may call model endpoints too
    # a self-signed admin claim is refused unless the operator named its issuer (auth.admin_issuers)
    for path in ("/admin/whoami", "/admin/spend", "/admin/requests", "/admin/metrics"):
        r = gw.client.get(path, headers={"Authorization": f"Bearer {jwt(wallet, scope='admin')}"})
        assert r.status_code == 403 and b"admin scope" in r.data, path
    r = gw.client.get("/admin/whoami", headers={"Authorization": f"Bearer {jwt(wallet, scope='api')}"})
    assert r.status_code == 403
    (tmp_path / "named").mkdir()
    named = Gateway(tmp_path / "named", {"mode": "api_keys+jwt",
                                         "admin_issuers": [f"{SOLANA_MAINNET}:{wallet.solana_address}"]})
    try:
        r = named.client.get("/admin/whoami", headers={"Authorization": f"Bearer {jwt(wallet, scope='admin')}"})
        assert r.status_code == 200 and r.json["issuer"].endswith(wallet.solana_address)
    finally:
        named.app.store.close()


def test_admin_without_auth_is_loopback_only(tmp_path: Any) -> None:
    g = Gateway(tmp_path, {"mode": "none"})
    assert g.client.get("/admin/whoami").status_code == 200
    assert g.client.get("/admin/whoami", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403


def test_model_allowlist_is_checked_on_the_client_model_name(gw: Gateway, wallet: Wallet) -> None:
    key = gw.key(models=["mock-*"])
    r = gw.chat(key)
    assert r.status_code == 403 and "'default'" in r.json["error"]["message"]
    assert r.json["error"]["code"] == "model_not_allowed"
    assert gw.chat(key, dict(BODY, model="mock-echo")).status_code == 200
    assert gw.chat(key, dict(BODY, model="mock:echo")).status_code == 403  # near miss: ':' is not '-'
    token = jwt(wallet, models=["mock-ech?"])  # '?' is literal, not a wildcard
    assert gw.chat(token, dict(BODY, model="mock-echo")).status_code == 403


def test_models_endpoint_needs_credentials_and_lists_only_allowed_models(gw: Gateway) -> None:
    assert gw.client.get("/v1/models").status_code == 401
    key = gw.key(models=["mock-*"])
    r = gw.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and [m["id"] for m in r.json["data"]] == ["mock-echo"]
    assert gw.client.get("/v1/models/default", headers={"Authorization": f"Bearer {key}"}).status_code == 404
    everything = gw.client.get("/v1/models", headers={"Authorization": f"Bearer {gw.key()}"}).json["data"]
    assert {"default", "mock-echo"} <= {m["id"] for m in everything}


def test_jwt_only_mode_refuses_api_keys(tmp_path: Any, wallet: Wallet) -> None:
    g = Gateway(tmp_path, {"mode": "jwt"})
    key = create_key(g.auth_store)[1]
    r = g.chat(key)
    assert r.status_code == 401 and "Web3 JWT" in r.json["error"]["message"]
    assert g.chat(jwt(wallet, chain="evm")).status_code == 200


def test_api_keys_mode_needs_a_database(tmp_path: Any) -> None:
    from routeplane.config import ConfigError

    c = config_dict(tmp_path, {"mode": "api_keys"})
    c["database"] = {"url": ""}
    with pytest.raises(ConfigError, match="database"):
        build_app(parse_config(c))


def test_bad_allowlist_config_names_the_key(tmp_path: Any) -> None:
    from routeplane.config import ConfigError

    with pytest.raises(ConfigError, match=r"auth.allowed_chains\[0\]"):
        build_app(parse_config(config_dict(tmp_path, {"mode": "jwt", "allowed_chains": ["bitcoin:1"]})))


# --- budgets -----------------------------------------------------------------


def test_account_budget_admits_until_spent_then_402(gw: Gateway) -> None:
    key = gw.key(budget_micro_usd=10000)
    codes = [gw.chat(key).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 402, 402]  # spent 0, 4000, 8000 < 10000; then 12000
    r = gw.chat(key)
    assert r.json["error"]["code"] == "budget_exhausted"
    assert "12000" in r.json["error"]["message"] and "10000" in r.json["error"]["message"]
    assert sorted(row[3] for row in gw.ledger()) == ["settled"] * 3
    assert sum(row[2] for row in gw.ledger()) == 3 * COST


@pytest.mark.parametrize("max_tokens", [10 ** 30, 10 ** 308], ids=["31-digits", "309-digits"])
@pytest.mark.parametrize("fail_closed", [True, False])
def test_a_huge_max_tokens_is_reserved_and_settled_not_a_store_error(tmp_path: Any, fail_closed: bool,
                                                                     max_tokens: int) -> None:
    """max_tokens 10**30 made the reservation overflow SQLite's integer: a 503 by default, and
    when failing open the request ran with no budget and was never charged; 10**300 made the
    cost a float infinity: a 500 (any model priced over ~1.8 USD per million)."""
    g = Gateway(tmp_path, {"mode": "api_keys", "budget": {"fail_closed": fail_closed}})
    key = g.key(budget_micro_usd=10000)
    codes = [g.chat(key, dict(BODY, max_tokens=max_tokens)).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 402, 402]  # as with any max_tokens: admitted while spend < limit
    assert [row[2:] for row in g.ledger()] == [(COST, "settled")] * 3


@pytest.mark.parametrize("max_tokens,reserved", [(-10 ** 12, "default"), (0, "default"), (5, RESERVE),
                                                 (10 ** 30, MAX_COST_MICRO_USD),
                                                 (10 ** 308, MAX_COST_MICRO_USD)],
                         ids=["negative", "zero", "five", "1e30", "1e308"])
def test_the_reservation_is_never_a_credit_nor_past_the_cap(tmp_path: Any, max_tokens: int, reserved: Any) -> None:
    """A negative max_tokens reserved a negative amount: room for other requests while it was in flight."""
    config = parse_config(config_dict(tmp_path, {"mode": "api_keys"}))
    settings = AuthSettings.from_config(config.auth).budget
    plugin = BudgetPlugin(settings, StoreHandle(), config)
    prompt = openai_chat.CLIENT.decode_request(dict(BODY, max_tokens=max_tokens))
    amount = plugin.worst_case(SimpleNamespace(prompt=prompt))  # type: ignore[arg-type]
    if reserved == "default":
        default = openai_chat.CLIENT.decode_request(dict(BODY, max_tokens=settings.default_max_output_tokens))
        reserved = plugin.worst_case(SimpleNamespace(prompt=default))  # type: ignore[arg-type]
    assert amount == reserved and amount > 0


def test_rounds_window_counts_the_last_n_requests(gw: Gateway) -> None:
    key = gw.key(budget_micro_usd=8000, budget_window=BudgetWindow(rounds=2))
    # Spend over the last 2 requests: 0, 4000, 8000 (refused), 0+4000, 4000+0, 4000+4000 (refused):
    # a refused request counts as a round at zero cost, so the window slides on.
    assert [gw.chat(key).status_code for _ in range(6)] == [200, 200, 402, 200, 200, 402]


def test_seconds_window_recovers(gw: Gateway) -> None:
    key = gw.key(budget_micro_usd=COST, budget_window=BudgetWindow(seconds=1))
    assert gw.chat(key).status_code == 200
    assert gw.chat(key).status_code == 402
    time.sleep(1.2)
    assert gw.chat(key).status_code == 200


def test_session_and_account_scopes(gw: Gateway, wallet: Wallet) -> None:
    s1 = jwt(wallet, budget=COST, budget_scope="session", jti="a")
    s2 = jwt(wallet, budget=COST, budget_scope="session", jti="b")
    assert [gw.chat(s1).status_code, gw.chat(s1).status_code] == [200, 402]
    assert gw.chat(s2).status_code == 200  # a new session has its own budget
    acct = jwt(wallet, budget=2 * COST, budget_scope="account", jti="c")
    assert gw.chat(acct).status_code == 402  # the account already spent 2 x COST in sessions a and b
    evm = jwt(wallet, chain="evm", budget=COST, budget_scope="account")
    assert gw.chat(evm).status_code == 200  # the EVM identity of the seed is another account


def test_a_re_encoded_signature_does_not_open_a_new_session(gw: Gateway, wallet: Wallet) -> None:
    import base64

    from routeplane.auth.crypto import b64url

    token = jwt(wallet, chain="evm", budget=COST, budget_scope="session")  # no jti: the token is the session
    h, p, s = token.split(".")
    sig = base64.urlsafe_b64decode(s + "==")
    twin = f"{h}.{p}.{b64url(sig[:64] + bytes([sig[64] - 27]))}"  # v as recovery id: the same signature
    assert gw.chat(token).status_code == 200
    assert gw.chat(twin).status_code == 402


def test_operator_account_limit_applies_to_every_caller(tmp_path: Any, wallet: Wallet) -> None:
    g = Gateway(tmp_path, {"mode": "jwt", "budget": {"account_limit_micro_usd": COST}})
    token = jwt(wallet)
    assert [g.chat(token).status_code, g.chat(token).status_code] == [200, 402]


def test_unknown_price_keeps_the_worst_case_reservation(tmp_path: Any) -> None:
    g = Gateway(tmp_path, {"mode": "api_keys", "budget": {"unknown_price_reservation_micro_usd": 10000}},
                prices=False)
    key = g.key(budget_micro_usd=15000)
    assert [g.chat(key).status_code for _ in range(3)] == [200, 200, 402]
    assert [(row[2], row[3]) for row in g.ledger()] == [(10000, "unknown")] * 2


def test_failed_and_streamed_requests_are_settled(gw: Gateway) -> None:
    key = gw.key(budget_micro_usd=10 ** 6)
    r = gw.chat(key, dict(BODY, model="mock:fail-500"))
    assert r.status_code >= 500
    r = gw.chat(key, dict(BODY, stream=True))
    assert r.status_code == 200 and b"[DONE]" in r.get_data()
    r = gw.chat(key, dict(BODY, model="no-such-model"))
    assert r.status_code == 404
    states = [(row[2], row[3]) for row in gw.ledger()]
    assert all(state == "settled" for _a, state in states), states
    assert sorted(a for a, _s in states) == [0, 0, COST]


def test_store_errors_fail_closed_by_default(tmp_path: Any) -> None:
    g = Gateway(tmp_path, {"mode": "api_keys"})
    key = g.key(budget_micro_usd=10 ** 6)
    g.app.store.execute("DROP TABLE auth_budget_ledger")
    r = g.chat(key)
    assert r.status_code == 503 and r.json["error"]["code"] == "budget_unavailable"
    g.app.store.execute("DROP TABLE auth_api_keys")
    r = g.chat(key)
    assert r.status_code == 503 and key not in r.get_data(as_text=True)
    # The gateway's own failure, for the client to retry: not a plugin's "custom" refusal.
    assert r.json["error"]["code"] == "auth_unavailable" and r.json["error"]["type"] == "server_error", r.json
    # The same outage outside a model call (/v1/models, /admin/*, /mcp) said `overloaded`.
    r = g.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 503 and r.json["error"]["code"] == "auth_unavailable", r.json


def test_store_errors_can_fail_open(tmp_path: Any) -> None:
    g = Gateway(tmp_path, {"mode": "api_keys", "budget": {"fail_closed": False}})
    key = g.key(budget_micro_usd=10 ** 6)
    g.app.store.execute("DROP TABLE auth_budget_ledger")
    assert g.chat(key).status_code == 200


def test_keys_and_tokens_never_reach_logs_errors_or_the_spend_log(gw: Gateway, wallet: Wallet,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    routeplane_log = logging.getLogger("routeplane")  # may not propagate (configure_logging)
    routeplane_log.addHandler(caplog.handler)
    try:
        _exercise_secrets(gw, wallet, caplog)
    finally:
        routeplane_log.removeHandler(caplog.handler)


def _exercise_secrets(gw: Gateway, wallet: Wallet, caplog: pytest.LogCaptureFixture) -> None:
    key = gw.key(budget_micro_usd=COST)
    token = jwt(wallet, budget=COST)
    seen = []
    for cred in (key, token):
        for body in (BODY, dict(BODY, model="nope"), dict(BODY, stream=True)):
            seen.append(gw.chat(cred, body).get_data(as_text=True))
    seen.append(gw.chat(key[:-3] + "abc").get_data(as_text=True))
    gw.app.store.execute("DROP TABLE auth_budget_ledger")
    seen.append(gw.chat(key).get_data(as_text=True))  # a logged store error
    rows = gw.app.store.execute("SELECT * FROM spend_log")
    assert rows
    haystack = caplog.text + "".join(seen) + json.dumps([list(map(str, r)) for r in rows])
    secret = key.split("_", 2)[2]
    assert "budget_unavailable" in haystack and "budget check failed" in caplog.text  # the haystack is real
    for needle in (key, secret, token, token.split(".")[2]):
        assert needle not in haystack


# --- CLI -----------------------------------------------------------------------


def test_keys_cli_create_list_revoke(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "routeplane.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, {"mode": "api_keys"})))
    assert main(["keys", "list", "--config", str(path)]) == 1  # not migrated yet: a clear message
    assert "routeplane migrate" in capsys.readouterr().err
    assert main(["migrate", "--config", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--config", str(path), "--name", "ci", "--models", "mock-*,gpt-4o",
                 "--budget", "5000", "--window", "rounds:10", "--expires-in", "3600"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("rpk_") and "shown only this once" in out.err
    key_id = key.split("_")[1]
    assert main(["keys", "list", "--config", str(path), "--json"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and key not in listed
    entry = json.loads(listed.splitlines()[0])
    assert entry["models"] == ["mock-*", "gpt-4o"] and entry["budget_window"] == {"rounds": 10}
    assert entry["state"] == "active"
    assert main(["keys", "revoke", "--config", str(path), key_id]) == 0
    assert main(["keys", "revoke", "--config", str(path), key_id]) == 1
    assert main(["keys", "create", "--config", str(path), "--window", "weeks:2"]) == 1
    assert main(["keys", "create", "--config", str(path), "--account", "a" * 129]) == 1
    assert main(["keys", "create", "--config", str(path), "--budget", "-5"]) == 1


def test_token_cli_mints_tokens_the_gateway_accepts(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    key_file = str(tmp_path / "key.json")
    assert main(["token", "mint", "--key", key_file, "--chain", "evm", "--models", "mock-*", "--budget", "100",
                 "--budget-scope", "session", "--window", "seconds:60"]) == 0
    evm_token = capsys.readouterr().out.strip()
    assert main(["token", "mint", "--key", key_file, "--scope", "admin", "--exp", "120"]) == 0
    sol_token = capsys.readouterr().out.strip()
    assert main(["token", "mint", "--key", key_file, "--scope", "admin", "--exp", "0"]) == 2
    assert main(["token", "keygen", "--key", key_file]) == 2  # never overwrites a key
    capsys.readouterr()
    assert main(["token", "show", "--key", key_file]) == 0
    shown = capsys.readouterr().out
    issuer = next(line.split()[0] for line in shown.splitlines() if line.startswith("solana:"))
    g = Gateway(tmp_path, {"mode": "jwt", "admin_issuers": [issuer]})
    who = g.client.get("/admin/whoami", headers={"Authorization": f"Bearer {sol_token}"}).json
    assert who["scope"] == "admin" and who["issuer"] in shown and who["account_id"] in shown
    assert g.chat(evm_token, dict(BODY, model="mock-echo")).status_code == 200
    assert g.chat(evm_token).status_code == 403


@pytest.mark.parametrize("mid_stream", [True, False])
def test_mid_stream_enforcement_stops_a_stream_at_the_budget_left(tmp_path: Any, mid_stream: bool) -> None:
    from routeplane.language_model.stream import estimate_usage
    from routeplane.protocols.openai_chat import CLIENT

    g = Gateway(tmp_path, {"mode": "api_keys", "budget": {"mid_stream": mid_stream}})
    text = "word " * 400
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": text}]}
    input_tokens = estimate_usage(CLIENT.decode_request(body), 0).input_tokens
    budget = (input_tokens + 100) * 1000  # room for the prompt and about 100 output tokens
    key = g.key(budget_micro_usd=budget)
    r = g.chat(key, body)
    data = r.get_data(as_text=True)
    [(amount, state)] = [(row[2], row[3]) for row in g.ledger()]
    assert r.status_code == 200 and state == "settled"
    if mid_stream:
        assert "budget_exhausted" in data and "[DONE]" not in data
        delivered = sum(len(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
                        for line in data.splitlines()
                        if line.startswith("data: {") and json.loads(line[6:]).get("choices"))
        assert 300 <= delivered <= 420  # about 100 tokens of 4 characters
        assert budget - 4000 <= amount <= budget  # settled for what was delivered, within the budget
    else:
        assert "[DONE]" in data and amount > budget  # one reservation may overspend without it


def test_explain_shows_what_the_budget_reserves(gw: Gateway) -> None:
    """/admin/explain's would_reserve is the budget plugin's own worst case (dearest prices over the route),
    not a simpler figure that disagreed with what admission then held."""
    admin, caller = gw.key(scope="admin"), gw.key(budget_micro_usd=10 ** 9)
    body = {"wire": "openai_chat", "request": dict(BODY), "headers": {"Authorization": f"Bearer {caller}"}}
    r = gw.client.post("/admin/explain", json=body, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.get_json()
    budget = r.get_json()["budget"]
    assert budget["would_reserve_micro_usd"] == RESERVE and "budget plugin" in budget["note"]
    assert gw.ledger() == []
