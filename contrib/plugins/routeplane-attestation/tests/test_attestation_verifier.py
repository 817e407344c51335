"""The signed-report verifier's checks one by one, options validation with key paths, and a custom verifier class."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterator, Mapping

import pytest
from attestation_support import GATEWAY_CONFIG, GOOD_MEASUREMENT, AttestationServer, provider_section
from marshmallow import Schema, fields
from nacl.signing import SigningKey
from routeplane_attestation import (
    AttestationPlugin,
    SignedReportVerifier,
    VerificationFailed,
    Verifier,
    canonical_json,
    options_schema_for,
)

from routeplane.app import discover_plugins
from routeplane.config import ConfigError, parse_config
from routeplane.testing import Gateway, check_plugin


@pytest.fixture(scope="module")
def server() -> Iterator[AttestationServer]:
    with AttestationServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server: AttestationServer) -> None:
    server.mode, server.custom, server.delay = "valid", None, 0.0


def verifier(server: AttestationServer, **changes: Any) -> SignedReportVerifier:
    section = AttestationPlugin(providers={"tee": provider_section(server, **dict({"timeout": 3}, **changes))}).options
    opts = {k: v for k, v in section["providers"]["tee"].items() if k != "verifier"}
    return SignedReportVerifier("tee", opts)


def answer_with(server: AttestationServer, make: Any) -> None:
    server.mode = "custom"
    server.custom = make


def test_valid_report_and_fresh_nonce_each_time(server: AttestationServer) -> None:
    v = verifier(server)
    a, b = v.verify("echo"), v.verify("echo")
    assert a.verified and b.verified, (a.reason, b.reason)
    assert a.claims == {"measurement": GOOD_MEASUREMENT, "signing_key": server.public_hex,
                        "report_timestamp": a.claims["report_timestamp"]}
    n1, n2 = server.nonces[-2:]
    assert n1 != n2 and len(n1) == 64 and int(n1, 16) >= 0


def test_measurement_check_is_optional(server: AttestationServer) -> None:
    server.mode = "wrong_measurement"
    assert not verifier(server).verify("echo").verified
    assert verifier(server, measurements=[]).verify("echo").verified  # only the key is pinned


CASES = {
    "tampered body": (lambda s, n, m: (200, json.dumps({"report": dict(s.report(n, m), model="other"),
                                                        "signature": json.loads(s.signed(s.report(n, m)))["signature"]})
                                       .encode()), "signature does not verify"),
    "other key": (lambda s, n, m: (200, _signed_by(SigningKey(b"\x09" * 32), s.report(n, m))), "not pinned"),
    "other key claiming the pinned one": (
        lambda s, n, m: (200, _signed_by(SigningKey(b"\x09" * 32), s.report(n, m), claim=s.public_hex)),
        "signature does not verify"),
    "wrong model": (lambda s, n, m: (200, s.signed(s.report(n, "another-model"))), "another model"),
    "future timestamp": (lambda s, n, m: (200, s.signed(s.report(n, m, timestamp=int(time.time()) + 600))),
                         "in the future"),
    "no timestamp": (lambda s, n, m: (200, s.signed(s.report(n, m, timestamp="yesterday"))), "numeric timestamp"),
    "not json": (lambda s, n, m: (200, b"<html>"), "did not answer JSON"),
    "no signature": (lambda s, n, m: (200, json.dumps({"report": s.report(n, m)}).encode()), "signature"),
    "no report": (lambda s, n, m: (200, b"[]"), "no `report` object"),
    "redirect": (lambda s, n, m: (302, b""), "HTTP 302"),
    "too large": (lambda s, n, m: (200, b" " * 5000), "exceeds 1024 bytes"),
}


def _signed_by(key: SigningKey, report: Dict[str, Any], claim: str = "") -> bytes:
    report = dict(report, signing_key=claim or key.verify_key.encode().hex())
    return json.dumps({"report": report, "signature": key.sign(canonical_json(report)).signature.hex()}).encode()


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_check_fails_closed(server: AttestationServer, case: str) -> None:
    make, reason = CASES[case]
    answer_with(server, lambda n, m: make(server, n, m))
    verdict = verifier(server, max_bytes=1024).verify("echo")
    assert not verdict.verified and reason in verdict.reason, verdict.reason


def test_connection_refused_is_unverified(server: AttestationServer) -> None:
    from tests.support.gateway import free_port

    v = verifier(server)
    v.url = f"http://127.0.0.1:{free_port()}/report"
    verdict = v.verify("echo")
    assert not verdict.verified and "unreachable" in verdict.reason


def test_a_trickling_endpoint_cannot_outlast_the_timeout(server: AttestationServer) -> None:
    server.mode = "trickle"
    v = verifier(server, timeout=0.4)
    t0 = time.monotonic()
    verdict = v.verify("echo")
    assert not verdict.verified and "timed out" in verdict.reason
    assert time.monotonic() - t0 < 1.5  # deadline (0.4 s) + at most one read timeout


def test_a_bug_in_a_verifier_is_unverified(server: AttestationServer) -> None:
    class Buggy(SignedReportVerifier):
        def check(self, model: str) -> Mapping[str, Any]:
            raise KeyError("oops")

    v = Buggy("tee", verifier(server).options)
    verdict = v.verify("echo")
    assert not verdict.verified and verdict.reason == "verifier error (KeyError)"


# --- options ----------------------------------------------------------------------


BAD = [
    ({"policy": "deny"}, "plugins.attestation.policy"),
    ({"providers": {"tee": {"url": "http://tee.example.com/r", "signing_keys": ["00" * 32]}}},
     "plugins.attestation.providers.tee.url"),
    ({"providers": {"tee": {"url": "https://169.254.169.254/r", "signing_keys": ["00" * 32]}}},
     "plugins.attestation.providers.tee.url"),
    ({"providers": {"tee": {"url": "https://tee.example.com/r", "signing_keys": ["abcd"]}}},
     "plugins.attestation.providers.tee.signing_keys.0"),
    ({"providers": {"tee": {"url": "https://tee.example.com/r"}}}, "plugins.attestation.providers.tee.signing_keys"),
    ({"providers": {"tee": {"verifier": "tpm", "url": "https://x.example/r"}}},
     "plugins.attestation.providers.tee.verifier"),
    ({"providers": {"tee": {"url": "https://tee.example.com/r", "signing_keys": ["00" * 32], "nonce": "x"}}},
     "plugins.attestation.providers.tee.nonce"),
    ({"cache": {"verified_ttl": -1}}, "plugins.attestation.cache.verified_ttl"),
]


@pytest.mark.parametrize("options,path", BAD)
def test_bad_options_name_the_key(options: Dict[str, Any], path: str) -> None:
    config = parse_config({**GATEWAY_CONFIG, "plugins": {"attestation": options}}, "routeplane.yaml")
    with pytest.raises(ConfigError) as info:
        discover_plugins(config)
    assert path in str(info.value), str(info.value)


def test_discovered_through_the_entry_point(server: AttestationServer) -> None:
    config = parse_config({**GATEWAY_CONFIG, "plugins": {"attestation": {
        "policy": "enforce", "providers": {"tee": provider_section(server)}}}}, "routeplane.yaml")
    [plugin] = discover_plugins(config)
    assert isinstance(plugin, AttestationPlugin) and plugin.policy == "enforce"
    assert isinstance(plugin.provider_verifiers["tee"], SignedReportVerifier)


def test_plugin_keeps_the_plugin_contract(server: AttestationServer) -> None:
    report = check_plugin(AttestationPlugin(policy="enforce", providers={"tee": provider_section(server)}),
                          config=GATEWAY_CONFIG, request={"model": "only-tee",
                                                          "messages": [{"role": "user", "content": "x"}]})
    assert report.hooks["route_hook"] == 1


# --- adding a verifier ------------------------------------------------------------------


class AllowListVerifier(Verifier):
    """A whole verifier kind in a few lines: models named in the config verify, others do not."""

    name = "allow_list"

    class options_schema(Schema):  # noqa: N801 - the contract's attribute name
        models = fields.List(fields.String(), required=True)

    def check(self, model: str) -> Mapping[str, Any]:
        if model not in self.options["models"]:
            raise VerificationFailed(f"{model} is not allowed")
        return {"rule": "allow_list"}


class MyAttestation(AttestationPlugin):
    verifiers = {**AttestationPlugin.verifiers, "allow_list": AllowListVerifier, "tee": AllowListVerifier}
    options_schema = options_schema_for(verifiers)


def test_custom_verifier_selected_by_option_or_provider_id() -> None:
    by_option = MyAttestation(policy="enforce", providers={"tee": {"verifier": "allow_list", "models": ["echo"]}})
    by_id = MyAttestation(policy="enforce", providers={"tee": {"models": ["nope"]}})  # registered under "tee"
    assert by_option.provider_verifiers["tee"].name == by_id.provider_verifiers["tee"].name == "allow_list"
    ok = Gateway(plugins=[by_option], config=GATEWAY_CONFIG).chat(model="only-tee")
    assert ok.status == 200 and ok.settlements[0].metadata["attestation"]["verdicts"][0]["claims"] == \
        {"rule": "allow_list"}
    denied = Gateway(plugins=[by_id], config=GATEWAY_CONFIG).chat(model="only-tee")
    assert denied.status == 503 and "echo is not allowed" in denied.json["error"]["message"]
