"""Operations endpoints: `/health` (process serves) and `/ready` (config loaded, store reachable, a provider usable)."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.web.health")


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_health", __name__)

    @bp.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok"})

    store_log = StoreProblemLog()

    @bp.get("/ready")
    def ready() -> Response:
        body = readiness(app, store_log)
        resp = jsonify(body)
        resp.status_code = 200 if body["status"] == "ready" else 503
        return resp

    return bp


class StoreProblemLog:
    """Logs the store's problem when it changes, not on every /ready poll (a load balancer polls each second)."""

    def __init__(self) -> None:
        self._last: Optional[str] = None
        self._lock = threading.Lock()  # /ready runs in many request threads

    def report(self, problem: Optional[str]) -> None:
        with self._lock:
            previous, self._last = self._last, problem
        if problem == previous:
            return
        if problem:
            log.warning("readiness: %s", problem)
        else:
            log.info("readiness: the store is usable again (was: %s)", previous)


def readiness(app: "App", store_log: Optional[StoreProblemLog] = None) -> Dict[str, Any]:
    """Ready when the server is not stopping, the store (if any) answers, and at least one provider is usable."""
    usable = usable_providers(app)
    problems: List[str] = []
    lifecycle = getattr(app, "lifecycle", None)
    if lifecycle is not None and lifecycle.stopping:
        problems.append("draining: the worker is shutting down")
    store_state, store_error = store_status(app)
    if store_log is not None:
        store_log.report(store_error)
    if store_error:
        problems.append(store_error)
    if not usable:
        problems.append("no usable provider (set an api_key or a credential header, or a base_url for a "
                        "keyless server)")
    return {
        "status": "not_ready" if problems else "ready",
        "config": app.config.source,
        "providers": usable,
        "store": store_state,
        "problems": problems,
    }


def store_status(app: "App") -> Tuple[str, Optional[str]]:
    """The store's state for /ready (none, ok, unreachable, read_only) and the problem to list, if any; the
    message never holds the URL (it may hold a password)."""
    store = getattr(app, "store", None)
    if store is None:
        return "none", None
    try:
        ping = getattr(store, "ping", None)
        if callable(ping):
            ping()
        else:
            store.database.execute_sql("SELECT 1").close()
        read_only = read_only_problem(store)
    except Exception as exc:
        return "unreachable", f"store unreachable ({type(exc).__name__})"
    if read_only:
        return "read_only", read_only
    return "ok", None


def read_only_problem(store: Any) -> Optional[str]:
    """Why a store that answers reads would refuse every write, or None.

    `SELECT 1` passes on a SQLite file the service user cannot write (root created it) and on a
    PostgreSQL standby left behind by a failover; every spend row then waits in the spool while
    /ready said "ok". SQLite needs the file and its directory writable (its journal files live there).
    """
    dialect = getattr(store, "dialect", None)
    if dialect == "sqlite":
        path = store.parsed.database
        if path in ("", ":memory:") or not os.path.exists(path):
            return None
        if not (os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)):
            return "store is read-only (this process cannot write the SQLite file or its directory)"
    elif dialect == "postgresql":
        rows = store.execute("SHOW transaction_read_only")
        if rows and str(rows[0][0]).lower() == "on":
            return "store is read-only (PostgreSQL transaction_read_only is on: a standby?)"
    return None


# Public APIs that refuse a call without a key; any other base URL may be a
# keyless server (a local vLLM/Ollama, an internal gateway).
KEY_REQUIRED_HOSTS = frozenset({"api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"})
# Headers that carry a provider credential (`providers.<id>.headers` replace the api_key's header): OpenAI and
# compatible servers, Anthropic, Gemini, Azure OpenAI.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})


def usable_providers(app: "App") -> List[str]:
    """Providers that could answer: the mock always; others with a key (api_key, or a credential header), or a
    base URL that needs none."""
    out = []
    for pid, t in app.config.providers.items():
        host = (urlsplit(t.base_url).hostname or "") if t.base_url else ""
        keyed = bool(t.api_key) or any(str(k).lower() in CREDENTIAL_HEADERS and v for k, v in t.headers.items())
        if t.protocol == "mock" or keyed or (host and host not in KEY_REQUIRED_HOSTS):
            out.append(pid)
    return out
