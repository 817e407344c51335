"""Session 11 hunt, who may spend what: a key's budget has the bound a token's has; an account limit that auth.mode
none leaves unenforced is named at start-up; a credential a client sent as its model name stays off the admin
dashboard; the explain dry run refuses headers that are not an object; and a stream cut by the mid-stream budget
ends in each wire's own error and is settled once. Under a real gunicorn with the official SDKs where a client is
involved."""

from __future__ import annotations

import copy
import logging
import sqlite3
import time
import uuid
from typing import Any, Dict, Iterator, List

import anthropic
import openai
import pytest
import requests
import yaml
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from routeplane.auth.keys import create_key
from routeplane.auth.window import MAX_BUDGET
from routeplane.cli import main
from routeplane.config import DEFAULT_CONFIG, parse_config
from tests.support.gateway import GatewayProcess
from tests.support.keyed import keyed_gateway

# A JWT-shaped string (header `{"alg":"SOL_EDDSA","typ":"JWT"}`): what logs.redact takes for one.
JWT_LIKE = "eyJhbGciOiJTT0xfRUREU0EiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"


def _config_file(tmp_path: Any) -> str:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["auth"] = {"mode": "api_keys+jwt", "audience": "urn:test"}
    c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    path = tmp_path / f"rp-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(c))
    return str(path)


# --- budgets past the bound -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [MAX_BUDGET + 1, 10 ** 20, -1])
def test_keys_create_refuses_a_budget_a_token_could_not_carry(tmp_path: Any, capsys: Any, budget: int) -> None:
    """A token's budget claim is 0 to MAX_BUDGET; a key's was any int: 10^16 was stored, and past a BIGINT the
    answer was the store's own error (`Python int too large to convert to SQLite INTEGER`)."""
    path = _config_file(tmp_path)
    assert main(["migrate", "--config", path, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--config", path, "--budget", str(budget)]) == 1
    out = capsys.readouterr()
    assert out.out == "" and f"from 0 to {MAX_BUDGET}" in out.err and "INTEGER" not in out.err
    assert main(["keys", "list", "--config", path, "--json"]) == 0
    assert capsys.readouterr().out == ""  # nothing was stored
    assert main(["keys", "create", "--config", path, "--budget", str(MAX_BUDGET)]) == 0


@pytest.mark.parametrize("budget", [MAX_BUDGET + 1, -5])
def test_token_mint_refuses_a_budget_every_request_would_refuse(tmp_path: Any, capsys: Any, budget: int) -> None:
    """`token mint --budget -5` printed a token the gateway then refused on every request (`The token's budget
    claim must be …`); it is refused at mint, before any key file is made."""
    key_file = tmp_path / "agent.json"
    capsys.readouterr()
    assert main(["token", "mint", "--key", str(key_file), "--budget", str(budget)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "--budget" in out.err and not key_file.exists()


def test_check_warns_that_an_account_limit_without_auth_enforces_nothing(tmp_path: Any, caplog: Any) -> None:
    """The budget plugin comes with auth only: with auth.mode none an operator's account limit was accepted and
    silently enforced nothing (a request of an account a host app's hook named ran whatever the limit)."""
    warned = {}
    for name, auth in (("none", {"mode": "none", "budget": {"account_limit_micro_usd": 0}}),
                       ("none-unset", {"mode": "none"}),
                       ("keys", {"mode": "api_keys", "budget": {"account_limit_micro_usd": 0}})):
        c = copy.deepcopy(DEFAULT_CONFIG)
        c["auth"] = auth
        c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(c))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="routeplane.auth"):
            assert main(["check", str(path)]) == 0
        warned[name] = any("account_limit_micro_usd" in r.getMessage() for r in caplog.records)
    assert warned == {"none": True, "none-unset": False, "keys": False}


# --- a credential in the model name ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(tmp_path_factory: Any) -> Iterator[Dict[str, Any]]:
    env = keyed_gateway(tmp_path_factory.mktemp("s11auth"), lambda store: {
        "admin": create_key(store, scope="admin")[1], "caller": create_key(store)[1]})
    yield env
    env["gw"].stop()


@pytest.mark.e2e
def test_a_credential_sent_as_the_model_name_stays_off_the_dashboard(keyed: Dict[str, Any]) -> None:
    """A client with its settings swapped sends its API key (or a JWT) as the model: the 404 went into the spend
    log's route, and the dashboard's requests page, spend-by-route page and CSV showed it to every admin, who could
    then spend as that client. The gateway's own log lines already redacted it; the pages now do too."""
    gw, caller, admin = keyed["gw"], keyed["caller"], keyed["admin"]
    secret = caller.split("_", 2)[2]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=caller, max_retries=0)
    for model in (caller, "openai:" + caller, JWT_LIKE):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    auth = {"Authorization": f"Bearer {admin}"}
    pages = {path: requests.get(gw.url + path, headers=auth, timeout=10)
             for path in ("/admin/requests", "/admin/spend?by=route", "/admin/spend.csv?by=route",
                          "/admin/spend.csv?by=model", "/admin/")}
    for path, r in pages.items():
        assert r.status_code == 200, (path, r.text[:300])
        assert secret not in r.text and JWT_LIKE not in r.text, path
    # Still told apart by the key's public id, which the pages keep.
    assert caller.split("_")[1] in pages["/admin/requests"].text
    assert "[redacted]" in pages["/admin/spend.csv?by=route"].text


@pytest.mark.e2e
@pytest.mark.parametrize("headers", [[], "", 0, False, ["Authorization", "Bearer x"]])
def test_explain_refuses_headers_that_are_not_an_object(keyed: Dict[str, Any], headers: Any) -> None:
    """`"headers": []` (or "", 0, false) was read as no headers at all: the dry run then explained an
    unauthenticated call (a 401 verdict) instead of telling the admin the field was wrong."""
    gw, admin = keyed["gw"], keyed["admin"]
    body = {"wire": "openai_chat", "headers": headers,
            "request": {"model": "default", "messages": [{"role": "user", "content": "hi"}]}}
    r = requests.post(gw.url + "/admin/explain", json=body, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "headers", r.text


@pytest.mark.e2e
def test_explain_without_headers_explains_an_unauthenticated_call(keyed: Dict[str, Any]) -> None:
    gw, admin, caller = keyed["gw"], keyed["admin"], keyed["caller"]
    request = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    verdicts = {}
    for name, extra in (("absent", {}), ("null", {"headers": None}),
                        ("caller", {"headers": {"authorization": f"Bearer {caller}"}})):
        r = requests.post(gw.url + "/admin/explain", json={"request": request, **extra},
                          headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code == 200, r.text
        verdicts[name] = r.json()["verdict"]
    assert verdicts == {"absent": "deny", "null": "deny", "caller": "allow"}


# --- a stream cut by the mid-stream budget, on every wire -----------------------------------------------------------

TEXT = "word " * 400  # about 500 input tokens
BUDGET = (520 + 100) * 1000  # at 1000 USD/M tokens: the prompt and about 100 tokens of output


@pytest.fixture(scope="module")
def metered(tmp_path_factory: Any) -> Iterator[Dict[str, Any]]:
    """auth.budget.mid_stream on, one budgeted key per wire."""
    from routeplane.app import build_app
    from routeplane.auth.store import AuthStore
    from routeplane.store import migrate

    db = f"{tmp_path_factory.mktemp('s11midstream')}/rp.db"
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{db}"}
    c["providers"]["mock"]["prices"] = {"input": 1000, "output": 1000}
    c["auth"] = {"mode": "api_keys", "budget": {"mid_stream": True}}
    app = build_app(parse_config(c))
    migrate(app.store, app.plugins)
    try:
        store = AuthStore(app.store)
        keys = {wire: create_key(store, name=wire, budget_micro_usd=BUDGET)
                for wire in ("chat", "responses", "anthropic", "gemini")}
    finally:
        app.store.close()
    gw = GatewayProcess(c, workers=1, threads=8).start()
    yield {"gw": gw, "db": db, "keys": {w: key for w, (_row, key) in keys.items()},
           "accounts": {w: row.account_id for w, (row, _key) in keys.items()}}
    gw.stop()


def _rows(db: str, sql: str, account: str) -> List[Any]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, (account,)).fetchall()
    finally:
        con.close()


@pytest.mark.e2e
def test_a_stream_past_the_budget_left_ends_in_each_wires_own_error_and_is_settled_once(
        metered: Dict[str, Any]) -> None:
    gw, keys = metered["gw"], metered["keys"]
    messages = [{"role": "user", "content": TEXT}]
    chat = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["chat"], max_retries=0)
    got = []
    with pytest.raises(openai.APIError, match="Budget exhausted during the stream"):
        for chunk in chat.chat.completions.create(model="mock-echo", stream=True, messages=messages):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert 0 < len("".join(got)) < len(TEXT)

    responses = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["responses"], max_retries=0)
    events = [e for e in responses.responses.create(model="mock-echo", stream=True, input=TEXT)]
    assert events[-1].type == "response.failed" and events[-1].response.error is not None

    claude = anthropic.Anthropic(base_url=gw.url, api_key=keys["anthropic"], max_retries=0)
    with pytest.raises(anthropic.APIStatusError, match="billing_error"):
        with claude.messages.stream(model="mock-echo", max_tokens=4096, messages=messages) as stream:
            "".join(stream.text_stream)

    gemini = genai.Client(api_key=keys["gemini"], http_options=genai_types.HttpOptions(
        base_url=gw.url, retry_options=genai_types.HttpRetryOptions(attempts=1)))
    with pytest.raises(genai_errors.ClientError, match="RESOURCE_EXHAUSTED"):
        for _chunk in gemini.models.generate_content_stream(model="mock-echo", contents=TEXT):
            pass

    deadline = time.monotonic() + 10
    for wire, account in metered["accounts"].items():
        while True:  # the spend log is written after the response ends
            spent = _rows(metered["db"], "SELECT status, cost_micro_usd FROM spend_log WHERE account_id = ?", account)
            if spent or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ledger = _rows(metered["db"], "SELECT amount_micro_usd, state FROM auth_budget_ledger WHERE account_id = ?",
                       account)
        assert len(ledger) == 1 and ledger[0][1] == "settled", (wire, ledger)
        assert 0 < ledger[0][0] <= BUDGET, (wire, ledger)  # what was delivered, within the budget
        assert spent == [(402, ledger[0][0])], (wire, spent)
