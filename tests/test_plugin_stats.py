"""Per-hook statistics and pre-request time budgets (fail-open skips, fail-closed denies with 503)."""

from __future__ import annotations

import time
from typing import Any

from routeplane import Plugin, PluginId
from routeplane.errors import StreamAborted
from routeplane.hooks.language_model import (
    DenyReason,
    HookDecision,
    ObserveHook,
    PreRequestHook,
    SettlementRecorder,
    StreamAction,
    StreamHook,
)
from routeplane.language_model.types import TextDelta
from routeplane.testing import Gateway


class Sleepy(PreRequestHook):
    def __init__(self, seconds):
        self.seconds = seconds

    def check(self, ctx):
        time.sleep(self.seconds)
        return HookDecision.deny(DenyReason.forbidden("too late to matter"))


class DenyWord(PreRequestHook):
    def check(self, ctx):
        if "deny" in ctx.prompt.messages[-1].text():
            return HookDecision.deny(DenyReason.forbidden("no"))
        return HookDecision.allow()


class Boom(ObserveHook):
    def on_request_end(self, event):
        raise RuntimeError("observer bug")


class AbortOnX(StreamHook):
    def on_part(self, ctx, part):
        if isinstance(part, TextDelta) and "x" in part.text:
            return StreamAction.abort(StreamAborted("x is not allowed"))
        return StreamAction.pass_()


class SlowPlugin(Plugin):
    def __init__(self, pid, fail_open, seconds=0.3):
        self.id = PluginId(pid)
        self.fail_open = fail_open
        self.timeout_ms = 30
        self.seconds = seconds

    def install(self, app):
        app.language_model_builder().pre_request_hook(Sleepy(self.seconds))


class Mixed(Plugin):
    id = PluginId("mixed")

    def install(self, app):
        app.language_model_builder().pre_request_hook(DenyWord()).observe_hook(Boom()).stream_hook(AbortOnX())


def stats_of(gw, plugin):
    return {s["stage"]: s for s in gw.app.plugin_stats.snapshot() if s["plugin"] == plugin}


def test_fail_open_timeout_skips_the_hook():
    gw = Gateway(plugins=[SlowPlugin("slow-open", fail_open=True)])
    r = gw.chat("hello")
    assert r.status == 200  # the hook's late deny never applies
    s = stats_of(gw, "slow-open")["pre_request"]
    assert s["timeouts"] == 1 and s["invocations"] == 1 and s["denies"] == 0


def test_fail_closed_timeout_denies_with_503():
    gw = Gateway(plugins=[SlowPlugin("slow-closed", fail_open=False)])
    r = gw.chat("hello")
    assert r.status == 503 and "timed out" in r.json["error"]["message"]
    assert stats_of(gw, "slow-closed")["pre_request"]["timeouts"] == 1
    assert gw.executor.calls == []


def test_counts_denies_blocks_errors_and_latency():
    gw = Gateway(plugins=[Mixed()])
    assert gw.chat("fine").status == 200
    assert gw.chat("please deny").status == 403
    streamed = gw.chat("say x", stream=True)
    assert streamed.status == 200 and "x is not allowed" in streamed.body.decode()
    s = stats_of(gw, "mixed")
    assert s["pre_request"]["invocations"] == 3 and s["pre_request"]["denies"] == 1
    assert s["stream"]["denies"] == 1
    assert s["observe"]["errors"] >= 2  # raised on every request end, swallowed
    assert s["pre_request"]["average_ms"] >= 0 and s["pre_request"]["total_ms"] >= 0


class StuckThenFast(PreRequestHook):
    def __init__(self, stuck):
        self.stuck, self.release = stuck, __import__("threading").Event()
        self.calls = 0

    def check(self, ctx):
        self.calls += 1
        if self.calls <= self.stuck:
            self.release.wait(5)
        return HookDecision.deny(DenyReason.forbidden("denied at once"))


class StuckPlugin(Plugin):
    id = PluginId("stuck")
    timeout_ms = 50

    def __init__(self, hook):
        self.hook = hook

    def install(self, app):
        app.language_model_builder().pre_request_hook(self.hook)


def test_calls_stuck_past_their_budget_never_starve_later_calls():
    hook = StuckThenFast(stuck=10)
    gw = Gateway(plugins=[StuckPlugin(hook)])
    statuses = [gw.chat("hi").status for _ in range(12)]
    hook.release.set()
    assert statuses == [200] * 10 + [403, 403]  # the budget runs from when the hook starts, not in a queue


class GuardrailMidStream(StreamHook):
    """Raises its own error on the second text piece and fails at the end too."""

    def __init__(self):
        self.ends = []

    def on_part(self, ctx, part):
        if isinstance(part, TextDelta) and "secret" in part.text:
            from routeplane.errors import GuardrailViolation

            raise GuardrailViolation("a secret left the model")
        return StreamAction.pass_()

    def on_stream_end(self, ctx, outcome):
        self.ends.append(outcome)
        raise RuntimeError("end hook bug")


class GuardrailPlugin(Plugin):
    id = PluginId("guard-mid")

    def __init__(self):
        self.hook = GuardrailMidStream()

    def install(self, app):
        app.language_model_builder().stream_hook(self.hook)


def test_a_stream_hooks_own_error_is_not_blamed_on_the_upstream_and_end_errors_are_counted():
    from routeplane.hooks.language_model import Outcome

    plugin = GuardrailPlugin()
    gw = Gateway(plugins=[plugin])
    r = gw.chat("the secret word", stream=True)
    assert r.status == 200 and "a secret left the model" in r.body.decode()
    assert plugin.hook.ends == [Outcome.ERROR]  # was UPSTREAM_ERROR: metrics blamed a healthy provider
    [s] = gw.settlements.items
    assert s.outcome == "error" and s.status == 400
    assert stats_of(gw, "guard-mid")["stream"]["errors"] == 2  # on_part and on_stream_end (was 1)


class Tagger(PreRequestHook):
    def check(self, ctx):
        ctx.plugin_metadata("tagger").update({"k": "v", "list": [1, 2]})
        return HookDecision.allow()


class Tamperer(SettlementRecorder):
    def record(self, settlement):
        settlement.metadata["tagger"]["k"] = "tampered"


class Reader(SettlementRecorder):
    def __init__(self):
        self.seen = []

    def record(self, settlement):
        self.seen.append(settlement.metadata)


class TwoRecorders(Plugin):
    id = PluginId("two-recorders")

    def __init__(self):
        self.reader = Reader()

    def install(self, app):
        app.language_model_builder().pre_request_hook(Tagger()).settlement_recorder(Tamperer()) \
            .settlement_recorder(self.reader)


def test_a_recorder_cannot_change_what_the_next_one_reads():
    """docs/plugins.md: the settlement is immutable; one shared mutable dict went to every recorder."""
    import json as _json

    plugin = TwoRecorders()
    gw = Gateway(plugins=[plugin])
    assert gw.chat("hello").status == 200
    [meta] = plugin.reader.seen
    assert meta["tagger"] == {"k": "v", "list": [1, 2]}
    assert _json.loads(_json.dumps(meta)) == {"tagger": {"k": "v", "list": [1, 2]}}
    errors = [x["errors"] for x in gw.app.plugin_stats.snapshot()
              if x["plugin"] == "two-recorders" and x["stage"] == "settlement"]
    assert sorted(errors) == [0, 1]  # the tampering raised, and was counted


def test_two_hooks_of_one_class_on_a_stage_keep_every_plugins_stats(tmp_path: Any) -> None:
    """docs/plugins.md: a plugin registers any number of hooks. Two of one class on one stage had the
    same stats key, so every flush of that worker failed on the primary key and no plugin's stats
    (auth denies, guardrail blocks, ...) reached /admin/metrics or /metrics."""
    from routeplane.app import build_app
    from routeplane.config import parse_config

    class BannedPhraseHook(PreRequestHook):
        def __init__(self, phrase: str) -> None:
            self.phrase = phrase

        def check(self, ctx: Any) -> HookDecision:
            if self.phrase in ctx.prompt.messages[-1].text():
                return HookDecision.deny(DenyReason.guardrail_violation("banned phrase"))
            return HookDecision.allow()

    class TwoPhrases(Plugin):
        id = PluginId("two-phrases")

        def install(self, app: Any) -> None:
            app.language_model_builder().pre_request_hook(BannedPhraseHook("foo")).pre_request_hook(
                BannedPhraseHook("bar"))

    cfg = parse_config({"database": {"url": f"sqlite:///{tmp_path}/rp.db"},
                        "providers": {"mock": {"protocol": "mock"}},
                        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}}, "<t>")
    app = build_app(cfg, extra_plugins=[TwoPhrases()])
    client = app.flask_app().test_client()
    for text in ("hi", "hi", "bar"):
        client.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": text}]})
    assert app.stats_flusher is not None and app.stats_flusher.flush_now()
    hooks = {(h["plugin"], h["hook"]): h for h in client.get("/admin/metrics").json["plugins"]["hooks"]}
    assert hooks[("two-phrases", "BannedPhraseHook")]["invocations"] == 3
    assert hooks[("two-phrases", "BannedPhraseHook#2")]["denies"] == 1
    assert any(plugin == "spend_log" for plugin, _ in hooks)
    app.store.close()
