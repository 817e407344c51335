"""The verdict cache: one verification per stampede, TTLs by verdict (injected clock), fail-closed waits."""

from __future__ import annotations

import threading
from typing import Any, Iterator, List, Mapping, Tuple

import pytest
from attestation_support import AttestationServer, provider_section
from routeplane_attestation import AttestationPlugin, Verdict, VerdictCache

from routeplane.language_model.context import PipelineContext
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import Prompt

TEE = RoutingTarget(provider="tee", model="echo", protocol="mock", confidential=True)
PLAIN = RoutingTarget(provider="plain", model="echo", protocol="mock")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ctx(model: str = "only-tee") -> PipelineContext:
    return PipelineContext("req-1", "openai_chat", Prompt(model=model, messages=()), {})


def resolve(plugin: AttestationPlugin, chain: List[RoutingTarget]) -> Tuple[List[str], Mapping[str, Any]]:
    c = ctx()
    out = plugin.hook.resolve(list(chain), c)
    return [t.label for t in out], c.metadata["attestation"]


@pytest.fixture
def server() -> Iterator[AttestationServer]:
    with AttestationServer() as srv:
        yield srv


def test_stampede_one_verification(server: AttestationServer) -> None:
    server.delay = 0.3  # long enough that all 20 requests arrive while the first is verifying
    plugin = AttestationPlugin(policy="enforce", providers={"tee": provider_section(server, timeout=5)})
    start = threading.Barrier(20, timeout=10)
    results: List[Tuple[List[str], Mapping[str, Any]]] = []
    errors: List[BaseException] = []

    def one() -> None:
        try:
            start.wait()
            results.append(resolve(plugin, [TEE, PLAIN]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors and len(results) == 20
    assert server.hits == 1  # ONE verification for 20 concurrent requests
    assert all(chain == ["tee:echo", "plain:echo"] and meta["verdicts"][0]["verified"] for chain, meta in results)
    assert sum(1 for _c, meta in results if not meta["verdicts"][0]["cached"]) == 1  # only the leader fetched
    stats = plugin.cache.stats
    assert stats.misses == 1 and stats.joined + stats.hits == 19


def test_keys_are_per_provider_and_model(server: AttestationServer) -> None:
    plugin = AttestationPlugin(providers={"tee": provider_section(server)})
    other = TEE.replace(model="other")
    resolve(plugin, [TEE, other])
    assert server.hits == 2
    resolve(plugin, [other, TEE, other])
    assert server.hits == 2  # both cached; a duplicate target is verified once


def test_verified_verdict_expires_after_verified_ttl(server: AttestationServer) -> None:
    clock = FakeClock()
    plugin = AttestationPlugin(policy="enforce", providers={"tee": provider_section(server)}, clock=clock)
    assert resolve(plugin, [TEE])[1]["verdicts"][0]["cached"] is False and server.hits == 1
    clock.now += 599
    assert resolve(plugin, [TEE])[1]["verdicts"][0]["cached"] is True and server.hits == 1
    server.mode = "wrong_measurement"  # the endpoint changed; the cache hides it until expiry
    assert resolve(plugin, [TEE])[0] == ["tee:echo"]
    clock.now += 2  # 601 s: past the default 10 min
    with pytest.raises(Exception) as info:
        resolve(plugin, [TEE])
    assert info.value.status == 503 and server.hits == 2


def test_unverified_verdict_expires_sooner(server: AttestationServer) -> None:
    clock = FakeClock()
    server.mode = "http_500"
    plugin = AttestationPlugin(policy="enforce", providers={"tee": provider_section(server)}, clock=clock)
    assert resolve(plugin, [TEE, PLAIN])[0] == ["plain:echo"] and server.hits == 1
    server.mode = "valid"
    clock.now += 59
    chain, meta = resolve(plugin, [TEE, PLAIN])
    assert chain == ["plain:echo"] and meta["verdicts"][0]["cached"] is True and server.hits == 1
    clock.now += 2  # 61 s: past the default 1 min for an unverified verdict
    chain, meta = resolve(plugin, [TEE, PLAIN])
    assert chain == ["tee:echo", "plain:echo"] and meta["verdicts"][0]["cached"] is False and server.hits == 2


def test_ttls_from_options(server: AttestationServer) -> None:
    clock = FakeClock()
    plugin = AttestationPlugin(providers={"tee": provider_section(server)}, clock=clock,
                               cache={"verified_ttl": 5, "unverified_ttl": 0})
    resolve(plugin, [TEE])
    clock.now += 4.9
    resolve(plugin, [TEE])
    assert server.hits == 1
    clock.now += 0.2
    resolve(plugin, [TEE])
    assert server.hits == 2
    server.mode = "stale"
    clock.now += 10
    resolve(plugin, [TEE])
    resolve(plugin, [TEE])  # unverified_ttl 0: never cached
    assert server.hits == 4


def test_waiters_fail_closed_when_the_leader_is_slow(server: AttestationServer) -> None:
    server.delay = 1.0
    plugin = AttestationPlugin(policy="enforce", providers={"tee": provider_section(server, timeout=5)},
                               cache={"wait_timeout": 0.2})
    out: List[Tuple[List[str], Mapping[str, Any]]] = []
    leader = threading.Thread(target=lambda: out.append(resolve(plugin, [TEE, PLAIN])))
    leader.start()
    deadline = threading.Event()
    for _ in range(100):  # wait (bounded) until the leader's fetch reached the server
        if server.hits:
            break
        deadline.wait(0.02)
    chain, meta = resolve(plugin, [TEE, PLAIN])
    assert chain == ["plain:echo"]
    assert "did not finish in time" in meta["verdicts"][0]["reason"]
    leader.join(10)
    assert out[0][0] == ["tee:echo", "plain:echo"] and server.hits == 1


def test_cache_unit_verify_raising_caches_nothing() -> None:
    cache = VerdictCache()
    fallback = Verdict.failed("p", "m", "x", "fallback", 0.0)

    def boom() -> Verdict:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        cache.get_or_verify(("p", "m"), boom, lambda: fallback)
    assert cache.peek(("p", "m")) is None
    ok = Verdict.ok("p", "m", "x", 0.0)
    assert cache.get_or_verify(("p", "m"), lambda: ok, lambda: fallback) == (ok, False)
    assert cache.get_or_verify(("p", "m"), lambda: fallback, lambda: fallback) == (ok, True)
