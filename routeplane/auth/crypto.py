"""Signature primitives for Web3 tokens: Ed25519 (PyNaCl), secp256k1 recovery (coincurve), keccak256."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Tuple

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"

MISSING_EXTRA = "JWT auth needs the web3 extra: pip install 'routeplane[web3]' (pynacl, coincurve, pycryptodome, base58)"


def require_libraries() -> None:
    """Fail at start-up, not on the first request, when the crypto libraries are missing."""
    try:
        import base58  # noqa: F401
        import coincurve  # noqa: F401
        import nacl.signing  # noqa: F401
        from Crypto.Hash import keccak  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"{MISSING_EXTRA} ({exc})") from None


def keccak256(data: bytes) -> bytes:
    from Crypto.Hash import keccak

    return keccak.new(digest_bits=256, data=data).digest()


def eip191_digest(message: bytes) -> bytes:
    """keccak256 of the EIP-191 `personal_sign` envelope of `message`."""
    return keccak256(_EIP191_PREFIX + str(len(message)).encode() + message)


def evm_address_of(public_key_uncompressed: bytes) -> str:
    return "0x" + keccak256(public_key_uncompressed[1:])[-20:].hex()


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    from nacl.exceptions import BadSignatureError
    from nacl.exceptions import ValueError as NaclValueError
    from nacl.signing import VerifyKey

    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
        return True
    except (BadSignatureError, NaclValueError, ValueError):
        return False


def eip191_recover(message: bytes, signature: bytes) -> str:
    """The lower-case 0x address whose key produced `signature` (r‖s‖v) over `message`.

    Raises ValueError on a malformed or high-s signature: accepting both s and
    n-s would give every token a second valid encoding.
    """
    from coincurve import PublicKey

    if len(signature) != 65:
        raise ValueError("signature length")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1) or not (0 < r < SECP256K1_N) or not (0 < s <= SECP256K1_N // 2):
        raise ValueError("signature values")
    public = PublicKey.from_signature_and_message(signature[:64] + bytes([v]), eip191_digest(message), hasher=None)
    return evm_address_of(public.format(compressed=False))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Wallet:
    """One 32-byte seed → a Solana (Ed25519) and an EVM (secp256k1) identity, as BitRouter did."""

    seed: bytes

    @classmethod
    def generate(cls) -> "Wallet":
        while True:
            seed = os.urandom(32)
            if 0 < int.from_bytes(seed, "big") < SECP256K1_N:  # valid secp256k1 scalar
                return cls(seed)

    @classmethod
    def load(cls, path: str) -> "Wallet":
        with open(path, "rb") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or data.get("algorithm") != "web3" or not isinstance(data.get("seed"), str):
            raise ValueError(f"{path}: not a routeplane web3 key file")
        seed = base64.urlsafe_b64decode(data["seed"] + "=" * (-len(data["seed"]) % 4))
        if len(seed) != 32:
            raise ValueError(f"{path}: the seed must be 32 bytes")
        return cls(seed)

    def save(self, path: str) -> None:
        # Created 0600 atomically: the seed is the private key of both identities.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"algorithm": "web3", "seed": b64url(self.seed)}, fh)
            fh.write("\n")

    @property
    def solana_address(self) -> str:
        import base58
        from nacl.signing import SigningKey

        return base58.b58encode(bytes(SigningKey(self.seed).verify_key)).decode("ascii")

    @property
    def evm_address(self) -> str:
        from coincurve import PrivateKey

        return evm_address_of(PrivateKey(self.seed).public_key.format(compressed=False))

    def sign_ed25519(self, message: bytes) -> bytes:
        from nacl.signing import SigningKey

        return SigningKey(self.seed).sign(message).signature

    def sign_eip191(self, message: bytes) -> bytes:
        """r‖s‖v with v = 27/28, like `personal_sign` wallets (libsecp256k1 emits low-s)."""
        from coincurve import PrivateKey

        sig = PrivateKey(self.seed).sign_recoverable(eip191_digest(message), hasher=None)
        return sig[:64] + bytes([sig[64] + 27])

    def identities(self, solana_ref: str, evm_chain_id: str) -> Tuple[str, str]:
        return f"solana:{solana_ref}:{self.solana_address}", f"eip155:{evm_chain_id}:{self.evm_address}"
