"""Budgets: reserve the worst case at admission (one locked transaction), settle the actual cost, and
optionally stop a stream whose running cost passes what was left."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

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
from ..language_model.settlement import ONE_HOUR_CACHE_WRITE_FACTOR, Settlement, cost_micro_usd
from ..language_model.stream import estimate_usage
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
from .settings import BudgetSettings
from .store import BudgetRule

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
        if identity.kind == "anonymous" or identity.account_id is None:
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
        try:
            ttl = plugin.settings.reservation_ttl_seconds
            if getattr(ctx, "dry_run", False):  # explain: decide, but reserve nothing
                verdict = plugin.store().over_budget(rules, now, ttl)
            else:
                verdict = plugin.store().admit(entry_id, identity.account_id, identity.session_id, amount, rules, now, ttl)
        except Exception:
            log.exception("budget check failed for request %s", ctx.request_id)
            if plugin.settings.fail_closed:
                return HookDecision.deny(DenyReason(UNAVAILABLE_KIND, "The budget cannot be checked right now; "
                                                    "try again shortly.", 503, code="budget_unavailable"))
            return HookDecision.allow()  # configured to fail open: admitted unchecked and unrecorded
        rule = verdict.denied_by
        if rule is not None:
            window = f" over {rule.label}" if rule.label else ""
            return HookDecision.deny(DenyReason(
                "budget", f"Budget exhausted: {rule.scope} spend is {verdict.used} of a limit of {rule.limit_micro_usd} "
                f"micro-USD{window}.", 402, code="budget_exhausted"))
        # The settlement carries plugin metadata, so the recorder finds its ledger entry there.
        meta = ctx.plugin_metadata(BUDGET_ID)
        meta["reserved_micro_usd"] = amount
        if not getattr(ctx, "dry_run", False):
            meta["entry_id"] = entry_id
        if plugin.settings.mid_stream and verdict.headroom is not None and ctx.prompt.stream:
            ctx.extensions.put(_StreamBudget(verdict.headroom, estimate_usage(ctx.prompt, 0).input_tokens))
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
    fail_open = False  # a slow budget check must not admit unchecked (fail_closed decides store errors)

    def __init__(self, settings: BudgetSettings, store: StoreHandle, config: "Config",
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._table = StaticRoutingTable(config.routes, config.providers)

    def install(self, app: "AppBuilder") -> None:
        self.store.bind(app.current_store)
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

    def worst_case(self, ctx: PipelineContext) -> int:
        """The most this request can cost on any target of its route: the prompt plus max_tokens of output.

        A missing, zero or negative `max_tokens` reserves what the target may produce
        without one (a negative one must not make room for other requests while it is
        in flight); a huge
        one costs at most `cost_micro_usd`'s cap (MAX_COST_MICRO_USD), which
        exceeds every budget without overflowing the ledger.
        """
        prompt = ctx.prompt
        input_tokens = estimate_usage(prompt, 0).input_tokens
        unknown = self.settings.unknown_price_reservation_micro_usd
        # The most expensive target, whichever the request ends on: an unpriced one (reserved at the
        # configured amount) must not hide a priced one that costs more.
        costs = [cost if cost is not None else unknown
                 for cost in (_dearest_cost(t, input_tokens, self._output_bound(prompt.params, t))
                              for t in self._table.targets_of(prompt.model))]
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
        self.output_chars = 0
        self.reported_output = 0
        self.tool_calls: Tuple[Tuple[str, int], ...] = ()  # server-side tool calls billed by the call, so far


class BudgetStreamHook(StreamHook):
    """Aborts a stream (the wire's error frame, 402) once its running cost passes the budget left at admission.

    The running cost is the larger of the upstream's reported output tokens and
    an estimate from the characters delivered (4 a token); the request is then
    settled for what was delivered.
    """

    def interest(self) -> StreamInterest:
        return StreamInterest.TEXT | StreamInterest.REASONING | StreamInterest.TOOL_CALLS | StreamInterest.USAGE

    def on_part(self, ctx: PipelineContext, part: StreamPart) -> StreamAction:
        state = ctx.extensions.get(_StreamBudget)
        target = ctx.target
        if state is None or target is None:
            return StreamAction.pass_()
        if isinstance(part, (TextDelta, ReasoningDelta)):
            state.output_chars += len(part.text)
        elif isinstance(part, ToolCallDelta):
            state.output_chars += len(part.arguments)
        elif isinstance(part, UsageUpdate):
            state.reported_output = max(state.reported_output, part.usage.total_output)
            state.tool_calls = part.usage.tool_calls or state.tool_calls
            return StreamAction.pass_()
        output = max(state.reported_output, (state.output_chars + 3) // 4)
        cost = cost_micro_usd(Usage(input_tokens=state.input_tokens, output_tokens=output, reported=False,
                                    tool_calls=state.tool_calls), target.prices)
        if cost is not None and cost > state.headroom:
            return StreamAction.abort(RouteplaneError(
                f"Budget exhausted during the stream: its cost passed the {state.headroom} micro-USD that were left.",
                status=402, kind="budget", code="budget_exhausted"))
        return StreamAction.pass_()
