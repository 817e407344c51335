"""JWT revocation: the id a token is revoked by, the store (SQLite, PostgreSQL, MariaDB), each worker's bounded cache,
refusals on every wire, the admin endpoint's who-may-revoke-what, and the CLI."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import logging
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from routeplane.app import build_app
from routeplane.auth.authenticator import Authenticator, AuthFailure
from routeplane.auth.caip10 import BASE_MAINNET, SOLANA_MAINNET, parse_caip10
from routeplane.auth.crypto import Wallet, b64url
from routeplane.auth.jwt import mint_token
from routeplane.auth.keys import create_key
from routeplane.auth.plugin import AuthPlugin
from routeplane.auth.revocation import (
    RevocationCache,
    RevocationError,
    account_for,
    cutoff_time,
    ref_from_jti,
    ref_from_token,
    revoke,
    session_id_for,
)
from routeplane.auth.settings import AuthSettings
from routeplane.auth.store import MIGRATIONS, AuthStore, RevokedToken
from routeplane.cli import main
from routeplane.config import DEFAULT_CONFIG, ConfigError, parse_config
from routeplane.store import Store, migrate

CHAT = "/v1/chat/completions"
BODY = {"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}]}
REVOKED = "This token has been revoked."
PATH = "/admin/token-revocations"


WALLET_SEED, STRANGER_SEED = bytes(range(11, 43)), bytes(range(90, 122))


def config_dict(tmp_path: Any, auth: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    c["auth"] = dict(auth or {"mode": "api_keys+jwt"})
    # Both test wallets may hold admin scope (auth.admin_issuers), so what the endpoint itself allows
    # an admin token is what these tests see.
    c["auth"].setdefault("admin_issuers", [iss_of(Wallet(WALLET_SEED)), iss_of(Wallet(STRANGER_SEED))])
    return c


class Gateway:
    def __init__(self, tmp_path: Any, auth: Optional[Dict[str, Any]] = None) -> None:
        self.app = build_app(parse_config(config_dict(tmp_path, auth)))
        migrate(self.app.store, self.app.plugins)
        self.client = self.app.flask_app().test_client()
        self.auth_store = AuthStore(self.app.store)

    def chat(self, credential: str) -> Any:
        return self.client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {credential}"})

    def admin(self, credential: str, body: Any) -> Any:
        return self.client.post(PATH, json=body, headers={"Authorization": f"Bearer {credential}"})


@pytest.fixture
def gw(tmp_path: Any) -> Iterator[Gateway]:
    g = Gateway(tmp_path)
    yield g
    g.app.store.close()


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet(WALLET_SEED)


def iss_of(w: Wallet, chain: str = "solana") -> str:
    return f"{SOLANA_MAINNET}:{w.solana_address}" if chain == "solana" else f"{BASE_MAINNET}:{w.evm_address}"


def jwt(w: Wallet, chain: str = "solana", **claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 600)
    return mint_token(w, iss_of(w, chain), claims)


def account_of(w: Wallet, chain: str = "solana") -> str:
    return parse_caip10(iss_of(w, chain)).account_id


def auth_plugin(app: Any) -> AuthPlugin:
    return next(p for p in app.plugins if isinstance(p, AuthPlugin))


def authenticator(tmp_path: Any) -> Authenticator:
    return auth_plugin(Gateway(tmp_path).app).authenticator


# --- which session a token names --------------------------------------------------


def test_a_token_is_revoked_by_the_session_the_authenticator_gives_it(tmp_path: Any, wallet: Wallet) -> None:
    auth = authenticator(tmp_path)
    for token in (jwt(wallet, jti="j-1"), jwt(wallet, chain="evm"), jwt(wallet, exp=None)):
        ref = ref_from_token(token, 4096)
        identity = auth.authenticate(token)
        assert (ref.session_id, ref.account_id) == (identity.session_id, identity.account_id)
    by_jti = ref_from_token(jwt(wallet, jti="j-1"), 4096)
    assert by_jti.session_id == ref_from_jti(account_of(wallet), "j-1").session_id  # --jti names the same session
    assert by_jti.jti == "j-1" and by_jti.expires_at is not None


def test_the_same_jti_in_another_account_is_another_session(wallet: Wallet) -> None:
    other = Wallet(bytes(range(50, 82)))
    mine, theirs = ref_from_token(jwt(wallet, jti="shared"), 4096), ref_from_token(jwt(other, jti="shared"), 4096)
    assert mine.session_id != theirs.session_id and mine.account_id != theirs.account_id
    # The issuer's chain is not part of the account: eip155:1 and eip155:8453 are one account.
    assert account_for(iss=f"eip155:1:{wallet.evm_address}") == account_for(iss=iss_of(wallet, "evm"))
    assert session_id_for(account_of(wallet), "shared") == mine.session_id


def test_a_token_without_jti_is_named_by_what_was_signed(wallet: Wallet) -> None:
    token = jwt(wallet, chain="evm")
    h, p, s = token.split(".")
    sig = base64.urlsafe_b64decode(s + "==")
    twin = f"{h}.{p}.{b64url(sig[:64] + bytes([sig[64] - 27]))}"  # v as a recovery id: the same signature
    ref = ref_from_token(token, 4096)
    assert ref.jti is None and ref_from_token(twin, 4096).session_id == ref.session_id
    digest = hashlib.sha256(f"{h}.{p}".encode()).hexdigest()
    assert ref.session_id == session_id_for(ref.account_id, digest)


def test_a_forged_or_malformed_token_names_nothing(wallet: Wallet) -> None:
    other = Wallet(bytes(range(50, 82)))
    token = jwt(wallet, jti="victim")
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    forged_payload = b64url(json.dumps(dict(claims, jti="someone-else"), separators=(",", ":")).encode())
    other_sig = jwt(other, jti="victim").split(".")[2]  # the same claims signed by another key
    for bad in (f"{h}.{forged_payload}.{s}", f"{h}.{p}.{other_sig}", "a.b", "x" * 5000 + ".a.b", token + "x"):
        with pytest.raises(RevocationError) as err:
            ref_from_token(bad, 4096)
        assert token not in str(err.value) and "cannot be revoked" in str(err.value)
    # Expired and exp-less tokens can still be named (they may be what needs revoking).
    assert ref_from_token(jwt(wallet, exp=int(time.time()) - 10 ** 6), 4096).jti is None


@pytest.mark.parametrize("account,iss", [(None, None), ("acct_x", None), ("ACCT_" + "0" * 32, None),
                                         ("acct_" + "0" * 32, "solana:x:y"), (None, "eip155:1:0xnope"), (5, None)])
def test_an_account_is_named_exactly_once_and_well(account: Any, iss: Any) -> None:
    with pytest.raises(RevocationError):
        account_for(account, iss)


def test_cutoff_times_are_now_or_past_seconds() -> None:
    now = 1_700_000_000.5
    assert cutoff_time("now", now) == now and cutoff_time(1_600_000_000, now) == 1_600_000_000
    assert cutoff_time("1600000000", now) == 1_600_000_000
    for bad in (now * 1000, now + 60, -1, "soon", True, float("nan"), None):
        with pytest.raises(RevocationError):
            cutoff_time(bad, now)


# --- the store ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def auth_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[AuthStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        server = request.getfixturevalue("postgres_cluster" if request.param == "postgresql" else "mariadb_server")
        url = server.create_database("rev_" + uuid.uuid4().hex[:8])
    app = build_app(parse_config(dict(config_dict(tmp_path), database={"url": url})))
    migrate(app.store, app.plugins)
    yield AuthStore(app.store)
    app.store.close()


def test_store_revokes_once_and_keeps_the_first_row(auth_store: AuthStore) -> None:
    row = RevokedToken("ses_" + "a" * 32, "acct_" + "1" * 32, "j", 2e9, 1000.0)
    assert auth_store.revocation_state(row.session_id, row.account_id) == (None, None)
    assert auth_store.revoke_token(row) is True
    assert auth_store.revoke_token(RevokedToken(row.session_id, row.account_id, "j", 2e9, 5000.0)) is False
    assert auth_store.revocation_state(row.session_id, row.account_id) == (1000.0, None)
    assert auth_store.revocation_state("ses_" + "b" * 32, row.account_id) == (None, None)
    # jtis differing only in case (or trailing space) are different tokens, whatever the dialect's collation.
    account = "acct_" + "9" * 32
    assert revoke(auth_store, ref_from_jti(account, "Agent"), 1000.0)
    for twin in ("agent", "Agent "):
        assert auth_store.revocation_state(ref_from_jti(account, twin).session_id, account) == (None, None)


def test_store_cutoff_only_moves_later(auth_store: AuthStore) -> None:
    account = "acct_" + "2" * 32
    assert auth_store.revoke_before(account, 100.0, 100.0) == 100.0
    assert auth_store.revoke_before(account, 50.0, 120.0) == 100.0  # a late or replayed call cannot un-revoke
    assert auth_store.revoke_before(account, 300.5, 301.0) == 300.5
    assert auth_store.revocation_state("ses_" + "c" * 32, account) == (None, 300.5)
    assert auth_store.revocation_state("ses_" + "c" * 32, "acct_" + "3" * 32) == (None, None)


def test_store_lists_by_account_and_prunes_long_expired_rows(auth_store: AuthStore) -> None:
    a, b = "acct_" + "4" * 32, "acct_" + "5" * 32
    now = time.time()
    auth_store.revoke_token(RevokedToken("ses_" + "1" * 32, a, None, now - 10 ** 6, now - 5))  # expired long ago
    auth_store.revoke_token(RevokedToken("ses_" + "2" * 32, a, "x", None, now - 4))
    auth_store.revoke_token(RevokedToken("ses_" + "3" * 32, b, "x", now + 60, now - 3))  # prunes the first
    auth_store.revoke_before(b, now - 100, now)
    tokens, cutoffs = auth_store.list_revocations()
    assert [t.session_id[4:6] for t in tokens] == ["33", "22"]  # newest first; the expired one is gone
    tokens, cutoffs = auth_store.list_revocations(a)
    assert [t.jti for t in tokens] == ["x"] and cutoffs == []
    tokens, cutoffs = auth_store.list_revocations(b, limit=1)
    assert len(tokens) == 1 and [c.account_id for c in cutoffs] == [b]


def test_revocations_are_a_new_migration_and_the_released_ones_are_untouched() -> None:
    """Editing an applied migration stops every upgraded gateway (checksum mismatch)."""
    released = {1: "9aa614d7756c", 2: "6a2aa734e21e", 3: "b51f997d7b1c"}
    assert [m.version for m in MIGRATIONS][:3] == [1, 2, 3] and MIGRATIONS[2].name == "token_revocations"
    for item in MIGRATIONS[:3]:
        assert hashlib.sha256(item.sql.encode()).hexdigest()[:12] == released[item.version], item.name


def test_an_existing_database_gains_only_the_new_step(tmp_path: Any) -> None:
    from routeplane.app import Plugin, PluginId

    class OldAuth(Plugin):
        id = PluginId("auth")

        def migrations(self) -> List[Any]:
            return list(MIGRATIONS[:2])

    store = Store(f"sqlite:///{tmp_path}/old.db")
    app = build_app(parse_config(dict(config_dict(tmp_path), database={"url": store.url})), store=store)
    migrate(store, [OldAuth() if isinstance(p, AuthPlugin) else p for p in app.plugins])
    applied = migrate(store, app.plugins)
    # 4 (api_key_models_all) came later: tests/test_hunt_auth_audience.py
    assert [(m.plugin, m.version) for m in applied] == [("auth", v) for v in range(3, len(MIGRATIONS) + 1)]
    store.close()


# --- the per-worker cache ---------------------------------------------------------------


class FakeStore:
    available = True

    def __init__(self) -> None:
        self.calls: List[str] = []
        self.revoked: Dict[str, float] = {}  # session -> revoked_at
        self.cutoffs: Dict[str, float] = {}
        self.fail = False

    def __call__(self) -> "FakeStore":
        return self

    def revocation_state(self, session_id: str, account_id: str) -> Tuple[Optional[float], Optional[float]]:
        self.calls.append("state")
        if self.fail:
            raise RuntimeError("store down")
        return self.revoked.get(session_id), self.cutoffs.get(account_id)

    def revocation_snapshot(self, now: float) -> Tuple[List[str], List[Tuple[str, float]]]:
        self.calls.append("snapshot")
        if self.fail:
            raise RuntimeError("store down")
        return list(self.revoked), list(self.cutoffs.items())


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_cache_trusts_its_snapshot_for_at_most_max_age_seconds() -> None:
    store, clock = FakeStore(), Clock()
    cache = RevocationCache(store, 5.0, clock)
    assert not cache.refused("acct", "ses_1", 10.0)
    store.revoked["ses_1"] = 999.0  # revoked by another process
    clock.t += 4.9
    assert not cache.refused("acct", "ses_1", 10.0) and store.calls == ["snapshot"]  # stale, within the bound
    clock.t += 0.1
    assert cache.refused("acct", "ses_1", 10.0) and store.calls == ["snapshot"] * 2  # the bound is reached


def test_fresh_tokens_cost_no_query_each() -> None:
    """A client minting a new token (a new session) per request: before, one store round trip per
    request (~170-190 us on PostgreSQL/MariaDB over loopback); now one refresh per max_age."""
    store, clock = FakeStore(), Clock()
    cache = RevocationCache(store, 5.0, clock)
    for i in range(100):
        assert not cache.refused("acct", f"ses_{i}", 10.0)
    assert store.calls == ["snapshot"]


def test_cache_cutoff_refuses_tokens_issued_before_it_or_without_iat() -> None:
    for max_age in (0.0, 5.0):
        store = FakeStore()
        store.cutoffs["acct"] = 500.0
        cache = RevocationCache(store, max_age, Clock())
        assert cache.refused("acct", "ses_1", 499.0) and cache.refused("acct", "ses_1", None)
        assert not cache.refused("acct", "ses_1", 500.0) and not cache.refused("acct", "ses_1", 501.0)
        assert not cache.refused("other", "ses_1", 1.0)
        # a client clock 25 s fast gave a token minted before the cut-off an iat after it
        assert cache.refused("acct", "ses_1", 520.0, leeway=30.0)
        assert not cache.refused("acct", "ses_1", 531.0, leeway=30.0)


def test_cache_without_max_age_asks_every_time_and_never_keeps_errors() -> None:
    store, clock = FakeStore(), Clock()
    uncached = RevocationCache(store, 0.0, clock)
    for _ in range(3):
        uncached.refused("acct", "ses_1", 1.0)
    assert store.calls == ["state"] * 3
    cache = RevocationCache(store, 60.0, clock)
    store.fail = True
    for _ in range(2):
        with pytest.raises(RuntimeError):
            cache.refused("acct", "ses_2", 1.0)
    store.fail = False
    assert not cache.refused("acct", "ses_2", 1.0) and store.calls[3:] == ["snapshot"] * 3


def test_a_snapshot_read_before_a_forget_is_not_kept() -> None:
    """A refresh in flight while this worker revokes must not keep its stale "not revoked" afterwards."""
    clock = Clock()
    cache: RevocationCache

    class SlowStore(FakeStore):
        def revocation_snapshot(self, now: float) -> Tuple[List[str], List[Tuple[str, float]]]:
            answer = super().revocation_snapshot(now)  # read before the revocation
            clock.t += 0.5
            self.revoked["ses_1"] = clock.t
            cache.forget("ses_1")  # this worker revokes meanwhile
            return answer

    store = SlowStore()
    cache = RevocationCache(store, 60.0, clock)
    assert not cache.refused("acct", "ses_1", 1.0)
    assert cache.refused("acct", "ses_1", 1.0) and store.calls == ["snapshot"] * 2


def test_forget_makes_the_next_request_refresh() -> None:
    store, clock = FakeStore(), Clock()
    cache = RevocationCache(store, 60.0, clock)
    assert not cache.refused("acct", "c", 1.0)
    store.revoked["c"] = 1.0
    assert not cache.refused("acct", "c", 1.0)
    cache.forget("c")
    assert cache.refused("acct", "c", 1.0) and store.calls == ["snapshot"] * 2


def test_a_jti_revocation_outlives_the_revoked_tokens_exp(gw: Gateway, wallet: Wallet) -> None:
    """Two tokens share a jti (one session). Revoking the short-lived one refuses both; before, its row
    was pruned a day after *its* exp by any later revocation, and the long-lived token worked again."""
    now = time.time()
    short, long_ = jwt(wallet, jti="shared", exp=int(now) + 60), jwt(wallet, jti="shared", exp=int(now) + 7 * 86400)
    admin = create_key(gw.auth_store, scope="admin")[1]
    assert gw.admin(admin, {"token": short}).status_code == 200
    assert gw.chat(long_).status_code == 401
    other = jwt(wallet, jti="another")
    # a later revocation, two days on, prunes what has expired
    assert revoke(gw.auth_store, ref_from_token(other, 4096), now=now + 2 * 86400)
    auth_plugin(gw.app).revocations.forget()
    assert gw.chat(long_).status_code == 401, "the shared-jti session stays revoked"


def test_a_bad_limit_is_a_400_not_a_store_failure(gw: Gateway) -> None:
    admin = create_key(gw.auth_store, scope="admin")[1]
    for limit in ("\u00b2", "0", "x", "100000"):
        r = gw.client.get(PATH + "?limit=" + limit, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 400 and r.json["error"]["param"] == "limit", (limit, r.status_code)


# --- refusals on every wire ---------------------------------------------------------


def test_a_revoked_token_is_refused_with_401_on_every_wire(gw: Gateway, wallet: Wallet) -> None:
    token, sibling = jwt(wallet, jti="wire"), jwt(wallet, jti="wire-2")
    assert gw.chat(token).status_code == 200
    revoke(gw.auth_store, ref_from_token(token, 4096))
    auth_plugin(gw.app).revocations.forget()  # the cache bound is tested above; here, each wire's answer
    r = gw.chat(token)
    assert r.status_code == 401 and r.json["error"] == {**r.json["error"], "type": "authentication_error",
                                                        "message": REVOKED}
    r = gw.client.post("/v1/messages", headers={"x-api-key": token},
                       json={"model": "mock-echo", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json["type"] == "error"
    assert r.json["error"] == {"type": "authentication_error", "message": REVOKED}
    r = gw.client.post("/v1beta/models/mock-echo:generateContent", headers={"x-goog-api-key": token},
                       json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 401 and r.json["error"]["status"] == "UNAUTHENTICATED"
    assert r.json["error"]["message"] == REVOKED
    r = gw.client.get("/admin/whoami", headers={"Authorization": f"Bearer {jwt(wallet, jti='wire', scope='admin')}"})
    assert r.status_code == 401 and r.json["error"]["message"] == REVOKED  # the jti, not the token bytes, is revoked
    assert gw.chat(sibling).status_code == 200
    assert gw.chat(jwt(Wallet(bytes(range(50, 82))), jti="wire")).status_code == 200  # another account's "wire"


def test_all_before_refuses_older_tokens_and_tokens_without_iat(gw: Gateway, wallet: Wallet) -> None:
    old, at_epoch = jwt(wallet, iat=int(time.time()) - 100), jwt(wallet, iat=0)
    assert gw.chat(old).status_code == 200 and gw.chat(at_epoch).status_code == 200
    gw.auth_store.revoke_before(account_of(wallet), time.time() - 50, time.time())
    auth_plugin(gw.app).revocations.forget()
    assert gw.chat(old).json["error"]["message"] == REVOKED
    assert gw.chat(at_epoch).status_code == 401
    assert gw.chat(jwt(wallet)).status_code == 200  # issued after the cut-off
    assert gw.chat(jwt(wallet, chain="evm", iat=int(time.time()) - 100)).status_code == 200  # another account


def test_a_token_with_no_iat_at_all_is_refused_once_its_account_has_a_cutoff(tmp_path: Any, wallet: Wallet) -> None:
    from routeplane.auth.crypto import b64url as enc

    header = enc(json.dumps({"alg": "SOL_EDDSA", "typ": "JWT"}).encode())
    payload = enc(json.dumps({"iss": iss_of(wallet), "exp": int(time.time()) + 600}).encode())
    token = f"{header}.{payload}.{enc(wallet.sign_ed25519(f'{header}.{payload}'.encode()))}"
    g = Gateway(tmp_path)
    assert g.chat(token).status_code == 200
    g.auth_store.revoke_before(account_of(wallet), 1.0, time.time())
    auth_plugin(g.app).revocations.forget()
    assert g.chat(token).json["error"]["message"] == REVOKED


@pytest.mark.parametrize("fail_closed", [True, False])
def test_a_store_outage_follows_fail_closed(tmp_path: Any, wallet: Wallet, fail_closed: bool,
                                           caplog: pytest.LogCaptureFixture) -> None:
    g = Gateway(tmp_path, {"mode": "jwt", "budget": {"fail_closed": fail_closed}})
    token = jwt(wallet)
    g.app.store.execute("DROP TABLE auth_token_revocations")
    routeplane_log = logging.getLogger("routeplane")
    routeplane_log.addHandler(caplog.handler)
    try:
        r = g.chat(token)
    finally:
        routeplane_log.removeHandler(caplog.handler)
    assert r.status_code == (503 if fail_closed else 200), r.get_data(as_text=True)
    assert "revocation check failed" in caplog.text
    assert token not in caplog.text + r.get_data(as_text=True)


def test_without_a_database_there_is_nothing_to_revoke(tmp_path: Any, wallet: Wallet) -> None:
    c = config_dict(tmp_path, {"mode": "jwt"})
    c["database"] = {"url": ""}
    app = build_app(parse_config(c))
    client = app.flask_app().test_client()
    assert client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {jwt(wallet)}"}).status_code == 200
    r = client.post(PATH, json={"token": jwt(wallet)}, headers={"Authorization": f"Bearer {jwt(wallet, scope='admin')}"})
    assert r.status_code == 503 and "database" in r.json["error"]["message"]


def test_revocation_settings_are_validated() -> None:
    assert AuthSettings.from_config({"mode": "jwt"}).revocation.cache_seconds == 5.0
    assert AuthSettings.from_config({"mode": "jwt", "revocation": {"cache_seconds": 0}}).revocation.cache_seconds == 0
    for bad in ({"cache_seconds": -1}, {"cache_seconds": 301}, {"ttl": 5}):
        with pytest.raises(ConfigError):
            parse_config(dict(copy.deepcopy(DEFAULT_CONFIG), auth={"mode": "jwt", "revocation": bad}))


# --- the admin endpoint --------------------------------------------------------------


def test_admin_endpoint_revokes_for_an_operator_key_and_takes_effect_here_at_once(gw: Gateway, wallet: Wallet) -> None:
    admin = create_key(gw.auth_store, scope="admin")[1]
    token = jwt(wallet, jti="ep")
    assert gw.chat(token).status_code == 200  # now cached as good in this worker
    r = gw.admin(admin, {"jti": "ep", "iss": iss_of(wallet)})
    assert r.status_code == 200 and r.json["already_revoked"] is False and r.json["jti"] == "ep"
    assert r.json["session_id"] == ref_from_token(token, 4096).session_id and r.json["cache_seconds"] == 5.0
    assert gw.chat(token).json["error"]["message"] == REVOKED
    assert gw.admin(admin, {"token": token}).json["already_revoked"] is True
    no_jti = jwt(wallet)  # revoked by the token itself (the hash of its header.payload)
    r = gw.admin(admin, {"token": no_jti})
    assert r.status_code == 200 and r.json["jti"] is None and no_jti not in r.get_data(as_text=True)
    assert gw.chat(no_jti).status_code == 401
    r = gw.admin(admin, {"all_before": "now", "account": account_of(wallet, "evm")})
    assert r.status_code == 200 and r.json["not_before"] <= time.time()
    listed = gw.client.get(PATH, headers={"Authorization": f"Bearer {admin}"}).json
    assert {t["jti"] for t in listed["tokens"]} == {"ep", None}
    assert [a["account_id"] for a in listed["accounts"]] == [account_of(wallet, "evm")]
    assert token not in json.dumps(listed) and no_jti not in json.dumps(listed)


def test_admin_endpoint_refuses_what_is_not_the_callers_to_revoke(gw: Gateway, wallet: Wallet) -> None:
    victim = jwt(wallet, jti="victim")
    stranger = Wallet(STRANGER_SEED)
    stranger_admin = jwt(stranger, scope="admin")  # an admin wallet, but of another account
    api_key = create_key(gw.auth_store, scope="api")[1]
    forged = stranger_admin[:-4] + ("AAAA" if not stranger_admin.endswith("AAAA") else "BBBB")
    attempts = [
        (jwt(wallet, scope="api"), {"token": victim}, 403),
        (api_key, {"token": victim}, 403),
        (forged, {"token": victim}, 401),
        (stranger_admin, {"token": victim}, 403),
        (stranger_admin, {"jti": "victim", "iss": iss_of(wallet)}, 403),
        (stranger_admin, {"jti": "victim", "account": account_of(wallet)}, 403),
        (stranger_admin, {"all_before": "now", "iss": iss_of(wallet)}, 403),
    ]
    for credential, body, status in attempts:
        r = gw.admin(credential, body)
        assert r.status_code == status, (body, r.json)
        assert victim not in r.get_data(as_text=True)
    # A token whose claims were changed (or a signature of another key) is not the victim's token.
    h, p, s = victim.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    tampered = f"{h}.{b64url(json.dumps(dict(claims, jti='other')).encode())}.{s}"
    admin = create_key(gw.auth_store, scope="admin")[1]
    for bad in (tampered, f"{h}.{p}.{jwt(stranger).split('.')[2]}"):
        r = gw.admin(admin, {"token": bad})
        assert r.status_code == 400 and r.json["error"]["param"] == "token" and bad not in r.get_data(as_text=True)
    # The stranger revoking its own "victim" jti leaves the victim's token alone.
    r = gw.admin(stranger_admin, {"jti": "victim", "iss": iss_of(stranger)})
    assert r.status_code == 200 and r.json["account_id"] == account_of(stranger)
    assert gw.chat(victim).status_code == 200
    listed = gw.client.get(PATH, headers={"Authorization": f"Bearer {stranger_admin}"})
    assert {t["account_id"] for t in listed.json["tokens"]} == {account_of(stranger)}
    assert gw.client.get(PATH + f"?account={account_of(wallet)}",
                         headers={"Authorization": f"Bearer {stranger_admin}"}).status_code == 403


def test_an_admin_token_may_revoke_its_own_accounts_tokens(gw: Gateway, wallet: Wallet) -> None:
    agent = jwt(wallet, jti="agent-1")
    r = gw.admin(jwt(wallet, scope="admin"), {"token": agent})
    assert r.status_code == 200 and gw.chat(agent).status_code == 401


@pytest.mark.parametrize("body,param", [({}, "token"), ({"jti": "x", "token": "y"}, "token"), ([], "token"),
                                        ({"jti": "x"}, "account"), ({"jti": "", "account": "acct_" + "0" * 32}, "jti"),
                                        ({"token": 5}, "token"), ({"token": "a.b.c"}, "token"),
                                        ({"all_before": 1e15, "account": "acct_" + "0" * 32}, "all_before")])
def test_admin_endpoint_names_the_bad_field(gw: Gateway, body: Any, param: str) -> None:
    admin = create_key(gw.auth_store, scope="admin")[1]
    r = gw.admin(admin, body)
    assert r.status_code == 400 and r.json["error"]["param"] == param, r.json


# --- the CLI ---------------------------------------------------------------------------


def write_config(tmp_path: Any, auth: Optional[Dict[str, Any]] = None) -> str:
    path = tmp_path / "routeplane.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, auth)))
    return str(path)


def test_cli_revokes_by_jti_token_file_stdin_and_cutoff(tmp_path: Any, wallet: Wallet, capsys: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {"mode": "jwt", "leeway_seconds": 1, "revocation": {"cache_seconds": 0}})
    assert main(["token", "revoke", "--config", path, "--jti", "x", "--iss", iss_of(wallet)]) == 1
    assert "routeplane migrate" in capsys.readouterr().err
    assert main(["migrate", "--config", path, "--quiet"]) == 0
    g = Gateway(tmp_path, {"mode": "jwt", "leeway_seconds": 1, "revocation": {"cache_seconds": 0}})
    by_jti, by_file, by_stdin, old = (jwt(wallet, jti="cli-1"), jwt(wallet), jwt(wallet, chain="evm"),
                                      jwt(wallet, jti="old", iat=int(time.time()) - 60))
    assert all(g.chat(t).status_code == 200 for t in (by_jti, by_file, by_stdin, old))
    capsys.readouterr()
    assert main(["token", "revoke", "--config", path, "--jti", "cli-1", "--iss", iss_of(wallet)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("revoked session " + ref_from_token(by_jti, 4096).session_id) and "within 0 s" in out
    token_file = tmp_path / "token.txt"
    token_file.write_text(by_file + "\n")
    assert main(["token", "revoke", "--config", path, "--token-file", str(token_file)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(by_stdin))
    assert main(["token", "revoke", "--config", path, "--token-file", "-"]) == 0
    assert main(["token", "revoke", "--config", path, "--jti", "cli-1", "--account", account_of(wallet)]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert [g.chat(t).json["error"]["message"] for t in (by_jti, by_file, by_stdin)] == [REVOKED] * 3
    assert g.chat(old).status_code == 200
    assert main(["token", "revoke", "--config", path, "--all-before", "now", "--account", account_of(wallet)]) == 0
    # within the leeway after the cut-off, an iat cannot tell a token minted before it by a fast clock
    assert g.chat(old).status_code == 401 and g.chat(jwt(wallet, iat=int(time.time()) + 1)).status_code == 401
    time.sleep(1.1)
    assert g.chat(jwt(wallet, iat=int(time.time()) + 1)).status_code == 200
    capsys.readouterr()
    assert main(["token", "revocations", "--config", path, "--json"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted((r["kind"], r.get("jti") or "-") for r in rows) == [("account", "-"), ("token", "-"), ("token", "-"),
                                                                      ("token", "cli-1")]
    assert all(t not in out for t in (by_jti, by_file, by_stdin))
    assert main(["token", "revocations", "--config", path, "--iss", iss_of(wallet, "evm")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["--jti", "x"], "exactly one of account"),
    (["--jti", "x", "--account", "bob"], "acct_"),
    (["--all-before", "99999999999999", "--account", "acct_" + "0" * 32], "future"),
    (["--token-file", "-", "--account", "acct_" + "0" * 32], "own account"),
    (["--token-file", "-"], "cannot be revoked"),
])
def test_cli_refusals_are_one_line_and_never_the_token(tmp_path: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch,
                                                       argv: List[str], message: str) -> None:
    path = write_config(tmp_path)
    assert main(["migrate", "--config", path, "--quiet"]) == 0
    forged = jwt(Wallet(bytes(range(7, 39))))[:-3] + "abc"
    monkeypatch.setattr("sys.stdin", io.StringIO(forged))
    capsys.readouterr()
    assert main(["token", "revoke", "--config", path, *argv]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and forged not in err and len(err.strip().splitlines()) == 1


def test_cli_needs_auth_on(tmp_path: Any, capsys: Any) -> None:
    path = write_config(tmp_path, {"mode": "none"})
    assert main(["migrate", "--config", path, "--quiet"]) == 0
    assert main(["token", "revocations", "--config", path]) == 1
    assert "auth.mode is none" in capsys.readouterr().err


def test_authenticator_failure_message_is_the_documented_one(tmp_path: Any, wallet: Wallet) -> None:
    auth = authenticator(tmp_path)
    token = jwt(wallet, jti="direct")
    revoke(auth._store(), ref_from_token(token, 4096))
    auth.revocations.forget()
    with pytest.raises(AuthFailure) as failure:
        auth.authenticate(token)
    assert (failure.value.status, failure.value.message) == (401, REVOKED)
