"""Operations endpoints: `/health` (process serves) and `/ready` (config loaded, a provider usable)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from flask import Blueprint, Response, jsonify

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_health", __name__)

    @bp.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok"})

    @bp.get("/ready")
    def ready() -> Response:
        usable = usable_providers(app)
        body = {"status": "ready" if usable else "not_ready", "config": app.config.source, "providers": usable}
        resp = jsonify(body)
        resp.status_code = 200 if usable else 503
        return resp

    return bp


def usable_providers(app: "App") -> List[str]:
    """Providers that could answer: the mock always; others with a key or a custom base URL."""
    out = []
    for pid, t in app.config.providers.items():
        if t.protocol == "mock" or t.api_key or t.base_url:
            out.append(pid)
    return out
