"""Per-hook statistics and time budgets: every registered hook is wrapped once, at build time.

The wrappers keep each contract's interface, so the pipeline loop is unaware
of them. Counted per (plugin id, stage, hook class): invocations, errors,
denies/blocks, timeouts, total and average latency. A pre-request hook with a
`timeout_ms` budget runs on a small worker pool; past the budget it is either
skipped (fail-open: the request goes on) or denies with 503 (fail-closed), as
its plugin declares — Python cannot stop the late call, which finishes in the
background and must not rely on the request still being in flight.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .hooks.language_model import (
    DecisionKind,
    DenyReason,
    ExecutionHook,
    FallbackDecision,
    HookDecision,
    ObserveHook,
    PreRequestHook,
    RouteHook,
    SettlementRecorder,
    StreamActionKind,
    StreamHook,
)
from .language_model.pipeline import LanguageModelHooks

log = logging.getLogger("routeplane.plugins")


@dataclass(frozen=True)
class HookPolicy:
    timeout_ms: Optional[float] = None
    fail_open: bool = True


class HookStats:
    __slots__ = ("plugin", "stage", "hook", "invocations", "errors", "denies", "timeouts", "total_ms", "_lock")

    def __init__(self, plugin: str, stage: str, hook: str) -> None:
        self.plugin, self.stage, self.hook = plugin, stage, hook
        self.invocations = self.errors = self.denies = self.timeouts = 0
        self.total_ms = 0.0
        self._lock = threading.Lock()

    def add(self, ms: float, *, error: bool = False, deny: bool = False, timeout: bool = False) -> None:
        with self._lock:
            self.invocations += 1
            self.total_ms += ms
            self.errors += error
            self.denies += deny
            self.timeouts += timeout

    def as_dict(self) -> Dict[str, Any]:
        with self._lock:
            n = self.invocations
            return {"plugin": self.plugin, "stage": self.stage, "hook": self.hook, "invocations": n,
                    "errors": self.errors, "denies": self.denies, "timeouts": self.timeouts,
                    "total_ms": round(self.total_ms, 3), "average_ms": round(self.total_ms / n, 4) if n else 0.0}


class PluginStats:
    """All hooks' stats of one worker. (Cross-worker totals: the admin metrics merge per-worker snapshots.)"""

    def __init__(self) -> None:
        self.items: List[HookStats] = []

    def new(self, plugin: str, stage: str, hook: Any) -> HookStats:
        # A plugin may register one hook class twice on a stage (two phrases, say): the second is
        # `Name#2`, since the stats are stored keyed on (worker, plugin, stage, hook).
        name = base = type(hook).__name__
        taken = {(s.plugin, s.stage, s.hook) for s in self.items}
        n = 1
        while (plugin, stage, name) in taken:
            n += 1
            name = f"{base}#{n}"
        s = HookStats(plugin, stage, name)
        self.items.append(s)
        return s

    def snapshot(self) -> List[Dict[str, Any]]:
        return [s.as_dict() for s in self.items]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class _PreRequest(PreRequestHook):
    def __init__(self, inner: PreRequestHook, stats: HookStats, policy: HookPolicy) -> None:
        self.inner, self.stats, self.policy = inner, stats, policy

    def check(self, ctx: Any) -> HookDecision:
        t0 = time.perf_counter()
        try:
            if self.policy.timeout_ms:
                decision = self._bounded(ctx)
            else:
                decision = self.inner.check(ctx)
        except concurrent.futures.TimeoutError:
            self.stats.add(_ms(t0), timeout=True)
            # A hook that authenticates (docs/mounting.md) never fails open: skipping it would admit
            # the caller as anonymous.
            skip = self.policy.fail_open and not getattr(self.inner, "authenticates", False)
            log.warning("pre-request hook %s of plugin %s exceeded %sms: %s", self.stats.hook, self.stats.plugin,
                        self.policy.timeout_ms, "skipped" if skip else "denied")
            if skip:
                return HookDecision.allow()
            return HookDecision.deny(DenyReason.custom(503, f"The {self.stats.plugin} check timed out; try again."))
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0), deny=decision.kind is DecisionKind.DENY)
        return decision

    def _bounded(self, ctx: Any) -> HookDecision:
        # One thread per call, not a fixed pool: with a pool, calls stuck past their budget
        # would fill it and every later call would "time out" while queued, so a hook that
        # answers at once would be skipped forever. The budget counts from when the hook runs.
        outcome: List[Any] = []
        done = threading.Event()

        def call() -> None:
            try:
                outcome.append(("ok", self.inner.check(ctx)))
            except BaseException as exc:  # re-raised on the request thread
                outcome.append(("error", exc))
            finally:
                done.set()

        threading.Thread(target=call, name=f"hook-{self.stats.plugin}", daemon=True).start()
        if not done.wait(self.policy.timeout_ms / 1000.0):
            raise concurrent.futures.TimeoutError()
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value


class _Route(RouteHook):
    def __init__(self, inner: RouteHook, stats: HookStats) -> None:
        self.inner, self.stats = inner, stats

    def resolve(self, chain: List[Any], ctx: Any) -> List[Any]:
        t0 = time.perf_counter()
        try:
            out = self.inner.resolve(chain, ctx)
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0), deny=not out)
        return out


class _Execution(ExecutionHook):
    def __init__(self, inner: ExecutionHook, stats: HookStats) -> None:
        self.inner, self.stats = inner, stats

    def on_success(self, ctx: Any, result: Any) -> Any:
        t0 = time.perf_counter()
        try:
            out = self.inner.on_success(ctx, result)
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0))
        return out

    def on_failure(self, ctx: Any, error: Any) -> FallbackDecision:
        t0 = time.perf_counter()
        try:
            out = self.inner.on_failure(ctx, error)
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0), deny=not out.try_next)
        return out


class _Stream(StreamHook):
    def __init__(self, inner: StreamHook, stats: HookStats) -> None:
        self.inner, self.stats = inner, stats

    def interest(self) -> Any:
        return self.inner.interest()

    def on_part(self, ctx: Any, part: Any) -> Any:
        t0 = time.perf_counter()
        try:
            action = self.inner.on_part(ctx, part)
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0), deny=action.kind is StreamActionKind.ABORT)
        return action

    def on_stream_end(self, ctx: Any, outcome: Any) -> None:
        t0 = time.perf_counter()
        try:
            self.inner.on_stream_end(ctx, outcome)
        except BaseException:
            self.stats.add(_ms(t0), error=True)  # counted when it fails: every hook's errors show
            raise


class _Settlement(SettlementRecorder):
    def __init__(self, inner: SettlementRecorder, stats: HookStats) -> None:
        self.inner, self.stats = inner, stats

    def record(self, settlement: Any) -> None:
        t0 = time.perf_counter()
        try:
            self.inner.record(settlement)
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0))


class _Observe(ObserveHook):
    """Counts on_request_end only (the busiest hooks would cost more to count than they do)."""

    def __init__(self, inner: ObserveHook, stats: HookStats) -> None:
        self.inner, self.stats = inner, stats
        for name in ("on_request_start", "after_phase", "on_hop_start", "on_hop_end", "on_stream_part"):
            setattr(self, name, getattr(inner, name))

    def on_request_end(self, event: Any) -> None:
        t0 = time.perf_counter()
        try:
            self.inner.on_request_end(event)
        except BaseException:
            self.stats.add(_ms(t0), error=True)
            raise
        self.stats.add(_ms(t0))


def _policy(hook: Any, pid: str, policies: Mapping[str, HookPolicy]) -> HookPolicy:
    """The plugin's budget (its class or its config section), else one the hook's own class declares.

    Authors write `timeout_ms` on the hook class as readily as on the plugin; a budget there must not
    be silently ignored, and it is the only one a hook registered without a plugin
    (`Gateway(hooks=[...])`, an app assembled in code) can have.
    """
    policy = policies.get(pid, HookPolicy())
    timeout_ms = getattr(hook, "timeout_ms", None)
    if policy.timeout_ms or timeout_ms is None:
        return policy
    if not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool) or timeout_ms <= 0:
        raise TypeError(f"{type(hook).__name__} (plugin {pid!r}): timeout_ms must be a positive number of "
                        f"milliseconds, got {timeout_ms!r}")
    return HookPolicy(float(timeout_ms), bool(getattr(hook, "fail_open", policy.fail_open)))


def instrument(hooks: LanguageModelHooks, stats: PluginStats,
               policies: Mapping[str, HookPolicy]) -> LanguageModelHooks:
    """Wrap every hook with its counters (and pre-request time budgets from `policies` by plugin id)."""

    def wrap(stage: str, items: Tuple[Tuple[str, Any], ...], make: Any) -> Tuple[Tuple[str, Any], ...]:
        return tuple((pid, make(h, stats.new(pid, stage, h), pid)) for pid, h in items)

    return LanguageModelHooks(
        pre_request=wrap("pre_request", hooks.pre_request,
                         lambda h, s, pid: _PreRequest(h, s, _policy(h, pid, policies))),
        route=wrap("route", hooks.route, lambda h, s, pid: _Route(h, s)),
        execution=wrap("execution", hooks.execution, lambda h, s, pid: _Execution(h, s)),
        stream=wrap("stream", hooks.stream, lambda h, s, pid: _Stream(h, s)),
        settlement=wrap("settlement", hooks.settlement, lambda h, s, pid: _Settlement(h, s)),
        observe=wrap("observe", hooks.observe, lambda h, s, pid: _Observe(h, s)),
    )
