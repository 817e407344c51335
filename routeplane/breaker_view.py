"""The circuit breakers of every worker, for operators: published to the store by each worker, merged on read.

A breaker lives in one worker's memory (language_model/cooldown.py), and a
request is answered by any worker, so an operator cannot ask "the" gateway
which targets it is skipping. Each worker's periodic stats flush
(metrics.StatsFlusher) therefore replaces that worker's rows in
`routeplane_breakers` with its breakers that are not closed — nothing is
written on the request path, and a worker with every breaker closed writes
nothing at all once its last rows are gone. Readers (/admin/metrics, the
Prometheus /metrics of the observe plugin, the dashboard) merge the rows of
every worker that reported recently; a worker that died stops refreshing its
rows, and they are ignored after `stale_after(interval)` seconds.

Per-credential (`provider:model#…`) and per-endpoint (`provider:model@…`)
breakers are counted under their target with a `scope`, never named: their
fingerprints are per process, so they would not even match across workers,
and tenants would make the label set unbounded. Provider and model names
are stored as the worker saw them and folded to the configured names on read
(NameBounds), like the spend log.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from .metrics import NameBounds

if TYPE_CHECKING:  # pragma: no cover
    from .app import App
    from .language_model.cooldown import BreakerState, CooldownTracker
    from .store import Store

BREAKERS_TABLE = "routeplane_breakers"
SCOPES = ("target", "endpoint", "credential")  # the shared breaker; another base URL; another credential
_COLS = ("worker, n, host, pid, provider, model, scope, open_breakers, half_open_breakers, failures, open_until,"
         " reason, updated_at")
_ENDPOINT = re.compile(r"@[0-9a-f]{8}\Z")  # routing.RoutingTarget.breaker_key's endpoint suffix
_REASON = re.compile(r"[A-Za-z_]{1,64}\Z")
_STATUS = re.compile(r"\d{3}\Z")


def stale_after(interval: float) -> float:
    """Seconds after which a worker's rows no longer count: a few of its flush intervals (one may be slow)."""
    return max(3 * interval, interval + 5.0)


def scrub_reason(reason: str) -> str:
    """An error class name and an HTTP status at most (`UpstreamStatusError 503`), or `unknown`.

    The tracker records only those (cooldown.py), but this text leaves the
    process for a shared table and admin pages, so anything else — a
    message that quotes an upstream answer, a URL, a key — is cut here too.
    """
    words = reason.split()
    if not words or not _REASON.match(words[0]):
        return "unknown"
    return words[0] + (f" {words[1]}" if len(words) > 1 and _STATUS.match(words[1]) else "")


def configured_labels(config: Any) -> FrozenSet[str]:
    """The `provider:model` of every configured target: such a label is never read as an endpoint's key."""
    return frozenset(t.label for r in config.routes for t in r.targets)


@dataclass
class _Group:
    """One worker's breakers of one (provider, model, scope)."""

    open: int = 0
    half_open: int = 0
    failures: int = 0
    open_until: float = 0.0
    reason: str = ""


class BreakerPublisher:
    """Replaces one worker's rows with its breakers that are not closed (called by the stats flush thread)."""

    def __init__(self, tracker: "CooldownTracker", configured: Iterable[str],
                 clock: Callable[[], float] = time.time, expire_after: float = stale_after(5.0)) -> None:
        self.tracker = tracker
        self.configured = frozenset(configured)
        self.expire_after = expire_after
        self._clock = clock
        self._published = False  # rows of this worker may be in the table

    def publish(self, store: "Store", worker: str, host: str, pid: int, *, final: bool = False) -> bool:
        """Write this worker's rows (none when `final`: the worker stops); False when there was nothing to do.

        While any breaker is open the rows are rewritten on every call: that
        refreshes `updated_at`, which tells readers the worker is alive. The
        same write sweeps rows that every reader already ignores (dead workers).
        """
        now = self._clock()
        groups = {} if final else self.groups(now)
        if not groups and not self._published:
            return False
        rows = [(worker, n, host[:255], pid, provider, model, scope, g.open, g.half_open, g.failures, g.open_until,
                 g.reason, now) for n, ((provider, model, scope), g) in enumerate(sorted(groups.items()))]
        with store.connection() as db:
            p = db.param
            with db.atomic():
                db.execute_sql(f"DELETE FROM {BREAKERS_TABLE} WHERE worker = {p} OR updated_at < {p}",
                               (worker, now - self.expire_after)).close()
                for row in rows:
                    db.execute_sql(f"INSERT INTO {BREAKERS_TABLE} ({_COLS}) VALUES ({', '.join([p] * 13)})",
                                   row).close()
        self._published = bool(rows)
        return True

    def groups(self, now: float) -> Dict[Tuple[str, str, str], _Group]:
        """This worker's non-closed breakers by (provider, model, scope); `open_until` on the wall clock."""
        out: Dict[Tuple[str, str, str], _Group] = {}
        for s in self.tracker.states():
            if s.state == "closed":  # counting failures, but calling: nothing to see
                continue
            g = out.setdefault(self._owner(s), _Group())
            until = now + s.retry_in if s.state == "open" else now
            if s.state == "open":
                g.open += 1
            else:
                g.half_open += 1
            g.failures = max(g.failures, s.failures)
            if until >= g.open_until:  # the latest to reopen tells why the target is out now
                g.open_until, g.reason = until, scrub_reason(s.reason)
        return out

    def _owner(self, s: "BreakerState") -> Tuple[str, str, str]:
        owner = s.owner or s.label
        scope = "credential" if owner != s.label else "target"
        # A configured model may itself end in `@` and 8 hex (Vertex's `claude-…@20240620`): only a label the
        # config does not have is read as another endpoint of a configured one.
        if owner not in self.configured and _ENDPOINT.search(owner):
            owner, scope = owner[:-9], "endpoint" if scope == "target" else scope
        provider, _, model = owner.partition(":")
        return _text(provider, 100), _text(model, 255), scope


def _text(value: str, limit: int) -> str:
    """A name every dialect stores: PostgreSQL refuses NUL, MySQL's utf8mb4 refuses lone surrogates."""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:limit]


# --- reading ----------------------------------------------------------------------------------------------------

Row = Tuple[str, str, str, str, int, int, int, float, str, float]  # worker, provider, model, scope, ... updated_at


def breaker_view(store: "Store", names: NameBounds, stale: float, now: Optional[float] = None) -> Dict[str, Any]:
    """Every recently reporting worker's breakers, merged per (target, scope) (see `merge`)."""
    now = time.time() if now is None else now
    rows = store.execute(
        f"SELECT worker, provider, model, scope, open_breakers, half_open_breakers, failures, open_until, reason,"
        f" updated_at FROM {BREAKERS_TABLE} WHERE updated_at >= {store.param}", (now - stale,))
    return {"targets": merge(rows, names, now), "stale_after_seconds": stale}


def merge(rows: Sequence[Row], names: NameBounds, now: float) -> List[Dict[str, Any]]:
    """One entry per (target, scope), open ones first.

    `open`/`half_open` count breakers (for scope `target`, one per worker):
    an open row whose period has passed reads as half-open (the next request
    probes), since its worker may not have flushed since. `workers` counts the
    workers with any such breaker, `failures` is the highest consecutive count,
    `reopens_in` the longest wait left, `reason` the latest opened one's.
    """
    merged: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    latest: Dict[Tuple[str, str, str], float] = {}
    for worker, provider, model, scope, n_open, n_half, failures, until, reason, _updated in rows:
        p, m = names.name("provider", provider), names.name("model", model)
        key = (p, m, scope)
        e = merged.setdefault(key, {"target": f"{p}:{m}", "provider": p, "model": m, "scope": scope,
                                    "state": "half_open", "workers": set(), "open": 0, "half_open": 0,
                                    "failures": 0, "reopens_in": 0.0, "reason": ""})
        until = float(until)
        if until > now:
            e["open"] += int(n_open)
            e["reopens_in"] = max(e["reopens_in"], round(until - now, 1))
        else:
            n_half = int(n_half) + int(n_open)
        e["half_open"] += int(n_half)
        e["workers"].add(worker)
        e["failures"] = max(e["failures"], int(failures))
        if until >= latest.get(key, float("-inf")):
            latest[key], e["reason"] = until, reason
    out = []
    for e in merged.values():
        e["workers"] = len(e["workers"])
        e["state"] = "open" if e["open"] else "half_open"
        out.append(e)
    out.sort(key=lambda e: (e["state"] != "open", e["target"], SCOPES.index(e["scope"]) if e["scope"] in SCOPES
                            else len(SCOPES)))
    return out


def app_view(app: "App", flush: bool = True) -> Dict[str, Any]:
    """The breakers as the admin views show them: every worker's from the store, or this worker's without one.
    `flush` writes this worker's first, so what an operator just caused on it shows at once."""
    names = NameBounds.from_config(app.config)
    if app.store is None:
        now = time.time()
        groups = BreakerPublisher(app.pipeline.cooldown, configured_labels(app.config)).groups(now)
        rows = [("this", p, m, s, g.open, g.half_open, g.failures, g.open_until, g.reason, now)
                for (p, m, s), g in groups.items()]
        return {"targets": merge(rows, names, now), "stale_after_seconds": None,
                "source": "this worker only (no store configured)"}
    flusher = app.stats_flusher
    if flush and flusher is not None:
        flusher.flush_now()
    interval = flusher.interval if flusher is not None else app.config.server.stats_flush_seconds
    return dict(breaker_view(app.store, names, stale_after(interval)), source="every worker (store)")
