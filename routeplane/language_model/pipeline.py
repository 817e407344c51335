"""The language-model pipeline: pre-request → route → execute → stream → settle → observe."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

from ..errors import (
    HookDenied,
    InternalError,
    NoTargetAvailable,
    RouteplaneError,
    StreamAborted,
    UpstreamError,
    merge_failures,
)
from ..hooks.language_model import (
    DecisionKind,
    ExecutionHook,
    ObserveHook,
    Outcome,
    Phase,
    PreRequestHook,
    RouteHook,
    SettlementRecorder,
    StreamActionKind,
    StreamHook,
    StreamInterest,
)
from ..observers import ObserverDispatcher
from .capability import capable_targets
from .context import PipelineContext
from .cooldown import CooldownTracker, FallbackSettings
from .events import HopEvent, PhaseEvent, RequestEndEvent, RequestStartEvent, StreamPartEvent, error_class
from .executor import Executor
from .first_content import open_until_content
from .pipeline_stream import END, FLUSH, PRIMED, PipelineStream, close_quietly, prepend, primed
from .routing import RoutingTable, RoutingTarget
from .settlement import Attempt, Settlement, cost_micro_usd, frozen
from .stream import GenerationAccumulator, estimate_usage, generation_to_parts, interest_of, is_content, output_chars
from .types import Generation, Prompt, StreamPart, Usage, UsageUpdate

log = logging.getLogger("routeplane.pipeline")


@dataclass(frozen=True)
class LanguageModelHooks:
    """Every registered hook, per stage, in registration order (with its plugin id)."""

    pre_request: Tuple[Tuple[str, PreRequestHook], ...] = ()
    route: Tuple[Tuple[str, RouteHook], ...] = ()
    execution: Tuple[Tuple[str, ExecutionHook], ...] = ()
    stream: Tuple[Tuple[str, StreamHook], ...] = ()
    settlement: Tuple[Tuple[str, SettlementRecorder], ...] = ()
    observe: Tuple[Tuple[str, ObserveHook], ...] = ()


@dataclass
class _Run:
    """Mutable bookkeeping of one request inside the pipeline."""

    ctx: PipelineContext
    attempts: List[Attempt] = field(default_factory=list)
    settled: bool = False
    ttft_ms: Optional[float] = None
    error_class: Optional[str] = None  # events.error_class of the failure, for the end event
    # Usage of an upstream answer that an execution hook then rejected: the provider billed it.
    served_usage: Optional[Usage] = None


class LanguageModelPipeline:
    """Runs one request through the stages. No Flask here: tests drive it directly."""

    def __init__(
        self,
        routing_table: RoutingTable,
        executor: Executor,
        hooks: LanguageModelHooks,
        observers: ObserverDispatcher,
        clock: Callable[[], float] = time.monotonic,
        fallback: Optional[FallbackSettings] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.routing_table = routing_table
        self.executor = executor
        self.hooks = hooks
        self.observers = observers
        self.settlement_errors = 0
        self._clock = clock
        self._sleep = sleep
        self.fallback = fallback or FallbackSettings()
        # Per-worker circuit breakers, one per provider:model and credential (see docs/routing.md).
        self.cooldown = CooldownTracker(self.fallback, clock)

    # --- entry point -------------------------------------------------------

    def run(self, ctx: PipelineContext) -> Union[Generation, PipelineStream]:
        """Returns a Generation, or a PipelineStream when the prompt asked to stream.

        Raises a RouteplaneError for every failure before the first byte; the
        request is settled by then, unless a pre-request hook denied it.
        """
        run = _Run(ctx)
        prompt = ctx.prompt
        self.observers.emit_lazy(
            "on_request_start",
            lambda: RequestStartEvent(
                ctx.request_id, ctx.inbound_protocol, ctx.route, prompt.stream, ctx.identity.account_id, ctx.started_at
            ),
        )
        short_circuit = self._pre_request(run)
        try:
            if short_circuit is not None:
                return self._deliver_direct(run, short_circuit)
            chain = self._route(run)
            if ctx.prompt.stream:
                return self._execute_stream(run, chain)
            return self._execute(run, chain)
        except RouteplaneError as err:
            self._settle_failure(run, err)
            raise
        except Exception as exc:  # a bug in a hook or codec: settle, log, 500
            log.exception("request %s failed inside the pipeline", ctx.request_id)
            err = InternalError()
            self._settle_failure(run, err)
            raise err from exc

    # --- stages ------------------------------------------------------------

    def _pre_request(self, run: _Run) -> Optional[Generation]:
        ctx = run.ctx
        plugin_id, hook = "", None  # the hook running, named in the log if it fails
        try:
            for plugin_id, hook in self.hooks.pre_request:  # noqa: B007 - the failing one is logged below
                decision = hook.check(ctx)
                if decision.kind is DecisionKind.DENY:
                    reason = decision.reason
                    assert reason is not None
                    self._phase(ctx, Phase.PRE_REQUEST, ok=False)
                    run.error_class = error_class(reason.kind)
                    self._end_event(run, None, Usage(reported=False), None, Outcome.DENIED, reason.kind, reason.status)
                    raise HookDenied(reason.message, status=reason.status, kind=reason.kind, retry_after=reason.retry_after,
                                     code=reason.code)
                if decision.kind is DecisionKind.RESPOND:
                    self._phase(ctx, Phase.PRE_REQUEST)
                    return decision.result
        except HookDenied:
            raise
        except RouteplaneError as err:
            run.error_class = error_class(err)
            self._end_event(run, None, Usage(reported=False), None, Outcome.DENIED, err.kind, err.status)
            raise
        except Exception as exc:
            # Fail closed: a pre-request hook that crashes may have been an auth check.
            log.exception("pre-request hook %s of plugin %r failed for request %s", _hook_name(hook), plugin_id,
                          ctx.request_id)
            err = InternalError()
            run.error_class = error_class(err)
            self._end_event(run, None, Usage(reported=False), None, Outcome.ERROR, err.kind, err.status)
            raise err from exc
        finally:
            ctx.lock_prompt()
        self._phase(ctx, Phase.PRE_REQUEST)
        return None

    def _route(self, run: _Run) -> List[RoutingTarget]:
        ctx = run.ctx
        chain = ctx.chain = self.route_chain(ctx)
        self._phase(ctx, Phase.ROUTE)
        if not chain:
            raise NoTargetAvailable(f"No upstream target is available for model {ctx.prompt.model!r}.")
        return chain

    def route_chain(self, ctx: PipelineContext) -> List[RoutingTarget]:
        """The route stage without its event: the model's targets, as the route hooks leave them, less
        those that cannot take the prompt (language_model/capability.py; none left that could is a 400).
        count_tokens' dry run takes the same chain, previewed: looking does not turn a round robin."""
        table = self.routing_table
        chain = table.preview(ctx.prompt.model) if ctx.dry_run else table.resolve(ctx.prompt.model)
        for _plugin_id, hook in self.hooks.route:
            chain = list(hook.resolve(list(chain), ctx))
        return capable_targets(ctx.prompt, chain)

    def first_callable(self, chain: List[RoutingTarget]) -> Optional[RoutingTarget]:
        """The target a request along `chain` would call first (as `_hops`, claiming no probe): a dry run that
        forwards (count_tokens) must not pay a dead head's timeout that the request itself would skip."""
        for target in chain:
            if not self.cooldown.would_skip(target.breaker_key):
                return target
        return chain[0] if chain else None

    def _attempt(self, run: _Run, chain: List[RoutingTarget], call: Callable[[RoutingTarget], Any],
                 streaming: bool = False) -> Any:
        """Call targets in order until one succeeds; fallback rules live here.

        Only failures before the first byte reaches the client come through
        here (a stream's opening, up to its first content, is pulled inside
        `call`), so a fallback can never splice two upstreams into one
        answer. A stream's breaker verdict waits for the stream's end (see
        `_stream`).
        """
        ctx = run.ctx
        errors: List[UpstreamError] = []
        for hop, target in enumerate(self._hops(ctx, chain)):
            wait = self.fallback.backoff_before(hop)
            if wait > 0:
                self._sleep(wait)
            ctx.target = target
            if self.observers.active:
                self.observers.emit("on_hop_start",
                                    HopEvent(ctx.request_id, hop, target.provider, target.model, target.protocol))
            t0 = self._clock()
            try:
                result = call(target)
            except UpstreamError as err:
                latency = (self._clock() - t0) * 1000.0
                self.cooldown.record_failure(target.breaker_key, err)
                self._record_attempt(run, hop, target, latency, err)
                errors.append(err)
                for _pid, hook in self.hooks.execution:
                    decision = hook.on_failure(ctx, err)
                    if not decision.try_next:
                        if decision.error is not None:
                            raise decision.error from err
                        raise _merged(errors) from err
                if not err.retriable:
                    raise
                continue
            except BaseException:
                self.cooldown.release(target.breaker_key)  # a bug or a client gone: no verdict on the target
                raise
            latency = (self._clock() - t0) * 1000.0
            if not streaming:
                self.cooldown.record_success(target.breaker_key)
            self._record_attempt(run, hop, target, latency, None)
            if isinstance(result, Generation):
                result = _with_usage(ctx.prompt, result)
                run.served_usage = result.usage  # billed even if an execution hook now refuses the answer
            else:
                run.served_usage = estimate_usage(ctx.prompt, 0)  # a stream: its input was billed
            try:
                return self._on_success(ctx, result)
            except BaseException:
                if streaming:  # the stream's verdict was owed at its end, which now never comes
                    self.cooldown.release(target.breaker_key)
                raise
        if errors:
            raise _merged(errors)
        raise NoTargetAvailable("No upstream target is available.")  # empty chain guarded in _route

    def _on_success(self, ctx: PipelineContext, result: Any) -> Any:
        for _pid, hook in self.hooks.execution:
            replacement = hook.on_success(ctx, result)
            # Non-streaming only: a hook may return a checked/redacted Generation.
            if isinstance(replacement, Generation) and isinstance(result, Generation):
                result = replacement
        return result

    def _hops(self, ctx: PipelineContext, chain: List[RoutingTarget]) -> Iterator[RoutingTarget]:
        """The chain minus targets whose breaker is open, claimed lazily (a half-open target is probed only
        when the request actually reaches it). When every target is cooling down the head is tried anyway:
        a request that might succeed beats a certain 503, and that call doubles as a probe."""
        skipped: List[str] = []
        called = False
        for target in chain:
            if self.cooldown.acquire(target.breaker_key):
                called = True
                yield target
            else:
                skipped.append(target.label)
                ctx.plugin_metadata("routeplane.routing")["cooling_down"] = list(skipped)
        if not called and chain:
            yield chain[0]

    def _record_attempt(
        self, run: _Run, hop: int, target: RoutingTarget, latency: float, err: Optional[UpstreamError]
    ) -> None:
        attempt = Attempt(
            provider=target.provider,
            model=target.model,
            protocol=target.protocol,
            ok=err is None,
            latency_ms=round(latency, 3),
            status=(err.upstream_status or err.status) if err else 200,
            error_type=type(err).__name__ if err else None,
            error=err.message[:300] if err else None,
            offset_ms=round(max(0.0, run.ctx.elapsed_ms() - latency), 3),
        )
        run.attempts.append(attempt)
        rid = run.ctx.request_id
        self.observers.emit_lazy(
            "on_hop_end",
            lambda: HopEvent(
                rid, hop, target.provider, target.model, target.protocol, err is None, attempt.latency_ms,
                attempt.status, attempt.error_type,
            ),
        )

    def _execute(self, run: _Run, chain: List[RoutingTarget]) -> Generation:
        ctx = run.ctx
        gen: Generation = self._attempt(run, chain, lambda t: self.executor.complete(t, ctx.prompt, ctx))
        ctx.result = gen
        self._phase(ctx, Phase.EXECUTE)
        estimated = _with_usage(ctx.prompt, gen)  # (again: a hook may have replaced the answer)
        if estimated is not gen:
            gen = ctx.result = estimated
        self._settle(run, gen.usage, Outcome.SUCCESS, None, 200)
        return gen

    def _execute_stream(self, run: _Run, chain: List[RoutingTarget]) -> PipelineStream:
        ctx = run.ctx

        def open_stream(target: RoutingTarget) -> Tuple[StreamPart, Iterator[StreamPart]]:
            upstream = iter(self.executor.stream(target, ctx.prompt, ctx))
            try:
                # Pull the opening, up to the first content, before answering (first_content.py): a
                # failure this early can still fall back, and an upstream 429 stays a 429.
                first, rest = open_until_content(upstream, target.provider, ctx.inbound_protocol)
            except BaseException:
                close_quietly(upstream)
                raise
            opened.append(upstream)
            return first, rest

        opened: List[Iterator[StreamPart]] = []
        try:
            first, rest = self._attempt(run, chain, open_stream, streaming=True)
            self._phase(ctx, Phase.EXECUTE)
            return PipelineStream(primed(self._stream(run, first, rest, opened[-1])), ctx)
        except BaseException:
            # An execution hook rejected an opened stream, or the stream could not
            # start: release its connection now.
            for it in opened:
                close_quietly(it)
            raise

    def _stream(self, run: _Run, first: StreamPart, rest: Iterator[StreamPart], upstream: Iterator[StreamPart],
                answered_locally: bool = False) -> Iterator[StreamPart]:
        """`first`, then `rest` (held parts included), to the client; `upstream` is what to close."""
        ctx = run.ctx
        acc = GenerationAccumulator()
        outcome = Outcome.SUCCESS
        error: Optional[RouteplaneError] = None
        complete = False  # the upstream's answer ended well: its verdict and its bill, whatever the client does
        observing = self.observers.active
        streamed_from = ctx.target.breaker_key if ctx.target is not None else None  # breaker verdict owed at the end
        hooks: List[Tuple[str, StreamHook, StreamInterest]] = []
        try:
            hooks = [(pid, h, h.interest()) for pid, h in self.hooks.stream]
            yield PRIMED  # see primed(): from here on, close() always reaches the finally below
            for part in prepend(first, rest):
                for out in self._apply_stream_hooks(ctx, hooks, part):
                    acc.add(out)
                    if run.ttft_ms is None and is_content(out, ctx.inbound_protocol):
                        run.ttft_ms = ctx.elapsed_ms()
                    if observing:
                        self.observers.emit("on_stream_part", StreamPartEvent(ctx.request_id, out, ctx.elapsed_ms()))
                    yield out
                if not ctx.upstream_buffered:  # the next pull may wait on the network: write out what we have
                    yield FLUSH
            if acc.usage is None and not answered_locally:
                # The upstream reported no usage (some OpenAI-compatible servers): a client that
                # asked for usage gets the same estimate settlement records, not nothing.
                estimate = UsageUpdate(estimate_usage(ctx.prompt, acc.output_weight))
                acc.add(estimate)
                yield estimate
            complete = True
            # Settled at the next pull: a consumer that writes the end frames first pulls only once they
            # were written, and a client gone during that write closes the stream here instead.
            yield END
        except GeneratorExit:
            outcome = Outcome.CLIENT_DISCONNECTED
            raise
        except StreamAborted as err:
            outcome, error = Outcome.ABORTED, err
            raise
        except RouteplaneError as err:
            # A stream hook's own error (a guardrail) is not the provider's failure.
            outcome = Outcome.UPSTREAM_ERROR if isinstance(err, UpstreamError) else Outcome.ERROR
            error = err
            if isinstance(err, UpstreamError) and ctx.target is not None:
                # No fallback this late, but a provider that stalls or cuts
                # streams should still cool down (docs/routing.md).
                self.cooldown.record_failure(ctx.target.breaker_key, err)
                streamed_from = None
            raise
        except Exception as exc:
            # A stream hook that raised left a note naming itself (_apply_stream_hooks).
            where = [n for n in getattr(exc, "__notes__", ()) if n.startswith("in stream hook ")]
            log.exception("stream of request %s failed%s", ctx.request_id, f" ({where[-1]})" if where else "")
            outcome, error = Outcome.ERROR, InternalError()
            raise error from exc
        finally:
            close_quietly(upstream)
            if streamed_from is not None:
                if outcome is Outcome.SUCCESS or complete:
                    self.cooldown.record_success(streamed_from)
                else:  # the client left or a policy stopped it: no verdict on the upstream
                    self.cooldown.release(streamed_from)
            ctx.result = acc.generation()
            for pid, h, _i in hooks:
                try:
                    h.on_stream_end(ctx, outcome)
                except Exception:
                    log.exception("stream hook %s of plugin %r: on_stream_end failed for request %s", _hook_name(h),
                                  pid, ctx.request_id)
            usage = acc.usage
            if answered_locally:
                # A pre-request hook's answer: its usage is what it says (a cache hit costs nothing),
                # exactly as when it is delivered without a stream.
                usage = usage or Usage(reported=False)
            elif usage is None or (not usage.reported and usage.total_output == 0):
                usage = replace(estimate_usage(ctx.prompt, acc.output_weight), tool_calls=usage and usage.tool_calls or ())
            elif not complete and usage.total_output < (acc.output_chars + 3) // 4:
                # Cut short before the upstream's final usage (often only the input was reported
                # at the start): bill the output that was delivered, never a silent zero.
                delivered = (acc.output_chars + 3) // 4 - usage.reasoning_tokens
                usage = replace(usage, output_tokens=max(usage.output_tokens, delivered), reported=False)
            self._phase(ctx, Phase.STREAM, ok=outcome is Outcome.SUCCESS)
            status = 200 if error is None else error.status
            run.error_class = error_class(error, outcome.value)
            self._settle(run, usage, outcome, _error_type(error), status)

    def _apply_stream_hooks(self, ctx: PipelineContext, hooks: list, part: StreamPart) -> List[StreamPart]:
        parts = [part]
        for pid, hook, interest in hooks:
            nxt: List[StreamPart] = []
            for p in parts:
                if not (interest & interest_of(p)):
                    nxt.append(p)
                    continue
                try:
                    action = hook.on_part(ctx, p)
                except Exception as exc:
                    exc.add_note(f"in stream hook {_hook_name(hook)} of plugin {pid!r}")  # for the log line
                    raise
                if action.kind is StreamActionKind.PASS:
                    nxt.append(p)
                elif action.kind is StreamActionKind.REPLACE:
                    nxt.extend(action.parts)
                elif action.kind is StreamActionKind.ABORT:
                    err = action.error
                    if not isinstance(err, StreamAborted):
                        err = StreamAborted(
                            err.message if err else "The stream was stopped by a policy.",
                            status=err.status if err else 400,
                            kind=err.kind if err else "guardrail",
                            code=err.code if err else None,
                        )
                    raise err
            parts = nxt
        return parts

    def _deliver_direct(self, run: _Run, gen: Generation) -> Union[Generation, PipelineStream]:
        """A pre-request hook answered: no upstream, but settle and observe as usual."""
        ctx = run.ctx
        if not ctx.prompt.stream:  # execution hooks check it as an upstream's answer; a stream's, stream hooks
            gen = ctx.result = self._on_success(ctx, gen)
            self._settle(run, gen.usage, Outcome.SUCCESS, None, 200)
            return gen
        ctx.result = gen
        parts = generation_to_parts(gen)
        first = next(parts)
        return PipelineStream(primed(self._stream(run, first, parts, parts, answered_locally=True)), ctx)

    # --- settle and observe ------------------------------------------------

    def _settle_failure(self, run: _Run, err: RouteplaneError) -> None:
        run.error_class = error_class(err)
        usage = run.served_usage or Usage(reported=False)
        self._settle(run, usage, Outcome.UPSTREAM_ERROR if isinstance(err, UpstreamError) else Outcome.ERROR,
                     _error_type(err), err.status)

    def _settle(self, run: _Run, usage: Usage, outcome: Outcome, error_type: Optional[str], status: int) -> None:
        if run.settled:
            return
        run.settled = True
        ctx = run.ctx
        target = ctx.target
        # No target: nothing was called (a refusal, or a hook's own answer, whatever usage it reports),
        # so nothing to pay, as the budget recorder counts it too.
        cost = cost_micro_usd(usage, target.prices) if target is not None else 0
        settlement = Settlement(
            request_id=ctx.request_id,
            started_at=ctx.started_at,
            inbound_protocol=ctx.inbound_protocol,
            route=ctx.route,
            streamed=ctx.prompt.stream,
            outcome=outcome.value,
            provider=target.provider if target else None,
            model=target.model if target else None,
            account_id=ctx.identity.account_id,
            session_id=ctx.identity.session_id,
            usage=usage,
            cost_micro_usd=cost,
            latency_ms=round(ctx.elapsed_ms(), 3),
            ttft_ms=round(run.ttft_ms, 3) if run.ttft_ms is not None else None,
            attempts=tuple(run.attempts),
            error_type=error_type,
            status=status,
            metadata=frozen(ctx.metadata),  # one recorder cannot change what the next one reads
        )
        for _pid, recorder in self.hooks.settlement:
            try:
                recorder.record(settlement)
            except Exception:
                self.settlement_errors += 1
                log.exception("settlement recorder %s failed for request %s", type(recorder).__name__, ctx.request_id)
        self._phase(ctx, Phase.SETTLE)
        self._end_event(run, target, usage, cost, outcome, error_type, status, settlement.metadata)

    def _end_event(self, run: _Run, target: Optional[RoutingTarget], usage: Usage, cost: Optional[int],
                   outcome: Outcome, error_type: Optional[str], status: int,
                   metadata: Optional[Mapping[str, Any]] = None) -> None:
        ctx = run.ctx
        self.observers.emit_lazy(
            "on_request_end",
            lambda: RequestEndEvent(
                request_id=ctx.request_id,
                inbound_protocol=ctx.inbound_protocol,
                route=ctx.route,
                provider=target.provider if target else None,
                model=target.model if target else None,
                account_id=ctx.identity.account_id,
                streamed=ctx.prompt.stream,
                latency_ms=round(ctx.elapsed_ms(), 3),
                ttft_ms=run.ttft_ms,
                usage=usage,
                cost_micro_usd=cost,
                success=outcome is Outcome.SUCCESS,
                outcome=outcome.value,
                error_type=error_type,
                status=status,
                attempts=tuple(run.attempts),
                error_class=run.error_class,
                metadata=frozen(ctx.metadata) if metadata is None else metadata,  # the settlement's, shared
                started_at=ctx.started_at,
            ),
        )

    def _phase(self, ctx: PipelineContext, phase: Phase, ok: bool = True) -> None:
        self.observers.emit_lazy("after_phase", lambda: PhaseEvent(ctx.request_id, phase, ctx.elapsed_ms(), ok))


def _with_usage(prompt: Prompt, gen: Generation) -> Generation:
    """The answer with an estimate of its usage when the upstream sent none: billed, as for streams,
    never a silent zero, and shown to the client (as a stream's client sees it)."""
    if gen.usage.reported or gen.usage.total:
        return gen
    return replace(gen, usage=replace(estimate_usage(prompt, output_chars(gen)), tool_calls=gen.usage.tool_calls))


def _merged(errors: List[UpstreamError]) -> UpstreamError:
    """The error the client sees after the last attempt, chained to that attempt's error."""
    merged = merge_failures(errors)
    if merged is not errors[-1]:
        merged.__cause__ = errors[-1]
    return merged


def _error_type(err: Optional[RouteplaneError]) -> Optional[str]:
    return None if err is None else err.kind


def _hook_name(hook: Any) -> str:
    """A hook's class for the log, under the plugin_stats wrapper that counts its calls."""
    return type(getattr(hook, "inner", hook)).__name__
