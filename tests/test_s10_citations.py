"""URL citations between the OpenAI wires, streamed or not, read by the official SDK.

Chat nests a citation's fields (`{"type": "url_citation", "url_citation": {start_index, end_index, url,
title}}`, offsets into the message's whole `content`) and streams them as one late chunk of
`delta.annotations` (openai-java#297 shows OpenAI's); Responses lays the same fields flat beside the type
(offsets into the `output_text` part) and streams `response.output_text.annotation.added`. The gateway
used to drop a Chat stream's citations, and every citation crossing between the two wires. A real local
fake upstream speaks each wire; the gateway runs in process.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import httpx2
import openai
import pytest
from routeplane_guardrails import GuardrailsPlugin

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion
from tests.support.wires import responses_sse

pytestmark = pytest.mark.e2e

TEXT = "Paris hosts the expo in May and the marathon in April."
URL_A, URL_B = "https://news.example/expo", "https://news.example/run"
KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
RED = "[REDACTED:api_key]"
SECRET = f"Your key {KEY} is in the setup guide, see the FAQ."
USER = [{"role": "user", "content": "news?"}]


def flat(text: str, cited: str, url: str = URL_A, title: str = "Expo") -> Dict[str, Any]:
    """A Responses url_citation of `cited` in `text`."""
    at = text.index(cited)
    return {"type": "url_citation", "start_index": at, "end_index": at + len(cited), "url": url, "title": title}


def nested(text: str, cited: str, url: str = URL_A, title: str = "Expo") -> Dict[str, Any]:
    """The same citation in Chat's shape."""
    note = flat(text, cited, url, title)
    return {"type": "url_citation", "url_citation": {k: v for k, v in note.items() if k != "type"}}


def client(up: FakeUpstream, guarded: bool = False) -> openai.OpenAI:
    config = {"providers": {"oc": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": "k"},
                            "or": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "k"}},
              "models": {"chat-up": {"targets": [{"provider": "oc", "model": "gpt-4o-search-preview"}]},
                         "resp-up": {"targets": [{"provider": "or", "model": "gpt-5"}]}}}
    plugins = [GuardrailsPlugin(downgoing={"api_keys": "redact"})] if guarded else []
    gw = Gateway(config=config, executor=HttpExecutor(), plugins=plugins)
    return openai.OpenAI(base_url="http://gateway/v1", api_key="client-key", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gw.flask)))


# --- scripted upstreams ------------------------------------------------------------------------------


def chat_answer(text: str, notes: List[Dict[str, Any]]) -> Reply:
    body = openai_completion(text, model="gpt-4o-search-preview")
    body["choices"][0]["message"]["annotations"] = notes
    return Reply.json(body)


def chat_stream(text: str, notes: List[Dict[str, Any]]) -> Reply:
    """As OpenAI streams a search model's answer: the text, then the citations in a chunk without content."""
    cut = len(text) // 2
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": text[:cut]}),
                      openai_chunk({"content": text[cut:]}), openai_chunk({"annotations": notes}),
                      openai_chunk({}, "stop")])


def message(i: int, text: str, notes: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"type": "message", "id": f"msg_{i}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": notes, "logprobs": []}]}


USAGE = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 7,
         "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19}


def responses_body(messages: Sequence[Tuple[str, List[Dict[str, Any]]]]) -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed",
            "model": "gpt-5", "output": [message(i, t, n) for i, (t, n) in enumerate(messages)], "usage": USAGE}


def responses_stream(messages: Sequence[Tuple[str, List[Dict[str, Any]]]]) -> Reply:
    """Each message's text in two deltas, each citation announced after the text it cites (as OpenAI does)."""
    final = responses_body(messages)
    shell = {**final, "status": "in_progress", "output": [], "usage": None}
    events: List[Dict[str, Any]] = [{"type": "response.created", "response": shell},
                                    {"type": "response.in_progress", "response": shell}]
    for i, (text, notes) in enumerate(messages):
        item = final["output"][i]
        ids = {"item_id": item["id"], "output_index": i, "content_index": 0}
        events += [{"type": "response.output_item.added", "output_index": i,
                    "item": {**item, "status": "in_progress", "content": []}},
                   {"type": "response.content_part.added", **ids,
                    "part": {"type": "output_text", "text": "", "annotations": []}}]
        cut = len(text) // 2
        for piece in (text[:cut], text[cut:]):
            events.append({"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []})
        events += [{"type": "response.output_text.annotation.added", **ids, "annotation_index": k, "annotation": n}
                   for k, n in enumerate(notes)]
        events += [{"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
                   {"type": "response.content_part.done", **ids, "part": item["content"][0]},
                   {"type": "response.output_item.done", "output_index": i, "item": item}]
    events.append({"type": "response.completed", "response": final})
    return responses_sse(events)


# --- what the SDK read ----------------------------------------------------------------------------


def chat_cited(text: str, notes: Any) -> List[Tuple[str, str, Optional[str]]]:
    """(cited words, url, title) of each Chat citation, as SDK objects or plain dicts."""
    out = []
    for n in notes:
        c = n["url_citation"] if isinstance(n, dict) else n.url_citation
        get = c.get if isinstance(c, dict) else lambda k, c=c: getattr(c, k)
        out.append((text[get("start_index"):get("end_index")], get("url"), get("title")))
    return out


def responses_cited(text: str, notes: Any) -> List[Tuple[str, str, Optional[str]]]:
    return [(text[n.start_index:n.end_index], n.url, n.title) for n in notes]


def chat_stream_read(oai: openai.OpenAI, model: str) -> Tuple[str, List[Any], List[Any]]:
    """(content, every chunk's delta.annotations entries, the chunks that carried some)."""
    chunks = [c for c in oai.chat.completions.create(model=model, messages=USER, stream=True) if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    carrying = [c for c in chunks if getattr(c.choices[0].delta, "annotations", None)]
    notes = [n for c in carrying for n in c.choices[0].delta.annotations]
    return text, notes, carrying


CHAT_NOTES = [nested(TEXT, "expo"), nested(TEXT, "marathon", URL_B, "Run")]
CITED = [("expo", URL_A, "Expo"), ("marathon", URL_B, "Run")]


# --- Chat → Chat, streamed -------------------------------------------------------------------------


def test_a_chat_streams_citations_reach_a_chat_client(upstream: FakeUpstream) -> None:
    """`delta.annotations` (a late chunk without content) was dropped by the Chat stream decoder."""
    upstream.enqueue(chat_stream(TEXT, CHAT_NOTES))
    text, notes, carrying = chat_stream_read(client(upstream), "chat-up")
    assert text == TEXT
    assert notes == CHAT_NOTES  # verbatim, Chat's own shape
    (chunk,) = carrying  # one chunk, as OpenAI's: the SDK's accumulator cannot merge a second list
    assert chunk.choices[0].finish_reason is None


def test_the_sdks_stream_helper_accumulates_a_chat_streams_citations(upstream: FakeUpstream) -> None:
    upstream.enqueue(chat_stream(TEXT, CHAT_NOTES))
    with client(upstream).chat.completions.stream(model="chat-up", messages=USER) as stream:
        msg = stream.get_final_completion().choices[0].message
    assert msg.content == TEXT
    assert chat_cited(msg.content, msg.annotations) == CITED


def test_a_chat_streams_citations_follow_a_redaction(upstream: FakeUpstream) -> None:
    """Streamed, the guardrails shift the relayed citation as they do a non-streamed answer's."""
    upstream.enqueue(chat_stream(SECRET, [nested(SECRET, "setup guide"), nested(SECRET, "FAQ")]))
    text, notes, _ = chat_stream_read(client(upstream, guarded=True), "chat-up")
    assert text == SECRET.replace(KEY, RED)
    assert [c[0] for c in chat_cited(text, notes)] == ["setup guide", "FAQ"]


# --- Chat upstream → Responses client ---------------------------------------------------------------


def test_a_chat_answers_citations_reach_a_responses_client(upstream: FakeUpstream) -> None:
    upstream.enqueue(chat_answer(TEXT, CHAT_NOTES))
    resp = client(upstream).responses.create(model="chat-up", input="news?")
    (part,) = resp.output[0].content
    assert part.text == TEXT and resp.output_text == TEXT
    assert [n.type for n in part.annotations] == ["url_citation", "url_citation"]
    assert responses_cited(part.text, part.annotations) == CITED


def test_a_chat_streams_citations_reach_a_responses_client(upstream: FakeUpstream) -> None:
    upstream.enqueue(chat_stream(TEXT, CHAT_NOTES))
    events = list(client(upstream).responses.create(model="chat-up", input="news?", stream=True))
    added = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert [e.annotation_index for e in added] == [0, 1]
    assert [e.annotation.type for e in added] == ["url_citation"] * 2
    assert responses_cited(TEXT, [e.annotation for e in added]) == CITED
    done = events[-1]
    assert done.type == "response.completed"
    (part,) = done.response.output[0].content
    assert responses_cited(part.text, part.annotations) == CITED


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_upstreams_citations_for_a_responses_client_follow_a_redaction(upstream: FakeUpstream,
                                                                               stream: bool) -> None:
    """Translated at the client's encoder, after the hooks: the guardrails still shift (and scan) them."""
    notes = [nested(SECRET, "setup guide", title=f"Guide for {KEY}"), nested(SECRET, "FAQ")]
    upstream.enqueue(chat_stream(SECRET, notes) if stream else chat_answer(SECRET, notes))
    oai = client(upstream, guarded=True)
    if stream:
        resp = [e for e in oai.responses.create(model="chat-up", input="news?", stream=True)][-1].response
    else:
        resp = oai.responses.create(model="chat-up", input="news?")
    (part,) = resp.output[0].content
    assert part.text == SECRET.replace(KEY, RED)
    assert responses_cited(part.text, part.annotations) == [
        ("setup guide", URL_A, f"Guide for {RED}"), ("FAQ", URL_A, "Expo")]


# --- Responses upstream → Chat client --------------------------------------------------------------

INTRO = "Two things this week. "
TWO = [(INTRO, []), (TEXT, [flat(TEXT, "expo"), flat(TEXT, "marathon", URL_B, "Run")])]


def test_a_responses_answers_citations_reach_a_chat_client(upstream: FakeUpstream) -> None:
    """Nested into Chat's shape; a later message's citations move to where its text starts in `content`."""
    upstream.enqueue(Reply.json(responses_body(TWO)))
    msg = client(upstream).chat.completions.create(model="resp-up", messages=USER).choices[0].message
    assert msg.content == INTRO + TEXT
    assert [n.type for n in msg.annotations] == ["url_citation", "url_citation"]
    assert chat_cited(msg.content, msg.annotations) == CITED


def test_a_responses_streams_citations_reach_a_chat_client(upstream: FakeUpstream) -> None:
    upstream.enqueue(responses_stream(TWO))
    text, notes, carrying = chat_stream_read(client(upstream), "resp-up")
    assert text == INTRO + TEXT
    assert len(carrying) == 1
    assert chat_cited(text, notes) == CITED


def test_a_responses_streams_citations_reach_the_chat_sdks_stream_helper(upstream: FakeUpstream) -> None:
    upstream.enqueue(responses_stream(TWO))
    with client(upstream).chat.completions.stream(model="resp-up", messages=USER) as stream:
        msg = stream.get_final_completion().choices[0].message
    assert chat_cited(msg.content, msg.annotations) == CITED


@pytest.mark.parametrize("stream", [False, True])
def test_a_responses_upstreams_citations_for_a_chat_client_follow_a_redaction(upstream: FakeUpstream,
                                                                               stream: bool) -> None:
    answer = [(INTRO, []), (SECRET, [flat(SECRET, "setup guide", title=f"Guide for {KEY}"), flat(SECRET, "FAQ")])]
    upstream.enqueue(responses_stream(answer) if stream else Reply.json(responses_body(answer)))
    oai = client(upstream, guarded=True)
    if stream:
        text, notes, _ = chat_stream_read(oai, "resp-up")
    else:
        msg = oai.chat.completions.create(model="resp-up", messages=USER).choices[0].message
        text, notes = msg.content, msg.annotations
    assert text == INTRO + SECRET.replace(KEY, RED)
    assert chat_cited(text, notes) == [("setup guide", URL_A, f"Guide for {RED}"), ("FAQ", URL_A, "Expo")]


def test_a_responses_file_citation_has_no_chat_form(upstream: FakeUpstream) -> None:
    """Only URL citations translate: a file citation indexes a file, not a URL, and Chat has no type for it."""
    file_note = {"type": "file_citation", "file_id": "file_1", "filename": "a.pdf", "index": 5}
    upstream.enqueue(Reply.json(responses_body([(TEXT, [file_note, flat(TEXT, "expo")])])))
    msg = client(upstream).chat.completions.create(model="resp-up", messages=USER).choices[0].message
    assert chat_cited(msg.content, msg.annotations) == [("expo", URL_A, "Expo")]
