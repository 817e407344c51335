"""An existing Flask app that mounts routeplane under /llm and shares its own login with the gateway.

The host app authenticates its users its own way (here: a signed Flask
session from /login, or one of its API tokens as a bearer token) and keeps
the result in `flask.g.host_user`. A routeplane pre-request hook turns that
into `ctx.identity`, so spend, budgets and model allow-lists follow the
host's accounts. A client cannot forge `flask.g`: it exists only in the
server, unlike a header. Budgets (a user's `budget_micro_usd`) are enforced
when the gateway config has `plugins: {budget: {}}`; without it a user with
a budget is refused (503), never served unchecked.

    # from the repository root; gunicorn listens on the config's server.listen (127.0.0.1:4356 by default)
    ROUTEPLANE_CONFIG=routeplane.yaml gunicorn -c python:routeplane.gunicorn_conf 'examples.mounted_app:create_host_app()'
    # or, for a try-out: python examples/mounted_app.py  (Werkzeug dev server on 127.0.0.1:5000)

Then `OpenAI(base_url="http://127.0.0.1:4356/llm/v1", api_key="host-token-alice")` (port 5000 for the
try-out).
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from flask import Flask, g, jsonify, redirect, request, session

from routeplane.app import AppBuilder, Plugin, PluginId, build_app
from routeplane.auth.globs import model_allowed
from routeplane.config import Config, load_config
from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook
from routeplane.language_model.context import Identity, PipelineContext


@dataclass(frozen=True)
class HostUser:
    """The host application's notion of a user."""

    user_id: str
    plan: str
    models: Tuple[str, ...] = ("*",)  # model-name patterns (`mock-*`), as Identity.models; () allows none
    admin: bool = False  # may use the gateway's /llm/admin/* (dashboard, metrics, explain)
    # Spend limit in micro-USD (None: none); enforced with `plugins: {budget: {}}` in the gateway config.
    budget_micro_usd: Optional[int] = None


# The host's own user table and API tokens (a database in a real app).
DEMO_USERS: Dict[str, HostUser] = {
    "alice": HostUser("alice", "pro", admin=True),
    "bob": HostUser("bob", "free", models=("mock-echo",)),
}
DEMO_TOKENS: Dict[str, str] = {"host-token-alice": "alice", "host-token-bob": "bob"}


class HostIdentityHook(PreRequestHook):
    """Maps the host's authenticated user onto routeplane's Identity; anonymous callers are refused.

    Two sources, both decided by the host app, never by a header the client controls:
    - `flask.g.host_user`, set by the host's own before_request (session login);
    - `ctx.credential`, the caller's bearer token (ctx.headers has Authorization
      and Cookie stripped; the credential is passed separately for hooks like this).

    `authenticates = True` makes it the gateway's auth everywhere, not only on model calls: the shared
    guard runs it for /llm/admin/*, /llm/mcp, /llm/v1/models and count_tokens too (there `ctx.route` is ""
    when no model is involved), and only an identity with `scope="admin"` gets the admin endpoints.
    """

    authenticates = True

    def __init__(self, tokens: Mapping[str, str], users: Mapping[str, HostUser]) -> None:
        self.tokens = tokens
        self.users = users

    def check(self, ctx: PipelineContext) -> HookDecision:
        user: Optional[HostUser] = getattr(g, "host_user", None)
        if user is None and ctx.credential:
            user = self._user_for_token(ctx.credential)
        if user is None:
            return HookDecision.deny(DenyReason.unauthorized("Log in to the host app or send a host API token."))
        # Without auth.mode nothing else checks Identity.models on a model call: this hook does, with the
        # auth plugin's pattern rules (`mock-*`; () allows none) and answer. ctx.route is "" outside model calls.
        if ctx.route and not model_allowed(user.models, ctx.route):
            return HookDecision.deny(DenyReason("permission", f"Your plan ({user.plan}) does not include the model "
                                                f"{ctx.route!r}.", 403, code="model_not_allowed"))
        ctx.identity = Identity(account_id=user.user_id, models=user.models, claims={"plan": user.plan},
                                scope="admin" if user.admin else "api", budget_micro_usd=user.budget_micro_usd)
        return HookDecision.allow()

    def _user_for_token(self, token: str) -> Optional[HostUser]:
        for known, user_id in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):  # constant time
                return self.users.get(user_id)
        return None


class HostAuthPlugin(Plugin):
    id = PluginId("host_auth")

    def __init__(self, tokens: Mapping[str, str], users: Mapping[str, HostUser]) -> None:
        self.hook = HostIdentityHook(tokens, users)

    def install(self, app: AppBuilder) -> None:
        app.language_model_builder().pre_request_hook(self.hook)


def create_host_app(config: Optional[Config] = None, secret_key: Optional[str] = None,
                    users: Optional[Mapping[str, HostUser]] = None, tokens: Optional[Mapping[str, str]] = None) -> Flask:
    """The host application, with routeplane mounted under /llm (`users`/`tokens`: the demo's by default)."""
    users = DEMO_USERS if users is None else users
    tokens = DEMO_TOKENS if tokens is None else tokens
    host = Flask("host_app")
    host.secret_key = secret_key or os.environ.get("HOST_SECRET_KEY") or os.urandom(32)

    @host.before_request
    def load_user() -> None:
        # The host's own authentication, for all of its routes (routeplane's included).
        user_id = session.get("user_id")
        g.host_user = users.get(user_id) if user_id else None

    @host.post("/login")
    def login() -> Any:
        user_id = (request.form.get("user") or "").strip()
        if user_id not in users:  # a real app checks a password here
            return jsonify({"error": "unknown user"}), 401
        session["user_id"] = user_id
        return redirect("/")

    @host.get("/")
    def home() -> Any:
        user = g.host_user
        return jsonify({"app": "host", "user": user.user_id if user else None})

    # load_config() reads $ROUTEPLANE_CONFIG: under routeplane's gunicorn settings, the checked copy the master migrated.
    gateway = build_app(config or load_config(), extra_plugins=[HostAuthPlugin(tokens, users)])
    gateway.init_app(host, url_prefix="/llm")
    return host


if __name__ == "__main__":  # pragma: no cover - manual try-out
    create_host_app().run("127.0.0.1", 5000, threaded=True)
