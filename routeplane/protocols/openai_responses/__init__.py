"""OpenAI Responses wire (`POST /v1/responses`), both directions."""

from __future__ import annotations

from typing import Any, Dict

from ...errors import RouteplaneError
from ...language_model.routing import RoutingTarget
from ...language_model.types import Generation, Prompt
from ..base import ClientCodec, ProviderCodec, StreamDecoder, StreamEncoder, json_headers
from . import request, response, stream, stream_decode

PROTOCOL = request.PROTOCOL


class ResponsesClientCodec(ClientCodec):
    protocol = PROTOCOL

    def decode_request(self, body: Any) -> Prompt:
        return request.decode_request(body)

    def encode_response(self, gen: Generation, prompt: Prompt) -> Dict[str, Any]:
        return response.encode_response(gen, prompt)

    def stream_encoder(self, prompt: Prompt) -> StreamEncoder:
        return stream.ResponsesStreamEncoder(prompt)

    def error_body(self, err: RouteplaneError) -> Dict[str, Any]:
        return response.error_body(err)


class ResponsesProviderCodec(ProviderCodec):
    protocol = PROTOCOL
    custom_tools = True

    def url(self, target: RoutingTarget, stream: bool) -> str:
        base = (target.base_url or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/responses"

    def headers(self, target: RoutingTarget) -> Dict[str, str]:
        return json_headers(target)

    def encode_request(self, prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
        return request.encode_request(prompt, target, stream)

    def decode_response(self, body: Any, target: RoutingTarget) -> Generation:
        return response.decode_response(body, target)

    def stream_decoder(self, target: RoutingTarget) -> StreamDecoder:
        return stream_decode.ResponsesStreamDecoder(target)


CLIENT = ResponsesClientCodec()
PROVIDER = ResponsesProviderCodec()
