"""Each attestation outcome from a real local server: the chain after the hook under record/enforce, and the client's answer."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

import pytest
from attestation_support import GATEWAY_CONFIG, MODES, AttestationServer, provider_section
from routeplane_attestation import AttestationPlugin

from routeplane.hooks.language_model import RouteHook
from routeplane.testing import Gateway

# mode → the reason an unverified verdict must give (None: verified)
REASONS: Dict[str, Any] = {
    "valid": None,
    "wrong_measurement": "measurement is not pinned",
    "replayed_nonce": "does not echo this request's nonce",
    "stale": "the report is stale",
    "timeout": "timed out",
    "http_500": "answered HTTP 500",
}


class ChainSpy(RouteHook):
    """Registered after the plugin: sees the chain the attestation hook returned."""

    def __init__(self) -> None:
        self.chains: List[List[str]] = []

    def resolve(self, chain: List[Any], ctx: Any) -> List[Any]:
        self.chains.append([t.label for t in chain])
        return chain


@pytest.fixture(scope="module")
def server() -> Iterator[AttestationServer]:
    with AttestationServer() as srv:
        yield srv


def gateway(srv: AttestationServer, policy: str) -> Tuple[Gateway, ChainSpy]:
    spy = ChainSpy()
    # A short timeout only where the endpoint hangs: the machine may be busy.
    timeout = 0.3 if srv.mode == "timeout" else 3.0
    plugin = AttestationPlugin(policy=policy, providers={"tee": provider_section(srv, timeout=timeout)})
    return Gateway(plugins=[plugin], hooks=[spy], config=GATEWAY_CONFIG), spy


def prime_replay(srv: AttestationServer) -> None:
    """A genuine answer the replay mode can send again (as an attacker in the path would)."""
    srv.mode = "valid"
    gw, _spy = gateway(srv, "record")
    assert gw.chat(model="only-tee").status == 200


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["record", "enforce"])
def test_chain_after_hook(server: AttestationServer, mode: str, policy: str) -> None:
    if mode == "replayed_nonce":
        prime_replay(server)
    server.mode = mode
    gw, spy = gateway(server, policy)
    hits = server.hits
    result = gw.chat(model="mixed")
    verified = REASONS[mode] is None
    meta = result.settlements[0].metadata["attestation"]
    assert meta["verdicts"][0]["verified"] is verified, meta
    assert server.wait_hits(hits + 1) == hits + 1  # one fresh fetch (fresh nonce) per fresh plugin
    expect = ["tee:echo", "plain:echo"] if verified or policy == "record" else ["plain:echo"]
    assert spy.chains == [expect]
    assert result.status == 200
    assert gw.executor.calls[0].target.label == expect[0]
    assert meta["policy"] == policy
    [verdict] = meta["verdicts"]
    assert (verdict["provider"], verdict["model"], verdict["verified"], verdict["cached"]) == \
        ("tee", "echo", verified, False)
    if verified:
        assert verdict["claims"]["signing_key"] == server.public_hex and "reason" not in verdict
    else:
        assert REASONS[mode] in verdict["reason"]
    if policy == "enforce":
        assert meta["dropped"] == ([] if verified else ["tee:echo"])
    # The request event carries the same metadata (observers see it).
    [end] = [e for m, e in result.events if m == "on_request_end"]
    assert end.metadata["attestation"] == meta


@pytest.mark.parametrize("mode", MODES)
def test_nothing_left(server: AttestationServer, mode: str) -> None:
    """Only a confidential target: enforce → 503 naming the reason when it does not verify; record → served."""
    if mode == "replayed_nonce":
        prime_replay(server)
    server.mode = mode
    gw, spy = gateway(server, "enforce")
    result = gw.chat(model="only-tee")
    if REASONS[mode] is None:
        assert result.status == 200 and spy.chains == [["tee:echo"]]
        return
    assert result.status == 503
    err = result.json["error"]
    assert err["code"] == "no_verified_target" and err["type"] == "server_error"
    assert "No verified target is available for model 'only-tee'" in err["message"]
    assert REASONS[mode] in err["message"]
    assert gw.executor.calls == [] and spy.chains == []  # no upstream call; the spy never ran
    [settlement] = result.settlements
    assert settlement.status == 503 and settlement.outcome == "error" and settlement.provider is None
    assert settlement.metadata["attestation"]["dropped"] == ["tee:echo"]
    assert settlement.metadata["attestation"]["verdicts"][0]["verified"] is False
    # record: the same failure is tagged, not enforced
    gw2, spy2 = gateway(server, "record")
    served = gw2.chat(model="only-tee")
    assert served.status == 200 and spy2.chains == [["tee:echo"]]
    assert served.settlements[0].metadata["attestation"]["verdicts"][0]["verified"] is False


WIRES = {
    "openai_chat": ("/v1/chat/completions", {"model": "only-tee", "messages": [{"role": "user", "content": "x"}]}),
    "openai_responses": ("/v1/responses", {"model": "only-tee", "input": "x"}),
    "anthropic_messages": ("/v1/messages", {"model": "only-tee", "max_tokens": 16,
                                            "messages": [{"role": "user", "content": "x"}]}),
    "gemini": ("/v1beta/models/only-tee:generateContent", {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("wire", sorted(WIRES))
def test_503_in_each_wire(server: AttestationServer, wire: str, stream: bool) -> None:
    server.mode = "wrong_measurement"
    gw, _spy = gateway(server, "enforce")
    path, body = WIRES[wire]
    if stream:
        if wire == "gemini":
            path = path.replace(":generateContent", ":streamGenerateContent") + "?alt=sse"
        else:
            body = dict(body, stream=True)
    result = gw.request(body, path=path)
    assert result.status == 503, result.body  # before the first byte: a plain HTTP error, not an SSE frame
    doc = result.json
    if wire == "anthropic_messages":
        assert doc["type"] == "error" and doc["error"]["type"] == "api_error"
        message = doc["error"]["message"]
    elif wire == "gemini":
        assert doc["error"]["code"] == 503 and doc["error"]["status"] == "UNAVAILABLE"
        message = doc["error"]["message"]
    else:
        assert doc["error"]["code"] == "no_verified_target"
        message = doc["error"]["message"]
    assert "No verified target is available" in message and "measurement is not pinned" in message


def test_unconfigured_confidential_provider_is_unverified(server: AttestationServer) -> None:
    """Fail-closed: a confidential provider with no verifier section never verifies."""
    plugin = AttestationPlugin(policy="enforce", providers={})
    gw = Gateway(plugins=[plugin], config=GATEWAY_CONFIG)
    result = gw.chat(model="only-tee")
    assert result.status == 503
    assert "no attestation verifier is configured" in result.json["error"]["message"]
    assert gw.chat(model="mixed").status == 200 and gw.executor.calls[-1].target.provider == "plain"
    assert gw.chat(model="mixed").settlements[0].metadata["attestation"]["verdicts"][0]["verifier"] == "none"
    # A chain with no confidential target is untouched and gets no attestation metadata.
    plain = gw.chat(model="plain:echo")
    assert plain.status == 200 and "attestation" not in plain.settlements[0].metadata


@pytest.mark.parametrize("mode", ["valid", "wrong_measurement"])
def test_anthropic_count_tokens_reaches_only_a_verified_target(server: AttestationServer, mode: str) -> None:
    """count_tokens carries the whole prompt: under `enforce` it goes to a confidential Anthropic target only
    when /v1/messages would (the route hook runs first), else it is the same 503 and nothing is sent."""
    from tests.support.upstream import FakeUpstream, Reply

    server.mode = mode
    up = FakeUpstream().start()
    up.default = lambda req: Reply.json({"input_tokens": 17})
    try:
        config = {"providers": {"tee": {"protocol": "anthropic_messages", "base_url": up.url, "api_key": "k",
                                        "confidential": True}},
                  "models": {"private": {"targets": [{"provider": "tee", "model": "llama-70b"}]}}}
        plugin = AttestationPlugin(policy="enforce", providers={"tee": provider_section(server, timeout=3.0)})
        gw = Gateway(plugins=[plugin], config=config)
        body = {"model": "private", "messages": [{"role": "user", "content": "the merger closes on Friday"}]}
        result = gw.request(body, path="/v1/messages/count_tokens")
        if mode == "valid":
            assert result.status == 200 and result.json == {"input_tokens": 17}
            assert [r.path for r in up.requests] == ["/v1/messages/count_tokens"]
        else:
            assert result.status == 503 and result.json["error"]["type"] == "api_error", result.body
            assert "No verified target is available" in result.json["error"]["message"]
            assert up.requests == []
    finally:
        up.stop()
