"""routeplane: a programmable router for LLM API traffic (WSGI, synchronous, plugin-driven)."""

from .app import App, AppBuilder, MigrationItem, Plugin, PluginId, create_app
from .language_model.executor import HttpExecutor, MockExecutor
from .language_model.routing import Route, RoutingTarget, StaticRoutingTable

__version__ = "0.1.0"

__all__ = [
    "App", "AppBuilder", "HttpExecutor", "MigrationItem", "MockExecutor", "Plugin", "PluginId", "Route",
    "RoutingTarget", "StaticRoutingTable", "create_app", "__version__",
]
