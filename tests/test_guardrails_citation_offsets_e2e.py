"""Responses annotations that index their text keep pointing at the same words after a redaction.

`url_citation`/`container_file_citation` `start_index`/`end_index` and a `file_citation`'s `index` are
character offsets into the output_text (openai-python `AnnotationURLCitation`: "the index of the first
character of the URL citation in the message"); a placeholder of another length moves what follows it.
A real local fake upstream speaks the Responses wire; the official SDK reads the answer.
"""

from __future__ import annotations

from typing import Any, Dict, List

import httpx2
import openai
import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import responses_sse

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"
REDACT: Dict[str, Any] = {"downgoing": {"api_keys": "redact"}, "upgoing": {"api_keys": "redact"}}
TEXT = f"Your key {KEY} is in the setup guide, see the FAQ."
CLEAN = f"Your key {RED} is in the setup guide, see the FAQ."


def url(text: str, cited: str, start: int = 0) -> Dict[str, Any]:
    at = text.index(cited, start)
    return {"type": "url_citation", "start_index": at, "end_index": at + len(cited),
            "url": "https://docs.example.com/setup", "title": "Setup"}


# Before the key, after it, and a span that starts inside the key (it grows to the whole placeholder).
NOTES: List[Dict[str, Any]] = [
    url(TEXT, "Your key"), url(TEXT, "setup guide"),
    {**url(TEXT, "setup guide"), "start_index": TEXT.index(KEY) + 10},
    {"type": "file_citation", "file_id": "file_1", "filename": "faq.md", "index": TEXT.index(", see")},
    {"type": "file_path", "file_id": "file_2", "index": 7},  # a place in a list of files, not in the text
]


def cited(text: str, note: Any) -> str:
    return text[note.start_index:note.end_index]


def check(text: str, notes: List[Any]) -> None:
    assert text == CLEAN
    assert [cited(text, n) for n in notes[:3]] == ["Your key", "setup guide", f"{RED} is in the setup guide"]
    assert text[notes[3].index:].startswith(", see") and notes[4].index == 7


def client(up: FakeUpstream) -> openai.OpenAI:
    config = {"providers": {"orr": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "k"}},
              "models": {"gpt": {"targets": [{"provider": "orr", "model": "gpt-up"}]}}}
    gw = Gateway(config=config, executor=HttpExecutor(), plugins=[GuardrailsPlugin(**REDACT)])
    return openai.OpenAI(base_url="http://gateway/v1", api_key="client-key", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))


def item(text: str, notes: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": notes}]}


def final(text: str, notes: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "gpt-up",
            "output": [item(text, notes)], "usage": {"input_tokens": 3, "output_tokens": 9, "total_tokens": 12}}


def test_an_answers_citations_follow_the_redacted_text(upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply.json(final(TEXT, NOTES)))
    part = client(upstream).responses.create(model="gpt", input="where?").output[0].content[0]
    check(part.text, part.annotations)


def test_a_streams_citations_follow_the_redacted_text(upstream: FakeUpstream) -> None:
    """OpenAI sends an annotation after the text it cites: by then the guardrails sent that text, and know
    every replacement in it."""
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    cut = TEXT.index(KEY) + 20  # the key split across two deltas
    shell = {**final(TEXT, NOTES), "status": "in_progress", "output": [], "usage": None}
    upstream.enqueue(responses_sse([
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item("", []), "status": "in_progress"}},
        {"type": "response.content_part.added", **ids, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", **ids, "delta": TEXT[:cut]},
        {"type": "response.output_text.delta", **ids, "delta": TEXT[cut:]},
        *[{"type": "response.output_text.annotation.added", **ids, "annotation_index": i, "annotation": n}
          for i, n in enumerate(NOTES)],
        {"type": "response.output_text.done", **ids, "text": TEXT},
        {"type": "response.content_part.done", **ids, "part": item(TEXT, NOTES)["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": item(TEXT, NOTES)},
        {"type": "response.completed", "response": final(TEXT, NOTES)}]))
    events = list(client(upstream).responses.create(model="gpt", input="where?", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check(text, [e.annotation for e in events if e.type == "response.output_text.annotation.added"])
    done = next(e.response for e in events if e.type == "response.completed").output[0].content[0]
    check(done.text, done.annotations)


def test_the_history_sent_up_keeps_its_citations_on_the_same_words(upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply.json(final("Done.", [])))
    client(upstream).responses.create(model="gpt", input=[
        {"role": "user", "content": "where?"}, item(TEXT, NOTES), {"role": "user", "content": "thanks"}])
    sent = next(m for m in upstream.requests[-1].json["input"] if m.get("role") == "assistant")["content"][0]
    assert sent["text"] == CLEAN
    notes = sent["annotations"]
    assert [sent["text"][n["start_index"]:n["end_index"]] for n in notes[:3]] == [
        "Your key", "setup guide", f"{RED} is in the setup guide"]
    assert sent["text"][notes[3]["index"]:].startswith(", see") and notes[4] == NOTES[4]

