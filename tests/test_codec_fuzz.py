"""Property: every codec either yields a canonical value or raises the gateway's own error
(4xx on the client side, 502 on the provider side) — never another exception — and the SSE
parser gives the same events however its input is cut, framed or terminated."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routeplane.errors import RouteplaneError, UpstreamError
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import Generation, Prompt
from routeplane.protocols import client_codecs, provider_codecs
from routeplane.protocols.sse import SSEEvent, SSEParser

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
FEW = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["", "user", "assistant", "system", "tool", "developer", "model", "function", "text",
                     "image_url", "tool_use", "tool_result", "input_text", "output_text", "function_call",
                     "auto", "none", "required", "any", "json_schema", "json_object", "stop", "length",
                     "data:image/png;base64,AAAA", "data:,x", "https://x.invalid/a.png", "\ud7ff\U0001f600",
                     "[" * 3000]),  # JSON text (arguments, a result) nested past the recursion limit
)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)


def deep(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


HOSTILE = st.one_of(
    JSON,
    st.integers(min_value=1, max_value=300).map(deep),
    st.integers(min_value=10_000, max_value=100_000).map(lambda n: "x" * n),
    # Distinct dicts: a list of n references to one dict, mutated twice, would nest n x n.
    st.integers(min_value=500, max_value=2000).map(lambda n: [{"type": "text", "text": "a"} for _ in range(n)]),
    st.just(float("1e308")), st.just(-1), st.just(2**64),
)

# --- seeds: one realistic body per wire, mutated at a random path -----------------

TOOL_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
IMG = "iVBORw0KGgo="

CLIENT_SEEDS = {
    "openai_chat": {
        "model": "m", "stream": False, "max_tokens": 10, "temperature": 0.5, "stop": ["x"], "n": 1,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": TOOL_PARAMS}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": TOOL_PARAMS}},
        "stream_options": {"include_usage": True},
    },
    "openai_responses": {
        "model": "m", "instructions": "be brief", "max_output_tokens": 10, "stream": False,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                         {"type": "input_image", "image_url": f"data:image/png;base64,{IMG}"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": TOOL_PARAMS}],
        "tool_choice": "auto",
        "text": {"format": {"type": "json_schema", "name": "s", "schema": TOOL_PARAMS}},
        "reasoning": {"effort": "low"},
    },
    "anthropic_messages": {
        "model": "m", "max_tokens": 10, "stream": False, "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": IMG}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                              {"type": "tool_use", "id": "c1", "name": "f", "input": {"city": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "ok"}]},
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": TOOL_PARAMS}],
        "tool_choice": {"type": "auto"}, "stop_sequences": ["x"], "temperature": 0.2,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    },
    "gemini": {
        "model": "m",
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": IMG}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"city": "x"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": "ok"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": TOOL_PARAMS}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {"maxOutputTokens": 10, "temperature": 0.1, "stopSequences": ["x"],
                             "responseMimeType": "application/json", "responseSchema": TOOL_PARAMS,
                             "thinkingConfig": {"thinkingBudget": 100}},
    },
}

USAGE_OAI = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
             "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 1}}
RESPONSE_SEEDS = {
    "openai_chat": {
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": "hi", "refusal": None, "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": USAGE_OAI,
    },
    "openai_responses": {
        "id": "r", "object": "response", "model": "m", "status": "completed", "incomplete_details": None,
        "output": [
            {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "t"}]},
            {"type": "message", "id": "m1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "hi", "annotations": []}, {"type": "refusal", "refusal": "no"}]},
            {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": "{}"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
                  "input_tokens_details": {"cached_tokens": 1}, "output_tokens_details": {"reasoning_tokens": 1}},
    },
    "anthropic_messages": {
        "id": "msg", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",
        "stop_sequence": None,
        "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "hi"},
                    {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}],
        "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 1,
                  "cache_creation_input_tokens": 1},
    },
    "gemini": {
        "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "t", "thought": True}, {"text": "hi"}, {"functionCall": {"name": "f", "args": {"a": 1}}}]}}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 6,
                          "cachedContentTokenCount": 1, "thoughtsTokenCount": 1},
        "modelVersion": "m", "responseId": "r",
    },
}


def _chat_chunk(delta: Any, finish: Any = None, usage: Any = None) -> Any:
    out = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out = {**out, "choices": [], "usage": usage}
    return out


# (event name or None, data) pairs; "[DONE]" strings are sent raw.
STREAM_SEEDS = {
    "openai_chat": [
        (None, _chat_chunk({"role": "assistant", "content": ""})),
        (None, _chat_chunk({"content": "hé"})),
        (None, _chat_chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                            "function": {"name": "f", "arguments": ""}}]})),
        (None, _chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]})),
        (None, _chat_chunk({}, "tool_calls")),
        (None, _chat_chunk({}, None, USAGE_OAI)),
        (None, "[DONE]"),
    ],
    "openai_responses": [
        ("response.created", {"type": "response.created", "response": {"id": "r", "model": "m", "status": "in_progress",
                                                                      "output": []}}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                        "item": {"type": "message", "id": "m1", "role": "assistant", "content": []}}),
        ("response.content_part.added", {"type": "response.content_part.added", "output_index": 0, "content_index": 0,
                                         "item_id": "m1", "part": {"type": "output_text", "text": ""}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                                        "item_id": "m1", "delta": "hé"}),
        ("response.output_text.done", {"type": "response.output_text.done", "output_index": 0, "content_index": 0,
                                       "item_id": "m1", "text": "hé"}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                       "item": {"type": "message", "id": "m1", "role": "assistant",
                                                "content": [{"type": "output_text", "text": "hé"}]}}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 1,
                                        "item": {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f",
                                                 "arguments": ""}}),
        ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                    "output_index": 1, "item_id": "fc", "delta": "{}"}),
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 1,
                                       "item": {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f",
                                                "arguments": "{}"}}),
        ("response.completed", {"type": "response.completed", "response": {
            "id": "r", "model": "m", "status": "completed", "output": [],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}}),
    ],
    "anthropic_messages": [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "hé"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "tool_use", "id": "c1", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"}),
    ],
    "gemini": [
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "t", "thought": True}]}}]}),
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "hé"}]}}]}),
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
            "modelVersion": "m"}),
    ],
}

WIRES = sorted(CLIENT_SEEDS)


def _paths(value: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    out = [prefix]
    if len(prefix) > 8:  # do not walk into an already-planted deep value
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):  # the first elements of a planted huge list are enough
            out.extend(_paths(v, prefix + (i,)))
    return out


def _set(value: Any, path: Tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


@st.composite
def mutated(draw: Callable[..., Any], seed: Any) -> Any:
    """The seed with 1-3 values (or keys' values) replaced by hostile JSON, or deleted."""
    value = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        if path and draw(st.integers(0, 4)) == 0:
            parent = value
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                del parent[path[-1]]
            continue
        value = _set(value, path, draw(HOSTILE))
    return value


def bodies(seed: Any) -> Any:
    return st.one_of(mutated(seed), HOSTILE)


TARGETS = {p: RoutingTarget(provider="up", model="m", protocol=p, api_key="sk-test-secret-0123456789")
           for p in WIRES}


def _client_ok(protocol: str, body: Any) -> None:
    codec = client_codecs()[protocol]
    try:
        prompt = codec.decode_request(body)
    except RouteplaneError as err:
        assert 400 <= err.status < 500, (protocol, err)
        return
    assert isinstance(prompt, Prompt)
    assert all(m.role in ("user", "assistant", "system", "tool") for m in prompt.messages)
    # A decoded prompt must be encodable for every upstream wire (or refused with a 4xx).
    for wire, provider in provider_codecs().items():
        try:
            out = provider.encode_request(prompt, TARGETS[wire], prompt.stream)
        except RouteplaneError as err:
            assert 400 <= err.status < 500, (protocol, wire, err)
            continue
        json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("protocol", WIRES)
def test_client_seed_is_valid(protocol: str) -> None:
    assert isinstance(client_codecs()[protocol].decode_request(copy.deepcopy(CLIENT_SEEDS[protocol])), Prompt)


@pytest.mark.parametrize("protocol", WIRES)
def test_decode_request_never_crashes(protocol: str) -> None:
    @FUZZ
    @given(bodies(CLIENT_SEEDS[protocol]))
    def check(body: Any) -> None:
        _client_ok(protocol, body)

    check()


def _response_ok(protocol: str, body: Any) -> None:
    try:
        gen = provider_codecs()[protocol].decode_response(body, TARGETS[protocol])
    except RouteplaneError as err:
        # 502, or the status of an error object the upstream put in a 200 body.
        assert isinstance(err, UpstreamError) and 400 <= err.status <= 599, (protocol, err)
        return
    assert isinstance(gen, Generation)
    assert gen.usage.input_tokens >= 0 and gen.usage.output_tokens >= 0, gen.usage


@pytest.mark.parametrize("protocol", WIRES)
def test_response_seed_is_valid(protocol: str) -> None:
    assert isinstance(provider_codecs()[protocol].decode_response(copy.deepcopy(RESPONSE_SEEDS[protocol]),
                                                                   TARGETS[protocol]), Generation)


@pytest.mark.parametrize("protocol", WIRES)
def test_decode_response_never_crashes(protocol: str) -> None:
    @FUZZ
    @given(bodies(RESPONSE_SEEDS[protocol]))
    def check(body: Any) -> None:
        _response_ok(protocol, body)

    check()


def _events(seed: List[Tuple[Any, Any]]) -> List[SSEEvent]:
    return [SSEEvent(d if isinstance(d, str) else json.dumps(d), e) for e, d in seed]


def _run_decoder(protocol: str, events: List[SSEEvent]) -> None:
    decoder = provider_codecs()[protocol].stream_decoder(TARGETS[protocol])
    try:
        for ev in events:
            assert isinstance(decoder.feed(ev), list)
        assert isinstance(decoder.finish(), list)
    except RouteplaneError as err:
        assert isinstance(err, UpstreamError) and 400 <= err.status <= 599, (protocol, err)


@pytest.mark.parametrize("protocol", WIRES)
def test_stream_seed_decodes(protocol: str) -> None:
    decoder = provider_codecs()[protocol].stream_decoder(TARGETS[protocol])
    parts = [p for ev in _events(STREAM_SEEDS[protocol]) for p in decoder.feed(ev)] + decoder.finish()
    assert parts


@st.composite
def hostile_streams(draw: Callable[..., Any], seed: List[Tuple[Any, Any]]) -> List[SSEEvent]:
    events = [(e, copy.deepcopy(d)) for e, d in seed]
    choice = draw(st.integers(0, 4))
    if choice == 0:  # one event's JSON mutated
        i = draw(st.integers(0, len(events) - 1))
        if not isinstance(events[i][1], str):
            events[i] = (events[i][0], draw(mutated(events[i][1])))
    elif choice == 1:  # cut short (no terminator), or events dropped / repeated / shuffled
        events = events[: draw(st.integers(0, len(events)))]
    elif choice == 2:
        events = draw(st.lists(st.sampled_from(events), max_size=12))
    elif choice == 3:  # a raw non-JSON or odd data payload
        i = draw(st.integers(0, len(events)))
        events.insert(i, (draw(st.one_of(st.none(), st.text(max_size=10))),
                          draw(st.one_of(st.text(max_size=30), st.just("[DONE]"), st.just(""), st.just("null"),
                                         JSON.map(json.dumps)))))
    else:
        names = st.one_of(st.none(), st.sampled_from([e for e, _ in events if e] or ["x"]))
        events = [(draw(names), json.dumps(draw(HOSTILE))) for _ in range(draw(st.integers(1, 4)))]
    return _events(events)


@pytest.mark.parametrize("protocol", WIRES)
def test_stream_decoder_never_crashes(protocol: str) -> None:
    @FUZZ
    @given(hostile_streams(STREAM_SEEDS[protocol]))
    def check(events: List[SSEEvent]) -> None:
        _run_decoder(protocol, events)

    check()


# --- SSE parser --------------------------------------------------------------------

EVENT_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30)
SSE_EVENTS = st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["message_start", "delta", "é"])),
                                st.lists(EVENT_TEXT, min_size=1, max_size=3),
                                st.booleans()), min_size=0, max_size=6)


def _render(events: List[Tuple[Any, List[str], bool]], eol: str) -> Tuple[bytes, List[SSEEvent]]:
    out, expected = [], []
    for name, lines, comment in events:
        if comment:
            out.append(": keep-alive" + eol)
        if name:
            out.append(f"event: {name}" + eol)
        for line in lines:
            out.append(f"data: {line}" + eol)
        out.append(eol)
        expected.append(SSEEvent("\n".join(lines), name))
    return "".join(out).encode("utf-8"), expected


def _cut(data: bytes, cuts: List[int]) -> List[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@FEW
@given(SSE_EVENTS, st.sampled_from(["\n", "\r\n", "\r"]), st.lists(st.integers(0, 10_000), max_size=40),
       st.booleans())
def test_sse_parser_is_chunking_and_framing_invariant(events: Any, eol: str, cuts: List[int], drop_end: bool) -> None:
    data, expected = _render(events, eol)
    if drop_end and data:
        data = data[: -len(eol)]  # the last blank line never came: finish() still dispatches
    parser = SSEParser()
    got = [ev for chunk in _cut(data, cuts) for ev in parser.feed(chunk)] + parser.finish()
    assert [(e.data, e.event) for e in got] == [(e.data, e.event) for e in expected]


@FEW
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=30))
def test_sse_parser_accepts_any_bytes(data: bytes, cuts: List[int]) -> None:
    parser = SSEParser(max_line_bytes=1 << 20)
    whole = SSEParser(max_line_bytes=1 << 20)
    got = [ev for chunk in _cut(data, cuts) for ev in parser.feed(chunk)] + parser.finish()
    ref = whole.feed(data) + whole.finish()
    assert all(isinstance(e.data, str) for e in got)
    assert got == ref  # invalid UTF-8 split anywhere decodes the same as in one read


def test_sse_parser_bounds_an_endless_line() -> None:
    parser = SSEParser(max_line_bytes=1024)
    with pytest.raises(ValueError):
        for _ in range(100):
            parser.feed(b"data: " + b"x" * 100)


def test_deeply_nested_and_huge_values_are_refused_or_decoded_quickly() -> None:
    for protocol in WIRES:
        for body in (deep(50_000), {"model": "m", "messages": deep(20_000)}, {"x": "y" * 5_000_000}):
            _client_ok(protocol, body)
            _response_ok(protocol, body)


# --- the same hostile bodies through the whole in-process app (pipeline, mock provider, encoders) ------

WIRE_PATHS = {"openai_chat": "/v1/chat/completions", "openai_responses": "/v1/responses",
              "anthropic_messages": "/v1/messages", "gemini": "/v1beta/models/mock-echo:generateContent"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from routeplane.app import build_app
    from routeplane.config import DEFAULT_CONFIG, parse_config

    config = copy.deepcopy(DEFAULT_CONFIG)
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/rp.db"}
    return build_app(parse_config(config)).flask_app().test_client()


@pytest.mark.parametrize("protocol", WIRES)
def test_hostile_bodies_never_make_a_500(protocol: str, client: Any) -> None:
    seed = copy.deepcopy(CLIENT_SEEDS[protocol])
    seed["model"] = "mock-echo"

    @FEW
    @given(st.one_of(mutated(seed), st.just(seed), HOSTILE), st.booleans())
    def check(body: Any, stream: bool) -> None:
        if isinstance(body, dict) and stream and protocol != "gemini":
            body = {**body, "stream": True}
        path = WIRE_PATHS[protocol].replace("generateContent", "streamGenerateContent?alt=sse") \
            if stream and protocol == "gemini" else WIRE_PATHS[protocol]
        resp = client.post(path, data=json.dumps(body), content_type="application/json")
        data = resp.get_data()  # drains a stream too
        assert resp.status_code < 500, (resp.status_code, data[:300])
        if resp.status_code >= 400:
            assert "error" in json.loads(data), data[:300]

    check()

