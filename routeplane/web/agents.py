"""Agent cards: `GET /.well-known/agent-card.json` (the default agent) and `GET /agents` (every agent)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Dict

from flask import Blueprint, Response, request

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

CACHE_CONTROL = "public, max-age=300"


def make_blueprint(app: "App") -> Blueprint:
    from ..acp.cards import agent_card, cards_document
    from ..acp.settings import default_agent

    bp = Blueprint("routeplane_agents", __name__)
    agents = app.config.agents
    # Cards only change with the config: render once, so the ETag is stable across requests and workers.
    listing = _body({"agents": cards_document(agents)})
    chosen = default_agent(agents)
    well_known = _body(agent_card(agents[chosen])) if chosen is not None else None

    @bp.get("/agents")
    def list_agents() -> Response:
        return _cached(listing)

    @bp.get("/.well-known/agent-card.json")
    def card() -> Response:
        if well_known is None:
            from ..errors import RouteplaneError
            from ..protocols import openai_chat
            from .common import error_response, request_id

            why = ("no agents are configured" if not agents
                   else "no default agent (mark one `default: true`); GET /agents lists them all")
            return error_response(RouteplaneError(f"No agent card: {why}.", status=404, kind="not_found"),
                                  openai_chat.CLIENT.error_body, request_id())
        return _cached(well_known)

    return bp


def _body(document: Dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _cached(body: bytes) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if _matches(request.headers.get("If-None-Match", ""), etag):
        resp = Response(status=304)
    else:
        resp = Response(body, status=200, mimetype="application/json")
    resp.headers["ETag"] = etag
    resp.headers["Cache-Control"] = CACHE_CONTROL
    return resp


def _matches(header: str, etag: str) -> bool:
    """If-None-Match: `*` or a list of (possibly weak) tags; weak comparison, as RFC 9110 asks for GET."""
    tags = [t.strip() for t in header.split(",") if t.strip()]
    return "*" in tags or any((t[2:] if t.startswith("W/") else t) == etag for t in tags)
