"""The transport's per-origin caches (routeplane/language_model/transport.py): what requests looked up
per call is looked up once, and stays right when pools close or origins differ."""

from __future__ import annotations

import http.server
import threading
from typing import Iterator, List, Tuple

import pytest
import requests

from routeplane.language_model.transport import Transport, _split_url, prepared_request


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: List[Tuple[str, int]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        _Echo.seen.append((self.path, self.server.server_address[1]))
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[List[str]]:
    started = []
    for _ in range(2):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
    _Echo.seen.clear()
    try:
        yield [f"http://127.0.0.1:{s.server_address[1]}" for s in started]
    finally:
        for s in started:
            s.shutdown()
            s.server_close()


def _post(adapter: Transport, url: str, **kwargs: object) -> str:
    resp = adapter.send(prepared_request(url, b"{}", {"Content-Type": "application/json"}, None),  # type: ignore[arg-type]
                        timeout=(5, 5), **kwargs)
    assert resp.status_code == 200
    return resp.content.decode()


def test_the_request_target_keeps_path_and_query_and_origins_get_their_own_pool(servers):
    adapter = Transport(max_retries=0)
    a, b = servers
    assert _post(adapter, a + "/v1/models/x:stream?alt=sse") == "/v1/models/x:stream?alt=sse"
    assert _post(adapter, b + "/v1/chat/completions") == "/v1/chat/completions"
    assert _post(adapter, a) == "/"
    ports = [port for _, port in _Echo.seen]
    assert ports[0] == ports[2] != ports[1]
    assert len(adapter._pools) == 2 and adapter._pools[_split_url(a)[0]] is not adapter._pools[_split_url(b)[0]]


def test_a_closed_pool_is_replaced_not_reused(servers):
    adapter = Transport(max_retries=0)
    url = servers[0] + "/v1/chat/completions"
    _post(adapter, url)
    first = adapter._pools[_split_url(url)[0]]
    adapter.close()  # closes every pool (what a worker's shutdown does)
    assert first.pool is None
    assert _post(adapter, url) == "/v1/chat/completions"
    assert adapter._pools[_split_url(url)[0]] is not first


def test_every_cached_pool_closes_with_the_adapter(servers):
    adapter = Transport(max_retries=0)
    a, b = servers
    _post(adapter, a + "/x")
    _post(adapter, b + "/y")
    pools = list(adapter._pools.values())
    adapter.close()
    assert len(pools) == 2 and all(p.pool is None for p in pools)
    assert _post(adapter, a + "/z") == "/z"  # and the adapter still works after


def test_the_cache_of_pools_is_bounded_like_the_pool_managers(servers):
    adapter = Transport(pool_connections=1, max_retries=0)
    a, b = servers
    _post(adapter, a + "/x")
    _post(adapter, b + "/y")
    assert list(adapter._pools) == [_split_url(b)[0]]
    assert _post(adapter, a + "/z") == "/z"


def test_calls_with_proxies_or_other_tls_settings_take_requests_own_path(servers, monkeypatch):
    adapter = Transport(max_retries=0)
    calls = []
    real = requests.adapters.HTTPAdapter.get_connection_with_tls_context

    def spy(self, request, verify, proxies=None, cert=None):  # noqa: ANN001
        calls.append((verify, proxies))
        return real(self, request, verify, proxies=proxies, cert=cert)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "get_connection_with_tls_context", spy)
    url = servers[0] + "/v1"
    _post(adapter, url)
    _post(adapter, url)
    assert len(calls) == 1  # cached after the first call
    _post(adapter, url, verify=False)
    assert calls[-1][0] is False and len(calls) == 2


def test_https_pools_verify_certificates():
    adapter = Transport(max_retries=0)
    req = prepared_request("https://api.example.invalid/v1/chat", b"{}", {}, None)  # type: ignore[arg-type]
    pool = adapter.get_connection_with_tls_context(req, True)
    adapter.cert_verify(pool, req.url, True, None)
    assert pool.cert_reqs == "CERT_REQUIRED" and pool.ca_certs
    pool.cert_reqs = "CERT_NONE"  # the second call is skipped: settings were applied once
    adapter.cert_verify(pool, req.url, True, None)
    assert pool.cert_reqs == "CERT_NONE"
    adapter.cert_verify(pool, req.url, False, None)  # anything else still goes through requests
    assert pool.cert_reqs == "CERT_NONE" and pool.ca_certs is None
