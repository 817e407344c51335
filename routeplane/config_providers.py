"""The `providers:` section resolved against the shipped registry: defaults, env activation, URL checks."""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .language_model.provider_registry import ProviderRegistry, ProviderSpec
from .language_model.routing import PROTOCOLS, Prices, RoutingTarget, Timeouts
from .language_model.url_safety import UnsafeURL, URLPolicy, check_base_url
from .protocols.base import EFFORT_RANK

BUILTIN_TIMEOUTS = Timeouts()

# path -> messages; flattened by config.py into "file: key.path: message" lines
Problems = Dict[str, List[str]]


def layered_timeouts(*layers: Optional[Mapping[str, Any]]) -> Timeouts:
    """Built-in defaults, then each layer's explicitly set fields (global `timeouts:`, then the provider's)."""
    values = {"connect": BUILTIN_TIMEOUTS.connect, "read": BUILTIN_TIMEOUTS.read, "total": BUILTIN_TIMEOUTS.total}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is not None:
                values[key] = value
    return Timeouts(**values)


def _merge_prices(base: Optional[Prices], override: Optional[Mapping[str, Any]]) -> Optional[Prices]:
    if override is None:
        return base
    fields = dict(vars(base)) if base is not None else {}
    fields.update({k: v for k, v in override.items() if v is not None and k != "per_call"})
    if override.get("per_call"):  # kind by kind: a config's web_search price keeps the registry's others
        fields["per_call"] = {**dict(base.per_call if base is not None else ()), **override["per_call"]}
    return Prices(**fields)


def resolve_providers(
    declared: Mapping[str, Mapping[str, Any]],
    global_timeouts: Optional[Mapping[str, Any]],
    env: Mapping[str, str],
    registry: ProviderRegistry,
) -> Tuple[Dict[str, RoutingTarget], Problems]:
    """Active provider templates (RoutingTargets with an empty model), and any problems found.

    A registry provider is active when its key env var is set or it is
    declared; a declared provider inherits the registry entry of the same id
    (or the one named by `extends`), field by field.
    """
    problems: Problems = {}
    out: Dict[str, RoutingTarget] = {}
    for pid, p in declared.items():
        path = f"providers.{pid}"
        if p.get("enabled") is False:
            continue
        base_id = p.get("extends") or pid
        spec = registry.get(base_id)
        if p.get("extends") and spec is None:
            problems.setdefault(f"{path}.extends", []).append(
                f"unknown registry provider {base_id!r}; known: {sorted(registry.providers)}")
            continue
        template = _template(pid, p, spec, global_timeouts, env, path, problems)
        if template is not None:
            out[pid] = template
    for pid, spec in registry.providers.items():
        if pid in declared or not spec.key_env or not env.get(spec.key_env):
            continue
        template = _template(pid, {}, spec, global_timeouts, env, f"{spec.key_env} (registry provider {pid})",
                             problems)
        if template is not None:
            out[pid] = template
    return out, problems


def _template(
    pid: str,
    p: Mapping[str, Any],
    spec: Optional[ProviderSpec],
    global_timeouts: Optional[Mapping[str, Any]],
    env: Mapping[str, str],
    path: str,
    problems: Problems,
) -> Optional[RoutingTarget]:
    protocol = p.get("protocol") or (spec.protocol if spec else None)
    if protocol is None:
        problems.setdefault(f"{path}.protocol", []).append(
            f"required: {pid!r} is not a registry provider, so name its wire ({' | '.join(PROTOCOLS)}) "
            "or set extends: <registry id>")
        return None
    base_url = p.get("base_url") or (spec.base_url if spec else None)
    if protocol != "mock" and base_url is None:
        # Loud on purpose: a block without a base URL would otherwise fall
        # through to the wire's public default host (and bill someone else).
        who = spec.display_name if spec else f"{pid!r} (not a registry provider)"
        problems.setdefault(f"{path}.base_url", []).append(f"required: {who} has no default base URL")
        return None
    policy = URLPolicy(
        allow_insecure_http=bool(p.get("allow_insecure_http")),
        allow_private_network=bool(p.get("allow_private_network")),
    )
    if protocol != "mock" and base_url is not None:
        try:
            check_base_url(base_url, policy)
        except UnsafeURL as exc:
            problems.setdefault(f"{path}.base_url", []).append(str(exc))
            return None
    key_env = p.get("key_env") or (spec.key_env if spec else None)
    api_key = p.get("api_key") or (env.get(key_env) if key_env else None) or None
    model_prices: Dict[str, Prices] = dict(spec.model_prices) if spec else {}
    for model, override in (p.get("model_prices") or {}).items():
        model_prices[model] = _merge_prices(model_prices.get(model), override) or Prices()
    default_price = _merge_prices(spec.default_price if spec else None, p.get("prices")) or Prices()
    options = _options(spec, p.get("options"), path, problems)
    declared_models = list(p.get("models") or ())
    declared_models += [m for m in model_prices if m not in declared_models]
    return RoutingTarget(
        provider=pid,
        model="",
        protocol=protocol,
        base_url=base_url,
        api_key=api_key,
        headers=dict(p.get("headers") or {}),
        timeouts=layered_timeouts(global_timeouts, p.get("timeouts")),
        prices=default_price,
        confidential=bool(p.get("confidential")),
        options=dict(options, declared_models=tuple(declared_models), model_prices=model_prices),
        auth_header=p.get("auth_header") or (spec.auth_header if spec else None),
        auth_prefix=p["auth_prefix"] if p.get("auth_prefix") is not None else (spec.auth_prefix if spec else ""),
        url_policy=policy,
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# The provider options the codecs read (docs/configuration.md, anthropic.md, gemini.md,
# openai-responses.md), each with its check; `reasoning_efforts` is checked in _options.
_OPTION_CHECKS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "custom_tools": (lambda v: isinstance(v, bool), "must be true or false"),
    "max_tokens_field": (lambda v: isinstance(v, str) and v != "", "must be a field name"),
    "default_max_tokens": (_positive_int, "must be a whole number above 0"),
    "anthropic_version": (lambda v: isinstance(v, str) and v != "", "must be a version string (\"2023-06-01\")"),
    "thought_signature_placeholder": (lambda v: isinstance(v, (bool, str)), "must be true, false or a string"),
    "gemini_schema_field": (lambda v: v in ("parametersJsonSchema", "parameters"),
                            "must be parametersJsonSchema or parameters"),
    "reasoning_summary": (lambda v: v is False or v in ("auto", "concise", "detailed"),
                          "must be auto, concise, detailed or false"),
}


def _as_written(key: str, value: Any) -> Any:
    """A value as the codecs used it before the check: YAML reads `anthropic_version: 2023-06-01` unquoted as
    a date (the header was str() of it), and `${VAR}` gives `default_max_tokens` as text (it was int() of it)."""
    if key == "anthropic_version" and isinstance(value, datetime.date):
        return value.isoformat()
    if key == "default_max_tokens" and isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return value


def _options(spec: Optional[ProviderSpec], given: Any, path: str, problems: Problems) -> Dict[str, Any]:
    """The registry's options under the config's; `reasoning_efforts` merges model by model.

    Like every other key, an option the codecs do not read is an error (a misspelt one did nothing),
    and so is a value of the wrong kind (`default_max_tokens: lots` failed every request at encode time)."""
    options = dict(spec.options) if spec else {}
    given = dict(given or {})
    efforts = given.pop("reasoning_efforts", None)
    for key, value in list(given.items()):
        value = given[key] = _as_written(key, value)
        check = _OPTION_CHECKS.get(key)
        if check is None:
            known = sorted([*_OPTION_CHECKS, "reasoning_efforts"])
            problems.setdefault(f"{path}.options.{key}", []).append(f"Unknown option; known: {', '.join(known)}.")
        elif not check[0](value):
            problems.setdefault(f"{path}.options.{key}", []).append(check[1])
    options.update(given)
    if efforts is not None:
        bad = not isinstance(efforts, Mapping) or any(
            not isinstance(k, str) or not isinstance(v, list) or not v or any(e not in EFFORT_RANK for e in v)
            for k, v in efforts.items())
        if bad:
            problems.setdefault(f"{path}.options.reasoning_efforts", []).append(
                f"must map model names (or prefixes ending in *) to non-empty lists of {', '.join(EFFORT_RANK)}")
        else:
            options["reasoning_efforts"] = {**options.get("reasoning_efforts", {}), **efforts}
    return options


def target_problems(routes: Mapping[str, Any], active: Mapping[str, RoutingTarget],
                    declared: Mapping[str, Any], registry: ProviderRegistry) -> Problems:
    """Every route target must name an active provider; say how to turn a known one on."""
    problems: Problems = {}
    for name, route in routes.items():
        for i, t in enumerate(route.get("targets", [])):
            pid = t["provider"]
            if pid in active:
                continue
            spec = registry.get(pid)
            if pid in declared:
                if declared[pid].get("enabled") is not False:
                    continue  # the provider block itself is invalid and already reported
                hint = f"provider {pid!r} is declared with enabled: false"
            elif spec is not None:
                hint = (f"provider {pid!r} is known but not active: set {spec.key_env} or declare it under providers"
                        if spec.key_env else f"provider {pid!r} is known but not active: declare it under providers")
            else:
                hint = f"Unknown provider {pid!r}; declared: {sorted(active)}."
            problems.setdefault(f"models.{name}.targets.{i}.provider", []).append(hint)
    return problems
