"""Self-signed Web3 JWTs: compact JWS with `SOL_EDDSA` (Ed25519) or `EIP191K` (EIP-191 secp256k1), verified statelessly.

The verify key is the address in `iss` (CAIP-10), so there is no key registry.
Signatures are checked over the exact received `header.payload` bytes; JSON
is never re-serialized. Public error messages stay coarse on purpose.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

from .caip10 import ALG_FOR_NAMESPACE, Caip10, CaipError, parse_caip10
from .crypto import Wallet, b64url, ed25519_verify, eip191_recover
from .globs import valid_patterns
from .window import BudgetWindow, parse_window, valid_budget

ALGORITHMS = frozenset(ALG_FOR_NAMESPACE.values())
SCOPES = ("api", "admin")
BUDGET_SCOPES = ("session", "account")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: `$` would allow a final newline

MALFORMED = "The bearer token is malformed."
BAD_SIGNATURE = "The bearer token's signature is not valid for its issuer."


class TokenError(Exception):
    """A token was refused; `message` is safe to show the client."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class TokenClaims:
    issuer: Caip10
    alg: str
    scope: str = "api"
    models: Optional[Tuple[str, ...]] = None  # None: no claim (every model); (): an explicit empty list (none)
    budget: Optional[int] = None
    budget_scope: str = "account"
    budget_window: Optional[BudgetWindow] = None
    jti: Optional[str] = None
    iat: Optional[float] = None
    nbf: Optional[float] = None
    exp: Optional[float] = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifierSettings:
    leeway_seconds: float = 30.0
    max_token_bytes: int = 4096
    require_exp: bool = False
    allowed_issuers: FrozenSet[str] = frozenset()  # normalized CAIP-10 strings
    allowed_chains: FrozenSet[str] = frozenset()  # CAIP-2 ids or bare namespaces
    # Issuers whose tokens may carry scope admin. Any wallet can sign a token claiming it, so the
    # claim counts only for an issuer the operator named here (normalized CAIP-10 strings).
    admin_issuers: FrozenSet[str] = frozenset()
    # `auth.audience`: a token must name one of these in `aud`, so a token a wallet minted for another
    # service using the same format cannot be replayed here. Empty: `aud` is not checked.
    audience: FrozenSet[str] = frozenset()


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding; rejects padding, stray characters and non-canonical tails."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url(raw) != segment:  # unused low bits set: a second spelling of the same bytes
        raise ValueError("not canonical base64url")
    return raw


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in pairs:
        if k in out:  # two parsers could disagree on which one wins
            raise ValueError("duplicate key")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity


def _json_object(raw: bytes) -> Dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenError(MALFORMED) from None
    if not isinstance(value, dict):
        raise TokenError(MALFORMED)
    return value


def _number(claims: Mapping[str, Any], name: str) -> Optional[float]:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 1e13:
        raise TokenError(f"The token's {name} claim must be a number of seconds.")
    return float(value)


def verify_token(token: str, settings: VerifierSettings, now: Optional[float] = None) -> TokenClaims:
    """Verify a compact JWS and return its claims; raises TokenError (401, or 403 for a refused issuer)."""
    claims, issuer, alg = _signed_claims(token, settings.max_token_bytes)
    # Only signed claims from here on: their errors may be specific.
    now = time.time() if now is None else now
    leeway = settings.leeway_seconds
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    if exp is not None and now >= exp + leeway:
        raise TokenError("The bearer token has expired.")
    if nbf is not None and now < nbf - leeway:
        raise TokenError("The bearer token is not valid yet.")
    if iat is not None and iat > now + leeway:
        raise TokenError("The bearer token was issued in the future; check the clock.")
    _check_audience(claims, settings.audience)
    if settings.allowed_issuers and str(issuer) not in settings.allowed_issuers:
        raise TokenError("The token's issuer is not allowed on this gateway.", status=403)
    if settings.allowed_chains and not (issuer.chain in settings.allowed_chains
                                        or issuer.namespace in settings.allowed_chains):
        raise TokenError("The token's chain is not allowed on this gateway.", status=403)
    parsed = _claims(claims, issuer, alg, iat, nbf, exp)
    if parsed.scope == "admin" and str(issuer) not in settings.admin_issuers:
        raise TokenError("The token's issuer may not hold admin scope on this gateway (auth.admin_issuers).",
                         status=403)
    if exp is None and (settings.require_exp or parsed.scope == "admin"):
        raise TokenError("The bearer token must have an exp claim" + (" (admin scope)." if parsed.scope == "admin" else "."))
    return parsed


def read_signed_token(token: str, max_token_bytes: int, audience: FrozenSet[str] = frozenset()) -> TokenClaims:
    """The claims of a token whose signature is valid for its issuer and that is for this gateway's audience,
    whatever its times or issuer policy.

    For naming a token to revoke: an expired, not-yet-valid or exp-less token
    still names the same session; a forged one, or one minted for another
    service (`auth.audience`), names nothing here.
    """
    claims, issuer, alg = _signed_claims(token, max_token_bytes)
    _check_audience(claims, audience)
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    return _claims(claims, issuer, alg, iat, nbf, exp)


def _signed_claims(token: str, max_token_bytes: int) -> Tuple[Dict[str, Any], Caip10, str]:
    """(claims, issuer, alg) of a well-formed token whose signature is valid; else TokenError."""
    if len(token) > max_token_bytes:
        raise TokenError("The bearer token is too large.")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenError(MALFORMED)
    header_b64, payload_b64, sig_b64 = segments
    try:
        header_raw, payload_raw, signature = (b64url_decode(s) for s in segments)
    except ValueError:
        raise TokenError(MALFORMED) from None
    header = _json_object(header_raw)
    claims = _json_object(payload_raw)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:  # `none`, HS256, RS256, a list ... are never accepted
        raise TokenError("The token's algorithm is not accepted (use SOL_EDDSA or EIP191K).")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT" or "crit" in header:
        raise TokenError(MALFORMED)
    try:
        issuer = parse_caip10(claims.get("iss"))
    except CaipError as exc:
        raise TokenError(f"The token's iss claim is not accepted: {exc}.") from None
    if ALG_FOR_NAMESPACE[issuer.namespace] != alg:  # no alg confusion across key types
        raise TokenError("The token's algorithm does not match its issuer's chain.")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    if alg == "SOL_EDDSA":
        import base58

        ok = ed25519_verify(base58.b58decode(issuer.address), signing_input, signature)
    else:
        try:
            ok = eip191_recover(signing_input, signature) == issuer.address
        except Exception:  # malformed, high-s, or not recoverable: all just "invalid"
            ok = False
    if not ok:
        raise TokenError(BAD_SIGNATURE)
    return claims, issuer, alg


def _check_audience(claims: Mapping[str, Any], accepted: FrozenSet[str]) -> None:
    """RFC 7519 4.1.3: `aud` is a string or a list of strings, and must contain one of `accepted` (when set).

    Compared exactly (no case folding, no URL normalization), as the RFC says.
    """
    if not accepted:
        return
    aud = claims.get("aud")
    if aud is None:
        raise TokenError("The bearer token has no aud claim; this gateway accepts only tokens minted for its "
                         "audience (auth.audience).")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TokenError("The token's aud claim must be a string or a list of strings.")
    if accepted.isdisjoint(values):
        raise TokenError("The bearer token was minted for another audience: its aud claim names none this "
                         "gateway accepts (auth.audience).")


def _claims(claims: Mapping[str, Any], issuer: Caip10, alg: str, iat: Optional[float], nbf: Optional[float],
            exp: Optional[float]) -> TokenClaims:
    scope = claims.get("scope", "api")
    if scope not in SCOPES:
        raise TokenError("The token's scope claim must be 'api' or 'admin'.")
    models = claims.get("models") if "models" in claims else None  # `"models": null` is refused, not "absent"
    if "models" in claims and (not isinstance(models, list) or len(models) > 256 or not valid_patterns(models)):
        raise TokenError("The token's models claim must be a list of model-name patterns.")
    budget = claims.get("budget")
    if budget is not None and not valid_budget(budget):
        raise TokenError("The token's budget claim must be a non-negative integer of micro-USD.")
    budget_scope = claims.get("budget_scope", "account")
    if budget_scope not in BUDGET_SCOPES:
        raise TokenError("The token's budget_scope claim must be 'session' or 'account'.")
    try:
        window = parse_window(claims.get("budget_window"))
    except ValueError as exc:
        raise TokenError(f"The token's {exc}.") from None
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or not 0 < len(jti) <= 128):
        raise TokenError("The token's jti claim must be a short string.")
    return TokenClaims(issuer=issuer, alg=alg, scope=scope,
                       models=None if models is None else tuple(models), budget=budget,
                       budget_scope=budget_scope, budget_window=window, jti=jti, iat=iat, nbf=nbf, exp=exp,
                       raw=dict(claims))


def mint_token(wallet: Wallet, iss: str, claims: Mapping[str, Any], header_extra: Optional[Mapping[str, Any]] = None,
               now: Optional[Callable[[], float]] = None) -> str:
    """Sign `claims` (plus `iss`, and `iat` unless given) with the wallet key matching `iss`'s namespace."""
    issuer = parse_caip10(iss)
    alg = ALG_FOR_NAMESPACE[issuer.namespace]
    expected = wallet.solana_address if issuer.namespace == "solana" else wallet.evm_address
    if issuer.address != expected:
        raise ValueError(f"{iss} is not an address of this key (it has {expected})")
    body = {"iss": iss, "iat": int((now or time.time)())}
    body.update(claims)
    header = {"alg": alg, "typ": "JWT"}
    header.update(header_extra or {})
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(body, separators=(",", ":")).encode()))
    message = signing_input.encode("ascii")
    signature = wallet.sign_ed25519(message) if alg == "SOL_EDDSA" else wallet.sign_eip191(message)
    return signing_input + "." + b64url(signature)
