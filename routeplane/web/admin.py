"""Admin blueprint (`/admin/*`): every view needs an admin-scoped credential (`require_admin`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, g, jsonify, request

from ..auth.guard import require_admin

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.web.admin")


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_admin", __name__)
    _install_stats_flush(app, bp)

    @bp.errorhandler(Exception)
    def _failed(exc: Exception) -> Any:
        """A JSON API answers in JSON: a store outage is a 503 to retry, a bug a 500 (the traceback goes to the log)."""
        from werkzeug.exceptions import HTTPException

        from ..errors import RouteplaneError
        from ..metrics import is_store_error
        from ..protocols.openai_chat import CLIENT
        from .common import error_response, request_id

        if isinstance(exc, HTTPException):
            return exc
        if is_store_error(exc):
            log.warning("%s failed: the store: %s: %s", request.path, type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
            err = RouteplaneError("The store could not be read; try again shortly (the gateway's log says why).",
                                  status=503, kind="internal", code="store_unavailable")
        else:
            log.exception("%s failed", request.path)
            err = RouteplaneError("The admin endpoint failed; the gateway's log says why.", status=500)
        return error_response(err, CLIENT.error_body, request_id())

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

    @bp.post("/admin/explain")
    @require_admin(app)
    def explain_request() -> Response:
        """Dry run: `{"wire": "openai_chat", "request": {...}, "headers": {...}}` → decisions, chain, charge."""
        from ..errors import InvalidRequest, RouteplaneError
        from ..explain import explain
        from ..protocols.openai_chat import CLIENT
        from .common import error_response, read_json_body, request_id

        rid = request_id()
        try:
            body = read_json_body(app.config.server.max_body_bytes)
            if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
                raise InvalidRequest("Send {\"wire\": ..., \"request\": {...}, \"headers\": {...}}.", param="request")
            # Absent or null: no headers. Any other non-object (`[]`, `""`) is a mistake, not "no credential":
            # explained as unauthenticated, it answered a question the admin did not ask.
            headers = body.get("headers")
            headers = {} if headers is None else headers
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise InvalidRequest("'headers' must map names to strings.", param="headers")
            from ..auth.guard import wire_credential

            wire = str(body.get("wire") or "openai_chat")
            # Found as the wire's own view finds it on a real call: header names are case-insensitive
            # (HTTP/2 sends them lower-case), and each wire has its own header before Bearer.
            report = explain(app, wire, body["request"], headers, wire_credential(wire, headers), rid)
        except RouteplaneError as err:
            return error_response(err, CLIENT.error_body, rid)
        return jsonify(report)

    @bp.get("/admin/metrics")
    @require_admin(app)
    def metrics() -> Response:
        """Per-route/endpoint request stats over `?window=1h|24h|7d` and per-plugin stats (docs/operations.md)."""
        from ..errors import InvalidRequest
        from ..metrics import DEFAULT_WINDOW, WINDOWS, metrics_document
        from ..protocols.openai_chat import CLIENT
        from .common import error_response, request_id

        window = request.args.get("window", DEFAULT_WINDOW)
        if window not in WINDOWS:
            err = InvalidRequest(f"window must be one of {', '.join(WINDOWS)}.", param="window")
            return error_response(err, CLIENT.error_body, request_id())
        return jsonify(metrics_document(app, window))

    return bp


def _install_stats_flush(app: "App", bp: Blueprint) -> None:
    """Every answered request may trigger this worker's periodic plugin-stats flush (in the background)."""
    from ..metrics import StatsFlusher

    if app.stats_flusher is None:
        app.stats_flusher = StatsFlusher(app, app.config.server.stats_flush_seconds)
    flusher = app.stats_flusher

    @bp.after_app_request
    def _flush(response: Response) -> Response:
        try:
            flusher.maybe_flush()
        except Exception:  # metrics never fail a request
            pass
        return response
