"""Auth for Flask views outside the pipeline (`/admin/*`, `/mcp`, `/v1/models`, count_tokens): `@require_admin(app)`,
`authenticate_request`, `check_context`, and `wire_credential`, the one place each wire's credential is found.

Who may call is decided by the same checks as a model call: the built-in auth plugin (`auth.mode`) and every
pre-request hook marked `authenticates = True` (a host app's login when routeplane is mounted, docs/mounting.md).
With neither, only a local caller gets admin: a loopback address or the Unix socket, no proxy in between, and not
mounted in a host.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from ..errors import HookDenied, InternalError, RouteplaneError
from ..language_model.context import ANONYMOUS, Identity, PipelineContext
from ..language_model.types import Prompt
from .authenticator import WIRE_HEADERS, AuthFailure

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.auth")

LOCAL_ADMIN = Identity(account_id="local", scope="admin", kind="anonymous")
# ctx.inbound_protocol of the context an `authenticates` hook sees outside a model call (ctx.route is "" there).
GUARD_PROTOCOL = "guard"
GEMINI_WIRE = "gemini"  # the one wire that also takes `?key=`
# A reverse proxy sets one of these: its loopback connection says nothing about the caller behind it.
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def header(headers: Mapping[str, str], name: str) -> Optional[str]:
    """A header's value, its name matched case-insensitively also in a plain dict: `dict(request.headers)`
    spells `X-Real-IP` as `X-Real-Ip`, and a proxy header this misses makes a proxied caller local."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def credential_from_headers(headers: Mapping[str, str]) -> Optional[str]:
    """`Authorization: Bearer …` on every wire; `x-api-key` (Anthropic) and `x-goog-api-key` (Gemini) too."""
    auth = header(headers, "Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return (header(headers, "x-api-key") or header(headers, "x-goog-api-key") or "").strip() or None


def wire_credential(wire: str, headers: Mapping[str, str], query: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The credential every endpoint of `wire` (calls, listings, counts) authenticates with (docs/auth.md,
    "Credentials on each wire"): Anthropic's `x-api-key` and Gemini's `x-goog-api-key` come before a Bearer
    token, and Gemini's `?key=` (from `query`, the request's query string) after both; OpenAI takes only
    Bearer. Header names are matched case-insensitively, whatever mapping `headers` is."""
    own = WIRE_HEADERS.get(wire)
    auth = header(headers, "Authorization") or ""
    bearer = (auth[7:].strip() or None) if auth[:7].lower() == "bearer " else None
    found = ((header(headers, own) or "").strip() if own else "") or bearer
    if found is None and wire == GEMINI_WIRE and query is not None:
        found = (query.get("key") or "").strip() or None
    return found


def _is_loopback(addr: Optional[str]) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def is_local_caller(app: "App", headers: Mapping[str, str], remote_addr: Optional[str]) -> bool:
    """The auth-less admin rule: a local peer that is not a proxy relaying someone else, in a standalone gateway.

    Mounted in a host app, the host's own front (proxy, load balancer, tunnel) decides what the peer
    address means, so no caller is local: admin needs `auth.mode` or an `authenticates` hook there.
    """
    return not getattr(app, "mounted", False) and _not_local(headers, remote_addr) is None


def _not_local(headers: Mapping[str, str], remote_addr: Optional[str]) -> Optional[str]:
    """Why a standalone gateway's peer is not a local caller, or None when it is.

    Local: a loopback address with a Host that names this machine (not a rebindable domain), or "" —
    gunicorn's REMOTE_ADDR for a peer on a Unix socket (`server.listen: unix:PATH`), which only a process on
    this host can connect to. nginx proxying to that socket connects
    the same way for every remote client, so, as on loopback, the proxy headers it sets (the shipped
    deploy/nginx.conf sends X-Forwarded-For) make the request a proxied one."""
    sent = next((h for h in PROXY_HEADERS if header(headers, h)), None)
    if sent is not None:
        return f"for a request that came through a proxy (it carries {sent})"
    if remote_addr == "":
        return None  # the Unix socket: no browser page can reach it, whatever Host it names
    if not _is_loopback(remote_addr):
        return "when called from another host"
    if not _names_this_machine(header(headers, "Host")):
        return ("for a request whose Host header names a domain (a web page can make its own domain resolve to "
                "this machine: DNS rebinding; call it as localhost or 127.0.0.1)")
    return None


def _names_this_machine(host: Optional[str]) -> bool:
    """A Host no web page can rebind: localhost or an IP literal (or none at all, which no browser sends).

    Under DNS rebinding an attacker's page reaches a loopback port under the attacker's own domain, and its
    requests name that domain in Host; the loopback peer address alone would make it the local admin.
    """
    if not host:
        return True
    try:
        hostname = urlsplit(f"//{host.strip()}").hostname or ""
        if hostname != "localhost":
            ipaddress.ip_address(hostname)
    except ValueError:  # a domain name, or a Host that is not one at all (`[::1`)
        return False
    return True


def _auth_plugin(app: "App") -> Any:
    from .plugin import AuthPlugin

    return next((p for p in app.plugins if isinstance(p, AuthPlugin)), None)


def auth_hooks(app: "App") -> List[Tuple[str, Any]]:
    """The pipeline's pre-request hooks marked `authenticates = True` (as wrapped: stats and time budgets apply)."""
    return [(pid, hook) for pid, hook in app.pipeline.hooks.pre_request
            if getattr(getattr(hook, "inner", hook), "authenticates", False) is True]


def authenticates(app: "App") -> bool:
    """Does anything decide who the caller is (the auth plugin, or an `authenticates` hook)?"""
    return _auth_plugin(app) is not None or bool(auth_hooks(app))


def run_auth_hooks(hooks: List[Tuple[str, Any]], ctx: PipelineContext) -> Optional[RouteplaneError]:
    """Each hook in order on `ctx` (which they may give an identity); the first denial as an error, else None.

    A hook that raises denies (500, logged): it may have been the only thing between the caller and the gateway.
    """
    from ..hooks.language_model import DecisionKind

    for plugin_id, hook in hooks:
        try:
            decision = hook.check(ctx)
        except RouteplaneError as err:
            return err
        except Exception:
            log.exception("auth hook of plugin %s failed for request %s", plugin_id, ctx.request_id)
            return InternalError()
        if decision.kind is DecisionKind.DENY and decision.reason is not None:
            reason = decision.reason
            return HookDenied(reason.message, status=reason.status, kind=reason.kind, retry_after=reason.retry_after,
                              code=reason.code)
    return None


def authenticate_request(app: "App", headers: Mapping[str, str], remote_addr: Optional[str],
                         scope: str = "api", wire: str = "", query: Optional[Mapping[str, str]] = None,
                         ) -> Tuple[Optional[Identity], Optional[RouteplaneError]]:
    """(identity, None) or (None, error) for a request outside the pipeline, needing `scope` (`api` or `admin`).

    `wire`: the protocol of a wire's own view (a model listing, a count), whose credential is found as its
    model calls find it (`wire_credential`, with `query` for Gemini's `?key=`); without it (admin, `/mcp`),
    Bearer, then `x-api-key` or `x-goog-api-key`. The auth plugin authenticates the credential, then every `authenticates` hook runs on a context with
    that identity, the credential and the request headers (`ctx.route` is ""). With neither, a local
    caller (`is_local_caller`) is the local admin and anyone else may use `api` endpoints only.
    """
    plugin = _auth_plugin(app)
    hooks = auth_hooks(app)
    credential = wire_credential(wire, headers, query) if wire else credential_from_headers(headers)
    identity = ANONYMOUS
    if plugin is None and not hooks:
        if scope == "admin" and not is_local_caller(app, headers, remote_addr):
            why = ("mounted in a host app, admin endpoints need auth.mode or an `authenticates` hook "
                   "(docs/mounting.md)" if getattr(app, "mounted", False) else
                   f"admin endpoints need auth (auth.mode) {_not_local(headers, remote_addr)}: without it only a "
                   "direct local caller (loopback or the Unix socket) is the admin")
            return None, RouteplaneError(why[0].upper() + why[1:] + ".", status=403, kind="permission")
        return LOCAL_ADMIN, None
    if plugin is not None:
        try:
            identity = plugin.authenticator.authenticate(credential, wire)
        except AuthFailure as failure:
            if failure.status in (401, 403):
                kind = "authentication" if failure.status == 401 else "permission"
                return None, RouteplaneError(failure.message, status=failure.status, kind=kind)
            # The key or revocation store cannot answer: the same 503 as on model calls (auth/plugin.py).
            return None, RouteplaneError(failure.message, status=failure.status, kind="internal",
                                         code="auth_unavailable")
    if hooks:
        ctx = PipelineContext(_request_id(), GUARD_PROTOCOL, Prompt(model="", messages=()), dict(headers),
                              identity=identity, credential=credential)
        ctx.dry_run = True
        err = run_auth_hooks(hooks, ctx)
        if err is not None:
            return None, err
        identity = ctx.identity
    if scope == "admin" and identity.scope != "admin":
        return None, RouteplaneError("This endpoint needs a credential with admin scope.", status=403,
                                     kind="permission", code="insufficient_scope")
    return identity, None


def _request_id() -> str:
    from flask import has_request_context

    from ..web.common import request_id

    return request_id() if has_request_context() else "guard"


def check_context(app: "App", ctx: Any) -> Any:
    """Run only the auth checks (credential, identity, model allowlist, `authenticates` hooks) on a PipelineContext.

    For endpoints that are not billed calls (Gemini countTokens): no budget reservation.
    Returns a HookDecision; allow() when nothing authenticates.
    """
    from ..hooks.language_model import DecisionKind, DenyReason, HookDecision
    from .plugin import AuthHook

    plugin = _auth_plugin(app)
    if plugin is not None:
        decision = AuthHook(plugin.authenticator).check(ctx)
        if decision.kind is DecisionKind.DENY:
            return decision
    hooks = auth_hooks(app)
    err = run_auth_hooks(hooks, ctx)
    if err is not None:
        return HookDecision.deny(DenyReason(err.kind, err.message, err.status, err.retry_after, err.code))
    if hooks:  # an identity an `authenticates` hook set, checked as on model calls
        from .plugin import identity_allowlist

        return identity_allowlist(ctx)
    return HookDecision.allow()


def require_scope(app: "App", scope: str = "api", render: Optional[Callable[[RouteplaneError], Any]] = None,
                  wire: Union[str, Callable[[], str]] = "") -> Callable:
    """Decorator for a Flask view: 401 without valid credentials, 403 without the scope (`api` or `admin`).

    The identity is left in `flask.g.routeplane_identity`. Errors render in the
    OpenAI error shape unless `render` (an error-body function) is given.
    `wire`: the view belongs to that wire (or a function of the request names it, for `/v1/models`, which three
    SDKs share), and takes the credential its model calls take (`wire_credential`: on Gemini, `?key=` too).
    Never for admin views, whose credentials stay out of URLs.
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import g, request

            from ..protocols.openai_chat import CLIENT
            from ..web.common import error_response, request_id

            identity, err = authenticate_request(app, request.headers, request.remote_addr, scope=scope,
                                                 wire=wire() if callable(wire) else wire, query=request.args)
            if err is not None:
                return error_response(err, render or CLIENT.error_body, request_id())
            g.routeplane_identity = identity
            return view(*args, **kwargs)

        return wrapper

    return decorator


def require_admin(app: "App", render: Optional[Callable[[RouteplaneError], Any]] = None) -> Callable:
    """`require_scope(app, "admin")`: for every `/admin/*` view."""
    return require_scope(app, "admin", render)
