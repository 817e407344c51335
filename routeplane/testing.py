"""The plugin author's kit: build a gateway from hooks and a scripted upstream, run requests synchronously.

    from routeplane.testing import run_request
    result = run_request({"model": "default", "messages": [...]}, plugins=[MyPlugin()])
    assert result.status == 400 and result.settlements == []

Observers run inline, so `result.events` is complete when the call returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .app import App, Plugin
from .config import DEFAULT_CONFIG, parse_config
from .hooks.language_model import (
    ExecutionHook,
    ObserveHook,
    PreRequestHook,
    RouteHook,
    SettlementRecorder,
    StreamHook,
)
from .language_model.executor import MockExecutor, Script
from .language_model.settlement import Settlement

WIRE_PATHS = {
    "openai_chat": "/v1/chat/completions",
    "anthropic_messages": "/v1/messages",
}


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


@dataclass
class Result:
    status: int
    headers: Mapping[str, str]
    body: bytes
    settlements: List[Settlement] = field(default_factory=list)
    events: List[tuple] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

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
    """A fresh in-process gateway with a scripted upstream and captured settlements/events."""

    def __init__(
        self,
        *,
        plugins: Sequence[Plugin] = (),
        hooks: Sequence[Any] = (),
        config: Optional[Mapping[str, Any]] = None,
        script: Iterable[Script] = (),
        per_provider: Optional[Dict[str, Iterable[Script]]] = None,
        executor: Any = None,
    ) -> None:
        self.executor = executor if executor is not None else MockExecutor(script, per_provider=per_provider)
        self.settlements = CapturedSettlements()
        self.events = CapturedEvents()
        builder = App.builder().config(parse_config(dict(config or DEFAULT_CONFIG), "<test config>")).inline_observers()
        builder.language_model(lambda lm: lm.executor(self.executor))
        for plugin in plugins:
            builder.plugin(plugin)
        lm = builder.language_model_builder()
        for hook in hooks:
            register_hook(lm, hook)
        lm.settlement_recorder(self.settlements).observe_hook(self.events)
        self.app: App = builder.build()
        self.flask = self.app.flask_app()
        self.client = self.flask.test_client()

    def request(self, body: Any, *, wire: str = "openai_chat", path: Optional[str] = None,
                headers: Optional[Mapping[str, str]] = None) -> Result:
        before_s, before_e = len(self.settlements.items), len(self.events.items)
        url = path or WIRE_PATHS[wire]
        if isinstance(body, (bytes, str)):
            resp = self.client.post(url, data=body, headers=dict(headers or {}), content_type="application/json")
        else:
            resp = self.client.post(url, json=body, headers=dict(headers or {}))
        data = resp.get_data()  # drains (and closes) a stream
        resp.close()
        return Result(resp.status_code, dict(resp.headers), data, self.settlements.items[before_s:],
                      self.events.items[before_e:])

    def chat(self, messages: Any = "hello", *, model: str = "default", **fields: Any) -> Result:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.request({"model": model, "messages": messages, **fields})


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


def run_request(body: Any, *, wire: str = "openai_chat", **gateway_options: Any) -> Result:
    """Build a fresh gateway and run one request through it, synchronously."""
    return Gateway(**gateway_options).request(body, wire=wire)


# --- contract checks -----------------------------------------------------------


@dataclass
class PluginReport:
    plugin: str
    hooks: Dict[str, int]
    checks: List[str] = field(default_factory=list)


def check_plugin(plugin: Plugin, *, config: Optional[Mapping[str, Any]] = None,
                 request: Optional[Mapping[str, Any]] = None) -> PluginReport:
    """Run the contract every plugin must keep; raises AssertionError naming the broken rule.

    Checks: its hooks register on the language-model pipeline (a wrong hook is
    a TypeError at install); it survives a non-streaming and a streaming
    request, a failing upstream and a client that disconnects mid-stream; each
    served request is settled exactly once; a deny is a 4xx in the wire's shape.
    """
    from .errors import UpstreamStatusError

    body = dict(request or {"model": "default", "messages": [{"role": "user", "content": "contract check"}]})
    gw = Gateway(plugins=[plugin], config=config)
    counts = {kind: sum(1 for pid, _h in hooks if pid == str(plugin.id))
              for kind, hooks in gw.app.pipeline.hooks.__dict__.items()}
    report = PluginReport(str(plugin.id), counts)

    def served_once(result: Result, what: str) -> None:
        if result.status < 400 or result.status >= 500:
            assert len(result.settlements) == 1, f"{what}: expected exactly one settlement, got {len(result.settlements)}"
        if 400 <= result.status < 500 and result.settlements:
            assert len(result.settlements) == 1, f"{what}: settled {len(result.settlements)} times"
        if result.status >= 400:
            assert "error" in result.json, f"{what}: a {result.status} without an error body"
        report.checks.append(what)

    served_once(gw.request(body), "non-streaming request")
    stream_result = gw.request({**body, "stream": True})
    served_once(stream_result, "streaming request")
    gw.executor.push(UpstreamStatusError("contract check: upstream down", provider="mock", upstream_status=503,
                                         status=502))
    failed = gw.request(body)
    assert failed.status >= 400, "a failing upstream must not look like success"
    served_once(failed, "failing upstream")
    before = len(gw.settlements.items)
    resp = gw.client.post(WIRE_PATHS["openai_chat"], json={**body, "stream": True})
    if resp.status_code == 200 and resp.is_streamed:
        next(iter(resp.response), None)  # read one frame, then hang up
    resp.close()
    settled = len(gw.settlements.items) - before
    assert settled <= 1, f"client disconnect: settled {settled} times"
    if resp.status_code == 200:
        assert settled == 1, "client disconnect: the stream was not settled"
    report.checks.append("client disconnect")
    return report
