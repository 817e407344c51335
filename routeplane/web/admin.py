"""Admin blueprint (`/admin/*`): every view needs an admin-scoped credential (`require_admin`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, g, jsonify

from ..auth.guard import require_admin

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_admin", __name__)

    @bp.get("/admin/whoami")
    @require_admin(app)
    def whoami() -> Response:
        ident = g.routeplane_identity
        window = ident.budget_window.to_json() if ident.budget_window is not None else None
        return jsonify({
            "kind": ident.kind, "account_id": ident.account_id, "key_id": ident.key_id,
            "session_id": ident.session_id, "scope": ident.scope, "models": list(ident.models),
            "budget_micro_usd": ident.budget_micro_usd, "budget_scope": ident.budget_scope,
            "budget_window": window, "expires_at": ident.expires_at,
            "issuer": ident.claims.get("iss"),
        })

    return bp
