"""A merged MCP listing's cursor keeps its place in every server it has partly shown (s11): a server whose
list is refetched between two pages, and which other servers overtake meanwhile, goes on where it stood
instead of starting over. The catalog is called directly, with upstreams that hold a refetch until told."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional

from routeplane.mcp.catalog import Catalog
from routeplane.mcp.cursors import Walk
from tests.test_s11_mcp_paging import catalog_of


class Gate:
    """Holds `server`'s next list fetch until `open` (the fetch runs on the catalog's own thread)."""

    def __init__(self, catalog: Catalog, server: str) -> None:
        self.opened = threading.Event()
        up = catalog._upstream(server)
        answer = up.request

        def held(method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
            self.opened.wait(10)
            return answer(method, params)

        up.request = held
        catalog.invalidate(server, ["tools"])  # a list_changed: its next listing refetches

    def open(self) -> None:
        self.opened.set()


def page(catalog: Catalog, cursor: Optional[str]) -> Dict[str, Any]:
    return catalog.listing("tools/list", sorted(catalog.servers), True, cursor, lambda n: True, "")


def names(result: Dict[str, Any]) -> List[str]:
    return [t["name"] for t in result["tools"]]


def rest_of_walk(catalog: Catalog, cursor: Optional[str]) -> List[str]:
    got: List[str] = []
    for _ in range(20):
        if not cursor:
            return got
        result = page(catalog, cursor)
        got += names(result)
        cursor = result.get("nextCursor")
    raise AssertionError(f"the walk did not end: {got}")


def test_a_server_overtaken_while_it_refetches_goes_on_where_it_stood() -> None:
    """Page 1 ends inside a; a's list is then refetched slowly, and page 2 fills from b (which has
    answered). The cursor kept a position for its first server only, so a went back behind b from index 0
    and its first two tools came again: a1 a2 | b1 b2 | b3 a1 | a2 a3 | a4."""
    catalog = catalog_of({"a": ["a1", "a2", "a3", "a4"], "b": ["b1", "b2", "b3"]}, page_size=2)
    try:
        first = page(catalog, None)
        gate = Gate(catalog, "a")
        second = page(catalog, first["nextCursor"])
        gate.open()
        got = names(first) + names(second) + rest_of_walk(catalog, second.get("nextCursor"))
    finally:
        catalog.close()
    assert names(first) == ["a__a1", "a__a2"] and names(second) == ["b__b1", "b__b2"]
    assert got == ["a__a1", "a__a2", "b__b1", "b__b2", "b__b3", "a__a3", "a__a4"], got


def test_a_server_left_behind_a_full_page_goes_on_where_it_stood() -> None:
    """The same, when page 2 fills before a answers and nothing else is left: a alone carried over with
    no position, started again from a1."""
    catalog = catalog_of({"a": ["a1", "a2", "a3"], "b": ["b1", "b2"]}, page_size=2)
    try:
        first = page(catalog, None)
        gate = Gate(catalog, "a")
        second = page(catalog, first["nextCursor"])
        gate.open()
        got = names(first) + names(second) + rest_of_walk(catalog, second.get("nextCursor"))
    finally:
        catalog.close()
    assert names(second) == ["b__b1", "b__b2"] and "nextCursor" in second
    assert got == ["a__a1", "a__a2", "b__b1", "b__b2", "a__a3"], got


def test_two_overtaken_servers_each_keep_their_place() -> None:
    """a is overtaken with a position; b then ends a page and is overtaken in turn while c fills the next:
    both go on where they stood."""
    catalog = catalog_of({"a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"], "c": ["c1", "c2", "c3"]},
                         page_size=2)
    try:
        first = page(catalog, None)  # a1 a2
        gate_a = Gate(catalog, "a")
        second = page(catalog, first["nextCursor"])  # b1 b2: a has not answered
        gate_b = Gate(catalog, "b")
        third = page(catalog, second["nextCursor"])  # c1 c2: neither a nor b has answered
        gate_a.open()
        gate_b.open()
        got = names(first) + names(second) + names(third) + rest_of_walk(catalog, third.get("nextCursor"))
    finally:
        catalog.close()
    assert names(third) == ["c__c1", "c__c2"]
    assert sorted(got) == sorted(f"{s}__{s}{i}" for s in "abc" for i in (1, 2, 3)) and len(got) == 9, got


def test_a_cursor_holding_a_place_in_thousands_of_servers_is_accepted_back() -> None:
    """Every server a walk has left may hold a position (and be late): the cursor must still fit the
    bound its decoder checks."""
    servers = [f"server-{i:05d}" for i in range(5000)]
    catalog = catalog_of({"a": ["x"]}, page_size=1)
    try:
        codec = catalog._cursors
        walk = Walk(list(servers), 123456789, "A" * 12, set(servers),
                    {sid: (987654321, "B" * 12) for sid in servers[1:]})
        back = codec.decode(codec.encode("tools/list", "", servers, walk), "tools/list", "", servers)
    finally:
        catalog.close()
    assert back == walk
