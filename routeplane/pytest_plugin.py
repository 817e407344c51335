"""pytest plugin (entry point `pytest11`): fixtures for testing routeplane plugins synchronously."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from .language_model.executor import MockExecutor
from .testing import Gateway


@pytest.fixture
def routeplane_upstream() -> MockExecutor:
    """A scripted upstream: `.push(Generation | [StreamPart, ...] | RouteplaneError | callable)`; `.calls` records."""
    return MockExecutor()


@pytest.fixture
def routeplane_store(tmp_path: Any) -> Iterator[Any]:
    """A fresh SQLite store in the test's tmp_path, for a plugin with migrations:
    `routeplane_gateway(plugins=[...], store=routeplane_store)` applies them to it."""
    from .store import Store

    store = Store.from_url(f"sqlite:///{tmp_path}/routeplane-test.db")
    yield store
    store.close()


@pytest.fixture
def routeplane_gateway(routeplane_upstream: MockExecutor) -> Iterator[Callable[..., Gateway]]:
    """Factory for a fresh in-process gateway: `routeplane_gateway(plugins=[...], hooks=[...], config={...})`.

    It uses the `routeplane_upstream` fixture as its upstream unless `executor=` or `script=` is given;
    observers run inline, and `.settlements.items` / `.events.items` capture what happened. A store the
    gateway opened from a URL (`store="sqlite:///..."`, or the config's `database.url`) is closed after the test.
    """
    made: List[Gateway] = []

    def make(**options: Any) -> Gateway:
        if "executor" not in options and "script" not in options and "per_provider" not in options:
            options["executor"] = routeplane_upstream
        gateway = Gateway(**options)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()
