"""Gemini wire (`models/{model}:generateContent` / `:streamGenerateContent`), both directions."""

from __future__ import annotations

import urllib.parse
from typing import Any, Dict, Mapping, Optional

from ...errors import InvalidRequest, RouteplaneError, UpstreamError
from ...language_model.routing import RoutingTarget
from ...language_model.types import Generation, Prompt
from ..base import ClientCodec, ProviderCodec, StreamDecoder, StreamEncoder, json_headers
from . import request, response, stream

PROTOCOL = request.PROTOCOL
DEFAULT_BASE = "https://generativelanguage.googleapis.com"


class GeminiClientCodec(ClientCodec):
    """The model and the stream switch live in the URL, not the body: `for_path`
    binds them for one request (the unbound codec reads `model`/`stream` from the body)."""

    protocol = PROTOCOL

    def __init__(self, model: Optional[str] = None, stream: Optional[bool] = None, sse: bool = True) -> None:
        self.model = model
        self.stream = stream
        self.sse = sse

    def for_path(self, model: str, stream: bool, sse: bool = True) -> "GeminiClientCodec":
        return GeminiClientCodec(model, stream, sse)

    def decode_request(self, body: Any) -> Prompt:
        stream = self.stream
        if stream is None:
            stream = bool(body.get("stream")) if isinstance(body, dict) else False
            if isinstance(body, dict):
                body = {k: v for k, v in body.items() if k != "stream"}
        return request.decode_request(body, self.model, stream)

    def encode_response(self, gen: Generation, prompt: Prompt) -> Dict[str, Any]:
        return response.encode_response(gen, prompt)

    def stream_encoder(self, prompt: Prompt) -> StreamEncoder:
        return stream.GeminiStreamEncoder(prompt, sse=self.sse)

    def error_body(self, err: RouteplaneError) -> Dict[str, Any]:
        return response.error_body(err)


def _model_path(model: str) -> str:
    """The model's resource path in the upstream URL (`models/x`, or a path such as `tunedModels/x`).

    A client may name the upstream model (`provider:model`), and here it goes
    into the URL, not a JSON body: each segment is percent-encoded, so `?`,
    `#`, `:` or `%` cannot change the path or the method, and an empty, `.` or
    `..` segment is refused, so the call cannot leave the models' paths with
    the operator's key.
    """
    segments = model.split("/") if "/" in model else ["models", model]
    if any(seg in ("", ".", "..") for seg in segments):
        raise InvalidRequest(f"Invalid model name for a Gemini upstream: {model!r}.", param="model",
                             code="model_not_found")
    return "/".join(urllib.parse.quote(seg, safe="@") for seg in segments)


class GeminiProviderCodec(ProviderCodec):
    protocol = PROTOCOL

    def url(self, target: RoutingTarget, stream: bool) -> str:
        base = (target.base_url or DEFAULT_BASE).rstrip("/")
        if not (base.endswith("/v1beta") or base.endswith("/v1")):
            base += "/v1beta"
        model = _model_path(target.model)
        return f"{base}/{model}:streamGenerateContent?alt=sse" if stream else f"{base}/{model}:generateContent"

    def headers(self, target: RoutingTarget) -> Dict[str, str]:
        return json_headers(target, "x-goog-api-key", "")

    def encode_request(self, prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
        return request.encode_request(prompt, target, stream)

    def decode_response(self, body: Any, target: RoutingTarget) -> Generation:
        return response.decode_response(body, target)

    def stream_decoder(self, target: RoutingTarget) -> StreamDecoder:
        return stream.GeminiStreamDecoder(target)

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str], target: RoutingTarget) -> UpstreamError:
        return response.decode_error(status, body, headers, target)


CLIENT = GeminiClientCodec()
PROVIDER = GeminiProviderCodec()
