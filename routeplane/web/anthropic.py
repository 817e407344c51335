"""Anthropic-wire blueprint: `POST /v1/messages` and `POST /v1/messages/count_tokens`."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import requests
from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from ..auth.guard import wire_credential
from ..errors import HookDenied, InternalError, NoTargetAvailable, RouteplaneError, UnsafeUpstreamURL, UpstreamError
from ..hooks.language_model import DecisionKind
from ..language_model.context import PipelineContext
from ..language_model.executor import with_auth
from ..language_model.routing import RoutingTarget
from ..language_model.stream import estimate_usage
from ..language_model.url_safety import UnsafeURL, check_base_url
from ..protocols import anthropic_messages
from ..protocols.base import scrub, upstream_status_error
from .common import check_prompt_size, error_response, read_json_body, request_id, run_language_model

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.web.anthropic")


def credential() -> Optional[str]:
    """Anthropic clients send the key as x-api-key (SDK < 2) or as a Bearer token (SDK ≥ 2), Claude Code both
    when ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN are set: x-api-key wins, on every view of the wire."""
    return wire_credential(anthropic_messages.PROTOCOL, request.headers)


def anthropic_error(err: RouteplaneError, rid: str) -> Response:
    codec = anthropic_messages.CLIENT.with_headers({}, rid)  # the body names the request, as Anthropic's do
    resp = error_response(err, codec.error_body, rid)
    resp.status_code = codec.error_status(err)  # overload is 529 on this wire
    resp.headers["request-id"] = rid
    return resp


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_anthropic", __name__)
    limit = app.config.server.max_body_bytes

    @bp.post("/v1/messages")
    def messages() -> Response:
        rid = request_id()
        try:
            body = read_json_body(limit)
            codec = anthropic_messages.CLIENT.with_headers(request.headers, rid)
            resp = run_language_model(app, codec, body, rid, credential())
            resp.headers["request-id"] = rid  # Anthropic's own name for it
            return resp
        except RouteplaneError as err:
            return anthropic_error(err, rid)
        except Exception:
            log.exception("request %s failed", rid)
            return anthropic_error(InternalError(), rid)

    @bp.post("/v1/messages/count_tokens")
    def count_tokens() -> Response:
        rid = request_id()
        try:
            body = read_json_body(limit)
            resp = _count_tokens(app, body, rid)
            resp.headers["request-id"] = rid
            return resp
        except RouteplaneError as err:
            return anthropic_error(err, rid)
        except Exception:
            log.exception("count_tokens %s failed", rid)
            return anthropic_error(InternalError(), rid)

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        err = RouteplaneError(exc.description or exc.name, status=exc.code or 500,
                              kind="not_found" if exc.code == 404 else "invalid_request")
        return anthropic_error(err, request_id())

    return bp


def _count_tokens(app: "App", body: Any, rid: str) -> Response:
    """What /v1/messages would send, counted: the same pre-request hooks (auth, guardrails, a host's login;
    as a dry run, so no budget is reserved or charged) and route hooks (attestation) decide first, and a
    denial is the same error. Forwarded to Anthropic when the head of the resulting chain speaks its wire
    (a prompt a hook rewrote, say redacted, is what is sent); otherwise, or when a hook answered the request
    itself, a documented local estimate (about 4 characters a token over all prompt text)."""
    headers = dict(request.headers)
    for intercept in app.transport_interceptors:  # as for /v1/messages: they see the raw body first
        headers, body = intercept(headers, body)
    codec = anthropic_messages.CLIENT.with_headers(headers)
    prompt = codec.decode_count_tokens(body)
    check_prompt_size(prompt, app.config.limits)
    ctx = PipelineContext(rid, anthropic_messages.PROTOCOL, prompt, headers, credential=credential())
    ctx.dry_run = True  # hooks decide but do not act: no reservation, no spend (as POST /admin/explain)
    chain = preflight(app, ctx)
    head = app.pipeline.first_callable(chain) if chain else None  # a head cooling down is skipped, as by messages
    if head is not None and head.protocol == anthropic_messages.PROTOCOL:
        outbound = body if ctx.prompt is prompt else _encode_count_tokens(ctx.prompt, head)
        return _forward_count_tokens(head, outbound, ctx.prompt, rid)
    # What the gateway bills for this input when an upstream reports no usage (non-Latin text by its bytes).
    resp = Response(json.dumps({"input_tokens": max(1, estimate_usage(ctx.prompt, 0).input_tokens)}),
                    mimetype="application/json")
    resp.headers["x-request-id"] = rid
    resp.headers["x-routeplane-estimate"] = "true"
    return resp


def preflight(app: "App", ctx: PipelineContext) -> Optional[List[RoutingTarget]]:
    """The pipeline's pre-request and route stages without an upstream call, settlement or events.

    Returns the chain the request would be sent along, or None when a pre-request hook answered it
    itself (nothing would reach an upstream). A denial raises the error /v1/messages would answer;
    a hook that crashes fails closed (500), as in the pipeline.
    """
    try:
        for _plugin_id, hook in app.pipeline.hooks.pre_request:
            decision = hook.check(ctx)
            if decision.kind is DecisionKind.DENY and decision.reason is not None:
                reason = decision.reason
                raise HookDenied(reason.message, status=reason.status, kind=reason.kind,
                                 retry_after=reason.retry_after, code=reason.code)
            if decision.kind is DecisionKind.RESPOND:
                return None
        ctx.lock_prompt()
        chain = app.pipeline.route_chain(ctx)
    except RouteplaneError:
        raise
    except Exception as exc:
        log.exception("a hook failed during count_tokens %s", ctx.request_id)
        raise InternalError() from exc
    if not chain:
        raise NoTargetAvailable(f"No upstream target is available for model {ctx.prompt.model!r}.")
    return chain


def _encode_count_tokens(prompt: Any, target: RoutingTarget) -> Dict[str, Any]:
    """A count_tokens body for a prompt a hook replaced: the Messages encoding minus what counting does not take."""
    return {k: v for k, v in anthropic_messages.PROVIDER.encode_request(prompt, target, False).items()
            if k not in _NOT_COUNTED}


_NOT_COUNTED = ("max_tokens", "stream", "stop_sequences", "metadata", "temperature", "top_p", "top_k")


def _forward_count_tokens(target: RoutingTarget, body: Any, prompt: Any, rid: str) -> Response:
    provider = anthropic_messages.PROVIDER
    outbound = {k: v for k, v in body.items() if k not in _NOT_COUNTED}
    outbound["model"] = target.model
    headers = with_auth(provider.request_headers(target, prompt), target)  # a configured auth_header, as calls
    headers["X-Request-Id"] = rid
    url = f"{anthropic_messages.base_url(target)}/v1/messages/count_tokens"
    try:
        check_base_url(url, target.url_policy)  # the same policy the executor applies
    except UnsafeURL:
        raise UnsafeUpstreamURL(f"{target.provider}: the upstream URL was refused by the URL safety policy.",
                                provider=target.provider) from None
    try:
        with requests.Session() as session:
            session.trust_env = False
            upstream = session.post(url, json=outbound, headers=headers,
                                    timeout=(target.timeouts.connect, target.timeouts.read))
            status, raw, up_headers = upstream.status_code, upstream.content, dict(upstream.headers)
            upstream.close()
    except requests.RequestException as exc:
        raise UpstreamError(f"{target.provider}: count_tokens failed ({type(exc).__name__})",
                            provider=target.provider) from exc
    if status >= 400:
        raise upstream_status_error(status, raw, up_headers, target)
    tokens = _counted(raw)
    if tokens is None:
        raise UpstreamError(scrub(f"{target.provider} sent an invalid count_tokens answer", target),
                            provider=target.provider)
    resp = Response(json.dumps({"input_tokens": tokens}), mimetype="application/json")
    resp.headers["x-request-id"] = rid
    return resp


def _counted(raw: bytes) -> Optional[int]:
    """The count in an upstream's count_tokens answer, None unless it is one (a non-negative integer): a body
    nested past the parser's depth or a count of 1e400 is the upstream's fault (502), not the gateway's."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None
    tokens = data.get("input_tokens") if isinstance(data, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def anthropic_model(entry: Dict[str, Any]) -> Dict[str, Any]:
    """One OpenAI-shaped model entry in Anthropic's `ModelInfo` shape."""
    created = datetime.fromtimestamp(int(entry.get("created") or 0), timezone.utc)
    return {"type": "model", "id": entry["id"], "display_name": entry["id"],
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ")}


def anthropic_models_page(entries: List[Dict[str, Any]], args: Mapping[str, str]) -> Dict[str, Any]:
    """`GET /v1/models` for Anthropic clients (they send anthropic-version); `args`: the query.

    Anthropic's cursor paging: `after_id` / `before_id` (a model id) and `limit` (1-1000). Without
    `limit`, one page holds every model; with it, `has_more` says whether the SDK should fetch the
    next page (its auto-pagination sends `after_id` = this page's `last_id`). A cursor that names
    no model gives an empty page, not the first one again.
    """
    data = [anthropic_model(e) for e in entries]
    ids = [d["id"] for d in data]
    start, end = 0, len(data)
    if args.get("after_id") in ids:
        start = ids.index(args["after_id"]) + 1
    if args.get("before_id") in ids:
        end = ids.index(args["before_id"])
    unknown = any(args.get(cursor) is not None and args[cursor] not in ids for cursor in ("after_id", "before_id"))
    window = data[start:end] if start < end and not unknown else []
    limit = _int_arg(args.get("limit"))
    has_more = False
    if limit is not None:
        limit = max(1, min(limit, 1000))
        has_more = len(window) > limit
        # before_id pages backwards: the models just before the cursor.
        window = window[-limit:] if args.get("before_id") and not args.get("after_id") else window[:limit]
    return {"data": window, "has_more": has_more, "first_id": window[0]["id"] if window else None,
            "last_id": window[-1]["id"] if window else None}


def _int_arg(value: Any) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
