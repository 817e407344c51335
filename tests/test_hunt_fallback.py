"""Bug hunt on routing, fallback, cooldown and upstream faults: the official SDKs against the gateway under
gunicorn, two scripted upstreams behind every route (regressions for fixes in routeplane/language_model/).

Breakers are per worker and outlive a test, so each test uses routes (and so `provider:model` labels) of
its own."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Tuple

import anthropic
import openai
import pytest
import requests
from google import genai
from google.genai import types as genai_types

from tests.support.gateway import GatewayProcess
from tests.support.spend import spend_row
from tests.support.upstream import FakeUpstream, Reply, openai_completion

pytestmark = pytest.mark.e2e

FAST = {"connect": 1.0, "read": 1.0}
KEY_A = "sk-upstream-a-secret-0123456789"
KEY_B = "sk-upstream-b-secret-0123456789"
WIRES = {"oc": "openai_chat", "an": "anthropic_messages", "ge": "gemini", "orr": "openai_responses"}
# Each route: its wire, then its chain (A first, B behind it, or A alone).
ROUTES: Dict[str, Tuple[str, bool]] = {
    "big-400": ("oc", True),
    "big-429": ("an", False),
    "ra-zero": ("oc", True),
    "all-overloaded": ("an", True),
    "rr": ("an", True),
    "rr-ge": ("ge", True),
    "count-cool": ("an", True),
}
STRATEGIES = {"rr": "round_robin", "rr-ge": "round_robin"}


def _provider(wire: str, url: str, key: str) -> Dict[str, Any]:
    base = url + "/v1" if wire.startswith("openai") else url
    return {"protocol": wire, "base_url": base, "api_key": key, "timeouts": dict(FAST),
            "prices": {"input": 1.0, "output": 10.0}}


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    a, b = servers
    providers: Dict[str, Any] = {}
    for short, wire in WIRES.items():
        providers[short + "-a"] = _provider(wire, a.url, KEY_A)
        providers[short + "-b"] = _provider(wire, b.url, KEY_B)
    models = {}
    for route, (short, fallback) in ROUTES.items():
        targets = [{"provider": short + "-a", "model": route}]
        if fallback:
            targets.append({"provider": short + "-b", "model": route})
        models[route] = {"targets": targets, "strategy": STRATEGIES.get(route, "priority")}
    db = f"sqlite:///{tmp_path_factory.mktemp('hunt-fallback')}/rp.db"
    config = {"database": {"url": db}, "providers": providers, "models": models,
              "fallback": {"cooldown": {"failures": 3, "seconds": 30}}}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    gw.db_url = db  # type: ignore[attr-defined]
    yield gw
    gw.stop()


HI = [{"role": "user", "content": "hi"}]


# --- an upstream error with a large body ---------------------------------------------------------------


def test_a_4xx_with_a_large_body_fails_fast_with_its_own_status(ups: Any, oai: openai.OpenAI,
                                                               gateway: GatewayProcess) -> None:
    """An error body over 64 KiB (a provider echoing a long prompt in its 400) was a retriable 502 "sent a
    response over 65536 bytes": the client's own mistake fell back to the next target and was billed
    there. The status line is the verdict; the body only explains it."""
    a, b = ups
    a.enqueue(Reply.json({"error": {"message": "prompt is too long: " + "x" * 100_000,
                                    "type": "invalid_request_error"}}, 400))
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="big-400", messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 400 and "prompt is too long" in info.value.message
    assert len(b.requests) == 0
    row = spend_row(gateway.db_url, info.value.response.headers["x-request-id"])
    assert (row["status"], row["attempts"], row["cost_micro_usd"]) == (400, 1, 0)
    # A 400 whose body breaks off (reset mid-body) is still the client's 400.
    a.enqueue(Reply(400, {"Content-Type": "application/json"}, chunks=[b'{"error": {"message": "bad', b'"}}'],
                    reset_after=1))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="big-400", messages=HI)  # type: ignore[arg-type]
    assert len(b.requests) == 0


def test_a_429_with_a_large_body_keeps_its_retry_after(ups: Any, claude: anthropic.Anthropic) -> None:
    a, _ = ups
    a.enqueue(Reply.json({"type": "error", "error": {"type": "rate_limit_error", "message": "slow " * 20_000}},
                         429, headers={"retry-after": "17"}))
    with pytest.raises(anthropic.RateLimitError) as info:
        claude.messages.create(model="big-429", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "17"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


# --- Retry-After --------------------------------------------------------------------------------------


def test_retry_after_zero_does_not_open_the_breaker(ups: Any, oai: openai.OpenAI) -> None:
    """`Retry-After: 0` ("again now") opened the breaker until now: half-open, so one request at a time
    could reach the target, and the next 429 (a failed "probe") sidelined it for the full 30 s although
    `cooldown.failures` (3) was not reached."""
    a, b = ups
    rate_limited = Reply.json({"error": {"message": "slow down", "type": "rate_limit_error"}}, 429,
                              headers={"retry-after": "0", "retry-after-ms": "0"})
    for _ in range(2):
        a.enqueue(rate_limited)
        b.enqueue(Reply.json(openai_completion("from b")))
        out = oai.chat.completions.create(model="ra-zero", messages=HI)  # type: ignore[arg-type]
        assert out.choices[0].message.content == "from b"
    a.enqueue(Reply.json(openai_completion("from a")))
    out = oai.chat.completions.create(model="ra-zero", messages=HI)  # type: ignore[arg-type]
    assert out.choices[0].message.content == "from a"  # 2 failures of 3: still closed
    assert (len(a.requests), len(b.requests)) == (3, 2)


def test_every_target_overloaded_keeps_the_earliest_retry_after(ups: Any, claude: anthropic.Anthropic) -> None:
    """One overloaded target kept its Retry-After, but when every target was overloaded the merged 503 (529
    on this wire) dropped them all, so the SDK retried at once, sooner than any upstream asked."""
    a, b = ups
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    a.enqueue(Reply.json(overloaded, 529, headers={"retry-after": "20"}))
    b.enqueue(Reply.json(overloaded, 503, headers={"retry-after": "4"}))
    with pytest.raises(anthropic.InternalServerError) as info:
        claude.messages.create(model="all-overloaded", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert info.value.response.headers["retry-after"] == "4"
    assert KEY_A not in info.value.message and KEY_B not in info.value.message


# --- round robin ----------------------------------------------------------------------------------------


def _an_message(text: str) -> Dict[str, Any]:
    return {"id": "msg_up", "type": "message", "role": "assistant", "model": "up", "stop_reason": "end_turn",
            "stop_sequence": None, "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": 3, "output_tokens": 1}}


def test_count_tokens_does_not_turn_the_round_robin(ups: Any, claude: anthropic.Anthropic) -> None:
    """count_tokens (a dry run) resolved the route as a request does, so it advanced the rotation: a client
    that counts before each message (Claude Code does) sent every message to the same one of two targets."""
    a, b = ups
    for up, name in ((a, "a"), (b, "b")):
        up.default = lambda req, name=name: (Reply.json({"input_tokens": 3}) if req.path.endswith("/count_tokens")
                                             else Reply.json(_an_message(name)))
    try:
        served = []
        for _ in range(4):
            claude.messages.count_tokens(model="rr", messages=HI)  # type: ignore[arg-type]
            served.append(claude.messages.create(model="rr", max_tokens=5, messages=HI).content[0].text)  # type: ignore
    finally:
        a.default = b.default = None
    assert sorted(served) == ["a", "a", "b", "b"], served
    # Each count went to the target the next message then went to.
    counted = [r.path.endswith("/count_tokens") for r in a.requests]
    assert counted == [True, False, True, False]


def test_gemini_count_tokens_and_explain_do_not_turn_the_round_robin(ups: Any, gateway: GatewayProcess) -> None:
    """Gemini's countTokens and POST /admin/explain advanced the rotation too (the same dry-run resolve)."""
    a, b = ups
    for up, name in ((a, "a"), (b, "b")):
        up.default = lambda req, name=name: Reply.json({
            "candidates": [{"content": {"role": "model", "parts": [{"text": name}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}})
    client = genai.Client(api_key="client-key", http_options=genai_types.HttpOptions(base_url=gateway.url))
    explain = {"wire": "gemini",
               "request": {"model": "rr-ge", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    try:
        served = []
        for _ in range(2):
            assert client.models.count_tokens(model="rr-ge", contents="hi").total_tokens
            report = requests.post(gateway.url + "/admin/explain", json=explain, timeout=10).json()
            assert report["chain"][0]["provider"] == "ge-" + ("a" if not served else "b")  # the next request's head
            served.append(client.models.generate_content(model="rr-ge", contents="hi").text)
    finally:
        a.default = b.default = None
    assert served == ["a", "b"]


# --- count_tokens and the breaker ----------------------------------------------------------------------


def test_count_tokens_skips_a_head_that_is_cooling_down(ups: Any, claude: anthropic.Anthropic) -> None:
    """count_tokens went to the chain's head even while its breaker was open: messages skipped the dead
    (or rate-limited) head, but every count (Claude Code counts before each turn) still paid its
    connection or read timeout and failed. It goes where the next message would go."""
    a, b = ups
    a.enqueue(Reply.json({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, 429,
                         headers={"retry-after": "30"}))
    b.enqueue(Reply.json(_an_message("b")))
    assert claude.messages.create(model="count-cool", max_tokens=5, messages=HI).content[0].text == "b"  # type: ignore
    b.enqueue(Reply.json({"input_tokens": 7}))
    assert claude.messages.count_tokens(model="count-cool", messages=HI).input_tokens == 7  # type: ignore[arg-type]
    assert len(a.requests) == 1 and b.requests[-1].path == "/v1/messages/count_tokens"
