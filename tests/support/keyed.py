"""A gateway under gunicorn with `auth.mode: api_keys` on SQLite and keys minted before it starts."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict

from routeplane.app import build_app
from routeplane.auth.store import AuthStore
from routeplane.config import DEFAULT_CONFIG, parse_config
from routeplane.store import migrate
from tests.support.gateway import GatewayProcess


def keyed_gateway(db_dir: Any, mint: Callable[[AuthStore], Dict[str, str]]) -> Dict[str, Any]:
    """{"gw": the started gateway, **what `mint` returned}; `mint` creates keys in the migrated store."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["database"] = {"url": f"sqlite:///{db_dir}/rp.db"}
    config["auth"] = {"mode": "api_keys"}
    app = build_app(parse_config(config))
    migrate(app.store, app.plugins)
    try:
        keys = mint(AuthStore(app.store))
    finally:
        app.store.close()
    return {"gw": GatewayProcess(config, workers=1, threads=4).start(), **keys}
