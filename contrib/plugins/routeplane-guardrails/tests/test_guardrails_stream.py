"""Downgoing checks on streamed and non-streamed responses, driven by a scripted upstream (routeplane.testing)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Sequence

import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import Gateway, Result, run_request

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
PEM_BODY = "".join(f"MIIEpAIBAAKCAQEA{i:04d}Xq3v9nH2kJ4yV8mF1sZ0pQ6rT3wB5cD7eG9hI2jK4lM\n" for i in range(40))
PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY + "-----END RSA PRIVATE KEY-----"
FILLER = "The quick brown fox jumps over the lazy dog. " * 12  # longer than the hold window

REDACT = {"downgoing": {"api_keys": "redact", "private_keys": "redact", "pii_emails": "redact"}}
BLOCK = {"downgoing": {"api_keys": "block", "private_keys": "block"}}


def text_stream(chunks: Sequence[str]) -> List[StreamPart]:
    return [ResponseStart("chatcmpl-fixed", "up-model", 1700000000), TextStart(0),
            *[TextDelta(0, c) for c in chunks], TextEnd(0),
            UsageUpdate(Usage(input_tokens=3, output_tokens=7)), Finish(FinishReason.STOP)]


def split(text: str, n: int) -> List[str]:
    """`text` in `n` nearly equal chunks (n=0: one character per chunk)."""
    if n == 0:
        return list(text)
    size = -(-len(text) // n)
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream(script: List[Any], plugin: Optional[GuardrailsPlugin] = None) -> Result:
    body = {"model": "default", "messages": [{"role": "user", "content": "go"}], "stream": True,
            "stream_options": {"include_usage": True}}
    return run_request(body, plugins=[plugin] if plugin else [], script=[script])


def content(result: Result) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in result.sse
                   if isinstance(c, dict) and c.get("choices"))


def errors(result: Result) -> List[Dict[str, Any]]:
    return [c["error"] for c in result.sse if isinstance(c, dict) and "error" in c]


# --- redaction across chunk boundaries ---------------------------------------

SECRETS = [
    ("api_key", KEY, "Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"),
    ("email", "jane.doe@example.com", "jane.doe@example.com"),
    ("private_key", PEM, "Xq3v9nH2kJ4yV8mF1sZ0pQ6rT3wB5cD7eG9hI2jK4lM"),
]


@pytest.mark.parametrize("chunks", [2, 3, 7, 0], ids=["2-chunks", "3-chunks", "7-chunks", "per-char"])
@pytest.mark.parametrize("kind,secret,fragment", SECRETS, ids=[s[0] for s in SECRETS])
def test_secret_split_across_chunks_is_redacted(kind: str, secret: str, fragment: str, chunks: int) -> None:
    text = f"here: {secret} and more text after it"
    # Split so the secret itself straddles chunk boundaries.
    pieces = ["here: " + secret[:5]] + split(secret[5:] + " and more text after it", chunks)
    result = stream(text_stream(pieces), GuardrailsPlugin(**REDACT))
    assert result.status == 200
    assert content(result) == text.replace(secret, f"[REDACTED:{kind}]")
    for cut in range(0, len(fragment) - 6, 6):
        assert fragment[cut:cut + 6].encode() not in result.body
    assert result.body.rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("chunks", [2, 3, 0], ids=["2-chunks", "3-chunks", "per-char"])
def test_secret_split_across_chunks_blocks_the_stream(chunks: int) -> None:
    plugin = GuardrailsPlugin(**BLOCK)
    result = stream(text_stream(["Sure, your key is "] + split(KEY + " enjoy", chunks)), plugin)
    assert result.status == 200  # headers were sent; the stream ends with the wire's error frame
    (err,) = errors(result)
    assert err["code"] == "guardrail_violation" and "api_keys" in err["message"]
    assert KEY[:12].encode() not in result.body and b"[DONE]" not in result.body
    assert result.settlements[0].outcome == "aborted"
    assert plugin.stats() == {"downgoing": {"api_keys": {"block": 1}}}


def test_block_after_clean_text_keeps_what_was_already_sent() -> None:
    result = stream(text_stream([*split(FILLER, 30), "then the key " + KEY[:10], KEY[10:]]), GuardrailsPlugin(**BLOCK))
    sent = content(result)
    # Clean text older than the window was released; the held tail and the secret never were.
    assert len(sent) >= len(FILLER) - 256 - 64 - 20 and FILLER.startswith(sent)
    assert errors(result)[0]["code"] == "guardrail_violation"


@pytest.mark.parametrize("config", [REDACT, BLOCK, {}], ids=["redact", "block", "warn"])
@pytest.mark.parametrize("chunks", [1, 5, 0], ids=["1-chunk", "5-chunks", "per-char"])
def test_clean_stream_is_byte_for_byte_unchanged(config: Dict[str, Any], chunks: int) -> None:
    script = text_stream(split(FILLER + "Nothing secret, version 1.2.3, see docs.", chunks))
    plain = stream(list(script))
    guarded = stream(list(script), GuardrailsPlugin(**config))
    assert guarded.status == plain.status == 200
    assert guarded.body == plain.body


def test_pem_block_longer_than_the_window_is_held_and_redacted_whole() -> None:
    text = "key:\n" + PEM + "\ndone"
    result = stream(text_stream(split(text, 0)), GuardrailsPlugin(**REDACT))
    assert content(result) == "key:\n[REDACTED:private_key]\ndone"


def test_pem_block_longer_than_the_hold_cap_is_still_redacted_to_its_end() -> None:
    plugin = GuardrailsPlugin(max_hold_chars=512, **REDACT)
    text = "key:\n" + PEM + "\ndone"
    result = stream(text_stream(split(text, 0)), plugin)
    out = content(result)
    assert out.startswith("key:\n[REDACTED:private_key]") and out.endswith("\ndone")
    assert "Xq3v9n" not in out and "END RSA" not in out
    assert plugin.stats() == {"downgoing": {"private_keys": {"redact": 1}}}


def test_text_held_at_finish_is_flushed_before_finish() -> None:
    # No TextEnd: the Finish part must still release the held window.
    script = [ResponseStart("chatcmpl-fixed", "m", 1700000000), TextDelta(0, "mail jane@example.com"),
              TextDelta(0, " thanks"), Finish(FinishReason.STOP)]
    result = stream(script, GuardrailsPlugin(**REDACT))
    assert content(result) == "mail [REDACTED:email] thanks"
    finishes = [c["choices"][0]["finish_reason"] for c in result.sse if isinstance(c, dict) and c.get("choices")]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])


def tool_stream(arg_chunks: Sequence[str], text_first: str = "") -> List[StreamPart]:
    parts: List[StreamPart] = [ResponseStart("chatcmpl-fixed", "m", 1700000000)]
    if text_first:
        parts += [TextStart(0), TextDelta(0, text_first)]  # no TextEnd: the tool call start must flush it
    parts += [ToolCallStart(1, "call_1", "deploy"), *[ToolCallDelta(1, c) for c in arg_chunks], ToolCallEnd(1),
              Finish(FinishReason.TOOL_CALLS)]
    return parts


def tool_args(result: Result) -> str:
    out = ""
    for c in result.sse:
        if isinstance(c, dict) and c.get("choices"):
            for call in c["choices"][0]["delta"].get("tool_calls") or ():
                out += call["function"].get("arguments") or ""
    return out


@pytest.mark.parametrize("chunks", [2, 3, 0], ids=["2-chunks", "3-chunks", "per-char"])
def test_tool_call_arguments_split_across_chunks_are_redacted(chunks: int) -> None:
    args = '{"token": "' + KEY + '", "password": "hunter2 xyz"}'
    plugin = GuardrailsPlugin(downgoing={"api_keys": "redact", "credentials": "redact"})
    result = stream(tool_stream(split(args, chunks), text_first="Deploying now."), plugin)
    assert tool_args(result) == '{"token": "[REDACTED:api_key]", "password": "[REDACTED:credential]"}'
    assert content(result) == "Deploying now."
    # Held text went out before the tool call started.
    kinds = ["content" if c["choices"][0]["delta"].get("content") else "tool" for c in result.sse
             if isinstance(c, dict) and c.get("choices") and (c["choices"][0]["delta"].get("content")
                                                             or c["choices"][0]["delta"].get("tool_calls"))]
    assert kinds[0] == "content" and set(kinds[1:]) == {"tool"}


def test_tool_call_arguments_can_block() -> None:
    result = stream(tool_stream(split('{"cmd": "rm -rf / now"}', 0)),
                    GuardrailsPlugin(downgoing={"suspicious_commands": "block"}))
    assert errors(result)[0]["code"] == "guardrail_violation"
    assert "rm -rf" not in tool_args(result)


# --- warn: nothing held, counted once, never logged in clear ---------------------


def test_warn_passes_unchanged_counts_once_and_never_logs_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    script = text_stream(["key " + KEY[:9], KEY[9:20], KEY[20:] + " and mail jane@exam", "ple.com bye"])
    plain = stream(list(script))
    plugin = GuardrailsPlugin()
    with caplog.at_level(logging.INFO, logger="routeplane.guardrails"):
        result = stream(list(script), plugin)
    assert result.body == plain.body
    assert plugin.stats() == {"downgoing": {"api_keys": {"warn": 1}, "pii_emails": {"warn": 1}}}
    lines = [r.getMessage() for r in caplog.records if r.name == "routeplane.guardrails"]
    assert len(lines) == 2 and any("api_keys" in line and "chars 4-" in line for line in lines)
    assert all(KEY[3:15] not in line and "jane" not in line for line in lines)
    assert result.settlements[0].metadata["guardrails"] == {"downgoing.api_keys.warn": 1, "downgoing.pii_emails.warn": 1}


# --- non-streaming responses -------------------------------------------------------


def test_non_streaming_response_is_redacted() -> None:
    gen = Generation("gen-1", "m", (TextPart(f"use {KEY} or mail ops@example.com"),
                                    ToolCallPart("call_1", "f", '{"k": "' + KEY + '"}')))
    result = run_request({"model": "default", "messages": [{"role": "user", "content": "hi"}]},
                         plugins=[GuardrailsPlugin(**REDACT)], script=[gen])
    msg = result.json["choices"][0]["message"]
    assert msg["content"] == "use [REDACTED:api_key] or mail [REDACTED:email]"
    assert msg["tool_calls"][0]["function"]["arguments"] == '{"k": "[REDACTED:api_key]"}'


def test_non_streaming_response_is_blocked_with_400() -> None:
    gen = Generation("gen-1", "m", (TextPart(PEM),))
    plugin = GuardrailsPlugin(**BLOCK, block_message={"include_details": False})
    result = run_request({"model": "default", "messages": [{"role": "user", "content": "hi"}]},
                         plugins=[plugin], script=[gen])
    assert result.status == 400
    assert result.json["error"] == {"message": "The response was blocked by a guardrail.",
                                    "type": "invalid_request_error", "param": None, "code": "guardrail_violation"}
    assert b"MIIE" not in result.body
    assert result.settlements[0].status == 400


# --- counters ----------------------------------------------------------------------


def test_counters_are_exact_under_concurrent_requests() -> None:
    plugin = GuardrailsPlugin(**REDACT)
    gw = Gateway(plugins=[plugin])
    errors_seen: List[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                assert gw.chat(f"mail a@example.com key {KEY}").status == 200
        except BaseException as exc:  # surfaced below
            errors_seen.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors_seen
    # Each request: the echo carries both secrets down (upgoing is warn-only by default).
    stats = plugin.stats()
    assert stats["downgoing"] == {"api_keys": {"redact": 40}, "pii_emails": {"redact": 40}}
    assert stats["upgoing"] == {"api_keys": {"warn": 40}, "pii_emails": {"warn": 40}}


# --- property: however a response is chunked, the stream says what the whole text says ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SMALL_PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04f\n-----END EC PRIVATE KEY-----"
PIECES = ["hello ", "world. ", "version 1.2.3 ", "a@b", ".com ", KEY, " ", "\n", SMALL_PEM, "mail ops@example.org ",
          "password=hunter2!x ", "-----BEGIN", " 10.1.2.3 ", "sk-", "short ", FILLER[:300]]


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=10),
       cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=50))
def test_any_chunking_streams_exactly_the_non_streaming_redaction(parts: List[str], cuts: List[int]) -> None:
    text = "".join(parts)
    chunks, pos, i = [], 0, 0
    while pos < len(text):
        size = cuts[i % len(cuts)]
        chunks.append(text[pos:pos + size])
        pos, i = pos + size, i + 1
    plugin = GuardrailsPlugin(downgoing={"api_keys": "redact", "private_keys": "redact", "pii_emails": "redact",
                                         "credentials": "redact", "ip_addresses": "redact"})
    gw = Gateway(plugins=[plugin], script=[text_stream(chunks), Generation("g", "m", (TextPart(text),))])
    body = {"model": "default", "messages": [{"role": "user", "content": "go"}]}
    streamed = content(gw.request({**body, "stream": True}))
    whole = gw.request(body).json["choices"][0]["message"]["content"]
    assert streamed == whole
