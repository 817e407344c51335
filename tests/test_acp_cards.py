"""Agent cards under gunicorn: content, ETag/304, CAIP-10 signatures that verify, a bad one refused at start-up."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from typing import Any, Dict, Iterator

import base58
import pytest
import requests

from routeplane.acp.cards import agent_card, canonical_bytes, sign_card
from routeplane.auth import crypto
from routeplane.auth.crypto import Wallet
from routeplane.config import ConfigError, parse_config
from tests.support.gateway import GatewayProcess

SOL = Wallet.generate()
EVM = Wallet.generate()
SOL_ADDR = f"solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:{SOL.solana_address}"
EVM_ADDR = f"eip155:8453:{EVM.evm_address}"


def _base() -> Dict[str, Any]:
    return {
        "providers": {"mock": {"protocol": "mock"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "agents": {
            "alpha": {"command": "alpha-agent", "args": ["--acp"], "default": True, "description": "Writes code",
                      "version": "1.2.0", "env": {"ALPHA_SECRET": "s3cret-value"},
                      "capabilities": {"loadSession": True, "promptCapabilities": {"image": True}},
                      "skills": [{"id": "refactor", "name": "Refactor", "tags": ["python"]}],
                      "address": SOL_ADDR},
            "beta": {"command": "beta-agent", "description": "Reviews", "address": EVM_ADDR},
            "gamma": {"command": "gamma-agent"},
        },
    }


def signed_config() -> Dict[str, Any]:
    raw = _base()
    agents = parse_config(raw, "t").agents
    raw["agents"]["alpha"]["signature"] = sign_card(agents["alpha"], SOL)
    raw["agents"]["beta"]["signature"] = sign_card(agents["beta"], EVM)
    return raw


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    with GatewayProcess(signed_config()) as gw:
        yield gw


def test_agents_lists_every_card_without_the_command_or_env(gateway: GatewayProcess) -> None:
    resp = requests.get(gateway.url + "/agents", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert "s3cret-value" not in resp.text and "alpha-agent" not in resp.text
    cards = {c["name"]: c for c in resp.json()["agents"]}
    assert sorted(cards) == ["alpha", "beta", "gamma"]
    alpha = cards["alpha"]
    assert alpha["description"] == "Writes code" and alpha["version"] == "1.2.0" and alpha["default"] is True
    assert alpha["protocol"] == "acp" and alpha["protocolVersion"] == 1
    assert alpha["endpoint"] == {"transport": "stdio", "command": "routeplane", "args": ["acp", "--agent", "alpha"]}
    assert alpha["capabilities"] == {"loadSession": True, "promptCapabilities": {"image": True}}
    assert alpha["skills"] == [{"id": "refactor", "name": "Refactor", "tags": ["python"]}]
    assert alpha["address"] == SOL_ADDR
    assert "address" not in cards["gamma"] and "signature" not in cards["gamma"]


def test_served_signatures_verify_with_the_jwt_crypto(gateway: GatewayProcess) -> None:
    cards = {c["name"]: c for c in requests.get(gateway.url + "/agents", timeout=10).json()["agents"]}
    alpha, beta = cards["alpha"], cards["beta"]
    # Canonical bytes rebuilt from the served JSON alone: sorted keys, compact, without `signature`.
    alpha_bytes = json.dumps({k: v for k, v in alpha.items() if k != "signature"}, sort_keys=True,
                             separators=(",", ":")).encode()
    sig = base64.urlsafe_b64decode(alpha["signature"] + "=" * (-len(alpha["signature"]) % 4))
    assert crypto.ed25519_verify(base58.b58decode(SOL.solana_address), alpha_bytes, sig)
    assert not crypto.ed25519_verify(base58.b58decode(SOL.solana_address), alpha_bytes + b" ", sig)
    assert beta["address"] == EVM_ADDR.lower()
    assert crypto.eip191_recover(canonical_bytes(beta), bytes.fromhex(beta["signature"][2:])) == EVM.evm_address


def test_well_known_card_etag_and_304(gateway: GatewayProcess) -> None:
    url = gateway.url + "/.well-known/agent-card.json"
    first = requests.get(url, timeout=10)
    assert first.status_code == 200 and first.json()["name"] == "alpha"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and "max-age" in first.headers["Cache-Control"]
    again = requests.get(url, timeout=10)
    assert again.headers["ETag"] == etag  # stable
    not_modified = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    weak = requests.get(url, headers={"If-None-Match": f'"other", W/{etag}'}, timeout=10)
    assert weak.status_code == 304
    stale = requests.get(url, headers={"If-None-Match": '"stale"'}, timeout=10)
    assert stale.status_code == 200 and stale.json() == first.json()
    listing = requests.get(gateway.url + "/agents", timeout=10)
    assert listing.headers["ETag"] != etag


def test_a_card_whose_signature_does_not_verify_is_refused_at_start_up() -> None:
    tampered = signed_config()
    tampered["agents"]["alpha"]["description"] = "Writes better code"  # the signed card changed
    with pytest.raises(ConfigError) as err:
        parse_config(tampered, "rp.yaml")
    assert "agents.alpha.signature" in str(err.value) and "does not verify" in str(err.value)
    swapped = signed_config()
    swapped["agents"]["beta"]["signature"] = swapped["agents"]["alpha"]["signature"]  # another key's signature
    with pytest.raises(ConfigError, match="agents.beta.signature"):
        parse_config(swapped, "rp.yaml")
    gw = GatewayProcess(tampered)
    with pytest.raises(RuntimeError) as start:
        gw.start(timeout=30)
    assert "agents.alpha.signature" in str(start.value)
    gw.stop()


def test_card_command_prints_the_bytes_to_sign(tmp_path: Any) -> None:
    import yaml

    raw = _base()
    path = tmp_path / "rp.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "routeplane.cli", "acp", "--config", str(path), "--agent", "beta",
                          "--card"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    expected = canonical_bytes(agent_card(parse_config(copy.deepcopy(raw), "t").agents["beta"]))
    assert out.stdout == expected + b"\n"
