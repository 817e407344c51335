"""Budgets: reserve the worst case at admission (one locked transaction), settle the actual cost, and
optionally stop a stream whose running cost passes what was left."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import peewee

from ..app import Plugin, PluginId
from ..errors import RouteplaneError
from ..hooks.language_model import (
    DenyReason,
    HookDecision,
    PreRequestHook,
    SettlementRecorder,
    StreamAction,
    StreamHook,
    StreamInterest,
)
from ..language_model.context import Identity, PipelineContext
from ..language_model.routing import Prices, RoutingTarget, StaticRoutingTable
from ..language_model.settlement import MAX_COST_MICRO_USD, ONE_HOUR_CACHE_WRITE_FACTOR, Settlement, cost_micro_usd
from ..language_model.stream import estimate_tokens_upper, prompt_text, text_weight, tokens_of_weight
from ..language_model.types import (
    GenerationParams,
    ReasoningDelta,
    StreamPart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)
from ..protocols.anthropic_messages.request import DEFAULT_MAX_TOKENS as ANTHROPIC_DEFAULT_MAX_TOKENS
from ..protocols.anthropic_messages.request import PROTOCOL as ANTHROPIC_PROTOCOL
from ..protocols.base import EFFORT_BUDGET
from ..store.spool import Spool
from .settings import BudgetSettings
from .store import SETTLED, UNKNOWN, BudgetRule
from .tool_fees import fee_bound

if TYPE_CHECKING:  # pragma: no cover
    from ..app import AppBuilder
    from ..config import Config
    from .plugin import StoreHandle

log = logging.getLogger("routeplane.auth.budget")

BUDGET_ID = PluginId("budget")
# The kind of a 503 budget_unavailable: the gateway's own failure, for the client to retry. Not "budget",
# which every wire renders as "out of money" (Anthropic 402 billing_error, Gemini RESOURCE_EXHAUSTED,
# OpenAI insufficient_quota), none of which an SDK retries.
UNAVAILABLE_KIND = "internal"


class BudgetHook(PreRequestHook):
    """Reserves the request's worst-case cost if every budget that applies still has room (one transaction)."""

    def __init__(self, plugin: "BudgetPlugin") -> None:
        self.plugin = plugin

    def check(self, ctx: PipelineContext) -> HookDecision:
        identity = ctx.identity
        # Any identity with an account, whoever set it: a mounted host's login (docs/mounting.md) sets
        # `Identity(account_id=...)` of kind "anonymous", and its budget must hold as an API key's does.
        if identity.account_id is None:
            return HookDecision.allow()
        plugin = self.plugin
        now = plugin.clock()
        rules = plugin.rules(identity, now)
        amount = plugin.worst_case(ctx)
        entry_id = uuid.uuid4().hex
        if not plugin.store.available:  # no database: limits cannot be enforced
            if rules and plugin.settings.fail_closed:
                return HookDecision.deny(DenyReason(UNAVAILABLE_KIND, "Budgets need a database; none is configured.",
                                                    503, code="budget_unavailable"))
            return HookDecision.allow()
        dry_run = getattr(ctx, "dry_run", False)
        try:
            ttl = plugin.settings.reservation_ttl_seconds
            if dry_run:  # explain: decide, but reserve nothing
                verdict = plugin.store().over_budget(rules, now, ttl)
            else:
                plugin.replay_spool()  # spend kept while the store was down counts before this admission
                verdict = plugin.store().admit(entry_id, identity.account_id, identity.session_id, amount, rules, now, ttl)
        except Exception:
            log.exception("budget check failed for request %s", ctx.request_id)
            if plugin.settings.fail_closed:
                return HookDecision.deny(DenyReason(UNAVAILABLE_KIND, "The budget cannot be checked right now; "
                                                    "try again shortly.", 503, code="budget_unavailable"))
            if not dry_run:
                # Configured to fail open: admitted unchecked, with no ledger row. The recorder writes
                # the actual cost at settlement (or keeps it for later): spend made while the store was
                # down still counts against the budget once it is back.
                meta = ctx.plugin_metadata(BUDGET_ID)
                meta.update(entry_id=entry_id, reserved_micro_usd=amount, unrecorded_at=now)
            return HookDecision.allow()
        rule = verdict.denied_by
        if rule is not None:
            window = f" over {rule.label}" if rule.label else ""
            return HookDecision.deny(DenyReason(
                "budget", f"Budget exhausted: {rule.scope} spend is {verdict.used} of a limit of {rule.limit_micro_usd} "
                f"micro-USD{window}.", 402, code="budget_exhausted"))
        # The settlement carries plugin metadata, so the recorder finds its ledger entry there.
        meta = ctx.plugin_metadata(BUDGET_ID)
        meta["reserved_micro_usd"] = amount
        if not dry_run:
            meta["entry_id"] = entry_id
        if plugin.settings.mid_stream and verdict.headroom is not None and ctx.prompt.stream:
            ctx.extensions.put(_StreamBudget(verdict.headroom, reserved_input_tokens(ctx.prompt)))
        return HookDecision.allow()


class BudgetRecorder(SettlementRecorder):
    """Replaces the reservation by the actual cost once the request is settled."""

    def __init__(self, plugin: "BudgetPlugin") -> None:
        self.plugin = plugin

    def record(self, settlement: Settlement) -> None:
        meta = settlement.metadata.get(str(BUDGET_ID), {})
        entry = meta.get("entry_id")
        if not entry:
            return
        cost = settlement.cost_micro_usd
        if cost is None and settlement.provider is None:
            cost = 0  # nothing was called
        plugin = self.plugin
        unrecorded_at = meta.get("unrecorded_at")
        row = {"id": entry, "account_id": settlement.account_id, "session_id": settlement.session_id,
               "amount": cost if cost is not None else int(meta.get("reserved_micro_usd") or 0),
               "state": SETTLED if cost is not None else UNKNOWN,
               "created_at": unrecorded_at if unrecorded_at is not None else settlement.started_at}
        try:
            try:
                self._write(entry, cost, row, unrecorded_at is None)
            except (peewee.OperationalError, peewee.InterfaceError):
                # A pooled connection kept across a server restart fails on its first use; the pool
                # discards it, so a second try gets a fresh one (as the spend log retries).
                self._write(entry, cost, row, unrecorded_at is None)
        except Exception as exc:  # noqa: BLE001 - the store is down: keep the spend, say so once
            plugin.keep(row, settlement.request_id, exc)
            return
        plugin.replay_spool()

    def _write(self, entry: str, cost: Optional[int], row: Dict[str, Any], reserved: bool) -> None:
        if reserved:
            self.plugin.store().settle(entry, cost)
        else:  # admitted during an outage: its row is written now
            self.plugin.store().record_spent([row])


class BudgetPlugin(Plugin):
    """Budgets from the ledger: per account or session, over a time window or the last N requests."""

    id = BUDGET_ID
    fail_open = False  # a slow budget check must not admit unchecked (fail_closed decides store errors)

    def __init__(self, settings: BudgetSettings, store: StoreHandle, config: "Config",
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._table = StaticRoutingTable(config.routes, config.providers)
        self.spool: Optional[Spool] = None

    def install(self, app: "AppBuilder") -> None:
        self.store.bind(app.current_store)
        path = self.settings.spool
        if path is None and app.current_store is not None:
            path = default_spool_path(app.current_store)
        self.spool = Spool(path) if path else None
        lm = app.language_model_builder()
        lm.pre_request_hook(BudgetHook(self))
        lm.settlement_recorder(BudgetRecorder(self))
        if self.settings.mid_stream:
            lm.stream_hook(BudgetStreamHook())

    def rules(self, identity: Identity, now: float) -> List[BudgetRule]:
        out: List[BudgetRule] = []
        if identity.budget_micro_usd is not None:
            key = identity.session_id if identity.budget_scope == "session" else identity.account_id
            out.append(_rule(identity.budget_micro_usd, identity.budget_scope, key or "", identity.budget_window, now))
        if self.settings.account_limit_micro_usd is not None and identity.account_id:
            out.append(_rule(self.settings.account_limit_micro_usd, "account", identity.account_id,
                             self.settings.account_window, now))
        return out

    def keep(self, row: Dict[str, Any], request_id: str, exc: BaseException) -> None:
        """A settlement the store could not take: into the spool, written once the store is back (by any
        worker process of the host); without a spool, or if it fails too, the spend is lost to the budget.
        Either way one log line with the amount (the exception's type only: its text may name the store's URL)."""
        what = (f"{row['amount']} micro-USD" if row["state"] == SETTLED
                else f"an unknown cost ({row['amount']} micro-USD reserved)")
        if self.spool is not None:
            try:
                self.spool.append([row])
            except Exception as spool_exc:  # noqa: BLE001 - reported just below
                exc = spool_exc
            else:
                log.warning("budget: the store is unavailable (%s); %s spent by request %s (account %s) kept in "
                            "%s until it is back", type(exc).__name__, what, request_id, row["account_id"],
                            self.spool.path)
                return
        log.error("budget: the store is unavailable (%s); %s spent by request %s (account %s) is not in the "
                  "budget ledger", type(exc).__name__, what, request_id, row["account_id"])

    def replay_spool(self) -> None:
        """Write the settlements the spool holds (a stat at most once a second while it is empty)."""
        spool = self.spool
        if spool is None or not spool.maybe_pending():
            return
        try:
            n = spool.drain(self.store().record_spent)
        except Exception as exc:  # noqa: BLE001 - the rows stay spooled for the next try
            log.warning("budget: replaying %s failed (%s); its settlements stay there", spool.path, type(exc).__name__)
        else:
            if n:
                log.warning("budget: %d settlement(s) kept while the store was unavailable written to the ledger", n)

    def worst_case(self, ctx: PipelineContext) -> int:
        """The most this request can cost on any target of its route: the prompt plus max_tokens of output,
        plus the per-call fees of the server tools it declares (tool_fees.py).

        A missing, zero or negative `max_tokens` reserves what the target may produce
        without one (a negative one must not make room for other requests while it is
        in flight); a huge
        one costs at most `cost_micro_usd`'s cap (MAX_COST_MICRO_USD), which
        exceeds every budget without overflowing the ledger.
        """
        prompt = ctx.prompt
        input_tokens = reserved_input_tokens(prompt)
        unknown = self.settings.unknown_price_reservation_micro_usd
        # The most expensive target, whichever the request ends on: an unpriced one (reserved at the
        # configured amount) must not hide a priced one that costs more.
        costs = []
        for target in self._table.targets_of(prompt.model):
            cost = _dearest_cost(target, input_tokens, self._output_bound(prompt.params, target))
            fees, unpriced = fee_bound(prompt, target, self.settings.default_server_tool_calls)
            # A declared tool whose fee is unpriced (its settlement is then unknown, at the reservation)
            # is reserved at the configured amount, as an unpriced target is.
            extra = fees + (unknown if unpriced and cost is not None else 0)
            costs.append(min((cost if cost is not None else unknown) + extra, MAX_COST_MICRO_USD))
        return max(costs) if costs else unknown

    def _output_bound(self, params: GenerationParams, target: RoutingTarget) -> int:
        """The most output `target` may generate: the request's max_tokens, else the configured default, or
        more where the gateway itself sends a larger bound. Anthropic requires max_tokens, so a request
        without one gets the provider's `default_max_tokens` plus the thinking budget when reasoning
        was asked for (protocols/anthropic_messages/request.py): up to 36864 tokens, not 4096."""
        if params.max_tokens is not None and params.max_tokens > 0:
            return params.max_tokens
        bound = self.settings.default_max_output_tokens
        if target.protocol == ANTHROPIC_PROTOCOL:
            thinking = params.reasoning_budget
            if thinking is None and params.reasoning_effort:
                thinking = EFFORT_BUDGET.get(params.reasoning_effort)
            sent = int(target.options.get("default_max_tokens", ANTHROPIC_DEFAULT_MAX_TOKENS))  # type: ignore[call-overload]
            bound = max(bound, sent + (max(1024, thinking) if thinking else 0))
        return bound


def reserved_input_tokens(prompt: Any) -> int:
    """The prompt's input tokens as a reservation counts them: an upper-ish bound for any script."""
    return max(1, estimate_tokens_upper(prompt_text(prompt)))


def default_spool_path(store: Any) -> Optional[str]:
    """Beside a SQLite file (none for an in-memory one), else `routeplane-budget.spool` in the working
    directory: where the spend log keeps its own spool (store/spend_log.py)."""
    if store.dialect == "sqlite":
        database = store.parsed.database
        return None if database in (":memory:", "") else database + ".budget-spool"
    return "routeplane-budget.spool"


def _dearest_cost(target: RoutingTarget, input_tokens: int, output_tokens: int) -> Optional[int]:
    """The most this many tokens in and out can cost on `target` (None: unpriced).

    The input at its dearest bucket: the upstream may bill all of it as a cache write, dearer than
    plain input (a 5-minute write at `cache_write`; on Anthropic, a 1-hour write at twice the input
    price). The output at the dearer of output and reasoning. Priced at plain input, a reservation
    fell short of what a cached prompt costs, and parallel requests overspent by the difference.
    """
    prices = target.prices.for_input(input_tokens)
    dear_input = None
    if prices.input is not None:
        one_hour = prices.input * ONE_HOUR_CACHE_WRITE_FACTOR if target.protocol == ANTHROPIC_PROTOCOL else None
        dear_input = max(p for p in (prices.input, prices.cache_read, prices.cache_write, one_hour) if p is not None)
    dear_output = prices.output
    if dear_output is not None and prices.reasoning is not None:
        dear_output = max(dear_output, prices.reasoning)
    return cost_micro_usd(Usage(input_tokens=input_tokens, output_tokens=output_tokens, reported=False),
                          Prices(input=dear_input, output=dear_output))


def _rule(limit: int, scope: str, key: str, window: Any, now: float) -> BudgetRule:
    if window is not None and window.rounds is not None:
        return BudgetRule(limit, scope, key, rounds=window.rounds, label=f"the last {window.rounds} requests")
    if window is not None and window.seconds is not None:
        return BudgetRule(limit, scope, key, since=now - window.seconds, label=f"the last {window.seconds} s")
    return BudgetRule(limit, scope, key, label="its lifetime" if scope == "session" else "all time")


class _StreamBudget:
    """Per-stream state: the budget left at admission, and the output seen so far."""

    def __init__(self, headroom: int, input_tokens: int) -> None:
        self.headroom = headroom
        self.input_tokens = input_tokens
        self.output_ascii = 0  # the output's weight as estimate_tokens_upper counts it
        self.output_other_bytes = 0
        self.reported_output = 0
        self.tool_calls: Tuple[Tuple[str, int], ...] = ()  # server-side tool calls billed by the call, so far


class BudgetStreamHook(StreamHook):
    """Aborts a stream (the wire's error frame, 402) once its running cost passes the budget left at admission.

    The running cost is the larger of the upstream's reported output tokens and
    an estimate from the text delivered (4 ASCII characters a token, other characters
    by their UTF-8 bytes: estimate_tokens_upper); the request is then settled for what was delivered.
    """

    def interest(self) -> StreamInterest:
        return StreamInterest.TEXT | StreamInterest.REASONING | StreamInterest.TOOL_CALLS | StreamInterest.USAGE

    def on_part(self, ctx: PipelineContext, part: StreamPart) -> StreamAction:
        state = ctx.extensions.get(_StreamBudget)
        target = ctx.target
        if state is None or target is None:
            return StreamAction.pass_()
        if isinstance(part, (TextDelta, ReasoningDelta, ToolCallDelta)):
            ascii_chars, other_bytes = text_weight(part.arguments if isinstance(part, ToolCallDelta) else part.text)
            state.output_ascii += ascii_chars
            state.output_other_bytes += other_bytes
        elif isinstance(part, UsageUpdate):
            state.reported_output = max(state.reported_output, part.usage.total_output)
            state.tool_calls = part.usage.tool_calls or state.tool_calls
            return StreamAction.pass_()
        output = max(state.reported_output, tokens_of_weight(state.output_ascii, state.output_other_bytes))
        cost = cost_micro_usd(Usage(input_tokens=state.input_tokens, output_tokens=output, reported=False,
                                    tool_calls=state.tool_calls), target.prices)
        if cost is not None and cost > state.headroom:
            return StreamAction.abort(RouteplaneError(
                f"Budget exhausted during the stream: its cost passed the {state.headroom} micro-USD that were left.",
                status=402, kind="budget", code="budget_exhausted"))
        return StreamAction.pass_()
