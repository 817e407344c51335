"""Real gunicorn, several workers × threads, a bounded burst of mixed requests → exactly one spend row each."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import requests

from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.upstream import FakeUpstream, Reply, openai_chunk

pytestmark = pytest.mark.e2e

MOCK_PRICES = {"input": 1000.0, "output": 3000.0}  # USD per million tokens = micro-USD per token
UP_PRICES = {"input": 500.0, "output": 700.0}
UP_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
PER_KIND = int(os.environ.get("SPEND_BURST_PER_KIND") or 6)  # raise it for a soak run


def upstream_reply(req: Any) -> Reply:
    """The fake provider: `up-fast` streams a short answer with usage; `up-slow` dribbles for seconds; `up-503` fails."""
    model = (req.json or {}).get("model")
    if model == "up-503":
        return Reply.json({"error": {"message": "overloaded", "type": "server_error"}}, 503)
    if model == "up-slow":
        words = [openai_chunk({"content": f"w{i} "}) for i in range(60)]
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""})] + words +
                         [openai_chunk({}, "stop"), openai_chunk(None, usage=UP_USAGE)], chunk_delay=0.05)
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}), openai_chunk({"content": "fast"}),
                      openai_chunk({}, "stop"), openai_chunk(None, usage=UP_USAGE)])


def gateway_config(database_url: str, upstream_url: str) -> Dict[str, Any]:
    return {
        "database": {"url": database_url},
        "providers": {
            "mock": {"protocol": "mock", "prices": MOCK_PRICES},
            "free": {"protocol": "mock"},
            "up": {"protocol": "openai_chat", "base_url": upstream_url + "/v1", "api_key": "sk-upstream-secret",
                   "prices": UP_PRICES},
        },
        "models": {
            "priced": {"targets": [{"provider": "mock", "model": "echo"}]},
            "unpriced": {"targets": [{"provider": "free", "model": "echo"}]},
            "fallback": {"targets": [{"provider": "mock", "model": "fail-503"}, {"provider": "mock", "model": "echo"}]},
            "broken": {"targets": [{"provider": "mock", "model": "fail-503"}]},
            "up-fast": {"targets": [{"provider": "up", "model": "up-fast"}]},
            "up-slow": {"targets": [{"provider": "up", "model": "up-slow"}]},
            "up-503": {"targets": [{"provider": "up", "model": "up-503"}]},
        },
    }


def mock_cost(prompt: str) -> int:
    """The mock provider's deterministic usage (4 characters a token) × MOCK_PRICES."""
    tokens_in = max(1, (len(prompt) + 3) // 4)
    tokens_out = (len("You said: " + prompt) + 3) // 4
    return tokens_in * 1000 + tokens_out * 3000


UP_COST = 11 * 500 + 7 * 700

# kind → (model, stream, client cancels mid-stream, expected outcome, expected cost or None for "depends")
KINDS: Dict[str, Tuple[str, bool, bool, str]] = {
    "plain": ("priced", False, False, "success"),
    "stream": ("priced", True, False, "success"),
    "fallback": ("fallback", False, False, "success"),
    "broken": ("broken", True, False, "upstream_error"),
    "unpriced": ("unpriced", False, False, "success"),
    "up_fast": ("up-fast", True, False, "success"),
    "up_503": ("up-503", False, False, "upstream_error"),
    "cancelled": ("up-slow", True, True, "client_disconnected"),
}


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/spend.db"
    else:
        server = request.getfixturevalue("postgres_cluster" if request.param == "postgresql" else "mariadb_server")
        yield server.create_database("e2e_" + uuid.uuid4().hex[:12])


def one_request(base: str, kind: str, i: int, run: str) -> Tuple[str, str, int]:
    model, stream, cancel, _outcome = KINDS[kind]
    rid = f"{run}-{kind}-{i}"
    prompt = f"{kind} request number {i} " + "x" * i
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    if cancel:
        return rid, prompt, hang_up_mid_stream(base, body, rid)
    with requests.post(base + "/v1/chat/completions", json=body, headers={"x-request-id": rid}, stream=stream,
                       timeout=30) as resp:
        status = resp.status_code
        resp.content  # noqa: B018 - read it all
    return rid, prompt, status


def hang_up_mid_stream(base: str, body: Dict[str, Any], rid: str) -> int:
    """A client that reads the status line and the first event, then closes its socket."""
    host, port = base.rsplit("/", 1)[1].split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"x-request-id: %s\r\nContent-Length: %d\r\n\r\n%s"
                     % (host.encode(), rid.encode(), len(payload), payload))
        seen = b""
        while b"data:" not in seen and len(seen) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            seen += chunk
    assert b"data:" in seen, seen[:500]
    return int(seen.split(b" ", 2)[1])


def test_burst_gives_exactly_one_spend_row_per_request(gateway_process: Any, database_url: str) -> None:
    up = FakeUpstream().start()
    up.default = upstream_reply
    try:
        gw = gateway_process(gateway_config(database_url, up.url), workers=3, threads=8)
        run = uuid.uuid4().hex[:8]
        jobs = [(kind, i) for i in range(PER_KIND) for kind in KINDS]
        with ThreadPoolExecutor(max_workers=16) as pool:
            sent = list(pool.map(lambda job: one_request(gw.url, job[0], job[1], run), jobs))
        n = len(sent)
        assert n == PER_KIND * len(KINDS)

        store = Store.from_url(database_url)
        try:
            deadline = time.monotonic() + 30
            rows: List[Dict[str, Any]] = []
            while time.monotonic() < deadline:  # cancelled streams settle when the worker notices the hang-up
                rows = spend_rows(store)
                if len(rows) >= n:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            rows = spend_rows(store)
        finally:
            store.close()
    finally:
        up.stop()

    assert len(rows) == n, f"{len(rows)} spend rows for {n} requests:\n{gw.logs()[-3000:]}"
    by_rid = {r["request_id"]: r for r in rows}
    assert len(by_rid) == n  # exactly once each
    problems = [f"{rid} (status {status}): {problem}\n    {by_rid[rid]}"
                for rid, prompt, status in sent for problem in row_problems(by_rid[rid], rid, prompt, status)]
    assert not problems, "\n".join(problems) + "\n" + gw.logs()[-3000:]
    assert "sk-upstream-secret" not in json.dumps(rows, default=str)
    assert "settlement recorder" not in gw.logs(), gw.logs()[-3000:]  # no spend write failed for good
    assert len({r["id"] for r in rows}) == n


def row_problems(row: Dict[str, Any], rid: str, prompt: str, status: int) -> List[str]:
    """What is wrong with one request's spend row, against the hand computation (empty = right)."""
    kind = rid.split("-")[1]
    model, stream, _cancel, outcome = KINDS[kind]
    checks = [
        ("outcome", row["outcome"] == outcome),
        ("route/streamed", row["route"] == model and bool(row["streamed"]) == stream),
    ]
    if kind in ("plain", "stream"):
        checks += [("cost", row["cost_micro_usd"] == mock_cost(prompt)),
                   ("target", (row["provider"], row["model"], row["attempts"]) == ("mock", "echo", 1))]
    elif kind == "fallback":
        # Two attempts, or one once the failing target is cooling down after earlier 503s.
        checks += [("cost", row["cost_micro_usd"] == mock_cost(prompt)),
                   ("target", (row["provider"], row["model"]) == ("mock", "echo")),
                   ("attempts", [a["ok"] for a in json.loads(row["attempts_json"])] in ([False, True], [True]))]
    elif kind == "unpriced":
        checks += [("cost unknown", row["cost_micro_usd"] is None and row["output_tokens"] > 0)]
    elif kind == "up_fast":
        checks += [("cost", row["cost_micro_usd"] == UP_COST),
                   ("usage", (row["input_tokens"], row["output_tokens"]) == (11, 7)),
                   ("ttft", row["ttft_ms"] is not None)]
    elif kind in ("broken", "up_503"):
        checks += [("failure", status >= 500 and row["cost_micro_usd"] == 0 and bool(row["error_type"]))]
    elif kind == "cancelled":
        # Billed for what was streamed before the hang-up: usage estimated locally, never lost.
        checks += [("status", status == 200),
                   ("estimated", not row["usage_reported"] and row["cost_micro_usd"] is not None),
                   ("output so far", 0 < row["output_tokens"] < 60 * 3)]
    return [name for name, ok in checks if not ok]


def test_gunicorn_master_migrates_once_and_refuses_a_tampered_history(gateway_process: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/boot.db"
    config = {"database": {"url": url}, "providers": {"mock": {"protocol": "mock"}},
              "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}}
    gw = gateway_process(config, workers=2, threads=2)
    assert "applied spend_log 0001_spend_log" in gw.logs()
    assert requests.post(gw.url + "/v1/chat/completions", timeout=10, json={
        "model": "default", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    gw.stop()
    store = Store.from_url(url)
    assert len(spend_rows(store)) == 1
    store.execute("UPDATE routeplane_migrations SET checksum = 'tampered' WHERE plugin = 'spend_log'")
    store.close()
    with pytest.raises(RuntimeError, match="changed since they ran: spend_log 0001_spend_log"):
        gateway_process(config, workers=2, threads=2)


def test_hup_that_enables_the_spend_log_migrates_before_new_workers_serve(gateway_process: Any, tmp_path: Any) -> None:
    import signal

    url = f"sqlite:///{tmp_path}/hup.db"
    config: Dict[str, Any] = {"database": {"url": url}, "providers": {"mock": {"protocol": "mock"}},
                              "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
                              "plugins": {"spend_log": {"enabled": False}}}
    gw = gateway_process(config, workers=2, threads=2)
    store = Store.from_url(url)
    try:
        assert not store.table_exists("spend_log")
        del config["plugins"]
        gw.write_config(config)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        rows: List[Dict[str, Any]] = []
        while time.monotonic() < deadline and not rows:
            r = requests.post(gw.url + "/v1/chat/completions", timeout=10, json={
                "model": "default", "messages": [{"role": "user", "content": "after hup"}]})
            assert r.status_code == 200
            if store.table_exists("spend_log"):
                rows = spend_rows(store)
            time.sleep(0.2)
        assert rows, gw.logs()[-3000:]
        assert "Traceback" not in gw.logs()
    finally:
        store.close()
