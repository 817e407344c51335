"""`/admin/token-revocations`: list and revoke JWTs over HTTP (admin scope), mounted by the auth plugin.

Who may revoke what: an admin API key is the operator's (only the operator
creates keys) and acts on any account. An admin JWT (its issuer named in
`auth.admin_issuers`) acts on its own account only: a wallet the operator
trusts with admin scope still cannot revoke, or list, someone else's tokens.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, Optional

from flask import Blueprint, Response, g, jsonify, request

from ..errors import Forbidden, InvalidRequest, RouteplaneError
from ..language_model.context import Identity
from .guard import require_admin
from .revocation import RevocationError, account_for, cutoff_time, ref_from_jti, ref_from_token, revoke

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App
    from .plugin import AuthPlugin

log = logging.getLogger("routeplane.auth")

PATH = "/admin/token-revocations"
MAX_LIMIT = 10000


def make_blueprint(app: "App") -> Blueprint:
    from .plugin import AuthPlugin

    bp = Blueprint("routeplane_token_revocations", __name__)
    plugin = next(p for p in app.plugins if isinstance(p, AuthPlugin))

    @bp.get(PATH)
    @require_admin(app)
    def list_revocations() -> Response:
        """Revoked tokens and account cut-offs; `?account=` or `?iss=` narrows, `?limit=` caps (default 1000)."""
        try:
            args = request.args
            identity = g.routeplane_identity
            account = _account(identity, args) if "account" in args or "iss" in args else None
            account = _scope(identity, account)
            limit = _limit(args.get("limit", "1000"))
            tokens, cutoffs = _stored(plugin).list_revocations(account, limit)
        except RouteplaneError as err:
            return _error(err)
        except Exception:
            return _error(_unavailable(plugin))
        return jsonify({"tokens": [t.to_json() for t in tokens], "accounts": [c.to_json() for c in cutoffs],
                        "cache_seconds": plugin.settings.revocation.cache_seconds})

    @bp.post(PATH)
    @require_admin(app)
    def revoke_tokens() -> Response:
        """`{"token": …}`, `{"jti": …, "account"|"iss": …}` or `{"all_before": "now"|unix, "account"|"iss": …}`."""
        from ..web.common import read_json_body

        try:
            body = read_json_body(app.config.server.max_body_bytes)
            return jsonify(_revoke(plugin, g.routeplane_identity, body))
        except RouteplaneError as err:
            return _error(err)
        except Exception:
            return _error(_unavailable(plugin))

    return bp


def _revoke(plugin: "AuthPlugin", identity: Identity, body: Any) -> Dict[str, Any]:
    kinds = [k for k in ("token", "jti", "all_before") if isinstance(body, dict) and k in body]
    if len(kinds) != 1:
        raise InvalidRequest("Send exactly one of token, jti (with account or iss) or all_before (with account or "
                             "iss).", param="token")
    kind = kinds[0]
    store = _stored(plugin)
    now = time.time()
    cache_seconds = plugin.settings.revocation.cache_seconds
    if kind == "all_before":
        account = _account(identity, body)
        _scope(identity, account)
        try:
            not_before = cutoff_time(body["all_before"], now)
        except RevocationError as exc:
            raise InvalidRequest(str(exc), param="all_before") from None
        in_force = store.revoke_before(account, not_before, now)
        plugin.revocations.forget()
        return {"account_id": account, "not_before": in_force, "cache_seconds": cache_seconds}
    if kind == "token":
        if not isinstance(body["token"], str):
            raise InvalidRequest("token must be a string.", param="token")
        try:
            verifier = plugin.settings.verifier
            ref = ref_from_token(body["token"], verifier.max_token_bytes, verifier.audience)
        except RevocationError as exc:  # the message never holds the token
            raise InvalidRequest(str(exc), param="token") from None
    else:
        try:
            ref = ref_from_jti(_account(identity, body), body["jti"])
        except RevocationError as exc:
            raise InvalidRequest(str(exc), param="jti") from None
    _scope(identity, ref.account_id)
    added = revoke(store, ref, now)
    plugin.revocations.forget(ref.session_id)
    return {"account_id": ref.account_id, "session_id": ref.session_id, "jti": ref.jti,
            "already_revoked": not added, "cache_seconds": cache_seconds}


def _limit(text: str) -> int:
    """`?limit=` as 1..MAX_LIMIT, else a 400. The length is checked before int(): past 4300 digits int() raises
    ValueError, which the view's catch-all would report as a store outage (503)."""
    digits = text.lstrip("0") or "0"  # leading zeros count towards int()'s limit too
    if not (text.isascii() and text.isdigit()) or len(digits) > len(str(MAX_LIMIT)) \
            or not 1 <= int(digits) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}.", param="limit")
    return int(digits)


def _account(identity: Identity, where: Any) -> str:
    """The account named by `account` or `iss`; an admin token that names none means its own."""
    account, iss = where.get("account"), where.get("iss")
    if account is None and iss is None and identity.kind == "jwt" and identity.account_id:
        return identity.account_id
    try:
        return account_for(account, iss)
    except RevocationError as exc:
        raise InvalidRequest(str(exc), param="account") from None


def _scope(identity: Identity, account: Optional[str]) -> Optional[str]:
    """The account the caller may act on: any (None = all) for the operator, else only the token's own."""
    if identity.kind != "jwt":
        return account
    if account is not None and account != identity.account_id:
        raise Forbidden("An admin token may revoke and list only its own account's tokens; use an admin API key "
                        "for other accounts.", code="not_own_account")
    return identity.account_id


def _stored(plugin: "AuthPlugin") -> Any:
    if not plugin.store.available:
        raise RouteplaneError("Token revocation needs a database (database.url).", status=503, kind="overloaded")
    return plugin.store()


def _unavailable(plugin: "AuthPlugin") -> RouteplaneError:
    log.exception("the token revocation store failed")
    return RouteplaneError("Revocations cannot be read or written right now; try again shortly.", status=503,
                           kind="overloaded")


def _error(err: RouteplaneError) -> Response:
    from ..protocols.openai_chat import CLIENT
    from ..web.common import error_response, request_id

    return error_response(err, CLIENT.error_body, request_id())

