"""A reload (HUP) or a new worker must not halt the gateway: while the store cannot be opened, and while the
config file holds an edit that was not (or not successfully) checked.

Workers only ever load the master's checked snapshot of the file, never the live file: a worker recycled
by max_requests or respawned after a crash, and one started by a HUP whose file changed again during or
right after the check, get the bytes that passed `routeplane check` and the migration (docs/routing.md,
Reload with `kill -HUP`).

docs/deploy.md: an invalid file is logged and the previous good copy keeps serving. A config
whose store cannot be opened or migrated (a typo in database.url, which `routeplane check`
cannot see as it never opens the store) counts as invalid; a worker that starts while the
store is down (PostgreSQL restarting during a routine `systemctl reload`) serves, spools its
spend rows and answers 503 on `/ready` until the store is back, instead of exiting with
gunicorn's boot-error code, which stops the whole server.
"""

from __future__ import annotations

import os
import re
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


def master_lines(gw: GatewayProcess) -> str:
    """The gateway's log without the request lines: what the master did (reloads, workers booted and exited)."""
    return "\n".join(line for line in gw.logs().splitlines() if "routeplane.requests" not in line)[-4000:]


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
    assert wait_for(lambda: chat(gw, "after") == 200), master_lines(gw)
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


# --- workers load the checked snapshot, never the live file ----------------------------------------------

BROKEN = "models: [half-edited\n"


def mock_config(*routes: str) -> Dict[str, Any]:
    target = {"targets": [{"provider": "mock", "model": "echo"}]}
    return {"providers": {"mock": {"protocol": "mock"}}, "models": {name: target for name in ("default", *routes)}}


def serves(gw: GatewayProcess, model: str = "default") -> bool:
    """`model` answers 200 (False while no worker answers: one that failed to boot, a master that halted)."""
    try:
        return chat(gw, model) == 200
    except requests.RequestException:
        return False


def log_tail(gw: GatewayProcess) -> str:
    """The end of the gunicorn log without the per-request lines, for failure messages."""
    return "\n".join(line for line in gw.logs().splitlines() if "routeplane.requests" not in line)[-3000:]


def ready_config(gw: GatewayProcess) -> str:
    return requests.get(gw.url + "/ready", timeout=5).json()["config"]


def test_a_recycled_or_respawned_worker_loads_the_checked_config_not_an_unreloaded_edit(gateway_process: Any) -> None:
    # The operator is editing the file (not reloaded yet): a worker recycled by max_requests, or
    # respawned after a crash, booted from the live file, exited 3, and gunicorn halted.
    gw = gateway_process(mock_config(), workers=1, threads=2, env={"ROUTEPLANE_MAX_REQUESTS": "10"})
    first = worker_pids(gw)
    with open(str(gw.config_path), "w") as fh:
        fh.write(BROKEN)
    for _ in range(40):  # 10-11 requests per worker: three or so recycles
        try:
            requests.get(gw.url + "/health", timeout=5)
        except requests.RequestException:
            pass
        assert gw.proc.poll() is None, "a recycled worker loaded the unchecked file:\n" + log_tail(gw)
    assert wait_for(lambda: worker_pids(gw) and not worker_pids(gw) & first), log_tail(gw)
    assert wait_for(lambda: serves(gw)), log_tail(gw)
    victim = sorted(worker_pids(gw))[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)  # a crash: gunicorn respawns it
    assert wait_for(lambda: gw.proc.poll() is not None or (worker_pids(gw) and victim not in worker_pids(gw)))
    assert gw.proc.poll() is None, "a respawned worker loaded the unchecked file:\n" + log_tail(gw)
    assert wait_for(lambda: serves(gw)), log_tail(gw)
    assert ready_config(gw) == gw.config_path  # the operator's file is named, not the private copy
    assert "Worker failed to boot" not in gw.logs()
    # What the workers load: the master's copy, private to it, removed when it exits.
    snapshot = re.search(r"workers load the checked copy (\S+)", gw.logs()).group(1)  # type: ignore[union-attr]
    assert os.path.dirname(snapshot) != os.path.dirname(str(gw.config_path))
    assert os.stat(snapshot).st_mode & 0o777 == 0o600 and os.stat(os.path.dirname(snapshot)).st_mode & 0o777 == 0o700
    assert gw.stop() == 0 and not os.path.exists(os.path.dirname(snapshot))


def child_processes(gw: GatewayProcess) -> Dict[int, str]:
    """The master's children: pid -> "STAT ARGS"."""
    assert gw.proc is not None
    out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "--ppid", str(gw.proc.pid)], stdout=subprocess.PIPE,
                         text=True).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("step", ["check", "migrate"])
def test_an_edit_landing_while_the_master_checks_a_reload_never_reaches_a_worker(gateway_process: Any, tmp_path: Any,
                                                                                 step: str) -> None:
    # The master runs `routeplane check`, then `routeplane migrate`, and the file changes again in
    # between or just after (an editor's second save, config management). The previous code read the
    # file anew at each step: an edit after the check made the migration refuse the reload that had
    # passed; one after the migration became the "last good copy" and reached the new workers
    # unchecked, and a broken one halted gunicorn. The master is held (SIGSTOP) from while that step's
    # child runs until the edit has landed, so each run has the same timing.
    db = f"sqlite:///{tmp_path}/rp.db"
    gw = gateway_process(config(db), workers=1, threads=2)
    gw.write_config(config(db, "after"))
    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    running: list = []
    while not running:
        assert time.monotonic() < deadline, log_tail(gw)
        running = [pid for pid, ps in child_processes(gw).items() if f"routeplane.cli {step}" in ps]
        time.sleep(0.005)
    gw.signal(signal.SIGSTOP)
    try:  # the step reads the version with "after", passes and exits (a zombie until the master runs again)
        assert wait_for(lambda: child_processes(gw).get(running[0], "Z").startswith("Z")), log_tail(gw)
        with open(str(gw.config_path), "w") as fh:
            fh.write(BROKEN)
    finally:
        gw.signal(signal.SIGCONT)
    assert wait_for(lambda: gw.proc.poll() is not None or serves(gw, "after")), log_tail(gw)
    assert gw.proc.poll() is None, "the reload halted the gateway:\n" + log_tail(gw)
    assert "is invalid" not in gw.logs(), log_tail(gw)  # what was checked is what was applied
    # HUP again with the file still broken: the copy that passed ("after") stays live.
    hup_and_replace_workers(gw)
    assert chat(gw, "after") == 200 and "is invalid, keeping the previous config" in gw.logs()


def test_started_without_a_file_a_broken_routeplane_yaml_keeps_the_defaults(gateway_process: Any,
                                                                            tmp_path: Any) -> None:
    # No config file at start (built-in defaults): there was no last-good copy and ROUTEPLANE_CONFIG was
    # unset, so the workers a HUP (or a recycle) started read the new, broken ./routeplane.yaml.
    gw = gateway_process(None, workers=1, threads=2, cwd=str(tmp_path), env={"RP_TEST_DB_FILE": "relative.db"})
    assert ready_config(gw) == "<built-in defaults>"
    (tmp_path / "routeplane.yaml").write_text(BROKEN)
    hup_and_replace_workers(gw)
    assert chat(gw, "mock-echo") == 200 and "is invalid, keeping the previous config" in gw.logs()
    victim = sorted(worker_pids(gw))[0]
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    assert wait_for(lambda: gw.proc.poll() is not None or (worker_pids(gw) and victim not in worker_pids(gw)))
    assert gw.proc.poll() is None, "a respawned worker read ./routeplane.yaml:\n" + log_tail(gw)
    assert wait_for(lambda: serves(gw, "mock-echo")) and ready_config(gw) == "<built-in defaults>"
    # A good file is picked up; relative paths in it still mean the working directory (the snapshot
    # lives elsewhere), and ${VAR} still reads the environment.
    (tmp_path / "routeplane.yaml").write_text(
        "database: {url: 'sqlite:///${RP_TEST_DB_FILE}'}\n"
        "providers: {mock: {protocol: mock}}\n"
        "models: {after: {targets: [{provider: mock, model: echo}]}}\n")
    hup_and_replace_workers(gw)
    assert wait_for(lambda: serves(gw, "after")), log_tail(gw)
    assert ready_config(gw) == str(tmp_path / "routeplane.yaml")
    store = Store.from_url(f"sqlite:///{tmp_path}/relative.db")
    try:
        assert wait_for(lambda: len(spend_rows(store)) >= 1), log_tail(gw)
    finally:
        store.close()
