"""JSON-RPC 2.0 framing for MCP: message classification, the error type, and error bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RESOURCE_NOT_FOUND = -32002
UPSTREAM_UNAVAILABLE = -32010  # implementation-defined range (mcp.md §9): an upstream server failed

RequestId = Union[str, int]


class MCPError(Exception):
    """A JSON-RPC error answered to the client: code, message, HTTP status and optional data.

    The message is public: never an upstream secret, a header or a traceback.
    """

    def __init__(self, code: int, message: str, status: int = 200, data: Any = None,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.data = data
        self.retry_after = retry_after

    def body(self, request_id: Optional[RequestId] = None) -> Dict[str, Any]:
        error: Dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


@dataclass(frozen=True)
class Message:
    """One parsed JSON-RPC message: a request (id + method), a notification (method) or a response (id)."""

    kind: str  # "request" | "notification" | "response"
    raw: Dict[str, Any]

    @property
    def id(self) -> Optional[RequestId]:
        return self.raw.get("id")

    @property
    def method(self) -> str:
        return self.raw.get("method", "")

    @property
    def params(self) -> Dict[str, Any]:
        return self.raw.get("params") or {}


def classify(data: Any) -> Message:
    """Validate one JSON-RPC message (batches were removed from MCP in 2025-06-18)."""
    if isinstance(data, list):
        raise MCPError(INVALID_REQUEST, "Invalid Request: batches are not supported; send one message per POST.", 400)
    if not isinstance(data, dict):
        raise MCPError(INVALID_REQUEST, "Invalid Request: a JSON-RPC message must be an object.", 400)
    if data.get("jsonrpc") != "2.0":
        raise MCPError(INVALID_REQUEST, "Invalid Request: 'jsonrpc' must be \"2.0\".", 400)
    has_id = "id" in data
    if has_id and (data["id"] is None or isinstance(data["id"], bool) or not isinstance(data["id"], (str, int))):
        raise MCPError(INVALID_REQUEST, "Invalid Request: 'id' must be a string or an integer.", 400)
    if "method" in data:
        if not isinstance(data["method"], str) or not data["method"]:
            raise MCPError(INVALID_REQUEST, "Invalid Request: 'method' must be a non-empty string.", 400)
        if "params" in data and not isinstance(data["params"], dict):
            raise MCPError(INVALID_PARAMS, "Invalid params: 'params' must be an object.", 400)
        return Message("request" if has_id else "notification", data)
    if has_id and (("result" in data) != ("error" in data)):
        return Message("response", data)
    raise MCPError(INVALID_REQUEST, "Invalid Request: neither a request, a notification nor a response.", 400)


def result_body(request_id: RequestId, result: Dict[str, Any]) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}
