"""Session 10 hunt: the admin surface under a real gunicorn — who counts as the local admin, and what the
`/admin/explain` dry run authenticates with — checked against what the wires themselves do."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator

import pytest
import requests

from routeplane.auth.keys import create_key
from routeplane.config import DEFAULT_CONFIG
from tests.support.gateway import GatewayProcess
from tests.support.keyed import keyed_gateway

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def open_gateway() -> Iterator[GatewayProcess]:
    """auth.mode none: only a direct local caller is the admin."""
    gw = GatewayProcess(copy.deepcopy(DEFAULT_CONFIG), workers=1, threads=4).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: Any) -> Iterator[Dict[str, Any]]:
    """auth.mode api_keys on SQLite: an admin key, a key for every model and a key for none."""
    env = keyed_gateway(tmp_path_factory.mktemp("s10auth"), lambda store: {
        "admin": create_key(store, scope="admin")[1], "every": create_key(store)[1],
        "none": create_key(store, models=[])[1]})
    yield env
    env["gw"].stop()


# --- the local admin and DNS rebinding ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/admin/whoami", "/admin/metrics", "/admin/config"])
def test_a_rebound_domain_is_not_the_local_admin(open_gateway: GatewayProcess, path: str) -> None:
    """A page on evil.example whose name was made to resolve to 127.0.0.1 reaches the loopback port with its own
    domain in Host; the peer address alone made it the admin (config, spend, metrics readable by any web page
    the operator visits)."""
    port = open_gateway.port
    rebound = requests.get(open_gateway.url + path, headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403, rebound.text
    assert "DNS rebinding" in rebound.text and "localhost" in rebound.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", None):
        headers = {"Host": host} if host else {}
        r = requests.get(open_gateway.url + path, headers=headers)
        assert r.status_code == 200, (host, r.text[:200])


def test_the_rebinding_refusal_answers_in_each_surfaces_own_shape(open_gateway: GatewayProcess) -> None:
    host = {"Host": f"llm.evil.example:{open_gateway.port}"}
    api = requests.get(open_gateway.url + "/admin/whoami", headers=host)
    assert api.status_code == 403 and api.json()["error"]["type"] == "permission_error"
    page = requests.get(open_gateway.url + "/admin/", headers=host)
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    login = requests.post(open_gateway.url + "/admin/login", data={"credential": "anything"}, headers=host,
                          allow_redirects=False)
    assert login.status_code == 403 and "Set-Cookie" not in login.headers


@pytest.mark.parametrize("proxy_header", ["X-Real-IP", "x-real-ip", "X-Forwarded-For", "Forwarded"])
def test_a_proxied_caller_with_the_sign_in_cookie_is_not_the_local_admin(open_gateway: GatewayProcess,
                                                                         proxy_header: str) -> None:
    """Behind a proxy that sends only X-Real-IP (nginx's common `proxy_set_header X-Real-IP $remote_addr`),
    any remote client could post the sign-in form with any text and browse the dashboard: with the cookie, the
    page checked a dict copy of the headers, where the name is spelled `X-Real-Ip` and the proxy went unseen."""
    proxied = {proxy_header: "for=203.0.113.9" if proxy_header == "Forwarded" else "203.0.113.9"}
    login = requests.post(open_gateway.url + "/admin/login", data={"credential": "anything"}, headers=proxied,
                          allow_redirects=False)
    assert login.status_code == 403 and "Set-Cookie" not in login.headers, login.text[:300]
    for path in ("/admin/", "/admin/config", "/admin/spend", "/admin/requests"):
        page = requests.get(open_gateway.url + path, headers={**proxied, "Cookie": "routeplane_admin=anything"})
        assert page.status_code == 403 and "proxy" in page.text, (path, page.text[:300])
    api = requests.get(open_gateway.url + "/admin/whoami", headers=proxied)
    assert api.status_code == 403


# --- /admin/explain authenticates as the wire would ------------------------------------------------------------

def explain(keyed: Dict[str, Any], wire: str, request: Dict[str, Any], headers: Dict[str, str]) -> Dict[str, Any]:
    r = requests.post(keyed["gw"].url + "/admin/explain", json={"wire": wire, "request": request, "headers": headers},
                      headers={"Authorization": f"Bearer {keyed['admin']}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_explain_reads_header_names_case_insensitively(keyed: Dict[str, Any]) -> None:
    """HTTP/2 clients and most tools send lower-case names: `authorization` was not found, so the dry run
    answered "Missing credentials" for a request the gateway admits."""
    chat = {"model": "mock-echo", "messages": CHAT, "max_tokens": 5}
    for name in ("authorization", "AUTHORIZATION", "Authorization"):
        report = explain(keyed, "openai_chat", chat, {name: f"Bearer {keyed['every']}"})
        assert report["verdict"] == "allow", (name, report["steps"])
    anthropic = {"model": "mock-echo", "max_tokens": 5, "messages": CHAT}
    report = explain(keyed, "anthropic_messages", anthropic, {"X-API-Key": keyed["every"]})
    assert report["verdict"] == "allow", report["steps"]
    real = requests.post(keyed["gw"].url + "/v1/chat/completions", json=chat,
                         headers={"authorization": f"Bearer {keyed['every']}"})
    assert real.status_code == 200


@pytest.mark.parametrize("wire,header", [("anthropic_messages", "x-api-key"), ("gemini", "x-goog-api-key")])
def test_explain_takes_the_credential_each_wire_takes(keyed: Dict[str, Any], wire: str, header: str) -> None:
    """With both the wire's own header and a Bearer token, the wire authenticates the former; the dry run
    used the admin guard's order (Bearer first) and so explained another caller's request."""
    both = {header: keyed["none"], "Authorization": f"Bearer {keyed['every']}"}
    if wire == "anthropic_messages":
        body = {"model": "mock-echo", "max_tokens": 5, "messages": CHAT}
        real = requests.post(keyed["gw"].url + "/v1/messages", json=body,
                             headers={"anthropic-version": "2023-06-01", **both})
    else:
        body = {"model": "mock-echo", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        real = requests.post(keyed["gw"].url + "/v1beta/models/mock-echo:generateContent",
                             json={"contents": body["contents"]}, headers=both)
    assert real.status_code == 403 and "allowlist" in real.text, real.text
    report = explain(keyed, wire, body, both)
    assert report["verdict"] == "deny", report["steps"]
    assert report["steps"][0]["status"] == 403 and "allowlist" in report["steps"][0]["message"]
