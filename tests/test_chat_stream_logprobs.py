"""A Chat client's stream from a Chat upstream carries the upstream's log probabilities, chunk by chunk,
and never the tokens of text a hook rewrote (routeplane/protocols/openai_chat/stream.py)."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextStart,
    TokenLogprobs,
)
from routeplane.protocols.openai_chat.request import decode_request
from routeplane.protocols.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder
from routeplane.protocols.sse import SSEEvent
from tests.support.gateway import GatewayProcess
from tests.support.upstream import Reply, openai_chunk
from tests.support.wires import ALL_WIRES, via_wires_config

USER = [{"role": "user", "content": "Say hello"}]
TARGET = RoutingTarget(provider="up", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")


def entry(token: str, logprob: float = -0.5) -> Dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]}


def scored_chunk(text: str, tokens: List[str], key: str = "content") -> Dict[str, Any]:
    chunk = openai_chunk({key: text})
    chunk["choices"][0]["logprobs"] = {"content": None, "refusal": None, key: [entry(t) for t in tokens]}
    return chunk


def encoded_chunks(parts: List[StreamPart]) -> List[Dict[str, Any]]:
    enc = ChatStreamEncoder(decode_request({"model": "m", "messages": USER, "stream": True, "logprobs": True}))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    lines = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ") and line != "data: [DONE]"]
    return [json.loads(line) for line in lines]


def scored(chunks: List[Dict[str, Any]]) -> List[Any]:
    """(text, tokens) of every chunk with text, in order."""
    out = []
    for c in chunks:
        choice = c["choices"][0]
        text = choice["delta"].get("content") or choice["delta"].get("refusal")
        if text:
            lp = choice["logprobs"]
            tokens = None if lp is None else [e["token"] for e in (lp["content"] or lp["refusal"])]
            out.append((text, tokens))
    return out


def test_chunks_keep_their_log_probabilities_through_decoder_and_encoder() -> None:
    dec = ChatStreamDecoder(TARGET)
    parts: List[StreamPart] = []
    for chunk in [openai_chunk({"role": "assistant", "content": ""}), scored_chunk("Hel", ["Hel"]),
                  scored_chunk("lo there", ["lo", " there"]), openai_chunk({}, "stop")]:
        parts += dec.feed(SSEEvent(data=json.dumps(chunk)))
    parts += dec.feed(SSEEvent(data="[DONE]"))
    assert scored(encoded_chunks(parts)) == [("Hel", ["Hel"]), ("lo there", ["lo", " there"])]


def test_a_refusal_keeps_its_log_probabilities_under_refusal() -> None:
    dec = ChatStreamDecoder(TARGET)
    parts = dec.feed(SSEEvent(data=json.dumps(scored_chunk("No.", ["No", "."], key="refusal"))))
    parts += dec.feed(SSEEvent(data="[DONE]"))
    chunks = encoded_chunks(parts)
    with_text = [c for c in chunks if c["choices"][0]["delta"].get("refusal")]
    assert with_text[0]["choices"][0]["logprobs"] == {"content": None, "refusal": [entry("No"), entry(".")]}


def parts_of(*pieces: Any) -> List[StreamPart]:
    out: List[StreamPart] = [ResponseStart("chatcmpl-1", "m", 1), TextStart(0)]
    for piece in pieces:
        out.append(TokenLogprobs(0, "openai_chat", tuple(entry(t) for t in piece[1]), "".join(piece[1]))
                   if isinstance(piece, tuple) else TextDelta(0, piece))
    return out + [TextEnd(0), Finish(FinishReason.STOP)]


def test_text_a_hook_split_gets_the_entries_with_the_chunk_that_completes_it() -> None:
    # A hook holding text back re-chunks it: "Hello" scored at once, written as "He" + "llo".
    chunks = encoded_chunks(parts_of(("x", ["Hel", "lo"]), "He", "llo", ("x", ["!"]), "!"))
    assert scored(chunks) == [("He", None), ("llo", ["Hel", "lo"]), ("!", ["!"])]


def test_a_rewritten_text_drops_its_tokens_and_every_later_one() -> None:
    # A redaction: the scored "sk-live-123" is written "[redacted]"; the secret's tokens never leave.
    chunks = encoded_chunks(parts_of(("x", ["Key", ": "]), "Key: ", ("x", ["sk-", "live-123"]), "[redacted]",
                                     ("x", [" ok"]), " ok"))
    assert scored(chunks) == [("Key: ", ["Key", ": "]), ("[redacted]", None), (" ok", None)]
    assert "sk-" not in json.dumps(chunks)


def test_text_no_entry_scored_is_sent_without_entries_and_keeps_the_rest_aligned() -> None:
    # A hook's own words before the upstream's scored text: the scored text still matches after them.
    chunks = encoded_chunks(parts_of(("x", ["Hi"]), "Hi"))
    assert scored(chunks) == [("Hi", ["Hi"])]
    other = [p if not isinstance(p, TokenLogprobs) else TokenLogprobs(0, "gemini", p.entries, p.text)
             for p in parts_of(("x", ["Hi"]), "Hi")]
    assert scored(encoded_chunks(other)) == [("Hi", None)]  # another wire's entries are not Chat's


# --- through the gateway, with the official SDK ---------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(fake) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5})).start()
    yield gw
    gw.stop()


def script(up) -> None:
    up.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}), scored_chunk("Hello", ["Hel", "lo"]),
                          scored_chunk(" world", [" world"]), openai_chunk({}, "stop")]))


@pytest.mark.e2e
def test_a_chat_stream_relays_the_upstreams_log_probabilities(oai, up) -> None:
    script(up)
    stream = oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True, logprobs=True,
                                         top_logprobs=1)
    got = [(c.choices[0].delta.content, [t.token for t in c.choices[0].logprobs.content])
           for c in stream if c.choices and c.choices[0].logprobs is not None]
    assert got == [("Hello", ["Hel", "lo"]), (" world", [" world"])]
    sent = up.requests[-1].json
    assert sent["stream"] is True and sent["logprobs"] is True and sent["top_logprobs"] == 1


@pytest.mark.e2e
def test_the_sdks_stream_helper_accumulates_them(oai, up) -> None:
    script(up)
    with oai.chat.completions.stream(model="via-openai_chat", messages=USER, logprobs=True) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.message.content == "Hello world"
    assert [t.token for t in choice.logprobs.content] == ["Hel", "lo", " world"]
    assert choice.logprobs.content[0].top_logprobs[0].logprob == -0.5


@pytest.mark.e2e
def test_a_wrong_type_is_a_400_before_any_upstream_call(oai, up) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="via-openai_chat", messages=USER, stream=True,
                                    extra_body={"logprobs": "yes"})
    assert info.value.body["param"] == "logprobs"
    assert not up.requests
