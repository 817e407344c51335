"""Request and spend-row ids: unique, time-ordered, independent of the random module's seed, new after fork."""

from __future__ import annotations

import os
import random
import threading
import time

from routeplane.ids import new_hex


def test_ids_are_unique_across_threads_and_lead_with_the_time() -> None:
    out: list = []

    def draw() -> None:
        out.extend(new_hex() for _ in range(5000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == len(out) == 20000
    assert all(len(x) == 32 and int(x, 16) >= 0 for x in out)
    now_ms = time.time_ns() // 1_000_000
    assert all(abs(int(x[:12], 16) - now_ms) < 60_000 for x in out)
    a = new_hex()
    time.sleep(0.005)
    assert new_hex()[:12] > a[:12]  # later ids sort after earlier ones (index-friendly)


def test_seeding_the_random_module_does_not_repeat_ids() -> None:
    random.seed(1)
    first = new_hex()
    random.seed(1)
    assert new_hex()[12:] != first[12:]


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(w, "".join(new_hex() for _ in range(100)).encode())
        os._exit(0)
    os.close(w)
    parent = {new_hex()[12:] for _ in range(100)}
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    child = {data[i:i + 32].decode()[12:] for i in range(0, len(data), 32)}
    assert len(child) == 100 and not (child & parent)
