"""Property: whatever order canonical parts arrive in, the Anthropic SSE the gateway emits is
well-formed (one block open at a time, contiguous indices) and loses no text or argument fragment."""

from __future__ import annotations

import json
import random
from typing import Any, Dict, List

from hypothesis import given, settings
from hypothesis import strategies as st

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    ResponseStart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from routeplane.protocols import anthropic_messages as an
from routeplane.protocols.anthropic_messages.request import decode_request
from tests.matrix.wires.anthropic_messages import _read_stream

ARGS = st.dictionaries(st.sampled_from(["a", "city", "n", "ü"]), st.one_of(st.integers(), st.text(max_size=5)),
                       max_size=3)


@st.composite
def interleaved_parts(draw: Any) -> Dict[str, Any]:
    n_blocks = draw(st.integers(1, 5))
    blocks: List[Dict[str, Any]] = []
    for i in range(n_blocks):
        if draw(st.booleans()):
            text = draw(st.text(min_size=0, max_size=12))
            cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=3)))
            pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
            blocks.append({"kind": "text", "index": i, "pieces": pieces, "text": text})
        else:
            args = json.dumps(draw(ARGS))
            cuts = sorted(draw(st.lists(st.integers(0, len(args)), max_size=4)))
            pieces = [args[a:b] for a, b in zip([0] + cuts, cuts + [len(args)])]
            blocks.append({"kind": "tool", "index": i, "pieces": pieces, "args": json.loads(args), "id": f"call_{i}"})
    rng = random.Random(draw(st.integers(0, 10_000)))
    # Each block's own parts stay in order; blocks start in index order (as decoders emit them)
    # but their deltas interleave freely, and ends may come late (OpenAI closes tools at [DONE]).
    queues = []
    for b in blocks:
        start = TextStart(b["index"]) if b["kind"] == "text" else ToolCallStart(b["index"], b["id"], "f")
        deltas = [TextDelta(b["index"], p) if b["kind"] == "text" else ToolCallDelta(b["index"], p) for p in b["pieces"]]
        end = TextEnd(b["index"]) if b["kind"] == "text" else ToolCallEnd(b["index"])
        queues.append([start] + deltas + ([end] if rng.random() < 0.5 else []))
    parts: List[Any] = [ResponseStart("r", "m")]
    started = 0
    while any(queues):
        live = [q for q in queues[:started] if q]
        if started < len(queues) and (not live or rng.random() < 0.4):
            live = [queues[started]]
            started += 1
        q = rng.choice(live)
        parts.append(q.pop(0))
    parts += [ToolCallEnd(b["index"]) for b in blocks if b["kind"] == "tool"]
    parts.append(Finish(FinishReason.TOOL_CALLS))
    return {"blocks": blocks, "parts": parts}


@settings(max_examples=150, deadline=None)
@given(interleaved_parts())
def test_encoder_output_is_well_formed_and_lossless(case: Dict[str, Any]) -> None:
    prompt = decode_request({"model": "m", "max_tokens": 10, "stream": True,
                             "messages": [{"role": "user", "content": "x"}]})
    enc = an.CLIENT.stream_encoder(prompt)
    raw = b"".join(enc.encode(p) for p in case["parts"]) + enc.close()
    result = _read_stream(raw)  # asserts: event lines, no overlap, contiguous indices, no empty text block
    tools = [b for b in case["blocks"] if b["kind"] == "tool"]
    assert [(c[0], c[2]) for c in result.calls] == [(b["id"], b["args"]) for b in tools]
    texts = [b["text"] for b in case["blocks"] if b["kind"] == "text"]
    assert sorted(result.text) == sorted("".join(texts))  # every character, whatever block order


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
BLOCK_TYPES = st.sampled_from(["text", "image", "document", "tool_use", "tool_result", "thinking",
                               "redacted_thinking", "nope"])


@st.composite
def messy_bodies(draw: Any) -> Any:
    block = st.fixed_dictionaries({"type": BLOCK_TYPES}, optional={
        "text": JSON, "source": JSON, "id": JSON, "name": JSON, "input": JSON, "content": JSON,
        "tool_use_id": JSON, "thinking": JSON, "signature": JSON, "data": JSON, "cache_control": JSON,
        "is_error": JSON})
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", 3])},
                                    optional={"content": st.one_of(JSON, st.lists(block, max_size=3))})
    return draw(st.fixed_dictionaries({"model": st.one_of(st.just("m"), JSON)}, optional={
        "max_tokens": st.one_of(st.integers(-2, 10), JSON), "messages": st.one_of(st.lists(message, max_size=3), JSON),
        "system": JSON, "tools": JSON, "tool_choice": JSON, "stop_sequences": JSON, "metadata": JSON,
        "thinking": JSON, "output_config": JSON, "temperature": JSON}))


@settings(max_examples=300, deadline=None)
@given(messy_bodies())
def test_any_body_decodes_or_is_a_400(body: Any) -> None:
    from routeplane.errors import InvalidRequest
    from routeplane.language_model.routing import RoutingTarget

    try:
        prompt = decode_request(body)
    except InvalidRequest as err:
        assert err.status == 400
        return
    target = RoutingTarget("a", "m", "anthropic_messages")
    try:
        an.PROVIDER.encode_request(prompt, target, False)
    except InvalidRequest as err:
        assert err.status == 400


LINE = st.tuples(st.sampled_from(["data: x", "data:ü", "event: e", ": ping", "id: 7", "", "data: {\"a\":1}"]),
                 st.sampled_from(["\n", "\r\n", "\r"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=12), st.lists(st.integers(0, 200), max_size=5))
def test_sse_parser_gives_the_same_events_however_the_bytes_are_split(lines: Any, cuts: Any) -> None:
    from routeplane.protocols.sse import SSEParser

    raw = "".join(a + b for a, b in lines).encode()
    points = sorted({c % (len(raw) + 1) for c in cuts})
    chunks = [raw[a:b] for a, b in zip([0] + points, points + [len(raw)])]
    whole = SSEParser()
    expected = whole.feed(raw) + whole.finish()
    split = SSEParser()
    got = [e for c in chunks for e in split.feed(c)] + split.finish()
    assert got == expected
