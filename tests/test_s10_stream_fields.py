"""A text block's item fields (a Responses message's `phase`) survive the stream helpers
(routeplane/language_model/stream.py)."""

from __future__ import annotations


def test_a_generation_made_into_a_stream_and_back_keeps_its_texts_item_fields() -> None:
    # A stream built from one answer (an upstream that answered a stream request with JSON, a hook's own
    # answer) and the accumulator that rebuilds `ctx.result` keep a Responses message's `phase`.
    from routeplane.language_model.stream import GenerationAccumulator, generation_to_parts
    from routeplane.language_model.types import FinishReason, Generation, TextPart

    texts = (TextPart("Looking it up.", part_fields={"phase": "commentary"}, part_fields_protocol="openai_responses"),
             TextPart("It is 4.", part_fields={"phase": "final_answer"}, part_fields_protocol="openai_responses"))
    acc = GenerationAccumulator()
    for part in generation_to_parts(Generation(id="r", model="m", parts=texts, finish_reason=FinishReason.STOP)):
        acc.add(part)
    assert acc.parts() == texts
