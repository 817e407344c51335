"""Hostile use of the attestation plugin: client-chosen cache keys, forged and malformed reports."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import pytest
from attestation_support import GATEWAY_CONFIG, AttestationServer, provider_section
from routeplane_attestation import AttestationPlugin, SignedReportVerifier, VerdictCache
from routeplane_attestation.verdict import Verdict

from routeplane.testing import Gateway


@pytest.fixture(scope="module")
def server() -> Iterator[AttestationServer]:
    with AttestationServer() as srv:
        yield srv


def test_the_verdict_cache_is_bounded_whatever_the_keys() -> None:
    """Verdicts were kept forever (an expired one was only overwritten by its own key): one entry
    per model a client named on a direct route (`tee:<anything>`), so memory grew without bound."""
    now = [0.0]
    cache = VerdictCache(verified_ttl=600, unverified_ttl=60, clock=lambda: now[0])
    for i in range(5_000):
        key = ("tee", f"m{i}")
        cache.get_or_verify(key, lambda k=key: Verdict.failed(k[0], k[1], "signed_report", "no", now[0]),
                            lambda: Verdict.failed("tee", "x", "signed_report", "late", now[0]))
        now[0] += 0.01
    assert len(cache._entries) <= 4096  # the default max_entries
    # The newest verdicts are the ones kept, and still served from the cache.
    newest = cache.get_or_verify(("tee", "m4999"), lambda: pytest.fail("verified again"), lambda: pytest.fail("late"))
    assert newest[1] is True


def test_a_flood_of_invented_models_does_not_evict_the_verdict_in_use() -> None:
    """Eviction was oldest-first: a client naming new `tee:` models pushed out the verdict of the route
    everyone uses, so the next request of each paid a fresh verification."""
    now = [0.0]
    cache = VerdictCache(verified_ttl=600, unverified_ttl=60, clock=lambda: now[0], max_entries=4)
    verified = []

    def used() -> Verdict:
        verified.append(now[0])
        return Verdict.ok("tee", "used", "signed_report", now[0])

    late = lambda: Verdict.failed("tee", "x", "signed_report", "late", now[0])  # noqa: E731
    for i in range(20):
        cache.get_or_verify(("tee", "used"), used, late)
        key = ("tee", f"invented-{i}")
        cache.get_or_verify(key, lambda k=key: Verdict.failed(k[0], k[1], "signed_report", "no", now[0]), late)
        now[0] += 1
    assert verified == [0.0]  # verified once, then served from the cache throughout
    assert len(cache) == 4


def test_direct_routes_with_invented_models_cannot_grow_the_cache(server: AttestationServer) -> None:
    server.mode = "http_500"
    plugin = AttestationPlugin(policy="enforce", cache={"max_entries": 8},
                               providers={"tee": provider_section(server, timeout=3.0)})
    gw = Gateway(plugins=[plugin], config=GATEWAY_CONFIG)
    for i in range(20):
        result = gw.chat(model=f"tee:invented-{i}")
        assert result.status == 503 and result.json["error"]["code"] == "no_verified_target"
    assert len(plugin.cache) == 8


@pytest.mark.parametrize("case", ["duplicate_nonce_key", "non_ascii_nonce", "huge_timestamp", "nan_timestamp",
                                  "signature_of_another_report", "lone_surrogate"])
def test_malformed_reports_are_unverified_with_a_reason(server: AttestationServer, case: str) -> None:
    """Each is a clear unverified verdict, never an exception out of the hook."""

    def custom(nonce: str, model: str) -> Any:
        report: Dict[str, Any] = server.report(nonce, model)
        if case == "duplicate_nonce_key":
            # Signed with an old nonce; the fresh one spliced in as an earlier duplicate key does not count.
            signed = json.loads(server.signed(server.report("0f" * 32, model)))
            body = json.dumps(signed["report"]).replace('{"version"', '{"nonce": "%s", "version"' % nonce, 1)
            return 200, ('{"report": %s, "signature": "%s"}' % (body, signed["signature"])).encode()
        if case == "non_ascii_nonce":
            report["nonce"] = "é" * 64
        elif case == "huge_timestamp":
            report["timestamp"] = 10 ** 400
        elif case == "nan_timestamp":
            body = server.signed(report).replace(b'"timestamp": %d' % report["timestamp"], b'"timestamp": NaN')
            return 200, body
        elif case == "signature_of_another_report":
            other = json.loads(server.signed(server.report(nonce, "other-model")))
            return 200, json.dumps({"report": report, "signature": other["signature"]}).encode()
        elif case == "lone_surrogate":
            return 200, server.signed(report).replace(b'"tee": "tdx+h100"', b'"tee": "\\ud800"')
        return 200, server.signed(report)

    server.mode, server.custom = "custom", custom
    verifier = SignedReportVerifier("tee", provider_section(server, timeout=3.0))
    verdict = verifier.verify("echo")
    assert verdict.verified is False and verdict.reason
    assert "verifier error" not in verdict.reason, verdict.reason
