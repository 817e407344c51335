"""The spend-log row of one request, as tests read it from a gateway's store."""

from __future__ import annotations

import time
from typing import Any, Dict

from routeplane.store import Store
from routeplane.store.spend_log import spend_rows


def spend_row(db_url: str, rid: str, timeout: float = 10.0) -> Dict[str, Any]:
    """The request's one spend-log row; it is written just after the response, so it is polled briefly."""
    store = Store.from_url(db_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = spend_rows(store, "WHERE request_id = ?".replace("?", store.param), (rid,))
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    finally:
        store.close()
    assert len(rows) == 1, rows
    return rows[0]
