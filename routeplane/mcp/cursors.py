"""Where a client's walk through a merged MCP listing stands, carried in a signed, opaque cursor."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

from .jsonrpc import INVALID_PARAMS, MCPError

# A cursor names the servers a walk has left, the late ones among them, and where it stands in the ones
# partly shown, by their place in the configuration (at most 60 characters a server, encoded): its size
# follows the configuration.
CURSOR_BASE_CHARS = 1024
CURSOR_CHARS_PER_SERVER = 64

Position = Tuple[int, str]  # (index, key of the item just before it) in one server's list


@dataclass
class Walk:
    """The servers a walk still has to show, in order; the first from `index`, just after the item whose
    key hashes to `after` (found again if that server's list changed meanwhile). `late` ones already
    outran a listing's deadline: a page shows them once they have answered, but never waits for them.
    `held` are the positions of later servers already partly shown: a page that showed others ahead of
    one (it had not answered yet) must not start it from its first item again."""

    servers: List[str]
    index: int = 0
    after: str = ""
    late: Set[str] = field(default_factory=set)
    held: Dict[str, Position] = field(default_factory=dict)

    def position(self, server: str) -> Position:
        """Where the walk stands in `server`'s list ((0, "") if none of it was shown yet)."""
        if self.servers and server == self.servers[0]:
            return self.index, self.after
        return self.held.get(server, (0, ""))


def item_key(item: Any, field_name: str) -> str:
    """A short fixed-size digest of an item's identity (its name or URI, which may be long)."""
    ident = item.get(field_name) if isinstance(item, dict) else None
    raw = json.dumps(ident, sort_keys=True, default=str).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:9]).decode("ascii")


def resume_index(items: Sequence[Any], index: int, after: str, field_name: str) -> int:
    """Where to go on in `items`: after the item the last page ended with, wherever it is now, so an
    item added or removed upstream between two pages neither repeats nor hides the ones around it."""
    if not after:
        return min(index, len(items))
    if 0 < index <= len(items) and item_key(items[index - 1], field_name) == after:
        return index
    for i, item in enumerate(items):
        if item_key(item, field_name) == after:
            return i + 1
    return min(index, len(items))  # that item is gone: its old place is the best guess


class CursorCodec:
    """Signs walks (HMAC with the gateway's key): a client can hand one back, never forge or edit one."""

    def __init__(self, key: Callable[[], bytes]) -> None:
        self._key = key

    def encode(self, method: str, endpoint: str, servers: Sequence[str], walk: Walk) -> str:
        order = {sid: i for i, sid in enumerate(servers)}
        state = [method, endpoint, _digest(servers), [order[s] for s in walk.servers], walk.index, walk.after,
                 sorted(order[s] for s in walk.late if s in order),
                 sorted([order[s], index, after] for s, (index, after) in walk.held.items())]
        body = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).rstrip(b"=")
        return body.decode("ascii") + "." + self._mac(body)

    def decode(self, cursor: Any, method: str, endpoint: str, servers: Sequence[str]) -> Walk:
        bad = MCPError(INVALID_PARAMS, "Invalid params: unknown or expired cursor.", 200)
        limit = CURSOR_BASE_CHARS + CURSOR_CHARS_PER_SERVER * len(servers)
        if not isinstance(cursor, str) or cursor.count(".") != 1 or len(cursor) > limit:
            raise bad
        body, mac = cursor.split(".")
        if not hmac.compare_digest(self._mac(body.encode("ascii", "replace")).encode(), mac.encode("ascii", "replace")):
            raise bad
        try:
            m, e, digest, walked, index, after, late, held = json.loads(
                base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, TypeError):
            raise bad from None
        # Signed by us, but perhaps under another configuration (the digest) or for another listing.
        if (m, e, digest) != (method, endpoint, _digest(servers)) or not _indices(walked, len(servers)) \
                or not _indices(late, len(servers)) or not set(late) <= set(walked) \
                or not _position(index, after) or not _held(held, walked):
            raise bad
        return Walk([servers[i] for i in walked], index, after, {servers[i] for i in late},
                    {servers[i]: (at, key) for i, at, key in held})

    def _mac(self, body: bytes) -> str:
        mac = hmac.new(self._key(), b"cursor." + body, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _digest(servers: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(servers).encode()).hexdigest()[:12]


def _position(index: Any, after: Any) -> bool:
    return isinstance(index, int) and not isinstance(index, bool) and index >= 0 and isinstance(after, str)


def _held(value: Any, walked: List[int]) -> bool:
    """Positions of distinct servers the walk has left, its first excepted (that one's is the cursor's own)."""
    later = set(walked[1:])
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 3 and type(p[0]) is int and p[0] in later and _position(p[1], p[2])
        for p in value) and len({p[0] for p in value}) == len(value)


def _indices(value: Any, size: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in value) and len(set(value)) == len(value)
