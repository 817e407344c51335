"""`gunicorn wsgi:app` entry: the config path comes from $ROUTEPLANE_CONFIG (see docs/configuration.md)."""

from routeplane import create_app

app = create_app()
