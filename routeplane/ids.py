"""Unique ids for requests and spend rows without a system call each.

`uuid.uuid4()` reads 16 bytes from the kernel on every call (two per
request cost ~45 µs of CPU on a VM, profiled). These ids need to be unique,
not secret: a per-process generator seeded from the kernel once (and again
in every forked child) gives 128 random bits per id for the price of a
function call. Anything that must be unguessable (tokens, session ids) keeps
using `secrets`.
"""

from __future__ import annotations

import os
import random

_rng = random.Random()  # not the module-level one: a test's random.seed(1) must not repeat ids


def _reseed() -> None:
    _rng.seed(os.urandom(32))


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_hex() -> str:
    """32 hex digits, like `uuid.uuid4().hex` (random.Random is safe to share between threads)."""
    return "%032x" % _rng.getrandbits(128)
