"""Wire drivers: one module per wire, each exposing `DRIVER`, a `WireDriver` subclass instance.

Adding a wire to the matrix = adding a module here (see tests/matrix/README.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from tests.matrix.model import ClientResult, Reasoning, Scenario, ToolResult, UpstreamRequest, Usage
from tests.support.upstream import RecordedRequest, Reply

UPSTREAM_KEY = "sk-matrix-upstream-key"  # the gateway's key for every upstream
CLIENT_KEY = "client-key-matrix"  # what clients send; must never reach an upstream


@dataclass(frozen=True)
class ClientCall:
    path: str
    headers: Mapping[str, str]
    body: Any


class WireDriver(ABC):
    """How the matrix speaks one wire, as a client of the gateway and as a fake upstream."""

    #: protocol name, as in config (`openai_chat`, `anthropic_messages`, ...)
    name: str
    #: the client sees reasoning text when it asks for it
    shows_reasoning: bool = False
    #: reasoning in history survives a same-wire round trip (with its signature)
    history_reasoning: bool = False
    #: the wire has prompt-cache markers (cache_control)
    cache_control: bool = False
    #: scenario features this driver can build and read back ("images", "same_role_turns")
    features: frozenset = frozenset()
    #: as an upstream, consecutive same-role turns arrive merged into one
    merges_same_role: bool = False
    #: as an upstream, reasoning is turned off when a tool turn is continued without its own
    #: signed reasoning (Anthropic rejects such a request, translation.md §11)
    thinking_needs_signed_tool_turn: bool = False

    # --- capabilities ------------------------------------------------------

    def supports(self, scenario: Scenario, as_client: bool) -> bool:
        """False to leave a cell out of the matrix (and so out of docs/compatibility.md)."""
        return True

    def finish_fidelity(self, reason: str) -> str:
        """The canonical finish reason after a trip through this wire (lossy wires collapse some)."""
        return reason

    def result_fidelity(self, result: ToolResult) -> ToolResult:
        """A tool result after a trip through this wire."""
        return result

    def usage_fidelity(self, usage: Usage) -> Usage:
        """Usage buckets after a trip through this wire (a wire without a bucket folds it into another)."""
        return usage

    def midstream_error_kind(self, kind: str) -> str:
        """The failure kind the gateway decodes from this wire's in-stream error for `kind`."""
        return kind

    def reasoning_from_upstream(self, reasoning: Reasoning) -> Reasoning:
        """Reasoning as the gateway decodes it from this wire's reply (signature or not)."""
        return reasoning

    # --- the client side ---------------------------------------------------

    @abstractmethod
    def client_request(self, scenario: Scenario, model: str, stream: bool) -> ClientCall: ...

    @abstractmethod
    def read_client_response(self, status: int, headers: Mapping[str, str], body: bytes, stream: bool) -> ClientResult:
        """Read the gateway's answer the way the official SDK would; assert the wire's framing rules."""

    @abstractmethod
    def error_expectation(self, kind: str) -> tuple:
        """(HTTP status, error type) this wire's client must see for a failure kind."""

    # --- the upstream side -------------------------------------------------

    @abstractmethod
    def provider_config(self, upstream_url: str) -> Dict[str, Any]:
        """The `providers.<id>` config block pointing at the fake upstream."""

    @abstractmethod
    def upstream_reply(self, scenario: Scenario, stream: bool) -> Reply:
        """The fake upstream's scripted answer, exactly as the real provider would send it."""

    @abstractmethod
    def read_upstream_request(self, recorded: RecordedRequest) -> UpstreamRequest: ...

    def check_upstream_headers(self, headers: Mapping[str, str], client_headers: Mapping[str, str],
                               same_wire: bool) -> None:
        """Assert auth and forwarded headers on the upstream call (raise AssertionError)."""
        return None

    # --- same-wire losslessness ----------------------------------------------

    def normalize_request(self, body: Any) -> Any:
        """A request body with only the differences the gateway may legitimately make removed."""
        out = dict(body)
        out.pop("model", None)
        return out

    def normalize_response(self, body: Any) -> Any:
        out = dict(body)
        for key in ("id", "model", "created"):
            out.pop(key, None)
        return out


def drivers() -> Dict[str, WireDriver]:
    """Every wire module in this package, by protocol name."""
    found: Dict[str, WireDriver] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        driver: Optional[WireDriver] = getattr(module, "DRIVER", None)
        if driver is not None:
            found[driver.name] = driver
    return found


def names() -> List[str]:
    return list(drivers())
