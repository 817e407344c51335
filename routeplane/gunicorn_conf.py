"""gunicorn settings for routeplane (gthread workers); `routeplane serve` and ./gunicorn.conf.py use them.

Sizing: one gthread thread holds one open stream for its whole life, so the
number of concurrent streams a box holds is workers × threads. Streams are
I/O-bound (a thread waits on the upstream socket), so a large thread count
per worker is cheap: see docs/deploy.md for measured numbers.
"""

from __future__ import annotations

import os

from routeplane.config import ConfigError, load_config

_config_path = os.environ.get("ROUTEPLANE_CONFIG") or None
try:
    _config = load_config(_config_path)
except ConfigError as _exc:  # fail in the master, before any worker starts
    raise SystemExit(f"routeplane: {_exc}")

bind = [os.environ.get("ROUTEPLANE_LISTEN") or _config.server.listen]
workers = int(os.environ.get("ROUTEPLANE_WORKERS") or _config.server.workers)
threads = int(os.environ.get("ROUTEPLANE_THREADS") or _config.server.threads)
worker_class = "gthread"
# gthread workers heartbeat from their main loop, so a long stream does not trip this.
timeout = 60
graceful_timeout = int(os.environ.get("ROUTEPLANE_GRACEFUL_TIMEOUT") or 30)
keepalive = 5
max_requests = int(os.environ.get("ROUTEPLANE_MAX_REQUESTS") or 0)
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0
# Not preloaded: HUP then re-reads the config and plugins in fresh workers.
preload_app = False
wsgi_app = "routeplane.app:create_app()"
accesslog = os.environ.get("ROUTEPLANE_ACCESS_LOG") or None
errorlog = "-"
loglevel = _config.server.log_level
proc_name = "routeplane"


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn hook signature
    server.log.info("routeplane: config %s, %d workers x %d threads", _config.source, workers, threads)


def worker_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn hook signature
    """Let plugins clean up (App.shutdown) when a worker stops."""
    app = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("routeplane")
    if app is not None:
        app.shutdown()
