"""Observe plugin against a local OTLP/HTTP receiver; traceparent upstream; Prometheus text; slow observers."""

from __future__ import annotations

import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from routeplane.app import AppBuilder, Plugin, PluginId, build_app
from routeplane.config import parse_config
from routeplane.hooks.language_model import ObserveHook
from tests.support.upstream import FakeUpstream, Reply, openai_chunk, openai_completion

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


class OTLPReceiver:
    """A local OTLP/HTTP receiver: decodes ExportTraceServiceRequest / ExportMetricsServiceRequest bodies."""

    def __init__(self) -> None:
        self.spans: List[Tuple[Any, Span]] = []  # (resource, span)
        self.metrics: List[ExportMetricsServiceRequest] = []
        self.status = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                assert self.headers.get("Content-Type") == "application/x-protobuf"
                if self.path == "/v1/traces":
                    req = ExportTraceServiceRequest.FromString(body)
                    with receiver._lock:
                        for rs in req.resource_spans:
                            for ss in rs.scope_spans:
                                receiver.spans.extend((rs.resource, s) for s in ss.spans)
                    reply = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    with receiver._lock:
                        receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    reply = ExportMetricsServiceResponse().SerializeToString()
                else:
                    reply = b""
                self.send_response(receiver.status if self.path != "/nope" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attrs(span: Span) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def upstream_reply(req: Any) -> Reply:
    body = req.json or {}
    if body.get("model") == "up-503":
        return Reply.json({"error": {"message": "overloaded", "type": "server_error"}}, 503)
    if body.get("stream"):
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "hi"}),
                          openai_chunk({}, "stop"), openai_chunk(None, usage=USAGE)])
    return Reply.json(openai_completion("hello", usage=USAGE))


def config(tmp_path: Any, upstream: str, receiver: Optional[str], **observe: Any) -> Any:
    options: Dict[str, Any] = {"metrics_interval_seconds": 3600, **observe}
    if receiver:
        options["otlp_endpoint"] = receiver
    return parse_config({
        "database": {"url": f"sqlite:///{tmp_path}/obs.db"},
        "server": {"stats_flush_seconds": 0.2},
        "providers": {
            "up": {"protocol": "openai_chat", "base_url": upstream + "/v1", "api_key": "sk-up-secret",
                   "prices": {"input": 1.0, "output": 2.0}},
            "mock": {"protocol": "mock"},
        },
        "models": {
            "chat": {"targets": [{"provider": "up", "model": "up-model"}]},
            "fallback": {"targets": [{"provider": "up", "model": "up-503"}, {"provider": "up", "model": "up-model"}]},
            "down": {"targets": [{"provider": "mock", "model": "fail-503"}]},
            "fast": {"targets": [{"provider": "mock", "model": "echo"}]},
        },
        "plugins": {"observe": options},
    }, "test")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = upstream_reply
    yield up
    up.stop()


@pytest.fixture()
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver()
    yield r
    r.stop()


def post(client: Any, model: str, stream: bool = False, headers: Optional[Dict[str, str]] = None) -> Any:
    resp = client.post("/v1/chat/completions", headers=headers or {},
                       json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    resp.get_data()
    resp.close()
    return resp


def observe_plugin(app: Any) -> Any:
    return next(p for p in app.plugins if p.id == "observe")


def finish(app: Any) -> None:
    app.pipeline.observers.drain(5.0)
    observe_plugin(app).flush(5.0)


def test_spans_parent_child_attributes_and_traceparent(tmp_path: Any, upstream: FakeUpstream,
                                                       receiver: OTLPReceiver) -> None:
    app = build_app(config(tmp_path, upstream.url, receiver.url))
    client = app.flask_app().test_client()
    upstream.requests.clear()
    inbound_trace, inbound_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r1 = post(client, "fallback", headers={"traceparent": f"00-{inbound_trace}-{inbound_span}-01",
                                           "x-request-id": "req-fallback"})
    r2 = post(client, "chat", stream=True, headers={"x-request-id": "req-stream"})
    r3 = post(client, "down", headers={"x-request-id": "req-down"})
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 502)
    finish(app)
    app.shutdown()

    servers = {attrs(s)["routeplane.request_id"]: s for _r, s in receiver.spans if s.kind == Span.SPAN_KIND_SERVER}
    clients = [s for _r, s in receiver.spans if s.kind == Span.SPAN_KIND_CLIENT]
    assert set(servers) == {"req-fallback", "req-stream", "req-down"}
    assert len(clients) == 2 + 1 + 1
    resource = {kv.key: kv.value for kv in receiver.spans[0][0].attributes}
    assert resource["service.name"].string_value == "routeplane"
    assert len(resource["service.instance.id"].string_value) == 32 and resource["process.pid"].int_value > 0

    # The fallback request: child of the inbound parent, two attempts as children of the server span.
    fb = servers["req-fallback"]
    assert fb.trace_id.hex() == inbound_trace and fb.parent_span_id.hex() == inbound_span
    a = attrs(fb)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "fallback"
    assert a["gen_ai.response.model"] == "up-model" and a["gen_ai.provider.name"] == "up"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 7)
    assert a["routeplane.attempts"] == 2 and "error.type" not in a
    fb_clients = sorted((s for s in clients if s.parent_span_id == fb.span_id), key=lambda s: s.start_time_unix_nano)
    assert [attrs(s)["gen_ai.request.model"] for s in fb_clients] == ["up-503", "up-model"]
    assert all(s.trace_id == fb.trace_id for s in fb_clients)
    assert attrs(fb_clients[0])["error.type"] and fb_clients[0].status.code == 2  # STATUS_CODE_ERROR
    assert attrs(fb_clients[0])["http.response.status_code"] == 503
    for c in fb_clients:
        assert fb.start_time_unix_nano <= c.start_time_unix_nano <= c.end_time_unix_nano <= fb.end_time_unix_nano
    assert fb_clients[0].end_time_unix_nano <= fb_clients[1].start_time_unix_nano

    # Upstreams saw a traceparent in the same trace whose parent is the attempt's client span.
    seen = [r.headers.get("traceparent") for r in upstream.requests]
    assert len(seen) == 3 and all(seen)
    fb_headers = seen[:2]
    assert [h.split("-")[2] for h in fb_headers] == [s.span_id.hex() for s in fb_clients]
    assert all(h.split("-")[1] == inbound_trace for h in fb_headers)

    # A stream: new trace (no inbound parent), client span covers the stream.
    st = servers["req-stream"]
    assert not st.parent_span_id and attrs(st)["routeplane.streamed"] is True
    assert attrs(st)["routeplane.ttft_ms"] >= 0
    (st_client,) = [s for s in clients if s.parent_span_id == st.span_id]
    assert seen[2] == f"00-{st.trace_id.hex()}-{st_client.span_id.hex()}-01"

    # A failure: error.type on the server span and an ERROR status.
    dn = servers["req-down"]
    assert attrs(dn)["error.type"] == "upstream" and attrs(dn)["routeplane.error_class"] == "provider"
    assert dn.status.code == 2 and attrs(dn)["http.response.status_code"] == 502

    # Metrics over OTLP/HTTP: request count and token usage with bounded attributes.
    names = {m.name: m for req in receiver.metrics for rm in req.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"routeplane.requests", "gen_ai.client.operation.duration", "gen_ai.client.token.usage",
            "routeplane.cost"} <= set(names)
    total = sum(dp.as_int for dp in names["routeplane.requests"].sum.data_points)
    assert total == 3
    assert observe_plugin(app).stats()["spans_failed"] == 0


def test_unsampled_inbound_parent_exports_no_spans(tmp_path: Any, upstream: FakeUpstream,
                                                   receiver: OTLPReceiver) -> None:
    app = build_app(config(tmp_path, upstream.url, receiver.url, metrics=False))
    client = app.flask_app().test_client()
    upstream.requests.clear()
    post(client, "chat", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"})
    finish(app)
    app.shutdown()
    assert receiver.spans == []
    assert upstream.requests[-1].headers["traceparent"].endswith("-00")  # the decision travels upstream


def test_prometheus_text_from_the_store_with_bounded_labels(tmp_path: Any, upstream: FakeUpstream) -> None:
    app = build_app(config(tmp_path, upstream.url, None))
    client = app.flask_app().test_client()
    for _ in range(3):
        post(client, "chat")
    post(client, "chat", stream=True)
    post(client, "down")
    post(client, "mock:unlisted")  # a direct provider:model name is not a configured route → "other"
    resp = client.get("/metrics")
    text = resp.get_data(as_text=True)
    resp.close()
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(text)
    req = {k: v for k, v in samples.items() if k[0] == "routeplane_requests_total"}
    assert req[("routeplane_requests_total", (("model", "up-model"), ("outcome", "success"), ("provider", "up"),
                                              ("route", "chat")))] == 4
    assert req[("routeplane_requests_total", (("model", "fail-503"), ("outcome", "upstream_error"),
                                              ("provider", "mock"), ("route", "down")))] == 1
    assert req[("routeplane_requests_total", (("model", "other"), ("outcome", "success"), ("provider", "mock"),
                                              ("route", "other")))] == 1
    assert sum(req.values()) == 6
    tokens = samples[("routeplane_tokens_total", (("model", "up-model"), ("provider", "up"), ("route", "chat"),
                                                  ("type", "input")))]
    assert tokens == 4 * 11
    buckets = sorted((dict(k[1])["le"], v) for k, v in samples.items()
                     if k[0] == "routeplane_request_duration_seconds_bucket" and dict(k[1])["route"] == "chat")
    assert dict(buckets)["+Inf"] == 4
    counts = [v for _le, v in sorted(buckets, key=lambda b: float(b[0]))]
    assert counts == sorted(counts)  # cumulative
    assert samples[("routeplane_request_duration_seconds_count", (("route", "chat"),))] == 4
    assert "sk-up-secret" not in text


def parse_prometheus(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Strict enough for the exposition format this plugin writes: every sample line parses, TYPE before use."""
    import re

    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    typed = set()
    out: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = line_re.match(line)
        assert m, line
        name, _, labels, value = m.groups()
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, line
        pairs = tuple(sorted((k, v) for k, v, _sep in label_re.findall(labels or "")))
        assert (name, pairs) not in out, f"duplicate sample {line}"
        out[(name, pairs)] = float(value)
    return out


class _SlowObserver(ObserveHook):
    def __init__(self, sleep: float, raise_too: bool) -> None:
        self.sleep, self.raise_too, self.calls = sleep, raise_too, 0

    def on_request_end(self, event: Any) -> None:
        self.calls += 1
        time.sleep(self.sleep)
        if self.raise_too:
            raise RuntimeError("observer bug")

    def on_stream_part(self, event: Any) -> None:
        raise RuntimeError("observer bug on every part")


class _SlowPlugin(Plugin):
    id = PluginId("slow_observer")

    def __init__(self, sleep: float) -> None:
        self.observers = [_SlowObserver(sleep, False), _SlowObserver(0.0, True)]

    def install(self, app: AppBuilder) -> None:
        for o in self.observers:
            app.language_model_builder().observe_hook(o)


SLEEP = 1.0  # long enough that "every request < SLEEP" holds on a loaded machine unless inline
N = 50


def p90(xs: List[float]) -> float:
    return sorted(xs)[int(0.9 * len(xs))] * 1000


def _timed_run(client: Any) -> Tuple[List[float], List[Tuple[int, str]]]:
    times, answers = [], []
    for i in range(N):
        stream = i % 5 == 0
        t0 = time.perf_counter()
        resp = client.post("/v1/chat/completions", json={
            "model": "fast", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        data = resp.get_data(as_text=True)
        times.append(time.perf_counter() - t0)
        resp.close()
        if stream:
            answers.append((resp.status_code, "".join(ln for ln in data.splitlines() if "You said" in ln)))
        else:
            answers.append((resp.status_code, resp.get_json()["choices"][0]["message"]["content"]))
    return times, answers


def test_slow_or_raising_observer_changes_no_response_nor_its_latency(tmp_path: Any, upstream: FakeUpstream,
                                                                       capsys: Any) -> None:
    base_cfg = config(tmp_path, upstream.url, None, prometheus=False)
    plain = build_app(base_cfg)
    slow_plugin = _SlowPlugin(SLEEP)
    slow = build_app(base_cfg, extra_plugins=[slow_plugin])
    c_plain, c_slow = plain.flask_app().test_client(), slow.flask_app().test_client()
    _timed_run(c_plain), _timed_run(c_slow)  # warm both (connections, imports)
    t_plain, a_plain = _timed_run(c_plain)
    t_slow, a_slow = _timed_run(c_slow)
    assert a_plain == a_slow and all(s == 200 for s, _ in a_slow)
    p50_plain, p50_slow = statistics.median(t_plain) * 1000, statistics.median(t_slow) * 1000
    with capsys.disabled():
        print(f"\n[observer isolation] {N} requests each: p50 {p50_plain:.2f} ms without, {p50_slow:.2f} ms with a "
              f"{SLEEP * 1000:.0f} ms sleeping + raising observer (p90 {p90(t_plain):.2f} / {p90(t_slow):.2f} ms; "
              f"max {max(t_slow) * 1000:.2f} ms)")
    # Generous bound: were the observer inline, every request would take ≥ SLEEP.
    assert max(t_slow) < SLEEP, t_slow
    assert p50_slow < p50_plain + 50
    assert slow_plugin.observers[0].calls < 2 * N  # still sleeping through its backlog: it was never inline
    slow_plugin.observers[0].sleep = 0.0  # let the backlog finish now
    slow.pipeline.observers.drain(10.0)
    assert slow_plugin.observers[0].calls == 2 * N
    assert slow.pipeline.observers.errors >= 2 * N  # the raising one, counted and swallowed
    plain.shutdown()
    slow.shutdown()


def test_dead_collector_costs_requests_nothing(tmp_path: Any, upstream: FakeUpstream, receiver: OTLPReceiver) -> None:
    receiver.status = 503
    receiver.delay = 0.3
    app = build_app(config(tmp_path, upstream.url, receiver.url, otlp_timeout_seconds=0.5))
    client = app.flask_app().test_client()
    t0 = time.perf_counter()
    statuses = [post(client, "chat").status_code for _ in range(10)]
    elapsed = time.perf_counter() - t0
    assert statuses == [200] * 10 and elapsed < 2.0
    finish(app)
    stats = observe_plugin(app).stats()
    app.shutdown()
    assert stats["spans_failed"] >= 1 and stats["events"] == 10
