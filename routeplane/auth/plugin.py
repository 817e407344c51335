"""The auth plugin (credentials → identity, model allowlist), first in the chain; `auth_plugins()` wires it."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from ..app import MigrationItem, Plugin, PluginId
from ..config import ConfigError, plugin_enabled
from ..hooks.language_model import DenyReason, HookDecision, PreRequestHook
from ..language_model.context import PipelineContext
from .authenticator import Authenticator, AuthFailure
from .globs import model_allowed
from .revocation import RevocationCache
from .settings import AuthSettings
from .store import MIGRATIONS, AuthStore

if TYPE_CHECKING:  # pragma: no cover
    from ..app import AppBuilder
    from ..config import Config

log = logging.getLogger("routeplane.auth")

AUTH_ID = PluginId("auth")


class StoreHandle:
    """The auth plugins' view of the App's Store, set at install time (shared by both plugins)."""

    def __init__(self) -> None:
        self._auth_store: Optional[AuthStore] = None

    def bind(self, store: Any) -> None:
        if store is not None and self._auth_store is None:
            self._auth_store = AuthStore(store)

    @property
    def available(self) -> bool:
        return self._auth_store is not None

    def __call__(self) -> AuthStore:
        if self._auth_store is None:
            raise RuntimeError("no database is configured (database.url)")
        return self._auth_store


def _deny(failure: AuthFailure) -> HookDecision:
    if failure.status == 401:
        return HookDecision.deny(DenyReason.unauthorized(failure.message))
    if failure.status == 403:
        return HookDecision.deny(DenyReason.forbidden(failure.message))
    # 503: the key or revocation store cannot answer. The gateway's own failure, for the client to retry
    # (as budget_unavailable), not a plugin's "custom" refusal: metrics, the request log and OpenAI's
    # `code` said `custom`/policy.
    return HookDecision.deny(DenyReason("internal", failure.message, failure.status, code="auth_unavailable"))


class AuthHook(PreRequestHook):
    """Authenticates `ctx.credential`, sets `ctx.identity`, and checks the model allowlist."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def check(self, ctx: PipelineContext) -> HookDecision:
        try:
            identity = self.authenticator.authenticate(ctx.credential, ctx.inbound_protocol)
        except AuthFailure as failure:
            return _deny(failure)
        ctx.identity = identity
        model = ctx.prompt.model
        if not model_allowed(identity.models, model):
            return HookDecision.deny(DenyReason("permission", f"The model {model!r} is not in this credential's "
                                                "model allowlist.", 403, code="model_not_allowed"))
        return HookDecision.allow()


def identity_allowlist(ctx: PipelineContext) -> HookDecision:
    """A model call whose model the caller's identity does not allow is a 403 `model_not_allowed`.

    The auth plugin checks its own identities (AuthHook); this holds for an identity any `authenticates`
    hook set (a mounted host app's login, docs/mounting.md): `Identity(models=())` reaches no model.
    Outside model calls (`/v1/models`, admin) the model is "" and nothing is checked here."""
    model = ctx.prompt.model
    if model and not model_allowed(ctx.identity.models, model):
        return HookDecision.deny(DenyReason("permission", f"The model {model!r} is not in this caller's model "
                                            "allowlist.", 403, code="model_not_allowed"))
    return HookDecision.allow()


class IdentityAllowlistHook(PreRequestHook):
    """`identity_allowlist` as a pre-request hook, placed right after the last `authenticates` hook.

    Without the budget plugin (auth.mode none, no `plugins: {budget: {}}`) an identity that carries a
    budget is refused (503 budget_unavailable), as a budget without a database is: a host hook's
    `Identity(budget_micro_usd=0)` was answered 200, its budget silently not enforced."""

    def __init__(self, budgets_enforced: bool = True) -> None:
        self.budgets_enforced = budgets_enforced
        self._warned = False

    def check(self, ctx: PipelineContext) -> HookDecision:
        if not self.budgets_enforced and ctx.identity.budget_micro_usd is not None:
            if not self._warned:
                self._warned = True
                log.error("an identity with a budget reached a gateway without budgets: refused with 503; add "
                          "`plugins: {budget: {}}` to the config (docs/mounting.md)")
            return HookDecision.deny(DenyReason("internal", "Budgets are not enabled on this gateway; the "
                                                "caller's budget cannot be enforced.", 503, code="budget_unavailable"))
        return identity_allowlist(ctx)


class AuthPlugin(Plugin):
    """Caller authentication (API keys and/or Web3 JWTs), scopes and model allowlists."""

    id = AUTH_ID
    fail_open = False  # under a configured time budget, a slow auth check denies (503), never skips

    def __init__(self, settings: AuthSettings, store: StoreHandle, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.revocations = RevocationCache(store, settings.revocation.cache_seconds)
        self.authenticator = Authenticator(settings, store, clock, self.revocations)

    def migrations(self) -> List[MigrationItem]:
        return list(MIGRATIONS)

    def install(self, app: "AppBuilder") -> None:
        self.store.bind(app.current_store)
        if self.settings.api_keys and not self.store.available:
            raise ConfigError("auth.mode api_keys needs a database (database.url) to hold the keys")
        app.language_model_builder().pre_request_hook(AuthHook(self.authenticator))
        from .revocation_web import make_blueprint

        app.blueprint(make_blueprint)  # /admin/token-revocations


def host_budgets(config: "Config") -> bool:
    """Whether `plugins: {budget: {}}` asks for budgets with auth.mode none, on the identities a mounted
    host's `authenticates` hook sets (with auth on, the budget plugin is always installed)."""
    return "budget" in config.plugins and plugin_enabled(config.plugins["budget"]) is not False


class AuthTablesPlugin(Plugin):
    """The auth plugin's tables without its hooks: the budget ledger, for budgets on a host's identities.

    It has the auth plugin's id and migrations, so switching to `auth.mode: api_keys` later finds them
    applied, not a second owner of the same tables."""

    id = AUTH_ID

    def __init__(self, store: StoreHandle) -> None:
        self.store = store

    def migrations(self) -> List[MigrationItem]:
        return list(MIGRATIONS)

    def install(self, app: "AppBuilder") -> None:
        self.store.bind(app.current_store)


def _warn(message: str) -> None:
    """Into the gateway's log when logging is set up (gunicorn workers, a host app); else, in `routeplane
    check` and the other commands, one `routeplane: warning: …` line as the commands write their messages
    (Python's last-resort handler printed the bare text, unlike every other line of the command)."""
    if log.hasHandlers():
        log.warning(message)
    else:
        print(f"routeplane: warning: {message}", file=sys.stderr)


def auth_plugins(config: "Config") -> Tuple[List[Plugin], List[Plugin]]:
    """(plugins to install first, plugins to install last) for `auth.mode`; empty when it is none.

    Auth goes first so every other hook sees the caller; the budget goes last
    so no later pre-request hook can deny a request that already holds a reservation.
    """
    settings = AuthSettings.from_config(config.auth)
    if settings.mode == "none":
        from .budget import BudgetPlugin

        if host_budgets(config):
            # A mounted host's identity hook sets the identities (docs/mounting.md); the budget plugin and its
            # ledger tables come from the config, so `routeplane migrate` and the gunicorn master create them.
            handle = StoreHandle()
            return [AuthTablesPlugin(handle)], [BudgetPlugin(settings.budget, handle, config)]
        if (config.auth.get("budget") or {}).get("account_limit_micro_usd") is not None:
            # Budgets are the `budget` plugin's: without it the limit looked enforced and was not.
            _warn("auth.budget.account_limit_micro_usd is set but auth.mode is none: no budget is enforced "
                  "(budgets need auth.mode api_keys, jwt or api_keys+jwt, or, mounted in a host app whose "
                  "hook sets the identities, `plugins: {budget: {}}`; docs/auth.md, docs/mounting.md)")
        return [], []
    if settings.jwt:
        from .crypto import require_libraries

        require_libraries()
    if settings.jwt and not settings.verifier.audience:
        _warn("auth.audience is not set: Web3 JWTs are accepted whatever their aud claim, so a token a "
              "wallet minted for another service using the same format is accepted here too (docs/auth.md)")
    from .budget import BudgetPlugin

    handle = StoreHandle()
    return [AuthPlugin(settings, handle)], [BudgetPlugin(settings.budget, handle, config)]
