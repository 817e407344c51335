"""pytest plugin (entry point `pytest11`): fixtures for testing routeplane plugins synchronously."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from .testing import Gateway


@pytest.fixture
def routeplane_gateway() -> Callable[..., Gateway]:
    """Factory: `routeplane_gateway(plugins=[...], hooks=[...], script=[...], config={...})`."""

    def make(**options: Any) -> Gateway:
        return Gateway(**options)

    return make
