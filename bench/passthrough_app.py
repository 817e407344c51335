"""The floor for `make bench`: a minimal Flask pass-through (requests, one Session per thread) under the same gunicorn."""

from __future__ import annotations

import os
import threading

import requests
from flask import Flask, Response, request

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9/json/v1/chat/completions")

app = Flask("passthrough")
_local = threading.local()


def _session() -> requests.Session:
    s = getattr(_local, "s", None)
    if s is None:
        s = _local.s = requests.Session()
    return s


@app.post("/v1/chat/completions")
def chat() -> Response:
    up = _session().post(UPSTREAM, data=request.get_data(), headers={"Content-Type": "application/json",
                                                                   "Authorization": "Bearer sk-bench"}, timeout=30)
    return Response(up.content, status=up.status_code, mimetype="application/json")
