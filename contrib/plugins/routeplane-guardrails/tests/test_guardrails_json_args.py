"""Tool-call arguments are JSON: redacting inside them keeps them JSON, streamed or not, on every wire.

Detectors run on the JSON text as sent (escapes included). A match that ends on
the backslash of an escaped quote, starts on the letter of an `\\n`, or runs into
the object's structure must not leave `\\[REDACTED…]`, a dangling `\\` or a bare
placeholder behind.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from routeplane_guardrails import GuardrailsPlugin
from routeplane_guardrails.jsontext import LexState, advance, cut_token, json_spans, lex

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ResponseStart,
    StreamPart,
    TextPart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
)
from routeplane.testing import Gateway, Result, run_request

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
REDACT_ALL = {"downgoing": {"api_keys": "redact", "private_keys": "redact", "credentials": "redact",
                            "pii_emails": "redact", "ip_addresses": "redact", "pii_phone_numbers": "redact"}}
CHAT = {"model": "default", "messages": [{"role": "user", "content": "go"}]}

# (arguments as the model sends them, what the client must be able to json.loads from them)
CASES = {
    # The hunt's case: the unquoted value swallowed the backslash of `\"`.
    "escaped quote after the value": (
        {"cmd": 'mysql -e "SET PASSWORD=hunter22"'},
        {"cmd": 'mysql -e "SET PASSWORD=[REDACTED:credential]"'}),
    # The email look-behind sees the `n` of `\n`: the match started inside the escape.
    "value right after an escape": (
        {"note": "Contact:\njohn.doe@example.com\tor 10.20.30.40"},
        {"note": "Contact:\n[REDACTED:email]\tor [REDACTED:ip_address]"}),
    # An unquoted value runs into the closing brace; a number becomes a quoted placeholder.
    "number value": ({"user": "bob", "password": 83712944}, {"user": "bob", "password": "[REDACTED:credential]"}),
    # JSON inside a JSON string (code written by a tool): the key's quotes are escaped.
    "escaped JSON inside a string": (
        {"path": "cfg.json", "content": '{"password": "correct horse", "key": "' + KEY + '"}'},
        {"path": "cfg.json", "content": '{"password": "[REDACTED:credential]", "key": "[REDACTED:api_key]"}'}),
    "non-ASCII around a key": ({"k": f"é {KEY} ü"}, {"k": "é [REDACTED:api_key] ü"}),
}


def cut_points(total: int, sizes: Sequence[int]) -> List[int]:
    """Where chunks of the repeating `sizes` end, up to `total` (the last one may run past it)."""
    ends, pos, i = [], 0, 0
    while pos < total:
        pos, i = pos + sizes[i % len(sizes)], i + 1
        ends.append(pos)
    return ends


def cut(text: str, sizes: Sequence[int]) -> List[str]:
    """`text` in chunks of the repeating `sizes`."""
    starts = [0] + cut_points(len(text), sizes)
    return [text[a:b] for a, b in zip(starts, starts[1:])]


def tool_stream(chunks: Sequence[str], custom: bool = False) -> List[StreamPart]:
    return [ResponseStart("chatcmpl-fixed", "m", 1700000000), ToolCallStart(0, "call_1", "shell", custom=custom),
            *[ToolCallDelta(0, c) for c in chunks], ToolCallEnd(0), Finish(FinishReason.TOOL_CALLS)]


def streamed_args(result: Result, field: str = "function", key: str = "arguments") -> str:
    out = ""
    for c in result.sse:
        if isinstance(c, dict) and c.get("choices"):
            for call in c["choices"][0]["delta"].get("tool_calls") or ():
                out += (call.get(field) or {}).get(key) or ""
    return out


def non_streamed_args(arguments: str, plugin: GuardrailsPlugin) -> str:
    gen = Generation("gen-1", "m", (ToolCallPart("call_1", "shell", arguments),), FinishReason.TOOL_CALLS)
    result = run_request(CHAT, plugins=[plugin], script=[gen])
    assert result.status == 200, result.body
    return str(result.json["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])


@pytest.mark.parametrize("ascii_only", [True, False], ids=["ascii", "utf8"])
@pytest.mark.parametrize("case", list(CASES))
def test_non_streamed_arguments_stay_json(case: str, ascii_only: bool) -> None:
    args, expected = CASES[case]
    out = non_streamed_args(json.dumps(args, ensure_ascii=ascii_only), GuardrailsPlugin(**REDACT_ALL))
    assert json.loads(out) == expected


# Longer than the hold window, with escapes: releases happen mid-arguments, the buffer is trimmed
# (and the JSON lexer carried) inside strings and escapes.
PAD = 'line one\n\t"quoted" back\\slash \u00e9 ' * 8


@pytest.mark.parametrize("case", list(CASES))
def test_streamed_arguments_stay_json_wherever_the_chunks_are_cut(case: str) -> None:
    args, expected = CASES[case]
    text = json.dumps({"pad": PAD, **args})
    secret_at = len(json.dumps({"pad": PAD})) - 1
    chunkings = [list(text), *[[text[i:i + n] for i in range(0, len(text), n)] for n in (3, 7, 64)]]
    chunkings += [[text[:cut], text[cut:]] for cut in range(secret_at, len(text))]
    gw = Gateway(plugins=[GuardrailsPlugin(**REDACT_ALL)], script=[tool_stream(chunks) for chunks in chunkings])
    for chunks in chunkings:
        out = streamed_args(gw.request({**CHAT, "stream": True}))
        assert json.loads(out) == {"pad": PAD, **expected}, (len(chunks[0]), out)


def test_anthropic_client_gets_the_input_object() -> None:
    args, expected = CASES["escaped quote after the value"]
    gen = Generation("gen-1", "m", (ToolCallPart("call_1", "shell", json.dumps(args)),), FinishReason.TOOL_CALLS)
    body = {"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "go"}]}
    result = Gateway(plugins=[GuardrailsPlugin(**REDACT_ALL)], script=[gen]).request(body, path="/v1/messages")
    (block,) = [b for b in result.json["content"] if b["type"] == "tool_use"]
    assert block["input"] == expected  # not {"_raw": "..."}


def test_anthropic_stream_input_json_deltas_stay_json() -> None:
    args, expected = CASES["value right after an escape"]
    text = json.dumps(args)
    body = {"model": "default", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    result = Gateway(plugins=[GuardrailsPlugin(**REDACT_ALL)],
                     script=[tool_stream(list(text))]).request(body, path="/v1/messages")
    partial = "".join(e["delta"]["partial_json"] for e in result.sse
                      if isinstance(e, dict) and e.get("type") == "content_block_delta"
                      and e["delta"].get("type") == "input_json_delta")
    assert json.loads(partial) == expected


def test_upgoing_tool_call_arguments_stay_json() -> None:
    args, expected = CASES["escaped quote after the value"]
    plugin = GuardrailsPlugin(upgoing={"credentials": "redact"})
    gw = Gateway(plugins=[plugin])
    messages = [{"role": "user", "content": "run it"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": json.dumps(args)}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "done"}]
    assert gw.request({"model": "default", "messages": messages}).status == 200
    (call,) = [p for p in gw.executor.calls[-1].prompt.messages[1].parts if isinstance(p, ToolCallPart)]
    assert json.loads(call.arguments) == expected


# After an escape (`\n`, `\t`) the JSON text has a letter where the decoded text has a line break:
# every detector must still see a token start there, as it does in message text.
AFTER_ESCAPE = [
    ("api_keys", "api_key", f"OPENAI_API_KEY:\n{KEY}\n"),
    ("api_keys", "api_key", "aws\tAKIAIOSFODNN7EXAMPLE"),
    ("ip_addresses", "ip_address", "hosts:\n10.1.2.3\n"),
    ("pii_phone_numbers", "phone_number", "call\n+44 20 7946 0958"),
    ("suspicious_commands", "command", "cd /tmp\nrm -rf /\nls"),
    ("credentials", "credential", "password=hunter2!x\nnext line"),
]


@pytest.mark.parametrize("detector,kind,value", AFTER_ESCAPE, ids=[c[0] + "-" + c[2][:8] for c in AFTER_ESCAPE])
def test_a_secret_after_an_escape_is_found_in_arguments(detector: str, kind: str, value: str) -> None:
    plugin = GuardrailsPlugin(downgoing={detector: "redact"})
    text = json.dumps({"content": value})
    out = json.loads(non_streamed_args(text, plugin))["content"]
    assert f"[REDACTED:{kind}]" in out and out.split(f"[REDACTED:{kind}]")[1] in ("\n", "", "\nls", "\nnext line")
    streamed = streamed_args(run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(downgoing={detector: "redact"})],
                                         script=[tool_stream(list(text))]))
    assert json.loads(streamed)["content"] == out


def test_a_command_on_its_own_line_blocks_the_tool_call() -> None:
    text = json.dumps({"cmd": "cd /\nrm -rf /\n"})
    result = run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(downgoing={"suspicious_commands": "block"})],
                         script=[tool_stream(split_every(text, 3))])
    assert [c["error"]["code"] for c in result.sse if isinstance(c, dict) and "error" in c] == ["guardrail_violation"]
    assert "rm -rf" not in streamed_args(result)


def split_every(text: str, n: int) -> List[str]:
    return [text[i:i + n] for i in range(0, len(text), n)]


def test_json_null_or_true_is_not_a_password() -> None:
    plugin = GuardrailsPlugin(downgoing={"credentials": "block"})
    out = non_streamed_args('{"password": null, "pwd": true}', plugin)
    assert json.loads(out) == {"password": None, "pwd": True}
    assert plugin.stats() == {}


def test_free_text_arguments_of_a_custom_tool_are_redacted_as_text() -> None:
    # A custom tool's input is not JSON, even when it starts with a brace: nothing is quoted.
    text = "{draft} SET PASSWORD=hunter22 now"
    result = run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**REDACT_ALL)],
                         script=[tool_stream(list(text), custom=True)])
    assert streamed_args(result, "custom", "input") == "{draft} SET PASSWORD=[REDACTED:credential] now"


def test_clean_json_arguments_stream_byte_for_byte() -> None:
    text = json.dumps({"cmd": 'printf "a\\tb\\n" && echo \\"done\\"', "n": 3, "ok": True, "u": "é\u2028"})
    script = tool_stream(list(text))
    plain = run_request({**CHAT, "stream": True}, script=[list(script)])
    guarded = run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**REDACT_ALL)], script=[list(script)])
    assert guarded.body == plain.body


# --- the lexer: pieces lexed from a carried state say what the whole text says ---------------


def test_lexing_in_pieces_equals_lexing_whole() -> None:
    text = json.dumps({"a": 'x"y\\z\n\u00e9', "b": [1, "\u2028", {"c": "\\\\\""}]}, ensure_ascii=True)
    whole = lex(text)
    for cut in range(len(text) + 1):
        first = lex(text[:cut])
        second = lex(text[cut:], cut, first.state)
        assert second.state == whole.state
        assert sorted(set(first.escapes + second.escapes)) == whole.escapes, cut
        assert advance(LexState(), text[:cut], 0) == first.state


def test_json_spans_never_cut_an_escape_or_the_structure() -> None:
    text = '{"a": "x\\"yz\\u00e9", "b": 123456, "c": null}'
    # Every span, however absurd, leaves valid JSON behind.
    for s in range(len(text)):
        for e in range(s + 1, len(text) + 1):
            out = _apply(text, json_spans(text, [(s, e, "[R]")]))
            json.loads(out)


def test_a_bare_token_at_the_end_of_a_buffer_is_not_whole_until_the_end() -> None:
    text = '{"password": 12345'  # a stream's buffer: the number may go on
    span = [(13, 18, "[R]")]
    assert json_spans(text, span, final=False) == []
    assert _apply(text, json_spans(text, span)) == '{"password": "[R]"'  # the whole text: it ended there
    assert json_spans(text, span, sent=14) == []  # its start has left already: never quoted mid-token
    assert json_spans("[1, 22, 333", [(1, 11, "[R]")], final=False) == [(1, 2, '"[R]"'), (4, 6, '"[R]"')]
    assert json_spans("[1, 22, 333", [(1, 11, "[R]")])[-1] == (8, 11, '"[R]"')
    assert cut_token(text, 15) == (13, 18) and cut_token(text, 13) is None and cut_token(text, 5) is None
    assert cut_token('{"a": "123456"}', 9) is None  # inside a string


# A number longer than the hold: the release is forced inside it. It must leave as one quoted placeholder,
# never a placeholder followed by (more placeholders and) the rest of its digits.
FORCED = {"downgoing": {"credentials": "redact", "pii_emails": "redact"}, "max_hold_chars": 256}


@pytest.mark.parametrize("args", [
    {"password": int("7" * 400), "x": 1},
    {"user": "bob", "password": int("7" * 900)},
    {"password": int("7" * 300), "note": "jane@example.com " + "y" * 300},  # the number ends just after the cut
    {"cfg": {"pwd": int("7" * 500), "n": [1, 2]}, "pad": PAD},
], ids=["400-digits", "900-digits-at-the-end", "300-digits-then-text", "nested"])
@pytest.mark.parametrize("size", [1, 10, 64, 300])
def test_a_forced_cut_inside_a_number_keeps_json_and_the_secret(args: Dict[str, Any], size: int) -> None:
    text = json.dumps(args)
    plugin = GuardrailsPlugin(**FORCED)
    whole = non_streamed_args(text, plugin)
    streamed = streamed_args(run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**FORCED)],
                                         script=[tool_stream(split_every(text, size))]))
    assert json.loads(streamed) == json.loads(whole)
    assert "777" not in streamed and "jane@" not in streamed


@settings(max_examples=40, deadline=None)
@given(digits=st.integers(min_value=3, max_value=1200), before=st.sampled_from(["", "x" * 200, PAD]),
       after=st.sampled_from([None, "jane@example.com", "z" * 400, 5]), window=st.sampled_from([16, 64, 256]),
       cuts=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=20))
def test_any_chunking_of_a_long_number_stays_json(digits: int, before: str, after: Any, window: int,
                                                  cuts: List[int]) -> None:
    args: Dict[str, Any] = {"pad": before} if before else {}
    args["password"] = int("7" * digits)
    if after is not None:
        args["after"] = after
    text = json.dumps(args)
    chunks = cut(text, cuts)
    options = {**FORCED, "stream_window": window}
    streamed = streamed_args(run_request({**CHAT, "stream": True}, plugins=[GuardrailsPlugin(**options)],
                                         script=[tool_stream(chunks)]))
    decoded = json.loads(streamed)
    assert decoded == {**args, "password": "[REDACTED:credential]",
                       **({"after": "[REDACTED:email]"} if after == "jane@example.com" else {})}
    assert "777" not in streamed


def _apply(text: str, spans: List[Any]) -> str:
    from routeplane_guardrails.rules import redact

    return redact(text, spans)


# --- property: however arguments are chunked, they stay JSON and match the non-streamed redaction ---

VALUES = ["plain words", PAD, KEY, "password=hunter22x", 'say "hi"', "back\\slash", "line\nbreak", "jane@example.com",
          "\n10.1.2.3", "SET PASSWORD=hunter22\"", "é", '{"password": "abc def"}', "tab\there"]


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=6),
       number=st.one_of(st.none(), st.integers(min_value=100, max_value=10 ** 9)),
       cuts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=30))
def test_any_chunking_of_arguments_stays_json(values: List[str], number: Optional[int], cuts: List[int]) -> None:
    args: Dict[str, Any] = {f"k{i}": v for i, v in enumerate(values)}
    if number is not None:
        args["password"] = number
    text = json.dumps(args)
    chunks = cut(text, cuts)
    plugin = GuardrailsPlugin(**REDACT_ALL)
    streamed = streamed_args(run_request({**CHAT, "stream": True}, plugins=[plugin], script=[tool_stream(chunks)]))
    whole = non_streamed_args(text, plugin)
    assert streamed == whole
    decoded = json.loads(streamed)
    assert set(decoded) == set(args)
    assert KEY not in streamed and "hunter22" not in streamed and "jane@" not in streamed and "10.1.2.3" not in streamed
    if number is not None:
        assert decoded["password"] == "[REDACTED:credential]"


def test_text_parts_are_not_treated_as_json() -> None:
    # Message text that happens to look like JSON is redacted as text (as before).
    gen = Generation("gen-1", "m", (TextPart('{"x": "SET PASSWORD=hunter22\\"}'),))
    result = run_request(CHAT, plugins=[GuardrailsPlugin(**REDACT_ALL)], script=[gen])
    assert result.json["choices"][0]["message"]["content"] == '{"x": "SET PASSWORD=[REDACTED:credential]"}'
