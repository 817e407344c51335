"""Budgets on a mounted host's accounts (docs/mounting.md): with `plugins: {budget: {}}` a host hook's
`Identity(budget_micro_usd=...)` is enforced (and its ledger migrated from the config, as gunicorn's master
does); without it such an identity is refused, never answered 200 unchecked."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
import requests
import yaml
from flask import Flask

from examples.mounted_app import DEMO_USERS, HostUser, create_host_app
from routeplane.app import build_app
from routeplane.config import ConfigError, parse_config
from tests.support.gateway import ROOT, free_port

# The mock upstream is unpriced: each request keeps its reservation, the configured 10000 micro-USD.
RESERVATION = 10000
USERS = {**DEMO_USERS,
         "zero": HostUser("zero", "trial", budget_micro_usd=0),
         "one": HostUser("one", "payg", budget_micro_usd=RESERVATION),  # room for exactly one request
         "rich": HostUser("rich", "pro", budget_micro_usd=10**9)}
TOKENS = {f"host-token-{name}": name for name in USERS}


def _raw(db: Path, **extra: Any) -> Dict[str, Any]:
    return {"database": {"url": f"sqlite:///{db}"},
            "providers": {"mock": {"protocol": "mock"}},
            "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]},
                       "mock-echo": {"targets": [{"provider": "mock", "model": "echo"}]}},
            **extra}


def _host(db: Path, **extra: Any) -> Flask:
    return create_host_app(parse_config(_raw(db, **extra), "<host>"), secret_key="s", users=USERS, tokens=TOKENS)


def _chat(client: Any, user: str) -> Any:
    return client.post("/llm/v1/chat/completions", headers={"Authorization": f"Bearer host-token-{user}"},
                       json={"model": "default", "messages": [{"role": "user", "content": "hello"}]})


def _ledger(db: Path) -> Dict[str, int]:
    with sqlite3.connect(str(db)) as conn:
        rows = conn.execute("SELECT account_id, COUNT(*) FROM auth_budget_ledger GROUP BY account_id").fetchall()
    conn.close()
    return dict(rows)


def test_a_host_identitys_budget_is_enforced_with_the_budget_plugin(tmp_path):
    """auth.mode none installed no budget plugin, and the plugin skipped kind "anonymous", which the
    example's identities are: a zero budget was a 200."""
    host = _host(tmp_path / "h.db", plugins={"budget": {}})
    with host.test_client() as c:
        r = _chat(c, "zero")
        assert r.status_code == 402 and r.get_json()["error"]["code"] == "budget_exhausted", r.get_json()
        assert _chat(c, "one").status_code == 200
        r = _chat(c, "one")  # its one request's reservation filled the budget
        assert r.status_code == 402 and "limit of 10000" in r.get_json()["error"]["message"]
        assert _chat(c, "rich").status_code == 200
        assert _chat(c, "alice").status_code == 200  # no budget of her own: served, and recorded
        r = c.post("/llm/v1/messages", headers={"x-api-key": "host-token-zero", "anthropic-version": "2023-06-01"},
                   json={"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 402 and r.get_json()["type"] == "error"  # in the caller's own wire
    # One row per admitted request, under the host's account ids (a refusal reserves nothing).
    assert _ledger(tmp_path / "h.db") == {"one": 1, "rich": 1, "alice": 1}


def test_the_operators_account_limit_holds_for_host_accounts(tmp_path):
    host = _host(tmp_path / "h.db", plugins={"budget": {}},
                 auth={"mode": "none", "budget": {"account_limit_micro_usd": RESERVATION}})
    with host.test_client() as c:
        assert _chat(c, "alice").status_code == 200
        r = _chat(c, "alice")
        assert r.status_code == 402 and "account spend is 10000" in r.get_json()["error"]["message"]


def test_without_the_budget_plugin_a_budgeted_identity_is_refused_not_served(tmp_path):
    host = _host(tmp_path / "h.db")
    with host.test_client() as c:
        for user in ("zero", "rich"):
            r = _chat(c, user)
            assert r.status_code == 503 and r.get_json()["error"]["code"] == "budget_unavailable", r.get_json()
            assert "plugins" not in r.get_json()["error"]["message"]  # the operator's fix is in the log
        assert _chat(c, "bob").status_code == 403  # unchanged: his plan allows mock-echo only
        assert _chat(c, "alice").status_code == 200  # identities without a budget are served as before


def test_the_budget_section_takes_no_options_and_check_lists_what_runs(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"plugins\.budget: takes no options; the budget settings are under "
                                          r"auth\.budget"):
        build_app(parse_config(_raw(tmp_path / "h.db", plugins={"budget": {"limit": 5}}), "gw.yaml"))
    app = build_app(parse_config(_raw(tmp_path / "h.db", plugins={"budget": {}}), "gw.yaml"))
    assert [str(p.id) for p in app.plugins].count("budget") == 1 and "auth" in [str(p.id) for p in app.plugins]
    off = build_app(parse_config(_raw(tmp_path / "h.db", plugins={"budget": {"enabled": False}}), "gw.yaml"))
    assert "budget" not in [str(p.id) for p in off.plugins]
    keys = build_app(parse_config(_raw(tmp_path / "k.db", plugins={"budget": {}}, auth={"mode": "api_keys"}),
                                  "gw.yaml"))
    assert [str(p.id) for p in keys.plugins].count("budget") == 1  # auth on: installed once, as always


# --- the documented deployment: gunicorn with routeplane's settings, the host's app named ---------------------

HOST_MODULE = '''
from examples.mounted_app import DEMO_USERS, HostUser, create_host_app

USERS = {**DEMO_USERS, "zero": HostUser("zero", "trial", budget_micro_usd=0),
         "rich": HostUser("rich", "pro", budget_micro_usd=10**9)}


def app():
    return create_host_app(users=USERS, tokens={"host-token-zero": "zero", "host-token-rich": "rich"})
'''


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The master runs `routeplane migrate` for the config alone, and the workers only verify: the budget
    ledger must come from the config, since the master never sees the host's hook."""
    d = tmp_path_factory.mktemp("mounted-budget")
    (d / "s11_budget_host.py").write_text(HOST_MODULE)
    (d / "rp.yaml").write_text(yaml.safe_dump(_raw(d / "host.db", plugins={"budget": {}})))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    env.update(ROUTEPLANE_CONFIG=str(d / "rp.yaml"), ROUTEPLANE_LISTEN=f"127.0.0.1:{port}", ROUTEPLANE_WORKERS="2",
               ROUTEPLANE_THREADS="4", HOST_SECRET_KEY="host-secret",
               PYTHONPATH=os.pathsep.join([str(d), ROOT]))
    proc: Optional[subprocess.Popen] = None
    with open(d / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:routeplane.gunicorn_conf",
                                 "s11_budget_host:app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/llm/health", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, (d / "gunicorn.log").read_text()
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/llm/v1"
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.mark.e2e
def test_under_the_documented_gunicorn_command_host_budgets_hold(served):
    from openai import APIStatusError, OpenAI

    zero = OpenAI(base_url=served, api_key="host-token-zero", max_retries=0)
    with pytest.raises(APIStatusError) as err:
        zero.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 402 and err.value.code == "budget_exhausted"
    rich = OpenAI(base_url=served, api_key="host-token-rich", max_retries=0)
    out = rich.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "You said: hi"
