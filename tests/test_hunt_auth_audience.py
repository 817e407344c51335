"""Who may spend what (issue 7): JWT audiences (`auth.audience`) and explicit empty allowlists.

A token minted for another service that uses the same Web3 JWT format must not be replayable here once the
operator names this gateway's audience; and an explicit empty `models` / `tools` list (a token claim or an
API key's list) allows nothing, while an absent one still allows everything.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import time
import uuid
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import pytest
import requests
import yaml

from routeplane.app import build_app
from routeplane.auth.authenticator import Authenticator, AuthFailure
from routeplane.auth.caip10 import SOLANA_MAINNET
from routeplane.auth.crypto import Wallet
from routeplane.auth.globs import model_allowed
from routeplane.auth.jwt import mint_token
from routeplane.auth.keys import create_key
from routeplane.auth.revocation import RevocationError, ref_from_token
from routeplane.auth.settings import AuthSettings
from routeplane.auth.store import MIGRATIONS, AuthStore
from routeplane.cli import main
from routeplane.config import DEFAULT_CONFIG, ConfigError, parse_config
from routeplane.mcp.pipeline import ToolAllowlistHook
from routeplane.store import Store, migrate
from tests.support.gateway import GatewayProcess

AUD = "https://gw.example/routeplane"
BODY = {"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet(bytes(range(40, 72)))


def jwt(w: Wallet, **claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 600)
    claims.setdefault("jti", uuid.uuid4().hex)
    return mint_token(w, f"{SOLANA_MAINNET}:{w.solana_address}", claims)


def payload(token: str) -> Dict[str, Any]:
    seg = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def authenticator(**auth: Any) -> Authenticator:
    settings = AuthSettings.from_config(dict({"mode": "jwt"}, **auth))
    return Authenticator(settings, store=lambda: None)  # type: ignore[arg-type,return-value]


# --- audience: unit ---------------------------------------------------------------


def test_audience_is_a_validated_config_key() -> None:
    base = copy.deepcopy(DEFAULT_CONFIG)
    for good in (AUD, [AUD, "other"]):
        assert parse_config(dict(base, auth={"mode": "jwt", "audience": good})).auth["audience"] == good
    for bad in ("", [], [""], [AUD, 3], 7, {"a": 1}):
        with pytest.raises(ConfigError, match="auth.audience"):
            parse_config(dict(base, auth={"mode": "jwt", "audience": bad}))


@pytest.mark.parametrize("configured", [AUD, [AUD, "urn:other-gateway"]])
def test_token_must_name_a_configured_audience(wallet: Wallet, configured: Any) -> None:
    auth = authenticator(audience=configured)
    for aud in (AUD, [AUD], ["urn:someone-else", AUD]):
        assert auth.authenticate(jwt(wallet, aud=aud)).account_id
    for aud, why in ((None, "aud"), ("urn:someone-else", "aud"), (["urn:someone-else"], "aud"), ([], "aud"),
                     (AUD.upper(), "aud"), (AUD + "/", "aud")):
        claims = {} if aud is None else {"aud": aud}
        with pytest.raises(AuthFailure) as exc:
            auth.authenticate(jwt(wallet, **claims))
        assert exc.value.status == 401 and why in exc.value.message, (aud, exc.value.message)
    for malformed in (3, [AUD, 3], {"aud": AUD}, True, [[AUD]]):
        with pytest.raises(AuthFailure) as exc:
            auth.authenticate(jwt(wallet, aud=malformed))
        assert exc.value.status == 401 and "aud" in exc.value.message
    unset = authenticator()  # without auth.audience, any aud (or none) is accepted as before
    for aud in ("urn:someone-else", ["x", "y"], 3):
        assert unset.authenticate(jwt(wallet, aud=aud)).kind == "jwt"


def _config_file(tmp_path: Any, auth: Dict[str, Any]) -> str:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["auth"] = auth
    if "api_keys" in auth["mode"]:
        c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    path = tmp_path / f"rp-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(c))
    return str(path)


def test_check_warns_when_jwts_are_accepted_for_any_audience(tmp_path: Any, caplog: Any, capsys: Any) -> None:
    warned = {}
    for name, auth in (("jwt", {"mode": "jwt"}), ("both", {"mode": "api_keys+jwt"}),
                       ("set", {"mode": "jwt", "audience": AUD}), ("keys", {"mode": "api_keys"}),
                       ("none", {"mode": "none"})):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="routeplane.auth"):
            assert main(["check", _config_file(tmp_path, auth)]) == 0
        warned[name] = any("audience" in r.getMessage() for r in caplog.records)
    assert warned == {"jwt": True, "both": True, "set": False, "keys": False, "none": False}


def test_token_mint_takes_aud_and_an_explicit_empty_models_list(tmp_path: Any, capsys: Any) -> None:
    key_file = str(tmp_path / "key.json")
    assert main(["token", "mint", "--key", key_file, "--aud", AUD]) == 0
    one = payload(capsys.readouterr().out.strip())
    assert one["aud"] == AUD and "models" not in one
    assert main(["token", "mint", "--key", key_file, "--aud", AUD, "--aud", "urn:b", "--models", ""]) == 0
    two = payload(capsys.readouterr().out.strip())
    assert two["aud"] == [AUD, "urn:b"] and two["models"] == []
    assert main(["token", "mint", "--key", key_file, "--aud", ""]) == 2
    assert "aud" in capsys.readouterr().err


def test_revoking_by_token_applies_the_audience(wallet: Wallet) -> None:
    settings = AuthSettings.from_config({"mode": "jwt", "audience": AUD})
    foreign = jwt(wallet, aud="urn:someone-else", jti="shared-jti")
    with pytest.raises(RevocationError, match="aud"):
        ref_from_token(foreign, 4096, settings.verifier.audience)
    ref = ref_from_token(jwt(wallet, aud=AUD, jti="shared-jti", exp=int(time.time()) - 3600), 4096,
                         settings.verifier.audience)
    assert ref.jti == "shared-jti"  # an expired token of this gateway can still be revoked
    assert ref_from_token(foreign, 4096).jti == "shared-jti"


# --- explicit empty allowlists: unit ------------------------------------------------


def test_empty_allowlist_allows_nothing_absent_allows_all() -> None:
    assert model_allowed(None, "anything") and model_allowed(("*",), "anything")
    assert not model_allowed((), "anything") and not model_allowed([], "")


def test_jwt_with_empty_models_and_tools_allows_none(wallet: Wallet) -> None:
    auth = authenticator()
    assert auth.authenticate(jwt(wallet, models=[])).models == ()
    assert auth.authenticate(jwt(wallet)).models == ("*",)
    hook = ToolAllowlistHook()

    def tool_call(token: str) -> bool:
        ctx = SimpleNamespace(method="tools/call", identity=auth.authenticate(token), metadata={}, name="fs_read")
        return hook.check(ctx).allowed  # type: ignore[arg-type]

    assert not tool_call(jwt(wallet, tools=[]))
    for null in ("models", "tools"):  # `null` is not a list: refused, never read as "absent" (= everything)
        with pytest.raises(AuthFailure, match=null):
            auth.authenticate(jwt(wallet, **{null: None}))
    assert tool_call(jwt(wallet)) and tool_call(jwt(wallet, tools=["fs_*"]))


def test_api_key_no_list_versus_empty_list(tmp_path: Any) -> None:
    app = build_app(parse_config(dict(copy.deepcopy(DEFAULT_CONFIG), database={"url": f"sqlite:///{tmp_path}/k.db"},
                                      auth={"mode": "api_keys"})))
    migrate(app.store, app.plugins)
    store = AuthStore(app.store)
    client = app.flask_app().test_client()

    def chat(key: str) -> Any:
        return client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})

    assert chat(create_key(store)[1]).status_code == 200
    assert chat(create_key(store, models=["mock-*"])[1]).status_code == 200
    r = chat(create_key(store, models=[])[1])
    assert r.status_code == 403 and r.json["error"]["code"] == "model_not_allowed", r.json
    app.store.close()


def test_legacy_keys_without_a_list_keep_meaning_all(tmp_path: Any) -> None:
    """Keys created before the "none" meaning stored `[]` for "no --models": the migration keeps them `all`."""
    from routeplane.app import Plugin, PluginId
    from routeplane.auth.plugin import AuthPlugin

    class OldAuth(Plugin):
        id = PluginId("auth")

        def migrations(self) -> List[Any]:
            return list(MIGRATIONS[:3])

    db = Store(f"sqlite:///{tmp_path}/old.db")
    app = build_app(parse_config(dict(copy.deepcopy(DEFAULT_CONFIG), database={"url": db.url},
                                      auth={"mode": "api_keys"})), store=db)
    migrate(db, [OldAuth() if isinstance(p, AuthPlugin) else p for p in app.plugins])
    old_all = create_key(AuthStore(db), models=["x"])[0]
    db.execute(f"UPDATE auth_api_keys SET models = '[]' WHERE id = {db.param}", (old_all.id,))  # as old code wrote
    old_some = create_key(AuthStore(db), models=["mock-*"])[0]
    migrate(db, app.plugins)
    assert AuthStore(db).get_key(old_all.id).models == ("*",)  # type: ignore[union-attr]
    assert AuthStore(db).get_key(old_some.id).models == ("mock-*",)  # type: ignore[union-attr]
    db.close()


def test_keys_cli_expresses_all_and_none(tmp_path: Any, capsys: Any) -> None:
    path = _config_file(tmp_path, {"mode": "api_keys"})
    assert main(["migrate", "--config", path, "--quiet"]) == 0
    for name, args in (("all", []), ("none", ["--models", ""]), ("some", ["--models", "mock-*"])):
        assert main(["keys", "create", "--config", path, "--name", name, *args]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--config", path, "--json"]) == 0
    listed = {e["name"]: e["models"] for e in map(json.loads, capsys.readouterr().out.splitlines())}
    assert listed == {"all": ["*"], "none": [], "some": ["mock-*"]}
    assert main(["keys", "list", "--config", path]) == 0
    text = capsys.readouterr().out
    assert "models=*" in text and "models=(none)" in text and "models=mock-*" in text


# --- end to end: real gunicorn, official SDKs ----------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('aud')}/rp.db"}
    c["auth"] = {"mode": "api_keys+jwt", "audience": [AUD, "urn:routeplane:staging"]}
    gw = GatewayProcess(c, workers=1, threads=8).start()
    yield gw
    gw.stop()


def _key(gw: GatewayProcess, capsys: Any, *args: str) -> str:
    capsys.readouterr()
    assert main(["keys", "create", "--config", str(gw.config_path), *args]) == 0
    return capsys.readouterr().out.strip()


@pytest.mark.e2e
def test_sdks_refuse_foreign_audience_and_empty_allowlists(gateway: GatewayProcess, wallet: Wallet,
                                                           capsys: Any) -> None:
    import anthropic
    import openai

    msgs = [{"role": "user", "content": "hi"}]

    def oa(cred: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=gateway.url + "/v1", api_key=cred, max_retries=0)

    def an(cred: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=gateway.url, api_key=cred, max_retries=0)

    good = jwt(wallet, aud=AUD)
    with oa(good) as c:
        assert c.chat.completions.create(model="mock-echo", messages=msgs).choices[0].message.content
    for foreign in (jwt(wallet, aud="urn:other-service"), jwt(wallet)):
        with oa(foreign) as c, pytest.raises(openai.AuthenticationError) as oexc:
            c.chat.completions.create(model="mock-echo", messages=msgs)
        assert "aud" in oexc.value.message
        with an(foreign) as c, pytest.raises(anthropic.AuthenticationError) as aexc:
            c.messages.create(model="mock-echo", max_tokens=8, messages=msgs)
        assert aexc.value.body["error"]["type"] == "authentication_error" and "aud" in aexc.value.message
    nothing = jwt(wallet, aud=AUD, models=[])
    with oa(nothing) as c:
        with pytest.raises(openai.PermissionDeniedError) as pexc:
            c.chat.completions.create(model="mock-echo", messages=msgs)
        assert pexc.value.code == "model_not_allowed"
        with pytest.raises(openai.PermissionDeniedError):
            c.responses.create(model="mock-echo", input="hi")
        assert [m.id for m in c.models.list()] == []
    none_key, all_key = _key(gateway, capsys, "--models", ""), _key(gateway, capsys)
    with an(none_key) as c, pytest.raises(anthropic.PermissionDeniedError) as apexc:
        c.messages.create(model="mock-echo", max_tokens=8, messages=msgs)
    assert apexc.value.body["error"]["type"] == "permission_error"
    with an(all_key) as c:
        assert c.messages.create(model="mock-echo", max_tokens=8, messages=msgs).content[0].text
    r = requests.post(gateway.url + "/v1beta/models/mock-echo:generateContent", timeout=10,
                      headers={"x-goog-api-key": none_key}, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED", r.text


@pytest.mark.e2e
def test_admin_endpoints_apply_the_audience(gateway: GatewayProcess, wallet: Wallet, capsys: Any,
                                            tmp_path: Any) -> None:
    admin = _key(gateway, capsys, "--scope", "admin")
    with requests.Session() as http:
        r = http.post(gateway.url + "/admin/token-revocations", timeout=10,
                      headers={"Authorization": f"Bearer {admin}"},
                      json={"token": jwt(wallet, aud="urn:other-service")})
        assert r.status_code == 400 and "aud" in r.json()["error"]["message"], r.text
        r = http.post(gateway.url + "/admin/token-revocations", timeout=10,
                      headers={"Authorization": f"Bearer {admin}"}, json={"token": jwt(wallet, aud=AUD)})
        assert r.status_code == 200, r.text
        r = http.get(gateway.url + "/admin/whoami", timeout=10,
                     headers={"Authorization": f"Bearer {jwt(wallet, scope='admin', aud='urn:other-service')}"})
        assert r.status_code == 401 and "aud" in r.json()["error"]["message"], r.text
    leaked = tmp_path / "leaked.jwt"
    leaked.write_text(jwt(wallet, aud="urn:other-service"))
    capsys.readouterr()
    assert main(["token", "revoke", "--config", str(gateway.config_path), "--token-file", str(leaked)]) == 1
    assert "aud" in capsys.readouterr().err
