"""A local JSON-lines file that keeps spend rows the store could not take, until it is back."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

log = logging.getLogger("routeplane.spend")


class Spool:
    """Append-only, shared by every worker process on the host; writers and the drainer take an
    exclusive flock. The drainer keeps it until its rows are in the store and only then empties the
    file: a drainer killed mid-replay leaves every row in place (a second write of a row is a no-op,
    its id is the key). Appenders wait for a replay meanwhile; a second drainer does not."""

    # How often a writer looks for rows another worker process spooled (a stat per
    # request was measurable); rows this process spooled are looked for at once.
    RECHECK_SECONDS = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Its own lock: a drainer (holding the spool's flock) rejects rows while an appender of this
        # process may hold `_lock`, waiting for that flock.
        self._reject_lock = threading.Lock()
        self._appended = False
        self._next_check = 0.0

    def append(self, rows: List[Dict[str, Any]]) -> None:
        """Add `rows` durably, or raise with the file as it was: a write cut short (a full disk) leaves no
        half row behind, and a half row a crash left is closed off, so the next row is a line of its own."""
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode("utf-8")
        with self._lock, open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fd = fh.fileno()
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # the last line is torn (a writer died mid-append)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self._appended = True

    def reject(self, rows: List[Dict[str, Any]]) -> None:
        """Keep rows the database will never take beside the spool (`<path>.rejected`), for a person to look at."""
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows)
        with self._reject_lock, open(self.path + ".rejected", "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(data)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def maybe_pending(self) -> bool:
        """`pending()`, but without touching the file system more than once a second unless this process spooled."""
        now = time.monotonic()
        if not self._appended and now < self._next_check:
            return False
        self._appended, self._next_check = False, now + self.RECHECK_SECONDS
        return self.pending()

    def pending(self) -> bool:
        try:
            return os.path.getsize(self.path) > 0
        except OSError:
            return False

    def drain(self, write_rows: Callable[[List[Dict[str, Any]]], None]) -> int:
        """Hand every spooled row to `write_rows`, then empty the spool; if it raises (or the process dies),
        the rows stay. Returns the count (0 while another drainer is at it). Lines that are no row (torn by
        a crash or a full disk) go to `<path>.rejected` instead of blocking the rows after them."""
        try:
            fh = open(self.path, "r+b")
        except FileNotFoundError:
            return 0
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a writer for a moment, or a drainer writing these rows now
            try:
                rows, torn = _parse(fh.read())
                if rows:
                    write_rows(rows)
                if torn:
                    self.reject([{"unparseable": line} for line in torn])
                    log.error("spend log: %d unreadable line(s) in %s (a write cut short), moved to %s.rejected",
                              len(torn), self.path, self.path)
                fh.truncate(0)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return len(rows)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _parse(data: bytes) -> Tuple[List[Dict[str, Any]], List[str]]:
    """(rows, lines that are not a row)."""
    rows: List[Dict[str, Any]] = []
    torn: List[str] = []
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            torn.append(line)
    return rows, torn
