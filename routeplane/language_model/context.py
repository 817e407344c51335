"""The per-request context that hooks read and (in the allowed stages) write."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from .routing import RoutingTarget
from .types import Prompt

T = TypeVar("T")

# Headers that carry credentials: never copied into the context or any event.
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "proxy-authorization"}
)


@dataclass(frozen=True)
class Identity:
    """Who is calling. Filled by an auth hook; anonymous when auth is off."""

    account_id: Optional[str] = None
    key_id: Optional[str] = None
    session_id: Optional[str] = None
    scope: str = "api"
    models: Tuple[str, ...] = ("*",)
    budget_micro_usd: Optional[int] = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    # How the caller proved who it is: "anonymous" | "api_key" | "jwt".
    kind: str = "anonymous"
    # Budget semantics (routeplane.auth): "account" or "session", and an optional
    # window (routeplane.auth.window.BudgetWindow: last N requests or S seconds).
    budget_scope: str = "account"
    budget_window: Optional[Any] = None
    issued_at: Optional[float] = None
    expires_at: Optional[float] = None


ANONYMOUS = Identity()

# The identity a request's context starts with when its maker gives none: ANONYMOUS, except while the
# plugin kit runs a request as a caller (routeplane.testing, `request(identity=...)`), on every path
# that makes one: model calls and the count_tokens dry runs alike. An auth hook still decides after it.
CALLER: ContextVar[Identity] = ContextVar("routeplane_caller", default=ANONYMOUS)


class Extensions:
    """Typed values shared between stages of one request, keyed by their type."""

    def __init__(self) -> None:
        self._values: Dict[type, Any] = {}

    def put(self, value: Any) -> None:
        self._values[type(value)] = value

    def get(self, kind: Type[T]) -> Optional[T]:
        return self._values.get(kind)

    def __contains__(self, kind: type) -> bool:
        return kind in self._values


class PipelineContext:
    """State of one request as it moves through the stages.

    The prompt may be replaced only during pre-request; after that it is
    read-only so that routing, execution and settlement agree on what was sent.
    """

    def __init__(
        self,
        request_id: str,
        inbound_protocol: str,
        prompt: Prompt,
        headers: Mapping[str, str],
        identity: Optional[Identity] = None,
        credential: Optional[str] = None,
    ) -> None:
        self.request_id = request_id
        self.inbound_protocol = inbound_protocol
        self._prompt = prompt
        self.route = prompt.model
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}
        # The caller's own credential (bearer token / x-api-key), for auth hooks
        # only. Never logged, never copied into events or settlements.
        self.credential = credential
        self.identity = identity if identity is not None else CALLER.get()
        self.chain: List[RoutingTarget] = []
        self.target: Optional[RoutingTarget] = None
        self.result: Any = None
        self.metadata: Dict[str, Dict[str, Any]] = {}
        self.extensions = Extensions()
        self.started_at = time.time()
        self.started_monotonic = time.monotonic()
        self._prompt_locked = False
        # True during POST /admin/explain: hooks must decide but not act (no reservations, no writes).
        self.dry_run = False
        # Set by abort() (another thread: the worker shutting down); executors check it
        # when a read fails, so a deliberately cut upstream is not blamed on the provider.
        self.aborted: Optional[Exception] = None
        # True while the executor still holds parts of the last upstream read: the pipeline's next
        # pull cannot wait on the network, so the web layer may batch writes (pipeline_stream.py).
        self.upstream_buffered = False
        self._aborters: List[Callable[[], None]] = []

    @property
    def prompt(self) -> Prompt:
        return self._prompt

    def replace_prompt(self, prompt: Prompt) -> None:
        if self._prompt_locked:
            raise RuntimeError("the prompt is read-only after the pre-request stage")
        self._prompt = prompt

    def lock_prompt(self) -> None:
        self._prompt_locked = True

    def plugin_metadata(self, plugin_id: str) -> Dict[str, Any]:
        """JSON-able metadata owned by one plugin; it reaches the settlement."""
        return self.metadata.setdefault(str(plugin_id), {})

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started_monotonic) * 1000.0

    def on_abort(self, fn: Callable[[], None]) -> None:
        """Executors register how to interrupt a blocked upstream read (shut its socket down)."""
        self._aborters.append(fn)
        if self.aborted is not None:
            fn()

    def abort(self, reason: Exception) -> None:
        """Interrupt the upstream reads of this request from another thread; they fail with `reason`."""
        if self.aborted is None:
            self.aborted = reason
        for fn in list(self._aborters):
            try:
                fn()
            except Exception:  # noqa: BLE001 - a socket already closed is fine
                pass
