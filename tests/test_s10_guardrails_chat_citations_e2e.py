"""A Chat answer's URL citations keep pointing at the same words after a redaction.

A search model's `message.annotations[].url_citation` `start_index`/`end_index` are character offsets
into `content` (openai-python `AnnotationURLCitation`); the gateway used to drop them (with the logprobs)
once the guardrails rewrote the text. They now move as session 9's Responses citations do (an offset
inside a redacted span goes to the placeholder's edge). A real local fake upstream speaks the Chat wire;
the official SDK reads the answer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import httpx2
import openai
import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream, Reply, openai_completion

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"
TEXT = f"Your key {KEY} is in the setup guide, see the FAQ."
CLEAN = f"Your key {RED} is in the setup guide, see the FAQ."


def url(start: int, end: int) -> Dict[str, Any]:
    return {"type": "url_citation", "url_citation": {"start_index": start, "end_index": end,
                                                     "url": "https://docs.example.com/setup", "title": "Setup"}}


def span(text: str, cited: str) -> Dict[str, Any]:
    at = text.index(cited)
    return url(at, at + len(cited))


# Before the key, after it, one that starts inside the key and one that ends inside it (each grows to the
# whole placeholder, never splitting it), and one that is the key itself.
NOTES: List[Dict[str, Any]] = [
    span(TEXT, "Your key"), span(TEXT, "setup guide"),
    url(TEXT.index(KEY) + 10, TEXT.index(" see")), url(TEXT.index("key"), TEXT.index(KEY) + 5), span(TEXT, KEY)]
CITED = ["Your key", "setup guide", f"{RED} is in the setup guide,", f"key {RED}", RED]


def client(up: FakeUpstream, plugin: Optional[GuardrailsPlugin] = None) -> openai.OpenAI:
    config = {"providers": {"oc": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": "k"}},
              "models": {"gpt": {"targets": [{"provider": "oc", "model": "gpt-4o-search-preview"}]}}}
    gw = Gateway(config=config, executor=HttpExecutor(),
                 plugins=[plugin or GuardrailsPlugin(downgoing={"api_keys": "redact"})])
    return openai.OpenAI(base_url="http://gateway/v1", api_key="client-key", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))


def answer(content: Any, notes: List[Dict[str, Any]], logprobs: Any = None) -> Dict[str, Any]:
    body = openai_completion(None, model="gpt-4o-search-preview")
    body["choices"][0]["message"].update(content=content, annotations=notes)
    body["choices"][0]["logprobs"] = logprobs
    return body


def ask(up: FakeUpstream) -> Any:
    return client(up).chat.completions.create(model="gpt", messages=[{"role": "user", "content": "where?"}])


def cited(text: str, notes: Any) -> List[str]:
    return [text[n.url_citation.start_index:n.url_citation.end_index] for n in notes]


def test_a_chat_answers_citations_follow_the_redacted_text(upstream: FakeUpstream) -> None:
    upstream.enqueue(Reply.json(answer(TEXT, NOTES)))
    msg = ask(upstream).choices[0].message
    assert msg.content == CLEAN
    assert cited(msg.content, msg.annotations) == CITED
    assert {(n.url_citation.url, n.url_citation.title) for n in msg.annotations} == {
        ("https://docs.example.com/setup", "Setup")}


def test_citations_index_the_content_its_parts_make(upstream: FakeUpstream) -> None:
    """A compatible server's content as a list of text parts: the citations index the joined content, so a
    redaction in the first part moves a citation of the second."""
    first, second = f"Your key {KEY} is in the ", "setup guide, see the FAQ."
    upstream.enqueue(Reply.json(answer([{"type": "text", "text": first}, {"type": "text", "text": second}],
                                       [span(TEXT, "setup guide"), span(TEXT, "FAQ")])))
    msg = ask(upstream).choices[0].message
    assert msg.content == CLEAN
    assert cited(msg.content, msg.annotations) == ["setup guide", "FAQ"]


def test_the_logprobs_that_score_the_secret_still_leave_nothing_of_it(upstream: FakeUpstream) -> None:
    """The logprobs are the original tokens: kept they would show the key, so they stay dropped while the
    citations stay."""
    tokens = [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []}
              for t in ("Your key ", KEY, TEXT[TEXT.index(" is"):])]
    upstream.enqueue(Reply.json(answer(TEXT, NOTES[:2], logprobs={"content": tokens, "refusal": None})))
    raw = client(upstream).chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "where?"}])
    assert KEY not in raw.text
    choice = raw.parse().choices[0]
    assert choice.logprobs is None
    assert cited(choice.message.content, choice.message.annotations) == CITED[:2]


def test_an_answer_without_a_redaction_keeps_its_citations_and_logprobs(upstream: FakeUpstream) -> None:
    text = TEXT.replace(KEY, "in your vault")
    tokens = [{"token": text, "logprob": -0.1, "bytes": None, "top_logprobs": []}]
    upstream.enqueue(Reply.json(answer(text, [span(text, "setup guide")], logprobs={"content": tokens})))
    choice = ask(upstream).choices[0]
    assert choice.message.content == text and choice.logprobs.content[0].token == text
    assert cited(text, choice.message.annotations) == ["setup guide"]


def test_a_kept_citation_loses_the_secret_its_text_lost(upstream: FakeUpstream) -> None:
    """Kept beside the redacted text, a citation's title must not show what the text lost, even where the
    detector's context is missing (`Falcon` without `Project`)."""
    plugin = GuardrailsPlugin(custom_patterns=[{"name": "codename", "regex": r"(?i)project\s+(?P<secret>falcon)"}],
                              custom_downgoing={"codename": "redact"})
    text = "Project Falcon launches in May."
    note = span(text, "launches in May")
    note["url_citation"]["title"] = "Falcon launches in May"
    upstream.enqueue(Reply.json(answer(text, [note])))
    msg = client(upstream, plugin).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "when?"}]).choices[0].message
    assert msg.content == "Project [REDACTED:codename] launches in May."
    (kept,) = msg.annotations
    assert kept.url_citation.title == "[REDACTED:codename] launches in May"
    assert cited(msg.content, msg.annotations) == ["launches in May"]
