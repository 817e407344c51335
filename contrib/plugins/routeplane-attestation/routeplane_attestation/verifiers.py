"""Verifiers: one class per provider kind; `SignedReportVerifier` checks an Ed25519-signed report fetched with a nonce."""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple, Type

import requests
import urllib3
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from routeplane.language_model.url_safety import UnsafeURL, URLPolicy, check_base_url

from .verdict import Verdict, VerificationFailed

log = logging.getLogger("routeplane.attestation")

_HEX = re.compile(r"^[0-9a-fA-F]+$")


class Verifier(ABC):
    """Checks one provider kind's attestation for a model.

    A new kind is a subclass with a `name`, an `options_schema` (a marshmallow
    Schema for its `plugins.attestation.providers.<id>` section) and `check()`,
    which returns the public claims of a report that passed every check or
    raises VerificationFailed. `verify()` turns every outcome into a Verdict,
    so a bug in `check()` is an unverified verdict, never a crash.
    """

    name: ClassVar[str] = ""
    options_schema: ClassVar[Type[Schema]]

    def __init__(self, provider: str, options: Mapping[str, Any], clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.options = dict(options)
        self.clock = clock  # wall-clock seconds, for report freshness

    @abstractmethod
    def check(self, model: str) -> Mapping[str, Any]: ...

    def verify(self, model: str) -> Verdict:
        try:
            claims = self.check(model)
        except VerificationFailed as exc:
            return Verdict.failed(self.provider, model, self.name, str(exc), self.clock())
        except Exception as exc:  # fail closed: an error while verifying is an unverified verdict
            log.warning("attestation verifier %s failed for %s:%s: %s", self.name, self.provider, model,
                        type(exc).__name__)
            return Verdict.failed(self.provider, model, self.name, f"verifier error ({type(exc).__name__})",
                                  self.clock())
        return Verdict.ok(self.provider, model, self.name, self.clock(), claims)


# --- the signed-report verifier ------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """The bytes a report's signature covers: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _hex_list(min_length: int = 0, nbytes: Optional[int] = None, required: bool = False) -> fields.List:
    chars = None if nbytes is None else 2 * nbytes
    item = fields.String(validate=[
        validate.Regexp(_HEX, error="must be hex"),
        validate.Length(equal=chars) if chars else validate.Length(min=2),
    ])
    if required:
        return fields.List(item, required=True, validate=validate.Length(min=min_length))
    return fields.List(item, load_default=list, validate=validate.Length(min=min_length))


class SignedReportOptions(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True)
    # Ed25519 public keys (32 bytes, hex) a report may be signed with: the trust root.
    signing_keys = _hex_list(min_length=1, nbytes=32, required=True)
    # Accepted measurements (hex); empty = not checked.
    measurements = _hex_list()
    max_age = fields.Float(load_default=300.0, validate=validate.Range(min=1, max=86400))
    max_skew = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=3600))
    timeout = fields.Float(load_default=5.0, validate=validate.Range(min=0.05, max=120))
    max_bytes = fields.Integer(load_default=1 << 20, validate=validate.Range(min=256, max=64 << 20))
    allow_private_network = fields.Boolean(load_default=False)

    @validates_schema
    def _url(self, data: Dict[str, Any], **_: Any) -> None:
        # Plain http is refused except to loopback (tests, a local sidecar); no flag unlocks it.
        if "url" not in data:
            return
        try:
            check_base_url(data["url"], URLPolicy(allow_private_network=bool(data.get("allow_private_network"))))
        except UnsafeURL as exc:
            raise ValidationError(str(exc), "url") from None


class SignedReportVerifier(Verifier):
    """GET `url?model=<model>&nonce=<64 hex>` must answer 200 with

        {"report": {"nonce": "<echoed>", "model": "<model>", "timestamp": <unix s>,
                    "measurement": "<hex>", "signing_key": "<ed25519 public key, hex>", ...},
         "signature": "<ed25519 signature over canonical_json(report), hex>"}

    Verified = signing key pinned, signature valid, nonce echoed, model matches,
    timestamp within `max_age` (and at most `max_skew` in the future),
    measurement pinned (when `measurements` is set).
    """

    name = "signed_report"
    options_schema = SignedReportOptions

    def __init__(self, provider: str, options: Mapping[str, Any], clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: secrets.token_hex(32)) -> None:
        super().__init__(provider, options, clock)
        self.url: str = self.options["url"]
        self.policy = URLPolicy(allow_private_network=bool(self.options.get("allow_private_network")))
        check_base_url(self.url, self.policy)
        self.signing_keys = {k.lower() for k in self.options["signing_keys"]}
        self.measurements = {m.lower() for m in self.options.get("measurements") or ()}
        self.max_age = float(self.options.get("max_age", 300.0))
        self.max_skew = float(self.options.get("max_skew", 30.0))
        self.timeout = float(self.options.get("timeout", 5.0))
        self.max_bytes = int(self.options.get("max_bytes", 1 << 20))
        self._nonce = nonce

    def check(self, model: str) -> Mapping[str, Any]:
        nonce = self._nonce()
        body = self.fetch(model, nonce)
        report, signature = _envelope(body)
        key_hex = str(report.get("signing_key", "")).lower()
        if key_hex not in self.signing_keys:
            raise VerificationFailed("the report's signing key is not pinned")
        try:
            VerifyKey(bytes.fromhex(key_hex)).verify(canonical_json(report), signature)
        except (BadSignatureError, ValueError, TypeError):
            raise VerificationFailed("the report's signature does not verify") from None
        echoed = report.get("nonce")
        # compare_digest raises TypeError on non-ASCII str: such a nonce is simply not this one.
        if not isinstance(echoed, str) or not echoed.isascii() or not hmac.compare_digest(echoed.lower(), nonce):
            raise VerificationFailed("the report does not echo this request's nonce (replayed or cached report)")
        if report.get("model") != model:
            raise VerificationFailed(f"the report is for another model ({str(report.get('model'))[:100]!r})")
        ts = report.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise VerificationFailed("the report has no numeric timestamp")
        try:
            age = self.clock() - float(ts)
        except OverflowError:  # an integer past float range (10**400): no point in time
            raise VerificationFailed("the report's timestamp is out of range") from None
        if age > self.max_age:
            raise VerificationFailed(f"the report is stale ({age:.0f} s old, max_age {self.max_age:.0f} s)")
        if age < -self.max_skew:
            raise VerificationFailed(f"the report's timestamp is {-age:.0f} s in the future")
        measurement = str(report.get("measurement", "")).lower()
        if self.measurements and measurement not in self.measurements:
            raise VerificationFailed("the report's measurement is not pinned")
        return {"measurement": measurement, "signing_key": key_hex, "report_timestamp": ts}

    def fetch(self, model: str, nonce: str) -> Any:
        """The endpoint's JSON answer; every transport problem is a VerificationFailed."""
        try:
            check_base_url(self.url, self.policy)  # re-checked on every fetch, like upstream calls
        except UnsafeURL as exc:
            raise VerificationFailed(f"attestation URL refused: {exc}") from None
        deadline = time.monotonic() + self.timeout
        buf = bytearray()
        try:
            with requests.Session() as session:
                session.trust_env = False  # no surprise proxies from the environment
                with session.get(self.url, params={"model": model, "nonce": nonce}, stream=True,
                                 timeout=(self.timeout, self.timeout), allow_redirects=False,
                                 headers={"Accept": "application/json", "Accept-Encoding": "identity"}) as resp:
                    if resp.status_code != 200:
                        raise VerificationFailed(f"the attestation endpoint answered HTTP {resp.status_code}")
                    # read1 returns whatever one recv got, so a server that trickles bytes
                    # cannot stretch the fetch past the deadline plus one read timeout.
                    while True:
                        if time.monotonic() > deadline:
                            raise VerificationFailed(f"the attestation endpoint timed out ({self.timeout:g} s)")
                        chunk = resp.raw.read1(16384)
                        if not chunk:
                            break
                        buf += chunk
                        if len(buf) > self.max_bytes:
                            raise VerificationFailed(f"the attestation report exceeds {self.max_bytes} bytes")
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise VerificationFailed(f"the attestation endpoint timed out ({self.timeout:g} s)") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise VerificationFailed(f"the attestation endpoint is unreachable ({type(exc).__name__})") from None
        try:
            return json.loads(bytes(buf))
        except ValueError:
            raise VerificationFailed("the attestation endpoint did not answer JSON") from None


def _envelope(body: Any) -> Tuple[Dict[str, Any], bytes]:
    if not isinstance(body, dict) or not isinstance(body.get("report"), dict):
        raise VerificationFailed("the answer has no `report` object")
    sig = body.get("signature")
    try:
        signature = bytes.fromhex(sig) if isinstance(sig, str) else b""
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise VerificationFailed("the answer has no 64-byte hex `signature`")
    return body["report"], signature


BUILTIN_VERIFIERS: Dict[str, Type[Verifier]] = {SignedReportVerifier.name: SignedReportVerifier}
