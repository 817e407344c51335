"""A reload (HUP) or a new worker while the store cannot be opened must not halt the gateway.

docs/deploy.md: an invalid file is logged and the previous good copy keeps serving. A config
whose store cannot be opened or migrated (a typo in database.url, which `routeplane check`
cannot see as it never opens the store) counts as invalid; a worker that starts while the
store is down (PostgreSQL restarting during a routine `systemctl reload`) serves, spools its
spend rows and answers 503 on `/ready` until the store is back, instead of exiting with
gunicorn's boot-error code, which stops the whole server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Set

import pytest
import requests

from routeplane.store import Store
from routeplane.store.spend_log import spend_rows
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def config(db_url: str, *routes: str) -> Dict[str, Any]:
    target = {"targets": [{"provider": "mock", "model": "echo"}]}
    return {"database": {"url": db_url}, "providers": {"mock": {"protocol": "mock"}},
            "models": {name: target for name in ("default", *routes)}}


def chat(gw: GatewayProcess, model: str = "default") -> int:
    return requests.post(gw.url + "/v1/chat/completions", json=dict(CHAT, model=model), timeout=10).status_code


def worker_pids(gw: GatewayProcess) -> Set[int]:
    assert gw.proc is not None
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(gw.proc.pid)], stdout=subprocess.PIPE, text=True)
    return {int(p) for p in out.stdout.split()}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def hup_and_replace_workers(gw: GatewayProcess) -> None:
    """HUP, then wait until none of the old workers is left (the new ones serve), or the master is gone."""
    old = worker_pids(gw)
    gw.signal(signal.SIGHUP)
    assert wait_for(lambda: gw.proc.poll() is not None or (worker_pids(gw) and not worker_pids(gw) & old)), gw.logs()
    assert gw.proc.poll() is None, "the reload halted the gateway:\n" + gw.logs()[-3000:]


def test_hup_to_a_store_that_cannot_be_opened_keeps_the_previous_config(gateway_process: Any, tmp_path: Any) -> None:
    good = f"sqlite:///{tmp_path}/rp.db"
    gw = gateway_process(config(good), workers=2, threads=4)
    assert chat(gw) == 200
    bad = config("sqlite:////nonexistent-dir/rp.db", "after")  # a typo; `routeplane check` accepts it
    gw.write_config(bad)
    check = subprocess.run([sys.executable, "-m", "routeplane.cli", "check", str(gw.config_path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    hup_and_replace_workers(gw)
    assert chat(gw) == 200 and chat(gw, "after") == 404  # the previous config serves, the new one is not live
    logs = gw.logs()
    assert "is invalid, keeping the previous config" in logs and "its store cannot be opened or migrated" in logs
    assert "cannot connect to sqlite:////nonexistent-dir/rp.db" in logs
    assert requests.get(gw.url + "/ready", timeout=5).status_code == 200
    # Fixed and reloaded: the new file is applied.
    gw.write_config(config(good, "after"))
    hup_and_replace_workers(gw)
    assert wait_for(lambda: chat(gw, "after") == 200), gw.logs()[-3000:]
    store = Store.from_url(good)
    try:
        assert len(spend_rows(store)) >= 3  # every request so far went to the one good store
    finally:
        store.close()


@pytest.mark.postgres
def test_reload_while_postgres_is_down_keeps_serving_and_recovers(gateway_process: Any,
                                                                  private_postgres_cluster: Any) -> None:
    pg = private_postgres_cluster
    gw = gateway_process(config(pg.url), workers=2, threads=4)
    assert chat(gw) == 200
    served = 1
    pg.pause()  # a failover or restart; nothing in the config changed
    hup_and_replace_workers(gw)  # `systemctl reload routeplane`
    for _ in range(4):
        assert chat(gw) == 200
        served += 1
    ready = requests.get(gw.url + "/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["store"] == "unreachable", ready.text
    logs = gw.logs()
    assert "keeping the previous config" in logs and "the store is unreachable" in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    # A worker started during the outage (recycled, crashed) waits for the store too.
    victim = sorted(worker_pids(gw))[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    assert wait_for(lambda: victim not in worker_pids(gw) and len(worker_pids(gw)) == 2), gw.logs()
    assert gw.proc.poll() is None and chat(gw) == 200, gw.logs()[-3000:]
    served += 1

    pg.resume()
    # Every worker finds the store again and verifies it: /ready is 200 wherever it lands.
    assert wait_for(lambda: all(requests.get(gw.url + "/ready", timeout=5).status_code == 200 for _ in range(6))), \
        gw.logs()[-3000:]
    assert "the store is back and its migrations are verified" in gw.logs()
    store = Store.from_url(pg.url)
    try:
        def all_rows_written() -> bool:
            nonlocal served
            assert chat(gw) == 200  # a successful write replays the spooled rows
            served += 1
            return len(spend_rows(store)) == served

        assert wait_for(all_rows_written), f"{len(spend_rows(store))} rows for {served} requests\n" + gw.logs()[-3000:]
    finally:
        store.close()


def test_first_start_with_a_store_that_cannot_be_opened_refuses_to_start() -> None:
    # At first start there is no previous config to serve: a wrong URL (or a store that is not
    # up yet) stops the start with the reason; systemd's Restart=on-failure tries again.
    gw = GatewayProcess(config("sqlite:////nonexistent-dir/rp.db"), workers=1, threads=2)
    try:
        with pytest.raises(RuntimeError, match="migrations failed, not starting") as info:
            gw.start()
    finally:
        gw.stop()
    assert "cannot connect to sqlite:////nonexistent-dir/rp.db" in str(info.value)
