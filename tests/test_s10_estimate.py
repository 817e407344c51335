"""A streamed answer whose upstream reports no usage is billed by an estimate that counts non-Latin text
by its bytes, as a non-streamed one is (routeplane/language_model/stream.py, GenerationAccumulator)."""

from __future__ import annotations

import pytest

from routeplane.testing import Gateway, text_stream

CHINESE = "你好，世界。今天天气很好，我们去公园散步吧。" * 4  # 88 characters, about a token each


@pytest.mark.parametrize("stream", [False, True])
def test_a_chinese_answer_without_usage_is_billed_at_no_less_than_its_characters(stream: bool) -> None:
    with Gateway(script=[text_stream(CHINESE[:40], CHINESE[40:])]) as gw:
        r = gw.request({"model": "default", "messages": [{"role": "user", "content": "写一段话"}]}, stream=stream)
        assert r.status == 200
        (settlement,) = r.settlements
    assert not settlement.usage.reported
    assert settlement.usage.output_tokens >= len(CHINESE)  # at 4 characters a token it was 22


def test_an_english_answer_is_estimated_as_before() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 4  # 180 ASCII characters
    with Gateway(script=[text_stream(text[:90], text[90:])]) as gw:
        r = gw.request({"model": "default", "messages": [{"role": "user", "content": "hi"}]}, stream=True)
        (settlement,) = r.settlements
    assert settlement.usage.output_tokens == (len(text) + 3) // 4
