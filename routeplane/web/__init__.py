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


def error_renderer_for(path: str) -> Callable[[Any], Dict[str, Any]]:
    """The error-body renderer for an unrouted path: each wire answers 404/405 in its own shape."""
    from ..protocols import anthropic_messages, openai_chat

    if "/v1/messages" in path:
        return anthropic_messages.CLIENT.error_body
    if path.startswith("/v1beta/") or ("/models/" in path and ":" in path.rsplit("/", 1)[-1]):
        from ..protocols import gemini

        return gemini.CLIENT.error_body
    return openai_chat.CLIENT.error_body
