"""Secrets never leak: provider keys, caller tokens and guardrail-redacted text are searched for in every log line
(error and access log, debug level), every error body, the metrics and every spend row."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest
import requests

from routeplane.cli import main
from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, RecordedRequest, Reply, openai_chunk, openai_completion

pytestmark = pytest.mark.e2e

PROVIDER_KEY = "sk-provsecret-9f8e7d6c5b4a39281706"
BOGUS_TOKEN = "rpk-bogus-caller-token-5a4b3c2d1e0f"
EMAIL = "zora.quill@example-secret.org"
PROMPT_KEY = "AKIAZZQQ7HARDENING42"  # blocked upgoing: must not come back in the error or any log


def upstream(req: RecordedRequest) -> Reply:
    """Echoes secrets back the way careless providers do: keys in error messages, prompts in bodies."""
    body = req.json or {}
    model = body.get("model")
    seen = json.dumps(body)
    if model == "leaky-401":
        return Reply.json({"error": {"message": f"Incorrect API key provided: {PROVIDER_KEY}. {seen}"}}, 401)
    if model == "leaky-500":
        return Reply.json({"error": {"message": f"internal: auth={req.headers.get('authorization')}"}}, 500)
    if body.get("stream"):
        return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                          openai_chunk({"content": f"you said {seen[:200]}"}), openai_chunk({}, "stop"),
                          openai_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})])
    return Reply.json(openai_completion(f"you said {seen[:200]}"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    up = FakeUpstream().start()
    up.default = upstream
    db = f"sqlite:///{tmp_path_factory.mktemp('secrets')}/rp.db"
    config = {
        "server": {"log_level": "debug"},
        "database": {"url": db},
        "auth": {"mode": "api_keys"},
        "providers": {"up": {"protocol": "openai_chat", "base_url": up.url + "/v1", "api_key": PROVIDER_KEY,
                             "prices": {"input": 1, "output": 1}}},
        "models": {m: {"targets": [{"provider": "up", "model": m}]} for m in ("ok", "leaky-401", "leaky-500")},
        "plugins": {"guardrails": {"upgoing": {"pii_emails": "redact", "api_keys": "block"},
                                   "downgoing": {"pii_emails": "redact"}}},
    }
    gw = GatewayProcess(config, workers=1, threads=8, env={"ROUTEPLANE_ACCESS_LOG": "-"}).start()
    try:
        yield {"gw": gw, "up": up, "db": db}
    finally:
        gw.stop()
        up.stop()


def create_key(config_path: str, capsys: Any, *args: str) -> str:
    capsys.readouterr()
    assert main(["keys", "create", "--config", config_path, *args]) == 0
    return capsys.readouterr().out.strip()


def test_no_secret_in_logs_errors_metrics_or_spend_rows(env: Dict[str, Any], capsys: Any) -> None:
    gw: GatewayProcess = env["gw"]
    key = create_key(gw.config_path, capsys, "--name", "secrets")
    admin = create_key(gw.config_path, capsys, "--scope", "admin")
    auth = {"Authorization": f"Bearer {key}"}
    bodies: List[str] = []

    def send(path: str, body: Dict[str, Any], headers: Dict[str, str], stream: bool = False) -> int:
        with requests.post(gw.url + path, json=body, headers=headers, stream=stream, timeout=15) as r:
            bodies.append(r.text)
            bodies.append(json.dumps(dict(r.headers)))
            return r.status_code

    user = f"mail me at {EMAIL} please"
    chat = lambda model, content=user, stream=False: {  # noqa: E731
        "model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    assert send("/v1/chat/completions", chat("ok"), auth) == 200
    assert send("/v1/chat/completions", chat("ok", stream=True), auth, stream=True) == 200
    assert send("/v1/messages", {"model": "ok", "max_tokens": 10, "messages": [{"role": "user", "content": user}]},
                {"x-api-key": key}) == 200
    assert send("/v1/chat/completions", chat("leaky-401"), auth) == 502
    assert send("/v1/chat/completions", chat("leaky-500"), auth) == 502
    assert send("/v1/chat/completions", chat("ok", f"my key is {PROMPT_KEY}"), auth) == 400
    for bad in ({"Authorization": f"Bearer {BOGUS_TOKEN}"}, {"x-api-key": BOGUS_TOKEN},
                {"Authorization": f"Bearer {key}x"}):
        assert send("/v1/chat/completions", chat("ok"), bad) == 401
    # The upstream got the email redacted, and never the blocked key.
    upstream_saw = json.dumps([r.json for r in env["up"].requests])
    assert EMAIL not in upstream_saw and PROMPT_KEY not in upstream_saw and "[REDACTED:email]" in upstream_saw

    metrics = []
    for path in ("/admin/metrics", "/metrics"):
        r = requests.get(gw.url + path, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code in (200, 404), (path, r.status_code)
        metrics.append(r.text)
    assert metrics[0].startswith("{")

    store = Store.from_url(env["db"])
    try:
        rows = json.dumps(spend_rows(store), default=str)
    finally:
        store.close()
    assert len(json.loads(rows)) >= 5
    logs = gw.logs()
    assert "POST /v1/chat/completions" in logs  # the access log is in there too
    where = {"logs": logs, "error bodies": "\n".join(bodies), "metrics": "\n".join(metrics), "spend rows": rows}
    secrets = {"provider key": PROVIDER_KEY, "caller key": key, "admin key": admin, "bogus token": BOGUS_TOKEN,
               "redacted email": EMAIL, "blocked prompt key": PROMPT_KEY,
               "caller key body": key.split("_", 2)[2][-16:]}  # the secret after rpk_<id>_ (it may hold "_" itself)
    leaks = [f"{name} in {place}" for name, secret in secrets.items() for place, text in where.items()
             if secret in text]
    assert not leaks, leaks
