"""The spend log's group commit when a thread is interrupted (KeyboardInterrupt, a signal handler's
SystemExit): no settlement is left waiting for ever, no accepted row is lost."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import pytest

import routeplane.store.spend_log as spend_log
from routeplane.language_model.settlement import Settlement
from routeplane.store import Store, migrate
from routeplane.store.spend_log import SpendLogPlugin, SpendRecorder, spend_rows
from routeplane.store.spool import Spool


@pytest.fixture
def recorder(tmp_path: Any) -> SpendRecorder:
    store = Store(f"sqlite:///{tmp_path}/spend.db")
    migrate(store, [SpendLogPlugin(store)])
    rec = SpendRecorder(store, retries=0)
    write_rows = rec.write_rows

    def slow_write(rows: List[Dict[str, Any]]) -> None:  # settlements pile up behind the writer
        time.sleep(0.1)
        write_rows(rows)

    rec.write_rows = slow_write  # type: ignore[method-assign]
    return rec


def _settle(rec: SpendRecorder, rid: str, results: Dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            rec.record(Settlement(rid, time.time(), "openai_chat", "r", False, "success", cost_micro_usd=1))
            results[rid] = "ok"
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            results[rid] = exc

    thread = threading.Thread(target=run, name=rid, daemon=True)
    thread.start()
    return thread


class _InterruptedEvent(threading.Event):
    """An Event whose wait() in the thread named "victim" ends with KeyboardInterrupt,
    either at once or right after it was set (`after_wake`)."""

    after_wake = False

    def wait(self, timeout: Any = None) -> bool:
        if threading.current_thread().name != "victim":
            return super().wait(timeout)
        if self.after_wake:
            super().wait(timeout)
        raise KeyboardInterrupt


def _run(rec: SpendRecorder, monkeypatch: Any, after_wake: bool) -> Dict[str, Any]:
    monkeypatch.setattr(_InterruptedEvent, "after_wake", after_wake)
    monkeypatch.setattr(spend_log.threading, "Event", _InterruptedEvent)
    results: Dict[str, Any] = {}
    threads = [_settle(rec, "leader", results)]
    time.sleep(0.03)  # the leader is writing; the next ones queue behind it, the victim first
    threads.append(_settle(rec, "victim", results))
    time.sleep(0.03)
    threads.append(_settle(rec, "bystander", results))
    for t in threads:
        t.join(5)
    threads = [_settle(rec, "later", results)]
    threads[0].join(5)
    assert not any(t.is_alive() for t in threads), "a settlement waits for ever"
    return results


def test_an_owner_interrupted_while_queued_leaves_and_the_others_go_on(recorder, monkeypatch):
    results = _run(recorder, monkeypatch, after_wake=False)
    assert isinstance(results.pop("victim"), KeyboardInterrupt)
    assert results == {"leader": "ok", "bystander": "ok", "later": "ok"}
    assert sorted(r["request_id"] for r in spend_rows(recorder.store)) == ["bystander", "later", "leader"]
    assert not recorder._writing and recorder._waiting == []


def test_an_owner_interrupted_just_as_it_becomes_the_writer_still_writes_its_batch(recorder, monkeypatch):
    # The victim is the oldest waiting row when the leader finishes, so the writer role is
    # handed to it; the interrupt comes right then. Its batch (the bystander's row too) is
    # written anyway: otherwise the bystander, and every later settlement, would wait for ever.
    results = _run(recorder, monkeypatch, after_wake=True)
    assert isinstance(results.pop("victim"), KeyboardInterrupt)
    assert results == {"leader": "ok", "bystander": "ok", "later": "ok"}
    assert sorted(r["request_id"] for r in spend_rows(recorder.store)) == ["bystander", "later", "leader", "victim"]


def test_a_writer_interrupted_mid_write_spools_the_batch_and_only_it_sees_the_interrupt(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/spend.db")
    migrate(store, [SpendLogPlugin(store)])
    rec = SpendRecorder(store, retries=0, spool=Spool(str(tmp_path / "spend.spool")))
    started, interrupt = threading.Event(), threading.Event()

    def write(rows: List[Dict[str, Any]]) -> None:
        if rows[0]["request_id"] == "leader" and not interrupt.is_set():
            started.set()
            time.sleep(0.1)
            interrupt.set()
            raise SystemExit(1)  # what a signal handler raises in the thread it interrupts
        SpendRecorder.write_rows(rec, rows)

    rec.write_rows = write  # type: ignore[method-assign]
    results: Dict[str, Any] = {}
    leader = _settle(rec, "leader", results)
    started.wait(5)
    others = [_settle(rec, "a", results), _settle(rec, "b", results)]
    time.sleep(0.03)
    for t in [leader, *others]:
        t.join(5)
    assert isinstance(results["leader"], SystemExit)
    # The next batch ("a" and "b", queued during the write) is written normally.
    assert results["a"] == results["b"] == "ok"
    _settle(rec, "later", results).join(5)  # a successful write replays the spool
    assert sorted(r["request_id"] for r in spend_rows(store)) == ["a", "b", "later", "leader"]


def test_the_rows_of_a_batch_interrupted_mid_write_reach_the_spool_not_their_owners_threads(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/spend.db")
    migrate(store, [SpendLogPlugin(store)])
    spool = Spool(str(tmp_path / "spend.spool"))
    rec = SpendRecorder(store, retries=0, spool=spool)
    calls: List[int] = []

    def write(rows: List[Dict[str, Any]]) -> None:
        calls.append(len(rows))
        if len(calls) == 1:
            time.sleep(0.1)  # the first write; "victim-batch" rows queue behind it
            SpendRecorder.write_rows(rec, rows)
            return
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second batch's writer is interrupted mid-write
        SpendRecorder.write_rows(rec, rows)

    rec.write_rows = write  # type: ignore[method-assign]
    results: Dict[str, Any] = {}
    first = _settle(rec, "first", results)
    time.sleep(0.03)
    queued = [_settle(rec, f"q{i}", results) for i in range(3)]
    for t in [first, *queued]:
        t.join(5)
    interrupted = [k for k, v in results.items() if isinstance(v, KeyboardInterrupt)]
    assert len(interrupted) == 1 and calls[1] == 3  # only the writer of the 3-row batch sees it
    assert all(v == "ok" for k, v in results.items() if k not in interrupted)
    _settle(rec, "later", results).join(5)  # the spooled batch is written with (or before) the next row
    assert sorted(r["request_id"] for r in spend_rows(store)) == ["first", "later", "q0", "q1", "q2"]


def test_an_interrupted_spool_replay_puts_the_rows_back(tmp_path):
    spool = Spool(str(tmp_path / "spend.spool"))
    spool.append([{"id": "1", "request_id": "r1"}, {"id": "2", "request_id": "r2"}])

    def interrupted(rows: List[Dict[str, Any]]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        spool.drain(interrupted)
    seen: List[Dict[str, Any]] = []
    assert spool.drain(seen.extend) == 2 and [r["id"] for r in seen] == ["1", "2"]
