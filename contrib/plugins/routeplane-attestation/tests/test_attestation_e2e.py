"""Real gunicorn from a config file, the plugin found through its entry point, the official openai SDK as client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, Tuple

import openai
import pytest
from attestation_support import AttestationServer, provider_section
from openai import OpenAI

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def setup() -> Iterator[Tuple[GatewayProcess, AttestationServer, AttestationServer]]:
    with AttestationServer() as good, AttestationServer(seed=b"\x05" * 32) as bad:
        good.delay = 0.5  # the stampede test needs requests to pile up behind one verification
        config: Dict[str, Any] = {
            "providers": {
                "tee": {"protocol": "mock", "confidential": True},
                "tee2": {"protocol": "mock", "confidential": True},
                "plain": {"protocol": "mock"},
            },
            "models": {
                "only-tee": {"targets": [{"provider": "tee", "model": "echo"}]},
                "only-tee2": {"targets": [{"provider": "tee2", "model": "echo"}]},
                "mixed2": {"targets": [{"provider": "tee2", "model": "echo"}, {"provider": "plain", "model": "echo"}]},
            },
            "plugins": {"attestation": {
                "policy": "enforce",
                "cache": {"unverified_ttl": 0},  # so the test can flip the bad server's mode
                "providers": {"tee": provider_section(good, timeout=5), "tee2": provider_section(bad, timeout=0.5)},
            }},
        }
        gw = GatewayProcess(config, workers=1, threads=16).start()
        try:
            yield gw, good, bad
        finally:
            gw.stop()


def client(gw: GatewayProcess) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_stampede_of_20_requests_one_verification(setup: Tuple[GatewayProcess, AttestationServer, Any]) -> None:
    gw, good, _bad = setup
    c = client(gw)

    def one(i: int) -> str:
        r = c.chat.completions.create(model="only-tee", messages=[{"role": "user", "content": f"hi {i}"}])
        return r.choices[0].message.content or ""

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert answers == [f"You said: hi {i}" for i in range(20)]
    assert good.hits == 1, gw.logs()
    c.close()


@pytest.mark.parametrize("mode", ["wrong_measurement", "stale", "http_500", "timeout"])
def test_unverified_only_target_is_503_for_the_sdk(setup: Tuple[GatewayProcess, Any, AttestationServer],
                                                  mode: str) -> None:
    gw, _good, bad = setup
    bad.mode = mode
    c = client(gw)
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as info:
            c.chat.completions.create(model="only-tee2", messages=[{"role": "user", "content": "x"}], stream=stream)
        assert info.value.status_code == 503
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "no_verified_target", body
        assert "No verified target is available for model 'only-tee2'" in body["message"]
    # The fallback that is not confidential still serves the request.
    r = c.chat.completions.create(model="mixed2", messages=[{"role": "user", "content": "still here"}])
    assert r.choices[0].message.content == "You said: still here"
    c.close()


def test_recovers_once_the_report_verifies(setup: Tuple[GatewayProcess, Any, AttestationServer]) -> None:
    gw, _good, bad = setup
    bad.mode = "valid"
    c = client(gw)
    r = c.chat.completions.create(model="only-tee2", messages=[{"role": "user", "content": "ok"}])
    assert r.choices[0].message.content == "You said: ok"
    c.close()
