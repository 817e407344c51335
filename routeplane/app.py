"""The App, its builder, the Plugin API, and `create_app()` for gunicorn."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from marshmallow import Schema, ValidationError

from .config import DEFAULT_CONFIG, Config, ConfigError, load_config, parse_config, plugin_enabled
from .hooks.acp import ACPHook
from .hooks.language_model import HOOK_KINDS
from .hooks.mcp import MCPHook
from .language_model.executor import Executor, HttpExecutor
from .language_model.pipeline import LanguageModelHooks, LanguageModelPipeline
from .language_model.routing import RoutingTable, StaticRoutingTable
from .lifecycle import Lifecycle
from .observers import ObserverDispatcher

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from .acp.builder import ACPBuilder
    from .mcp.builder import MCPBuilder
    from .store import Store

log = logging.getLogger("routeplane")

ENTRY_POINT_GROUP = "routeplane.plugins"


class PluginId(str):
    """A plugin's unique id; also the key of its section under `plugins:` in the config."""

    def __new__(cls, value: str) -> "PluginId":
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError(f"invalid plugin id {value!r}: use letters, digits, '-', '_' or '.'")
        return super().__new__(cls, value)


@dataclass(frozen=True)
class MigrationItem:
    """One numbered, atomic schema change of a plugin. `tables` are the only ones it may touch."""

    version: int
    name: str
    sql: str
    tables: Tuple[str, ...] = ()
    dialect: Optional[str] = None  # None = every dialect; else "sqlite" | "postgresql" | "mysql"


class Plugin:
    """A bundle of hooks (and migrations) installed in one call.

    Subclasses set `id`, and may set `options_schema` (a marshmallow Schema
    class) to validate their `plugins.<id>` config section before install.
    """

    id: PluginId = PluginId("plugin")
    options_schema: Optional[type] = None
    # Time budget of this plugin's pre-request hooks (config `plugins.<id>.timeout_ms` overrides);
    # past it the hook is skipped when fail_open, else the request is denied with 503.
    timeout_ms: Optional[float] = None
    fail_open: bool = True

    def migrations(self) -> List[MigrationItem]:
        return []

    def install(self, app: "AppBuilder") -> None:
        raise NotImplementedError

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "Plugin":
        return cls(**options) if options else cls()


class LanguageModelBuilder:
    """Collects the language-model pipeline's parts and hooks, validating each at registration."""

    def __init__(self) -> None:
        self._hooks: Dict[str, List[Tuple[str, Any]]] = {kind: [] for kind in HOOK_KINDS}
        self._routing_table: Optional[RoutingTable] = None
        self._executor: Optional[Executor] = None
        self._current_plugin = "app"

    def routing_table(self, table: RoutingTable) -> "LanguageModelBuilder":
        self._routing_table = table
        return self

    def executor(self, executor: Executor) -> "LanguageModelBuilder":
        self._executor = executor
        return self

    def pre_request_hook(self, hook: Any) -> "LanguageModelBuilder":
        return self._register("pre_request_hook", hook)

    def route_hook(self, hook: Any) -> "LanguageModelBuilder":
        return self._register("route_hook", hook)

    def execution_hook(self, hook: Any) -> "LanguageModelBuilder":
        return self._register("execution_hook", hook)

    def stream_hook(self, hook: Any) -> "LanguageModelBuilder":
        return self._register("stream_hook", hook)

    def settlement_recorder(self, hook: Any) -> "LanguageModelBuilder":
        return self._register("settlement_recorder", hook)

    def observe_hook(self, hook: Any) -> "LanguageModelBuilder":
        return self._register("observe_hook", hook)

    def _register(self, kind: str, hook: Any) -> "LanguageModelBuilder":
        contract, methods = HOOK_KINDS[kind]
        who = f"{type(hook).__name__} (plugin {self._current_plugin!r})"
        if isinstance(hook, (MCPHook, ACPHook)):
            raise TypeError(f"{who} is a hook of another pipeline; it cannot be registered on the language-model pipeline")
        if not isinstance(hook, contract):
            raise TypeError(f"{who} is not a {contract.__name__}; {kind}() takes an instance of it")
        for name in methods:
            _check_arity(hook, name, _ARITY[name], who)
        self._hooks[kind].append((self._current_plugin, hook))
        return self

    def hooks(self) -> LanguageModelHooks:
        h = self._hooks
        return LanguageModelHooks(
            pre_request=_with_identity_allowlist(h["pre_request_hook"]),
            route=tuple(h["route_hook"]),
            execution=tuple(h["execution_hook"]),
            stream=tuple(h["stream_hook"]),
            settlement=tuple(h["settlement_recorder"]),
            observe=tuple(h["observe_hook"]),
        )


def _with_identity_allowlist(hooks: List[Tuple[str, Any]]) -> Tuple[Tuple[str, Any], ...]:
    """The pre-request hooks, with the identity's model allowlist checked right after the last hook marked
    `authenticates` (before any hook that could answer the request itself, a cache)."""
    last = max((i for i, (_pid, hook) in enumerate(hooks) if getattr(hook, "authenticates", False) is True),
               default=None)
    if last is None:
        return tuple(hooks)
    from .auth.budget import BudgetHook
    from .auth.plugin import IdentityAllowlistHook

    budgets = any(isinstance(hook, BudgetHook) for _pid, hook in hooks)
    return (*hooks[:last + 1], ("routeplane", IdentityAllowlistHook(budgets)), *hooks[last + 1:])


_ARITY = {
    "check": 1, "resolve": 2, "on_success": 2, "on_failure": 2, "on_part": 2, "on_stream_end": 2, "interest": 0,
    "record": 1, "on_request_start": 1, "after_phase": 1, "on_hop_start": 1, "on_hop_end": 1, "on_stream_part": 1,
    "on_request_end": 1,
}


def _check_arity(hook: Any, name: str, n: int, who: str) -> None:
    method = getattr(hook, name, None)
    if not callable(method):
        raise TypeError(f"{who} has no method {name}()")
    try:
        inspect.signature(method).bind(*([None] * n))
    except TypeError:
        raise TypeError(f"{who}.{name}() must take {n} argument(s) besides self") from None
    except ValueError:  # builtins without a signature
        pass


class AppBuilder:
    def __init__(self) -> None:
        self._config: Optional[Config] = None
        self._lm = LanguageModelBuilder()
        from .mcp.builder import MCPBuilder  # late: routeplane.mcp imports auth, which imports this module

        self._mcp = MCPBuilder()
        from .acp.builder import ACPBuilder

        self._acp = ACPBuilder()
        self._plugins: List[Plugin] = []
        self._inline_observers = False
        self._interceptors: List[Callable[[Dict[str, str], Any], Tuple[Dict[str, str], Any]]] = []
        self._on_shutdown: List[Callable[[], None]] = []
        self._store: Optional["Store"] = None
        self._blueprints: List[Callable[["App"], Any]] = []

    def config(self, config: Config) -> "AppBuilder":
        self._config = config
        return self

    def store(self, store: Optional["Store"]) -> "AppBuilder":
        """The database (routeplane.store.Store) plugins write to; None = no store."""
        self._store = store
        return self

    @property
    def current_store(self) -> Optional["Store"]:
        return self._store

    @property
    def current_config(self) -> Optional[Config]:
        """The config given to `config()` (plugins read route and provider names from it)."""
        return self._config

    def inline_observers(self, inline: bool = True) -> "AppBuilder":
        """Run observers on the request thread (tests): deterministic, still isolated."""
        self._inline_observers = inline
        return self

    def language_model(self, configure: Callable[[LanguageModelBuilder], Any]) -> "AppBuilder":
        configure(self._lm)
        return self

    def language_model_builder(self) -> LanguageModelBuilder:
        return self._lm

    def mcp_builder(self) -> "MCPBuilder":
        """MCP hooks: `pre_request_hook`, `route_hook`, `observe_hook` (routeplane.hooks.mcp contracts)."""
        return self._mcp

    def acp_builder(self) -> "ACPBuilder":
        """ACP hooks: `pre_request_hook`, `route_hook`, `observe_hook` (routeplane.hooks.acp contracts)."""
        return self._acp

    def transport_interceptor(
        self, interceptor: Callable[[Dict[str, str], Any], Tuple[Dict[str, str], Any]]
    ) -> "AppBuilder":
        """`interceptor(headers, body) -> (headers, body)` sees the raw JSON body before any wire decodes it."""
        self._interceptors.append(interceptor)
        return self

    def on_shutdown(self, callback: Callable[[], None]) -> "AppBuilder":
        """Called once when the worker shuts down (gunicorn worker_exit) or `App.shutdown()` is called."""
        self._on_shutdown.append(callback)
        return self

    def blueprint(self, factory: Callable[["App"], Any]) -> "AppBuilder":
        """`factory(app) -> flask.Blueprint`: extra HTTP endpoints of a plugin (e.g. GET /metrics)."""
        self._blueprints.append(factory)
        return self

    def plugin(self, plugin: Plugin) -> "AppBuilder":
        if not isinstance(plugin, Plugin):
            raise TypeError(f"{type(plugin).__name__} is not a routeplane Plugin")
        if any(p.id == plugin.id for p in self._plugins):
            raise ValueError(f"a plugin with id {plugin.id!r} is already installed")
        previous, self._lm._current_plugin = self._lm._current_plugin, str(plugin.id)
        self._mcp._current_plugin = str(plugin.id)
        self._acp._current_plugin = str(plugin.id)
        try:
            plugin.install(self)
        finally:
            self._lm._current_plugin = previous
            self._mcp._current_plugin = previous
            self._acp._current_plugin = previous
        self._plugins.append(plugin)
        return self

    def build(self) -> "App":
        config = self._config or parse_config(DEFAULT_CONFIG, "<built-in defaults>")
        lm = self._lm
        table = lm._routing_table or StaticRoutingTable(config.routes, config.providers)
        executor = lm._executor or HttpExecutor(max_response_bytes=config.limits.max_response_bytes,
                                                   max_stream_bytes=config.limits.max_stream_bytes)
        from .plugin_stats import HookPolicy, PluginStats, instrument

        stats = PluginStats()
        policies = {str(p.id): HookPolicy(getattr(p, "timeout_ms", None), getattr(p, "fail_open", True))
                    for p in self._plugins}
        hooks = instrument(lm.hooks(), stats, policies)
        observers = ObserverDispatcher(
            [h for _pid, h in hooks.observe],
            workers=config.server.observer_threads,
            max_queue=config.server.observer_queue,
            inline=self._inline_observers,
        )
        pipeline = LanguageModelPipeline(table, executor, hooks, observers, fallback=config.fallback)
        app = App(config, pipeline, tuple(self._plugins))
        app.transport_interceptors = tuple(self._interceptors)
        app.mcp = self._mcp.build(config, self._store, self._inline_observers)
        app.acp = self._acp.build(config, self._inline_observers)
        app.shutdown_callbacks = tuple(self._on_shutdown) + (app.mcp.close, app.acp.close)
        app.plugin_blueprints = tuple(self._blueprints)
        app.plugin_stats = stats
        app.store = self._store
        return app


class App:
    """A built gateway: config, pipeline and plugins. Holds all state; no globals."""

    def __init__(self, config: Config, pipeline: LanguageModelPipeline, plugins: Sequence[Plugin]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.plugins = tuple(plugins)
        self.transport_interceptors: Tuple[Callable[[Dict[str, str], Any], Tuple[Dict[str, str], Any]], ...] = ()
        self.shutdown_callbacks: Tuple[Callable[[], None], ...] = ()
        from .plugin_stats import PluginStats

        self.plugin_stats = PluginStats()
        self._shut_down = False
        self.lifecycle = Lifecycle()  # draining / closing streams on shutdown (gunicorn_conf.py)
        self.store: Optional["Store"] = None  # routeplane.store.Store, set by the builder
        self._store_ready = False
        self.plugin_blueprints: Tuple[Callable[["App"], Any], ...] = ()
        self.stats_flusher: Any = None  # routeplane.metrics.StatsFlusher, set when the admin blueprint mounts
        self.mcp: Any = None  # routeplane.mcp.builder.MCPRuntime (pipeline, sessions; `mcp.counts()`)
        self.acp: Any = None  # routeplane.acp.builder.ACPRuntime (agents, hooks; `acp.stats()`)
        # Set by init_app() into a host's Flask app: no caller counts as local there (routeplane.auth.guard).
        self.mounted = False

    def shutdown(self) -> None:
        """Run the plugins' shutdown callbacks once (errors logged) and drain observers."""
        if self._shut_down:
            return
        self._shut_down = True
        self.pipeline.observers.drain(timeout=2.0)
        if self.stats_flusher is not None:
            self.stats_flusher.stop()  # the worker's final plugin stats
        for callback in self.shutdown_callbacks:
            try:
                callback()
            except Exception:
                log.exception("a shutdown callback failed")

    @staticmethod
    def builder() -> AppBuilder:
        return AppBuilder()

    def flask_app(self) -> "Flask":
        from flask import Flask, request

        from .errors import RouteplaneError
        from .web import error_renderer_for
        from .web.common import error_response, request_id

        flask_app = Flask("routeplane")
        self._attach(flask_app, "")

        @flask_app.errorhandler(404)
        @flask_app.errorhandler(405)
        def _not_routed(exc: Any) -> Any:
            # Unknown paths and methods answer in their wire's error shape, never HTML.
            err = RouteplaneError(f"{exc.name}: no such endpoint or method on this gateway.", status=exc.code,
                                  kind="not_found" if exc.code == 404 else "invalid_request")
            resp = error_response(err, error_renderer_for(request.path), request_id())
            if getattr(exc, "valid_methods", None):
                resp.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
            return resp

        return flask_app

    def init_app(self, flask_app: "Flask", url_prefix: str = "") -> None:
        """Mount every blueprint into an existing (host) Flask app, optionally under a prefix (docs/mounting.md).

        Mounted, no caller is "local": without `auth.mode` or a pre-request hook marked `authenticates = True`
        (the host's login), the admin endpoints refuse everyone. Paths under the prefix that match no
        endpoint answer 404/405 in their wire's error shape; the host's other paths stay the host's.
        """
        self.mounted = True
        self._attach(flask_app, url_prefix)
        from .auth.guard import authenticates

        if not authenticates(self):
            log.warning("routeplane is mounted with auth.mode none and no pre-request hook marked "
                        "`authenticates = True`: /admin/* refuses every caller, and /mcp and /v1/models answer "
                        "anyone who reaches the host (docs/mounting.md)")

    def _attach(self, flask_app: "Flask", url_prefix: str) -> None:
        from .web import register_blueprints

        if self.store is not None and not self._store_ready:
            from .store.migrations import prepare_for_serving

            # Verify (under the gunicorn master, which migrated) or migrate (anywhere else)
            # before serving: a tampered history stops the app here.
            prepare_for_serving(self.store, self.plugins)
            self._store_ready = True
        flask_app.extensions.setdefault("routeplane", self)
        register_blueprints(self, flask_app, url_prefix.rstrip("/"))

    def serve(self, addr: str = "127.0.0.1:4356") -> None:
        """Development server (threaded Werkzeug). Production: `routeplane serve` (gunicorn)."""
        from werkzeug.serving import run_simple

        host, _, port = addr.rpartition(":")
        run_simple(host or "127.0.0.1", int(port), self.flask_app(), threaded=True)


def discover_plugins(config: Config) -> List[Plugin]:
    """Load the plugins named under `plugins:` through the `routeplane.plugins` entry point.

    Every plugin's problems are reported together (`routeplane check` showed only the first one)."""
    if not config.plugins:
        return []
    available = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    plugins: List[Plugin] = []
    problems: List[str] = []
    for pid, section in config.plugins.items():
        if plugin_enabled(section) is False:
            continue
        try:
            plugin = _configured_plugin(config, pid, section, available)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if plugin is not None:
            plugins.append(plugin)
    if problems:
        raise ConfigError("\n".join(problems))
    return plugins


def _configured_plugin(config: Config, pid: str, section: Any, available: Mapping[str, Any]) -> Optional[Plugin]:
    """The plugin of one `plugins.<id>` section (None: one `build_app` installs itself, as `budget`)."""
    path = f"{config.source}: plugins.{pid}"
    # A time budget for the plugin's pre-request hooks; the plugin's own `fail_open` decides what a
    # timeout means (skip the hook, or deny with 503).
    timeout_ms = (section or {}).get("timeout_ms")
    options = plugin_options(section)
    if pid == "budget":  # auth/plugin.py installs it: with auth.mode none, for a host's identities
        if options:
            raise ConfigError(f"{path}: takes no options; the budget settings are under auth.budget")
        return None
    # A built-in id is never an installed package's: one claiming `spend_log` would replace the
    # spend log (no rows, and a migration history shared with the real one).
    ep = _BUILTIN_PLUGINS.get(pid) or available.get(pid)
    if ep is None:
        raise ConfigError(f"{path}: no installed plugin has this id (installed: {sorted(available) or 'none'})")
    try:
        factory = ep.load()
    except Exception as exc:
        raise ConfigError(f"{path}: the plugin failed to import: {exc}") from exc
    plugin = make_plugin(factory, options, pid, path)
    if timeout_ms is not None:
        if not isinstance(timeout_ms, (int, float)) or isinstance(timeout_ms, bool) or timeout_ms <= 0:
            raise ConfigError(f"{path}.timeout_ms: must be a positive number of milliseconds")
        plugin.timeout_ms = float(timeout_ms)
    return plugin


def make_plugin(factory: Any, options: Dict[str, Any], pid: str, path: str) -> Plugin:
    """A plugin from its factory and its config section's options (checked by its `options_schema`).

    Options a constructor refuses (TypeError, ValueError, or a marshmallow ValidationError it
    raises itself) are a ConfigError naming the section, not a traceback."""
    schema_cls = getattr(factory, "options_schema", None)
    try:
        if schema_cls is not None:
            options = schema_cls().load(options)
        return factory.from_options(options) if hasattr(factory, "from_options") else factory(**options)
    except ValidationError as exc:
        from .config import _flatten

        lines = _flatten(exc.messages, f"plugins.{pid}")  # key paths as in the file
        raise ConfigError(f"{path}: invalid options:\n  " + "\n  ".join(lines)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: invalid options: {exc}") from None


def plugin_options(section: Any) -> Dict[str, Any]:
    """A plugin's own options: its config section without the gateway's keys (`enabled`, `timeout_ms`)."""
    return {k: v for k, v in dict(section or {}).items() if k not in ("enabled", "timeout_ms")}


class _BuiltinPlugin:
    """A plugin shipped inside routeplane, found by id like an entry point (same `load()`)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def load(self) -> Any:
        import importlib

        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_BUILTIN_PLUGINS = {
    "spend_log": _BuiltinPlugin("routeplane.store.spend_log:SpendLogPlugin"),
    "request_log": _BuiltinPlugin("routeplane.request_log:RequestLogPlugin"),
}


def build_app(config: Config, extra_plugins: Sequence[Plugin] = (), store: Optional["Store"] = None) -> App:
    """The App for a config. With `database.url` set (the default), it gets a Store (no connection
    is opened here) and the spend log plugin, unless `plugins: {spend_log: {enabled: false}}`."""
    if store is None and config.database_url:
        from .store import Store

        store = Store.from_url(config.database_url)
    builder = App.builder().config(config).store(store)
    plugins = list(discover_plugins(config))
    if store is not None and "spend_log" not in config.plugins:
        from .store.spend_log import SpendLogPlugin

        plugins.insert(0, SpendLogPlugin())
    if store is not None and config.mcp_servers and "mcp" not in config.plugins:
        from .mcp.builder import mcp_plugin_class

        plugins.append(mcp_plugin_class()())  # the MCP session tables (shared session secret, ended sessions)
    if "request_log" not in config.plugins:  # one structured line per request, on by default
        from .request_log import RequestLogPlugin

        plugins.append(RequestLogPlugin())
    from .auth.plugin import auth_plugins

    try:  # authentication runs first, budget admission last (also with auth.mode none: `plugins: {budget: {}}`)
        first, last = auth_plugins(config)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{config.source}: {exc}") from None
    for plugin in first + plugins + list(extra_plugins) + last:
        _install(builder, plugin, config.source)
    return builder.build()


def _install(builder: AppBuilder, plugin: Plugin, source: str) -> None:
    """`builder.plugin(plugin)`, with a plugin that fails to install (a hook of another pipeline, a bug)
    reported as a ConfigError naming it: one line from `routeplane check` and `serve`, not a traceback."""
    try:
        builder.plugin(plugin)
    except ConfigError:
        raise
    except Exception as exc:
        pid = getattr(plugin, "id", type(plugin).__name__)
        raise ConfigError(f"{source}: plugins.{pid}: the plugin failed to install: "
                          f"{type(exc).__name__}: {exc}") from exc


def create_app(config_path: Optional[str] = None) -> "Flask":
    """The WSGI app gunicorn serves: config from `config_path`, `$ROUTEPLANE_CONFIG`, or defaults."""
    import os

    from .logs import configure_logging

    path = config_path or os.environ.get("ROUTEPLANE_CONFIG") or None
    config = load_config(path)
    configure_logging(config.server.log_level)
    return build_app(config).flask_app()


__all__ = [
    "App", "AppBuilder", "LanguageModelBuilder", "MigrationItem", "Plugin", "PluginId", "Schema",
    "build_app", "create_app", "discover_plugins",
]
