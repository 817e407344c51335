"""Offsets into the text follow a redaction, and an answer's ending fields are scanned, streamed or not.

Scripted at the canonical level (routeplane.testing); the main suite's
`test_guardrails_citation_offsets_e2e.py` and `test_guardrails_finish_extras_e2e.py` run the same
through the wires with the official SDKs.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from routeplane_guardrails import GuardrailsPlugin
from routeplane_guardrails.offsets import moved

from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ResponseStart,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    Usage,
    UsageUpdate,
)
from routeplane.testing import Gateway

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"
REDACT: Dict[str, Any] = {"downgoing": {"api_keys": "redact"}}
RESPONSES, ANTHROPIC = "openai_responses", "anthropic_messages"
TEXT = f"Key {KEY} is in the guide."
GUIDE = {"type": "url_citation", "start_index": TEXT.index("guide"), "end_index": TEXT.index("guide") + 5,
         "url": "https://docs.example.com/", "title": "Guide"}


@pytest.mark.parametrize("pos,start,expected", [
    (3, True, 3), (3, False, 3),      # before the first replaced span [3, 10)
    (5, True, 3), (5, False, 5),      # inside it: to the placeholder's start or end (3 + 2)
    (10, True, 5), (10, False, 5),    # at its end: right after the placeholder
    (12, True, 7), (13, False, 16),   # between two spans; inside the second [12, 14) (placeholder of 9)
    (20, False, 22),                  # after both: moved by -5 then +7
])
def test_an_offset_moves_past_replacements_and_never_splits_a_placeholder(pos: int, start: bool,
                                                                          expected: int) -> None:
    assert moved(pos, [(3, 10, 2), (12, 14, 9)], start=start) == expected


def test_an_answers_url_citation_follows_the_redacted_text() -> None:
    gen = Generation(id="resp_1", model="up", parts=(TextPart(TEXT, annotations=(GUIDE,),
                                                              annotations_protocol=RESPONSES),),
                     finish_reason=FinishReason.STOP, usage=Usage(input_tokens=3, output_tokens=5))
    result = Gateway(plugins=[GuardrailsPlugin(**REDACT)], script=[gen]).request(
        {"model": "default", "input": "go"}, wire=RESPONSES)
    part = result.json["output"][0]["content"][0]
    note = part["annotations"][0]
    assert part["text"] == f"Key {RED} is in the guide."
    assert part["text"][note["start_index"]:note["end_index"]] == "guide"


def frame(parts: List[StreamPart], **finish: Any) -> List[StreamPart]:
    return [ResponseStart("msg_1", "up", 1700000000), *parts, UsageUpdate(Usage(input_tokens=3, output_tokens=7)),
            Finish(FinishReason.STOP, **finish)]


def test_a_streams_url_citation_follows_the_redacted_text() -> None:
    script = frame([TextStart(0), TextDelta(0, TEXT[:12]), TextDelta(0, TEXT[12:]),
                    TextAnnotation(0, RESPONSES, GUIDE), TextEnd(0)])
    result = Gateway(plugins=[GuardrailsPlugin(**REDACT)], script=[script]).request(
        {"model": "default", "input": "go", "stream": True}, wire=RESPONSES)
    (note,) = [e["annotation"] for e in result.sse if e.get("type") == "response.output_text.annotation.added"]
    assert result.text == f"Key {RED} is in the guide."
    assert result.text[note["start_index"]:note["end_index"]] == "guide"


@pytest.mark.parametrize("action", ["redact", "block"])
def test_a_streams_ending_fields_are_scanned_for_a_client_of_their_wire(action: str) -> None:
    details = {"type": "refusal", "category": None, "explanation": f"held {KEY}"}
    script = frame([TextStart(0), TextDelta(0, "No."), TextEnd(0)], wire=ANTHROPIC,
                   extras={"stop_details": details})
    result = Gateway(plugins=[GuardrailsPlugin(downgoing={"api_keys": action})], script=[script]).request(
        {"model": "default", "max_tokens": 9, "stream": True, "messages": [{"role": "user", "content": "go"}]},
        wire=ANTHROPIC)
    assert KEY.encode() not in result.body
    ending = [e for e in result.sse if e.get("type") in ("message_delta", "error")]
    if action == "redact":
        assert ending[0]["delta"]["stop_details"]["explanation"] == f"held {RED}"
    else:
        assert ending[0]["type"] == "error" and "api_keys in response stop_details" in ending[0]["error"]["message"]


CHAT = "openai_chat"
CHAT_GUIDE = {"type": "url_citation", "url_citation": {k: v for k, v in GUIDE.items() if k != "type"}}


def test_a_chat_streams_url_citation_follows_the_redacted_text() -> None:
    """A Chat search model streams its citations in a `delta.annotations` after the text they cite; the
    hooks' output and the client's chunk agree."""
    script = frame([TextStart(0), TextDelta(0, TEXT[:12]), TextDelta(0, TEXT[12:]),
                    TextAnnotation(0, CHAT, CHAT_GUIDE), TextEnd(0)])
    gw = Gateway(plugins=[GuardrailsPlugin(**REDACT)], script=[script])
    result = gw.request({"model": "default", "stream": True, "messages": [{"role": "user", "content": "go"}]},
                        wire=CHAT)
    (note,) = [e.part.annotation for e in gw.events.named("on_stream_part") if isinstance(e.part, TextAnnotation)]
    assert result.text == f"Key {RED} is in the guide."
    cited = note["url_citation"]
    assert result.text[cited["start_index"]:cited["end_index"]] == "guide"
    assert {k: v for k, v in cited.items() if "index" not in k} == {"url": GUIDE["url"], "title": "Guide"}
    chunks = [c for c in result.sse if isinstance(c, dict) and c.get("choices")]
    (sent,) = [n for c in chunks for n in c["choices"][0]["delta"].get("annotations", [])]
    assert sent == note
