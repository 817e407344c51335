"""A lone agent is the default, on its card too, and the card's signature covers those very bytes (gunicorn)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import base58
import pytest
import requests
import yaml

from routeplane.auth import crypto
from routeplane.auth.crypto import Wallet
from routeplane.config import ConfigError, parse_config
from tests.support.gateway import GatewayProcess

SOL = Wallet.generate()
SOL_ADDR = f"solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp:{SOL.solana_address}"


def _lone(signature: str = "") -> Dict[str, Any]:
    agent: Dict[str, Any] = {"command": "solo-agent", "description": "The only one", "address": SOL_ADDR}
    if signature:
        agent["signature"] = signature
    return {"providers": {"mock": {"protocol": "mock"}},
            "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
            "agents": {"solo": agent}}


def _sign_as_documented(tmp_path: Path) -> str:
    """`routeplane acp --card` prints the bytes to sign; the owner signs them with the address's key."""
    path = tmp_path / "rp.yaml"
    path.write_text(yaml.safe_dump(_lone()))
    out = subprocess.run([sys.executable, "-m", "routeplane.cli", "acp", "--config", str(path), "--card"],
                         capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    card_bytes = out.stdout.rstrip(b"\n")
    assert json.loads(card_bytes)["default"] is True
    return base64.urlsafe_b64encode(SOL.sign_ed25519(card_bytes)).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    signature = _sign_as_documented(tmp_path_factory.mktemp("s10_cards"))
    with GatewayProcess(_lone(signature)) as gw:
        yield gw


def _verifies(card: Dict[str, Any]) -> bool:
    signed = json.dumps({k: v for k, v in card.items() if k != "signature"}, sort_keys=True,
                        separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    sig = base64.urlsafe_b64decode(card["signature"] + "=" * (-len(card["signature"]) % 4))
    return crypto.ed25519_verify(base58.b58decode(SOL.solana_address), signed, sig)


def test_a_lone_agents_card_says_it_is_the_default(gateway: GatewayProcess) -> None:
    """The lone agent served the well-known card (it is the default) while the card said `"default": false`."""
    listed = requests.get(gateway.url + "/agents", timeout=10).json()["agents"]
    well_known = requests.get(gateway.url + "/.well-known/agent-card.json", timeout=10).json()
    assert [c["name"] for c in listed] == ["solo"] and listed[0] == well_known
    assert well_known["default"] is True


def test_the_lone_agents_signature_covers_the_served_bytes(gateway: GatewayProcess) -> None:
    card = requests.get(gateway.url + "/.well-known/agent-card.json", timeout=10).json()
    assert card["address"] == SOL_ADDR and _verifies(card)
    assert not _verifies(dict(card, default=False))


def test_a_signature_over_default_false_is_refused(tmp_path: Path) -> None:
    """The card it signs is the one it is served as: bytes saying `"default": false` do not verify."""
    signature = _sign_as_documented(tmp_path)
    from routeplane.acp.cards import agent_card, canonical_bytes

    agent = parse_config(_lone(signature), "t").agents["solo"]
    assert agent.default is True
    stale = dict(agent_card(agent), default=False)
    stale_sig = base64.urlsafe_b64encode(SOL.sign_ed25519(canonical_bytes(stale))).rstrip(b"=").decode("ascii")
    with pytest.raises(ConfigError, match="agents.solo.signature"):
        parse_config(_lone(stale_sig), "t")
