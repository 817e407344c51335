"""Log probabilities on the same wire for OpenAI Responses and Gemini: a Responses client of a Responses upstream
gets `output_text.logprobs` (plain) and the `logprobs` of its `response.output_text.delta` events (streamed); a
Gemini client of a Gemini upstream gets each chunk's `logprobsResult` and `avgLogprobs`. Text a hook rewrote never
shows the upstream's tokens (routeplane/protocols/scores.py); bound for another wire the request is a 400."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from google import genai
from google.genai import types
from openai import OpenAI

from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.types import (
    Finish,
    FinishReason,
    Generation,
    ResponseStart,
    StreamPart,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    TokenLogprobs,
    Usage,
)
from routeplane.protocols import gemini as gemini_wire
from routeplane.protocols import openai_responses as resp_wire
from routeplane.protocols.sse import iter_events
from routeplane.protocols.wire_only import lost_field
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import ALL_WIRES, gemini_sse, responses_sse, via_wires_config

RESP = "openai_responses"
R_TARGET = RoutingTarget("up", "gpt-x", RESP, base_url="http://x/v1", api_key="sk-test")
G_TARGET = RoutingTarget("g", "gemini-x", "gemini", base_url="http://up", api_key="k")
EMAIL = "jane.doe@example.com"


# --- OpenAI Responses -------------------------------------------------------------------------------------


def rentry(token: str, logprob: float = -0.25) -> Dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]}


R_USAGE = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
           "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 8}


def r_message(tokens: List[str], msg_id: str = "msg_1") -> Dict[str, Any]:
    return {"id": msg_id, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "".join(tokens), "annotations": [],
                         "logprobs": [rentry(t) for t in tokens]}]}


def r_final(output: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"id": "resp_up", "object": "response", "created_at": 1763800000, "status": "completed", "model": "up",
            "output": output, "usage": R_USAGE}


def r_events(deltas: List[List[str]]) -> List[Dict[str, Any]]:
    """A message streamed as OpenAI does: one delta event per list of tokens, each with its logprobs."""
    tokens = [t for d in deltas for t in d]
    message = r_message(tokens)
    shell = {**r_final([]), "status": "in_progress", "usage": None}
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: List[Dict[str, Any]] = [
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": {**message, "status": "in_progress",
                                                                           "content": []}},
        {"type": "response.content_part.added", **ids,
         "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}]
    events += [{"type": "response.output_text.delta", **ids, "delta": "".join(d), "logprobs": [rentry(t) for t in d]}
               for d in deltas]
    events += [{"type": "response.output_text.done", **ids, "text": "".join(tokens),
                "logprobs": [rentry(t) for t in tokens]},
               {"type": "response.content_part.done", **ids, "part": message["content"][0]},
               {"type": "response.output_item.done", "output_index": 0, "item": message},
               {"type": "response.completed", "response": r_final([message])}]
    return events


def r_prompt(**body: Any) -> Any:
    return resp_wire.CLIENT.decode_request({"model": "m", "input": "hi", "top_logprobs": 1,
                                            "include": ["message.output_text.logprobs"], **body})


def r_decode_stream(events: List[Dict[str, Any]]) -> List[StreamPart]:
    dec = resp_wire.PROVIDER.stream_decoder(R_TARGET)
    out: List[StreamPart] = []
    for ev in iter_events(responses_sse(events).chunks or []):
        out.extend(dec.feed(ev))
    return out + dec.finish()


def r_encode_stream(parts: List[StreamPart]) -> List[Dict[str, Any]]:
    enc = resp_wire.CLIENT.stream_encoder(r_prompt(stream=True))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(ev.data) for ev in iter_events([raw])]


def delta_tokens(events: List[Dict[str, Any]]) -> List[Tuple[str, List[str]]]:
    return [(e["delta"], [x["token"] for x in e["logprobs"]]) for e in events
            if e["type"] == "response.output_text.delta"]


def test_responses_request_asking_for_logprobs_is_kept_for_its_wire_and_refused_elsewhere() -> None:
    prompt = r_prompt()
    body = resp_wire.PROVIDER.encode_request(prompt, R_TARGET, stream=False)
    assert body["include"] == ["message.output_text.logprobs"] and body["top_logprobs"] == 1
    for wire in ("openai_chat", "anthropic_messages", "gemini"):
        lost = lost_field(prompt, wire)
        assert lost is not None and lost[0] == "include", (wire, lost)
    assert lost_field(prompt, RESP) is None
    assert lost_field(r_prompt(include=["reasoning.encrypted_content"]), "openai_chat") is None


def test_responses_answer_keeps_each_output_texts_logprobs_while_its_text_is_unchanged() -> None:
    second = r_message([" Bye", "."], "msg_2")
    gen = resp_wire.PROVIDER.decode_response(r_final([r_message(["Hel", "lo"]), second]), R_TARGET)
    out = resp_wire.CLIENT.encode_response(gen, r_prompt())["output"]
    texts = [c for o in out for c in o["content"]]
    assert [[x["token"] for x in c["logprobs"]] for c in texts] == [["Hel", "lo"], [" Bye", "."]]
    # A hook rewrote the first text: its tokens are gone, the untouched second keeps its own.
    rewritten = Generation(gen.id, gen.model, (TextPart("[redacted]"),) + gen.parts[1:], gen.finish_reason,
                           gen.usage, extras=gen.extras, extras_protocol=gen.extras_protocol)
    out = resp_wire.CLIENT.encode_response(rewritten, r_prompt())["output"]
    assert [c["logprobs"] for o in out for c in o["content"]] == [[], [rentry(" Bye"), rentry(".")]]
    assert "Hel" not in json.dumps(out)


def test_responses_stream_relays_delta_logprobs_and_the_done_events_hold_them_all() -> None:
    parts = r_decode_stream(r_events([["Hel", "lo"], [" world"]]))
    assert [p for p in parts if isinstance(p, TokenLogprobs)] == [
        TokenLogprobs(0, RESP, (rentry("Hel"), rentry("lo")), "Hello"), TokenLogprobs(0, RESP, (rentry(" world"),),
                                                                                   " world")]
    events = r_encode_stream(parts)
    assert delta_tokens(events) == [("Hello", ["Hel", "lo"]), (" world", [" world"])]
    every = [rentry("Hel"), rentry("lo"), rentry(" world")]
    assert [e["logprobs"] for e in events if e["type"] == "response.output_text.done"] == [every]
    assert [e["part"]["logprobs"] for e in events if e["type"] == "response.content_part.done"] == [every]
    assert [e["item"]["content"][0]["logprobs"] for e in events if e["type"] == "response.output_item.done"] == [every]
    assert events[-1]["response"]["output"][0]["content"][0]["logprobs"] == every


def r_parts(*pieces: Any) -> List[StreamPart]:
    out: List[StreamPart] = [ResponseStart("resp_1", "m", 1), TextStart(0)]
    for piece in pieces:
        out.append(TokenLogprobs(0, RESP, tuple(rentry(t) for t in piece), "".join(piece))
                   if isinstance(piece, list) else TextDelta(0, piece))
    return out + [TextEnd(0), Finish(FinishReason.STOP)]


def test_responses_stream_text_a_hook_rewrote_drops_its_tokens_and_every_later_one() -> None:
    events = r_encode_stream(r_parts(["Key", ": "], "Key: ", ["sk-", "live-1"], "[redacted]", [" ok"], " ok"))
    assert delta_tokens(events) == [("Key: ", ["Key", ": "]), ("[redacted]", []), (" ok", [])]
    assert "sk-" not in json.dumps(events)
    assert events[-1]["response"]["output"][0]["content"][0]["logprobs"] == [rentry("Key"), rentry(": ")]
    other = [TokenLogprobs(0, "openai_chat", p.entries, p.text) if isinstance(p, TokenLogprobs) else p
             for p in r_parts(["Hi"], "Hi")]
    assert delta_tokens(r_encode_stream(other)) == [("Hi", [])]  # another wire's entries are not this wire's


def test_responses_stream_text_a_hook_split_gets_the_entries_with_the_delta_that_completes_it() -> None:
    events = r_encode_stream(r_parts(["Hel", "lo"], "He", "llo"))
    assert delta_tokens(events) == [("He", []), ("llo", ["Hel", "lo"])]


# --- Gemini ---------------------------------------------------------------------------------------------


G_USAGE = {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7}


def lp(tokens: List[str], value: float = -0.5) -> Dict[str, Any]:
    return {"topCandidates": [{"candidates": [{"token": t, "logProbability": value}]} for t in tokens],
            "chosenCandidates": [{"token": t, "logProbability": value} for t in tokens],
            "logProbabilitySum": value * len(tokens)}


def g_chunk(parts: List[Dict[str, Any]], tokens: Optional[List[str]] = None,
            finish: Optional[str] = None) -> Dict[str, Any]:
    cand: Dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if tokens is not None:
        cand["logprobsResult"] = lp(tokens)
        cand["avgLogprobs"] = -0.5
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "usageMetadata": G_USAGE, "modelVersion": "up-001", "responseId": "r1"}


G_CHUNKS = [g_chunk([{"text": "Hello"}], ["Hel", "lo"]), g_chunk([{"text": " world"}], [" world"], "STOP")]


def g_prompt(stream: bool) -> Any:
    return gemini_wire.CLIENT.for_path("m", stream).decode_request(
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
         "generationConfig": {"responseLogprobs": True, "logprobs": 1}})


def g_decode_stream(chunks: List[Dict[str, Any]]) -> List[StreamPart]:
    dec = gemini_wire.PROVIDER.stream_decoder(G_TARGET)
    out: List[StreamPart] = []
    for ev in iter_events([b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)]):
        out.extend(dec.feed(ev))
    return out + dec.finish()


def g_encode_stream(parts: List[StreamPart]) -> List[Dict[str, Any]]:
    enc = gemini_wire.CLIENT.for_path("m", True).stream_encoder(g_prompt(True))
    raw = b"".join(enc.encode(p) for p in parts) + enc.close()
    return [json.loads(line[6:]) for line in raw.split(b"\r\n") if line.startswith(b"data: ")]


def g_scored(frames: List[Dict[str, Any]]) -> List[Tuple[str, Optional[List[str]], Any]]:
    out = []
    for f in frames:
        cand = f["candidates"][0]
        text = "".join(p.get("text", "") for p in cand["content"]["parts"])
        result = cand.get("logprobsResult")
        out.append((text, None if result is None else [c["token"] for c in result["chosenCandidates"]],
                    cand.get("avgLogprobs")))
    return out


def test_gemini_stream_request_with_logprobs_is_accepted_and_refused_for_another_wire() -> None:
    prompt = g_prompt(True)
    sent = gemini_wire.PROVIDER.encode_request(prompt, G_TARGET, stream=True)
    assert sent["generationConfig"]["responseLogprobs"] is True and sent["generationConfig"]["logprobs"] == 1
    lost = lost_field(prompt, "openai_chat")
    assert lost is not None and lost[0] == "generationConfig.responseLogprobs"


def test_gemini_stream_relays_each_chunks_logprobs_result() -> None:
    parts = g_decode_stream(G_CHUNKS)
    scores = [p for p in parts if isinstance(p, TokenLogprobs)]
    assert [(s.protocol, s.text) for s in scores] == [("gemini", "Hello"), ("gemini", " world")]
    frames = g_encode_stream(parts)
    assert g_scored(frames) == [("Hello", ["Hel", "lo"], -0.5), (" world", [" world"], -0.5)]
    assert frames[0]["candidates"][0]["logprobsResult"] == lp(["Hel", "lo"])
    assert frames[-1]["candidates"][0]["finishReason"] == "STOP"


def g_parts(*pieces: Any) -> List[StreamPart]:
    out: List[StreamPart] = [ResponseStart("r1", "m"), TextStart(0)]
    for piece in pieces:
        out.append(TokenLogprobs(0, "gemini", ({"logprobsResult": lp(piece), "avgLogprobs": -0.5},), "".join(piece))
                   if isinstance(piece, list) else TextDelta(0, piece))
    return out + [TextEnd(0), Finish(FinishReason.STOP)]


def test_gemini_stream_merges_results_a_hook_joined_and_drops_rewritten_ones() -> None:
    frames = g_encode_stream(g_parts(["Hel", "lo"], ["!"], "Hello!"))
    assert g_scored(frames) == [("Hello!", ["Hel", "lo", "!"], -0.5)]
    assert frames[0]["candidates"][0]["logprobsResult"]["logProbabilitySum"] == -1.5
    frames = g_encode_stream(g_parts(["Mail "], "Mail ", ["jane", "@x.com"], "[REDACTED]", [" ok"], " ok"))
    assert g_scored(frames) == [("Mail ", ["Mail "], -0.5), ("[REDACTED]", None, None), (" ok", None, None)]
    assert "jane" not in json.dumps(frames)


def test_batches_queued_ahead_are_each_released_with_the_chunk_completing_their_own_text() -> None:
    # A hook that held text back lets both upstream chunks' results arrive before either text is written.
    frames = g_encode_stream(g_parts(["Hel", "lo"], [" world"], "Hello", " wor", "ld"))
    assert g_scored(frames) == [("Hello", ["Hel", "lo"], -0.5), (" wor", None, None), ("ld", [" world"], -0.5)]


def test_gemini_plain_answer_keeps_logprobs_result_only_while_its_text_is_unchanged() -> None:
    body = {**g_chunk([{"text": "Hello"}], ["Hel", "lo"], "STOP")}
    gen = gemini_wire.PROVIDER.decode_response(body, G_TARGET)
    cand = gemini_wire.CLIENT.encode_response(gen, g_prompt(False))["candidates"][0]
    assert cand["logprobsResult"] == lp(["Hel", "lo"]) and cand["avgLogprobs"] == -0.5
    rewritten = Generation(gen.id, gen.model, (TextPart("Bye"),), gen.finish_reason, Usage(),
                           extras=gen.extras, extras_protocol=gen.extras_protocol)
    cand = gemini_wire.CLIENT.encode_response(rewritten, g_prompt(False))["candidates"][0]
    assert "logprobsResult" not in cand and "avgLogprobs" not in cand


# --- end to end: the official SDKs through a real gateway ---------------------------------------------------


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5})
    # A redacting hook (guardrails): an email in the answer is rewritten, and its tokens must not show.
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('logprobs')}/rp.db"}
    config["plugins"] = {"guardrails": {"downgoing": {"pii_emails": "redact"}}}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    yield gw
    gw.stop()


OTHERS = tuple(w for w in ALL_WIRES if w not in (RESP, "gemini"))


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_responses_client_gets_the_upstreams_logprobs(oai: OpenAI, up: FakeUpstream, gateway: GatewayProcess,
                                                          stream: bool) -> None:
    kw: Any = {"model": "via-openai_responses", "input": "hi", "top_logprobs": 1,
               "include": ["message.output_text.logprobs"]}
    if stream:
        up.enqueue(responses_sse(r_events([["Hel", "lo"], [" world"]])))
        with oai.responses.stream(**kw) as s:
            deltas = [(e.delta, [x.token for x in e.logprobs]) for e in s if e.type == "response.output_text.delta"]
            final = s.get_final_response()
        assert "".join(d for d, _ in deltas) == "Hello world"
        assert [t for _, ts in deltas for t in ts] == ["Hel", "lo", " world"]
    else:
        up.enqueue(Reply.json(r_final([r_message(["Hel", "lo", " world"])])))
        final = oai.responses.create(**kw)
    text = final.output[0].content[0]
    assert text.text == "Hello world" and [x.token for x in text.logprobs] == ["Hel", "lo", " world"]
    assert text.logprobs[0].top_logprobs[0].logprob == -0.25
    sent = up.requests[-1].json
    assert sent["include"] == ["message.output_text.logprobs"] and sent["top_logprobs"] == 1
    assert "Traceback" not in gateway.logs()


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_responses_redacted_text_never_shows_its_tokens(oai: OpenAI, up: FakeUpstream, stream: bool) -> None:
    tokens = ["Write ", "to ", "jane.doe", "@example", ".com", " today."]
    kw: Any = {"model": "via-openai_responses", "input": "hi", "include": ["message.output_text.logprobs"]}
    if stream:
        up.enqueue(responses_sse(r_events([[t] for t in tokens])))
        with oai.responses.stream(**kw) as s:
            raw = [e.model_dump(mode="json", warnings=False) for e in s]
            final = s.get_final_response()
    else:
        up.enqueue(Reply.json(r_final([r_message(tokens)])))
        final = oai.responses.create(**kw)
        raw = []
    assert EMAIL not in final.output_text
    assert "jane" not in json.dumps(raw) + final.model_dump_json(warnings=False)


@pytest.mark.e2e
def test_sdk_responses_logprobs_for_another_wire_is_a_400(oai: OpenAI, up: FakeUpstream) -> None:
    from openai import BadRequestError

    for wire in OTHERS + ("gemini",):
        with pytest.raises(BadRequestError) as info:
            oai.responses.create(model=f"via-{wire}", input="hi", include=["message.output_text.logprobs"])
        assert info.value.body["param"] == "include" and "'include'" in info.value.message
    assert not up.requests


G_CONFIG = types.GenerateContentConfig(response_logprobs=True, logprobs=1)


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_gemini_client_gets_the_upstreams_logprobs(gclient: genai.Client, up: FakeUpstream,
                                                       stream: bool) -> None:
    if stream:
        up.enqueue(gemini_sse(G_CHUNKS))
        chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="hi", config=G_CONFIG))
        # (The gateway's guardrails hold text back and may join chunks: their results are merged.)
        scored = [(ch.text, [c.token for c in ch.candidates[0].logprobs_result.chosen_candidates],
                   ch.candidates[0].avg_logprobs) for ch in chunks if ch.candidates[0].logprobs_result]
        assert all(text == "".join(tokens) and avg == -0.5 for text, tokens, avg in scored), scored
        assert [t for _, tokens, _ in scored for t in tokens] == ["Hel", "lo", " world"]
        assert "".join(ch.text or "" for ch in chunks) == "Hello world"
    else:
        up.enqueue(Reply.json(g_chunk([{"text": "Hello world"}], ["Hel", "lo", " world"], "STOP")))
        answer = gclient.models.generate_content(model="via-gemini", contents="hi", config=G_CONFIG)
        result = answer.candidates[0].logprobs_result
        assert [c.token for c in result.chosen_candidates] == ["Hel", "lo", " world"]
        assert answer.candidates[0].avg_logprobs == -0.5
    sent = [r.json for r in up.requests if "Content" in r.path][-1]
    assert sent["generationConfig"]["responseLogprobs"] is True and sent["generationConfig"]["logprobs"] == 1


@pytest.mark.e2e
def test_sdk_gemini_redacted_stream_never_shows_its_tokens(gclient: genai.Client, up: FakeUpstream) -> None:
    tokens = ["Write ", "to ", "jane.doe", "@example", ".com", " today."]
    up.enqueue(gemini_sse([g_chunk([{"text": t}], [t], "STOP" if i == len(tokens) - 1 else None)
                           for i, t in enumerate(tokens)]))
    chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="hi", config=G_CONFIG))
    assert EMAIL not in "".join(ch.text or "" for ch in chunks)
    assert "jane" not in json.dumps([ch.model_dump(mode="json") for ch in chunks])


@pytest.mark.e2e
def test_sdk_gemini_stream_logprobs_for_another_wire_is_a_400(gclient: genai.Client, up: FakeUpstream) -> None:
    from google.genai import errors as genai_errors

    for wire in OTHERS + (RESP,):
        with pytest.raises(genai_errors.ClientError) as info:
            for _ in gclient.models.generate_content_stream(model=f"via-{wire}", contents="hi", config=G_CONFIG):
                pass
        assert info.value.code == 400 and "'generationConfig.responseLogprobs'" in info.value.message
    assert not up.requests
