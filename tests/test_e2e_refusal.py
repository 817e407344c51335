"""E2E under gunicorn: a model's refusal reaches every client, apart from the content where the wire has a place for it.

OpenAI's SDKs rely on that place: `chat.completions.parse()` and `responses.parse()` try to parse
`content` as the requested JSON and leave a refusal in `message.refusal` / a `refusal` content part.
Before, a refusal became ordinary text (parse() raised ValidationError) and a streamed Chat
`delta.refusal` was dropped altogether.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import anthropic
import pytest
from google import genai
from google.genai import types as genai_types
from openai import OpenAI
from pydantic import BaseModel

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk
from tests.support.wires import responses_sse

REFUSAL = "I can't help with that."
USAGE = {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}


class Answer(BaseModel):
    city: str


def _chat(stream: bool) -> Reply:
    if not stream:
        msg = {"role": "assistant", "content": None, "refusal": REFUSAL}
        return Reply.json({"id": "chatcmpl-up", "object": "chat.completion", "created": 1763800000, "model": "up",
                           "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}], "usage": USAGE})
    pieces = ["I can't ", "help with ", "that."]
    return Reply.sse([openai_chunk({"role": "assistant", "content": None, "refusal": ""})]
                     + [openai_chunk({"refusal": p}) for p in pieces]
                     + [openai_chunk({}, "stop"), openai_chunk(None, usage=USAGE)])


def _responses(stream: bool) -> Reply:
    usage = {"input_tokens": 7, "output_tokens": 6, "total_tokens": 13}
    part = {"type": "refusal", "refusal": REFUSAL}
    item = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed", "content": [part]}
    done = {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
            "output": [item], "usage": usage}
    if not stream:
        return Reply.json(done)
    added = dict(item, status="in_progress", content=[])
    return responses_sse([
        {"type": "response.created", "response": dict(done, status="in_progress", output=[], usage=None)},
        {"type": "response.output_item.added", "output_index": 0, "item": added},
        {"type": "response.content_part.added", "item_id": "msg_up", "output_index": 0, "content_index": 0,
         "part": {"type": "refusal", "refusal": ""}},
        {"type": "response.refusal.delta", "item_id": "msg_up", "output_index": 0, "content_index": 0,
         "delta": "I can't help "},
        {"type": "response.refusal.delta", "item_id": "msg_up", "output_index": 0, "content_index": 0,
         "delta": "with that."},
        {"type": "response.refusal.done", "item_id": "msg_up", "output_index": 0, "content_index": 0,
         "refusal": REFUSAL},
        {"type": "response.content_part.done", "item_id": "msg_up", "output_index": 0, "content_index": 0,
         "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ])


def refusing_upstream(req: RecordedRequest) -> Reply:
    stream = bool(req.json.get("stream"))
    if req.path.startswith("/v1/chat/completions"):
        return _chat(stream)
    return _responses(stream)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    up = FakeUpstream().start()
    up.default = refusing_upstream
    config = {
        "providers": {"chat": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": "sk-up-chat"},
                      "resp": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "sk-up-resp"}},
        "models": {"via-chat": {"targets": [{"provider": "chat", "model": "up"}]},
                   "via-resp": {"targets": [{"provider": "resp", "model": "up"}]}},
    }
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()
    up.stop()


@pytest.fixture(scope="module")
def oai(gateway: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0)


UPSTREAMS = ["via-chat", "via-resp"]
HI = [{"role": "user", "content": "Where is the treasure?"}]


@pytest.mark.parametrize("model", UPSTREAMS)
def test_chat_parse_gets_the_refusal_not_a_validation_error(oai: OpenAI, model: str) -> None:
    out = oai.chat.completions.parse(model=model, messages=HI, response_format=Answer)
    msg = out.choices[0].message
    assert msg.refusal == REFUSAL and msg.parsed is None and msg.content is None


@pytest.mark.parametrize("model", UPSTREAMS)
def test_chat_stream_carries_the_refusal_deltas(oai: OpenAI, model: str) -> None:
    chunks = list(oai.chat.completions.create(model=model, messages=HI, stream=True))
    refusal = "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert refusal == REFUSAL and content == ""
    with oai.chat.completions.stream(model=model, messages=HI, response_format=Answer) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.refusal == REFUSAL and final.choices[0].message.parsed is None


@pytest.mark.parametrize("model", UPSTREAMS)
def test_responses_parse_gets_a_refusal_part(oai: OpenAI, model: str) -> None:
    out = oai.responses.parse(model=model, input="Where is the treasure?", text_format=Answer)
    parts = out.output[0].content
    assert [p.type for p in parts] == ["refusal"] and parts[0].refusal == REFUSAL
    assert out.output_parsed is None


@pytest.mark.parametrize("model", UPSTREAMS)
def test_responses_stream_has_refusal_events(oai: OpenAI, model: str) -> None:
    events = list(oai.responses.create(model=model, input="Where is the treasure?", stream=True))
    kinds = [e.type for e in events]
    assert "response.refusal.delta" in kinds and "response.output_text.delta" not in kinds
    assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == REFUSAL
    done = [e for e in events if e.type == "response.refusal.done"]
    assert len(done) == 1 and done[0].refusal == REFUSAL
    final = events[-1].response
    assert final.output[0].content[0].type == "refusal" and final.output[0].content[0].refusal == REFUSAL


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", UPSTREAMS)
def test_anthropic_and_gemini_clients_read_the_refusal_as_text(gateway: GatewayProcess, model: str,
                                                               stream: bool) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0) as client:
        if stream:
            with client.messages.stream(model=model, max_tokens=64, messages=HI) as s:
                msg = s.get_final_message()
        else:
            msg = client.messages.create(model=model, max_tokens=64, messages=HI)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == REFUSAL
    g = genai.Client(api_key="client-key", http_options=genai_types.HttpOptions(base_url=gateway.url))
    if stream:
        text = "".join(c.text or "" for c in g.models.generate_content_stream(model=model, contents="hi"))
    else:
        text = g.models.generate_content(model=model, contents="hi").text
    assert text == REFUSAL


def test_a_refusal_keeps_its_usage(oai: OpenAI) -> None:
    out = oai.chat.completions.create(model="via-chat", messages=HI)
    assert out.usage is not None and out.usage.completion_tokens == 6
    body: Dict[str, Any] = json.loads(out.model_dump_json())
    assert body["choices"][0]["message"]["refusal"] == REFUSAL
