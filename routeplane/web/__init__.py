"""Flask blueprints: one per wire protocol, plus health; each renders errors in its own shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from ..app import App


def register_blueprints(app: "App", flask_app: "Flask", url_prefix: str = "") -> None:
    from . import health, openai

    flask_app.register_blueprint(openai.make_blueprint(app), url_prefix=url_prefix or None)
    flask_app.register_blueprint(health.make_blueprint(app), url_prefix=url_prefix or None)
