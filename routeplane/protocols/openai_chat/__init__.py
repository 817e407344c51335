"""OpenAI Chat Completions wire (`POST /v1/chat/completions`), both directions."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ...errors import RouteplaneError
from ...language_model.routing import RoutingTarget
from ...language_model.types import Generation, Prompt
from ..base import ClientCodec, ProviderCodec, StreamDecoder, StreamEncoder, json_headers
from . import request, response, stream

PROTOCOL = "openai_chat"


class ChatClientCodec(ClientCodec):
    """`reasoning_field`: the non-standard field that shows a model's reasoning to Chat clients
    (`reasoning_content` or `reasoning`), None to leave it out (config `server.openai_chat_reasoning`)."""

    protocol = PROTOCOL

    def __init__(self, reasoning_field: Optional[str] = None) -> None:
        self.reasoning_field = reasoning_field

    def decode_request(self, body: Any) -> Prompt:
        return request.decode_request(body)

    def encode_response(self, gen: Generation, prompt: Prompt) -> Dict[str, Any]:
        return response.encode_response(gen, prompt, self.reasoning_field)

    def stream_encoder(self, prompt: Prompt) -> StreamEncoder:
        return stream.ChatStreamEncoder(prompt, self.reasoning_field)

    def error_body(self, err: RouteplaneError) -> Dict[str, Any]:
        return response.error_body(err)


class ChatProviderCodec(ProviderCodec):
    protocol = PROTOCOL
    custom_tools = False  # OpenAI-compatible servers take function tools only; the registry's openai says true

    def url(self, target: RoutingTarget, stream: bool) -> str:
        base = (target.base_url or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/chat/completions"

    def headers(self, target: RoutingTarget) -> Dict[str, str]:
        return json_headers(target)

    def encode_request(self, prompt: Prompt, target: RoutingTarget, stream: bool) -> Dict[str, Any]:
        return request.encode_request(prompt, target, stream)

    def decode_response(self, body: Any, target: RoutingTarget) -> Generation:
        return response.decode_response(body, target)

    def stream_decoder(self, target: RoutingTarget) -> StreamDecoder:
        return stream.ChatStreamDecoder(target)


CLIENT = ChatClientCodec()
PROVIDER = ChatProviderCodec()
