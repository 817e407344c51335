"""Web3 JWT verification (SOL_EDDSA / EIP191K) with real Ed25519 and secp256k1 keys, and the model glob matcher."""

from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeplane.auth.caip10 import BASE_MAINNET, SOLANA_MAINNET, eip55, parse_caip10
from routeplane.auth.crypto import SECP256K1_N, Wallet, b64url, eip191_digest, eip191_recover
from routeplane.auth.globs import glob_match, model_allowed
from routeplane.auth.jwt import BAD_SIGNATURE, MALFORMED, TokenError, VerifierSettings, mint_token, verify_token

NOW = 1_800_000_000.0
SOL_REF = SOLANA_MAINNET.split(":")[1]
SEED = bytes(range(1, 33))


@pytest.fixture(scope="module")
def wallet() -> Wallet:
    return Wallet(SEED)


@pytest.fixture(scope="module")
def other() -> Wallet:
    return Wallet(bytes(range(40, 72)))


def sol_iss(w: Wallet) -> str:
    return f"{SOLANA_MAINNET}:{w.solana_address}"


def evm_iss(w: Wallet) -> str:
    return f"{BASE_MAINNET}:{w.evm_address}"


def mint(w: Wallet, iss: str, **claims) -> str:
    claims.setdefault("exp", NOW + 3600)
    return mint_token(w, iss, claims, now=lambda: NOW)


def verify(token: str, **kw) -> object:
    return verify_token(token, VerifierSettings(**kw), now=NOW)


def reject(token: str, status: int = 401, match: str = "", **kw) -> TokenError:
    with pytest.raises(TokenError) as info:
        verify(token, **kw)
    assert info.value.status == status
    assert match in info.value.message
    return info.value


def resign(w: Wallet, header: dict, payload: dict, alg: str) -> str:
    """Sign arbitrary header/payload bytes (to build hostile tokens with valid signatures)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    msg = signing_input.encode()
    sig = w.sign_ed25519(msg) if alg == "ed25519" else w.sign_eip191(msg)
    return signing_input + "." + b64url(sig)


# --- accepted ----------------------------------------------------------------


@pytest.mark.parametrize("chain", ["solana", "evm"])
def test_tokens_from_one_seed_verify_on_both_chains(wallet: Wallet, chain: str) -> None:
    iss = sol_iss(wallet) if chain == "solana" else evm_iss(wallet)
    token = mint(wallet, iss, scope="api", models=["openai/*"], budget=5000, budget_scope="session",
                 budget_window={"rounds": 3}, jti="t-1")
    claims = verify(token)
    assert claims.alg == ("SOL_EDDSA" if chain == "solana" else "EIP191K")
    assert str(claims.issuer) == iss.lower() if chain == "evm" else str(claims.issuer) == iss
    assert (claims.scope, claims.models, claims.budget, claims.budget_scope) == ("api", ("openai/*",), 5000, "session")
    assert claims.budget_window.rounds == 3 and claims.jti == "t-1"


def test_eip191_matches_the_eth_account_reference_vector() -> None:
    # eth-account docs: Account.sign_message(encode_defunct(text="I♥SF"), key) with this key.
    key = bytes.fromhex("b25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364")
    sig = bytes.fromhex("e6ca9bba58c88611fad66a6ce8f996908195593807c4b38bd528d2cff09d4eb3"
                        "3e5bfbbf4d3e39b1a2fd816a7680c19ebebaf3a141b239934ad43cb33fcec8ce1c")
    msg = "I♥SF".encode()
    assert eip191_digest(msg).hex() == "1476abb745d423bf09273f1afd887d951181d25adc66c4834a70491911b7f750"
    assert eip191_recover(msg, sig) == "0x5ce9454909639d2d17a3f753ce7d93fa0b9ab12e"
    assert Wallet(key).sign_eip191(msg) == sig


def test_evm_issuer_case_is_normalized_and_chain_does_not_split_the_account(wallet: Wallet) -> None:
    checksummed = f"{BASE_MAINNET}:{eip55(wallet.evm_address)}"
    assert checksummed != evm_iss(wallet)
    a = verify(mint(wallet, checksummed))
    b = verify(mint(wallet, f"eip155:1:{wallet.evm_address}"))
    assert a.issuer.address == wallet.evm_address
    assert a.issuer.account_id == b.issuer.account_id
    assert parse_caip10(sol_iss(wallet)).account_id != a.issuer.account_id


def test_v_as_recovery_id_zero_or_one_is_accepted(wallet: Wallet) -> None:
    header, payload = {"alg": "EIP191K", "typ": "JWT"}, {"iss": evm_iss(wallet), "exp": NOW + 60}
    token = resign(wallet, header, payload, "evm")
    h, p, s = token.split(".")
    sig = base64.urlsafe_b64decode(s + "==")
    alt = h + "." + p + "." + b64url(sig[:64] + bytes([sig[64] - 27]))
    assert verify(alt).issuer.address == wallet.evm_address


def test_leeway_accepts_small_clock_skew(wallet: Wallet) -> None:
    token = mint(wallet, sol_iss(wallet), exp=NOW - 5, nbf=NOW + 5)
    assert verify(token, leeway_seconds=10).scope == "api"
    reject(token, leeway_seconds=0, match="expired")


# --- rejected ----------------------------------------------------------------


@pytest.mark.parametrize("chain", ["solana", "evm"])
def test_forged_signature_is_401(wallet: Wallet, chain: str) -> None:
    token = mint(wallet, sol_iss(wallet) if chain == "solana" else evm_iss(wallet))
    h, p, s = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[5] ^= 0x01
    reject(f"{h}.{p}.{b64url(bytes(sig))}", match=BAD_SIGNATURE)


@pytest.mark.parametrize("chain", ["solana", "evm"])
def test_tampered_payload_is_401(wallet: Wallet, chain: str) -> None:
    token = mint(wallet, sol_iss(wallet) if chain == "solana" else evm_iss(wallet), budget=10)
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    claims["budget"] = 10 ** 9
    reject(f"{h}.{b64url(json.dumps(claims).encode())}.{s}", match=BAD_SIGNATURE)


@pytest.mark.parametrize("chain", ["solana", "evm"])
def test_signature_by_another_key_for_this_address_is_401(wallet: Wallet, other: Wallet, chain: str) -> None:
    if chain == "solana":
        token = resign(other, {"alg": "SOL_EDDSA"}, {"iss": sol_iss(wallet), "exp": NOW + 60}, "ed25519")
    else:
        token = resign(other, {"alg": "EIP191K"}, {"iss": evm_iss(wallet), "exp": NOW + 60}, "evm")
    err = reject(token)
    assert err.message == BAD_SIGNATURE  # same answer as a forged signature: nothing to probe


def test_alg_none_and_standard_algs_are_refused(wallet: Wallet) -> None:
    payload = b64url(json.dumps({"iss": sol_iss(wallet), "exp": NOW + 60}).encode())
    for alg in ("none", "None", "HS256", "RS256", "EdDSA", "ES256K"):
        header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        reject(f"{header}.{payload}.{b64url(b'x' * 64)}", match="algorithm")
    header = b64url(json.dumps({"alg": "none"}).encode())
    reject(f"{header}.{payload}.", match=MALFORMED)  # empty signature segment
    reject(f"{header}.{payload}", match=MALFORMED)


def test_alg_must_match_the_issuer_namespace(wallet: Wallet) -> None:
    # Correctly signed for the key, but the header names the other chain's algorithm.
    t1 = resign(wallet, {"alg": "SOL_EDDSA"}, {"iss": evm_iss(wallet), "exp": NOW + 60}, "ed25519")
    t2 = resign(wallet, {"alg": "EIP191K"}, {"iss": sol_iss(wallet), "exp": NOW + 60}, "evm")
    reject(t1, match="does not match")
    reject(t2, match="does not match")


def test_expired_and_not_yet_valid_and_future_iat(wallet: Wallet) -> None:
    reject(mint(wallet, sol_iss(wallet), exp=NOW - 31), match="expired")
    reject(mint(wallet, evm_iss(wallet), exp=NOW - 31), match="expired")
    reject(mint(wallet, sol_iss(wallet), nbf=NOW + 31), match="not valid yet")
    reject(mint(wallet, evm_iss(wallet), iat=NOW + 600), match="future")
    reject(mint(wallet, sol_iss(wallet), exp="tomorrow"), match="exp")
    reject(mint(wallet, sol_iss(wallet), exp=True), match="exp")


def test_malformed_base64_and_json_are_401_without_detail(wallet: Wallet) -> None:
    token = mint(wallet, sol_iss(wallet))
    h, p, s = token.split(".")
    dup, not_utf8, nan = b'{"iss": "a", "iss": "b"}', b"\xff\xfe", b'{"exp": NaN}'
    bad = [
        f"{h}=.{p}.{s}",  # padding
        f"{h}.{p[:-1]}*.{s}",  # stray character
        f"{h}.{p}.{s}.{s}",  # four segments
        f"{h[:-1]}.{p}.{s}",  # truncated
        "not-a-token",
        f"{b64url(b'not json')}.{p}.{s}",
        f"{h}.{b64url(b'[1, 2]')}.{s}",
        f"{h}.{b64url(json.dumps({'iss': 1}).encode()[:-1])}.{s}",
        f"{h}.{b64url(dup)}.{s}",  # duplicate keys
        f"{h}.{b64url(not_utf8)}.{s}",
        f"{h}.{b64url(nan)}.{s}",
    ]
    for t in bad:
        err = reject(t)
        assert err.message == MALFORMED, t


def test_non_canonical_base64_tail_is_refused(wallet: Wallet) -> None:
    token = mint(wallet, sol_iss(wallet))
    h, p, s = token.split(".")
    # The 64-byte signature encodes to 86 chars: the last char carries 2 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(s[-1])
    twin = s[:-1] + alphabet[last | 1] if last & 3 == 0 else s[:-1] + alphabet[last & ~3]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(s + "==")
    reject(f"{h}.{p}.{twin}", match=MALFORMED)


def test_oversized_token_is_refused_before_parsing(wallet: Wallet) -> None:
    token = mint(wallet, sol_iss(wallet), pad="x" * 5000)
    reject(token, match="too large")
    assert verify(token, max_token_bytes=16384).scope == "api"


def test_high_s_signature_is_refused(wallet: Wallet) -> None:
    token = mint(wallet, evm_iss(wallet))
    h, p, s = token.split(".")
    sig = base64.urlsafe_b64decode(s + "==")
    r, low_s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    high = (SECP256K1_N - low_s).to_bytes(32, "big")
    flipped = r + high + bytes([55 - v])  # the same signature's malleable twin (v 27 <-> 28)
    assert eip191_recover(f"{h}.{p}".encode(), sig) == wallet.evm_address
    reject(f"{h}.{p}.{b64url(flipped)}", match=BAD_SIGNATURE)


def test_bad_issuers_are_refused(wallet: Wallet) -> None:
    for iss in ("did:key:z6Mk", f"cosmos:hub:{wallet.evm_address}", f"eip155:8453:{wallet.evm_address[:-2]}",
                f"eip155:x:{wallet.evm_address}", f"solana:{SOL_REF}:0OIl", 42):
        token = resign(wallet, {"alg": "EIP191K"}, {"iss": iss, "exp": NOW + 60}, "evm")
        reject(token, match="iss")


def test_issuer_and_chain_allowlists_are_403(wallet: Wallet, other: Wallet) -> None:
    mine, theirs = mint(wallet, evm_iss(wallet)), mint(other, evm_iss(other))
    allowed = frozenset({evm_iss(wallet)})
    assert verify(mine, allowed_issuers=allowed)
    reject(theirs, 403, "issuer", allowed_issuers=allowed)
    assert verify(mine, allowed_chains=frozenset({"eip155"}))
    assert verify(mine, allowed_chains=frozenset({BASE_MAINNET}))
    reject(mine, 403, "chain", allowed_chains=frozenset({"eip155:1"}))
    reject(mint(wallet, sol_iss(wallet)), 403, "chain", allowed_chains=frozenset({"eip155"}))


def test_admin_tokens_must_expire_and_require_exp_applies_to_all(wallet: Wallet) -> None:
    forever = mint_token(wallet, sol_iss(wallet), {"scope": "admin"}, now=lambda: NOW)
    reject(forever, match="exp", admin_issuers=frozenset({sol_iss(wallet)}))
    api_forever = mint_token(wallet, sol_iss(wallet), {"scope": "api"}, now=lambda: NOW)
    assert verify(api_forever).exp is None
    reject(api_forever, require_exp=True, match="exp")


def test_admin_scope_counts_only_for_an_issuer_the_operator_named(wallet: Wallet) -> None:
    """Any wallet can sign a token that claims scope admin: before, every such token was an admin
    of the gateway (every account's spend and requests on /admin/*)."""
    admin = mint_token(wallet, sol_iss(wallet), {"scope": "admin", "exp": NOW + 60}, now=lambda: NOW)
    reject(admin, 403, "admin scope")
    reject(admin, 403, "admin scope", admin_issuers=frozenset({"eip155:1:0x" + "ab" * 20}))
    reject(admin, 403, "admin scope", allowed_issuers=frozenset({sol_iss(wallet)}))  # allowed is not admin
    assert verify(admin, admin_issuers=frozenset({sol_iss(wallet)})).scope == "admin"
    api = mint_token(wallet, sol_iss(wallet), {"scope": "api"}, now=lambda: NOW)
    assert verify(api).scope == "api"


@pytest.mark.parametrize("claims, word", [
    ({"scope": "root"}, "scope"),
    ({"models": "gpt-4"}, "models"),
    ({"models": [""]}, "models"),
    ({"budget": -1}, "budget"),
    ({"budget": 1.5}, "budget"),
    ({"budget": True}, "budget"),
    ({"budget_scope": "global"}, "budget_scope"),
    ({"budget_window": {"rounds": 0}}, "budget_window"),
    ({"budget_window": {"rounds": 1, "seconds": 2}}, "budget_window"),
    ({"budget_window": {"type": "rounds", "count": 3}}, "budget_window"),
    ({"jti": 7}, "jti"),
])
def test_invalid_signed_claims_are_refused(wallet: Wallet, claims: dict, word: str) -> None:
    reject(mint(wallet, sol_iss(wallet), **claims), match=word)


def test_crit_header_and_wrong_typ_are_refused(wallet: Wallet) -> None:
    for header in ({"alg": "SOL_EDDSA", "crit": ["exp"]}, {"alg": "SOL_EDDSA", "typ": "at+jwt"}):
        reject(resign(wallet, header, {"iss": sol_iss(wallet), "exp": NOW + 60}, "ed25519"), match=MALFORMED)


def test_mint_refuses_an_issuer_that_is_not_the_keys(wallet: Wallet, other: Wallet) -> None:
    with pytest.raises(ValueError):
        mint_token(wallet, evm_iss(other), {})


def test_key_file_round_trip_is_private(tmp_path) -> None:
    path = str(tmp_path / "k.json")
    w = Wallet.generate()
    w.save(path)
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    assert Wallet.load(path).evm_address == w.evm_address
    with pytest.raises(FileExistsError):
        w.save(path)


# --- model globs ---------------------------------------------------------------


@pytest.mark.parametrize("pattern, name, ok", [
    ("gpt-4o", "gpt-4o", True),
    ("gpt-4o", "gpt-4o-mini", False),
    ("gpt-4o", "GPT-4o", False),
    ("openai/*", "openai/gpt-4.1", True),
    ("openai/*", "openai", False),
    ("openai/*", "openai-evil/gpt", False),
    ("anthropic/claude-*", "anthropic/claude", False),
    ("anthropic/claude-*", "anthropic/claude-sonnet-4-5", True),
    ("*-mini", "gpt-4o-mini", True),
    ("*-mini", "gpt-4o-mini-2", False),
    ("gpt-?", "gpt-4", False),  # ? is literal
    ("gpt-?", "gpt-?", True),
    ("gpt-[45]", "gpt-4", False),  # [] is literal
    ("gpt-[45]", "gpt-[45]", True),
    ("a*b*c", "abc", True),
    ("a*b*c", "aXbYc", True),
    ("a*b*c", "acb", False),
    ("ab*ba", "aba", False),  # prefix and suffix may not overlap
    ("a**b", "ab", True),
    ("*", "", True),
    ("mock-*", "default", False),
])
def test_glob_match(pattern: str, name: str, ok: bool) -> None:
    assert glob_match(pattern, name) is ok


def test_no_allowlist_allows_everything_an_empty_one_nothing() -> None:
    assert model_allowed(None, "x") and not model_allowed((), "anything")  # explicit [] fails closed
    assert not model_allowed(("a",), "b")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab*?[]", max_size=8), st.text(alphabet="ab?[]", max_size=8))
def test_glob_match_agrees_with_a_regex_reference(pattern: str, name: str) -> None:
    reference = re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), name, re.S) is not None
    assert glob_match(pattern, name) is reference


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_mutation_is_refused_or_means_the_same_never_a_crash(data: st.DataObject) -> None:
    w = Wallet(SEED)
    token = mint(w, data.draw(st.sampled_from([sol_iss(w), evm_iss(w)])), models=["a*"], budget=5)
    chars = list(token)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(chars) - 1))
        op = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        c = data.draw(st.sampled_from("AZaz09-_.=+/ \x00é"))
        if op == "replace":
            chars[i] = c
        elif op == "delete" and len(chars) > 1:
            del chars[i]
        else:
            chars.insert(i, c)
    mutated = "".join(chars)
    try:
        claims = verify(mutated)
    except TokenError as exc:
        assert exc.status == 401
        return
    # Accepted only if it still says exactly what was signed (e.g. v 27 spelled as recovery id 0).
    original = verify(token)
    assert (claims.raw, claims.issuer) == (original.raw, original.issuer)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_strings_are_token_errors(text: str) -> None:
    with pytest.raises(TokenError):
        verify(text)
