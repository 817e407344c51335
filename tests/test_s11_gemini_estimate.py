"""A Gemini stream whose parts carry no usage ends with the gateway's estimate, weighed as the same answer
unstreamed is (non-Latin text by its bytes, a call's name and arguments, a kept block's JSON): the streamed
fallback counted plain characters, so a Chinese answer showed a quarter of its tokens."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Dict, List, Tuple

import pytest

from routeplane.language_model.stream import estimate_usage, generation_to_parts, output_chars
from routeplane.language_model.types import (
    ContentPart,
    FinishReason,
    Generation,
    OpaquePart,
    Prompt,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    UsageUpdate,
)
from routeplane.protocols import gemini as wire
from routeplane.testing import Gateway, text_stream

CHINESE = "你好，世界。今天天气很好，我们去公园散步吧。" * 4
EMOJI = "Done 🎉🚀 " * 6
CODE = {"executableCode": {"language": "PYTHON", "code": "print('数据')"}}

ANSWERS: Dict[str, Tuple[ContentPart, ...]] = {
    "chinese": (TextPart(CHINESE),),
    "emoji": (TextPart(EMOJI[:7]), TextPart(EMOJI[7:])),
    "thought and text": (ReasoningPart("先想一想。" * 5, None, None, "gemini"), TextPart(CHINESE)),
    "tool call": (ToolCallPart("c1", "查询天气", json.dumps({"city": "北京", "note": "☔️" * 8}, ensure_ascii=False)),),
    "parallel calls": (ToolCallPart("c1", "weather", '{"city":"東京"}'), ToolCallPart("c2", "weather", '{"city":"서울"}')),
    "code": (OpaquePart("gemini", CODE), TextPart("結果")),
    "english": (TextPart("The quick brown fox jumps over the lazy dog. " * 3),),
}


def _prompt(stream: bool) -> Prompt:
    return wire.CLIENT.for_path("gemini-x", stream).decode_request({"contents": [{"parts": [{"text": "写一段话"}]}]})


def _streamed_usage(gen: Generation) -> Dict[str, Any]:
    """The usageMetadata of the last chunk, the stream's parts given without any usage."""
    enc = wire.CLIENT.for_path("gemini-x", True).stream_encoder(_prompt(True))
    raw = b"".join(enc.encode(p) for p in generation_to_parts(gen) if not isinstance(p, UsageUpdate)) + enc.close()
    chunks: List[Dict[str, Any]] = [json.loads(line[6:]) for line in raw.split(b"\r\n") if line]
    return chunks[-1]["usageMetadata"]


def _unstreamed_usage(gen: Generation) -> Dict[str, Any]:
    """What a Gemini client gets unstreamed for the same answer without usage (the pipeline's estimate)."""
    prompt = _prompt(False)
    estimated = replace(gen, usage=estimate_usage(prompt, output_chars(gen)))
    return wire.CLIENT.for_path("gemini-x", False).encode_response(estimated, prompt)["usageMetadata"]


@pytest.mark.parametrize("name", list(ANSWERS))
def test_a_streamed_estimate_is_the_unstreamed_one(name: str) -> None:
    gen = Generation(id="r1", model="gemini-x", parts=ANSWERS[name], finish_reason=FinishReason.STOP)
    assert _streamed_usage(gen) == _unstreamed_usage(gen)


def test_a_chinese_answer_is_estimated_at_no_less_than_a_token_a_character() -> None:
    gen = Generation(id="r1", model="gemini-x", parts=(TextPart(CHINESE),), finish_reason=FinishReason.STOP)
    assert _streamed_usage(gen)["candidatesTokenCount"] >= len(CHINESE)  # plain characters: 22


def test_through_the_gateway_a_streamed_estimate_is_the_unstreamed_one() -> None:
    """What the client is shown and billed: the pipeline's estimate, streamed in one-character deltas."""
    billed = {}
    for stream in (False, True):
        r = Gateway(script=[text_stream(*CHINESE)]).request({"contents": [{"parts": [{"text": "写"}]}]},
                                                             wire="gemini", stream=stream)
        (settlement,) = r.settlements
        billed[stream] = settlement.usage.output_tokens
    assert billed[True] == billed[False]  # 110 and 106
