"""Session 10, under gunicorn: a Responses upstream's reasoning summary reaches a client as it arrives.

The upstream below sends its first summary delta, then waits until the test has seen that delta at the
client (or gives up after WAIT seconds). A gateway that held the reasoning until the item's end (where
the encrypted_content arrives) would never show it in time: the upstream waits in vain and the test
fails. The streamed answer must still equal the unstreamed one: the signature (id and encrypted
content) after the thinking text for an Anthropic client, the upstream's item id and its summary parts
kept apart for a Responses client.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator, List

import anthropic
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.responses_script import PARTS, final_response, reasoning_events
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply

WAIT = 15.0  # seconds the upstream waits for the test to see the first delta

USAGE = {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 39}
FINAL = final_response("up", USAGE)


def _events() -> List[Any]:
    """OpenAI's stream for FINAL, each summary part in two deltas; None marks where the upstream pauses."""
    return reasoning_events(FINAL, split=True)


class Gate:
    """The paused stream's state: the test opens it when its client saw the first delta."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self.waited_in_vain = False

    def chunks(self) -> Iterator[bytes]:
        seq = 0
        for ev in _events():
            if ev is None:
                if not self.seen.wait(WAIT):
                    self.waited_in_vain = True
                continue
            yield f"event: {ev['type']}\ndata: {json.dumps({**ev, 'sequence_number': seq})}\n\n".encode()
            seq += 1


class Upstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()
        self.default = self._answer

    def _answer(self, req: RecordedRequest) -> Reply:
        if not req.json.get("stream"):
            return Reply.json(FINAL)
        self.gate = Gate()
        return Reply(200, {"Content-Type": "text/event-stream"}, chunks=self.gate.chunks())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Any]:
    up = Upstream().start()
    config = {"providers": {"resp": {"protocol": "openai_responses", "base_url": up.url + "/v1", "api_key": "sk-up"}},
              "models": {"m": {"targets": [{"provider": "resp", "model": "up"}]}}}
    gw = GatewayProcess(config).start()
    yield gw, up
    gw.stop()
    up.stop()


HI: Any = [{"role": "user", "content": "Weather?"}]
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}


def test_an_anthropic_client_gets_the_thinking_as_it_arrives(gateway: Any) -> None:
    gw, up = gateway
    with anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0) as client:
        plain = client.messages.create(model="m", max_tokens=2048, thinking=THINKING, messages=HI)
        with client.messages.stream(model="m", max_tokens=2048, thinking=THINKING, messages=HI) as stream:
            events = []
            for ev in stream:
                events.append(ev)
                if ev.type == "content_block_delta" and ev.delta.type == "thinking_delta":
                    up.gate.seen.set()
            streamed = stream.get_final_message()
    assert not up.gate.waited_in_vain, "the thinking reached the client only after the reasoning item ended"
    assert streamed.content[0].thinking == "\n\n".join(PARTS) and streamed.content[0].signature
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in plain.content]
    assert streamed.stop_reason == plain.stop_reason == "end_turn"
    # The signature (the reasoning item's id and encrypted content) follows the whole thinking text, in its
    # block, before the block stops.
    block = [e for e in events if getattr(e, "index", None) == 0 and e.type.startswith("content_block")]
    kinds = [e.delta.type if e.type == "content_block_delta" else e.type for e in block]
    assert kinds[0] == "content_block_start" and kinds[-2:] == ["signature_delta", "content_block_stop"]
    assert set(kinds[1:-2]) == {"thinking_delta"}


def test_a_responses_client_gets_the_summary_as_it_arrives(gateway: Any) -> None:
    gw, up = gateway
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0) as client:
        kw: Any = {"model": "m", "input": "Weather?", "reasoning": {"effort": "low", "summary": "auto"}}
        plain = client.responses.create(**kw)
        with client.responses.stream(**kw) as stream:
            events = []
            for ev in stream:
                events.append(ev)
                if ev.type == "response.reasoning_summary_text.delta":
                    up.gate.seen.set()
            streamed = stream.get_final_response()
    assert not up.gate.waited_in_vain, "the summary reached the client only after the reasoning item ended"
    assert [s.text for s in streamed.output[0].summary] == PARTS  # the parts stay apart
    assert streamed.output[0].model_dump() == plain.output[0].model_dump()
    assert [o.type for o in streamed.output] == [o.type for o in plain.output] == ["reasoning", "message"]
    assert streamed.output_text == plain.output_text == "Mild."  # (the gateway names each message itself)
    assert streamed.output[0].id == "rs_up" and streamed.output[0].encrypted_content == "gAAAA-ENC"
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[0].item.id == "rs_up"
    assert [e.summary_index for e in events if e.type == "response.reasoning_summary_part.added"] == [0, 1]
    deltas = [(e.summary_index, e.delta) for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(d for k, d in deltas if k == 0) == PARTS[0] and "".join(d for k, d in deltas if k == 1) == PARTS[1]


# --- the codecs as pure functions: upstream events → parts → a Responses client's events ----------------


def _relay(events: List[Any]) -> Any:
    """Feeds the upstream events one by one through the decoder and a Responses client's encoder: the
    client's events after each upstream event, and the canonical generation."""
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.language_model.stream import GenerationAccumulator
    from routeplane.protocols import openai_responses as wire
    from routeplane.protocols.sse import SSEEvent, iter_events

    dec = wire.PROVIDER.stream_decoder(RoutingTarget("up", "up", "openai_responses", base_url="http://x/v1"))
    enc = wire.CLIENT.stream_encoder(wire.CLIENT.decode_request({"model": "m", "input": "x"}))
    acc = GenerationAccumulator()
    steps = []
    for ev in [e for e in events if e is not None]:
        raw = b""
        for part in dec.feed(SSEEvent(json.dumps(ev), ev["type"])):
            acc.add(part)
            raw += enc.encode(part)
        steps.append((ev["type"], [json.loads(e.data) for e in iter_events([raw])]))
    steps.append(("close", [json.loads(e.data) for e in iter_events([enc.close()])]))
    return steps, acc.generation()


def test_the_summary_streams_live_with_its_parts_and_a_models_own_blank_line_stays_in_its_part() -> None:
    events = _events()
    at = next(i for i, e in enumerate(events) if e and e.get("delta") == "\n\nLook it up.")
    events[at:at + 1] = [{**events[at], "delta": "\n\n"}, {**events[at], "delta": "Look it up."}]  # the model's own
    steps, gen = _relay(events)
    first = next(out for kind, out in steps if kind == "response.reasoning_summary_text.delta")
    assert [e["type"] for e in first] == ["response.output_item.added", "response.reasoning_summary_part.added",
                                          "response.reasoning_summary_text.delta"]
    assert first[0]["item"]["id"] == "rs_up" and first[2]["delta"] == "**Plan**"
    client = [e for _, out in steps for e in out]
    parts = PARTS
    assert [(e["summary_index"], e["delta"]) for e in client if e["type"] == "response.reasoning_summary_text.delta"] \
        == [(0, "**Plan**"), (0, "\n\n"), (0, "Look it up."), (1, "**Answer**"), (1, "\n\nIt is mild.")]
    done = [e["part"]["text"] for e in client if e["type"] == "response.reasoning_summary_part.done"]
    assert done == parts
    item = next(e["item"] for e in client if e["type"] == "response.output_item.done" and e["output_index"] == 0)
    assert item == {"type": "reasoning", "id": "rs_up", "encrypted_content": "gAAAA-ENC",
                    "summary": [{"type": "summary_text", "text": t} for t in parts]}
    # Another wire reads the parts joined, and the signature is the one the item ended with.
    from routeplane.protocols.openai_responses.reasoning import pack_reasoning_signature

    assert gen.parts[0].text == "\n\n".join(parts)
    assert gen.parts[0].signature == pack_reasoning_signature("rs_up", "gAAAA-ENC", parts)


def test_reasoning_whose_id_comes_only_with_its_end_is_held_to_it() -> None:
    """A compatible server that names the item only in its done event: the client's added event needs the
    id, so the item waits for its end, and its parts still come apart."""
    events = _events()
    for e in events:
        if e and e["type"] == "response.output_item.added" and e["item"]["type"] == "reasoning":
            e["item"] = {k: v for k, v in e["item"].items() if k != "id"}
        if e and e.get("item_id") == "rs_up":
            del e["item_id"]
    steps, _ = _relay(events)
    end = next(i for i, (kind, _) in enumerate(steps) if kind == "response.output_item.done")
    assert not [e for _, out in steps[:end] for e in out if e["type"] != "response.in_progress"
                and e["type"] != "response.created"]
    client = [e for _, out in steps for e in out]
    added = next(e for e in client if e["type"] == "response.output_item.added")
    assert added["item"]["id"] == "rs_up"
    assert [e["part"]["text"] for e in client if e["type"] == "response.reasoning_summary_part.done"] == PARTS
