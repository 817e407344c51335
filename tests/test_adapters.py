"""Ring-style and pre/post-style plugins run unchanged in their logic through routeplane's hooks."""

from __future__ import annotations

import asyncio
import time

from routeplane.adapters.prepost import PluginError, PrePostPlugin, PrePostPluginAdapter, ShortCircuit
from routeplane.adapters.ring import BasePlugin, Ring, RingPluginAdapter, RingResult
from routeplane.testing import Gateway


class Shout(BasePlugin):
    name, hook = "shout", Ring.PRE_FLIGHT

    def execute(self, ctx):
        body = dict(ctx.body)
        body["messages"] = [dict(m, content=m["content"].upper()) if m["role"] == "user" else m
                            for m in body["messages"]]
        ctx.metadata["shouted"] = True
        return RingResult.modify(body)


class BlockSecrets(BasePlugin):
    name, hook = "block", Ring.INGRESS

    def execute(self, ctx):
        if "secret" in str(ctx.body["messages"]):
            return RingResult.block(200, "policy", "no secrets here")  # below 400: corrected to 403
        return RingResult.passthrough()


class Cache(BasePlugin):
    name, hook = "cache", Ring.PRE_FLIGHT

    async def execute(self, ctx):  # async def is supported
        ctx.state["seen"] = ctx.state.get("seen", 0) + 1
        if "cached" in str(ctx.body["messages"]).lower():
            return RingResult.cache_hit({"id": "c1", "object": "chat.completion", "created": 1, "model": "x",
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": "from cache"}}],
                                         "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
        return RingResult.passthrough()


class Slow(BasePlugin):
    name, hook, timeout_ms = "slow", Ring.PRE_FLIGHT, 20

    def execute(self, ctx):
        time.sleep(0.2)
        return RingResult.block(400, "late", "should never apply")


class Broken(BasePlugin):
    name, hook = "broken", Ring.POST_FLIGHT

    def execute(self, ctx):
        return "not a result"


class Stamp(BasePlugin):
    name, hook = "stamp", Ring.POST_FLIGHT

    def execute(self, ctx):
        resp = dict(ctx.response)
        resp["choices"] = [dict(resp["choices"][0], message={"role": "assistant", "content": "stamped"})]
        return RingResult.modify(resp)


def test_ring_modify_block_cache_timeout_and_stats():
    adapter = RingPluginAdapter([BlockSecrets(), Shout(), Cache(), Slow(), Broken(), Stamp()])
    gw = Gateway(plugins=[adapter])
    r = gw.chat("hello")
    assert r.status == 200
    assert r.json["choices"][0]["message"]["content"] == "stamped"
    assert gw.executor.calls[-1].prompt.messages[0].text() == "HELLO"
    assert r.settlements[0].metadata["ring"]["shouted"] is True

    blocked = gw.chat("a secret")
    assert blocked.status == 403 and blocked.json["error"]["message"] == "no secrets here"
    assert blocked.settlements == []

    cached = gw.chat("cached please")
    # The cache hit never reached the upstream, and post-flight rings check it as any other answer.
    assert cached.status == 200 and cached.json["choices"][0]["message"]["content"] == "stamped"
    assert len(gw.executor.calls) == 1
    assert cached.json["id"] == "c1"  # the cached response, stamped

    stats = adapter.stats()
    assert stats["block"]["blocks"] == 1 and stats["block"]["invocations"] == 3
    assert stats["slow"]["timeouts"] >= 1 and stats["slow"]["blocks"] == 0
    assert stats["broken"]["errors"] == 2  # post-flight ran for the upstream's answer and the cache hit
    assert stats["cache"]["invocations"] == 2
    assert stats["shout"]["average_ms"] >= 0


class Recorder(PrePostPlugin):
    def __init__(self, name, log, short=None, fail_post=False):
        self.name, self.log, self.short, self.fail_post = name, log, short, fail_post

    def pre_hook(self, ctx, req):
        self.log.append(f"pre:{self.name}")
        return req, self.short

    def post_hook(self, ctx, resp, err):
        self.log.append(f"post:{self.name}")
        if self.fail_post:
            return None, PluginError(451, "withheld", "legal")
        return resp, err

    def transport_interceptor(self, headers, body):
        self.log.append(f"transport:{self.name}")
        return headers, body


def test_prepost_reverse_order_and_symmetry():
    log = []
    adapter = PrePostPluginAdapter([Recorder("a", log), Recorder("b", log), Recorder("c", log)])
    gw = Gateway(plugins=[adapter])
    assert gw.chat("hi").status == 200
    assert log == ["transport:a", "transport:b", "transport:c", "pre:a", "pre:b", "pre:c",
                   "post:c", "post:b", "post:a"]

    log.clear()
    cache = ShortCircuit(response={"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "short"}}]})
    adapter = PrePostPluginAdapter([Recorder("a", log), Recorder("b", log, short=cache), Recorder("c", log)])
    gw = Gateway(plugins=[adapter])
    r = gw.chat("hi")
    assert r.json["choices"][0]["message"]["content"] == "short"
    assert [e for e in log if not e.startswith("transport")] == ["pre:a", "pre:b", "post:b", "post:a"]
    assert gw.executor.calls == []


def test_prepost_error_and_stream():
    log = []
    adapter = PrePostPluginAdapter([Recorder("a", log, fail_post=True)])
    gw = Gateway(plugins=[adapter])
    r = gw.chat("hi")
    assert r.status == 451 and r.json["error"]["message"] == "withheld"
    log.clear()
    adapter = PrePostPluginAdapter([Recorder("a", log), Recorder("b", log)])
    gw = Gateway(plugins=[adapter])
    s = gw.chat("stream me", stream=True)
    assert s.status == 200 and s.sse[-1] == "[DONE]"
    assert [e for e in log if e.startswith("post")] == ["post:b", "post:a"]


def test_async_ring_without_running_loop():
    assert asyncio.get_event_loop_policy() is not None
    gw = Gateway(plugins=[RingPluginAdapter([Cache()])])
    assert gw.chat("cached").json["choices"][0]["message"]["content"] == "from cache"


# --- the same plugins behind a real HTTP server, driven by the official openai SDK -------------


def test_ring_and_prepost_plugins_with_the_openai_sdk():
    import threading

    import openai
    from werkzeug.serving import make_server

    from routeplane import App

    log = []
    ring = RingPluginAdapter([BlockSecrets(), Shout(), Cache(), Slow(), Stamp()])
    prepost = PrePostPluginAdapter([Recorder("a", log), Recorder("b", log)])
    app = App.builder().plugin(ring).plugin(prepost).build()
    server = make_server("127.0.0.1", 0, app.flask_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hello"}])
        assert r.choices[0].message.content == "stamped"  # post-flight modify
        with __import__("pytest").raises(openai.PermissionDeniedError) as info:  # block < 400 → 403
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": "my secret"}])
        assert "no secrets here" in str(info.value)
        cached = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "cached?"}])
        assert cached.choices[0].message.content == "stamped"  # a cache hit passes post-flight too
        stream = client.chat.completions.create(model="default", stream=True,
                                                messages=[{"role": "user", "content": "stream it"}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: STREAM IT"
        posts = [e for e in log if e.startswith("post")]
        assert posts[:2] == ["post:b", "post:a"]  # reverse order of the pre hooks
        # "slow" ran (and timed out) for the plain and the streamed request; the block and the cache hit
        # stopped the chain before it.
        assert ring.stats()["slow"]["timeouts"] == 2
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
