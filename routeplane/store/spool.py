"""A local JSON-lines file that keeps spend rows the store could not take, until it is back."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from typing import IO, Any, Callable, Dict, List, Tuple

log = logging.getLogger("routeplane.spend")


class Spool:
    """Append-only, shared by every worker process on the host; writers take an exclusive flock on it.

    A drainer moves the spool's lines to `<path>.draining` under that flock (as long as an append takes),
    then writes them to the store holding only the flock of `.draining`, and empties `.draining` once they
    are in: a drainer killed mid-replay leaves every row in place (a second write of a row is a no-op, its
    id is the key), and appenders never wait for the database (its retries, connect timeouts or a hung
    connection would stall the spend writer of every worker on the host). A second drainer does not wait.
    """

    # How often a writer looks for rows another worker process spooled (a stat per
    # request was measurable); rows this process spooled are looked for at once.
    RECHECK_SECONDS = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Its own lock: a drainer rejects rows while an appender of this process may hold `_lock`,
        # waiting for the spool's flock (held by the drainer for as long as it moves the lines).
        self._reject_lock = threading.Lock()
        self.draining_path = path + ".draining"
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
        return _size(self.path) > 0 or _size(self.draining_path) > 0

    def drain(self, write_rows: Callable[[List[Dict[str, Any]]], None]) -> int:
        """Hand every spooled row to `write_rows`, then forget them; if it raises (or the process dies),
        the rows stay. Returns the count (0 while another drainer is at it). Lines that are no row (torn by
        a crash or a full disk) go to `<path>.rejected` instead of blocking the rows after them."""
        if not os.path.exists(self.path) and not os.path.exists(self.draining_path):
            return 0
        with open(self.draining_path, "a+b") as work:
            try:
                fcntl.flock(work, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another drainer is writing these rows now
            try:
                self._take(work)
                work.seek(0)
                rows, torn = _parse(work.read())
                if rows:
                    write_rows(rows)  # the spool itself is free meanwhile: appenders do not wait for the store
                if torn:
                    self.reject([{"unparseable": line} for line in torn])
                    log.error("spend log: %d unreadable line(s) in %s (a write cut short), moved to %s.rejected",
                              len(torn), self.path, self.path)
                work.truncate(0)
                work.flush()
                os.fsync(work.fileno())
            finally:
                fcntl.flock(work, fcntl.LOCK_UN)
        return len(rows)

    def _take(self, work: IO[bytes]) -> None:
        """Move the spool's lines to the end of `work` (`.draining`, its flock held). Under the spool's flock for
        a copy and an fsync, as an append. Copied before the spool is emptied: a crash in between leaves a row in
        both files, and a second write of a row is a no-op."""
        try:
            spool = open(self.path, "r+b")
        except FileNotFoundError:
            return
        with spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            try:
                data = spool.read()
                if not data:
                    return
                fd = work.fileno()
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # the last line of `.draining` is torn (a drainer died mid-copy)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)  # the rows stay in the spool, whole
                    raise
                spool.truncate(0)
                spool.flush()
                os.fsync(spool.fileno())
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


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
