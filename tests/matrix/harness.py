"""Runs one matrix cell through the real Flask app and a real fake upstream, and checks it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.matrix.model import ClientResult, Reasoning, Scenario, Turn, UpstreamRequest
from tests.matrix.scenarios import SCENARIOS
from tests.matrix.wires import WireDriver, drivers
from tests.support.upstream import FakeUpstream, RecordedRequest


@dataclass(frozen=True)
class Cell:
    client: str
    upstream: str
    scenario: Scenario
    stream: bool

    @property
    def id(self) -> str:
        return f"{self.client}->{self.upstream}:{self.scenario.id}:{'stream' if self.stream else 'json'}"


def cells() -> Iterator[Cell]:
    """Every covered cell: client wire × upstream wire × scenario × mode, as the drivers allow."""
    table = drivers()
    for client_name, client in table.items():
        for upstream_name, upstream in table.items():
            for sc in SCENARIOS:
                if not (client.supports(sc, as_client=True) and upstream.supports(sc, as_client=False)):
                    continue
                if not set(sc.requires) <= (client.features & upstream.features):
                    continue
                for stream in sc.modes:
                    yield Cell(client_name, upstream_name, sc, stream)


def route(wire: str) -> str:
    return f"via-{wire}"


class Matrix:
    """One in-process gateway (real Flask app, real HttpExecutor) and one fake upstream for all cells."""

    def __init__(self) -> None:
        self.drivers = drivers()
        self.upstream = FakeUpstream().start()
        config = {
            "providers": {name: d.provider_config(self.upstream.url) for name, d in self.drivers.items()},
            "models": {route(name): {"targets": [{"provider": name, "model": f"up-{name}"}]}
                       for name in self.drivers},
        }
        self.gateway = Gateway(config=config, executor=HttpExecutor())

    def close(self) -> None:
        self.upstream.stop()

    def run(self, cell: Cell) -> "Outcome":
        client, upstream = self.drivers[cell.client], self.drivers[cell.upstream]
        self.upstream.requests.clear()
        self.upstream.enqueue(upstream.upstream_reply(cell.scenario, cell.stream))
        call = client.client_request(cell.scenario, route(cell.upstream), cell.stream)
        resp = self.gateway.client.post(call.path, json=call.body, headers=dict(call.headers))
        try:
            raw = resp.get_data()
            status, headers = resp.status_code, dict(resp.headers)
        finally:
            resp.close()
        result = client.read_client_response(status, headers, raw, cell.stream)
        recorded = list(self.upstream.requests)
        assert len(recorded) == 1, f"expected one upstream call, got {len(recorded)}"
        return Outcome(cell, call.body, dict(call.headers), result, recorded[0],
                       upstream.read_upstream_request(recorded[0]))


@dataclass
class Outcome:
    cell: Cell
    client_body: Any
    client_headers: Dict[str, str]
    result: ClientResult
    recorded: RecordedRequest
    received: UpstreamRequest


# --- expectations ------------------------------------------------------------


def _turn_key(t: Turn) -> Tuple[Any, ...]:
    return (t.role, t.text, tuple((c.id, c.name, dict(c.args)) for c in t.calls), t.results,
            (t.reasoning.text, t.reasoning.signature) if t.reasoning else None, t.images)


def expected_turns(sc: Scenario, client: WireDriver, upstream: WireDriver) -> List[Tuple[Any, ...]]:
    same = client.name == upstream.name
    out = []
    for t in sc.turns:
        # Reasoning in history survives only on its own wire (signatures are vendor-bound).
        reasoning = t.reasoning if (same and client.history_reasoning) else None
        results = tuple(upstream.result_fidelity(client.result_fidelity(r)) for r in t.results)
        turn = dataclasses.replace(t, reasoning=reasoning, results=results)
        if upstream.merges_same_role and out and out[-1][0] == t.role and t.role in ("user", "assistant"):
            # One merged turn: texts in order, then calls and images (as drivers read them back).
            role, text, calls, results, thought, images = out[-1]
            out[-1] = (role, text + t.text, calls + _turn_key(turn)[2], results, thought or _turn_key(turn)[4],
                       images + t.images)
            continue
        out.append(_turn_key(turn))
    return out


def continues_tool_turn(sc: Scenario) -> bool:
    """The last assistant turn called tools and their results follow it."""
    for i in range(len(sc.turns) - 1, -1, -1):
        if sc.turns[i].role == "assistant":
            return bool(sc.turns[i].calls) and any(t.role == "tool" for t in sc.turns[i + 1:])
    return False


def expected_thinking(sc: Scenario, client: WireDriver, upstream: WireDriver) -> bool:
    signed_history_survives = client.name == upstream.name and client.history_reasoning
    if upstream.thinking_needs_signed_tool_turn and continues_tool_turn(sc) and not signed_history_survives:
        return False
    return sc.thinking


def check(o: Outcome, drivers_: Dict[str, WireDriver]) -> None:
    """Every assertion a cell makes; each names what was lost or changed."""
    cell, sc = o.cell, o.cell.scenario
    client, upstream = drivers_[cell.client], drivers_[cell.upstream]
    same = cell.client == cell.upstream
    reply, got, rec = sc.reply, o.result, o.received

    # What the upstream received.
    upstream.check_upstream_headers(o.recorded.headers, o.client_headers, same)
    assert rec.system == sc.system, "system prompt"
    assert rec.system_cache == (sc.system_cache and client.cache_control and upstream.cache_control), "cache_control"
    assert [_turn_key(t) for t in rec.turns] == expected_turns(sc, client, upstream), "conversation history"
    assert rec.tools == tuple(t.name for t in sc.tools), "tools"
    assert rec.tool_choice == sc.tool_choice, "tool_choice"
    assert rec.max_tokens == sc.max_tokens, "max_tokens"
    assert rec.stop == sc.stop, "stop sequences"
    assert rec.stream == cell.stream, "stream flag"
    assert rec.thinking == expected_thinking(sc, client, upstream), "reasoning request"
    if same:
        # Lossless: the upstream got exactly what the client sent (modulo model name).
        assert upstream.normalize_request(rec.raw) == client.normalize_request(o.client_body), "same-wire request"

    # What the client got.
    failure = reply.failure
    if failure is not None and not failure.midstream:
        status, etype = client.error_expectation(failure.kind)
        assert (got.status, got.error_type) == (status, etype), f"error: got {got.status} {got.error_type}"
        if failure.retry_after is not None:
            assert got.retry_after == str(failure.retry_after), "Retry-After"
        return
    assert got.status == 200, f"status {got.status}: {got.raw}"
    if failure is not None:  # mid-stream
        assert got.error_in_stream, "the in-stream error frame is missing"
        _, etype = client.error_expectation(upstream.midstream_error_kind(failure.kind))
        assert got.error_type == etype, f"in-stream error type {got.error_type}"
        assert got.text == reply.text, "text before the error"
        return
    assert not got.error_in_stream
    assert got.text == reply.text, "text"
    assert got.calls == tuple((c.id, c.name, dict(c.args)) for c in reply.calls), "tool calls"
    want_reasoning: Tuple[Reasoning, ...] = ()
    if reply.reasoning is not None and client.shows_reasoning and sc.thinking:
        r = upstream.reasoning_from_upstream(reply.reasoning)
        want_reasoning = (Reasoning(r.text, r.signature if same else None),)
    assert got.reasoning == want_reasoning, "reasoning"
    assert got.finish == client.finish_fidelity(upstream.finish_fidelity(reply.finish)), "finish reason"
    if got.finish == "stop_sequence":
        assert got.stop_sequence == reply.stop_sequence, "stop_sequence value"
    assert got.usage == client.usage_fidelity(upstream.usage_fidelity(reply.usage)), "usage buckets"
    if same and not cell.stream:
        reply_body = o.recorded and _scripted_body(o)
        assert client.normalize_response(got.raw) == upstream.normalize_response(reply_body), "same-wire response"


def _scripted_body(o: Outcome) -> Any:
    """The JSON body the fake upstream sent for this cell (re-scripted: scripts are pure)."""
    import json

    reply = drivers()[o.cell.upstream].upstream_reply(o.cell.scenario, False)
    return json.loads(reply.body)
