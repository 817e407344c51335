"""Configuration: YAML load, `${VAR}` interpolation, marshmallow validation, a frozen typed result.

Errors name the file and the key path (`routeplane.yaml: providers.openai.protocol: ...`).
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from .acp.settings import AgentSchema, agent_name_problems, typed_agents
from .config_messages import leaves, problem_lines
from .language_model.cooldown import CooldownPolicy, FallbackSettings
from .language_model.routing import PROTOCOLS, STRATEGIES, Route, RoutingTarget
from .mcp.settings import (
    MCPGatewaySchema,
    MCPGatewaySettings,
    MCPServerSchema,
    server_id_problems,
    typed_servers,
    typed_settings,
)

DEFAULT_LISTEN = "127.0.0.1:4356"

DEFAULT_CONFIG: Dict[str, Any] = {
    "server": {"listen": DEFAULT_LISTEN},
    "providers": {"mock": {"protocol": "mock"}},
    "models": {
        "default": {"targets": [{"provider": "mock", "model": "echo"}]},
        "mock-echo": {"targets": [{"provider": "mock", "model": "echo"}]},
    },
}


class ConfigError(Exception):
    """A configuration problem; the message names the file and key path."""


_LISTEN = re.compile(r"(?:tcp://)?(\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def listen_problem(listen: str) -> Optional[str]:
    """Why `listen` is not an address gunicorn binds as written (HOST:PORT, [IPv6]:PORT, unix:PATH, fd://FD;
    tcp://HOST:PORT too), or None.

    gunicorn reads ":4356" as every interface and "localhost" as port 8000, while the loopback check
    before an unauthenticated start read them as 127.0.0.1: the host and the port are both required."""
    if listen.startswith("unix:"):
        return None if len(listen) > len("unix:") else "unix: needs a socket path"
    if listen.startswith("fd://"):  # a socket handed over open (systemd socket activation)
        return None if listen[len("fd://"):].isdigit() else "fd:// needs a file descriptor number"
    match = _LISTEN.fullmatch(listen)
    if match and 0 < int(match.group(2)) < 65536:
        host = match.group(1)
        if not host.startswith("["):
            return None
        try:
            ipaddress.IPv6Address(host[1:-1])
            return None
        except ValueError:
            pass
    return (f"{listen!r} is not HOST:PORT with both parts (127.0.0.1:4356, [::1]:4356, 0.0.0.0:4356 "
            "for every interface)")


def _valid(problem: Optional[str]) -> bool:
    """A marshmallow validator's answer from a problem description (None = valid)."""
    if problem:
        raise ValidationError(problem)
    return True


# --- schemas ---------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class ServerSchema(_Strict):
    listen = fields.String(load_default=DEFAULT_LISTEN, validate=lambda v: _valid(listen_problem(v)))
    max_body_bytes = fields.Integer(load_default=10 * 1024 * 1024, validate=validate.Range(min=1024))
    workers = fields.Integer(load_default=2, validate=validate.Range(min=1, max=256))
    # One thread per open stream; 2 x 256 holds 256 concurrent streams with headroom (docs/deploy.md, Sizing).
    threads = fields.Integer(load_default=256, validate=validate.Range(min=1, max=4096))
    observer_threads = fields.Integer(load_default=2, validate=validate.Range(min=1, max=64))
    observer_queue = fields.Integer(load_default=10000, validate=validate.Range(min=1))
    stats_flush_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.05, max=3600))
    allow_non_loopback_without_auth = fields.Boolean(load_default=False)
    log_level = fields.String(load_default="info", validate=validate.OneOf(["debug", "info", "warning", "error"]))
    # OpenAI Chat has no field for a model's reasoning: none (not shown), or the name clients of
    # DeepSeek/vLLM (reasoning_content) or OpenRouter (reasoning) read (translation.md §7.5).
    openai_chat_reasoning = fields.String(load_default="none",
                                          validate=validate.OneOf(["none", "reasoning_content", "reasoning"]))


class LimitsSchema(_Strict):
    # Hostile-input bounds (docs/configuration.md, Limits); the body size itself is server.max_body_bytes.
    max_json_depth = fields.Integer(load_default=64, validate=validate.Range(min=2, max=10000))
    max_messages = fields.Integer(load_default=2048, validate=validate.Range(min=1))
    max_tools = fields.Integer(load_default=512, validate=validate.Range(min=1))
    max_parts = fields.Integer(load_default=10000, validate=validate.Range(min=1))
    max_open_streams = fields.Integer(load_default=512, validate=validate.Range(min=1))
    stream_retry_after = fields.Integer(load_default=1, validate=validate.Range(min=0, max=3600))
    max_response_bytes = fields.Integer(load_default=64 * 1024 * 1024, validate=validate.Range(min=1024))
    max_stream_bytes = fields.Integer(load_default=256 * 1024 * 1024, validate=validate.Range(min=1024))
    max_request_line_bytes = fields.Integer(load_default=8190, validate=validate.Range(min=256, max=8190))
    max_header_bytes = fields.Integer(load_default=16384, validate=validate.Range(min=256, max=65536))
    max_headers = fields.Integer(load_default=100, validate=validate.Range(min=10, max=32768))


class DatabaseSchema(_Strict):
    url = fields.String(load_default="sqlite:///routeplane.db")


class PriceTierSchema(_Strict):
    above_input_tokens = fields.Integer(required=True, validate=validate.Range(min=0))
    input = fields.Float(load_default=None, validate=validate.Range(min=0))
    cache_read = fields.Float(load_default=None, validate=validate.Range(min=0))
    cache_write = fields.Float(load_default=None, validate=validate.Range(min=0))
    output = fields.Float(load_default=None, validate=validate.Range(min=0))
    reasoning = fields.Float(load_default=None, validate=validate.Range(min=0))


class PricesSchema(_Strict):
    input = fields.Float(load_default=None, validate=validate.Range(min=0))
    cache_read = fields.Float(load_default=None, validate=validate.Range(min=0))
    cache_write = fields.Float(load_default=None, validate=validate.Range(min=0))
    output = fields.Float(load_default=None, validate=validate.Range(min=0))
    reasoning = fields.Float(load_default=None, validate=validate.Range(min=0))
    # Long-context pricing: e.g. [{above_input_tokens: 200000, input: 2.5, output: 15}]
    tiers = fields.List(fields.Nested(PriceTierSchema), load_default=None)
    # USD per call of a server-side tool billed by the call: {web_search: 0.01}
    per_call = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)),
                           values=fields.Float(validate=validate.Range(min=0)), load_default=None)


class TimeoutsSchema(_Strict):
    # Unset fields inherit: provider `timeouts` → top-level `timeouts` → built-in (10 s, 300 s, no total).
    connect = fields.Float(load_default=None, validate=validate.Range(min=0.001))
    read = fields.Float(load_default=None, validate=validate.Range(min=0.001))
    total = fields.Float(load_default=None, validate=validate.Range(min=0.001))


class CooldownSchema(_Strict):
    failures = fields.Integer(load_default=3, validate=validate.Range(min=0))
    seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0.001))


class FallbackSchema(_Strict):
    backoff = fields.List(fields.Float(validate=validate.Range(min=0, max=600)), load_default=list)
    retry_after_max = fields.Float(load_default=60.0, validate=validate.Range(min=0, max=3600))
    cooldown = fields.Nested(CooldownSchema, load_default=lambda: CooldownSchema().load({}))


class ProviderSchema(_Strict):
    # Optional for a registry provider id (or with `extends`): the registry entry supplies it.
    protocol = fields.String(load_default=None, validate=validate.OneOf(PROTOCOLS))
    extends = fields.String(load_default=None)
    enabled = fields.Boolean(load_default=True)
    base_url = fields.String(load_default=None)
    api_key = fields.String(load_default=None)
    key_env = fields.String(load_default=None)
    auth_header = fields.String(load_default=None)
    auth_prefix = fields.String(load_default=None)
    allow_insecure_http = fields.Boolean(load_default=False)
    allow_private_network = fields.Boolean(load_default=False)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    timeouts = fields.Nested(TimeoutsSchema, load_default=dict)
    prices = fields.Nested(PricesSchema, load_default=None)
    model_prices = fields.Dict(keys=fields.String(), values=fields.Nested(PricesSchema), load_default=dict)
    models = fields.List(fields.String(), load_default=list)
    confidential = fields.Boolean(load_default=False)
    options = fields.Dict(keys=fields.String(), load_default=dict)


class TargetSchema(_Strict):
    provider = fields.String(required=True)
    model = fields.String(required=True)
    weight = fields.Float(load_default=1.0, validate=validate.Range(min=0))


class RouteSchema(_Strict):
    strategy = fields.String(load_default="priority", validate=validate.OneOf(STRATEGIES))
    targets = fields.List(fields.Nested(TargetSchema), required=True, validate=validate.Length(min=1))


class BudgetWindowSchema(_Strict):
    rounds = fields.Integer(load_default=None, validate=validate.Range(min=1))
    seconds = fields.Integer(load_default=None, validate=validate.Range(min=1))

    @validates_schema
    def _one(self, data: Dict[str, Any], **_kw: Any) -> None:
        if (data.get("rounds") is None) == (data.get("seconds") is None):
            raise ValidationError("give exactly one of rounds or seconds")


class AuthBudgetSchema(_Strict):
    # An operator limit for every account (on top of any limit a key or token carries).
    account_limit_micro_usd = fields.Integer(load_default=None, validate=validate.Range(min=0))
    account_window = fields.Nested(BudgetWindowSchema, load_default=None)
    # Worst-case cost reserved at admission: max_tokens (or this default) of output plus the prompt.
    default_max_output_tokens = fields.Integer(load_default=4096, validate=validate.Range(min=1))
    # Calls reserved for each per-call-priced server tool a request declares without a cap (max_uses, ...).
    default_server_tool_calls = fields.Integer(load_default=5, validate=validate.Range(min=0, max=10000))
    unknown_price_reservation_micro_usd = fields.Integer(load_default=10000, validate=validate.Range(min=0))
    reservation_ttl_seconds = fields.Integer(load_default=900, validate=validate.Range(min=10))
    # A store error while checking a budget: true = 503 (fail closed), false = admit unchecked.
    fail_closed = fields.Boolean(load_default=True)
    # Stop a stream (402 error frame) once its running cost passes the budget left at admission.
    mid_stream = fields.Boolean(load_default=False)
    # Settlements the store could not take wait in this file (default: beside a SQLite file, else
    # routeplane-budget.spool in the working directory; "" = none, the spend is then lost to the budget).
    spool = fields.String(load_default=None, allow_none=True)


class AuthRevocationSchema(_Strict):
    # A worker trusts its last revocation answer for a token this long: a revocation reaches every worker
    # sharing the store within it (0 = ask the store on every request).
    cache_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0, max=300))


class AudienceField(fields.Field):
    """`auth.audience`: one audience string or a non-empty list of them (RFC 7519 `aud` values)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        values = [value] if isinstance(value, str) else value
        if (not isinstance(values, list) or not values or len(values) > 64
                or not all(isinstance(v, str) and 0 < len(v) <= 512 for v in values)):
            raise ValidationError("give an audience string or a non-empty list of them (leave it out to accept "
                                  "JWTs for any audience)")
        return value


class AuthSchema(_Strict):
    mode = fields.String(load_default="none", validate=validate.OneOf(["none", "api_keys", "jwt", "api_keys+jwt"]))
    leeway_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=3600))
    max_token_bytes = fields.Integer(load_default=4096, validate=validate.Range(min=256, max=65536))
    require_exp = fields.Boolean(load_default=False)
    allowed_issuers = fields.List(fields.String(), load_default=list)  # CAIP-10 account ids
    allowed_chains = fields.List(fields.String(), load_default=list)  # CAIP-2 ids or namespaces
    admin_issuers = fields.List(fields.String(), load_default=list)  # CAIP-10 ids whose JWTs may be admin
    # A JWT must name one of these in `aud` (None: any audience, and start-up warns).
    audience = AudienceField(load_default=None, allow_none=True)
    budget = fields.Nested(AuthBudgetSchema, load_default=lambda: AuthBudgetSchema().load({}))
    revocation = fields.Nested(AuthRevocationSchema, load_default=lambda: AuthRevocationSchema().load({}))


class ConfigSchema(_Strict):
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    database = fields.Nested(DatabaseSchema, load_default=lambda: DatabaseSchema().load({}))
    limits = fields.Nested(LimitsSchema, load_default=lambda: LimitsSchema().load({}))
    providers = fields.Dict(keys=fields.String(), values=fields.Nested(ProviderSchema), required=True)
    models = fields.Dict(keys=fields.String(), values=fields.Nested(RouteSchema), required=True)
    auth = fields.Nested(AuthSchema, load_default=lambda: AuthSchema().load({}))
    plugins = fields.Dict(keys=fields.String(), load_default=dict)
    mcp_servers = fields.Dict(keys=fields.String(), values=fields.Nested(MCPServerSchema), load_default=dict)
    mcp = fields.Nested(MCPGatewaySchema, load_default=lambda: MCPGatewaySchema().load({}))
    agents = fields.Dict(keys=fields.String(), values=fields.Nested(AgentSchema), load_default=dict)
    timeouts = fields.Nested(TimeoutsSchema, load_default=dict)
    fallback = fields.Nested(FallbackSchema, load_default=lambda: FallbackSchema().load({}))

    # Runs even when fields failed, on the original provider names, so that `routeplane check`
    # lists a bad provider and a target naming an undeclared one in the same report.
    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _targets_known(self, data: Dict[str, Any], original: Any = None, **_kw: Any) -> None:
        providers = original.get("providers") if isinstance(original, dict) else None
        errors: Dict[str, Any] = {}
        # Without a providers mapping (missing, misspelt) that is the one problem: not every target too.
        for name, route in (data.get("models") or {}).items() if isinstance(providers, dict) else ():
            for i, t in enumerate(route.get("targets", [])):
                # Registry ids pass here; parse_config checks they are active (key env var set).
                if (isinstance(t, dict) and "provider" in t and t["provider"] not in providers
                        and t["provider"] not in _registry_ids()):
                    errors.setdefault("models", {}).setdefault(name, {}).setdefault("targets", {})[i] = {
                        "provider": [f"Unknown provider {t['provider']!r}; declared: {sorted(providers)}."]
                    }
        raw_plugins = original.get("plugins") if isinstance(original, dict) else None
        if isinstance(raw_plugins, dict):
            for pid, section in raw_plugins.items():
                if section is not None and not isinstance(section, dict):
                    errors.setdefault("plugins", {})[pid] = ["a plugin's section is a mapping of its options"]
                elif isinstance(section, dict) and plugin_enabled(section) is None:
                    # A value that is no boolean ("maybe") would have enabled the plugin: refused.
                    errors.setdefault("plugins", {})[pid] = {"enabled": ["true or false"]}
        raw_mcp = original.get("mcp_servers") if isinstance(original, dict) else None
        if isinstance(raw_mcp, dict) and server_id_problems(raw_mcp):
            errors["mcp_servers"] = server_id_problems(raw_mcp)
        raw_agents = original.get("agents") if isinstance(original, dict) else None
        if isinstance(raw_agents, dict) and agent_name_problems(raw_agents):
            errors["agents"] = agent_name_problems(raw_agents)
        if errors:
            raise ValidationError(errors)


def plugin_enabled(section: Any) -> Optional[bool]:
    """A plugin section's `enabled` as the other booleans of the config read it (`true`, `"true"` from
    `${VAR}`, `1`, `"yes"`...); absent or empty means enabled; None when it is not a boolean."""
    value = (section or {}).get("enabled", True)
    if value is None:
        return True
    try:
        return fields.Boolean().deserialize(value)
    except ValidationError:
        return None


def _registry_ids() -> Tuple[str, ...]:
    from .language_model.provider_registry import load_registry

    return tuple(load_registry().providers)


# --- typed config ------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    max_body_bytes: int = 10 * 1024 * 1024
    workers: int = 2
    threads: int = 256
    observer_threads: int = 2
    observer_queue: int = 10000
    stats_flush_seconds: float = 5.0  # how often a worker writes its plugin stats to the store
    allow_non_loopback_without_auth: bool = False
    log_level: str = "info"
    openai_chat_reasoning: str = "none"  # the Chat field that shows reasoning, or none


@dataclass(frozen=True)
class LimitsConfig:
    max_json_depth: int = 64  # arrays/objects inside each other in a request body
    max_messages: int = 2048  # messages (turns) of one request
    max_tools: int = 512  # tool declarations of one request
    max_parts: int = 10000  # content parts over all messages of one request
    max_open_streams: int = 512  # open SSE responses per worker; more get 429 + Retry-After
    stream_retry_after: int = 1  # seconds, in that 429's Retry-After
    max_response_bytes: int = 64 * 1024 * 1024  # a non-streaming upstream body
    max_stream_bytes: int = 256 * 1024 * 1024  # everything one upstream stream sends
    max_request_line_bytes: int = 8190  # gunicorn limit_request_line
    max_header_bytes: int = 16384  # gunicorn limit_request_field_size (one header)
    max_headers: int = 100  # gunicorn limit_request_fields


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    database_url: str
    providers: Mapping[str, RoutingTarget]  # templates with an empty model
    routes: Tuple[Route, ...]
    auth: Mapping[str, Any]
    plugins: Mapping[str, Any]
    mcp_servers: Mapping[str, Any] = field(default_factory=dict)  # id -> routeplane.mcp.settings.MCPServerConfig
    mcp: MCPGatewaySettings = field(default_factory=MCPGatewaySettings)
    agents: Mapping[str, Any] = field(default_factory=dict)  # name -> routeplane.acp.settings.AgentConfig
    source: str = "<built-in defaults>"
    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
# What is left of a value once its `${VAR}`s are taken out, and still reads as a reference meant to be
# expanded: a shell form (`${KEY:?}`, `${KEY-x}`) or a whole value `$KEY`, which would reach the upstream
# as the literal text `$KEY`. A value that must be that text can be written `${UNSET_VAR:-$KEY}`.
_UNEXPANDED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|^\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*$")


def interpolate(value: Any, env: Mapping[str, str], path: str = "", missing: Optional[List[str]] = None) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of the tree.

    An unset `${VAR}` raises ConfigError; with a `missing` list it is appended there instead (and left as
    written), so a file whose service environment lacks several secrets names them all at once, not one
    per attempt."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", missing) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def report(problem: str) -> None:
        if missing is None:
            raise ConfigError(problem)
        missing.append(problem)

    def sub(m: "re.Match[str]") -> str:
        name, has_default, default = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] != "" or not has_default):
            return env[name]
        if has_default is not None:
            return default or ""
        report(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} to make it optional)")
        return m.group(0)

    unexpanded = _UNEXPANDED.search(_VAR.sub("", value))
    if unexpanded:
        name = unexpanded.group(1) or unexpanded.group(2)
        report(f"{path}: {unexpanded.group(0).strip()!r} is not expanded: write ${{{name}}} (required) or "
               f"${{{name}:-default}}")
    return _VAR.sub(sub, value)


def _flatten(messages: Any, prefix: str = "") -> List[str]:
    """`key.path: message` lines under `prefix` (a plugin's options, whose schema app.py holds)."""
    return [f"{'.'.join([prefix, *parts] if prefix else parts)}: {m}" for parts, m in leaves(messages, [])]


def parse_config(raw: Any, source: str = "<dict>", env: Optional[Mapping[str, str]] = None,
                 unset_ok: bool = False) -> Config:
    """`unset_ok`: an unset `${VAR}` stays as written, for a command that needs none of the config's
    secrets (`routeplane spend --database URL`: the store is named, the provider keys are not used)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    unset: List[str] = []
    interpolated = interpolate(raw, os.environ if env is None else env, missing=[] if unset_ok else unset)
    if len(unset) == 1:
        raise ConfigError(f"{source}: {unset[0]}")
    if unset:
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(unset))
    try:
        data = ConfigSchema().load(interpolated)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except ValidationError as exc:
        lines = problem_lines(exc.messages, interpolated, ConfigSchema())
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines)) from None
    providers, problems = _providers(data, os.environ if env is None else env)
    if problems:
        lines = [f"{path}: {m}" for path, msgs in problems.items() for m in msgs]
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines))
    try:
        agents = typed_agents(data["agents"])
    except ValueError as exc:  # a card whose signature does not verify
        raise ConfigError(f"{source}: invalid configuration:\n  {exc}") from None
    routes = []
    for name, r in data["models"].items():
        targets = tuple(
            providers[t["provider"]].replace(
                model=t["model"],
                weight=t["weight"],
                prices=providers[t["provider"]].options["model_prices"].get(  # type: ignore[union-attr]
                    t["model"], providers[t["provider"]].prices),
            )
            for t in r["targets"]
        )
        routes.append(Route(name, targets, r["strategy"]))
    return Config(
        server=ServerConfig(**data["server"]),
        database_url=data["database"]["url"],
        providers=providers,
        routes=tuple(routes),
        auth=dict(data["auth"]),
        plugins=dict(data["plugins"]),
        mcp_servers=typed_servers(data["mcp_servers"]),
        mcp=typed_settings(data["mcp"]),
        agents=agents,
        source=source,
        fallback=FallbackSettings(
            backoff=tuple(data["fallback"]["backoff"]),
            retry_after_max=data["fallback"]["retry_after_max"],
            cooldown=CooldownPolicy(**data["fallback"]["cooldown"]),
        ),
        limits=LimitsConfig(**data["limits"]),
    )


def _providers(data: Mapping[str, Any], env: Mapping[str, str]) -> Tuple[Dict[str, RoutingTarget], Dict[str, List[str]]]:
    """Active providers (registry defaults + config), and problems keyed by path."""
    from .config_providers import resolve_providers, target_problems
    from .language_model.provider_registry import load_registry

    registry = load_registry()
    providers, problems = resolve_providers(data["providers"], data["timeouts"], env, registry)
    problems.update(target_problems(data["models"], providers, data["providers"], registry))
    return providers, problems


def load_config(path: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                source: Optional[str] = None, unset_ok: bool = False) -> Config:
    """Load a YAML file; with no path, `$ROUTEPLANE_CONFIG`, `routeplane.yaml` in the working directory or the
    built-in default: the order `routeplane serve` follows, so a host app that mounts the gateway with
    `load_config()` loads what the gunicorn master checked and migrated (its checked copy, in a worker).

    `source` is the name messages and `Config.source` give the file (default: `path`, or the
    operator's file for the gunicorn master's checked copy of it, see `source_name`)."""
    path = path or os.environ.get("ROUTEPLANE_CONFIG") or None
    if path is None:
        if os.path.exists("routeplane.yaml"):
            path = "routeplane.yaml"
        else:
            return parse_config(DEFAULT_CONFIG, "<built-in defaults>", env, unset_ok)
    return parse_config_bytes(read_config_file(path), source or source_name(path), env, unset_ok)


def read_config_file(path: str) -> bytes:
    """The bytes of a config file, or a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:  # permission denied, an unreadable device, ...
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML lets the later one replace the
    earlier, so a second `models:` block would drop the first one's routes without a word."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # A mapping's own keys are checked before YAML's merge folds its `<<:` sources into it, in place
        # (merged keys first, its overrides after): a mapping first met as a merge source and aliased
        # later (`<<: &m {<<: *d, x: 2}` ... `*m`) was checked merged, its override taken for a duplicate.
        checked = self.__dict__.setdefault("_checked_mappings", set())
        if id(node) not in checked:
            checked.add(id(node))
            _refuse_duplicate_keys(self, node)
        super().flatten_mapping(node)


def _refuse_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    seen = set()
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`, then overrides: YAML's own rule
            continue
        key = "=" if key_node.tag == "tag:yaml.org,2002:value" else loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping refuses it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                    key_node.start_mark)


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Dict[Any, Any]:
    # Built whole, not yielded empty and filled later as SafeLoader's: a mapping that contains itself
    # (`a: &a [*a]`) is then YAML's "recursive node" error, not a tree that interpolation recurses into.
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_config_bytes(data: bytes, source: str, env: Optional[Mapping[str, str]] = None,
                       unset_ok: bool = False) -> Config:
    """A config from a YAML file's bytes; `source` names it in messages."""
    stream = io.BytesIO(data)
    stream.name = source  # type: ignore[attr-defined]  # YAML's error marks say `in "<source>"`, not "<byte string>"
    try:
        raw = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(raw, source, env, unset_ok)


# Under gunicorn the master checks a copy of the operator's file and points ROUTEPLANE_CONFIG
# (what workers and its `routeplane check` / `migrate` children load) at that copy; this names
# the file the copy was taken from, so messages, logs and /health name the operator's file.
SOURCE_ENV = "ROUTEPLANE_CONFIG_SOURCE"


def source_name(path: str) -> str:
    """How `path` is named in messages: the operator's file when it is the master's checked copy."""
    name = os.environ.get(SOURCE_ENV)
    if name and path == os.environ.get("ROUTEPLANE_CONFIG"):
        return name
    return path
