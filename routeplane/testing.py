"""The plugin author's kit: build a gateway from hooks and a scripted upstream, run requests synchronously.

    from routeplane.testing import run_request
    result = run_request({"model": "default", "messages": [...]}, plugins=[MyPlugin()])
    assert result.status == 400 and result.settlements == []

Observers run inline, so `result.events` is complete when the call returns.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from werkzeug.datastructures import Headers

from .app import App, Plugin, discover_plugins
from .config import DEFAULT_CONFIG, ConfigError, parse_config
from .errors import RouteplaneError
from .hooks.language_model import (
    ExecutionHook,
    ObserveHook,
    PreRequestHook,
    RouteHook,
    SettlementRecorder,
    StreamHook,
)
from .language_model.context import CALLER, Identity
from .language_model.executor import MockExecutor, Script
from .language_model.settlement import Settlement
from .language_model.types import (
    Finish,
    FinishReason,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextStart,
    Usage,
    UsageUpdate,
)

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store

# Each wire's endpoint. Gemini's is a template: its URL carries the model and the method
# (`:streamGenerateContent?alt=sse` to stream); `wire_path()` fills it in.
WIRE_PATHS = {
    "openai_chat": "/v1/chat/completions",
    "anthropic_messages": "/v1/messages",
    "openai_responses": "/v1/responses",
    "gemini": "/v1beta/models/{model}:generateContent",
}
GEMINI_STREAM_PATH = "/v1beta/models/{model}:streamGenerateContent?alt=sse"
_GEMINI_PATH = re.compile(r"/v1(?:beta)?/models/.+:(?:generateContent|streamGenerateContent)$")


def wire_path(wire: str, *, model: str = "default", stream: bool = False) -> str:
    """The path a client of `wire` posts to; a ValueError names the valid wires."""
    if wire not in WIRE_PATHS:
        raise ValueError(f"unknown wire {wire!r}: use one of {', '.join(sorted(WIRE_PATHS))}")
    if wire == "gemini":
        return (GEMINI_STREAM_PATH if stream else WIRE_PATHS["gemini"]).format(model=model)
    return WIRE_PATHS[wire]


def wire_of_path(path: str) -> Optional[str]:
    """The wire a request path belongs to (under any mount prefix), or None."""
    bare = path.split("?", 1)[0]
    if _GEMINI_PATH.search(bare):
        return "gemini"
    return next((w for w, p in WIRE_PATHS.items() if w != "gemini" and bare.endswith(p)), None)


class CapturedSettlements(SettlementRecorder):
    def __init__(self) -> None:
        self.items: List[Settlement] = []

    def record(self, settlement: Settlement) -> None:
        self.items.append(settlement)


class CapturedEvents(ObserveHook):
    """Every observer event as (method name, event), in order."""

    def __init__(self) -> None:
        self.items: List[tuple] = []

    def on_request_start(self, event: Any) -> None:
        self.items.append(("on_request_start", event))

    def after_phase(self, event: Any) -> None:
        self.items.append(("after_phase", event))

    def on_hop_start(self, event: Any) -> None:
        self.items.append(("on_hop_start", event))

    def on_hop_end(self, event: Any) -> None:
        self.items.append(("on_hop_end", event))

    def on_stream_part(self, event: Any) -> None:
        self.items.append(("on_stream_part", event))

    def on_request_end(self, event: Any) -> None:
        self.items.append(("on_request_end", event))

    def named(self, method: str) -> List[Any]:
        return [e for m, e in self.items if m == method]


def _chat_text(answer: Any) -> str:
    content = answer["choices"][0]["message"].get("content") if answer.get("choices") else None
    if isinstance(content, list):  # content parts
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def _chat_delta(event: Dict[str, Any]) -> str:
    return "".join(c.get("delta", {}).get("content") or "" for c in event.get("choices") or []
                   if c.get("index", 0) == 0)


def _anthropic_text(answer: Any) -> str:
    return "".join(b.get("text") or "" for b in answer.get("content") or [] if b.get("type") == "text")


def _anthropic_delta(event: Dict[str, Any]) -> str:
    delta = event.get("delta") or {}
    if event.get("type") != "content_block_delta" or delta.get("type") != "text_delta":
        return ""
    return delta.get("text") or ""


def _responses_text(answer: Any) -> str:
    return "".join(part.get("text") or "" for item in answer.get("output") or [] if item.get("type") == "message"
                   for part in item.get("content") or [] if part.get("type") == "output_text")


def _responses_delta(event: Dict[str, Any]) -> str:
    if event.get("type") != "response.output_text.delta":
        return ""
    return event.get("delta") or ""


def _gemini_text(answer: Any) -> str:
    if isinstance(answer, list):  # :streamGenerateContent without alt=sse: one JSON array of chunks
        return "".join(_gemini_text(chunk) for chunk in answer)
    candidates = answer.get("candidates") or [{}]
    parts = (candidates[0].get("content") or {}).get("parts") or []
    return "".join(p.get("text") or "" for p in parts if not p.get("thought"))  # thoughts are reasoning


# wire -> (text of a whole JSON answer, text of one SSE event); reasoning and tool calls are left out.
_TEXT: Dict[str, tuple] = {
    "openai_chat": (_chat_text, _chat_delta),
    "anthropic_messages": (_anthropic_text, _anthropic_delta),
    "openai_responses": (_responses_text, _responses_delta),
    "gemini": (_gemini_text, _gemini_text),
}


@dataclass
class Result:
    """One request's HTTP answer (headers case-insensitive) and the settlements/events it caused."""

    status: int
    headers: Headers
    body: bytes
    settlements: List[Settlement] = field(default_factory=list)
    events: List[tuple] = field(default_factory=list)
    wire: Optional[str] = None  # the client's wire, for `text`; None when a path of no wire was posted to

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(dict(self.headers))

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def streamed(self) -> bool:
        return (self.headers.get("Content-Type") or "").startswith("text/event-stream")

    @property
    def text(self) -> str:
        """The answer's text as the client got it, in the request's wire, streamed (SSE) or not.

        Reasoning, thoughts and tool calls are left out. An error status is a ValueError
        showing the error body: there is no answer text to compare.
        """
        if self.wire not in _TEXT:
            raise ValueError(f"Result.text needs the request's wire (one of {', '.join(sorted(_TEXT))}), "
                             f"not {self.wire!r}: pass wire= to request()")
        if self.status >= 400:
            raise ValueError(f"a {self.status} answer has no text: {self.body[:500]!r}")
        whole, event = _TEXT[self.wire]
        if self.streamed:
            return "".join(event(e) for e in self.sse if isinstance(e, dict))
        return whole(self.json)

    @property
    def sse(self) -> List[Any]:
        """The `data:` payloads of an SSE body, JSON-decoded where possible, in order."""
        from .protocols.sse import iter_events

        out: List[Any] = []
        for ev in iter_events([self.body]):
            try:
                out.append(json.loads(ev.data))
            except ValueError:
                out.append(ev.data)
        return out


class Gateway:
    """A fresh in-process gateway with a scripted upstream and captured settlements/events.

    `config` is a whole config. Its `plugins:` section is honoured as the gateway does
    (installed by entry point, options checked, before the `plugins=` objects; a section that
    names a plugin passed in `plugins=` is left to that object); `auth.mode` other than `none`
    is a ConfigError: run as a caller with `request(..., identity=...)`.

    `store` (a `routeplane.store.Store`, or a database URL the gateway opens and `close()` closes;
    default: the config's `database.url` when it names one) is what plugins get as
    `app.current_store` in `install`. The core schema and every plugin's migrations are applied to it
    when the gateway is built, as `routeplane migrate` would. Without either there is no store.
    """

    def __init__(
        self,
        *,
        plugins: Sequence[Plugin] = (),
        hooks: Sequence[Any] = (),
        config: Optional[Mapping[str, Any]] = None,
        script: Iterable[Script] = (),
        per_provider: Optional[Dict[str, Iterable[Script]]] = None,
        executor: Any = None,
        store: Union[None, str, "Store"] = None,
    ) -> None:
        parsed = parse_config(dict(config or DEFAULT_CONFIG), "<test config>")
        _refuse_auth(parsed)
        if store is None and config is not None and (config.get("database") or {}).get("url"):
            store = parsed.database_url
        self._owned_store = isinstance(store, str)
        if isinstance(store, str):
            from .store import Store as _Store

            store = _Store.from_url(store)
        self.store: Optional["Store"] = store
        self.executor = executor if executor is not None else MockExecutor(script, per_provider=per_provider)
        self.settlements = CapturedSettlements()
        self.events = CapturedEvents()
        builder = App.builder().config(parsed).store(store).inline_observers()
        builder.language_model(lambda lm: lm.executor(self.executor))
        passed = {p.id for p in plugins}
        for plugin in [p for p in discover_plugins(parsed) if p.id not in passed] + list(plugins):
            builder.plugin(plugin)
        lm = builder.language_model_builder()
        for hook in hooks:
            register_hook(lm, hook)
        lm.settlement_recorder(self.settlements).observe_hook(self.events)
        self.app: App = builder.build()
        try:
            self.flask = self.app.flask_app()  # migrates the store, if any
        except BaseException:
            self.close()
            raise
        self.client = self.flask.test_client()

    def close(self) -> None:
        """Close the store this gateway opened from a URL (a `Store` passed in stays the caller's)."""
        if self._owned_store and self.store is not None:
            self.store.close()

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def request(self, body: Any, *, wire: Optional[str] = None, path: Optional[str] = None,
                headers: Optional[Mapping[str, str]] = None, identity: Optional[Identity] = None,
                model: Optional[str] = None, stream: Optional[bool] = None) -> Result:
        """POST `body` as a client of `wire` (default `openai_chat`), or to `path`.

        `identity` runs the request as that caller: every context the request makes (the model
        call's, count_tokens' dry run) starts with it in `ctx.identity`, before the first
        pre-request hook, as the auth plugin would set it (its model allowlist and budget are not
        applied). Not a hook of the kit's: the hook lists (dry runs, plugin statistics) stay
        exactly the plugins' own. `stream=True` streams the request on any wire: Gemini's URL
        carries it (`:streamGenerateContent?alt=sse`), the other wires' bodies (`"stream": true`).
        `model` is for `wire="gemini"`, whose URL carries it.
        """
        if identity is not None and not isinstance(identity, Identity):
            raise TypeError("identity= takes a routeplane.language_model.context.Identity")
        if wire is not None or path is None:
            wire = wire or "openai_chat"
            if wire != "gemini" and model is not None:
                raise ValueError(f"model= chooses the URL of wire='gemini'; a {wire} request carries it in its body")
            url = path or wire_path(wire, model=model or "default", stream=bool(stream))
        else:
            url, wire = path, wire_of_path(path)
        if stream is not None and wire != "gemini":
            body = _with_stream(body, stream)
        before_s, before_e = len(self.settlements.items), len(self.events.items)
        options: Dict[str, Any] = {"headers": dict(headers or {})}
        caller = CALLER.set(identity) if identity is not None else None
        try:
            if isinstance(body, (bytes, str)):
                resp = self.client.post(url, data=body, content_type="application/json", **options)
            else:
                resp = self.client.post(url, json=body, **options)
            data = resp.get_data()  # drains (and closes) a stream, still as the caller
            resp.close()
        finally:
            if caller is not None:
                CALLER.reset(caller)
        return Result(resp.status_code, Headers(resp.headers), data, self.settlements.items[before_s:],
                      self.events.items[before_e:], wire)

    def chat(self, messages: Any = "hello", *, model: str = "default", identity: Optional[Identity] = None,
             headers: Optional[Mapping[str, str]] = None, **fields: Any) -> Result:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.request({"model": model, "messages": messages, **fields}, identity=identity, headers=headers)


def _with_stream(body: Any, stream: bool) -> Dict[str, Any]:
    """`body` with its `stream` field set; a body that already says otherwise is a ValueError."""
    if not isinstance(body, Mapping):
        raise ValueError("stream= sets the body's `stream` field: pass the body as a dict (or write the field "
                         "into the bytes yourself)")
    if body.get("stream", stream) != stream:
        raise ValueError(f"stream={stream} contradicts the body's \"stream\": {body['stream']!r}")
    return {**body, "stream": stream}


def _refuse_auth(config: Any) -> None:
    mode = str(config.auth.get("mode", "none"))
    if mode != "none":
        raise ConfigError(f"{config.source}: auth.mode {mode!r}: the test gateway does not run the auth plugin "
                          "(it needs a key store or trusted issuers); leave `auth` out and pass "
                          "request(..., identity=Identity(...)) to run as a caller")


def register_hook(lm: Any, hook: Any) -> None:
    """Register one object on every stage whose contract it implements."""
    registered = False
    for contract, method in (
        (PreRequestHook, lm.pre_request_hook), (RouteHook, lm.route_hook), (ExecutionHook, lm.execution_hook),
        (StreamHook, lm.stream_hook), (SettlementRecorder, lm.settlement_recorder), (ObserveHook, lm.observe_hook),
    ):
        if isinstance(hook, contract):
            method(hook)
            registered = True
    if not registered:
        raise TypeError(f"{type(hook).__name__} implements no language-model hook contract")


def run_request(body: Any, *, wire: Optional[str] = None, path: Optional[str] = None,
                headers: Optional[Mapping[str, str]] = None, identity: Optional[Identity] = None,
                model: Optional[str] = None, stream: Optional[bool] = None, **gateway_options: Any) -> Result:
    """Build a fresh gateway and run one request through it, synchronously."""
    with Gateway(**gateway_options) as gw:
        return gw.request(body, wire=wire, path=path, headers=headers, identity=identity, model=model, stream=stream)


def text_stream(*chunks: str, model: str = "echo", usage: Optional[Usage] = None) -> List[StreamPart]:
    """A scripted upstream stream whose text arrives in these chunks, one `TextDelta` each: what a
    stream hook must handle when a word is split across deltas. `usage` is reported before the end."""
    parts: List[StreamPart] = [ResponseStart("resp_scripted", model), TextStart(0)]
    parts += [TextDelta(0, chunk) for chunk in chunks]
    parts.append(TextEnd(0))
    if usage is not None:
        parts.append(UsageUpdate(usage))
    return parts + [Finish(FinishReason.STOP)]


# --- contract checks -----------------------------------------------------------


# The pipeline's name of each stage's hook list -> the builder method that registers those hooks, which
# is what a report counts by (`report.hooks["pre_request_hook"]`): one vocabulary for registering and checking.
_BUILDER_METHOD = {"pre_request": "pre_request_hook", "route": "route_hook", "execution": "execution_hook",
                   "stream": "stream_hook", "settlement": "settlement_recorder", "observe": "observe_hook"}


class HookCounts(Dict[str, int]):
    """A plugin's hooks per builder method that registers them (`pre_request_hook`, ..., `settlement_recorder`).

    The stage names earlier reports used (`pre_request`, `settlement`, ...) still read, with a
    DeprecationWarning naming the new key."""

    def __missing__(self, key: str) -> int:
        return self._renamed(key, stacklevel=3)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            return dict.__getitem__(self, key)
        return self._renamed(key, stacklevel=3) if key in _BUILDER_METHOD else default

    def _renamed(self, key: str, stacklevel: int) -> int:
        new = _BUILDER_METHOD.get(key)
        if new is None:
            raise KeyError(f"{key!r}: report.hooks counts hooks by the builder method that registered them, "
                           f"one of {', '.join(self)}")
        warnings.warn(f'report.hooks["{key}"] is deprecated: use report.hooks["{new}"], named after the builder '
                      f"method that registers the hook (app.language_model_builder().{new}(...))",
                      DeprecationWarning, stacklevel=stacklevel)
        return dict.__getitem__(self, new)


@dataclass
class PluginReport:
    plugin: str
    hooks: HookCounts  # hooks of this plugin per builder method: report.hooks["stream_hook"]
    checks: List[str] = field(default_factory=list)


class _ContractUpstream(MockExecutor):
    """The mock upstream, failing every attempt while `failure` is set, and counting those attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: Optional[RouteplaneError] = None
        self.failed_attempts = 0

    def _maybe_fail(self) -> None:
        if self.failure is not None:
            self.failed_attempts += 1
            raise self.failure

    def complete(self, target: Any, prompt: Any, ctx: Any) -> Any:
        self._maybe_fail()
        return super().complete(target, prompt, ctx)

    def stream(self, target: Any, prompt: Any, ctx: Any) -> Any:
        self._maybe_fail()
        return super().stream(target, prompt, ctx)


def _distinct(body: Mapping[str, Any], check: str) -> Dict[str, Any]:
    """`body` with ` [check]` appended to its last message's text: no two checks send the same prompt,
    so a plugin that answers repeated prompts itself (a cache) does not answer a later check."""
    out = copy.deepcopy(dict(body))
    messages = out.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages and isinstance(messages[-1], dict) else None
    if last is not None and isinstance(last.get("content"), str):
        last["content"] += f" [{check}]"
    elif last is not None and isinstance(last.get("content"), list):
        texts = [p for p in last["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if texts:
            texts[-1]["text"] += f" [{check}]"
    return out


def check_plugin(plugin: Plugin, *, config: Optional[Mapping[str, Any]] = None,
                 request: Optional[Mapping[str, Any]] = None, store: Union[None, str, "Store"] = None) -> PluginReport:
    """Run the contract every plugin must keep; raises AssertionError naming the broken rule.

    Checks: its hooks register on the language-model pipeline (a wrong hook is
    a TypeError at install); it survives a non-streaming and a streaming
    request, a failing upstream and a client that disconnects mid-stream; each
    served request is settled exactly once; a deny is a 4xx in the wire's shape; none of
    its hooks raises (a `RouteplaneError` an execution hook raises to block is not a failure).
    `report.hooks` counts the plugin's hooks by the builder method that registered
    them: `report.hooks["pre_request_hook"]`, ..., `["settlement_recorder"]`.
    Each check sends `request` (an OpenAI Chat body) with its own suffix on the
    last message's text, so no two checks send the same prompt. `store` is as for `Gateway`.
    """
    body = dict(request or {"model": "default", "messages": [{"role": "user", "content": "contract check"}]})
    upstream = _ContractUpstream()
    with Gateway(plugins=[plugin], config=config, executor=upstream, store=store) as gw:
        return _run_checks(plugin, gw, upstream, body)


class _LoggedErrors(logging.Handler):
    """The exceptions routeplane logs while a check runs: what a hook that raised said."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")


def _hook_errors(gw: Gateway, plugin_id: str) -> Dict[str, int]:
    """Errors counted so far per hook of the plugin, as `stream_hook MyHook`."""
    return {f"{_BUILDER_METHOD.get(s.stage, s.stage)} {s.hook}": s.errors
            for s in gw.app.plugin_stats.items if s.plugin == plugin_id}


def _run_checks(plugin: Plugin, gw: Gateway, upstream: _ContractUpstream, body: Dict[str, Any]) -> PluginReport:
    logged = _LoggedErrors()
    logger = logging.getLogger("routeplane")
    logger.addHandler(logged)
    try:
        return _checks(plugin, gw, upstream, body, logged)
    finally:
        logger.removeHandler(logged)


def _checks(plugin: Plugin, gw: Gateway, upstream: _ContractUpstream, body: Dict[str, Any],
            logged: _LoggedErrors) -> PluginReport:
    from .errors import UpstreamStatusError

    counts = HookCounts((_BUILDER_METHOD[stage], sum(1 for pid, _h in hooks if pid == str(plugin.id)))
                        for stage, hooks in gw.app.pipeline.hooks.__dict__.items())
    report = PluginReport(str(plugin.id), counts)
    errors_before = _hook_errors(gw, report.plugin)

    def no_hook_raised(what: str) -> None:
        # A hook that raises is logged and counted (or turned into a 500 / an error frame), so the
        # settlement counts alone could pass it: the plugin's own error counters say it raised. A
        # RouteplaneError (an execution hook's deliberate block) is counted but not logged as a failure.
        nonlocal errors_before
        now = _hook_errors(gw, report.plugin)
        raised = [hook for hook, n in now.items() if n > errors_before.get(hook, 0)]
        errors_before, said = now, list(logged.errors)
        logged.errors.clear()
        assert not (raised and said), (f"{what}: the plugin's {', '.join(raised)} raised ({said[0]}); a hook "
                                       "must not raise on an ordinary request (return a decision, or catch its "
                                       "own errors)")

    def served_once(result: Result, what: str) -> None:
        no_hook_raised(what)
        if result.status < 400 or result.status >= 500:
            assert len(result.settlements) == 1, f"{what}: expected exactly one settlement, got {len(result.settlements)}"
        if 400 <= result.status < 500 and result.settlements:
            assert len(result.settlements) == 1, f"{what}: settled {len(result.settlements)} times"
        if result.status >= 400:
            assert "error" in result.json, f"{what}: a {result.status} without an error body"
        report.checks.append(what)

    served_once(gw.request(_distinct(body, "non-streaming request")), "non-streaming request")
    served_once(gw.request({**_distinct(body, "streaming request"), "stream": True}), "streaming request")
    upstream.failure = UpstreamStatusError("contract check: upstream down", provider="mock", upstream_status=503,
                                           status=502)
    try:
        failed = gw.request(_distinct(body, "failing upstream"))
    finally:
        upstream.failure = None
    if upstream.failed_attempts == 0 and failed.status < 400:
        raise AssertionError("failing upstream: the plugin answered without calling the upstream (a cache?), so "
                             "this check could not run; pass request=... with a request it lets through to check "
                             "that path")
    assert failed.status >= 400, "a failing upstream must not look like success"
    served_once(failed, "failing upstream")
    before = len(gw.settlements.items)
    resp = gw.client.post(WIRE_PATHS["openai_chat"], json={**_distinct(body, "client disconnect"), "stream": True})
    if resp.status_code == 200 and resp.is_streamed:
        next(iter(resp.response), None)  # read one frame, then hang up
    resp.close()
    settled = len(gw.settlements.items) - before
    no_hook_raised("client disconnect")
    assert settled <= 1, f"client disconnect: settled {settled} times"
    if resp.status_code == 200:
        assert settled == 1, "client disconnect: the stream was not settled"
    report.checks.append("client disconnect")
    return report
