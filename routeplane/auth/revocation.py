"""JWT revocation: which session a token names, the operator's revoke actions, and each worker's bounded cache.

A token is named the way the authenticator names its session: the account
(from `iss`) and the `jti`, or, without a jti, the hash of the signed
`header.payload`. Namespacing by account is what keeps another wallet that
reuses a jti from touching this token. The store is the only shared state, so
a revocation reaches every worker and host of that store; each worker keeps
its verdicts for at most `auth.revocation.cache_seconds`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple, Union

from .caip10 import CaipError, parse_caip10
from .jwt import TokenError, read_signed_token
from .store import AuthStore, RevokedToken

REVOKED_MESSAGE = "This token has been revoked."
_CUTOFF = "The cut-off is 'now' or a unix time in seconds."
_ACCOUNT = re.compile(r"acct_[0-9a-f]{32}")  # fullmatch: `$` allows a final newline


def token_id_for(token: str, jti: Optional[str]) -> str:
    """The token's own id: its jti, or a hash of the signed header.payload.

    The signature has more than one encoding (v 27/28 or 0/1), which must not
    name a new token: only what was signed counts.
    """
    return jti or hashlib.sha256(token.rsplit(".", 1)[0].encode("ascii")).hexdigest()


def session_id_for(account_id: str, token_id: str) -> str:
    # Namespaced by account: another caller reusing a jti cannot touch this session (its budget, its revocation).
    return "ses_" + hashlib.sha256(f"{account_id}\n{token_id}".encode()).hexdigest()[:32]


class RevocationError(ValueError):
    """An operator's revoke request that cannot be carried out; the message is safe to show (never the token)."""


@dataclass(frozen=True)
class TokenRef:
    """What a revocation names: the session of one token of one account."""

    account_id: str
    session_id: str
    jti: Optional[str] = None
    expires_at: Optional[float] = None


def account_for(account: Optional[str] = None, iss: Optional[str] = None) -> str:
    """The JWT account id from `acct_…` or from a CAIP-10 issuer (any chain of its namespace)."""
    if (account is None) == (iss is None):
        raise RevocationError("Name the account with exactly one of account (acct_…) or iss (a CAIP-10 id).")
    if iss is not None:
        try:
            return parse_caip10(iss).account_id
        except CaipError as exc:
            raise RevocationError(f"The iss is not accepted: {exc}.") from None
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise RevocationError("A JWT account id is acct_ and 32 lower-case hex digits (`routeplane token show`).")
    return account


def ref_from_jti(account_id: str, jti: Any) -> TokenRef:
    if not isinstance(jti, str) or not 0 < len(jti) <= 128:
        raise RevocationError("A jti is a string of 1 to 128 characters.")
    return TokenRef(account_id, session_id_for(account_id, jti), jti)


def ref_from_token(token: str, max_token_bytes: int, audience: FrozenSet[str] = frozenset()) -> TokenRef:
    """The session a token names, derived as the authenticator derives it, once its signature holds.

    A forged token names nothing (its claims are whatever the forger wrote), nor
    does one minted for another audience than this gateway's (`auth.audience`,
    as the authenticator checks it); an expired or exp-less one still names its session.
    """
    token = token.strip()
    try:
        claims = read_signed_token(token, max_token_bytes, audience)
    except TokenError as exc:
        raise RevocationError(f"This token cannot be revoked: {exc.message}") from None
    account_id = claims.issuer.account_id
    return TokenRef(account_id, session_id_for(account_id, token_id_for(token, claims.jti)), claims.jti, claims.exp)


def cutoff_time(value: Union[str, int, float], now: float) -> float:
    """`now` or unix seconds, never in the future: a typo in milliseconds must not lock an account out for ever."""
    if value == "now":
        return now
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RevocationError(_CUTOFF) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise RevocationError(_CUTOFF)
    if value > now:
        raise RevocationError("The cut-off is in the future (a unix time in seconds, not milliseconds?).")
    return float(value)


def revoke(store: AuthStore, ref: TokenRef, now: Optional[float] = None) -> bool:
    """Revoke one token's session; False if it already was.

    A jti names every token of the account that carries it, whatever each one's exp, so its row is
    kept for good; a token without one names only itself, and its row may go a day after its exp.
    """
    when = time.time() if now is None else now
    expires_at = None if ref.jti is not None else ref.expires_at
    return store.revoke_token(RevokedToken(ref.session_id, ref.account_id, ref.jti, expires_at, when))


class RevocationCache:
    """Per-worker snapshot of every revoked session and account cut-off, trusted for at most `max_age` seconds.

    One refresh per `max_age` per worker, whatever the traffic: a client that
    mints a fresh token for every request costs a set lookup, not a query. So a
    revocation written by any process reaches this worker within `max_age`
    (0: every request asks the store about its own token). Store errors
    propagate and are never kept; the caller decides between 503 and admitting.
    """

    def __init__(self, store: Any, max_age: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._store = store  # StoreHandle: `.available`, and called for the AuthStore
        self.max_age = max_age
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._floor = float("-inf")  # a snapshot read before the last forget() is not kept
        self._snapshot: Optional[Tuple[float, FrozenSet[str], Dict[str, float]]] = None

    def refused(self, account_id: str, session_id: str, iat: Optional[float], leeway: float = 0.0) -> bool:
        """True if the session is revoked, or the account's cut-off is after the token's iat (or it has none).

        `leeway`: the iat a clock that far ahead may give a token minted before the cut-off, which a
        "log out every session" must still refuse (so a token minted within it after the cut-off is too).
        """
        if not getattr(self._store, "available", True):
            return False  # no database: nothing can have been revoked
        if self.max_age > 0:
            _, sessions, cutoffs = self._current()
            revoked, not_before = session_id in sessions, cutoffs.get(account_id)
        else:
            revoked_at, not_before = self._store().revocation_state(session_id, account_id)
            revoked = revoked_at is not None
        if revoked:
            return True
        return not_before is not None and (iat is None or iat - leeway < not_before)

    def _current(self) -> Tuple[float, FrozenSet[str], Dict[str, float]]:
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - snapshot[0] < self.max_age:
            return snapshot
        with self._lock:  # one refresh at a time; the others wait for it rather than query too
            snapshot = self._snapshot
            asked = self._clock()
            if snapshot is not None and asked - snapshot[0] < self.max_age:
                return snapshot
            sessions, cutoffs = self._store().revocation_snapshot(self._wall())
            fresh = (asked, frozenset(sessions), dict(cutoffs))
            if asked >= self._floor:
                self._snapshot = fresh
            return fresh

    def forget(self, session_id: Optional[str] = None) -> None:
        """Drop the snapshot: this worker sees its own revocation at once (the argument is kept for callers
        that name what they revoked)."""
        self._floor = self._clock()
        self._snapshot = None
