"""Session 10: each wire finds a client's credential in one documented order (docs/auth.md, "Credentials on each
wire") on every endpoint of that wire — listing, counting and calling — under a real gunicorn with API keys.

A client that sends two credentials at once (one valid, one revoked) must get the same verdict from the listing
and from the call: before, `/v1/models` and `/v1beta/models` read Bearer first whatever the wire, so the listing
and the call could authenticate different keys."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
import requests

from routeplane.auth.keys import create_key
from routeplane.auth.store import AuthStore
from tests.support.keyed import keyed_gateway

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "hi"}]
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
AV = {"anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: Any) -> Iterator[Dict[str, Any]]:
    """auth.mode api_keys on SQLite: one valid key and one revoked key."""
    def mint(store: AuthStore) -> Dict[str, str]:
        good = create_key(store, name="good")[1]
        row, bad = create_key(store, name="revoked")
        assert store.revoke_key(row.id)
        return {"good": good, "bad": bad}

    env = keyed_gateway(tmp_path_factory.mktemp("s10wires"), mint)
    yield env
    env["gw"].stop()


Endpoint = Tuple[str, str, Any]  # method, path, JSON body (None for GET)

ANTHROPIC: List[Endpoint] = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/mock-echo", None),
    ("POST", "/v1/messages/count_tokens", {"model": "mock-echo", "messages": CHAT}),
    ("POST", "/v1/messages", {"model": "mock-echo", "max_tokens": 5, "messages": CHAT}),
]
GEMINI: List[Endpoint] = [
    ("GET", "/v1beta/models", None),
    ("GET", "/v1beta/models/mock-echo", None),
    ("GET", "/v1/models", None),  # Gemini's v1 listing (google-genai with api_version v1, or REST with ?key=)
    ("GET", "/v1/models/models/mock-echo", None),
    ("POST", "/v1beta/models/mock-echo:countTokens", CONTENTS),
    ("POST", "/v1beta/models/mock-echo:generateContent", CONTENTS),
    ("POST", "/v1/models/mock-echo:generateContent", CONTENTS),
]
OPENAI: List[Endpoint] = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/mock-echo", None),
    ("POST", "/v1/responses/input_tokens", {"model": "mock-echo", "input": "hi"}),
    ("POST", "/v1/chat/completions", {"model": "mock-echo", "max_tokens": 5, "messages": CHAT}),
    ("POST", "/v1/responses", {"model": "mock-echo", "input": "hi"}),
]


def verdicts(keyed: Dict[str, Any], endpoints: List[Endpoint], headers: Dict[str, str],
             params: Dict[str, str]) -> Dict[str, int]:
    out = {}
    for method, path, body in endpoints:
        r = requests.request(method, keyed["gw"].url + path, json=body, headers=headers, params=params)
        out[f"{method} {path}"] = r.status_code
    return out


def creds(keyed: Dict[str, Any], spec: Dict[str, str]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Headers and query from a spec naming which key each place carries: {"x-api-key": "good", ...}."""
    headers: Dict[str, str] = {}
    params: Dict[str, str] = {}
    for where, which in spec.items():
        key = keyed[which]
        if where == "?key":
            params["key"] = key
        elif where == "Bearer":
            headers["Authorization"] = f"Bearer {key}"
        else:
            headers[where] = key
    return headers, params


# Each case: which key goes where, and the status every endpoint of the wire must answer.
CASES: List[Tuple[str, List[Endpoint], Dict[str, str], Dict[str, str], int]] = [
    # Claude Code with ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN both set: x-api-key wins everywhere.
    ("anthropic-own-good", ANTHROPIC, AV, {"x-api-key": "good", "Bearer": "bad"}, 200),
    ("anthropic-own-revoked", ANTHROPIC, AV, {"x-api-key": "bad", "Bearer": "good"}, 401),
    ("anthropic-lowercase", ANTHROPIC, AV, {"X-API-KEY": "good", "Bearer": "bad"}, 200),
    ("gemini-own-good", GEMINI, {}, {"x-goog-api-key": "good", "Bearer": "bad"}, 200),
    ("gemini-own-revoked", GEMINI, {}, {"x-goog-api-key": "bad", "Bearer": "good"}, 401),
    # x-api-key is Anthropic's header: not a credential on the Gemini wire (the listing took it, before Gemini's).
    ("gemini-ignores-x-api-key", GEMINI, {}, {"x-goog-api-key": "good", "x-api-key": "bad"}, 200),
    ("gemini-x-api-key-alone", GEMINI[:2] + GEMINI[4:], {}, {"x-api-key": "good"}, 401),
    ("gemini-query-key", GEMINI, {}, {"?key": "good"}, 200),
    ("gemini-header-before-query", GEMINI, {}, {"x-goog-api-key": "bad", "?key": "good"}, 401),
    ("openai-bearer-good", OPENAI, {}, {"Bearer": "good", "x-api-key": "bad"}, 200),
    ("openai-bearer-revoked", OPENAI, {}, {"Bearer": "bad", "x-api-key": "good"}, 401),
    # x-api-key is not an OpenAI credential: the listing took it, the call did not.
    ("openai-x-api-key-alone", OPENAI, {}, {"x-api-key": "good"}, 401),
]


@pytest.mark.parametrize("name,endpoints,extra,spec,status", CASES, ids=[c[0] for c in CASES])
def test_listing_counting_and_calling_authenticate_the_same_credential(
        keyed: Dict[str, Any], name: str, endpoints: List[Endpoint], extra: Dict[str, str], spec: Dict[str, str],
        status: int) -> None:
    headers, params = creds(keyed, spec)
    got = verdicts(keyed, endpoints, {**extra, **headers}, params)
    assert got == {k: status for k in got}, got


def test_the_gemini_v1_rest_listing_with_a_query_key(keyed: Dict[str, Any]) -> None:
    """`GET /v1/models?key=` (Gemini's v1 REST listing) was a 401 in OpenAI's shape while
    `POST /v1/models/x:generateContent?key=` worked: it is Gemini's listing, and its refusal is Gemini's."""
    url = keyed["gw"].url
    ok = requests.get(url + "/v1/models", params={"key": keyed["good"]})
    assert ok.status_code == 200, ok.text
    assert "models/mock-echo" in [m["name"] for m in ok.json()["models"]]
    one = requests.get(url + "/v1/models/models/mock-echo", params={"key": keyed["good"]})
    assert one.status_code == 200 and one.json()["name"] == "models/mock-echo", one.text
    refused = requests.get(url + "/v1/models", params={"key": keyed["bad"]})
    assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED", refused.text
    assert keyed["bad"] not in refused.text


def _message(r: requests.Response) -> str:
    return r.json()["error"]["message"]


@pytest.mark.parametrize("endpoints,extra,own", [
    (ANTHROPIC, AV, "x-api-key"),
    (GEMINI[:2] + GEMINI[4:], {}, "x-goog-api-key"),
], ids=["anthropic", "gemini"])
def test_missing_credentials_names_the_wires_own_header(keyed: Dict[str, Any], endpoints: List[Endpoint],
                                                        extra: Dict[str, str], own: str) -> None:
    """The 401 said only `Authorization: Bearer` on every wire; it names the wire's own header first."""
    for method, path, body in endpoints:
        r = requests.request(method, keyed["gw"].url + path, json=body, headers=extra)
        assert r.status_code == 401, (path, r.text)
        message = _message(r)
        assert message.startswith("Missing credentials") and f"'{own}: <credential>'" in message, (path, message)
        assert "Authorization: Bearer" in message
    r = requests.post(keyed["gw"].url + "/v1/chat/completions", json=OPENAI[3][2])
    assert r.status_code == 401 and "x-api-key" not in _message(r) and "Authorization: Bearer" in _message(r)


def test_claude_code_with_both_variables_lists_counts_and_calls_with_the_api_key(keyed: Dict[str, Any]) -> None:
    """Claude Code with ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN both set sends x-api-key and a Bearer token
    (this SDK release takes one of api_key / auth_token and sends either as Bearer, so x-api-key comes as a
    default header): the listing authenticated the Bearer token, the call the x-api-key."""
    import anthropic

    url = keyed["gw"].url
    calls: List[Callable[[anthropic.Anthropic], Any]] = [
        lambda c: [m.id for m in c.models.list()],
        lambda c: c.messages.count_tokens(model="mock-echo", messages=CHAT),
        lambda c: c.messages.create(model="mock-echo", max_tokens=5, messages=CHAT),
    ]
    def client(api_key: str, token: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=url, auth_token=token, max_retries=0,
                                   default_headers={"x-api-key": api_key})

    with client(keyed["good"], keyed["bad"]) as both:
        assert "mock-echo" in calls[0](both)
        for call in calls[1:]:
            call(both)
    with client(keyed["bad"], keyed["good"]) as both:
        for call in calls:
            with pytest.raises(anthropic.AuthenticationError) as exc:
                call(both)
            assert exc.value.body["error"]["type"] == "authentication_error"


def test_google_genai_on_api_version_v1_lists_and_calls_with_its_key(keyed: Dict[str, Any]) -> None:
    """google-genai (API version v1) sends x-goog-api-key; a stray Bearer header of a revoked key, which the
    listing read first, does not change which key it authenticates."""
    from google import genai
    from google.genai import types as genai_types

    options = genai_types.HttpOptions(base_url=keyed["gw"].url, api_version="v1",
                                      headers={"Authorization": f"Bearer {keyed['bad']}"})
    client = genai.Client(api_key=keyed["good"], http_options=options)
    assert "models/mock-echo" in [m.name for m in client.models.list()]
    assert client.models.generate_content(model="mock-echo", contents="hi").text is not None
