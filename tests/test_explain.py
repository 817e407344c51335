"""POST /admin/explain: the hooks that would run and their decisions, the chain with prices, no upstream call."""

from __future__ import annotations

from routeplane import Plugin, PluginId
from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook, RouteHook
from routeplane.testing import Gateway

CONFIG = {
    "providers": {"a": {"protocol": "mock", "prices": {"input": 3.0, "output": 15.0}},
                  "b": {"protocol": "mock"}},
    "models": {"default": {"targets": [{"provider": "a", "model": "echo"}, {"provider": "b", "model": "echo"}]}},
}


class NoFoo(PreRequestHook):
    def check(self, ctx):
        if "foo" in ctx.prompt.messages[-1].text():
            return HookDecision.deny(DenyReason.forbidden("foo is forbidden"))
        return HookDecision.allow()


class Reverse(RouteHook):
    def resolve(self, chain, ctx):
        return list(reversed(chain))


class Policy(Plugin):
    id = PluginId("policy")

    def install(self, app):
        app.language_model_builder().pre_request_hook(NoFoo()).route_hook(Reverse())


def explain(gw, content, **req):
    body = {"wire": "openai_chat", "request": {"model": "default", "messages": [{"role": "user", "content": content}],
                                                **req}}
    return gw.client.post("/admin/explain", json=body)


def test_explain_allow_shows_chain_prices_and_charge_without_calling_upstream():
    gw = Gateway(plugins=[Policy()], config=CONFIG)
    r = explain(gw, "hello", max_tokens=100)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["verdict"] == "allow"
    assert [s["decision"] for s in data["steps"] if s["stage"] == "pre_request"] == ["allow"]
    assert [t["provider"] for t in data["resolved"]] == ["a", "b"]
    assert [t["provider"] for t in data["chain"]] == ["b", "a"]  # after the route hook
    a = next(t for t in data["chain"] if t["provider"] == "a")
    # input estimate 2 tokens ("hello") x $3/M + 100 output x $15/M = 6 + 1500 micro-USD
    assert a["worst_case_cost_micro_usd"] == 2 * 3 + 100 * 15
    assert next(t for t in data["chain"] if t["provider"] == "b")["worst_case_cost_micro_usd"] is None
    assert gw.executor.calls == [] and gw.settlements.items == []


def test_explain_deny_and_bad_input():
    gw = Gateway(plugins=[Policy()], config=CONFIG)
    data = explain(gw, "foo").get_json()
    assert data["verdict"] == "deny" and data["steps"][0]["status"] == 403 and data["chain"] == []
    assert gw.client.post("/admin/explain", json={"request": "nope"}).status_code == 400
    assert gw.client.post("/admin/explain", json={"wire": "smtp", "request": {}}).status_code == 400
    body = {"wire": "openai_chat", "request": {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}}
    unknown = gw.client.post("/admin/explain", json=body).get_json()
    assert unknown["verdict"] == "error" and unknown["error"]["status"] == 404
