"""Auth for Flask views outside the pipeline (`/admin/*`): `@require_admin(app)` and `authenticate_request`."""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Tuple

from ..errors import RouteplaneError
from ..language_model.context import Identity
from .authenticator import AuthFailure

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

LOCAL_ADMIN = Identity(account_id="local", scope="admin", kind="anonymous")


def credential_from_headers(headers: Mapping[str, str]) -> Optional[str]:
    """`Authorization: Bearer …` on every wire; `x-api-key` (Anthropic) and `x-goog-api-key` (Gemini) too."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return (headers.get("x-api-key") or headers.get("x-goog-api-key") or "").strip() or None


def _is_loopback(addr: Optional[str]) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def authenticate_request(app: "App", headers: Mapping[str, str], remote_addr: Optional[str],
                         scope: str = "api") -> Tuple[Optional[Identity], Optional[RouteplaneError]]:
    """(identity, None) or (None, error). With auth.mode none, only loopback callers get admin."""
    from .plugin import AuthPlugin

    plugin = next((p for p in app.plugins if isinstance(p, AuthPlugin)), None)
    if plugin is None:
        if scope == "admin" and not _is_loopback(remote_addr):
            return None, RouteplaneError("Admin endpoints need auth (auth.mode) when called from another host.",
                                         status=403, kind="permission")
        return LOCAL_ADMIN, None
    try:
        identity = plugin.authenticator.authenticate(credential_from_headers(headers))
    except AuthFailure as failure:
        kind = {401: "authentication", 403: "permission"}.get(failure.status, "overloaded")
        return None, RouteplaneError(failure.message, status=failure.status, kind=kind)
    if scope == "admin" and identity.scope != "admin":
        return None, RouteplaneError("This endpoint needs a credential with admin scope.", status=403,
                                     kind="permission", code="insufficient_scope")
    return identity, None


def check_context(app: "App", ctx: Any) -> Any:
    """Run only the auth check (credential, identity, model allowlist) on a PipelineContext.

    For endpoints that are not billed calls (count_tokens): no budget reservation.
    Returns a HookDecision; allow() when auth is off.
    """
    from ..hooks.language_model import HookDecision
    from .plugin import AuthHook, AuthPlugin

    plugin = next((p for p in app.plugins if isinstance(p, AuthPlugin)), None)
    if plugin is None:
        return HookDecision.allow()
    return AuthHook(plugin.authenticator).check(ctx)


def require_scope(app: "App", scope: str = "api", render: Optional[Callable[[RouteplaneError], Any]] = None) -> Callable:
    """Decorator for a Flask view: 401 without valid credentials, 403 without the scope (`api` or `admin`).

    The identity is left in `flask.g.routeplane_identity`. Errors render in the
    OpenAI error shape unless `render` (an error-body function) is given.
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import g, request

            from ..protocols.openai_chat import CLIENT
            from ..web.common import error_response, request_id

            identity, err = authenticate_request(app, request.headers, request.remote_addr, scope=scope)
            if err is not None:
                return error_response(err, render or CLIENT.error_body, request_id())
            g.routeplane_identity = identity
            return view(*args, **kwargs)

        return wrapper

    return decorator


def require_admin(app: "App", render: Optional[Callable[[RouteplaneError], Any]] = None) -> Callable:
    """`require_scope(app, "admin")`: for every `/admin/*` view."""
    return require_scope(app, "admin", render)
