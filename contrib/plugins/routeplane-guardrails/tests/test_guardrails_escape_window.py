"""The stream window of tool-call arguments counts characters as the detectors read them: a `\\uXXXX` escape is
one character, not six, so a secret spelled with escapes is held, and redacted, exactly like its plain spelling."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from routeplane_guardrails import GuardrailsPlugin
from routeplane_guardrails.rules import Reporter, Stats
from routeplane_guardrails.stream import ChannelScanner
from test_guardrails_json_args import CHAT, KEY, REDACT_ALL, cut_points, non_streamed_args, streamed_args, tool_stream

from routeplane.testing import Gateway, run_request

EMAIL = "jonathan.quincy.appleseed.the3rd.x@example.com"  # 46 characters, 34 before the `@`
PAD = "lorem ipsum dolor sit amet " * 12  # longer than every window: releases happen mid-arguments
WINDOWS = (16, 64, 128, 256)

Unit = Tuple[str, str]  # (a character as JSON text, the same character as the model spelled it)


def units(args: Dict[str, Any], escaped: str) -> List[Unit]:
    """`json.dumps(args)` one JSON character at a time; every character of the string `escaped` in it is also
    spelled as a `\\uXXXX` escape (the plain text must hold `escaped` once, with no escapes in it)."""
    text = json.dumps(args)
    at = text.index(escaped)
    out: List[Unit] = [(c, c) for c in text]
    for i in range(at, at + len(escaped)):
        out[i] = (text[i], f"\\u{ord(text[i]):04x}")
    return out


def chunk(us: Sequence[Unit], bounds: Sequence[int], spelled: bool) -> List[str]:
    """The units cut at the given unit positions: plain or spelled, the same characters in the same chunks."""
    cuts = [0, *sorted(set(b for b in bounds if 0 < b < len(us))), len(us)]
    return ["".join(u[spelled] for u in us[a:b]) for a, b in zip(cuts, cuts[1:])]


def every(n: int, size: int) -> List[int]:
    return list(range(n, size, n))


def args_with(secret: str) -> Dict[str, Any]:
    return {"pad": PAD, "note": f"use {secret} now", "n": 7}


def expected(secret: str) -> Dict[str, Any]:
    placeholder = "[REDACTED:api_key]" if secret == KEY else "[REDACTED:email]"
    return {"pad": PAD, "note": f"use {placeholder} now", "n": 7}


_GATEWAYS: Dict[int, Gateway] = {}


def stream(chunks: Sequence[str], window: int) -> str:
    """The arguments a client gets when the model streams `chunks` (every detector on redact)."""
    gw = _GATEWAYS.get(window)
    if gw is None:
        gw = _GATEWAYS[window] = Gateway(plugins=[GuardrailsPlugin(**REDACT_ALL, stream_window=window)])
    gw.executor.push(tool_stream(chunks))
    return streamed_args(gw.request({**CHAT, "stream": True}))


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("secret", [KEY, EMAIL], ids=["key", "email"])
def test_a_u_escaped_secret_streams_exactly_like_its_plain_spelling(secret: str, window: int) -> None:
    # The same characters in the same chunks, the secret plain or every character of it `\uXXXX`-escaped, at
    # several offsets in a scan batch: the client decodes the same arguments.
    for shift in range(0, 64, 9):
        args = {"s": "-" * shift, **args_with(secret)}
        us = units(args, secret)
        for size in (1, 3, 7, 64):
            bounds = every(size, len(us))
            plain = stream(chunk(us, bounds, spelled=False), window)
            spelled = stream(chunk(us, bounds, spelled=True), window)
            assert json.loads(spelled) == json.loads(plain), (window, shift, size)
            if window >= 64:  # longer than the match: nothing of it leaves before it is one
                assert json.loads(spelled) == {"s": "-" * shift, **expected(secret)}, (window, shift, size, spelled)


@pytest.mark.parametrize("window", [64, 128, 256])
@pytest.mark.parametrize("secret", [KEY, EMAIL], ids=["key", "email"])
def test_a_u_escaped_secret_is_redacted_whole_wherever_the_stream_is_cut(secret: str, window: int) -> None:
    # Cut in the text as sent, inside escapes too (`\u00` | `6a`), with the secret at every offset in a scan
    # batch and chunks of several sizes, so the scans and cuts fall everywhere.
    texts = {shift: "".join(u[1] for u in units({"s": "-" * shift, **args_with(secret)}, secret))
             for shift in range(0, 64, 3)}
    chunkings = [(shift, [text[i:i + size] for i in range(0, len(text), size)])
                 for shift, text in texts.items() for size in (1, 4, 7)]
    gw = Gateway(plugins=[GuardrailsPlugin(**REDACT_ALL, stream_window=window)],
                 script=[tool_stream(chunks) for _, chunks in chunkings])
    assert json.loads(non_streamed_args(texts[0], GuardrailsPlugin(**REDACT_ALL))) == {"s": "", **expected(secret)}
    for shift, chunks in chunkings:
        out = streamed_args(gw.request({**CHAT, "stream": True}))
        assert json.loads(out) == {"s": "-" * shift, **expected(secret)}, (window, shift, len(chunks[0]), out)


def test_the_reviewers_cases() -> None:
    # A fully u-escaped key leaked `sk-proj-Ab3[REDACTED…]` at window 64 and `s[REDACTED…]` at 128; at the
    # default 256 a u-escaped 46-character email leaked `j[REDACTED:email]`.
    for secret, window in [(KEY, 64), (KEY, 128), (EMAIL, 256)]:
        text = "".join(u[1] for u in units({"v": secret}, secret))
        for size in (1, 6, 13):
            out = stream([text[i:i + size] for i in range(0, len(text), size)], window)
            placeholder = "[REDACTED:api_key]" if secret == KEY else "[REDACTED:email]"
            assert json.loads(out) == {"v": placeholder}, (window, size, out)


def test_warn_finds_a_u_escaped_key_longer_than_the_window_as_sent() -> None:
    # With only warn rules nothing is held, but the carry window must still hold the whole escaped key.
    text = "".join(u[1] for u in units({"pad": PAD, "v": KEY}, KEY))
    plugin = GuardrailsPlugin(stream_window=16)
    out = streamed_args(run_request({**CHAT, "stream": True}, plugins=[plugin], script=[tool_stream(list(text))]))
    assert out == text
    assert plugin.stats() == {"downgoing": {"api_keys": {"warn": 1}}}


def test_the_hold_cap_still_bounds_escaped_text() -> None:
    # A window of 256 read characters is 1536 characters as sent when every one is escaped; max_hold_chars
    # counts the text as sent and still bounds what is held; what leaves is valid JSON, the key redacted whole.
    args = {"pad": PAD * 3, "v": f"x {KEY} y"}
    text = "".join(u[1] for u in units(args, PAD * 3))
    assert json.loads(text) == args
    for size in (1, 7, 40):
        chunks = [text[i:i + size] for i in range(0, len(text), size)]
        plugin = GuardrailsPlugin(**REDACT_ALL, stream_window=256, max_hold_chars=256)
        scanner = ChannelScanner(plugin.rules.downgoing, plugin.rules, Reporter(Stats(), "r"), "args", json=True)
        out = []
        for c in chunks:
            sent = scanner.feed(c)
            out += [c] if sent is None else sent
            assert scanner.total - scanner.emitted <= 256 + 64 + size  # the cap, plus at most a scan batch and a chunk
        out += scanner.flush()
        assert json.loads("".join(out)) == {"pad": PAD * 3, "v": "x [REDACTED:api_key] y"}, size


# --- property: any escaped spelling, cut anywhere, streams like the plain one ------------------------------

SECRETS = [KEY, EMAIL, "password=hunter22x", "AKIAIOSFODNN7EXAMPLE"]


@settings(max_examples=30, deadline=None)
@given(secret=st.sampled_from(SECRETS), window=st.sampled_from(WINDOWS),
       escape=st.lists(st.booleans(), min_size=8, max_size=8),
       cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_escaping_never_changes_what_a_stream_lets_out(secret: str, window: int, escape: List[bool],
                                                       cuts: List[int]) -> None:
    args = {"pad": PAD[:window + 40], "v": f"see {secret}.", "w": PAD[:30]}
    us = units(args, secret)
    at = json.dumps(args).index(secret)
    # Escape some of the secret's characters (a repeating pattern), leave the rest plain.
    us = [u if not (at <= i < at + len(secret)) or escape[(i - at) % 8] else (u[0], u[0]) for i, u in enumerate(us)]
    bounds = cut_points(len(us), cuts)
    plain = stream(chunk(us, bounds, spelled=False), window)
    spelled = stream(chunk(us, bounds, spelled=True), window)
    assert json.loads(spelled) == json.loads(plain)
