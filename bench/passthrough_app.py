"""The floor for `make bench`: a minimal Flask pass-through (requests, one Session per thread) under the same gunicorn.

`POST /v1/chat/completions` forwards the body to BENCH_UPSTREAM and returns the
answer whole; `POST /stream/<path>` forwards to BENCH_STREAM_UPSTREAM + path and
relays the upstream's bytes as they arrive (no parsing): the least any Python
WSGI relay of an SSE stream can do.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

import requests
from flask import Flask, Response, request

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9/json/v1/chat/completions")
STREAM_UPSTREAM = os.environ.get("BENCH_STREAM_UPSTREAM", "http://127.0.0.1:9")
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}

app = Flask("passthrough")
_local = threading.local()


def _session() -> requests.Session:
    s = getattr(_local, "s", None)
    if s is None:
        s = _local.s = requests.Session()
    return s


@app.post("/v1/chat/completions")
def chat() -> Response:
    up = _session().post(UPSTREAM, data=request.get_data(), headers=HEADERS, timeout=30)
    return Response(up.content, status=up.status_code, mimetype="application/json")


@app.post("/stream/<path:path>")
def stream(path: str) -> Response:
    up = _session().post(f"{STREAM_UPSTREAM}/{path}", data=request.get_data(), headers=HEADERS, timeout=30,
                         stream=True)

    def relay() -> Iterator[bytes]:
        try:
            yield from up.iter_content(chunk_size=None)
        finally:
            up.close()

    return Response(relay(), status=up.status_code, mimetype="text/event-stream")
