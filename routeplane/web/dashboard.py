"""Admin dashboard blueprint (`/admin/`): server-rendered HTML pages and SVG charts, no JavaScript, no CDN."""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Response, g, render_template, request

from .. import dashboard_data as data
from ..auth.guard import authenticate_request, credential_from_headers
from ..breaker_view import app_view
from ..metrics import NameBounds, is_store_error

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.dashboard")

DEFAULT_WINDOW = "24h"
COOKIE = "routeplane_admin"
COOKIE_MAX_AGE = 8 * 3600  # a working day; the credential's own expiry still applies on every request
# Browsers drop, without a word, a cookie whose name and value exceed 4096 bytes (RFC 6265 §6.1's minimum, and
# Chromium's and Firefox's limit); auth.max_token_bytes allows tokens up to 64 KiB.
MAX_COOKIE_BYTES = 4096
# Groups the spend page lists (the busiest first; the CSV has them all): clients choose route names (any unknown
# model is a cheap 404 with its own row) and, with self-signed JWTs, accounts, so the groups are theirs to multiply.
MAX_SPEND_ROWS = 500
CHART_W, CHART_H, PAD_L, PAD_B, PAD_T = 640, 200, 56, 28, 12


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_dashboard", __name__, template_folder="../templates")
    guard = _html_guard(app)

    @bp.errorhandler(Exception)
    def _failed(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return exc
        if not is_store_error(exc):  # a bug here, not an outage: say so (and log the traceback)
            log.exception("dashboard %s failed", request.path)
            return _error_page(500, "Internal error", "The dashboard failed to build this page; the gateway's logs "
                               "say why.")
        # A store that is down, slow or out of connections: the page says so instead of a bare 500.
        log.warning("dashboard %s failed: %s: %s", request.path, type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "")
        return _error_page(503, "Store unavailable", "The dashboard could not read the store; try again shortly. "
                           "The gateway's logs say why.")

    @bp.context_processor
    def _helpers() -> Dict[str, Any]:
        return {"usd": usd, "ts": _ts, "ms": _ms, "pct": _pct}

    @bp.get("/admin/")
    @guard
    def overview() -> Any:
        window = _window(request.args.get("window"), DEFAULT_WINDOW)
        if window is None:
            return _bad_request("window must be one of " + ", ".join(data.WINDOWS) + ".")
        breakers = app_view(app)  # first: it flushes this worker's, so the health line counts it too
        if app.store is None:
            return _page("dashboard/overview.html", "overview", window=window, ov=None, breakers=breakers)
        ov = data.overview(app.store, window, names=NameBounds.from_config(app.config))
        series = ov["series"]
        return _page("dashboard/overview.html", "overview", window=window, ov=ov, health=_health(app),
                     breakers=breakers,
                     requests_chart=bar_chart(series, "requests", "Requests", "errors"),
                     spend_chart=line_chart(series, "cost_micro_usd", "Spend (USD)"))

    @bp.get("/admin/spend")
    @guard
    def spend() -> Any:
        window, by, err = _spend_args()
        if err:
            return _bad_request(err)
        sp = data.spend(app.store, window, by) if app.store is not None else None
        rows = sp["rows"][:MAX_SPEND_ROWS] if sp is not None else []
        more = len(sp["rows"]) - len(rows) if sp is not None else 0
        return _page("dashboard/spend.html", "spend", window=window, by=by, sp=sp, rows=rows, more=more,
                     groups=list(data.SPEND_GROUPS))

    @bp.get("/admin/spend.csv")
    @guard
    def spend_csv() -> Any:
        window, by, err = _spend_args()
        if err:
            return _bad_request(err)
        if app.store is None:
            return _error_page(409, "No store", "The spend log needs a store (database.url).")
        return _csv(data.spend(app.store, window, by), window, by)

    @bp.get("/admin/requests")
    @guard
    def recent() -> Any:
        status = request.args.get("status", "").strip()
        route = request.args.get("route", "").strip()
        account = request.args.get("account", "").strip()
        limit = _whole_number(request.args.get("limit", "50").strip() or "50", 1, data.MAX_RECENT)
        if status not in ("", "ok", "error") and (len(status) != 3 or _whole_number(status, 100, 999) is None):
            return _bad_request("status must be ok, error or a three-digit HTTP status.")
        if limit is None:
            return _bad_request(f"limit must be a whole number from 1 to {data.MAX_RECENT}.")
        if not (_filter_text(route) and _filter_text(account)):
            return _bad_request("route and account must be at most 255 characters, without NUL characters.")
        rows: List[Dict[str, Any]] = []
        choices: Dict[str, List[Any]] = {"statuses": [], "routes": []}
        if app.store is not None:
            rows = data.recent(app.store, limit, status, route, account)
            choices = data.filter_choices(app.store, time.time() - data.WINDOWS["7d"])
        routes = sorted(set(choices["routes"]) | {r.name for r in app.config.routes})
        return _page("dashboard/requests.html", "requests", rows=rows, status=status, route=route,
                     account=account, limit=limit, statuses=choices["statuses"], routes=routes)

    @bp.get("/admin/config")
    @guard
    def configuration() -> Any:
        return _page("dashboard/config.html", "config", **config_view(app))

    @bp.route("/admin/login", methods=["GET", "POST"])
    def login() -> Any:
        """A form for browsers, which cannot add an Authorization header: the credential goes into a cookie."""
        if request.method == "GET":
            return _login_page(200, "")
        if _cross_site():  # login CSRF: another site signing this browser in with a credential of its choosing
            return _login_page(403, "Sign-in refused: the form was posted from another site. Open this page "
                                    "directly and sign in here.")
        if (request.content_length or 0) > 16384:
            return _login_page(413, "That is too long to be a credential.")
        credential = (request.form.get("credential") or "").strip()
        if not credential:
            return _login_page(400, "Paste an admin key or token.")
        identity, err = authenticate_request(app, _with_credential(credential), request.remote_addr, scope="admin")
        if err is not None:
            return _login_page(err.status, err.message)
        if len(COOKIE) + len(credential.encode("utf-8")) > MAX_COOKIE_BYTES:  # a 303 would end in a 401 loop
            return _login_page(413, f"This credential is valid, but longer than a browser keeps in a cookie "
                                    f"({MAX_COOKIE_BYTES} bytes): send it as an Authorization: Bearer header "
                                    "instead (a browser extension or a proxy can add one).")
        resp = Response(status=303, headers={"Location": _url("overview")})
        resp.set_cookie(COOKIE, credential, max_age=COOKIE_MAX_AGE, path=_cookie_path(), httponly=True,
                        samesite="Strict", secure=_is_https())
        _no_store(resp)
        return resp

    @bp.post("/admin/logout")
    def logout() -> Any:
        if _cross_site():  # another site may not sign this browser out either
            return _error_page(403, "Not allowed", "Sign-out refused: the form was posted from another site.")
        resp = Response(status=303, headers={"Location": _url("login")})
        resp.delete_cookie(COOKIE, path=_cookie_path(), httponly=True, samesite="Strict", secure=_is_https())
        _no_store(resp)
        return resp

    def _page(template: str, active: str, **kw: Any) -> Response:
        # Sign out whenever the login form's cookie came along: a host app's identity (mounted) is of kind
        # "anonymous", and its admin signed in through the form must still be able to drop the credential.
        resp = Response(render_template(template, active=active, store=app.store is not None,
                                        identity=g.routeplane_identity, labels=data.WINDOW_LABELS,
                                        signed_in=bool(request.cookies.get(COOKIE)), windows=list(data.WINDOWS),
                                        **kw), mimetype="text/html")
        _no_store(resp)
        return resp

    return bp


def _health(app: "App") -> Dict[str, Any]:
    """The store's round trip and how fresh the workers' flushed plugin stats are (this page's own view)."""
    store = app.store
    t0 = time.perf_counter()
    try:
        store.ping()
        ping: Optional[float] = (time.perf_counter() - t0) * 1000.0
    except Exception:
        ping = None
    workers = store.execute("SELECT COUNT(DISTINCT worker), MAX(updated_at) FROM routeplane_plugin_stats")[0] \
        if ping is not None else (0, None)
    newest = float(workers[1]) if workers[1] is not None else None
    return {"dialect": store.dialect, "ping_ms": ping, "workers": int(workers[0] or 0),
            "newest_flush_age": None if newest is None else max(0.0, time.time() - newest),
            "flush_interval": app.config.server.stats_flush_seconds}


# --- auth: the admin scope, with errors as small HTML pages -----------------------------------------------------

def _with_credential(credential: str) -> Dict[str, str]:
    """The request's own headers with the credential as Authorization: whether the caller came through
    a proxy (X-Forwarded-For, ...) must still count, or a proxied caller with any cookie is "local"."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "cookie")}
    headers["Authorization"] = f"Bearer {credential}"
    return headers


def _html_guard(app: "App") -> Callable[[Callable], Callable]:
    """`require_admin` for pages: the same check (auth.guard.authenticate_request), answered in HTML."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            headers: Any = request.headers
            cookie = request.cookies.get(COOKIE)
            # Signed in through the login form, and no credential in the headers: an Authorization header
            # that carries none (`Basic`, from an nginx auth_basic in front) must not hide the cookie.
            if cookie and credential_from_headers(headers) is None:
                headers = _with_credential(cookie)
            identity, err = authenticate_request(app, headers, request.remote_addr, scope="admin")
            if err is not None:
                title = {401: "Sign-in needed", 403: "Not allowed"}.get(err.status, "Unavailable")
                resp = _error_page(err.status, title, err.message)
                if cookie and err.status in (401, 403):  # a stale or revoked credential: forget it. Not on a
                    # 503 (the auth store cannot answer): the credential may be good, and signing every admin out
                    # on a database blip would make them paste a key that is shown only once.
                    resp.delete_cookie(COOKIE, path=_cookie_path(), httponly=True, samesite="Strict",
                                       secure=_is_https())
                if err.status == 401:
                    resp.headers["WWW-Authenticate"] = 'Bearer realm="routeplane admin"'
                return resp
            g.routeplane_identity = identity
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _url(endpoint: str) -> str:
    from flask import url_for

    return url_for(f"routeplane_dashboard.{endpoint}")


def _cookie_path() -> str:
    return _url("overview")  # "/admin/" (under any mount prefix): the dashboard's pages and nothing else


def _is_https() -> bool:
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _cross_site() -> bool:
    """Whether this POST comes from a page of another site (login CSRF, forced sign-out).

    Browsers say so in `Sec-Fetch-Site`: only `same-origin` (our own form) and `none` (the user's own action)
    pass; `same-site` does not (a sibling host may be someone else's). Browsers without it send `Origin` on a
    cross-origin POST, checked against the request's host (and a proxy's X-Forwarded-Host, which a cross-site
    form cannot set). A POST with neither is not a browser's cross-site form (curl, scripts): it may sign in.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return True  # "null" (a sandboxed or file: page) and anything odd
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return True
    hosts = [request.host] + [h.strip() for h in request.headers.get("X-Forwarded-Host", "").split(",") if h.strip()]
    return (parts.hostname.lower(), port) not in {_host_port(h, parts.scheme) for h in hosts}


def _host_port(host: str, scheme: str) -> "tuple[str, int]":
    parts = urlsplit(f"//{host}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def _login_page(status: int, message: str) -> Response:
    resp = Response(render_template("dashboard/login.html", status=status, message=message), status=status,
                    mimetype="text/html")
    _no_store(resp)
    return resp


def _error_page(status: int, title: str, message: str) -> Response:
    resp = Response(render_template("dashboard/error.html", status=status, title=title, message=message,
                                    login_url=_url("login")), status=status, mimetype="text/html")
    _no_store(resp)
    return resp


def _bad_request(message: str) -> Response:
    return _error_page(400, "Bad request", message)


def _no_store(resp: Response) -> None:
    # Admin pages show accounts and spend: no shared cache may keep them, no other site may frame them.
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"


def _whole_number(text: str, lo: int, hi: int) -> Optional[int]:
    """`text` as a number from lo to hi, or None. ASCII digits only: str.isdigit() also takes "²" and "①", which
    int() refuses, and int() refuses more than 4300 digits; neither may reach it."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(hi)):
        return None
    value = int(digits)
    return value if lo <= value <= hi else None


def _filter_text(text: str) -> bool:
    """A route or account filter the store can take (PostgreSQL refuses NUL; the columns hold 255 characters)."""
    return len(text) <= 255 and "\x00" not in text


def _window(value: Optional[str], default: str) -> Optional[str]:
    value = (value or default).strip()
    return value if value in data.WINDOWS else None


def _spend_args() -> "tuple[str, str, Optional[str]]":
    window = _window(request.args.get("window"), DEFAULT_WINDOW)
    by = (request.args.get("by") or "account").strip()
    if window is None:
        return "", by, "window must be one of " + ", ".join(data.WINDOWS) + "."
    if by not in data.SPEND_GROUPS:
        return window, by, "by must be one of " + ", ".join(data.SPEND_GROUPS) + "."
    return window, by, None


def _csv(sp: Dict[str, Any], window: str, by: str) -> Response:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(list(sp["columns"]) + ["requests", "errors", "input_tokens", "output_tokens", "cost_micro_usd",
                                      "cost_usd", "unknown_cost_requests"])
    for r in sp["rows"]:
        w.writerow([_csv_cell(v) for v in r["key"]] + [r["requests"], r["errors"], r["input_tokens"],
                                                        r["output_tokens"], r["cost_micro_usd"],
                                                        f"{r['cost_micro_usd'] / 1e6:.6f}", r["unknown_cost"]])
    resp = Response(out.getvalue(), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="routeplane-spend-{by}-{window}.csv"'
    _no_store(resp)
    return resp


def _csv_cell(v: Any) -> str:
    s = "" if v is None else str(v)
    # A cell starting with = + - @ would run as a formula in a spreadsheet: quote it as text.
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


# --- charts: geometry computed here, drawn as SVG by the templates -------------------------------------------------

def _nice_max(v: float) -> float:
    """The axis top: 1, 2, 2.5 or 5 times a power of ten, at least `v` (below 1 too: a chart of cents of spend
    on a 0–1 USD axis is a flat line)."""
    if v <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * step * (1 + 1e-12):  # an ulp of slack: 5 × 10.0 ** -6 is a hair below 5e-06
            return m * step
    return 10 * step  # pragma: no cover


def _frame(series: Dict[str, Any], key: str, scale: float) -> Dict[str, Any]:
    buckets = series["buckets"]
    values = [b[key] / scale for b in buckets]
    top = _nice_max(max(values) if values else 0.0)
    inner_w, inner_h = CHART_W - PAD_L - 8, CHART_H - PAD_T - PAD_B
    step = inner_w / max(1, len(buckets))
    ticks = [{"y": PAD_T + inner_h - inner_h * f, "label": _fmt_tick(top * f)} for f in (0, 0.5, 1)]
    first, last = buckets[0]["start"], buckets[-1]["end"]
    return {"values": values, "top": top, "inner_w": inner_w, "inner_h": inner_h, "step": step, "ticks": ticks,
            "width": CHART_W, "height": CHART_H, "left": PAD_L, "top_pad": PAD_T, "base": PAD_T + inner_h,
            "x_labels": [{"x": PAD_L, "label": time.strftime("%m-%d %H:%M", time.gmtime(first)), "anchor": "start"},
                         {"x": PAD_L + inner_w, "label": time.strftime("%m-%d %H:%M UTC", time.gmtime(last)),
                          "anchor": "end"}]}


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if v >= 0.01 or v == 0 else f"{v:.2e}"


def bar_chart(series: Dict[str, Any], key: str, title: str, part_key: Optional[str] = None) -> Dict[str, Any]:
    """One bar per bucket (every bucket drawn, height 0 when empty), with an overlaid part (errors)."""
    f = _frame(series, key, 1.0)
    bars = []
    for i, (b, v) in enumerate(zip(series["buckets"], f["values"])):
        h = f["inner_h"] * v / f["top"]
        part = b[part_key] if part_key else 0
        ph = f["inner_h"] * part / f["top"]
        x = f["left"] + i * f["step"] + f["step"] * 0.1
        bars.append({"x": round(x, 2), "w": round(f["step"] * 0.8, 2), "y": round(f["base"] - h, 2),
                     "h": round(h, 2), "py": round(f["base"] - ph, 2), "ph": round(ph, 2), "value": int(v),
                     "part": int(part), "label": _range_label(b, series["width_seconds"])})
    total = sum(int(v) for v in f["values"])
    parts = sum(b["part"] for b in bars)
    desc = f"{title} per {_width_text(series['width_seconds'])} over the {data.WINDOW_LABELS[series['window']]}: " \
           f"{total} in all" + (f", {parts} of them errors" if part_key else "") + f"; the tallest bucket has " \
           f"{max((b['value'] for b in bars), default=0)}."
    return dict(f, kind="bar", title=title, bars=bars, desc=desc, total=total, part_total=parts)


def line_chart(series: Dict[str, Any], key: str, title: str) -> Dict[str, Any]:
    """One point per bucket joined by a line; `key` is micro-USD, plotted in USD."""
    f = _frame(series, key, 1e6)
    points = []
    for i, (b, v) in enumerate(zip(series["buckets"], f["values"])):
        x = f["left"] + i * f["step"] + f["step"] / 2
        y = f["base"] - f["inner_h"] * v / f["top"]
        points.append({"x": round(x, 2), "y": round(y, 2), "value": b[key], "usd": usd(b[key]),
                       "label": _range_label(b, series["width_seconds"])})
    total = sum(b[key] for b in series["buckets"])
    desc = f"{title} per {_width_text(series['width_seconds'])} over the {data.WINDOW_LABELS[series['window']]}: " \
           f"{usd(total)} in all."
    return dict(f, kind="line", title=title, points=points, desc=desc, total=total,
                polyline=" ".join(f"{p['x']},{p['y']}" for p in points))


def _range_label(b: Dict[str, Any], width: float) -> str:
    fmt = "%m-%d %H:%M"
    return f"{time.strftime(fmt, time.gmtime(b['start']))}–{time.strftime('%H:%M', time.gmtime(b['end']))} UTC"


def _width_text(width: float) -> str:
    if width % 86400 == 0:
        return f"{int(width // 86400)} day" if width == 86400 else f"{int(width // 86400)} days"
    if width % 3600 == 0:
        return "hour" if width == 3600 else f"{int(width // 3600)} hours"
    return f"{int(width // 60)} minutes"


def _ts(t: Optional[float]) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _ms(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:,.1f} ms"


def _pct(v: float) -> str:
    return f"{v * 100:.1f}%"


def usd(micro: Optional[int]) -> str:
    return "unknown" if micro is None else f"${micro / 1e6:,.6f}"


# --- configuration, secrets masked ---------------------------------------------------------------------------------

# Kind prefixes of well-known credentials (longest first): public, and what tells an operator which key it is.
KEY_PREFIXES = ("sk-ant-", "sk-proj-", "sk-svcacct-", "sk-or-", "sk-", "xai-", "gsk_", "pplx-", "hf_", "AIza",
                "rpk_")


def mask_key(key: Optional[str]) -> str:
    """`sk-…abcd`: a known kind prefix (KEY_PREFIXES) and the last four characters, never more (keys with under 16
    characters past the prefix: only `…`). Other keys show no leading characters: those may be the secret's own
    (`Xk9bQ2z-…` is not a kind)."""
    if not key:
        return ""
    prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), "")
    if len(key) - len(prefix) < 16:  # too little would stay hidden
        return "…"
    return f"{prefix}…{key[-4:]}"


def _safe_url(url: Optional[str]) -> str:
    """A base URL without userinfo or query (either may carry a credential)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def config_view(app: "App") -> Dict[str, Any]:
    cfg = app.config
    routes = [{"name": r.name, "strategy": r.strategy,
               "targets": [{"label": t.label, "protocol": t.protocol, "weight": t.weight} for t in r.targets]}
              for r in cfg.routes]
    providers = []
    for name, t in sorted(cfg.providers.items()):
        p = t.prices
        providers.append({"name": name, "protocol": t.protocol, "base_url": _safe_url(t.base_url),
                          "key": mask_key(t.api_key), "header_names": sorted(t.headers),
                          "prices": (p.input, p.output) if (p.input is not None or p.output is not None) else None,
                          "confidential": t.confidential})
    hooks: List[Dict[str, Any]] = []
    counters: Dict[str, Any] = {}
    source = "this worker only (no store configured)"
    if app.store is not None:
        from ..metrics import plugin_metrics

        if app.stats_flusher is not None:
            app.stats_flusher.flush_now()
        merged = plugin_metrics(app.store)
        hooks, counters, source = merged["hooks"], merged["counters"], "every worker (store)"
    seen = {(h["plugin"], h["stage"], h["hook"]) for h in hooks}
    for h in app.plugin_stats.snapshot():  # hooks registered but never flushed still belong in the list
        if (h["plugin"], h["stage"], h["hook"]) not in seen:
            hooks.append(dict(h, average_ms=round(h["total_ms"] / h["invocations"], 4) if h["invocations"] else 0.0))
    plugins = [{"id": str(p.id), "version": getattr(p, "version", None) or "",
                "hooks": [h for h in hooks if h["plugin"] == str(p.id)],
                "counters": _flat(counters.get(str(p.id), {}), "")} for p in app.plugins]
    known = {p["id"] for p in plugins}
    extra = sorted({h["plugin"] for h in hooks} - known)
    plugins += [{"id": pid, "version": "", "hooks": [h for h in hooks if h["plugin"] == pid],
                 "counters": _flat(counters.get(pid, {}), "")} for pid in extra]
    mcp = [{"id": s.id, "type": s.type, "prefix": s.prefix, "enabled": s.enabled,
            "where": _safe_url(s.url) if s.url else (s.command or ""), "header_names": sorted(s.headers or {})}
           for s in sorted(cfg.mcp_servers.values(), key=lambda s: s.id)]
    # An agent is a program started over stdio: its command says what it is. Never its args or env values,
    # which may carry a credential (`--api-key …`); env names only, as header names above.
    agents = [{"id": k, "command": a.command, "default": a.default, "description": a.description,
               "env_names": sorted(a.env), "gateway": _agent_gateway(a)}
              for k, a in sorted(cfg.agents.items())]
    return {"routes": routes, "providers": providers, "plugins": plugins, "stats_source": source,
            "mcp_servers": mcp, "agents": agents, "auth_mode": str(cfg.auth.get("mode", "none")),
            "config_source": cfg.source}


def _agent_gateway(agent: Any) -> str:
    """Where the agent's own LLM calls go: this gateway (and the env var its key comes from), or its own."""
    if not agent.gateway_enabled:
        return "its own providers"
    where = _safe_url(agent.gateway_base_url) if agent.gateway_base_url else "this gateway"
    return f"{where}, key from ${agent.gateway_token_env}" if agent.gateway_token_env else where


def _flat(d: Any, prefix: str) -> List[Sequence[Any]]:
    if isinstance(d, dict):
        out: List[Sequence[Any]] = []
        for k, v in sorted(d.items()):
            out.extend(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, d)]
