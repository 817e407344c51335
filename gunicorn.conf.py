"""gunicorn reads ./gunicorn.conf.py by default: the real settings live in the package."""

from routeplane.gunicorn_conf import *  # noqa: F401,F403
