"""OpenAI-wire blueprint: `POST /v1/chat/completions`, `POST /v1/responses`, `GET /v1/models`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..auth.guard import require_scope, wire_credential
from ..errors import InternalError, ModelNotFound, RouteplaneError
from ..protocols import anthropic_messages, gemini, openai_chat, openai_responses
from .anthropic import anthropic_model, anthropic_models_page
from .common import error_response, read_json_body, request_id, run_language_model
from .gemini import gemini_model, gemini_models_page
from .responses_tokens import add_routes as add_responses_token_routes

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.web.openai")


def make_blueprint(app: "App") -> Blueprint:
    bp = Blueprint("routeplane_openai", __name__)
    shown = app.config.server.openai_chat_reasoning
    codec = openai_chat.ChatClientCodec(shown) if shown != "none" else openai_chat.CLIENT
    limit = app.config.server.max_body_bytes

    @bp.post("/v1/chat/completions")
    def chat_completions() -> Response:
        rid = request_id()
        try:
            body = read_json_body(limit)
            return run_language_model(app, codec, body, rid, wire_credential(openai_chat.PROTOCOL, request.headers))
        except RouteplaneError as err:
            return error_response(err, codec.error_body, rid)
        except Exception:
            log.exception("request %s failed", rid)
            return error_response(InternalError(), codec.error_body, rid)

    @bp.post("/v1/responses")
    def responses() -> Response:
        rid = request_id()
        try:
            body = read_json_body(limit)
            credential = wire_credential(openai_responses.PROTOCOL, request.headers)
            return run_language_model(app, openai_responses.CLIENT, body, rid, credential)
        except RouteplaneError as err:
            return error_response(err, openai_responses.CLIENT.error_body, rid)
        except Exception:
            log.exception("request %s failed", rid)
            return error_response(InternalError(), openai_responses.CLIENT.error_body, rid)

    add_responses_token_routes(bp, app)  # input_tokens and compact: before the stored-response catch-all

    @bp.route("/v1/responses/<path:response_id>", methods=["GET", "DELETE", "POST"])
    def stored_response(response_id: str) -> Response:
        if response_id in _RESPONSES_ACTIONS:  # POST-only actions asked with another method: not a stored id
            wrong = RouteplaneError(f"Method {request.method} is not allowed for /v1/responses/{response_id}: use "
                                    "POST.", status=405, kind="invalid_request", code="method_not_allowed")
            resp = error_response(wrong, openai_responses.CLIENT.error_body, request_id())
            resp.headers["Allow"] = "POST"
            return resp
        # retrieve / delete / cancel / input_items need a response store; say so plainly.
        err = RouteplaneError("This gateway is stateless: it does not store responses, so "
                              f"{response_id.split('/')[0]!r} cannot be retrieved, deleted or cancelled.",
                              status=404, kind="not_found", code="response_not_found")
        return error_response(err, openai_responses.CLIENT.error_body, request_id())

    @bp.get("/v1/models")
    @require_scope(app, render=_models_error_body, wire=models_wire)
    def list_models() -> Response:
        wire = models_wire()
        if wire == anthropic_messages.PROTOCOL:
            return jsonify(anthropic_models_page(allowed_models(app), request.args))
        if wire == gemini.PROTOCOL:
            return jsonify(gemini_models_page(allowed_models(app)))
        return jsonify({"object": "list", "data": allowed_models(app)})

    @bp.get("/v1/models/<path:model_id>")
    @require_scope(app, render=_models_error_body, wire=models_wire)
    def get_model(model_id: str) -> Response:
        wire = models_wire()
        if wire == gemini.PROTOCOL and model_id.startswith("models/"):
            model_id = model_id[7:]
        entry = allowed_model(app, model_id)
        if entry is None:
            return error_response(ModelNotFound(model_id), _models_error_body, request_id())
        if wire == gemini.PROTOCOL:
            return jsonify(gemini_model(entry))
        return jsonify(anthropic_model(entry) if wire == anthropic_messages.PROTOCOL else entry)

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        err = RouteplaneError(exc.description or exc.name, status=exc.code or 500,
                 kind="not_found" if exc.code == 404 else "invalid_request")
        return error_response(err, codec.error_body, request_id())

    return bp


# /v1/responses/<action> paths served by POST (responses_tokens.py), not stored response ids.
_RESPONSES_ACTIONS = frozenset({"input_tokens", "compact"})


def models_wire() -> str:
    """Whose `GET /v1/models` this is (three SDKs share the path): the anthropic SDK sends `anthropic-version`;
    google-genai (API version v1) sends `x-goog-api-key`, Gemini's REST listing `?key=`; else an OpenAI client.
    The listing, its errors and the credential it takes (`wire_credential`) are then that wire's."""
    if "anthropic-version" in request.headers:
        return anthropic_messages.PROTOCOL
    if "x-goog-api-key" in request.headers or "key" in request.args:
        return gemini.PROTOCOL
    return openai_chat.PROTOCOL


def _models_error_body(err: RouteplaneError) -> Any:
    """/v1/models is shared by three SDKs: an error answers in the shape of the one asking (as the listing does)."""
    wire = models_wire()
    if wire == gemini.PROTOCOL:
        return gemini.CLIENT.error_body(err)
    if wire == anthropic_messages.PROTOCOL:
        return anthropic_messages.CLIENT.error_body(err)
    return openai_chat.CLIENT.error_body(err)


def allowed_models(app: "App") -> List[Dict[str, Any]]:
    """The model list as the caller may use it (its model allowlist applied)."""
    from flask import g

    from ..auth.globs import model_allowed

    patterns = g.routeplane_identity.models
    return [entry for entry in model_list(app) if model_allowed(patterns, entry["id"])]


def allowed_model(app: "App", model_id: str) -> Optional[Dict[str, Any]]:
    """The model entry a retrieval (`GET /v1/models/{id}`, Gemini's `models.get`) answers, or None.

    A listed model, or any other name a model call would accept: a direct `provider:model` of a
    configured provider (what ModelNotFound suggests) is not listed, yet chat takes it, so a client
    that checks a model before using it must not be told it does not exist. The caller's allowlist applies."""
    from flask import g

    from ..auth.globs import model_allowed

    for entry in allowed_models(app):
        if entry["id"] == model_id:
            return entry
    if not model_allowed(g.routeplane_identity.models, model_id):
        return None
    try:
        chain = app.pipeline.routing_table.preview(model_id)  # moves no rotation, calls nothing
    except RouteplaneError:
        return None
    if not chain:
        return None
    head = chain[0]
    owner = head.provider if len(chain) == 1 and model_id == f"{head.provider}:{head.model}" else "routeplane"
    return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": owner}


def model_list(app: "App") -> List[Dict[str, Any]]:
    """Routes first, then each provider's declared models as `provider:model`."""
    table = app.pipeline.routing_table
    created = int(time.time())
    seen = set()
    out: List[Dict[str, Any]] = []
    for route in table.routes():
        seen.add(route.name)
        out.append({"id": route.name, "object": "model", "created": created, "owned_by": "routeplane"})
    for pid, template in getattr(table, "providers", lambda: {})().items():
        for model in template.options.get("declared_models", ()):
            name = f"{pid}:{model}"
            if name not in seen:
                seen.add(name)
                out.append({"id": name, "object": "model", "created": created, "owned_by": pid})
    return out
