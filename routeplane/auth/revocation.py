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
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple, Union

from .caip10 import CaipError, parse_caip10
from .jwt import TokenError, read_signed_token
from .store import AuthStore, RevokedToken

REVOKED_MESSAGE = "This token has been revoked."
_CUTOFF = "The cut-off is 'now' or a unix time in seconds."
_ACCOUNT = re.compile(r"^acct_[0-9a-f]{32}$")
MAX_CACHED = 10000  # verdicts a worker keeps (least recently used go first): a bound on memory, not on staleness


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
    if not isinstance(account, str) or not _ACCOUNT.match(account):
        raise RevocationError("A JWT account id is acct_ and 32 lower-case hex digits (`routeplane token show`).")
    return account


def ref_from_jti(account_id: str, jti: Any) -> TokenRef:
    if not isinstance(jti, str) or not 0 < len(jti) <= 128:
        raise RevocationError("A jti is a string of 1 to 128 characters.")
    return TokenRef(account_id, session_id_for(account_id, jti), jti)


def ref_from_token(token: str, max_token_bytes: int) -> TokenRef:
    """The session a token names, derived as the authenticator derives it, once its signature holds.

    A forged token names nothing (its claims are whatever the forger wrote);
    an expired or exp-less one still names its session.
    """
    token = token.strip()
    try:
        claims = read_signed_token(token, max_token_bytes)
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
    """Revoke one token's session; False if it already was."""
    when = time.time() if now is None else now
    return store.revoke_token(RevokedToken(ref.session_id, ref.account_id, ref.jti, ref.expires_at, when))


class RevocationCache:
    """Per-worker verdicts on (session, account cut-off), each trusted for at most `max_age` seconds.

    So a revocation written by any process reaches this worker within
    `max_age` (0: every request asks the store). Store errors propagate and
    are never cached; the caller decides between 503 and admitting.
    """

    def __init__(self, store: Any, max_age: float, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_CACHED) -> None:
        self._store = store  # StoreHandle: `.available`, and called for the AuthStore
        self.max_age = max_age
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._floor = float("-inf")  # answers to questions asked before the last forget() are not kept
        self._entries: "OrderedDict[str, Tuple[float, Optional[float], Optional[float]]]" = OrderedDict()

    def refused(self, account_id: str, session_id: str, iat: Optional[float]) -> bool:
        """True if the session is revoked, or the account's cut-off is after the token's iat (or it has none)."""
        if not getattr(self._store, "available", True):
            return False  # no database: nothing can have been revoked
        revoked_at, not_before = self._state(account_id, session_id)
        if revoked_at is not None:
            return True
        return not_before is not None and (iat is None or iat < not_before)

    def _state(self, account_id: str, session_id: str) -> Tuple[Optional[float], Optional[float]]:
        now = self._clock()
        if self.max_age > 0:
            with self._lock:
                entry = self._entries.get(session_id)
                if entry is not None and now - entry[0] < self.max_age:
                    self._entries.move_to_end(session_id)
                    return entry[1], entry[2]
        state = self._store().revocation_state(session_id, account_id)
        if self.max_age > 0:
            with self._lock:
                # Stamped with the time the question was asked, not answered: the answer is at least that
                # fresh. A slower, older answer never replaces a newer one another thread stored meanwhile.
                current = self._entries.get(session_id)
                if now >= self._floor and (current is None or current[0] <= now):
                    self._entries[session_id] = (now, state[0], state[1])
                    self._entries.move_to_end(session_id)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return state

    def forget(self, session_id: Optional[str] = None) -> None:
        """Drop one verdict (or all): this worker sees its own revocation at once."""
        with self._lock:
            self._floor = self._clock()
            if session_id is None:
                self._entries.clear()
            else:
                self._entries.pop(session_id, None)
