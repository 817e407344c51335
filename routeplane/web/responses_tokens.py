"""`POST /v1/responses/input_tokens` (the openai SDK's `responses.input_tokens.count`) and a plain refusal of
`POST /v1/responses/compact`, which would otherwise reach the stored-response catch-all."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, Optional

import requests
from flask import Blueprint, Response, request

from ..auth.guard import wire_credential
from ..errors import InternalError, InvalidRequest, RouteplaneError, UnsafeUpstreamURL, UpstreamError
from ..language_model.context import PipelineContext
from ..language_model.executor import with_auth
from ..language_model.routing import RoutingTarget
from ..language_model.stream import estimate_usage
from ..language_model.types import Prompt
from ..language_model.url_safety import UnsafeURL, check_base_url
from ..protocols import openai_responses
from ..protocols.base import scrub, upstream_status_error
from .anthropic import preflight
from .common import check_prompt_size, error_response, read_json_body, request_id

if TYPE_CHECKING:  # pragma: no cover
    from ..app import App

log = logging.getLogger("routeplane.web.responses_tokens")

# The fields `input_tokens` takes (openai/types/responses/input_token_count_params.py): a body the gateway
# encoded for a prompt a hook rewrote keeps only these (no store, include, max_output_tokens, stream).
COUNTED_FIELDS = frozenset({"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
                            "reasoning", "text", "truncation", "personality", "conversation",
                            "previous_response_id"})
_MAX_ANSWER_BYTES = 64 * 1024  # {"object": ..., "input_tokens": N} is a few dozen bytes


def add_routes(bp: Blueprint, app: "App") -> None:
    """Registers both routes on the OpenAI blueprint (static paths win over its `/v1/responses/<id>` rule)."""
    limit = app.config.server.max_body_bytes
    render = openai_responses.CLIENT.error_body

    @bp.post("/v1/responses/input_tokens")
    def responses_input_tokens() -> Response:
        rid = request_id()
        try:
            return count_input_tokens(app, read_json_body(limit), rid)
        except RouteplaneError as err:
            return error_response(err, render, rid)
        except Exception:
            log.exception("input_tokens %s failed", rid)
            return error_response(InternalError(), render, rid)

    @bp.post("/v1/responses/compact")
    def responses_compact() -> Response:
        err = InvalidRequest("This gateway does not support compaction (POST /v1/responses/compact): send the "
                             "conversation in 'input' to POST /v1/responses, or call OpenAI directly to compact it.",
                             code="unsupported_endpoint")
        return error_response(err, render, request_id())


def count_input_tokens(app: "App", body: Any, rid: str) -> Response:
    """What POST /v1/responses would send, counted, as Anthropic's count_tokens (web/anthropic.py): the same
    pre-request hooks (auth, guardrails) and route hooks decide first, as a dry run (nothing reserved or
    charged), and a denial is the same error. Forwarded to the upstream's own `/responses/input_tokens`
    when the head of the resulting chain speaks the Responses wire (the prompt a hook rewrote is what is
    sent); otherwise, or when a hook answered the request itself, a local estimate marked
    `x-routeplane-estimate: true`: the input the gateway bills for this prompt when an upstream reports no
    usage (about 4 characters a token, non-Latin text by its bytes; at 4 characters a token a Chinese
    prompt was counted at a quarter of that)."""
    headers = dict(request.headers)
    for intercept in app.transport_interceptors:  # as for /v1/responses: they see the raw body first
        headers, body = intercept(headers, body)
    prompt = openai_responses.CLIENT.decode_request(body)
    check_prompt_size(prompt, app.config.limits)
    # The credential /v1/responses takes, from the headers as the client sent them (before interceptors), as there.
    credential = wire_credential(openai_responses.PROTOCOL, request.headers)
    ctx = PipelineContext(rid, openai_responses.PROTOCOL, prompt, headers, credential=credential)
    ctx.dry_run = True
    chain = preflight(app, ctx)
    head = app.pipeline.first_callable(chain) if chain else None  # a head cooling down is skipped
    if head is not None and head.protocol == openai_responses.PROTOCOL:
        outbound = dict(body) if ctx.prompt is prompt else _encode(ctx.prompt, head)
        return _answer(_forward(head, outbound, ctx.prompt, rid), rid)
    resp = _answer(estimate_usage(ctx.prompt, 0).input_tokens, rid)
    resp.headers["x-routeplane-estimate"] = "true"
    return resp


def _answer(tokens: int, rid: str) -> Response:
    resp = Response(json.dumps({"object": "response.input_tokens", "input_tokens": tokens}),
                    mimetype="application/json")
    resp.headers["x-request-id"] = rid
    return resp


def _encode(prompt: Prompt, target: RoutingTarget) -> Dict[str, Any]:
    """An input_tokens body for a prompt a hook replaced: the Responses encoding, counted fields only."""
    encoded = openai_responses.PROVIDER.encode_request(prompt, target, False)
    return {k: v for k, v in encoded.items() if k in COUNTED_FIELDS}


def _forward(target: RoutingTarget, body: Dict[str, Any], prompt: Prompt, rid: str) -> int:
    """The upstream's count. No redirect is followed (it would carry the key elsewhere), as in the executor."""
    body["model"] = target.model
    url = openai_responses.PROVIDER.url(target, False) + "/input_tokens"
    try:
        check_base_url(url, target.url_policy)
    except UnsafeURL:
        raise UnsafeUpstreamURL(f"{target.provider}: the upstream URL was refused by the URL safety policy.",
                                provider=target.provider) from None
    headers = with_auth(openai_responses.PROVIDER.request_headers(target, prompt), target)
    headers["X-Request-Id"] = rid
    try:
        with requests.Session() as session:
            session.trust_env = False
            with session.post(url, json=body, headers=headers, allow_redirects=False, stream=True,
                              timeout=(target.timeouts.connect, target.timeouts.read)) as upstream:
                status, up_headers = upstream.status_code, dict(upstream.headers)
                raw = upstream.raw.read(_MAX_ANSWER_BYTES, decode_content=True)
    except requests.RequestException as exc:
        raise UpstreamError(f"{target.provider}: input_tokens failed ({type(exc).__name__})",
                            provider=target.provider) from exc
    if 300 <= status < 400:
        raise UpstreamError(f"{target.provider}: the upstream answered input_tokens with a redirect (HTTP {status})",
                            provider=target.provider, retriable=False)
    if status >= 400:
        raise upstream_status_error(status, raw, up_headers, target)
    tokens = _tokens(raw)
    if tokens is None:
        raise UpstreamError(scrub(f"{target.provider} sent an invalid input_tokens answer", target),
                            provider=target.provider)
    return tokens


def _tokens(raw: bytes) -> Optional[int]:
    try:
        n = json.loads(raw).get("input_tokens")
    except (ValueError, AttributeError, RecursionError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None
