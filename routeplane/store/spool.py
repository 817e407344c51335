"""A local JSON-lines file that keeps spend rows the store could not take, until it is back."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List

log = logging.getLogger("routeplane.spend")


class Spool:
    """Append-only, shared by every worker process on the host; writers and the drainer take
    an exclusive flock, the drainer only long enough to read the file and empty it."""

    # How often a writer looks for rows another worker process spooled (a stat per
    # request was measurable); rows this process spooled are looked for at once.
    RECHECK_SECONDS = 1.0

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._appended = False
        self._next_check = 0.0

    def append(self, rows: List[Dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self._appended = True

    def reject(self, rows: List[Dict[str, Any]]) -> None:
        """Keep rows the database will never take beside the spool (`<path>.rejected`), for a person to look at."""
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows)
        with self._lock, open(self.path + ".rejected", "a", encoding="utf-8") as fh:
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
        """Hand every spooled row to `write_rows`; on failure they go back to the spool. Returns the count."""
        try:
            fh = open(self.path, "r+", encoding="utf-8")
        except FileNotFoundError:
            return 0
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                rows = [json.loads(line) for line in fh if line.strip()]
                fh.truncate(0)  # taken: another drainer finds it empty, writers append from the start
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        if not rows:
            return 0
        try:
            write_rows(rows)
        except BaseException:  # an interrupted replay (KeyboardInterrupt, SystemExit) must not lose them either
            self.append(rows)  # back in line; their ids make a second write of any of them a no-op
            raise
        return len(rows)
