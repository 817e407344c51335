"""Caller auth: API keys and Web3 (Solana / EVM) JWTs, scopes, model allowlists, budgets."""

from __future__ import annotations

from .budget import BudgetPlugin
from .guard import authenticate_request, require_admin, require_scope
from .plugin import AuthPlugin, auth_plugins

__all__ = ["AuthPlugin", "BudgetPlugin", "auth_plugins", "authenticate_request", "require_admin", "require_scope"]
