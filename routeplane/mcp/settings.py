"""Config schema of `mcp_servers:` (http and stdio upstreams) and `mcp:` (gateway settings), typed results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from ..language_model.url_safety import UnsafeURL, URLPolicy, check_base_url

SERVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PREFIX = re.compile(r"^[A-Za-z0-9_-]{0,64}$")


class MCPServerSchema(Schema):
    """One upstream: `{type: http, url, headers, timeout, prefix}` or `{type: stdio, command, args, env, cwd, …}`."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(["http", "stdio"]))
    prefix = fields.String(load_default=None, validate=validate.Regexp(
        PREFIX, error="use letters, digits, '_' or '-' (a tool-name prefix must be legal in every LLM API)"))
    timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0.01, max=3600))
    enabled = fields.Boolean(load_default=True)
    # http
    url = fields.String(load_default=None)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    allow_insecure_http = fields.Boolean(load_default=False)
    allow_private_network = fields.Boolean(load_default=False)
    # stdio
    command = fields.String(load_default=None)
    args = fields.List(fields.String(), load_default=list)
    env = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    cwd = fields.String(load_default=None)

    @validates_schema
    def _by_type(self, data: Dict[str, Any], **_kw: Any) -> None:
        errors: Dict[str, Any] = {}
        http_only = ("url", "allow_insecure_http", "allow_private_network")
        stdio_only = ("command", "cwd")
        if data["type"] == "http":
            if not data.get("url"):
                errors["url"] = ["required for type http"]
            else:
                try:
                    check_base_url(data["url"], URLPolicy(data["allow_insecure_http"], data["allow_private_network"]))
                except UnsafeURL as exc:
                    errors["url"] = [str(exc)]
            for key in stdio_only:
                if data.get(key) is not None:
                    errors[key] = ["only for type stdio"]
            if data.get("args") or data.get("env"):
                errors["args" if data.get("args") else "env"] = ["only for type stdio"]
        else:
            if not data.get("command"):
                errors["command"] = ["required for type stdio"]
            if data.get("url") is not None:
                errors["url"] = ["only for type http (a stdio server is started by the gateway)"]
            if data.get("headers"):
                errors["headers"] = ["only for type http"]
            for key in http_only[1:]:
                if data.get(key):
                    errors[key] = ["only for type http"]
        if errors:
            raise ValidationError(errors)


class MCPGatewaySchema(Schema):
    """`mcp:` gateway settings (all optional)."""

    class Meta:
        unknown = RAISE

    # HMAC key of the self-verifying session ids; unset = one random secret kept in the store
    # (shared by every worker and host on it), else the env var ROUTEPLANE_MCP_SESSION_SECRET.
    # "" counts as unset: it is what `${MCP_SESSION_SECRET:-}` gives when the variable is not set.
    session_secret = fields.String(load_default=None, validate=lambda s: s == "" or validate.Length(min=16)(s))
    session_ttl_seconds = fields.Integer(load_default=86400, validate=validate.Range(min=60))
    list_cache_seconds = fields.Float(load_default=60.0, validate=validate.Range(min=0))
    # How long a listing waits for the upstreams (asked in parallel); a server not done by then is left out.
    list_deadline_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=0.01, max=3600))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=10000))
    allowed_origins = fields.List(fields.String(), load_default=list)
    prefer_sse = fields.Boolean(load_default=False)


@dataclass(frozen=True)
class MCPServerConfig:
    """One upstream MCP server, validated."""

    id: str
    type: str
    prefix: str
    timeout: float = 30.0
    url: Optional[str] = None
    headers: Mapping[str, str] = field(default_factory=dict)
    command: Optional[str] = None
    args: Tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    enabled: bool = True

    def __repr__(self) -> str:  # headers may hold upstream credentials: never print them
        return f"MCPServerConfig(id={self.id!r}, type={self.type!r}, prefix={self.prefix!r})"


@dataclass(frozen=True)
class MCPGatewaySettings:
    session_secret: Optional[str] = None
    session_ttl_seconds: int = 86400
    list_cache_seconds: float = 60.0
    list_deadline_seconds: float = 10.0
    page_size: int = 100
    allowed_origins: Tuple[str, ...] = ()
    prefer_sse: bool = False

    def __repr__(self) -> str:
        return f"MCPGatewaySettings(ttl={self.session_ttl_seconds}, page_size={self.page_size})"


def server_id_problems(servers: Mapping[str, Any]) -> Dict[str, Any]:
    """Key-path errors for bad server ids and prefixes that collide (a tool name must have one owner)."""
    errors: Dict[str, Any] = {}
    seen: Dict[str, str] = {}
    for sid, raw in servers.items():
        if not SERVER_ID.match(str(sid)):
            errors.setdefault(sid, {})["id"] = ["a server id is 1-64 letters, digits, '_' or '-' (starting alnum)"]
            continue
        if not isinstance(raw, dict):
            continue
        prefix = raw.get("prefix")
        prefix = f"{sid}__" if prefix is None else prefix
        if not isinstance(prefix, str):
            continue
        # One prefix starting another ("a__" and "a__b__", or "" and anything) lets a tool of the
        # first server be exposed under a name the second one owns.
        clash = next((other for p, other in seen.items() if prefix.startswith(p) or p.startswith(prefix)), None)
        if clash is not None:
            other_prefix = next(p for p, o in seen.items() if o == clash)
            what = "already the prefix of" if other_prefix == prefix else f"overlaps {other_prefix!r}, the prefix of"
            errors.setdefault(sid, {})["prefix"] = [f"{prefix!r} is {what} server {clash!r}"]
        else:
            seen[prefix] = sid
    return errors


def typed_servers(data: Mapping[str, Mapping[str, Any]]) -> Dict[str, MCPServerConfig]:
    out: Dict[str, MCPServerConfig] = {}
    for sid, d in data.items():
        out[sid] = MCPServerConfig(
            id=sid, type=d["type"], prefix=f"{sid}__" if d["prefix"] is None else d["prefix"], timeout=d["timeout"],
            url=d["url"], headers=dict(d["headers"]), command=d["command"], args=tuple(d["args"]),
            env=dict(d["env"]), cwd=d["cwd"], enabled=d["enabled"])
    return out


def typed_settings(d: Mapping[str, Any]) -> MCPGatewaySettings:
    return MCPGatewaySettings(
        session_secret=d["session_secret"] or None, session_ttl_seconds=d["session_ttl_seconds"],
        list_cache_seconds=d["list_cache_seconds"], list_deadline_seconds=d["list_deadline_seconds"],
        page_size=d["page_size"],
        allowed_origins=tuple(d["allowed_origins"]), prefer_sse=d["prefer_sse"])
