"""The `agents:` config section: strict schema, typed agents, default choice and card signature check."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class SkillSchema(_Strict):
    id = fields.String(required=True, validate=validate.Length(min=1))
    name = fields.String(load_default=None)
    description = fields.String(load_default=None)
    tags = fields.List(fields.String(), load_default=list)


class AgentGatewaySchema(_Strict):
    # Point the agent's own LLM calls at this gateway (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, ...).
    enabled = fields.Boolean(load_default=True)
    base_url = fields.String(load_default=None)  # default: http://<server.listen>
    token_env = fields.String(load_default=None)  # env var of routeplane holding the agent's api-scope key


class AgentSchema(_Strict):
    command = fields.String(required=True, validate=validate.Length(min=1))
    args = fields.List(fields.String(), load_default=list)
    env = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    cwd = fields.String(load_default=None)
    description = fields.String(load_default="")
    version = fields.String(load_default=None)
    skills = fields.List(fields.Nested(SkillSchema), load_default=list)
    capabilities = fields.Dict(keys=fields.String(), load_default=dict)
    default = fields.Boolean(load_default=False)
    address = fields.String(load_default=None)  # CAIP-10 account the card is bound to
    signature = fields.String(load_default=None)  # over the canonical card bytes (routeplane.acp.cards)
    gateway = fields.Nested(AgentGatewaySchema, load_default=lambda: AgentGatewaySchema().load({}))
    startup_timeout_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0.1, max=600))

    @validates_schema
    def _capabilities(self, data: Dict[str, Any], **_kw: Any) -> None:
        problem = json_value_problem(data.get("capabilities") or {})
        if problem:
            # Served on /agents and signed as JSON: a YAML date or .nan broke every worker's start-up
            # (or went out as `NaN`, which is not JSON) while `routeplane check` said OK.
            raise ValidationError(problem, "capabilities")

    @validates_schema
    def _pairs(self, data: Dict[str, Any], **_kw: Any) -> None:
        if data.get("signature") is not None and data.get("address") is None:
            raise ValidationError("a signature needs the address that made it", "signature")
        if data.get("address") is not None:
            from ..auth.caip10 import CaipError, parse_caip10

            try:
                parse_caip10(data["address"])
            except CaipError as exc:
                raise ValidationError(f"not a CAIP-10 account id ({exc})", "address") from None


def json_value_problem(value: Any, path: str = "") -> Optional[str]:
    """Why `value` is not plain JSON (a YAML date, .nan, .inf, a non-string key), or None."""
    where = f" at {path}" if path else ""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r}{where} is not a JSON number"
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := json_value_problem(v, f"{path}[{i}]"))), None)
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str):
                return f"the key {key!r}{where} is not a string"
            problem = json_value_problem(v, f"{path}.{key}" if path else key)
            if problem:
                return problem
        return None
    return f"a {type(value).__name__}{where} is not a JSON value (quote it in YAML)"


def agent_name_problems(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """Key-path errors for agent names and the default flag (at most one agent is the default)."""
    errors: Dict[str, Any] = {}
    for name in raw:
        if not isinstance(name, str) or not _NAME.match(name):
            errors[str(name)] = ["agent names are letters, digits, '-', '_', '.' (no ':' or '~': they namespace session ids)"]
    defaults = [n for n, a in raw.items() if isinstance(a, dict) and a.get("default") is True]
    if len(defaults) > 1:
        for n in defaults:
            errors.setdefault(str(n), {})
            if isinstance(errors[str(n)], dict):
                errors[str(n)]["default"] = [f"only one agent may be the default (defaults: {sorted(defaults)})"]
    return errors


@dataclass(frozen=True)
class Skill:
    id: str
    name: Optional[str] = None
    description: Optional[str] = None
    tags: Tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    name: str
    command: str
    args: Tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    description: str = ""
    version: Optional[str] = None
    skills: Tuple[Skill, ...] = ()
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    default: bool = False
    address: Optional[str] = None
    signature: Optional[str] = None
    gateway_enabled: bool = True
    gateway_base_url: Optional[str] = None
    gateway_token_env: Optional[str] = None
    startup_timeout_seconds: float = 30.0


def typed_agents(data: Mapping[str, Any]) -> Dict[str, AgentConfig]:
    """Typed agents from the loaded section; raises ValueError naming the agent whose card does not verify.

    A lone agent is the default (`default: true`, on its card too) before any signature is checked:
    the card's signed bytes are those it is served with.
    """
    from .cards import verify_card_signature

    out: Dict[str, AgentConfig] = {}
    for name, a in data.items():
        out[name] = AgentConfig(
            name=name, command=a["command"], args=tuple(a["args"]), env=dict(a["env"]), cwd=a["cwd"],
            description=a["description"], version=a["version"],
            skills=tuple(Skill(s["id"], s["name"], s["description"], tuple(s["tags"])) for s in a["skills"]),
            capabilities=dict(a["capabilities"]), default=a["default"], address=a["address"],
            signature=a["signature"], gateway_enabled=a["gateway"]["enabled"],
            gateway_base_url=a["gateway"]["base_url"], gateway_token_env=a["gateway"]["token_env"],
            startup_timeout_seconds=a["startup_timeout_seconds"],
        )
    if len(out) == 1:
        name, agent = next(iter(out.items()))
        out[name] = replace(agent, default=True)
    for name, agent in out.items():
        if agent.signature is not None:
            problem = verify_card_signature(agent)
            if problem:
                raise ValueError(f"agents.{name}.signature: the agent card's signature does not verify "
                                 f"for {agent.address}: {problem}")
    return out


def default_agent(agents: Mapping[str, AgentConfig]) -> Optional[str]:
    """The agent marked `default: true`, else the only one, else None."""
    for name, a in agents.items():
        if a.default:
            return name
    return next(iter(agents)) if len(agents) == 1 else None


__all__ = ["AgentConfig", "AgentSchema", "Skill", "agent_name_problems", "default_agent", "json_value_problem",
           "typed_agents"]
