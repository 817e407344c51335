"""Pre/post-style plugins (init, pre_hook, post_hook, transport_interceptor, cleanup) on routeplane's hooks.

Contract kept from that style:
- `pre_hook(ctx, req)` runs in registration order and returns `(req, None)`
  to continue (a changed `req` replaces the request) or `(req, ShortCircuit)`
  to answer with `ShortCircuit(response=...)` or fail with
  `ShortCircuit(error=PluginError(...))`;
- `post_hook(ctx, resp, err)` runs in REVERSE order, and only for plugins
  whose pre hook ran (symmetry); it may replace the response, turn it into an
  error, or recover an error into a response;
- `transport_interceptor(headers, body)` sees the raw JSON body and headers
  before the wire is decoded;
- `cleanup()` runs when the worker shuts down.
Requests and responses are OpenAI Chat shaped dicts whatever the client's
wire. For streams, post hooks run once, when the stream has been settled, and
can only observe (the bytes already reached the client).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..app import AppBuilder, Plugin, PluginId
from ..errors import HookDenied
from ..hooks.language_model import (
    DenyReason,
    ExecutionHook,
    FallbackDecision,
    HookDecision,
    Outcome,
    PreRequestHook,
    StreamAction,
    StreamHook,
    StreamInterest,
)
from ..language_model.routing import RoutingTarget
from ..language_model.types import Generation
from ..protocols.openai_chat import request as oc_request
from ..protocols.openai_chat import response as oc_response

log = logging.getLogger("routeplane.adapters.prepost")


@dataclass(frozen=True)
class PluginError:
    status: int
    message: str
    type: str = "plugin_error"


@dataclass(frozen=True)
class ShortCircuit:
    response: Optional[Dict[str, Any]] = None
    error: Optional[PluginError] = None


class PrePostPlugin:
    name: str = "prepost-plugin"

    def init(self, config: Mapping[str, Any]) -> None:
        return None

    def pre_hook(self, ctx: Dict[str, Any], req: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[ShortCircuit]]:
        return req, None

    def post_hook(self, ctx: Dict[str, Any], resp: Optional[Dict[str, Any]],
                  err: Optional[PluginError]) -> Tuple[Optional[Dict[str, Any]], Optional[PluginError]]:
        return resp, err

    def transport_interceptor(self, headers: Dict[str, str], body: Any) -> Tuple[Dict[str, str], Any]:
        return headers, body

    def cleanup(self) -> None:
        return None


@dataclass
class _State:
    """Per request: which plugins' pre hooks ran, and the context dict they share."""

    shared: Dict[str, Any] = field(default_factory=dict)
    ran: List[PrePostPlugin] = field(default_factory=list)
    posted: bool = False


def _run_posts(state: _State, resp: Optional[Dict[str, Any]], err: Optional[PluginError]
               ) -> Tuple[Optional[Dict[str, Any]], Optional[PluginError]]:
    state.posted = True
    for plugin in reversed(state.ran):
        try:
            resp, err = plugin.post_hook(state.shared, resp, err)
        except Exception:  # a failing post hook is logged, never surfaced
            log.exception("post_hook of %s failed", plugin.name)
    return resp, err


def _target(ctx: Any) -> RoutingTarget:
    return ctx.target or RoutingTarget("prepost", ctx.prompt.model, "openai_chat")


class _Pre(PreRequestHook):
    def __init__(self, plugins: List[PrePostPlugin]) -> None:
        self.plugins = plugins

    def check(self, ctx: Any) -> HookDecision:
        state = _State({"request_id": ctx.request_id, "headers": dict(ctx.headers)})
        ctx.extensions.put(state)
        prompt = ctx.prompt
        req = oc_request.encode_request(prompt, RoutingTarget("prepost", prompt.model, "openai_chat"), False)
        original = dict(req)
        short: Optional[ShortCircuit] = None
        for plugin in self.plugins:
            state.ran.append(plugin)
            req, short = plugin.pre_hook(state.shared, req)
            if short is not None:
                break
        if short is not None:
            resp, err = _run_posts(state, short.response, short.error)
            if err is not None:
                return HookDecision.deny(DenyReason(err.type, err.message, err.status if err.status >= 400 else 403))
            if resp is not None:
                return HookDecision.respond(oc_response.decode_response(resp, _target(ctx)))
        if req != original:
            new = oc_request.decode_request({**req, "model": req.get("model", prompt.model)})
            ctx.replace_prompt(new.replace(stream=prompt.stream, include_usage=prompt.include_usage))
        return HookDecision.allow()


class _Post(ExecutionHook, StreamHook):
    """Post hooks: on a non-streaming success (may change the response), at a stream's end and
    after the last failed attempt (observe only)."""

    def on_success(self, ctx: Any, result: Any) -> Optional[Generation]:
        state = ctx.extensions.get(_State)
        if state is None or state.posted or not isinstance(result, Generation):
            return None
        resp, err = _run_posts(state, oc_response.encode_response(result, ctx.prompt), None)
        if err is not None:
            raise HookDenied(err.message, status=err.status if err.status >= 400 else 403, kind=err.type)
        return oc_response.decode_response(resp, _target(ctx)) if resp is not None else None

    def on_failure(self, ctx: Any, error: Any) -> FallbackDecision:
        state = ctx.extensions.get(_State)
        last = not error.retriable or not ctx.chain or ctx.target is ctx.chain[-1]
        if state is not None and not state.posted and last:
            _run_posts(state, None, PluginError(error.status, error.message, error.kind))
        return FallbackDecision.next()

    def interest(self) -> StreamInterest:
        return StreamInterest.NONE

    def on_part(self, ctx: Any, part: Any) -> StreamAction:
        return StreamAction.pass_()

    def on_stream_end(self, ctx: Any, outcome: Outcome) -> None:
        state = ctx.extensions.get(_State)
        if state is None or state.posted:
            return
        gen = ctx.result if isinstance(ctx.result, Generation) else None
        resp = oc_response.encode_response(gen, ctx.prompt) if gen is not None else None
        err = None if outcome is Outcome.SUCCESS else PluginError(502, f"stream ended: {outcome.value}")
        _run_posts(state, resp, err)


class PrePostPluginAdapter(Plugin):
    id = PluginId("prepost")

    def __init__(self, plugins: List[PrePostPlugin], config: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 plugin_id: str = "prepost") -> None:
        self.id = PluginId(plugin_id)
        self.plugins = list(plugins)
        for p in self.plugins:
            p.init(dict((config or {}).get(p.name, {})))

    def install(self, app: AppBuilder) -> None:
        lm = app.language_model_builder()
        lm.pre_request_hook(_Pre(self.plugins))
        post = _Post()
        lm.execution_hook(post).stream_hook(post)
        for plugin in self.plugins:
            app.transport_interceptor(plugin.transport_interceptor)
        app.on_shutdown(self.cleanup)

    def cleanup(self) -> None:
        for p in self.plugins:
            try:
                p.cleanup()
            except Exception:
                log.exception("cleanup of %s failed", p.name)
