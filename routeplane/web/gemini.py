"""Gemini-wire blueprint: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent`, `:countTokens` (and `/v1/`)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from flask import Blueprint, Response, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from ..auth.guard import require_scope, wire_credential
from ..errors import HookDenied, InternalError, NotFound, RouteplaneError
from ..hooks.language_model import DecisionKind
from ..language_model.context import PipelineContext
from ..language_model.stream import estimate_usage
from ..protocols import gemini
from .common import check_prompt_size, error_response, read_json_body, request_id, run_language_model

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.web.gemini")

_ACTIONS = {"generateContent": False, "streamGenerateContent": True, "countTokens": False}


class ModelActionConverter(PathConverter):
    """`{model}:generateContent` (or another method of `_ACTIONS`), as a path. Its weight, below the path
    converter's, makes the action rules win over `GET /v1*/models/<path>` (a model's retrieval), so that a
    wrong method on a method path is a 405, not "model `x:generateContent` is not a route"."""

    regex = r"[^/].*?:(?:" + "|".join(_ACTIONS) + ")"
    weight = 150


# Every method a client may send but POST (HEAD comes with GET, OPTIONS stays Flask's own answer).
_WRONG_METHODS = ["GET", "PUT", "PATCH", "DELETE"]


def credential() -> Optional[str]:
    """google-genai sends `x-goog-api-key`; curl samples use `?key=`; Bearer works on every wire. In that order,
    on every view of the wire (listing and counting too); `x-api-key` is not Gemini's."""
    return wire_credential(gemini.PROTOCOL, request.headers, request.args)


def gemini_error(err: RouteplaneError, rid: str) -> Response:
    return error_response(err, gemini.CLIENT.error_body, rid)


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_gemini", __name__)
    limit = app.config.server.max_body_bytes

    def add_converter(state: BlueprintSetupState) -> None:
        # Before the rules below are bound: they name it (a host app mounting the gateway gets it too).
        state.app.url_map.converters.setdefault("gemini_action", ModelActionConverter)

    bp.record_once(add_converter)

    def generate(target: str) -> Response:
        rid = request_id()
        try:
            # The `:` before the method is literal: `models/gemini-x:generateContent`.
            model, sep, action = target.rpartition(":")
            if not sep or action not in _ACTIONS or not model:
                raise NotFound(f"Unknown Gemini method {target!r}: use models/{{model}}:generateContent, "
                               ":streamGenerateContent or :countTokens.")
            if action == "countTokens":
                return _count_tokens(app, model, read_json_body(limit), rid)
            stream = _ACTIONS[action]
            # Without `alt=sse` Google streams one JSON array instead of SSE.
            sse = request.args.get("alt") == "sse" or not stream
            codec = gemini.CLIENT.for_path(model, stream, sse=sse)
            body = read_json_body(limit)
            resp = run_language_model(app, codec, body, rid, credential())
            if stream and not sse and resp.mimetype == "text/event-stream":
                resp.mimetype = "application/json"
            return resp
        except RouteplaneError as err:
            return gemini_error(err, rid)
        except Exception:
            log.exception("request %s failed", rid)
            return gemini_error(InternalError(), rid)

    @bp.post("/v1beta/models/<path:target>")
    def generate_v1beta(target: str) -> Response:
        return generate(target)

    @bp.post("/v1/models/<path:target>")
    def generate_v1(target: str) -> Response:
        return generate(target)

    @bp.route("/v1beta/models/<gemini_action:target>", methods=_WRONG_METHODS)
    @bp.route("/v1/models/<gemini_action:target>", methods=_WRONG_METHODS)
    def wrong_method(target: str) -> Response:
        # Google's method paths take POST only; GET/HEAD here would otherwise read as a model's retrieval.
        name = target[7:] if target.startswith("models/") else target
        err = RouteplaneError(f"Method {request.method} is not allowed on models/{name}: use POST.", status=405,
                              kind="invalid_request", code="method_not_allowed")
        resp = gemini_error(err, request_id())
        resp.headers["Allow"] = "POST"
        return resp

    @bp.get("/v1beta/models")
    @require_scope(app, render=gemini.CLIENT.error_body, wire=gemini.PROTOCOL)
    def list_models() -> Response:
        from .openai import allowed_models

        return jsonify(gemini_models_page(allowed_models(app)))

    @bp.get("/v1beta/models/<path:model_id>")
    @require_scope(app, render=gemini.CLIENT.error_body, wire=gemini.PROTOCOL)
    def get_model(model_id: str) -> Response:
        from .openai import allowed_model

        name = model_id[7:] if model_id.startswith("models/") else model_id
        entry = allowed_model(app, name)
        if entry is None:
            return gemini_error(NotFound(f"Model {name!r} is not a route of this gateway.", code="model_not_found"),
                                request_id())
        return jsonify(gemini_model(entry))

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        err = RouteplaneError(exc.description or exc.name, status=exc.code or 500,
                              kind="not_found" if exc.code == 404 else "invalid_request")
        return gemini_error(err, request_id())

    return bp


def gemini_model(entry: Dict[str, Any]) -> Dict[str, Any]:
    """One entry of the OpenAI-shaped model list as a Gemini `Model`."""
    return {"name": f"models/{entry['id']}", "baseModelId": entry["id"], "version": "routeplane",
            "displayName": entry["id"], "description": f"routeplane route {entry['id']}",
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}


def gemini_models_page(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"models": [gemini_model(e) for e in entries]}


def _count_tokens(app: "App", model: str, body: Any, rid: str) -> Response:
    """A documented local estimate, marked `x-routeplane-estimate: true`: the input the gateway bills for
    this prompt when an upstream reports no usage (about 4 characters a token, non-Latin text by its
    bytes: at 4 characters a token a Chinese prompt counted a fifth of that). Credentials are checked,
    nothing is billed."""
    from ..auth.guard import check_context

    if isinstance(body, dict) and isinstance(body.get("generateContentRequest"), dict):
        body = body["generateContentRequest"]  # the REST form that wraps a whole request
    headers = dict(request.headers)
    for intercept in app.transport_interceptors:  # as for generateContent: they see the raw request first
        headers, body = intercept(headers, body)
    prompt = gemini.CLIENT.for_path(model, False).decode_request(body)
    check_prompt_size(prompt, app.config.limits)  # a prompt generateContent refuses is not counted
    ctx = PipelineContext(rid, gemini.PROTOCOL, prompt, headers, credential=credential())
    ctx.dry_run = True  # as Anthropic's count_tokens: hooks decide but do not act (no reservation, no charge)
    app.pipeline.routing_table.preview(prompt.model)  # an unknown model is a 404, as for generateContent
    decision = check_context(app, ctx)
    if decision.kind is DecisionKind.DENY and decision.reason is not None:
        reason = decision.reason
        raise HookDenied(reason.message, status=reason.status, kind=reason.kind, code=reason.code)
    resp = Response(json.dumps({"totalTokens": estimate_usage(prompt, 0).input_tokens}),
                    mimetype="application/json")
    resp.headers["x-request-id"] = rid
    resp.headers["x-routeplane-estimate"] = "true"
    return resp
