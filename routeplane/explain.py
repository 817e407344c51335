"""Dry run of a request: which hooks decide what, the routing chain with prices, the worst-case charge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from .errors import RouteplaneError
from .hooks.language_model import DecisionKind
from .language_model.context import PipelineContext
from .language_model.routing import RoutingTarget
from .language_model.settlement import cost_micro_usd
from .language_model.stream import estimate_tokens, prompt_text
from .language_model.types import Prompt, Usage
from .protocols import client_codecs

if TYPE_CHECKING:  # pragma: no cover
    from .app import App

DEFAULT_WORST_CASE_OUTPUT = 4096


def _name(hook: Any) -> str:
    return type(getattr(hook, "inner", hook)).__name__


def worst_case_cost(prompt: Prompt, target: RoutingTarget) -> Optional[int]:
    """Estimated input plus `max_tokens` (or 4096) of output at the target's prices; None when unpriced."""
    usage = Usage(
        input_tokens=max(1, estimate_tokens(prompt_text(prompt))),
        output_tokens=prompt.params.max_tokens if (prompt.params.max_tokens or 0) > 0 else DEFAULT_WORST_CASE_OUTPUT,
        reported=False,
    )
    return cost_micro_usd(usage, target.prices)


def _target_row(prompt: Prompt, t: RoutingTarget) -> Dict[str, Any]:
    prices = {k: v for k, v in vars(t.prices).items() if v is not None}
    return {"provider": t.provider, "model": t.model, "protocol": t.protocol, "prices_usd_per_mtok": prices,
            "worst_case_cost_micro_usd": worst_case_cost(prompt, t)}


def explain(app: "App", wire: str, body: Any, headers: Mapping[str, str], credential: Optional[str],
            request_id: str = "explain") -> Dict[str, Any]:
    """Runs the pre-request and route stages on a dry-run context; never calls an upstream."""
    codecs = client_codecs()
    if wire not in codecs:
        raise RouteplaneError(f"Unknown wire {wire!r}; one of {sorted(codecs)}.", status=400, kind="invalid_request")
    prompt = codecs[wire].decode_request(body)
    ctx = PipelineContext(request_id, wire, prompt, headers, credential=credential)
    ctx.dry_run = True
    hooks = app.pipeline.hooks
    steps: List[Dict[str, Any]] = []
    verdict = "allow"
    for plugin_id, hook in hooks.pre_request:
        try:
            decision = hook.check(ctx)
        except RouteplaneError as err:
            steps.append({"stage": "pre_request", "plugin": plugin_id, "hook": _name(hook),
                          "decision": "error", "status": err.status, "message": err.message})
            verdict = "error"
            break
        row: Dict[str, Any] = {"stage": "pre_request", "plugin": plugin_id, "hook": _name(hook),
                               "decision": decision.kind.value}
        if decision.kind is DecisionKind.DENY and decision.reason is not None:
            row.update(status=decision.reason.status, message=decision.reason.message)
        steps.append(row)
        if decision.kind is not DecisionKind.ALLOW:
            verdict = decision.kind.value
            break
    ctx.lock_prompt()
    chain: List[RoutingTarget] = []
    routing: Dict[str, Any] = {}
    if verdict == "allow":
        try:
            chain = app.pipeline.routing_table.preview(ctx.prompt.model)  # a dry run: the rotation stays
            routing["resolved"] = [_target_row(ctx.prompt, t) for t in chain]
            for plugin_id, hook in hooks.route:
                chain = list(hook.resolve(list(chain), ctx))
                steps.append({"stage": "route", "plugin": plugin_id, "hook": _name(hook),
                              "chain": [t.label for t in chain]})
        except RouteplaneError as err:
            verdict = "error"
            routing["error"] = {"status": err.status, "message": err.message}
    later = {stage: [{"plugin": pid, "hook": _name(h)} for pid, h in getattr(hooks, stage)]
             for stage in ("execution", "stream", "settlement", "observe")}
    head_cost = worst_case_cost(ctx.prompt, chain[0]) if chain else None
    note = "worst case of the head target: estimated input + max_tokens (4096 when unset) of output"
    from .auth.budget import BudgetHook  # here: the auth package imports the app, which imports this module

    budget = next((h.plugin for h in (getattr(h, "inner", h) for _pid, h in hooks.pre_request)  # unwrap stats
                   if isinstance(h, BudgetHook)), None)
    if budget is not None and chain:
        head_cost, note = budget.worst_case(ctx), "what the budget plugin reserves: its worst case over the route"
    identity = ctx.identity
    return {
        "verdict": verdict,
        "model": prompt.model,
        "stream": prompt.stream,
        "steps": steps,
        "chain": [_target_row(ctx.prompt, t) for t in chain],
        **routing,
        "later_stages": later,
        "budget": {
            "account_id": identity.account_id,
            "limit_micro_usd": identity.budget_micro_usd,
            "would_reserve_micro_usd": head_cost,
            "note": note,
        },
        "estimated_input_tokens": max(1, estimate_tokens(prompt_text(ctx.prompt))),
        "max_output_tokens": prompt.params.max_tokens or DEFAULT_WORST_CASE_OUTPUT,
    }
