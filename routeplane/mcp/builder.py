"""MCP hook registration (validated like the language-model builder's), the built-in MCP plugin, and build()."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..hook_builder import HookBuilder
from ..hooks.mcp import MCP_HOOK_KINDS, MCPHook
from ..observers import ObserverDispatcher
from .pipeline import MCPPipeline, ToolAllowlistHook
from .sessions import SecretSource, SessionSigner

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..store import Store


class MCPBuilder(HookBuilder):
    """`app.mcp_builder()`: registers MCP hooks; a hook of another pipeline is a TypeError here."""

    kinds = MCP_HOOK_KINDS
    marker = MCPHook
    pipeline = "MCP"

    def build(self, config: "Config", store: Optional["Store"], inline_observers: bool) -> "MCPRuntime":
        settings = config.mcp
        secret = SecretSource(settings.session_secret, store)
        observers = ObserverDispatcher(self.hooks("observe_hook"), workers=config.server.observer_threads,
                                       max_queue=config.server.observer_queue, inline=inline_observers)
        # The tools allowlist is an ordinary pre-request hook, first in the chain.
        pre = (ToolAllowlistHook(),) + self.hooks("pre_request_hook")
        pipeline = MCPPipeline(config.mcp_servers, settings, pre, self.hooks("route_hook"), observers,
                               cursor_key=secret.get)
        signer = SessionSigner(secret, settings.session_ttl_seconds, store)
        return MCPRuntime(pipeline, signer, secret)


class MCPRuntime:
    """What the App holds for MCP: the pipeline (`counts()`), the session signer, the secret's origin."""

    def __init__(self, pipeline: MCPPipeline, signer: SessionSigner, secret: SecretSource) -> None:
        self.pipeline = pipeline
        self.signer = signer
        self.secret = secret

    def counts(self) -> Dict[str, int]:
        return self.pipeline.counts()

    def close(self) -> None:
        self.pipeline.observers.drain(timeout=2.0)
        self.pipeline.close()


def mcp_plugin_class() -> Any:
    """The built-in `mcp` plugin (imported late: routeplane.app imports this module)."""
    from ..app import MigrationItem, Plugin, PluginId

    secret_sql = {
        "sqlite": "lower(hex(randomblob(32)))",
        "postgresql": "replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')",
        "mysql": "LOWER(HEX(RANDOM_BYTES(32)))",
    }

    class MCPPlugin(Plugin):
        """Tables of the MCP gateway: the shared session secret and ended (DELETEd) sessions."""

        id = PluginId("mcp")

        def migrations(self) -> List[MigrationItem]:
            items = []
            for dialect, expr in secret_sql.items():
                items.append(MigrationItem(1, "mcp sessions", (
                    "CREATE TABLE mcp_gateway_secret (id INTEGER PRIMARY KEY, secret VARCHAR(128) NOT NULL);\n"
                    f"INSERT INTO mcp_gateway_secret (id, secret) VALUES (1, {expr});\n"
                    "CREATE TABLE mcp_revoked_sessions (session_key VARCHAR(64) PRIMARY KEY, "
                    "expires_at DOUBLE PRECISION NOT NULL);\n"), ("mcp_gateway_secret", "mcp_revoked_sessions"),
                    dialect))
            return items

        def install(self, app: Any) -> None:
            return None

    return MCPPlugin
