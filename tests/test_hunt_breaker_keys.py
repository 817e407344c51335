"""Circuit breakers per upstream credential: a route hook's per-tenant key has its own breaker for the
credential's failures (429, quota), while the provider's failures (5xx, timeouts) sideline the target for all."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from typing import Any, Dict, Iterator, Tuple

import pytest
from openai import OpenAI

from routeplane.errors import UpstreamStatusError, UpstreamTimeout
from routeplane.language_model.cooldown import CooldownPolicy, CooldownTracker, CredentialKey, FallbackSettings
from routeplane.language_model.routing import RoutingTarget
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk, openai_completion


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(failures: int = 2, seconds: float = 30, **kw: Any) -> Tuple[CooldownTracker, FakeClock]:
    clock = FakeClock()
    return CooldownTracker(FallbackSettings(cooldown=CooldownPolicy(failures=failures, seconds=seconds)),
                           clock, **kw), clock


def rate_limited(retry_after: Any = None) -> UpstreamStatusError:
    return UpstreamStatusError("rl", provider="p", upstream_status=429, status=429, kind="rate_limit",
                               retry_after=retry_after)


def down() -> UpstreamStatusError:
    return UpstreamStatusError("down", provider="p", upstream_status=503, status=503, kind="overloaded")


CONFIGURED = RoutingTarget("p", "m", "openai_chat", api_key="sk-configured-1", headers={"X-Org": "o"})


# --- the key ----------------------------------------------------------------------------------------

def test_the_configured_credential_keeps_the_plain_label() -> None:
    assert CONFIGURED.breaker_key == "p:m" and type(CONFIGURED.breaker_key) is str
    assert CONFIGURED.replace(model="m2").breaker_key == "p:m2"  # direct routing's replace(model=...)
    assert CONFIGURED.replace(headers={"X-Org": "o"}).breaker_key == "p:m"  # an equal copy is the same credential


def test_another_credential_gets_a_short_fingerprint_never_the_key() -> None:
    a = CONFIGURED.replace(api_key="sk-tenant-a-secret")
    b = CONFIGURED.replace(api_key="sk-tenant-b-secret")
    org = CONFIGURED.replace(headers={"X-Org": "tenant-org"})
    keys = [a.breaker_key, b.breaker_key, org.breaker_key]
    assert all(isinstance(k, CredentialKey) and k.label == "p:m" for k in keys)
    assert len(set(keys)) == 3
    for k in keys:
        label, _, fp = k.rpartition("#")
        assert label == "p:m" and len(fp) == 8 and int(fp, 16) >= 0
        assert "secret" not in k and "tenant" not in k
    assert a.replace(model="m").breaker_key == a.breaker_key  # stable for one credential
    assert a.breaker_key is a.breaker_key  # cached on the target: one computation per target object


def test_a_tenants_own_endpoint_has_its_own_breakers() -> None:
    """A route hook's per-tenant base URL (the tenant's own deployment) shared `p:m`: one tenant's
    broken endpoint sidelined the configured one for everybody."""
    t, _ = tracker()
    own = CONFIGURED.replace(base_url="https://tenant-a.example/v1")
    own_key = CONFIGURED.replace(base_url="https://tenant-a.example/v1", api_key="sk-tenant-a")
    assert own.breaker_key.startswith("p:m@") and "tenant" not in own.breaker_key
    assert isinstance(own_key.breaker_key, CredentialKey) and own_key.breaker_key.label == own.breaker_key
    assert CONFIGURED.replace(base_url="https://tenant-b.example/v1").breaker_key != own.breaker_key
    for _ in range(2):
        t.record_failure(own.breaker_key, down())
    assert not t.acquire(own.breaker_key) and not t.acquire(own_key.breaker_key)  # that endpoint is down ...
    assert t.acquire("p:m") and t.acquire(CONFIGURED.replace(api_key="sk-b").breaker_key)  # ... the others are not
    for _ in range(2):
        t.record_failure("p:m", down())
    other = CONFIGURED.replace(base_url="https://tenant-b.example/v1")
    assert not t.acquire("p:m") and t.acquire(other.breaker_key)  # and the other way round


# --- the tracker ------------------------------------------------------------------------------------

def test_one_tenants_429s_open_only_its_own_breaker() -> None:
    t, _ = tracker()
    a = CONFIGURED.replace(api_key="sk-a").breaker_key
    b = CONFIGURED.replace(api_key="sk-b").breaker_key
    for _ in range(2):
        assert t.acquire(a)
        t.record_failure(a, rate_limited())
    assert not t.acquire(a) and not t.would_skip(b) and t.acquire(b) and t.acquire("p:m")
    assert [(s.label, s.state) for s in t.states()] == [(str(a), "open")]
    t.record_failure(b, rate_limited(retry_after=20))  # a Retry-After speaks for that credential only
    assert not t.acquire(b) and t.acquire("p:m")


def test_the_providers_failures_sideline_the_target_for_every_credential() -> None:
    t, clock = tracker()
    a = CONFIGURED.replace(api_key="sk-a").breaker_key
    b = CONFIGURED.replace(api_key="sk-b").breaker_key
    t.record_failure(a, down())
    t.record_failure(b, UpstreamTimeout("slow", provider="p"))
    assert not t.acquire("p:m") and not t.acquire(a) and not t.acquire(b) and t.would_skip(b)
    assert [(s.label, s.state) for s in t.states()] == [("p:m", "open")]  # shown as provider:model
    clock.now += 31
    assert t.acquire(b)  # b's request probes the target for everyone
    assert not t.acquire(a) and not t.acquire("p:m")
    t.record_success(b)
    assert t.acquire(a) and t.acquire("p:m") and t.states() == ()


def test_the_configured_keys_own_429s_do_not_sideline_tenants() -> None:
    t, _ = tracker()
    a = CONFIGURED.replace(api_key="sk-a").breaker_key
    for _ in range(2):
        t.record_failure("p:m", rate_limited())
    assert not t.acquire("p:m")  # as before: the configured key is rate limited
    assert t.acquire(a)
    t.record_success(a)  # a tenant's success says nothing about the configured key's limit
    assert not t.acquire("p:m")


def test_a_tenants_provider_failure_frees_its_own_probe() -> None:
    t, clock = tracker()
    a = CONFIGURED.replace(api_key="sk-a").breaker_key
    for _ in range(2):
        t.record_failure(a, rate_limited())
    clock.now += 31
    assert t.acquire(a)  # probes its own breaker ...
    t.record_failure(a, down())  # ... and the provider failed: no verdict on the credential
    assert not t.would_skip("p:m") and [s.failures for s in t.states()] == [1, 2]


def test_the_map_stays_bounded_with_many_tenants() -> None:
    t, clock = tracker(max_breakers=64)
    t.record_failure("p:m", down())
    t.record_failure("p:m", down())  # the provider's breaker: open
    for i in range(1000):  # tenants rate limited, each breaker open
        key = CONFIGURED.replace(api_key=f"sk-{i}").breaker_key
        t.record_failure(key, rate_limited(retry_after=60))
        assert len(t.states()) <= 64
    assert t.would_skip("p:m") and t.would_skip(CONFIGURED.replace(api_key="sk-999").breaker_key)
    clock.now += 61
    for i in range(1000, 1100):  # expired ones go first
        t.record_failure(CONFIGURED.replace(api_key=f"sk-{i}").breaker_key, rate_limited())
    assert len(t.states()) <= 64


# --- end to end: a real gunicorn, a route hook with per-tenant keys, the official SDK ----------------

PLUGIN = textwrap.dedent('''
    from routeplane import Plugin, PluginId
    from routeplane.hooks.language_model import RouteHook

    class TenantKeys(RouteHook):
        """Each tenant (the X-Tenant header) calls provider `a` with its own upstream key."""
        def resolve(self, chain, ctx):
            tenant = ctx.headers.get("x-tenant")
            if not tenant:
                return chain
            return [t.replace(api_key="sk-tenant-" + tenant + "-secret") if t.provider == "a" else t
                    for t in chain]

    class TenantKeysPlugin(Plugin):
        id = PluginId("tenant_keys")
        def install(self, app):
            app.language_model_builder().route_hook(TenantKeys())
''')


def _answer(req: RecordedRequest) -> Reply:
    """Upstream `a`: tenant A's key is rate limited; model `down` is overloaded for everyone."""
    body = req.json or {}
    if body.get("model") == "down":
        return Reply.json({"error": {"message": "overloaded", "type": "server_error"}}, 503)
    if req.headers.get("authorization") == "Bearer sk-tenant-A-secret":
        return Reply.json({"error": {"message": "Rate limit reached", "type": "requests",
                                     "code": "rate_limit_exceeded"}}, 429)
    if body.get("stream"):
        return Reply.sse([openai_chunk({"role": "assistant", "content": "from a"}), openai_chunk({}, "stop")])
    return Reply.json(openai_completion("from a", model=body.get("model", "x")))


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream]) -> Iterator[Tuple[GatewayProcess, FakeUpstream]]:
    a, b = servers
    a.default = _answer
    b.default = lambda req: (
        Reply.sse([openai_chunk({"role": "assistant", "content": "from b"}), openai_chunk({}, "stop")])
        if (req.json or {}).get("stream") else Reply.json(openai_completion("from b", model="model-b")))
    site = tempfile.mkdtemp(prefix="rp-breaker-keys-")
    with open(os.path.join(site, "rp_tenant_keys.py"), "w") as fh:
        fh.write(PLUGIN)
    dist = os.path.join(site, "rp_tenant_keys-0.0.dist-info")
    os.makedirs(dist)
    with open(os.path.join(dist, "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\nName: rp-tenant-keys\nVersion: 0.0\n")
    with open(os.path.join(dist, "entry_points.txt"), "w") as fh:
        fh.write("[routeplane.plugins]\ntenant_keys = rp_tenant_keys:TenantKeysPlugin\n")
    fast = {"connect": 2.0, "read": 5.0}
    config: Dict[str, Any] = {
        "providers": {
            "a": {"protocol": "openai_chat", "base_url": a.url + "/v1", "api_key": "sk-configured-secret",
                  "timeouts": fast},
            "b": {"protocol": "openai_chat", "base_url": b.url + "/v1", "api_key": "sk-b", "timeouts": fast},
        },
        "models": {name: {"targets": [{"provider": "a", "model": model}, {"provider": "b", "model": "model-b"}]}
                   for name, model in (("m", "model-a"), ("s", "model-s"), ("storm", "down"))},
        "fallback": {"cooldown": {"failures": 2, "seconds": 60}},
        "plugins": {"tenant_keys": {}},
    }
    pythonpath = os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p)
    try:
        with GatewayProcess(config, workers=1, threads=4, env={"PYTHONPATH": pythonpath}) as gw:
            yield gw, a
    finally:
        shutil.rmtree(site, ignore_errors=True)


def _ask(gw: GatewayProcess, model: str, tenant: str = "") -> str:
    headers = {"X-Tenant": tenant} if tenant else {}
    with OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=20,
                default_headers=headers) as client:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return r.choices[0].message.content or ""


def _keys_seen(up: FakeUpstream, since: int) -> list:
    return [r.headers.get("authorization") for r in up.requests[since:]]


def test_e2e_one_tenants_429s_do_not_stop_another_tenant(gateway: Tuple[GatewayProcess, FakeUpstream]) -> None:
    gw, a = gateway
    seen = len(a.requests)
    assert [_ask(gw, "m", "A") for _ in range(2)] == ["from b", "from b"]  # A's key is rate limited: fallback
    assert _keys_seen(a, seen) == ["Bearer sk-tenant-A-secret"] * 2
    seen = len(a.requests)
    assert _ask(gw, "m", "A") == "from b" and _keys_seen(a, seen) == []  # A's breaker is open: a skipped
    assert _ask(gw, "m", "B") == "from a"  # B's own key: its requests still reach a
    assert _ask(gw, "m") == "from a"  # so do the configured key's
    assert _keys_seen(a, seen) == ["Bearer sk-tenant-B-secret", "Bearer sk-configured-secret"]
    logs = gw.logs()
    assert "sk-tenant-A-secret" not in logs and "sk-configured-secret" not in logs


def test_e2e_a_503_storm_sidelines_the_target_for_every_tenant(gateway: Tuple[GatewayProcess, FakeUpstream]) -> None:
    gw, a = gateway
    seen = len(a.requests)
    assert [_ask(gw, "storm", "A") for _ in range(2)] == ["from b", "from b"]
    assert len(a.requests) - seen == 2
    assert [_ask(gw, "storm", t) for t in ("A", "B", "")] == ["from b"] * 3
    assert len(a.requests) - seen == 2  # the provider is down for everyone: nobody called it again


def _stream(gw: GatewayProcess, model: str, tenant: str) -> str:
    with OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=20,
                default_headers={"X-Tenant": tenant}) as client:
        stream = client.chat.completions.create(model=model, stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_e2e_streams_keep_the_breakers_apart(gateway: Tuple[GatewayProcess, FakeUpstream]) -> None:
    gw, a = gateway
    assert [_stream(gw, "s", "A") for _ in range(2)] == ["from b", "from b"]
    seen = len(a.requests)
    assert _stream(gw, "s", "B") == "from a"  # B's completed stream: a success of B's credential ...
    assert _stream(gw, "s", "A") == "from b"  # ... which does not close A's breaker
    assert _keys_seen(a, seen) == ["Bearer sk-tenant-B-secret"]
