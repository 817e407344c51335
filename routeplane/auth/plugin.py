"""The auth plugins: authenticate + model allowlist first in the chain; budget admission last, settled after."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple

from ..app import MigrationItem, Plugin, PluginId
from ..config import ConfigError
from ..hooks.language_model import DenyReason, HookDecision, PreRequestHook, SettlementRecorder
from ..language_model.context import Identity, PipelineContext
from ..language_model.routing import Prices, StaticRoutingTable
from ..language_model.settlement import Settlement, cost_micro_usd
from ..language_model.stream import estimate_usage
from ..language_model.types import Usage
from .authenticator import Authenticator, AuthFailure
from .globs import model_allowed
from .settings import AuthSettings
from .store import MIGRATIONS, AuthStore, BudgetRule

if TYPE_CHECKING:  # pragma: no cover
    from ..app import AppBuilder
    from ..config import Config

log = logging.getLogger("routeplane.auth")

AUTH_ID = PluginId("auth")
BUDGET_ID = PluginId("budget")


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
    return HookDecision.deny(DenyReason.custom(failure.status, failure.message))


class AuthHook(PreRequestHook):
    """Authenticates `ctx.credential`, sets `ctx.identity`, and checks the model allowlist."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def check(self, ctx: PipelineContext) -> HookDecision:
        try:
            identity = self.authenticator.authenticate(ctx.credential)
        except AuthFailure as failure:
            return _deny(failure)
        ctx.identity = identity
        model = ctx.prompt.model
        if not model_allowed(identity.models, model):
            return HookDecision.deny(DenyReason("permission", f"The model {model!r} is not in this credential's "
                                                "model allowlist.", 403, code="model_not_allowed"))
        return HookDecision.allow()


class AuthPlugin(Plugin):
    """Caller authentication (API keys and/or Web3 JWTs), scopes and model allowlists."""

    id = AUTH_ID

    def __init__(self, settings: AuthSettings, store: StoreHandle, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.authenticator = Authenticator(settings, store, clock)

    def migrations(self) -> List[MigrationItem]:
        return list(MIGRATIONS)

    def install(self, app: "AppBuilder") -> None:
        self.store.bind(app.current_store)
        if self.settings.api_keys and not self.store.available:
            raise ConfigError("auth.mode api_keys needs a database (database.url) to hold the keys")
        app.language_model_builder().pre_request_hook(AuthHook(self.authenticator))


# --- budgets -------------------------------------------------------------------


class BudgetHook(PreRequestHook):
    """Reserves the request's worst-case cost if every budget that applies still has room (one transaction)."""

    def __init__(self, plugin: "BudgetPlugin") -> None:
        self.plugin = plugin

    def check(self, ctx: PipelineContext) -> HookDecision:
        identity = ctx.identity
        if identity.kind == "anonymous" or identity.account_id is None:
            return HookDecision.allow()
        plugin = self.plugin
        now = plugin.clock()
        rules = plugin.rules(identity, now)
        amount = plugin.worst_case(ctx)
        entry_id = uuid.uuid4().hex
        if not plugin.store.available:  # no database: limits cannot be enforced
            if rules and plugin.settings.fail_closed:
                return HookDecision.deny(DenyReason("budget", "Budgets need a database; none is configured.", 503,
                                                    code="budget_unavailable"))
            return HookDecision.allow()
        try:
            ttl = plugin.settings.reservation_ttl_seconds
            if getattr(ctx, "dry_run", False):  # explain: decide, but reserve nothing
                over = plugin.store().over_budget(rules, now, ttl)
            else:
                over = plugin.store().admit(entry_id, identity.account_id, identity.session_id, amount, rules, now, ttl)
        except Exception:
            log.exception("budget check failed for request %s", ctx.request_id)
            if plugin.settings.fail_closed:
                return HookDecision.deny(DenyReason("budget", "The budget cannot be checked right now; "
                                                    "try again shortly.", 503, code="budget_unavailable"))
            return HookDecision.allow()  # configured to fail open: admitted unchecked and unrecorded
        if over is not None:
            rule, used = over
            window = f" over {rule.label}" if rule.label else ""
            return HookDecision.deny(DenyReason(
                "budget", f"Budget exhausted: {rule.scope} spend is {used} of a limit of {rule.limit_micro_usd} "
                f"micro-USD{window}.", 402, code="budget_exhausted"))
        # The settlement carries plugin metadata, so the recorder finds its ledger entry there.
        meta = ctx.plugin_metadata(BUDGET_ID)
        meta["reserved_micro_usd"] = amount
        if not getattr(ctx, "dry_run", False):
            meta["entry_id"] = entry_id
        return HookDecision.allow()


class BudgetRecorder(SettlementRecorder):
    """Replaces the reservation by the actual cost once the request is settled."""

    def __init__(self, plugin: "BudgetPlugin") -> None:
        self.plugin = plugin

    def record(self, settlement: Settlement) -> None:
        entry = settlement.metadata.get(str(BUDGET_ID), {}).get("entry_id")
        if entry:
            cost = settlement.cost_micro_usd
            if cost is None and settlement.provider is None:
                cost = 0  # nothing was called
            self.plugin.store().settle(entry, cost)


class BudgetPlugin(Plugin):
    """Budgets from the ledger: per account or session, over a time window or the last N requests."""

    id = BUDGET_ID

    def __init__(self, settings: AuthSettings, store: StoreHandle, config: "Config",
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings.budget
        self.store = store
        self.clock = clock
        self._table = StaticRoutingTable(config.routes, config.providers)

    def install(self, app: "AppBuilder") -> None:
        self.store.bind(app.current_store)
        lm = app.language_model_builder()
        lm.pre_request_hook(BudgetHook(self))
        lm.settlement_recorder(BudgetRecorder(self))

    def rules(self, identity: Identity, now: float) -> List[BudgetRule]:
        out: List[BudgetRule] = []
        if identity.budget_micro_usd is not None:
            key = identity.session_id if identity.budget_scope == "session" else identity.account_id
            out.append(_rule(identity.budget_micro_usd, identity.budget_scope, key or "", identity.budget_window, now))
        if self.settings.account_limit_micro_usd is not None and identity.account_id:
            out.append(_rule(self.settings.account_limit_micro_usd, "account", identity.account_id,
                             self.settings.account_window, now))
        return out

    def worst_case(self, ctx: PipelineContext) -> int:
        """The most this request can cost on any target of its route: the prompt plus max_tokens of output."""
        prompt = ctx.prompt
        max_out = prompt.params.max_tokens or self.settings.default_max_output_tokens
        usage = Usage(input_tokens=estimate_usage(prompt, 0).input_tokens, output_tokens=max_out, reported=False)
        costs = []
        for prices in self._prices(prompt.model):
            cost = cost_micro_usd(usage, prices)
            if cost is None:
                return self.settings.unknown_price_reservation_micro_usd
            costs.append(cost)
        return max(costs) if costs else self.settings.unknown_price_reservation_micro_usd

    def _prices(self, model: str) -> Sequence[Prices]:
        # Looked up without resolve(): that would advance round-robin rotation.
        for route in self._table.routes():
            if route.name == model:
                return [t.prices for t in route.targets]
        provider, sep, _model_id = model.partition(":")
        template = self._table.providers().get(provider) if sep else None
        return [template.prices] if template is not None else []


def _rule(limit: int, scope: str, key: str, window: Any, now: float) -> BudgetRule:
    if window is not None and window.rounds is not None:
        return BudgetRule(limit, scope, key, rounds=window.rounds, label=f"the last {window.rounds} requests")
    if window is not None and window.seconds is not None:
        return BudgetRule(limit, scope, key, since=now - window.seconds, label=f"the last {window.seconds} s")
    return BudgetRule(limit, scope, key, label="its lifetime" if scope == "session" else "all time")


def auth_plugins(config: "Config") -> Tuple[List[Plugin], List[Plugin]]:
    """(plugins to install first, plugins to install last) for `auth.mode`; empty when it is none.

    Auth goes first so every other hook sees the caller; the budget goes last
    so no later pre-request hook can deny a request that already holds a reservation.
    """
    settings = AuthSettings.from_config(config.auth)
    if settings.mode == "none":
        return [], []
    if settings.jwt:
        from .crypto import require_libraries

        require_libraries()
    handle = StoreHandle()
    return [AuthPlugin(settings, handle)], [BudgetPlugin(settings, handle, config)]
