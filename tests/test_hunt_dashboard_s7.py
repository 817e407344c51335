"""The operator's surfaces after the auth changes (issues 7, 15, 13): the dashboard's sign-in under an auth store
outage, the admin JSON API's bad parameters, and the mounted example's model allowlist.

One gunicorn gateway (SQLite, API keys and audience-bound JWTs) behind deploy/nginx.conf for the module.
"""

from __future__ import annotations

import copy
import re
import sqlite3
import time
import uuid
from typing import Any, Dict, Iterator

import pytest
import requests
from flask import Flask

from routeplane.auth.caip10 import SOLANA_MAINNET
from routeplane.auth.crypto import Wallet
from routeplane.auth.jwt import mint_token
from routeplane.config import DEFAULT_CONFIG, parse_config
from tests.support.gateway import GatewayProcess
from tests.support.nginx import NginxProcess
from tests.test_dashboard_e2e import create_key
from tests.test_nginx_e2e import _require_nginx, deploy_nginx_body

AUD = "urn:routeplane:s7"
WALLET = Wallet(bytes(range(90, 122)))
ISSUER = f"{SOLANA_MAINNET}:{WALLET.solana_address}"


def admin_jwt(**claims: Any) -> str:
    claims = {"exp": int(time.time()) + 600, "jti": uuid.uuid4().hex, "aud": AUD, "scope": "admin", **claims}
    return mint_token(WALLET, ISSUER, claims)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    _require_nginx()
    db = tmp_path_factory.mktemp("s7") / "rp.db"
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{db}"}
    # Tokens up to 8 KiB (auth.max_token_bytes allows 64): more than a browser keeps in one cookie.
    c["auth"] = {"mode": "api_keys+jwt", "audience": AUD, "admin_issuers": [ISSUER], "max_token_bytes": 8192}
    c["providers"] = {"mock": {"protocol": "mock", "prices": {"input": 1000, "output": 3000}}}
    c["models"] = {"priced": {"targets": [{"provider": "mock", "model": "echo"}]}}
    gw = GatewayProcess(c, workers=1, threads=8).start()
    nginx = None
    try:
        assert gw.config_path is not None
        keys = {"admin": create_key(gw.config_path, "--name", "ops", "--scope", "admin")}
        nginx = NginxProcess(deploy_nginx_body(gw.port)).start()
        yield {"gw": gw, "url": nginx.url, "db": str(db), "keys": keys}
    finally:
        if nginx is not None:
            nginx.stop()
        gw.stop()


def signed_in(url: str, credential: str) -> requests.Session:
    s = requests.Session()
    r = s.post(url + "/admin/login", data={"credential": credential}, allow_redirects=False, timeout=30,
               headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303 and s.cookies.get("routeplane_admin") == credential
    return s


# --- the dashboard's sign-in survives an auth store outage ---------------------------------------------------------

@pytest.mark.e2e
def test_an_auth_store_outage_does_not_sign_the_admin_out(stack: Dict[str, Any]) -> None:
    """A store that cannot check credentials answers 503 `Credentials cannot be checked right now; try again`: the
    dashboard deleted the sign-in cookie on it as if the key were revoked, so every signed-in admin was signed out
    by a blip of the database and had to paste the key again (which they may not have at hand: shown only once)."""
    url = stack["url"]
    s = signed_in(url, stack["keys"]["admin"])
    assert s.get(url + "/admin/", timeout=30).status_code == 200
    db = sqlite3.connect(stack["db"])
    try:
        db.execute("ALTER TABLE auth_api_keys RENAME TO auth_api_keys_away")  # the key store cannot answer
        db.commit()
        r = s.get(url + "/admin/spend", timeout=30)
        assert r.status_code == 503 and "try again" in r.text
        assert "routeplane_admin" not in r.headers.get("Set-Cookie", "")
    finally:
        db.execute("ALTER TABLE auth_api_keys_away RENAME TO auth_api_keys")
        db.commit()
        db.close()
    assert s.get(url + "/admin/spend", timeout=30).status_code == 200  # still signed in once the store is back


@pytest.mark.e2e
def test_the_sign_in_cookie_works_behind_http_basic_auth(stack: Dict[str, Any]) -> None:
    """An operator who also puts nginx `auth_basic` in front of /admin/ (a common belt and braces): the browser
    then sends `Authorization: Basic …` on every page, and the dashboard took any Authorization header as the
    credential, ignored its own cookie, answered 401 and deleted the cookie: signing in could never stick."""
    url = stack["url"]
    s = signed_in(url, stack["keys"]["admin"])
    s.headers["Authorization"] = "Basic b3BzOm5naW54LXBhc3N3b3Jk"  # what the browser adds for nginx's realm
    r = s.get(url + "/admin/requests", timeout=30)
    assert r.status_code == 200 and "Recent requests" in r.text
    assert "routeplane_admin" not in r.headers.get("Set-Cookie", "")
    assert requests.get(url + "/admin/whoami", headers={"Authorization": s.headers["Authorization"]},
                        timeout=30).status_code == 401  # the JSON API still wants a bearer credential


@pytest.mark.e2e
def test_a_revoked_admin_token_signs_the_browser_out(stack: Dict[str, Any]) -> None:
    """The other side of the outage test: a credential that is refused (401) is forgotten at once."""
    url, token = stack["url"], admin_jwt()
    s = signed_in(url, token)
    assert s.get(url + "/admin/config", timeout=30).status_code == 200
    r = requests.post(url + "/admin/token-revocations", json={"token": token}, timeout=30,
                      headers={"Authorization": f"Bearer {stack['keys']['admin']}"})
    assert r.status_code == 200 and r.json()["already_revoked"] is False
    r = s.get(url + "/admin/config", timeout=30)
    assert r.status_code == 401 and "revoked" in r.text and s.cookies.get("routeplane_admin") is None
    foreign = admin_jwt(aud="urn:someone-else")  # an admin token minted for another service signs no one in
    r = requests.post(url + "/admin/login", data={"credential": foreign}, allow_redirects=False, timeout=30)
    assert r.status_code == 401 and "audience" in r.text and "Set-Cookie" not in r.headers


@pytest.mark.e2e
def test_a_credential_too_long_for_a_browser_cookie_is_refused_at_sign_in(stack: Dict[str, Any],
                                                                           request: pytest.FixtureRequest) -> None:
    """A browser drops a cookie over 4096 bytes without a word: signing in with a longer (valid) admin token
    answered 303 and a cookie the browser never kept, then "401 Sign-in needed" on every page, with no reason."""
    from tests.test_dashboard_e2e import CHROMIUM, CHROMIUM_ARGS, browser_or_skip

    browser_or_skip(request)
    from playwright.sync_api import sync_playwright

    url, token = stack["url"], admin_jwt(note="x" * 4300)
    assert 4096 < len(token) <= 8192
    assert requests.get(url + "/admin/", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30000)
        try:
            page = browser.new_context(java_script_enabled=False).new_page()
            page.goto(url + "/admin/login")
            page.fill("#credential", token)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            # Either the browser is signed in, or the sign-in page says why not: never a silent 401 loop.
            assert page.url.endswith("/admin/login"), page.url
            alert = page.locator("[role=alert]").inner_text()
            assert alert.startswith("413") and "Authorization" in alert, alert
            assert page.context.cookies() == [] and token not in page.content()
        finally:
            browser.close()


@pytest.mark.e2e
def test_the_spend_page_lists_a_bounded_number_of_client_chosen_groups(stack: Dict[str, Any]) -> None:
    """Route names (any unknown model is a cheap 404 with its own spend row) and, with self-signed JWTs, accounts
    are the clients' to multiply: /admin/spend?by=route listed every one (50,000 names: an 11 MB page). The page
    shows the busiest MAX_SPEND_ROWS and says how many more; the total and the CSV still count every row."""
    from routeplane.store.spend_log import COLUMNS
    from routeplane.web.dashboard import MAX_SPEND_ROWS

    n, now = MAX_SPEND_ROWS + 700, time.time()
    row = dict.fromkeys(COLUMNS, 0)
    row.update(session_id=None, provider=None, model=None, inbound_protocol="openai_chat", cost_micro_usd=None,
               latency_ms=1.0, ttft_ms=None, attempts_json="[]", outcome="error", error_type="not_found", status=404,
               metadata_json=None, recorded_at=now)
    rows = [dict(row, id=f"sp_s7_{i}", request_id=f"req-s7-{i}", started_at=now - i * 0.001, account_id=f"s7-{i}",
                 route=f"s7-bogus-{i}") for i in range(n)]
    db = sqlite3.connect(stack["db"])
    try:
        db.executemany(f"INSERT INTO spend_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       [tuple(r[c] for c in COLUMNS) for r in rows])
        db.commit()
    finally:
        db.close()
    admin = {"Authorization": f"Bearer {stack['keys']['admin']}"}
    for by in ("route", "account"):
        r = requests.get(f"{stack['url']}/admin/spend?by={by}", headers=admin, timeout=60)
        assert r.status_code == 200
        listed = r.text.count("s7-bogus-" if by == "route" else "<th scope=\"row\">s7-")
        assert listed == MAX_SPEND_ROWS, listed
        more = re.search(r"(\d+) more are in the total", r.text)
        assert more is not None and int(more.group(1)) >= n - MAX_SPEND_ROWS, by
        csv_text = requests.get(f"{stack['url']}/admin/spend.csv?by={by}", headers=admin, timeout=60).text
        assert csv_text.count("s7-") == n


# --- the admin JSON API: a bad parameter is a 400 ----------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("limit,status", [("9" * 4400, 400), ("0" * 5000 + "5", 200)])
def test_a_revocation_list_limit_past_int_digits_is_not_a_store_outage(stack: Dict[str, Any], limit: str,
                                                                       status: int) -> None:
    """`?limit=` of more than 4300 digits made int() raise, which the view took for a store failure: a 503 "cannot
    be read right now" (the client retries in vain) and a traceback in the log blaming the revocation store."""
    gw: GatewayProcess = stack["gw"]
    before = gw.logs().count("the token revocation store failed")
    r = requests.get(f"{stack['url']}/admin/token-revocations?limit={limit}", timeout=30,
                     headers={"Authorization": f"Bearer {stack['keys']['admin']}"})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == "limit"
    assert gw.logs().count("the token revocation store failed") == before


# --- the mounted example: the host's model allowlist ---------------------------------------------------------------

HOST_MODELS = {"providers": {"mock": {"protocol": "mock"}},
               "models": {"mock-echo": {"targets": [{"provider": "mock", "model": "echo"}]},
                          "mock-other": {"targets": [{"provider": "mock", "model": "echo"}]},
                          "default": {"targets": [{"provider": "mock", "model": "echo"}]}}}


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Flask:
    import examples.mounted_app as ex

    monkeypatch.setitem(ex.DEMO_USERS, "carol", ex.HostUser("carol", "none", models=()))
    monkeypatch.setitem(ex.DEMO_USERS, "dave", ex.HostUser("dave", "mock", models=("mock-*",)))
    monkeypatch.setitem(ex.DEMO_TOKENS, "host-token-carol", "carol")
    monkeypatch.setitem(ex.DEMO_TOKENS, "host-token-dave", "dave")
    return ex.create_host_app(parse_config(copy.deepcopy(HOST_MODELS), "<s7 host>"), secret_key="s7")


def chat(c: Any, token: str, model: str) -> Any:
    return c.post("/llm/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                  json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def listed(c: Any, token: str) -> list:
    return sorted(m["id"] for m in c.get("/llm/v1/models", headers={"Authorization": f"Bearer {token}"})
                  .get_json()["data"])


def test_the_mounted_example_reads_host_models_as_patterns_like_the_model_list(host: Flask) -> None:
    """HostUser.models becomes Identity.models, whose entries are patterns (`mock-*`): /llm/v1/models listed
    mock-echo for such a user, yet the example's hook compared names exactly and refused the call (403)."""
    with host.test_client() as c:
        assert listed(c, "host-token-dave") == ["mock-echo", "mock-other"]
        assert chat(c, "host-token-dave", "mock-echo").status_code == 200
        r = chat(c, "host-token-dave", "default")
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "model_not_allowed"


def test_the_mounted_example_host_user_with_no_models_reaches_none(host: Flask) -> None:
    """docs/mounting.md: `models=()` allows none, a 403 `model_not_allowed` and an empty model list."""
    with host.test_client() as c:
        assert listed(c, "host-token-carol") == []
        for model in ("mock-echo", "default"):
            r = chat(c, "host-token-carol", model)
            assert r.status_code == 403 and r.get_json()["error"]["code"] == "model_not_allowed", r.get_json()
        assert c.get("/llm/admin/whoami", headers={"Authorization": "Bearer host-token-carol"}).status_code == 403


def test_a_mounted_admin_signed_in_through_the_form_can_sign_out(host: Flask) -> None:
    """Mounted, the host's hook gives an Identity of kind "anonymous" (the default): the pages hid "Sign out" for
    it, so an admin who signed in through /llm/admin/login could not drop the host token kept in the cookie."""
    with host.test_client() as c:
        r = c.post("/llm/admin/login", data={"credential": "host-token-alice"}, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303 and r.headers["Location"] == "/llm/admin/"
        page = c.get("/llm/admin/spend").get_data(as_text=True)
        assert 'action="/llm/admin/logout"' in page and "Sign out" in page
        r = c.post("/llm/admin/logout", headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303 and r.headers["Location"] == "/llm/admin/login"
        assert c.get("/llm/admin/spend").status_code == 401  # the cookie is gone
    with host.test_client() as c:  # the host's own session: no dashboard cookie, nothing to sign out of here
        assert c.post("/login", data={"user": "alice"}).status_code == 302
        page = c.get("/llm/admin/spend").get_data(as_text=True)
        assert "signed in as alice" in page and "Sign out" not in page
