"""An inbound x-request-id is kept when it is sane, and replaced when it is a credential."""

from __future__ import annotations

from typing import Any

import pytest

from routeplane.app import build_app
from routeplane.config import parse_config

RPK = "rpk_0123456789abcdef_" + "B" * 43
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
UPSTREAM = "sk-proj-" + "C" * 40


@pytest.fixture
def client(tmp_path: Any) -> Any:
    config = parse_config({"database": {"url": f"sqlite:///{tmp_path}/rp.db"},
                           "providers": {"mock": {"protocol": "mock"}},
                           "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}}})
    return build_app(config).flask_app().test_client()


@pytest.mark.parametrize("rid", [RPK, JWT, UPSTREAM])
def test_a_credential_as_the_request_id_is_replaced(client: Any, rid: str) -> None:
    r = client.post("/v1/chat/completions", headers={"x-request-id": rid},
                    json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_") and rid not in r.get_data(as_text=True)


def test_a_sane_request_id_is_kept(client: Any) -> None:
    r = client.post("/v1/chat/completions", headers={"x-request-id": "trace-42.a:b"},
                    json={"model": "default", "messages": [{"role": "user", "content": "x"}]})
    assert r.headers["x-request-id"] == "trace-42.a:b"
