"""The 2026-07-28 (stateless) era: detection, header/body agreement, and result decoration (mcp.md §10)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, Mapping, Optional

from .jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, MCPError

MODERN_VERSIONS = ("2026-07-28",)
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
HEADER_MISMATCH = -32020
UNSUPPORTED_VERSION = -32022
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
CACHEABLE = ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read",
             "server/discover")
# Handshake-era methods the modern era removed: unknown there (404).
REMOVED = ("initialize", "ping", "logging/setLevel")


def requested_version(params: Mapping[str, Any]) -> Optional[Any]:
    """The `_meta` protocol version of a modern request, or None for a handshake-era one."""
    meta = params.get("_meta")
    if isinstance(meta, dict) and META_VERSION in meta:
        return meta[META_VERSION]
    return None


def check_version(version: Any, supported_legacy: Any) -> str:
    if version in MODERN_VERSIONS:
        return str(version)
    raise MCPError(UNSUPPORTED_VERSION, "Unsupported protocol version", 400,
                   data={"supported": list(MODERN_VERSIONS) + list(supported_legacy), "requested": version})


def _decode(value: str) -> str:
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "\x00invalid"
    return value


def check_headers(headers: Mapping[str, str], version: str, method: str, params: Mapping[str, Any]) -> None:
    """The required mirror headers must agree with the body (400 + -32020 otherwise)."""

    def mismatch(what: str) -> MCPError:
        return MCPError(HEADER_MISMATCH, f"Header mismatch: {what} is missing or differs from the body.", 400)

    if headers.get("MCP-Protocol-Version") != version:
        raise mismatch("MCP-Protocol-Version")
    if headers.get("Mcp-Method") != method:
        raise mismatch("Mcp-Method")
    key = NAMED.get(method)
    if key is not None:
        sent = headers.get("Mcp-Name")
        if sent is None or _decode(sent) != params.get(key):
            raise mismatch("Mcp-Name")


def discover(capabilities: Dict[str, Any], server_info: Dict[str, Any], supported_legacy: Any) -> Dict[str, Any]:
    return {"supportedVersions": list(MODERN_VERSIONS) + list(supported_legacy), "capabilities": capabilities}


def decorate(method: str, result: Dict[str, Any], server_info: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(result)
    out.setdefault("resultType", "complete")
    meta = dict(out.get("_meta") or {})
    meta[META_SERVER_INFO] = server_info
    out["_meta"] = meta
    if method in CACHEABLE:  # nothing here is safe to share between callers (allowlists filter lists)
        out.setdefault("ttlMs", 0)
        out["cacheScope"] = "private"
    return out


def modern_error(err: MCPError) -> MCPError:
    """Era differences in errors: unknown method is 404; resource-not-found is -32602 (-32002 retired)."""
    if err.code == METHOD_NOT_FOUND and err.status == 200:
        return MCPError(err.code, err.message, 404, err.data)
    if err.code == RESOURCE_NOT_FOUND:
        return MCPError(INVALID_PARAMS, err.message, err.status, err.data)
    return err
