"""CAIP-10 account ids (`solana:<ref>:<b58>`, `eip155:<chainId>:0x…`): parse, normalize, derive account ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SOLANA_MAINNET = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
BASE_MAINNET = "eip155:8453"

# Used with fullmatch(): `$` also matches before a final newline, and base58 decoding strips one, so
# `…ADDR\n` would pass as a second spelling of the same key, naming a second account.
_SOLANA_REF = re.compile(r"[-_a-zA-Z0-9]{1,32}")
_EVM_REF = re.compile(r"[1-9][0-9]{0,31}")
_EVM_ADDR = re.compile(r"0x[0-9a-fA-F]{40}")
_B58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")

ALG_FOR_NAMESPACE = {"solana": "SOL_EDDSA", "eip155": "EIP191K"}


class CaipError(ValueError):
    """Not a CAIP-10 account id this gateway accepts."""


@dataclass(frozen=True)
class Caip10:
    namespace: str  # "solana" | "eip155"
    reference: str  # genesis-hash prefix (Solana) or decimal chain id (EVM)
    address: str  # base58 (Solana, case-sensitive) or lower-case 0x-hex (EVM)

    @property
    def chain(self) -> str:
        """The CAIP-2 chain id."""
        return f"{self.namespace}:{self.reference}"

    def __str__(self) -> str:
        return f"{self.namespace}:{self.reference}:{self.address}"

    @property
    def account_id(self) -> str:
        """Deterministic account id: the same key is the same account on every chain of its namespace.

        The chain is left out on purpose: one EVM key controls the same address
        on every chain, so a budget must not reset by switching chainId.
        """
        digest = hashlib.sha256(f"{self.namespace}:{self.address}".encode()).hexdigest()
        return "acct_" + digest[:32]


def parse_caip10(value: object) -> Caip10:
    """Parse and normalize (EVM addresses to lower case); raises CaipError."""
    if not isinstance(value, str) or len(value) > 128:
        raise CaipError("iss must be a CAIP-10 account id")
    parts = value.split(":")
    if len(parts) != 3:
        raise CaipError("iss must be a CAIP-10 account id")
    namespace, reference, address = parts
    if namespace == "solana":
        if not _SOLANA_REF.fullmatch(reference) or not _B58.fullmatch(address):
            raise CaipError("iss is not a valid Solana CAIP-10 account id")
        import base58

        if len(base58.b58decode(address)) != 32:
            raise CaipError("iss is not a valid Solana CAIP-10 account id")
        return Caip10(namespace, reference, address)
    if namespace == "eip155":
        if not _EVM_REF.fullmatch(reference) or not _EVM_ADDR.fullmatch(address):
            raise CaipError("iss is not a valid EVM CAIP-10 account id")
        return Caip10(namespace, reference, address.lower())
    raise CaipError("iss must name a solana or eip155 account")


def parse_chain(value: str) -> str:
    """Validate a CAIP-2 chain id or a bare namespace (`eip155` = every EVM chain) from the config."""
    if value in ALG_FOR_NAMESPACE:
        return value
    namespace, sep, reference = value.partition(":")
    ok = sep and ((namespace == "solana" and _SOLANA_REF.fullmatch(reference))
                  or (namespace == "eip155" and _EVM_REF.fullmatch(reference)))
    if not ok:
        raise CaipError(f"{value!r} is not a CAIP-2 chain id (e.g. eip155:8453) or a namespace (solana, eip155)")
    return value


def eip55(address: str) -> str:
    """EIP-55 mixed-case checksum form of a 0x address (for display)."""
    from .crypto import keccak256

    hexaddr = address[2:].lower()
    digest = keccak256(hexaddr.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hexaddr))
