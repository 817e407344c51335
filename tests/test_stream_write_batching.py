"""Stream writes follow the upstream's reads (routeplane/language_model/pipeline_stream.py): events
that arrived in one read leave in one write, and an event already encoded never waits for the
upstream's next read, with or without a stream hook that holds parts back."""

from __future__ import annotations

import copy
import json
import socket
import threading
from typing import Any, Iterator, List

import pytest

from routeplane.app import Plugin, PluginId
from routeplane.hooks.language_model import StreamAction, StreamHook
from routeplane.language_model.types import TextDelta
from tests.support.upstream import openai_chunk

WAIT = 10.0  # seconds the upstream waits for the client before giving up (the test then fails)


def event(delta: Any, finish: Any = None) -> bytes:
    return b"data: " + json.dumps(openai_chunk(delta, finish)).encode() + b"\n\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class GatedUpstream:
    """A Chat upstream on a raw socket: `burst` (many events in one write), then it waits until the
    test says the client saw them (`seen`), then sends the rest. A gateway that held the burst back
    until the next read would never let the test set `seen`: the upstream gives up and the stream
    ends early."""

    def __init__(self, burst: List[bytes], rest: List[bytes]) -> None:
        self.burst, self.rest = burst, rest
        self.seen = threading.Event()
        self.waited_in_vain = False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            head, body = buf.split(b"\r\n\r\n", 1)
            length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n" + chunked(b"".join(self.burst)))
            if not self.seen.wait(WAIT):
                self.waited_in_vain = True
            conn.sendall(chunked(b"".join(self.rest)) + b"0\r\n\r\n")


def app_client(tmp_path: Any, upstream_url: str, plugins: Any = None) -> Any:
    from routeplane.app import build_app
    from routeplane.config import DEFAULT_CONFIG, parse_config

    config = copy.deepcopy(DEFAULT_CONFIG)
    config["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    config["providers"] = {"up": {"protocol": "openai_chat", "base_url": upstream_url, "api_key": "sk-up"}}
    config["models"] = {"m": {"targets": [{"provider": "up", "model": "m"}]}}
    return build_app(parse_config(config), extra_plugins=[_HookPlugin(h) for h in plugins or ()]).flask_app().test_client()


class _HookPlugin(Plugin):
    id = PluginId("hold_last")

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def install(self, app: Any) -> None:
        app.language_model_builder().stream_hook(self.hook)


def writes(client: Any, up: GatedUpstream, release_after: str) -> Iterator[bytes]:
    resp = client.post("/v1/chat/completions", json={"model": "m", "stream": True,
                                                     "messages": [{"role": "user", "content": "hi"}]},
                       headers={"Authorization": "Bearer sk-client"}, buffered=False)
    assert resp.status_code == 200
    for piece in resp.response:
        if release_after.encode() in piece:
            up.seen.set()
        yield piece


def texts(pieces: List[bytes]) -> List[str]:
    out = []
    for line in b"".join(pieces).decode().split("\n"):
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                if choice["delta"].get("content"):
                    out.append(choice["delta"]["content"])
    return out


BURST = [event({"role": "assistant", "content": ""})] + [event({"content": f"t{i} "}) for i in range(30)]
REST = [event({"content": "last"}), event({}, "stop"), b"data: [DONE]\n\n"]


def test_a_burst_leaves_in_one_write_and_never_waits_for_the_next_read(tmp_path: Any) -> None:
    up = GatedUpstream(BURST, REST)
    pieces = list(writes(app_client(tmp_path, up.url), up, release_after="t29 "))
    assert not up.waited_in_vain, "the burst was held back until the upstream's next read"
    assert texts(pieces) == [f"t{i} " for i in range(30)] + ["last"]
    burst_writes = [p for p in pieces if b"t0 " in p or b"t29 " in p]
    assert len(burst_writes) == 1, "the 30 events of one upstream read were written separately"


class HoldPairs(StreamHook):
    """A stream hook that releases text deltas two at a time (a redactor's look-ahead)."""

    def __init__(self) -> None:
        self.held: List[Any] = []

    def interest(self) -> Any:
        from routeplane.hooks.language_model import StreamInterest

        return StreamInterest.ALL

    def on_part(self, ctx: Any, part: Any) -> StreamAction:
        if isinstance(part, TextDelta):
            self.held.append(part)
            if len(self.held) < 2:
                return StreamAction.drop()
        out, self.held = self.held + ([] if isinstance(part, TextDelta) else [part]), []
        return StreamAction.replace(out)

    def on_stream_end(self, ctx: Any, outcome: Any) -> None:
        pass


def test_a_hook_holding_the_burst_s_last_part_does_not_hold_what_it_released(tmp_path: Any) -> None:
    # 31 deltas in one read: the hook releases "t28 t29 " while more of the read is left, then holds
    # "t30 " (the read's last part) until "last" arrives, after the upstream's wait. What it released
    # must reach the client before that wait.
    burst = BURST + [event({"content": "t30 "})]
    up = GatedUpstream(burst, REST)
    pieces = list(writes(app_client(tmp_path, up.url, plugins=[HoldPairs()]), up, release_after="t29 "))
    assert not up.waited_in_vain, "text a hook released waited for the upstream's next read"
    assert texts(pieces) == [f"t{i} " for i in range(31)] + ["last"]


@pytest.mark.parametrize("cut_after", [5])
def test_an_upstream_cut_after_a_burst_still_delivers_the_burst(tmp_path: Any, cut_after: int) -> None:
    up = GatedUpstream(BURST[:cut_after], [])  # then the chunked body just ends: no finish, no [DONE]
    up.seen.set()
    pieces = list(writes(app_client(tmp_path, up.url), up, release_after="never"))
    body = b"".join(pieces).decode()
    assert texts(pieces) == [f"t{i} " for i in range(cut_after - 1)]
    assert '"error"' in body  # the cut is reported in-band after what arrived
