"""Cold review of 888a654..bc68d21..715bc52: the SSE reader rewrite against the previous reader, and configs
that loaded before the strict checks (provider options, listen addresses, YAML merges) and must still load."""

from __future__ import annotations

import random
from typing import List, Optional, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routeplane.config import ConfigError, _UniqueKeyLoader, listen_problem, parse_config_bytes
from routeplane.protocols.sse import EventTooLarge, SSEParser

# --- the SSE reader against the one it replaced ---------------------------------------------------


class PreviousSSEParser:
    """routeplane/protocols/sse.py's SSEParser as of 888a654 (before the linear rewrite), the reference."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: List[str] = []
        self._event: Optional[str] = None
        self._id: Optional[str] = None
        self._pending_cr = False

    def feed(self, chunk: bytes) -> List[Tuple[str, Optional[str], Optional[str]]]:
        if not chunk:
            return []
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        buf = self._buf + chunk
        events = []
        start, n = 0, len(buf)
        while start < n:
            lf, cr = buf.find(b"\n", start), buf.find(b"\r", start)
            if lf == -1 and cr == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt:nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True
            else:
                end, nxt = lf, lf + 1
            ev = self._line(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = nxt
        self._buf = buf[start:]
        return events

    def finish(self):
        events = []
        if self._buf:
            ev = self._line(self._buf)
            self._buf = b""
            if ev is not None:
                events.append(ev)
        ev = self._line(b"")
        if ev is not None:
            events.append(ev)
        return events

    def _line(self, raw: bytes):
        line = raw.decode("utf-8", errors="replace")
        if not line:
            if not self._data and self._event is None:
                return None
            ev = ("\n".join(self._data), self._event, self._id)
            self._data, self._event = [], None
            return ev
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def _run(parser, chunks):
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.finish()
    return [e if isinstance(e, tuple) else (e.data, e.event, e.id) for e in out]


# Multi-byte characters (split across reads by the chunkings), but no BOM: the new reader drops a leading
# one on purpose, and no CR/LF inside a value (they end lines).
_TEXT = st.text(alphabet=st.characters(blacklist_characters="\r\n\ufeff", blacklist_categories=("Cs",)),
                max_size=12)
_LINE = st.one_of(
    _TEXT.map(lambda v: "data: " + v), _TEXT.map(lambda v: "data:" + v), st.sampled_from(["data", "data:", "data: "]),
    _TEXT.map(lambda v: "event: " + v), _TEXT.map(lambda v: "id:" + v), _TEXT.map(lambda v: ":" + v),
    st.sampled_from(["", "", "event", "id", "retry: 10", " data: x", "data : x", "dat: y"]),
    _TEXT.map(lambda v: "x-" + v))
_STREAM = st.lists(st.tuples(_LINE, st.sampled_from(["\n", "\r\n", "\r"])), max_size=30)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_STREAM, st.booleans(), st.randoms(use_true_random=False))
def test_the_rewritten_sse_reader_yields_what_the_previous_one_did_over_any_chunking(lines, cut_last, rnd):
    text = "".join(line + end for line, end in lines)
    if cut_last and lines:
        text = text[: -len(lines[-1][1])]  # finish() with a pending partial line
    raw = text.encode("utf-8")
    if rnd.random() < 0.3:
        chunks = [raw[i:i + 1] for i in range(len(raw))]  # every CRLF and every multi-byte character split
    else:
        cuts = sorted(rnd.sample(range(1, len(raw)), min(len(raw) - 1, rnd.randint(0, 8)))) if len(raw) > 1 else []
        chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    expected = _run(PreviousSSEParser(), [raw])
    assert _run(PreviousSSEParser(), chunks) == expected
    assert _run(SSEParser(), chunks) == expected


def test_the_intentional_sse_changes_hold_over_chunkings():
    raw = "\ufeffdata: a\r\n\r\n".encode()
    for i in range(1, len(raw)):
        assert _run(SSEParser(), [raw[:i], raw[i:]]) == [("a", None, None)]
    parser = SSEParser(max_line_bytes=8, provider="p")
    with pytest.raises(EventTooLarge, match="p sent a stream event over the 8 bytes limit"):
        for piece in (b"data: 12", b"3456\n"):
            parser.feed(piece)


# --- provider options that loaded before the strict check ------------------------------------------

def _anthropic(option_line: str, env=None):
    text = f"""
providers:
  anthropic:
    protocol: anthropic_messages
    base_url: https://api.anthropic.com
    api_key: sk-ant-test-aaaaaaaaaaaa
    options:
      {option_line}
models:
  m: {{targets: [{{provider: anthropic, model: claude-x}}]}}
"""
    config = parse_config_bytes(text.encode(), "routeplane.yaml", env=env or {})
    return config.routes[0].targets[0].options


def test_an_unquoted_anthropic_version_still_loads_as_the_version_it_sent():
    # YAML reads 2023-06-01 as a date; the codec sent str() of it, the header Anthropic expects.
    assert _anthropic("anthropic_version: 2023-06-01")["anthropic_version"] == "2023-06-01"


def test_default_max_tokens_from_an_environment_variable_still_loads():
    # ${VAR} always gives text; the codec took int() of it, as marshmallow's Integer fields do.
    assert _anthropic("default_max_tokens: ${MAX_TOKENS:-4096}")["default_max_tokens"] == 4096
    assert _anthropic("default_max_tokens: ${MAX_TOKENS}", env={"MAX_TOKENS": "8192"})["default_max_tokens"] == 8192
    for bad in ("default_max_tokens: lots", "default_max_tokens: '0'", "anthropic_version: ''"):
        with pytest.raises(ConfigError):
            _anthropic(bad)


# --- listen addresses gunicorn binds ---------------------------------------------------------------

@pytest.mark.parametrize("listen", ["0.0.0.0:80", "[::]:4356", "[::1]:4356", "unix:/run/x.sock", "localhost:4356",
                                    "gateway.internal:4356", "fd://3", "tcp://127.0.0.1:4356",
                                    "[fe80::1%eth0]:4356", "routeplane_gw:4356"])
def test_listen_forms_gunicorn_binds_are_accepted(listen):
    assert listen_problem(listen) is None


@pytest.mark.parametrize("listen", [":4356", "localhost", "0.0.0.0", "127.0.0.1:0", "127.0.0.1:70000", "unix:",
                                    "fd://", "fd://x", "[nothost]:80", "tcp://:4356", "[::1]"])
def test_listen_forms_without_a_host_or_port_are_still_refused(listen):
    assert listen_problem(listen)


# --- YAML merge keys with the duplicate-key loader ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "b: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 1}\nc:\n  <<: [*a, *b]\n  y: 5\n",
    "d: &d {x: 1, y: 1}\nm: &m\n  <<: *d\n  x: 2\nt:\n  <<: *m\n  x: 3\nu: *m\n",
    # an anchor defined on a merge source that merges and overrides itself, aliased later
    "d: &d {x: 1, y: 1}\nt:\n  <<: &m\n    <<: *d\n    x: 2\n  z: 1\nu: *m\n",
    "d: &d {x: 1}\nt:\n  <<: [&m {<<: *d, x: 2}]\nu: *m\n",
])
def test_merge_keys_load_as_yaml_reads_them(text):
    assert yaml.load(text, Loader=_UniqueKeyLoader) == yaml.safe_load(text)


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n", "t:\n  <<: {a: 1, a: 2}\n", "t:\n  <<: [{a: 1}, {b: 1, b: 2}]\n",
    "a: &a {x: 1, x: 2}\nb: {<<: *a}\n",
    "t:\n  <<: {a: 1}\n  a: 2\n  a: 3\n", "{yes: 1, true: 2}",
])
def test_a_key_given_twice_is_still_refused(text):
    with pytest.raises(yaml.constructor.ConstructorError, match="given twice"):
        yaml.load(text, Loader=_UniqueKeyLoader)


def test_random_merge_trees_load_as_yaml_reads_them():
    rnd = random.Random(7)
    for _ in range(300):
        anchors: List[str] = []
        lines = []
        for i in range(rnd.randint(1, 6)):
            keys = rnd.sample("abcde", rnd.randint(1, 3))
            body = ", ".join(f"{k}: {rnd.randint(0, 9)}" for k in keys)
            merge = ""
            if anchors and rnd.random() < 0.7:
                sources = rnd.sample(anchors, rnd.randint(1, len(anchors)))
                merge = "<<: [" + ", ".join(f"*{s}" for s in sources) + "]"
            inner = ", ".join(p for p in (merge, body) if p)
            if rnd.random() < 0.3 and anchors:  # the anchor defined inline on a merge source
                lines.append(f"n{i}: {{<<: &a{i} {{{inner}}}, z: 0}}")
            else:
                lines.append(f"n{i}: &a{i} {{{inner}}}")
            anchors.append(f"a{i}")
        lines.append("last: [" + ", ".join(f"*{a}" for a in anchors) + "]")
        text = "\n".join(lines) + "\n"
        assert yaml.load(text, Loader=_UniqueKeyLoader) == yaml.safe_load(text), text
