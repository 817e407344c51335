"""The ACP relay's line handling: nothing one peer writes may end the relay or an agent.

A lone UTF-16 surrogate (a Node agent cutting a string inside an emoji writes "\\ud83d") has no
UTF-8 form: LineWriter raised UnicodeEncodeError, which killed an agent's reader (the agent was
then SIGKILLed) or, from the editor's answer to a permission request, the whole `routeplane acp`.
A deeply nested line raised RecursionError past the parse-error handling.
"""

from __future__ import annotations

import io
import json
from typing import Any, Dict, List

from routeplane.acp.agents import LineWriter
from routeplane.acp.relay import ACPRelay


def test_a_lone_surrogate_is_written_escaped_and_reads_back_the_same() -> None:
    out = io.BytesIO()
    message = {"jsonrpc": "2.0", "method": "session/update", "params": {"text": "half an emoji \ud83d, é"}}
    assert LineWriter(out).send(message)
    line = out.getvalue()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == message  # the peer reads exactly what was sent


def test_plain_text_is_still_written_as_utf8() -> None:
    out = io.BytesIO()
    LineWriter(out).send({"text": "é ✓"})
    assert "é ✓".encode() in out.getvalue()


class _Link:
    def __init__(self) -> None:
        self.sent: List[Dict[str, Any]] = []

    def send(self, message: Dict[str, Any]) -> bool:
        if "\ud83d" in json.dumps(message, ensure_ascii=False):
            raise RuntimeError("a bug further down")
        self.sent.append(message)
        return True


def relay() -> Any:
    return ACPRelay(None, None, io.BytesIO(), {}, "127.0.0.1:4356")  # type: ignore[arg-type]  # lines only


def test_a_deeply_nested_line_is_a_parse_error_not_the_end_of_the_relay() -> None:
    r = relay()
    r.handle_client_line(b'{"jsonrpc":"2.0","id":1,"method":"session/new","params":' + b"[" * 100000
                         + b"]" * 100000 + b"}")
    [answer] = [json.loads(x) for x in r.out._stream.getvalue().splitlines()]
    assert answer["error"]["code"] == -32700


def test_an_answer_that_fails_to_relay_does_not_end_the_relay() -> None:
    r = relay()
    link = _Link()
    r._to_client[7] = (link, 3)
    r.handle_client_line(json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"text": "\ud83d"}}).encode())
    r._to_client[8] = (link, 4)
    r.handle_client_line(json.dumps({"jsonrpc": "2.0", "id": 8, "result": {"ok": True}}).encode())
    assert link.sent == [{"jsonrpc": "2.0", "id": 4, "result": {"ok": True}}]


def test_an_agent_line_that_is_not_json_rpc_is_not_passed_on() -> None:
    """`{"foo": 1}` from an agent reached the editor as `{"jsonrpc": "2.0", "method": null}`."""
    r = relay()

    class Agent:
        name = "alpha"

        def client_sid(self, sid: str) -> str:
            return f"alpha:{sid}"

    r._on_agent_message(Agent(), {"foo": 1})
    r._on_agent_message(Agent(), {"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s1"}})
    lines = [json.loads(x) for x in r.out._stream.getvalue().splitlines()]
    assert lines == [{"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "alpha:s1"}}]


def test_a_message_too_deep_to_encode_is_dropped_not_raised() -> None:
    """json.loads parses a little deeper than json.dumps can write back (both share the recursion
    limit): the agent's reader died on such a notification, and the relay on the client's."""
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    out = io.BytesIO()
    assert LineWriter(out).send({"jsonrpc": "2.0", "method": "session/update", "params": {"p": deep}}) is False
    assert out.getvalue() == b""
    r = relay()
    r._client_notification = lambda method, params: (_ for _ in ()).throw(RecursionError("deep"))  # type: ignore
    r.handle_client_line(b'{"jsonrpc":"2.0","method":"session/cancel","params":{"sessionId":"a:1"}}')  # no raise
