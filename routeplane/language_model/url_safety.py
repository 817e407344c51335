"""Upstream base-URL safety: keep config and route hooks from pointing the gateway at internal services."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

# Cloud instance-metadata endpoints: a request there can leak the host's cloud
# credentials (the classic SSRF target), so no flag unlocks them.
METADATA_HOSTS = frozenset({
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",  # AWS alias
    "instance-data.ec2.internal",
})

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class UnsafeURL(ValueError):
    """A base URL the policy rejects; the message says which rule and how to allow it (if allowed at all)."""


@dataclass(frozen=True)
class URLPolicy:
    """What a provider's base URL may point at.

    `allow_insecure_http`: plain http to a non-loopback host (loopback http is
    always fine: Ollama, vLLM, a sidecar). `allow_private_network`: RFC 1918,
    CGNAT, unique-local IPv6 and `.internal`/`.local` names (a self-hosted model
    on the LAN). Metadata and link-local addresses are never allowed.
    """

    allow_insecure_http: bool = False
    allow_private_network: bool = False


def _ip(host: str) -> Optional[IPAddress]:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped if mapped is not None else addr


def is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    addr = _ip(host)
    return addr is not None and addr.is_loopback


_checked: Dict[Tuple[str, URLPolicy], bool] = {}
_CHECKED_MAX = 4096


def check_base_url(url: Optional[str], policy: URLPolicy = URLPolicy()) -> None:
    """Raise UnsafeURL when `url` breaks the policy. Names are checked as
    written (no DNS lookup: a lookup at config load would be slow and would not
    stop DNS rebinding anyway); IP literals are checked by range.

    The executor checks every call's URL; URLs that passed are remembered
    (the answer depends only on the string and the policy).
    """
    if url is None or (url, policy) in _checked:
        return
    _check(url, policy)
    if len(_checked) >= _CHECKED_MAX:
        _checked.clear()
    _checked[(url, policy)] = True


def _shown(url: str) -> str:
    """The URL as an error may show it: no user info, no query, no fragment (a `?key=` is a credential),
    since the message reaches `routeplane check`, the logs and, for a URL a hook chose, the client."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    netloc = ("***@" if "@" in parts.netloc else "") + parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _check(url: str, policy: URLPolicy) -> None:
    shown = _shown(url)
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise UnsafeURL(f"{shown!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"{shown!r}: only http and https URLs are allowed")
    if not host:
        raise UnsafeURL(f"{shown!r} has no host")
    if parts.username or parts.password:
        raise UnsafeURL(f"{shown!r}: credentials in the URL are not allowed (use api_key or headers)")
    if host in METADATA_HOSTS:
        raise UnsafeURL(f"{shown!r} points at a cloud metadata endpoint")
    addr = _ip(host)
    if addr is not None:
        if addr.is_link_local:
            raise UnsafeURL(f"{shown!r} points at a link-local address")
        if addr.is_unspecified or addr.is_multicast or (addr.is_reserved and not addr.is_loopback):
            raise UnsafeURL(f"{shown!r} points at an address that is not a unicast host")
    loopback = is_loopback_host(host)
    if parts.scheme == "http" and not loopback and not policy.allow_insecure_http:
        raise UnsafeURL(
            f"{shown!r}: plain http is only allowed to loopback; use https or set allow_insecure_http: true"
        )
    private = (addr is not None and not loopback and (addr.is_private or addr in _CGNAT)) or (
        addr is None and host.endswith((".internal", ".local", ".lan", ".home.arpa"))
    )
    if private and not policy.allow_private_network:
        raise UnsafeURL(
            f"{shown!r} points at a private network address; set allow_private_network: true if that is intended"
        )


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
