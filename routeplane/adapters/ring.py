"""Ring-style plugins (name, hook ring, execute(ctx) → passthrough/modify/block/cache_hit) on routeplane's hooks.

Rings map onto stages:

| ring          | routeplane hook                     | ctx.body                                  |
|---------------|-------------------------------------|-------------------------------------------|
| `ingress`     | pre-request (first)                 | the request, OpenAI Chat shaped           |
| `pre_flight`  | pre-request                         | the request, OpenAI Chat shaped           |
| `routing`     | route                               | `{"model", "targets": [{provider, model}]}`|
| `post_flight` | execution on_success (non-streaming, cache hits too) | the response, OpenAI Chat shaped |
| `background`  | observe on_request_end (thread pool)| the request-end event as a dict           |

Invalid results are corrected as documented: anything that is not a
RingResult counts as an error and passes through; a block status below 400
becomes 403 and above 599 becomes 500; `modify` on `background` is ignored.
A `timeout_ms` overrun counts as a timeout and passes through (fail-open);
the call still finishes on its worker thread, because Python cannot stop a
thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from ..app import AppBuilder, Plugin, PluginId
from ..errors import HookDenied, RouteplaneError
from ..hooks.language_model import (
    DenyReason,
    ExecutionHook,
    HookDecision,
    ObserveHook,
    PreRequestHook,
    RouteHook,
)
from ..language_model.routing import RoutingTarget
from ..language_model.types import Generation
from ..protocols.openai_chat import request as oc_request
from ..protocols.openai_chat import response as oc_response

log = logging.getLogger("routeplane.adapters.ring")


class Ring(str, enum.Enum):
    INGRESS = "ingress"
    PRE_FLIGHT = "pre_flight"
    ROUTING = "routing"
    POST_FLIGHT = "post_flight"
    BACKGROUND = "background"


@dataclass(frozen=True)
class RingResult:
    kind: str  # passthrough | modify | block | cache_hit
    body: Optional[Dict[str, Any]] = None
    status: int = 403
    error_type: str = "blocked"
    message: str = ""

    @classmethod
    def passthrough(cls) -> "RingResult":
        return cls("passthrough")

    @classmethod
    def modify(cls, body: Dict[str, Any]) -> "RingResult":
        return cls("modify", body=body)

    @classmethod
    def block(cls, status: int, error_type: str, message: str) -> "RingResult":
        return cls("block", status=status, error_type=error_type, message=message)

    @classmethod
    def cache_hit(cls, response: Dict[str, Any]) -> "RingResult":
        return cls("cache_hit", body=response)


@dataclass
class RingContext:
    request_id: str
    ring: Ring
    body: Dict[str, Any]
    headers: Mapping[str, str]
    metadata: Dict[str, Any]  # shared by every ring plugin of the request
    state: Dict[str, Any]  # this plugin's key-value store, kept across requests (per worker)
    response: Optional[Dict[str, Any]] = None


class BasePlugin:
    """Subclass and set `name` and `hook`; implement `execute(ctx)` (plain or `async def`)."""

    name: str = "ring-plugin"
    hook: Ring = Ring.PRE_FLIGHT
    version: str = "0.0.0"
    timeout_ms: Optional[int] = None

    def on_load(self, config: Mapping[str, Any]) -> None:
        return None

    def on_unload(self) -> None:
        return None

    def execute(self, ctx: RingContext) -> RingResult:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class RingStats:
    invocations: int = 0
    errors: int = 0
    blocks: int = 0
    timeouts: int = 0
    total_ms: float = 0.0

    @property
    def average_ms(self) -> float:
        return self.total_ms / self.invocations if self.invocations else 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "average_ms": round(self.average_ms, 3)}


class _Runner:
    """Runs one ring plugin with its timeout, counting what happened."""

    def __init__(self, plugin: BasePlugin) -> None:
        self.plugin = plugin
        self.stats = RingStats()
        self.state: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def run(self, ctx: RingContext) -> RingResult:
        t0 = time.perf_counter()
        outcome = "ok"
        try:
            result = self._call(ctx)
            if not isinstance(result, RingResult):
                outcome = "error"
                log.warning("ring plugin %s returned %r, not a RingResult: passing through",
                            self.plugin.name, type(result).__name__)
                result = RingResult.passthrough()
            elif result.kind == "block":
                outcome = "block"
                status = result.status if isinstance(result.status, int) else 403
                if status < 400:
                    status = 403
                elif status > 599:
                    status = 500
                result = dataclasses.replace(result, status=status)
        except concurrent.futures.TimeoutError:
            outcome, result = "timeout", RingResult.passthrough()
        except Exception:
            outcome, result = "error", RingResult.passthrough()
            log.exception("ring plugin %s failed: passing through", self.plugin.name)
        with self._lock:
            s = self.stats
            s.invocations += 1
            s.total_ms += (time.perf_counter() - t0) * 1000.0
            if outcome == "error":
                s.errors += 1
            elif outcome == "block":
                s.blocks += 1
            elif outcome == "timeout":
                s.timeouts += 1
        return result

    def _call(self, ctx: RingContext) -> Any:
        fn = self.plugin.execute
        timeout = self.plugin.timeout_ms / 1000.0 if self.plugin.timeout_ms else None
        if inspect.iscoroutinefunction(fn):
            async def bounded() -> Any:
                return await asyncio.wait_for(fn(ctx), timeout)

            try:
                return asyncio.run(bounded())
            except asyncio.TimeoutError:
                raise concurrent.futures.TimeoutError() from None
        if timeout is None:
            return fn(ctx)
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix=f"ring-{self.plugin.name}")
        return self._pool.submit(fn, ctx).result(timeout)


def _request_body(ctx: Any) -> Dict[str, Any]:
    prompt = ctx.prompt
    body = oc_request.encode_request(prompt, RoutingTarget("ring", prompt.model, "openai_chat"), prompt.stream)
    body.pop("stream_options", None)
    if prompt.stream and prompt.include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def _metadata(ctx: Any) -> Dict[str, Any]:
    return ctx.plugin_metadata("ring")


class _PreRequest(PreRequestHook):
    def __init__(self, runners: List[_Runner]) -> None:
        self.runners = runners

    def check(self, ctx: Any) -> HookDecision:
        for runner in self.runners:
            rctx = RingContext(ctx.request_id, runner.plugin.hook, _request_body(ctx), ctx.headers, _metadata(ctx),
                               runner.state)
            result = runner.run(rctx)
            if result.kind == "block":
                return HookDecision.deny(DenyReason(result.error_type, result.message or "Blocked by a plugin.",
                                                    result.status))
            if result.kind == "cache_hit" and result.body is not None:
                gen = oc_response.decode_response(result.body, RoutingTarget("cache", ctx.prompt.model, "openai_chat"))
                return HookDecision.respond(gen)
            if result.kind == "modify" and result.body is not None:
                body = dict(result.body)
                body.setdefault("model", ctx.prompt.model)
                new = oc_request.decode_request(body)
                ctx.replace_prompt(new.replace(stream=ctx.prompt.stream, include_usage=ctx.prompt.include_usage))
        return HookDecision.allow()


class _Route(RouteHook):
    def __init__(self, runners: List[_Runner]) -> None:
        self.runners = runners

    def resolve(self, chain: List[RoutingTarget], ctx: Any) -> List[RoutingTarget]:
        for runner in self.runners:
            body = {"model": ctx.prompt.model, "targets": [{"provider": t.provider, "model": t.model} for t in chain]}
            result = runner.run(RingContext(ctx.request_id, Ring.ROUTING, body, ctx.headers, _metadata(ctx),
                                            runner.state))
            if result.kind == "block":
                raise HookDenied(result.message or "Blocked by a plugin.", status=result.status, kind=result.error_type)
            if result.kind == "modify" and result.body is not None:
                wanted = result.body.get("targets") or []
                by_key = {(t.provider, t.model): t for t in chain}
                chain = [by_key[(w.get("provider"), w.get("model"))] for w in wanted
                         if isinstance(w, dict) and (w.get("provider"), w.get("model")) in by_key]
        return chain


class _PostFlight(ExecutionHook):
    def __init__(self, runners: List[_Runner]) -> None:
        self.runners = runners

    def on_success(self, ctx: Any, result: Any) -> Optional[Generation]:
        if not isinstance(result, Generation):
            return None  # streams: post-flight rings see non-streaming responses only
        gen = result
        for runner in self.runners:
            rctx = RingContext(ctx.request_id, Ring.POST_FLIGHT, _request_body(ctx), ctx.headers, _metadata(ctx),
                               runner.state, response=oc_response.encode_response(gen, ctx.prompt))
            out = runner.run(rctx)
            if out.kind == "block":
                raise HookDenied(out.message or "Blocked by a plugin.", status=out.status, kind=out.error_type)
            if out.kind in ("modify", "cache_hit") and out.body is not None:
                target = ctx.target or RoutingTarget("ring", ctx.prompt.model, "openai_chat")
                gen = oc_response.decode_response(out.body, target)
        return gen if gen is not result else None


class _Background(ObserveHook):
    def __init__(self, runners: List[_Runner]) -> None:
        self.runners = runners

    def on_request_end(self, event: Any) -> None:
        body = dataclasses.asdict(event)
        for runner in self.runners:
            runner.run(RingContext(event.request_id, Ring.BACKGROUND, body, {}, {}, runner.state))


class RingPluginAdapter(Plugin):
    """Installs ring-style plugins as one routeplane plugin; `stats()` reports per ring plugin."""

    id = PluginId("ring")

    def __init__(self, plugins: List[BasePlugin], config: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 plugin_id: str = "ring") -> None:
        self.id = PluginId(plugin_id)
        self.runners = [_Runner(p) for p in plugins]
        for p in plugins:
            p.on_load(dict((config or {}).get(p.name, {})))

    def install(self, app: AppBuilder) -> None:
        lm = app.language_model_builder()
        by_ring: Dict[Ring, List[_Runner]] = {r: [] for r in Ring}
        for runner in self.runners:
            by_ring[Ring(runner.plugin.hook)].append(runner)
        pre = by_ring[Ring.INGRESS] + by_ring[Ring.PRE_FLIGHT]
        if pre:
            lm.pre_request_hook(_PreRequest(pre))
        if by_ring[Ring.ROUTING]:
            lm.route_hook(_Route(by_ring[Ring.ROUTING]))
        if by_ring[Ring.POST_FLIGHT]:
            lm.execution_hook(_PostFlight(by_ring[Ring.POST_FLIGHT]))
        if by_ring[Ring.BACKGROUND]:
            lm.observe_hook(_Background(by_ring[Ring.BACKGROUND]))

    def stats(self) -> Dict[str, Dict[str, Any]]:
        return {r.plugin.name: r.stats.as_dict() for r in self.runners}

    def unload(self) -> None:
        for r in self.runners:
            try:
                r.plugin.on_unload()
            except Exception:
                log.exception("on_unload of ring plugin %s failed", r.plugin.name)


__all__ = ["BasePlugin", "Ring", "RingContext", "RingPluginAdapter", "RingResult", "RingStats", "RouteplaneError"]
