"""Anthropic Messages wire (`POST /v1/messages`), both directions."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from ...errors import RouteplaneError, UpstreamError
from ...language_model.routing import RoutingTarget
from ...language_model.types import Generation, Prompt
from ..base import ClientCodec, ProviderCodec, StreamDecoder, StreamEncoder, upstream_status_error
from . import request, response, stream, stream_decode

PROTOCOL = "anthropic_messages"


class MessagesClientCodec(ClientCodec):
    """Inbound codec. `with_headers()` binds the request's anthropic-version /
    anthropic-beta, which are forwarded when the upstream is Anthropic too, and the
    gateway's id for the request, which its error bodies carry as Anthropic's do."""

    protocol = PROTOCOL

    def __init__(self, headers: Optional[Mapping[str, str]] = None, request_id: Optional[str] = None) -> None:
        self._headers = dict(headers or {})
        self._request_id = request_id

    def with_headers(self, headers: Mapping[str, str], request_id: Optional[str] = None) -> "MessagesClientCodec":
        return MessagesClientCodec(headers, request_id)

    def decode_request(self, body: Any) -> Prompt:
        return request.decode_request(body, self._headers)

    def decode_count_tokens(self, body: Any) -> Prompt:
        """count_tokens bodies are Messages bodies without max_tokens."""
        return request.decode_request(body, self._headers, require_max_tokens=False)

    def encode_response(self, gen: Generation, prompt: Prompt) -> Dict[str, Any]:
        return response.encode_response(gen, prompt)

    def stream_encoder(self, prompt: Prompt) -> StreamEncoder:
        return stream.MessagesStreamEncoder(prompt, self._request_id)

    def error_body(self, err: RouteplaneError) -> Dict[str, Any]:
        return response.error_body(err, self._request_id)

    def error_status(self, err: RouteplaneError) -> int:
        return response.error_status(err)


class MessagesProviderCodec(ProviderCodec):
    protocol = PROTOCOL

    def url(self, target: RoutingTarget, stream: bool) -> str:
        return f"{base_url(target)}/v1/messages"

    def headers(self, target: RoutingTarget) -> Dict[str, str]:
        return request.request_headers(Prompt(model=target.model, messages=()), target)

    def request_headers(self, target: RoutingTarget, prompt: Prompt) -> Dict[str, str]:
        return request.request_headers(prompt, target)

    def encode_request(self, prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
        return request.encode_request(prompt, target, stream)

    def decode_response(self, body: Any, target: RoutingTarget) -> Generation:
        return response.decode_response(body, target)

    def stream_decoder(self, target: RoutingTarget) -> StreamDecoder:
        return stream_decode.MessagesStreamDecoder(target)

    def decode_error(self, status: int, body: bytes, headers: Mapping[str, str], target: RoutingTarget) -> UpstreamError:
        return response.provider_error(upstream_status_error(status, body, headers, target), body)


def base_url(target: RoutingTarget) -> str:
    """The API root; a configured base URL ending in /v1 is accepted too."""
    base = (target.base_url or "https://api.anthropic.com").rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


CLIENT = MessagesClientCodec()
PROVIDER = MessagesProviderCodec()
