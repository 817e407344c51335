"""Per-server list caches, merged listings with prefixed names, cross-server cursors, and name/URI routing."""

from __future__ import annotations

import functools
import itertools
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .cursors import CursorCodec, Walk, item_key, resume_index
from .fanout import FanOut
from .jsonrpc import INVALID_PARAMS, RESOURCE_NOT_FOUND, MCPError
from .settings import MCPServerConfig
from .upstream import Upstream, UpstreamFailure, log


@dataclass(frozen=True)
class ListKind:
    method: str  # upstream method
    key: str  # result key holding the items
    capability: str  # server capability that must be declared
    name_field: Optional[str]  # the field that is prefixed on /mcp (None: URIs pass through unchanged)
    key_field: str  # what tells one item from another (a cursor resumes after one)


KINDS = {
    "tools/list": ListKind("tools/list", "tools", "tools", "name", "name"),
    "prompts/list": ListKind("prompts/list", "prompts", "prompts", "name", "name"),
    "resources/list": ListKind("resources/list", "resources", "resources", None, "uri"),
    "resources/templates/list": ListKind("resources/templates/list", "resourceTemplates", "resources", None,
                                         "uriTemplate"),
}
FAILURE_HOLD_SECONDS = 5.0  # listings skip a server this long after it failed (calls still try it)
MAX_UPSTREAM_PAGES = 100  # bounds a misbehaving upstream that never stops paginating
# Only guards a runaway config: below it (256 servers) a fetch never queues behind hung ones.
MAX_FETCH_THREADS = 1024
MAX_REFETCHES = 3  # a fetch that every answer finds outdated (list_changed meanwhile) ends on its last one

Items = List[Dict[str, Any]]
Outcome = Union[Items, UpstreamFailure, MCPError]  # a server's items, or why it could not list them


class _Fetch:
    """One upstream list fetch in flight: every listing that needs that list waits on this one."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Outcome = []
        self.overdue: Optional[UpstreamFailure] = None  # set once a listing gave up waiting on it


class PendingLists:
    """The lists one listing needs: all asked for at once, each waited for only when the listing
    reaches it, and all within one deadline from when the listing began."""

    def __init__(self, known: Dict[Tuple[str, str], Outcome], pending: Dict[Tuple[str, str], _Fetch],
                 deadline: float, finished: threading.Condition) -> None:
        self._known = known
        self._pending = pending
        self._deadline = deadline
        self._end = time.monotonic() + deadline
        self._finished = finished  # notified whenever any fetch ends

    def ready(self, key: Tuple[str, str]) -> bool:
        """Whether `key`'s outcome is known without waiting."""
        fetch = self._pending.get(key)
        return fetch is None or fetch.done.is_set()

    def waitable(self, key: Tuple[str, str]) -> bool:
        """Whether this listing may still wait for `key`: its deadline has not passed, and no listing
        before it outwaited the deadline on the same fetch (a hung server costs one deadline, not one
        per listing that comes while its fetch runs). Once the deadline passes, the fetch is overdue."""
        fetch = self._pending.get(key)
        if fetch is None or fetch.done.is_set():
            return True
        if fetch.overdue is None and time.monotonic() >= self._end:
            fetch.overdue = self.late(key[0])
        return fetch.overdue is None

    def wait_any(self, keys: Sequence[Tuple[str, str]]) -> None:
        """Until one of `keys` is ready, or the deadline."""
        with self._finished:
            self._finished.wait_for(lambda: any(self.ready(k) for k in keys), max(0.0, self._end - time.monotonic()))

    def late(self, server: str) -> UpstreamFailure:
        """Why a server that has not answered in time is left out."""
        return UpstreamFailure(server, f"did not list within the {self._deadline:g}s listing deadline", timeout=True)

    def __getitem__(self, key: Tuple[str, str]) -> Outcome:
        """`key`'s outcome, waited for while `waitable`; a failure if not known by then."""
        if key not in self._known:
            fetch = self._pending[key]
            if self.waitable(key):
                fetch.done.wait(max(0.0, self._end - time.monotonic()))
            if fetch.done.is_set():
                self._known[key] = fetch.outcome
            else:
                self.waitable(key)  # marks it overdue
                self._known[key] = fetch.overdue or self.late(key[0])
            del self._pending[key]
        return self._known[key]


class Catalog:
    """What every upstream lists, cached per server and kind for `ttl` seconds (calls are never cached).

    A `notifications/*/list_changed` from an upstream drops that server's
    entries at once. Caches are per worker: another worker's copy expires
    by TTL.
    """

    def __init__(self, servers: Mapping[str, MCPServerConfig], upstream: Callable[[str], Upstream], ttl: float,
                 page_size: int, cursor_key: Callable[[], bytes], deadline: float = 10.0) -> None:
        self.servers = servers
        self._upstream = upstream
        self.ttl = ttl
        self.page_size = page_size
        self.deadline = deadline  # how long one listing waits for the upstreams, all asked at once
        self._cursors = CursorCodec(cursor_key)
        self._cache: Dict[Tuple[str, str], Tuple[float, Items]] = {}
        self._failed: Dict[str, Tuple[float, UpstreamFailure]] = {}
        self._inflight: Dict[Tuple[str, str], _Fetch] = {}
        self._generations: Dict[Tuple[str, str], int] = {}  # bumped by each list_changed for that list
        self._lock = threading.Lock()
        self._finished = threading.Condition()  # notified as each fetch ends (listings wait for the first of several)
        # At most one fetch per (server, kind) runs at a time (a list_changed makes it ask again
        # rather than start another), so a thread for each never leaves one queued behind hung
        # servers, where its listing's deadline would pass before it ever started. Threads start
        # only as fetches need them.
        self._pool = FanOut(min(MAX_FETCH_THREADS, max(1, len(servers) * len(KINDS))), "mcp-list")
        self.fetches = 0  # upstream list fetches (tests check the cache with it)

    def close(self) -> None:
        self._pool.close()

    def invalidate(self, server: str, kinds: Sequence[str]) -> None:
        """A list_changed: drop the cached lists, and outdate the fetches of them already running."""
        with self._lock:
            self._failed.pop(server, None)
            for kind in kinds:
                key = (server, kind + "/list")
                self._cache.pop(key, None)
                self._generations[key] = self._generations.get(key, 0) + 1

    def gather(self, wanted: Sequence[Tuple[str, str]]) -> PendingLists:
        """Each `(server, method)` list, asked of every server at once and waited for `deadline` seconds
        in all. A server not done by then counts as late for this listing (and is not waited for by the
        ones that come while its fetch is still running); the fetch goes on and fills the cache."""
        known: Dict[Tuple[str, str], Outcome] = {}
        pending: Dict[Tuple[str, str], _Fetch] = {}
        for key in wanted:
            try:
                hit = self._fresh(*key)
            except UpstreamFailure as exc:
                known[key] = exc
                continue
            if hit is not None:
                known[key] = hit
                continue
            pending[key] = self._start(*key)
        return PendingLists(known, pending, self.deadline, self._finished)

    def _start(self, server: str, method: str) -> _Fetch:
        with self._lock:
            fetch = self._inflight.get((server, method))
            if fetch is None:
                fetch = self._inflight[(server, method)] = _Fetch()
                self._pool.submit(self._run_fetch, server, method, fetch,
                                  cancel=functools.partial(self._abandon, server, method, fetch))
        return fetch

    def _abandon(self, server: str, method: str, fetch: _Fetch) -> None:
        """A fetch the closing pool dropped before it started: its listings stop waiting, as on a failed server."""
        self._finish(server, method, fetch, UpstreamFailure(server, "was not listed: the gateway is shutting down"))

    def _run_fetch(self, server: str, method: str, fetch: _Fetch) -> None:
        outcome: Outcome = []
        try:
            for _ in range(1 + MAX_REFETCHES):
                with self._lock:
                    generation = self._generations.get((server, method), 0)
                outcome = self._ask(server, method)
                with self._lock:
                    # A list_changed that came meanwhile may postdate what the upstream answered:
                    # neither the cache nor the listings waiting here may have that answer.
                    if self._generations.get((server, method), 0) == generation:
                        self._settle(server, method, outcome)
                        break
        except Exception:  # a bug here must still end the listings waiting on it, as a failed server
            log.exception("listing %s from MCP server %r failed", method, server)
            outcome = UpstreamFailure(server, "could not be listed (internal error)")
        finally:
            self._finish(server, method, fetch, outcome)

    def _finish(self, server: str, method: str, fetch: _Fetch, outcome: Outcome) -> None:
        fetch.outcome = outcome
        with self._lock:
            if self._inflight.get((server, method)) is fetch:
                del self._inflight[(server, method)]
        with self._finished:
            fetch.done.set()
            self._finished.notify_all()

    def _fresh(self, server: str, method: str) -> Optional[Items]:
        """The cached list if fresh; raises the server's recent failure while it is held."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((server, method))
            failed = self._failed.get(server)
        if hit is not None and hit[0] > now:
            return hit[1]
        if failed is not None and failed[0] > now:
            # A server that just failed is not asked again for a few seconds: a hung upstream
            # would otherwise cost every listing its full timeout.
            raise failed[1]
        return None

    def _ask(self, server: str, method: str) -> Outcome:
        """Every item the server lists for `method` (all upstream pages), or why it could not list them."""
        kind = KINDS[method]
        try:
            up = self._upstream(server)
            up.ensure_initialized()
            items: Items = []
            if kind.capability in up.capabilities:
                cursor: Optional[str] = None
                for _ in range(MAX_UPSTREAM_PAGES):
                    result = up.request(method, {"cursor": cursor} if cursor else {})
                    page = result.get(kind.key)
                    if not isinstance(page, list):
                        raise UpstreamFailure(server, f"answered {method} without a {kind.key!r} list")
                    items.extend(i for i in page if isinstance(i, dict))
                    cursor = result.get("nextCursor")
                    if not cursor or not isinstance(cursor, str):
                        break
        except (UpstreamFailure, MCPError) as exc:
            return exc
        with self._lock:
            self.fetches += 1
        return items

    def _settle(self, server: str, method: str, outcome: Outcome) -> None:
        """Cache a list, or hold a failure; under the lock."""
        if isinstance(outcome, list):
            self._failed.pop(server, None)
            if self.ttl > 0:
                self._cache[(server, method)] = (time.monotonic() + self.ttl, outcome)
        elif isinstance(outcome, UpstreamFailure):
            self._failed[server] = (time.monotonic() + min(FAILURE_HOLD_SECONDS, self.ttl), outcome)

    # --- merged listings --------------------------------------------------------

    def listing(self, method: str, servers: Sequence[str], prefixed: bool, cursor: Optional[str],
                visible: Callable[[str], bool], endpoint: str) -> Dict[str, Any]:
        """One page of the merged list.

        The page takes servers in order as they answer. One that has not answered is waited for (one
        deadline in all) only while the page has room that the servers which have answered cannot fill:
        a hung server never holds a page healthy ones can fill, and is carried to a later page instead.
        The cursor carries what is left (the servers, a position in each partly shown, which are late), so
        a client walking the pages sees each item once whichever order the servers answer in, and gets
        no cursor once the gateway knows nothing is left.
        """
        kind = KINDS[method]
        walk = self._cursors.decode(cursor, method, endpoint, servers) if cursor else Walk(list(servers))
        lists = self.gather([(sid, method) for sid in walk.servers])
        out: Items = []
        failed: List[Tuple[str, Exception]] = []
        cut: Optional[Tuple[str, int, str]] = None  # (server, index, key before it) where the page filled

        def shown(sid: str, outcome: Items) -> Iterator[Tuple[int, Dict[str, Any]]]:
            """`sid`'s items the client sees, from where the walk stands in its list."""
            start = resume_index(outcome, *walk.position(sid), kind.key_field)
            for index in range(start, len(outcome)):
                item = self._expose(outcome[index], kind, self.servers[sid].prefix if prefixed else "")
                if item is not None and visible(item.get(kind.name_field or "", "")):
                    yield index, item

        def show(sid: str) -> None:
            nonlocal cut
            outcome = lists[(sid, method)]
            if not isinstance(outcome, list):
                failed.append((sid, outcome))
                return
            for index, item in shown(sid, outcome):
                if len(out) >= self.page_size:
                    cut = (sid, index, item_key(outcome[index - 1], kind.key_field) if index else "")
                    return
                out.append(item)

        def can_fill(ready: List[str]) -> bool:
            room = self.page_size - len(out)
            for sid in ready:
                outcome = lists[(sid, method)]
                room -= sum(1 for _ in itertools.islice(shown(sid, outcome), room)) if isinstance(outcome, list) else 0
                if room <= 0:
                    return True
            return False

        queue = list(walk.servers)
        aside: List[str] = []  # not answered yet, and not to be waited for by this page
        while cut is None and queue:
            sid = queue[0]
            if lists.ready((sid, method)):
                show(queue.pop(0))
            elif len(out) >= self.page_size:
                break  # full: whether it has more, only a later page can tell
            elif sid in walk.late or not lists.waitable((sid, method)):
                walk.late.add(sid)
                aside.append(queue.pop(0))
            else:
                ready = [s for s in queue if lists.ready((s, method))]
                if can_fill(ready):
                    queue.remove(ready[0])
                    show(ready[0])
                else:
                    lists.wait_any([(s, method) for s in queue if s not in walk.late and not lists.ready((s, method))])
        if cut is None and len(out) < self.page_size:
            # Room left, so every server still not answered had its deadline: the walk ends without them.
            failed.extend((sid, lists.late(sid)) for sid in aside)
            aside = []
        result: Dict[str, Any] = {kind.key: out}
        left = set(queue + aside)
        if cut is not None or left:
            rest = [s for s in walk.servers if s in left]
            # A server this page passed over keeps its place: shown from its first item again, it would repeat.
            held = {s: walk.position(s) for s in rest if walk.position(s) != (0, "")}
            index, after = cut[1:] if cut else held.pop(rest[0], (0, ""))
            result["nextCursor"] = self._cursors.encode(method, endpoint, servers, Walk(
                ([cut[0]] if cut else []) + rest, index, after, walk.late & left, held))
        if failed:
            # One failing (or hung) upstream must not fail the listing: omit it, say so, log it.
            for sid, why in failed:
                log.warning("listing %s from MCP server %r failed: %s", method, sid, why)
            result["_meta"] = {"routeplane/unavailable": [{"server": sid, "error": str(why)} for sid, why in failed]}
        return result

    @staticmethod
    def _expose(item: Dict[str, Any], kind: ListKind, prefix: str) -> Optional[Dict[str, Any]]:
        if kind.name_field is None:
            return dict(item)
        name = item.get(kind.name_field)
        if not isinstance(name, str):
            return None
        return {**item, kind.name_field: prefix + name}

    # --- routing ------------------------------------------------------------------

    def owner_of_name(self, exposed: str, servers: Sequence[str]) -> Tuple[str, str]:
        """(server, upstream name) of a prefixed name: the longest matching prefix wins."""
        best: Optional[str] = None
        for sid in servers:
            prefix = self.servers[sid].prefix
            if exposed.startswith(prefix) and len(exposed) > len(prefix):
                if best is None or len(prefix) > len(self.servers[best].prefix):
                    best = sid
        if best is None:
            raise MCPError(INVALID_PARAMS, f"Unknown name {exposed!r}: no server prefix matches it.", 200)
        return best, exposed[len(self.servers[best].prefix):]

    def owner_of_uri(self, uri: str, servers: Sequence[str]) -> str:
        """The one server listing `uri` (exactly, else by template). Two owners is an error, never a guess."""
        exact: List[str] = []
        templated: List[str] = []
        unasked: List[str] = []  # servers whose lists could not be read
        lists = self.gather([(sid, kind) for sid in servers for kind in ("resources/list", "resources/templates/list")])
        for sid in servers:
            resources, templates = lists[(sid, "resources/list")], lists[(sid, "resources/templates/list")]
            if isinstance(resources, list) and any(r.get("uri") == uri for r in resources):
                exact.append(sid)
            elif isinstance(resources, list) and isinstance(templates, list):
                if any(_template_matches(t.get("uriTemplate"), uri) for t in templates):
                    templated.append(sid)
            else:
                failure = resources if not isinstance(resources, list) else templates
                log.warning("resource lookup on MCP server %r failed: %s", sid, failure)
                unasked.append(sid)
        owners = exact or templated
        if len(owners) > 1:
            raise MCPError(INVALID_PARAMS, f"Ambiguous resource {uri!r}: servers {owners} all provide it; read it "
                           "through /mcp/<server> instead.", 200, data={"uri": uri, "servers": owners})
        if not owners:
            data: Dict[str, Any] = {"uri": uri}
            message = "Resource not found"
            if unasked:
                # It may be theirs: say so, as a listing notes the servers it left out (a bare "not found"
                # for a server's outage reads as final).
                data["unavailable"] = unasked
                message += f" on the MCP servers that answered; {unasked} could not be asked"
            raise MCPError(RESOURCE_NOT_FOUND, message, 200, data=data)
        return owners[0]


_VARIABLE = re.compile(r"\{[^}]*\}")


def _template_matches(template: Any, uri: str) -> bool:
    """RFC 6570 level-1 matching: each `{var}` matches one non-empty run without '/'.

    Linear, never a backtracking regex: the URI is the client's (up to the body limit), and
    `[^/]+-[^/]+` or `{a}{b}{c}…` patterns backtrack for minutes on a crafted one.
    """
    if not isinstance(template, str) or "{" not in template:
        return False
    literals = _VARIABLE.split(template)
    if len(literals) == 1:
        return False
    pattern_segments = "\x00".join(literals).split("/")  # variables never span a '/'
    uri_segments = uri.split("/")
    return len(pattern_segments) == len(uri_segments) and all(
        _segment_matches(p.split("\x00"), u) for p, u in zip(pattern_segments, uri_segments))


def _segment_matches(literals: List[str], segment: str) -> bool:
    """`literals` joined by non-empty variables; leftmost-first is exact for that (as for `*` globs)."""
    if len(literals) == 1:
        return literals[0] == segment
    first, last = literals[0], literals[-1]
    end = len(segment) - len(last)
    if not segment.startswith(first) or not segment.endswith(last):
        return False
    pos = len(first)
    for literal in literals[1:-1]:
        found = segment.find(literal, pos + 1, end - 1)
        if found < 0:
            return False
        pos = found + len(literal)
    return pos + 1 <= end
