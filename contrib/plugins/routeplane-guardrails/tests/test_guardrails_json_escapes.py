"""Tool-call arguments are read decoded: a secret spelled with JSON escapes (`\\uXXXX`, surrogate pairs, `\\/`)
is found, and its redaction leaves valid JSON whose decoded value holds the placeholder, streamed or not."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from routeplane_guardrails import GuardrailsPlugin, jsontext
from test_guardrails_json_args import (
    CHAT,
    KEY,
    PAD,
    REDACT_ALL,
    non_streamed_args,
    split_every,
    streamed_args,
    tool_stream,
)

from routeplane.language_model.types import FinishReason, Generation, ToolCallPart
from routeplane.testing import Gateway, run_request


def u(text: str) -> str:
    """ASCII `text` with every character written as a `\\uXXXX` escape."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


ESC_KEY = "sk-\\u0070roj-" + KEY[len("sk-proj-"):]  # `p` escaped
# (raw arguments text with escapes, the decoded arguments the client must get back)
CASES = {
    "u-escaped letter in a key": ('{"key": "' + ESC_KEY + '", "n": 12345}',
                                  {"key": "[REDACTED:api_key]", "n": 12345}),
    "whole key u-escaped": ('{"env": "OPENAI_API_KEY=' + u(KEY) + '"}', {"env": "OPENAI_API_KEY=[REDACTED:api_key]"}),
    "escaped slashes in a credential URL": (
        '{"url": "https:\\/\\/admin:s3cr3tPw@db.example.com\\/x", "ok": true}',
        {"url": "https://admin:[REDACTED:credential]@db.example.com/x", "ok": True}),
    "u-escaped at-sign in an email": ('{"to": ["jane.doe\\u0040example.com", 1.5]}', {"to": ["[REDACTED:email]", 1.5]}),
    "surrogate pair before a key": ('{"k": "\\ud83d\\ude00' + KEY + ' ok"}', {"k": "\U0001F600[REDACTED:api_key] ok"}),
    "u-escaped quotes around a password": ('{"cmd": "SET PASSWORD=\\u0022hunter22x\\u0022; go"}',
                                           {"cmd": 'SET PASSWORD="[REDACTED:credential]"; go'}),
    "escaped slashes in an AWS secret key": (
        '{"cfg": "aws_secret_access_key = wJalrXUtnFEMI\\/K7MDENG\\/bPxRfiCYEXAMPLEKEY"}',
        {"cfg": "aws_secret_access_key = [REDACTED:api_key]"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_secret_spelled_with_escapes_is_redacted_in_non_streamed_arguments(case: str) -> None:
    raw, expected = CASES[case]
    json.loads(raw)  # the input is valid JSON
    plugin = GuardrailsPlugin(**REDACT_ALL)
    out = non_streamed_args(raw, plugin)
    assert json.loads(out) == expected
    assert sum(n for d in plugin.stats()["downgoing"].values() for n in d.values()) == 1


@pytest.mark.parametrize("case", list(CASES))
def test_a_secret_spelled_with_escapes_is_redacted_wherever_the_stream_is_cut(case: str) -> None:
    raw, expected = CASES[case]
    pad = json.dumps({"pad": PAD})[:-1] + ", "  # longer than the window: releases happen mid-arguments
    text = pad + raw[1:]
    chunkings: List[List[str]] = [list(text), split_every(text, 5)]
    chunkings += [[text[:cut], text[cut:]] for cut in range(len(pad), len(text))]  # every split, escapes included
    gw = Gateway(plugins=[GuardrailsPlugin(**REDACT_ALL)], script=[tool_stream(chunks) for chunks in chunkings])
    whole = non_streamed_args(text, GuardrailsPlugin(**REDACT_ALL))
    for chunks in chunkings:
        out = streamed_args(gw.request({**CHAT, "stream": True}))
        assert json.loads(out) == {"pad": PAD, **expected}, (len(chunks[0]), out)
        assert out == whole


def test_an_escape_split_across_fragments_is_read_whole() -> None:
    # `\u00` | `70`: the first fragment ends inside the escape; the key must be held and redacted whole.
    raw = '{"key": "' + ESC_KEY + '"}'
    cut = raw.index("\\u0070") + 4
    for window in (16, 256):
        plugin = GuardrailsPlugin(downgoing={"api_keys": "redact"}, stream_window=window)
        out = streamed_args(run_request({**CHAT, "stream": True}, plugins=[plugin],
                                        script=[tool_stream([raw[:cut], raw[cut:]])]))
        assert json.loads(out) == {"key": "[REDACTED:api_key]"}, window
        assert plugin.stats() == {"downgoing": {"api_keys": {"redact": 1}}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_block_and_warn_see_escaped_secrets(stream: bool) -> None:
    raw = '{"url": "postgres:\\/\\/app:Pw0rd9x@db.internal\\/app", "key": "' + ESC_KEY + '"}'
    block = GuardrailsPlugin(downgoing={"api_keys": "block"})
    warn = GuardrailsPlugin()  # default: every detector warns
    if stream:
        blocked = run_request({**CHAT, "stream": True}, plugins=[block], script=[tool_stream(split_every(raw, 3))])
        assert [c["error"]["code"] for c in blocked.sse if isinstance(c, dict) and "error" in c] == \
            ["guardrail_violation"]
        warned = run_request({**CHAT, "stream": True}, plugins=[warn], script=[tool_stream(split_every(raw, 3))])
        assert streamed_args(warned) == raw  # warn never changes a byte
    else:
        gen = Generation("gen-1", "m", (ToolCallPart("call_1", "shell", raw),), FinishReason.TOOL_CALLS)
        blocked = run_request(CHAT, plugins=[block], script=[gen])
        assert blocked.status == 400 and blocked.json["error"]["code"] == "guardrail_violation"
        assert non_streamed_args(raw, warn) == raw
    assert block.stats()["downgoing"]["api_keys"] == {"block": 1}
    assert warn.stats() == {"downgoing": {"api_keys": {"warn": 1}, "credentials": {"warn": 1}}}


def test_upgoing_tool_call_arguments_are_read_decoded() -> None:
    raw = '{"url": "https:\\/\\/bob:Hunter2x@git.example.com\\/r.git", "key": "' + ESC_KEY + '"}'
    gw = Gateway(plugins=[GuardrailsPlugin(upgoing={"api_keys": "redact", "credentials": "redact"})])
    messages = [{"role": "user", "content": "clone"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "git", "arguments": raw}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "done"}]
    assert gw.request({"model": "default", "messages": messages}).status == 200
    (call,) = [p for p in gw.executor.calls[-1].prompt.messages[1].parts if isinstance(p, ToolCallPart)]
    assert json.loads(call.arguments) == {"url": "https://bob:[REDACTED:credential]@git.example.com/r.git",
                                          "key": "[REDACTED:api_key]"}


def test_custom_pattern_on_an_astral_character() -> None:
    options = {"custom_patterns": [{"name": "vault", "regex": "\U0001F511(?P<secret>[A-Z]{6})"}],
               "custom_downgoing": {"vault": "redact"}}
    raw = '{"v": "key \\ud83d\\udd11ABCDEF."}'
    assert json.loads(non_streamed_args(raw, GuardrailsPlugin(**options))) == {"v": "key \U0001F511[REDACTED:vault]."}
    cut = raw.index("\\udd11")  # the pair split between its halves
    out = streamed_args(run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**options, stream_window=16)],
                                    script=[tool_stream([raw[:cut], raw[cut:]])]))
    assert json.loads(out) == {"v": "key \U0001F511[REDACTED:vault]."}


# --- the decoded view and its map back to the text ------------------------------------------------


def test_decoded_view_maps_back_to_whole_escapes() -> None:
    raw = 'a\\u0070b\\/c\\ud83d\\ude00d\\\\u0070'
    view = jsontext.decoded_view(raw)
    assert view.text == "apb/c\U0001F600d\\u0070" and view.end == len(raw)
    assert [view.raw(v) for v in range(len(view.text) + 1)] == \
        [0, 1, 7, 8, 10, 11, 23, 24, 26, 27, 28, 29, 30, 31]
    assert view.at(3) == 1 and view.at(7) == 2 and view.at(12) == 5 and view.at(23) == 6


@pytest.mark.parametrize("tail,end", [("\\", 3), ("\\u", 3), ("\\u00", 3), ("\\ud83d", 3), ("\\ud83d\\u", 3),
                                      ("\\ud83d\\ude", 3), ("\\\\", 5), ("\\u00e9", 9), ("\\ud83dx", 10)])
def test_a_text_ending_inside_an_escape_is_read_up_to_it(tail: str, end: int) -> None:
    assert jsontext.decoded_view("abc" + tail).end == end


def test_a_text_starting_inside_an_escape_skips_its_rest() -> None:
    # The first piece ended after `\u00`: the rest of that escape is not read as letters.
    view = jsontext.decoded_view("70sk", jsontext.LexState(True, 0, 0, 6), offset=4)
    assert view.text == "sk" and view.raw(0) == 2


# --- property: escaping changes nothing the client decodes ------------------------------------------

VALUES = ["plain words", KEY, "password=hunter22x", "https://u:pw9x@h.example.com/p", "jane@example.com", "é ü",
          "line\nbreak", "say \"hi\"", "back\\slash", "\U0001F511 emoji", "10.1.2.3", "pk/ps"]


def spell(text: str, letters: str) -> str:
    """The same JSON text with every `/` as `\\/` and every one of `letters` as a `\\uXXXX` escape."""
    out = text.replace("/", "\\/")
    for c in letters:
        out = out.replace(c, f"\\u{ord(c):04x}")
    return out


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=5), ascii_only=st.booleans(),
       letters=st.sampled_from(["", "p", "k@", "sjw"]),
       cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20))
def test_escaped_spelling_redacts_like_the_plain_one(values: List[str], ascii_only: bool, letters: str,
                                                      cuts: List[int]) -> None:
    args: Dict[str, Any] = {f"k{i}": v for i, v in enumerate(values)}
    plain = json.dumps(args)
    text = spell(json.dumps(args, ensure_ascii=ascii_only), letters)
    assert json.loads(text) == args
    chunks: List[str] = []
    pos, i = 0, 0
    while pos < len(text):
        chunks.append(text[pos:pos + cuts[i % len(cuts)]])
        pos, i = pos + cuts[i % len(cuts)], i + 1
    expected = json.loads(non_streamed_args(plain, GuardrailsPlugin(**REDACT_ALL)))
    assert json.loads(non_streamed_args(text, GuardrailsPlugin(**REDACT_ALL))) == expected
    streamed = streamed_args(run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**REDACT_ALL)],
                                         script=[tool_stream(chunks)]))
    assert json.loads(streamed) == expected
    decoded = json.dumps(expected)
    assert KEY not in decoded and "hunter22" not in decoded and "jane@" not in decoded and "pw9x" not in decoded


# --- past the hold cap ----------------------------------------------------------------------------


def test_a_forced_release_never_splits_an_escape_of_a_held_pem_block() -> None:
    # A PEM block longer than max_hold_chars leaves in pieces; no cut may fall inside `\u0041`
    # (half an escape on each side of a placeholder would let its character through).
    body = "".join(f"MIIEpAIBAAKCAQEA{i:04d}Xq3v9nH2kJ4yV8mF1sZ0pQ6rT3wB5cD7eG9hI2jK4lM\n" for i in range(12))
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----"
    raw = json.dumps({"file": "id_rsa", "content": pem}).replace("A", "\\u0041")
    options = {"downgoing": {"private_keys": "redact"}, "max_hold_chars": 256}
    for window, size in [(16, 1), (16, 3), (16, 7), (64, 1), (64, 5), (256, 11)]:
        out = streamed_args(run_request({**CHAT, "stream": True},
                                        plugins=[GuardrailsPlugin(**options, stream_window=window)],
                                        script=[tool_stream(split_every(raw, size))]))
        decoded = json.loads(out)  # still JSON, even when the match is found after its start has left
        assert decoded["file"] == "id_rsa"
        if window >= 64:  # a window shorter than the BEGIN line lets its start out before it is a match
            assert decoded["content"].replace("[REDACTED:private_key]", "").strip() == "", (window, size)


def test_a_forced_release_leaves_a_whole_match_with_one_placeholder() -> None:
    # The cap forces a release while a long number is held; the cut would fall inside the email after it,
    # which is whole: it leaves whole, redacted once (not `[REDACTED:email][REDACTED:email]`).
    args = {"pad": "x" * 200, "password": int("7" * 232), "after": "jane@example.com"}
    text = json.dumps(args)
    options = {"downgoing": {"credentials": "redact", "pii_emails": "redact"}, "max_hold_chars": 256,
               "stream_window": 16}
    out = streamed_args(run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**options)],
                                    script=[tool_stream(split_every(text, 35))]))
    assert json.loads(out) == {"pad": "x" * 200, "password": "[REDACTED:credential]", "after": "[REDACTED:email]"}
