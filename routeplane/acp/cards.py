"""Agent cards: the JSON describing a configured agent, its canonical signed bytes, signature checks."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .settings import AgentConfig

ACP_PROTOCOL_VERSION = 1


def agent_card(agent: "AgentConfig") -> Dict[str, Any]:
    """The card of one agent (with its `signature` when configured).

    Only what a client needs to pick and reach the agent: never the agent's
    command, environment or working directory (they may hold secrets).
    """
    card: Dict[str, Any] = {
        "name": agent.name,
        "description": agent.description,
        "protocol": "acp",
        "protocolVersion": ACP_PROTOCOL_VERSION,
        "endpoint": {"transport": "stdio", "command": "routeplane", "args": ["acp", "--agent", agent.name]},
        "capabilities": dict(agent.capabilities),
        "skills": [_skill(s) for s in agent.skills],
        "default": agent.default,
    }
    if agent.version is not None:
        card["version"] = agent.version
    if agent.address is not None:
        card["address"] = _normalized_address(agent.address)
    if agent.signature is not None:
        card["signature"] = agent.signature
    return card


def _skill(skill: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {"id": skill.id, "tags": list(skill.tags)}
    if skill.name is not None:
        out["name"] = skill.name
    if skill.description is not None:
        out["description"] = skill.description
    return out


def _normalized_address(address: str) -> str:
    from ..auth.caip10 import parse_caip10

    return str(parse_caip10(address))  # EVM addresses lower-case, as signed


def canonical_bytes(card: Mapping[str, Any]) -> bytes:
    """The bytes a card's signature covers: the card without `signature`, keys sorted, compact, UTF-8."""
    unsigned = {k: v for k, v in card.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_signature(text: str) -> bytes:
    """`0x`-hex (as EVM wallets print it) or unpadded base64url."""
    if text.startswith("0x"):
        return bytes.fromhex(text[2:])
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_card_signature(agent: "AgentConfig") -> Optional[str]:
    """None when the card's signature was made by the key of its CAIP-10 address, else why not."""
    from ..auth import crypto
    from ..auth.caip10 import CaipError, parse_caip10

    if agent.signature is None or agent.address is None:
        return "the card has no address or no signature"
    try:
        crypto.require_libraries()
    except RuntimeError as exc:
        return str(exc)
    try:
        account = parse_caip10(agent.address)
    except CaipError as exc:
        return str(exc)
    try:
        signature = decode_signature(agent.signature)
    except ValueError:
        return "the signature is neither 0x-hex nor base64url"
    message = canonical_bytes(agent_card(agent))
    if account.namespace == "solana":
        import base58

        ok = crypto.ed25519_verify(base58.b58decode(account.address), message, signature)
        return None if ok else "Ed25519 signature mismatch"
    try:
        recovered = crypto.eip191_recover(message, signature)
    except ValueError as exc:
        return f"malformed EIP-191 signature ({exc})"
    return None if recovered == account.address else "EIP-191 signature made by another key"


def sign_card(agent: "AgentConfig", wallet: Any) -> str:
    """The signature to put in `agents.<name>.signature` (routeplane.auth.crypto.Wallet; tests and tools)."""
    from ..auth.caip10 import parse_caip10

    message = canonical_bytes(agent_card(agent))
    if parse_caip10(agent.address).namespace == "solana":
        return base64.urlsafe_b64encode(wallet.sign_ed25519(message)).rstrip(b"=").decode("ascii")
    return "0x" + wallet.sign_eip191(message).hex()


def cards_document(agents: Mapping[str, "AgentConfig"]) -> List[Dict[str, Any]]:
    return [agent_card(a) for a in agents.values()]
