"""Credential → Identity: API keys (looked up in the store) and Web3 JWTs (verified, then checked for revocation)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from ..language_model.context import Identity
from .globs import valid_patterns
from .jwt import TokenError, verify_token
from .keys import KeyError_, check_key, looks_like_api_key
from .revocation import REVOKED_MESSAGE, RevocationCache, session_id_for, token_id_for
from .settings import AuthSettings
from .store import AuthStore
from .window import parse_window

log = logging.getLogger("routeplane.auth")


class AuthFailure(Exception):
    """Refused credentials: `status` (401/403/503) and a message safe for the client."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


UNAVAILABLE = "Credentials cannot be checked right now; try again shortly."
# Each wire's own credential header, read before `Authorization: Bearer` (auth.guard.wire_credential).
WIRE_HEADERS = {"anthropic_messages": "x-api-key", "gemini": "x-goog-api-key"}


def missing_credentials(wire: str = "") -> str:
    """The 401 message for a request without a credential, naming the headers its wire reads (docs/auth.md)."""
    own = WIRE_HEADERS.get(wire)
    ways = ([f"'{own}: <credential>'"] if own else []) + ["'Authorization: Bearer <credential>'"]
    if wire == "gemini":
        ways.append("'?key=<credential>'")
    how = ways[0] if len(ways) == 1 else ", ".join(ways[:-1]) + " or " + ways[-1]
    return f"Missing credentials: send an API key or token as {how}."


class Authenticator:
    def __init__(self, settings: AuthSettings, store: Callable[[], AuthStore],
                 clock: Callable[[], float] = time.time, revocations: Optional[RevocationCache] = None) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock
        self.revocations = revocations

    def authenticate(self, credential: Optional[str], wire: str = "") -> Identity:
        """`wire`: the inbound protocol, whose own header a missing credential's message names."""
        if not credential:
            raise AuthFailure(missing_credentials(wire))
        if self.settings.api_keys and looks_like_api_key(credential):
            return self._api_key(credential)
        if self.settings.jwt and credential.count(".") == 2:
            return self._jwt(credential)
        accepted = {"api_keys": "an API key", "jwt": "a Web3 JWT", "api_keys+jwt": "an API key or a Web3 JWT"}
        raise AuthFailure(f"Invalid credentials: this gateway accepts {accepted.get(self.settings.mode, 'none')}.")

    def _api_key(self, key: str) -> Identity:
        try:
            row = check_key(self._store(), key, self._clock())
        except KeyError_ as exc:
            raise AuthFailure(str(exc)) from None
        except Exception:
            # Fail closed: no store, no key check. The key itself is never logged.
            log.exception("the API key store failed")
            raise AuthFailure(UNAVAILABLE, status=503) from None
        return Identity(
            account_id=row.account_id, key_id=row.id, session_id=session_id_for(row.account_id, row.id),
            scope=row.scope, models=row.models, budget_micro_usd=row.budget_micro_usd,
            claims={"key_name": row.name}, kind="api_key", budget_scope=row.budget_scope,
            budget_window=parse_window(row.budget_window), issued_at=row.created_at, expires_at=row.expires_at,
        )

    def _jwt(self, token: str) -> Identity:
        try:
            claims = verify_token(token, self.settings.verifier, self._clock())
        except TokenError as exc:
            raise AuthFailure(exc.message, exc.status) from None
        account_id = claims.issuer.account_id
        # A token without jti is its own session, named by a hash of what was signed (header.payload).
        session_id = session_id_for(account_id, token_id_for(token, claims.jti))
        # `tools`: MCP tool-name patterns (routeplane.mcp), like `models`: absent = every tool, [] = none
        # (and `null` is refused, as for models, rather than read as absent).
        tools = claims.raw.get("tools")
        if "tools" in claims.raw and (not isinstance(tools, list) or len(tools) > 256 or not valid_patterns(tools)):
            raise AuthFailure("The token's tools claim must be a list of tool-name patterns.")
        extra = {"tools": tuple(tools)} if tools is not None else {}
        self._check_revocation(account_id, session_id, claims.iat)  # last: only a token that is otherwise good
        return Identity(
            account_id=account_id, key_id=None, session_id=session_id, scope=claims.scope,
            models=("*",) if claims.models is None else claims.models, budget_micro_usd=claims.budget,
            claims={"iss": str(claims.issuer), "chain": claims.issuer.chain, "alg": claims.alg, "jti": claims.jti,
                    **extra},
            kind="jwt", budget_scope=claims.budget_scope, budget_window=claims.budget_window, issued_at=claims.iat,
            expires_at=claims.exp,
        )

    def _check_revocation(self, account_id: str, session_id: str, iat: Optional[float]) -> None:
        if self.revocations is None:
            return
        try:
            refused = self.revocations.refused(account_id, session_id, iat, self.settings.verifier.leeway_seconds)
        except Exception:
            # The same choice as a budget check the store cannot answer (auth.budget.fail_closed).
            log.exception("the token revocation check failed (session %s)", session_id)
            if self.settings.budget.fail_closed:
                raise AuthFailure(UNAVAILABLE, status=503) from None
            return
        if refused:
            raise AuthFailure(REVOKED_MESSAGE)
