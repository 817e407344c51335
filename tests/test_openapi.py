"""docs/openapi.yaml stays true: every route of the built app is in it and vice versa, and schemathesis
(bounded examples, loopback only) finds no server error in the running gateway."""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Iterator, Set, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, settings

from routeplane.app import build_app
from routeplane.config import DEFAULT_CONFIG, parse_config
from tests.support.gateway import GatewayProcess

SPEC = os.path.join(os.path.dirname(__file__), "..", "docs", "openapi.yaml")
METHODS = {"get", "post", "put", "patch", "delete"}
# 5xx a client may see that are not the gateway's fault: the upstream failed, was overloaded, or timed out.
UPSTREAM_STATUSES = {502, 503, 504, 529}


def spec_operations() -> Set[Tuple[str, str]]:
    with open(SPEC) as fh:
        spec = yaml.safe_load(fh)
    assert spec["openapi"].startswith("3.")
    return {(path, m.upper()) for path, item in spec["paths"].items() for m in item if m in METHODS}


def app_operations(tmp_path: Any) -> Set[Tuple[str, str]]:
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["database"] = {"url": f"sqlite:///{tmp_path}/openapi.db"}
    config["auth"] = {"mode": "api_keys+jwt"}  # the auth plugin mounts its own admin routes (token revocations)
    flask_app = build_app(parse_config(config)).flask_app()
    ops = set()
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".wrong_method"):
            continue  # a rule that only answers 405 (Gemini's method paths take POST alone) is no operation
        path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule.rule)
        ops |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return ops


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Any) -> None:
    documented, served = spec_operations(), app_operations(tmp_path)
    assert sorted(served - documented) == [], "routes missing from docs/openapi.yaml"
    assert sorted(documented - served) == [], "docs/openapi.yaml names routes the app does not serve"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["database"] = {"url": f"sqlite:///{tmp_path_factory.mktemp('openapi')}/rp.db"}
    config["models"]["failing"] = {"targets": [{"provider": "mock", "model": "fail-503"}]}
    gw = GatewayProcess(config, workers=1, threads=8).start()
    yield gw
    gw.stop()


schemathesis = pytest.importorskip("schemathesis")
schema = schemathesis.openapi.from_path(SPEC)


@schema.parametrize()
@settings(max_examples=int(os.environ.get("OPENAPI_FUZZ_EXAMPLES") or 20), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, gateway: GatewayProcess) -> None:
    response = case.call(base_url=gateway.url, timeout=15)
    status = response.status_code
    if status < 500:
        return
    assert status in UPSTREAM_STATUSES, (status, response.text[:500], case.as_curl_command())
    body = json.loads(response.text)
    assert "error" in body, body  # the upstream-caused error in the wire's own shape
