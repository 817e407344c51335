"""The master's count of recycle replacements across TTOU, HUP and signal races; its signal handlers never kill it."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace
from typing import Any, Iterator, List

import pytest

from routeplane import import_paths

pytestmark = pytest.mark.skipif(not getattr(signal, "SIGRTMIN", None), reason="recycling needs real-time signals")


@pytest.fixture
def conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith("ROUTEPLANE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    import routeplane.gunicorn_conf as conf

    monkeypatch.setattr(conf, "_private_dir", [str(tmp_path)])
    if hasattr(conf, "_Replacements"):
        monkeypatch.setattr(conf, "_replacements", conf._Replacements())
    monkeypatch.setattr(os, "kill", lambda pid, sig: None)  # announce_recycle's signal to the master
    monkeypatch.setattr(conf, "check_reloaded_config", lambda server: None)
    monkeypatch.setattr(import_paths.WATCH, "refresh", lambda: [])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, conf.RECYCLE_SIGNAL)}
    yield conf
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


class _Log:
    def __init__(self) -> None:
        self.errors: List[str] = []

    def error(self, msg: str, *args: Any) -> None:
        self.errors.append(msg % args)

    info = error


class _Master:
    """The arbiter's parts the hooks touch; `setup()` is what a HUP does to the count."""

    def __init__(self, workers: int) -> None:
        self.num_workers = workers
        self.cfg = SimpleNamespace(workers=workers)
        self.log = _Log()
        self.wakeups = 0

    def wakeup(self) -> None:
        self.wakeups += 1

    def setup(self) -> None:
        self.num_workers = self.cfg.workers


def _recycle(conf: Any, master: _Master, pid: int) -> SimpleNamespace:
    worker = SimpleNamespace(pid=pid, ppid=99)
    conf.announce_recycle(worker)
    conf._start_replacements(master)
    return worker


def test_a_counted_recycle_is_given_back_after_an_operator_ttou(conf: Any) -> None:
    master = _Master(2)
    retiring = _recycle(conf, master, 5001)
    assert master.num_workers == 3
    master.num_workers -= 1  # TTOU: the operator wants one worker fewer
    conf.child_exit(master, retiring)
    assert master.num_workers == 1  # before: stuck at 2, every such recycle creeping the count up


def test_an_old_worker_exiting_after_a_hup_leaves_a_new_replacement_counted(conf: Any) -> None:
    master = _Master(2)
    old = _recycle(conf, master, 5002)
    master.setup()  # HUP
    conf.on_reload(master)
    new = _recycle(conf, master, 5003)
    assert master.num_workers == 3
    conf.child_exit(master, old)  # its slot was dropped by the HUP already
    assert master.num_workers == 3  # before: 2, and manage_workers SIGTERMed a worker while `new` drains
    conf.child_exit(master, new)
    assert master.num_workers == 2


def test_a_recycle_counted_between_the_reset_and_on_reload_is_given_back(conf: Any) -> None:
    master = _Master(2)
    old = _recycle(conf, master, 5004)
    master.setup()
    racing = _recycle(conf, master, 5005)  # its signal handled inside reload(), before on_reload
    conf.on_reload(master)
    conf.child_exit(master, old)
    assert master.num_workers == 3
    conf.child_exit(master, racing)
    assert master.num_workers == 2


def test_the_count_never_drops_below_one_worker(conf: Any) -> None:
    master = _Master(1)
    retiring = _recycle(conf, master, 5006)
    master.num_workers -= 1  # TTOU at 2
    conf.child_exit(master, retiring)
    assert master.num_workers == 1


class _RacingMaster(_Master):
    """Delivers the recycle signal once, between child_exit's reading and writing of num_workers."""

    fired = False
    armed = 0  # the signal to deliver, once armed

    @property
    def num_workers(self) -> int:
        return self._count

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        if self.armed and not self.fired:
            self.fired = True
            signal.raise_signal(self.armed)
        self._count = value


def test_a_recycle_signal_during_child_exit_is_not_lost(conf: Any) -> None:
    master = _RacingMaster(2)
    retiring = _recycle(conf, master, 5007)
    conf.announce_recycle(SimpleNamespace(pid=5008, ppid=99))  # its signal is about to land
    signal.signal(conf.RECYCLE_SIGNAL, lambda _sig, _frame: conf._start_replacements(master))
    master.armed = conf.RECYCLE_SIGNAL
    conf.child_exit(master, retiring)
    assert master.fired and master.num_workers == 3  # before: 2, the other worker's replacement lost


def test_the_recycle_handler_survives_a_missing_private_directory(conf: Any, tmp_path: Any) -> None:
    conf._private_dir[:] = [str(tmp_path / "cleaned-by-tmpfiles")]
    master = _Master(2)
    conf.when_ready(master)
    signal.getsignal(conf.RECYCLE_SIGNAL)(conf.RECYCLE_SIGNAL, None)  # before: FileNotFoundError, the server stopped
    assert master.num_workers == 2 and master.wakeups == 1
    assert any("recycle markers" in line for line in master.log.errors), master.log.errors


def test_the_sigterm_chain_survives_a_missing_private_directory(conf: Any, tmp_path: Any) -> None:
    conf._private_dir[:] = [str(tmp_path / "cleaned-by-tmpfiles")]
    stops: List[int] = []
    signal.signal(signal.SIGTERM, lambda sig, _frame: stops.append(sig))  # gunicorn's own: a graceful stop
    master = _Master(2)
    conf.when_ready(master)
    signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # before: FileNotFoundError, a quick stop
    assert stops == [signal.SIGTERM]
    assert any("stopping" in line for line in master.log.errors), master.log.errors
