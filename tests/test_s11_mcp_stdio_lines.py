"""A stdio MCP server's output lines are bounded as an HTTP upstream's answers are (s11 hunt): the reader read
a line whole however long, so a child that wrote one runaway message (or never a newline) grew the worker
without limit. An over-long line is now skipped to its end; the request it answers fails at once, and the
next answers on the same process still arrive."""

from __future__ import annotations

import sys
import textwrap
import time
from typing import Any, Iterator

import pytest

from routeplane.mcp import upstream_stdio
from routeplane.mcp.settings import MCPServerConfig
from routeplane.mcp.upstream import UpstreamFailure, make_upstream

CHILD = textwrap.dedent('''
    import json, sys
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg:
            continue
        if msg["method"] == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "big"}}
        else:
            size = msg["params"]["arguments"]["size"]
            result = {"content": [{"type": "text", "text": "x" * size}]}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\\n")
        sys.stdout.flush()
''')


@pytest.fixture
def upstream(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(upstream_stdio, "MAX_LINE_BYTES", 1 << 20, raising=False)
    script = tmp_path / "big.py"
    script.write_text(CHILD)
    config = MCPServerConfig(id="big", type="stdio", prefix="big__", command=sys.executable, args=(str(script),),
                             timeout=20)
    up = make_upstream(config, lambda *a: None)
    try:
        up.ensure_initialized()
        yield up
    finally:
        up.close()


def call(up: Any, size: int) -> Any:
    return up.request("tools/call", {"name": "echo", "arguments": {"size": size}})


def test_an_over_long_line_fails_its_request_at_once_and_the_next_answer_arrives(upstream: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(UpstreamFailure) as info:
        call(upstream, 3 << 20)  # three times the line bound
    assert time.monotonic() - t0 < 10  # not the request's 20 s timeout
    assert "more than" in str(info.value) and "x" * 100 not in str(info.value)
    assert call(upstream, 10)["content"][0]["text"] == "x" * 10
    assert upstream.starts == 1  # the same process: the reader skipped the line and stayed in step
