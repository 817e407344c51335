"""Flask blueprints: one per wire protocol, plus health; each renders errors in its own shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..app import App


def register_blueprints(app: "App", flask_app: "Flask", url_prefix: str = "") -> None:
    from . import health, openai

    flask_app.register_blueprint(openai.make_blueprint(app), url_prefix=url_prefix or None)
    flask_app.register_blueprint(health.make_blueprint(app), url_prefix=url_prefix or None)
    from . import anthropic

    flask_app.register_blueprint(anthropic.make_blueprint(app), url_prefix=url_prefix or None)
    from . import gemini

    flask_app.register_blueprint(gemini.make_blueprint(app), url_prefix=url_prefix or None)
    from . import mcp

    flask_app.register_blueprint(mcp.make_blueprint(app), url_prefix=url_prefix or None)
    from . import agents

    flask_app.register_blueprint(agents.make_blueprint(app), url_prefix=url_prefix or None)
    from . import admin

    flask_app.register_blueprint(admin.make_blueprint(app), url_prefix=url_prefix or None)
    from . import dashboard

    flask_app.register_blueprint(dashboard.make_blueprint(app), url_prefix=url_prefix or None)
    for factory in app.plugin_blueprints:  # endpoints plugins add (AppBuilder.blueprint)
        flask_app.register_blueprint(factory(app), url_prefix=url_prefix or None)
    if url_prefix:
        flask_app.register_blueprint(_unrouted_blueprint(url_prefix))


def _unrouted_blueprint(url_prefix: str) -> Any:
    """Mounted under a prefix: a path below it that no endpoint matches answers 404/405 in its wire's shape
    (as standalone), not in the host's HTML. A routing failure reaches no blueprint's error handler, but the
    app's before-request functions run before it is raised: this one answers for the prefix only."""
    from flask import Blueprint, request
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    from ..errors import RouteplaneError
    from .common import error_response, request_id

    bp = Blueprint("routeplane_unrouted", __name__)

    @bp.before_app_request
    def _not_routed() -> Any:
        exc = request.routing_exception
        path = request.path
        if not isinstance(exc, (NotFound, MethodNotAllowed)) or not (
                path == url_prefix or path.startswith(url_prefix + "/")):
            return None  # routed, a redirect (trailing slash), or the host's own path: not ours
        err = RouteplaneError(f"{exc.name}: no such endpoint or method on this gateway.", status=exc.code,
                              kind="not_found" if exc.code == 404 else "invalid_request")
        resp = error_response(err, error_renderer_for(path[len(url_prefix):] or "/"), request_id())
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return resp

    return bp


def error_renderer_for(path: str) -> Callable[[Any], Dict[str, Any]]:
    """The error-body renderer for an unrouted path: each wire answers 404/405 in its own shape."""
    from ..protocols import anthropic_messages, openai_chat

    if "/v1/messages" in path:
        return anthropic_messages.CLIENT.error_body
    if path.startswith("/v1beta/") or ("/models/" in path and ":" in path.rsplit("/", 1)[-1]):
        from ..protocols import gemini

        return gemini.CLIENT.error_body
    return openai_chat.CLIENT.error_body
