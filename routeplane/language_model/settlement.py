"""The immutable settlement of a request, and cost in micro-USD from token buckets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from .routing import Prices
from .types import Usage


@dataclass(frozen=True)
class Attempt:
    """One upstream attempt, in order; the last successful one served the request."""

    provider: str
    model: str
    protocol: str
    ok: bool
    latency_ms: float
    status: Optional[int] = None
    error_type: Optional[str] = None
    error: Optional[str] = None
    offset_ms: Optional[float] = None  # from the request's start to this attempt's start (trace spans)


@dataclass(frozen=True)
class Settlement:
    request_id: str
    started_at: float  # unix seconds
    inbound_protocol: str
    route: str  # the model name the client asked for
    streamed: bool
    outcome: str  # an Outcome value
    provider: Optional[str] = None
    model: Optional[str] = None  # upstream model id
    account_id: Optional[str] = None
    session_id: Optional[str] = None
    usage: Usage = Usage(reported=False)
    cost_micro_usd: Optional[int] = None  # None = unknown price, never a silent zero
    latency_ms: float = 0.0
    ttft_ms: Optional[float] = None
    attempts: Tuple[Attempt, ...] = ()
    error_type: Optional[str] = None
    status: int = 200
    metadata: Mapping[str, Any] = field(default_factory=dict)


class ReadOnlyDict(dict):
    """A settlement's metadata: every recorder reads the same mapping, so none may change it.

    A dict (json.dumps, `dict(...)` and `.get` see an ordinary one); any mutation raises TypeError.
    """

    def _refuse(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("a settlement is immutable: copy its metadata (dict(...)) to change it")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore

    def __reduce__(self) -> Any:  # copy, deepcopy and pickle rebuild it through the constructor
        return (type(self), (dict(self),))


class ReadOnlyList(list):
    """A list in a settlement's metadata: equal to the list it was, and never changed."""

    def _refuse(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("a settlement is immutable: copy its metadata (list(...)) to change it")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = pop = remove = clear = _refuse  # type: ignore
    sort = reverse = _refuse  # type: ignore

    def __reduce__(self) -> Any:
        return (type(self), (list(self),))


_SCALARS = (str, int, float, type(None))  # bool is an int


def frozen(value: Any) -> Any:
    """`value` with every mapping a ReadOnlyDict and every list a ReadOnlyList, all the way down
    (a few µs per request: scalars, the usual content, are not visited)."""
    if isinstance(value, Mapping):
        return ReadOnlyDict({k: v if isinstance(v, _SCALARS) else frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return ReadOnlyList([v if isinstance(v, _SCALARS) else frozen(v) for v in value])
    if isinstance(value, tuple):
        return tuple(v if isinstance(v, _SCALARS) else frozen(v) for v in value)
    return value


# The most one request can cost or reserve: $9 billion, past any budget, and far from a 64-bit
# column's limit even when added to a window's spend.
MAX_COST_MICRO_USD = 2 ** 53


def cost_micro_usd(usage: Usage, prices: Prices) -> Optional[int]:
    """Cost of the usage in micro-USD, or None if any used bucket has no price.

    Prices are USD per million tokens, so tokens × price is micro-USD exactly.
    Cache buckets fall back to the input price only when the provider has no
    separate cache price; reasoning is billed as output unless priced. Anthropic's
    1-hour cache writes (`cache_creation.ephemeral_1h_input_tokens` in its raw
    usage) cost twice the input price, not the (5-minute) `cache_write` price. A
    price tier (long context) applies to the whole request once its input
    tokens exceed the tier's threshold. Calls of server-side tools billed by the
    call (`usage.tool_calls`) cost `prices.per_call` each; an unpriced kind makes
    the cost unknown, as an unpriced token bucket does.
    """
    prices = prices.for_input(usage.total_input)
    write_1h = _one_hour_cache_writes(usage)
    buckets = (
        (usage.input_tokens, prices.input),
        (usage.cache_read_tokens, prices.cache_read if prices.cache_read is not None else prices.input),
        (usage.cache_write_tokens - write_1h, prices.cache_write if prices.cache_write is not None else prices.input),
        (write_1h, prices.input * ONE_HOUR_CACHE_WRITE_FACTOR if prices.input is not None else None),
        (usage.output_tokens, prices.output),
        (usage.reasoning_tokens, prices.reasoning if prices.reasoning is not None else prices.output),
    )
    total = 0.0
    for tokens, price in buckets:
        if tokens:
            if price is None:
                return None
            total += tokens * price
    for kind, calls in usage.tool_calls:  # a server-side tool billed by the call (Anthropic's web search)
        price = prices.call_price(kind)
        if price is None:
            return None
        total += calls * price * 1_000_000
    if not total <= MAX_COST_MICRO_USD:  # also NaN and inf: a client's max_tokens of 10**300, a lying upstream
        return MAX_COST_MICRO_USD
    return int(round(total))


# Anthropic bills a 1-hour cache write at 2x the input price (a 5-minute one, `cache_write`, at 1.25x).
ONE_HOUR_CACHE_WRITE_FACTOR = 2.0


def _one_hour_cache_writes(usage: Usage) -> int:
    """The cache-write tokens an Anthropic upstream reported as 1-hour writes (at most all of them)."""
    creation = (usage.raw or {}).get("cache_creation")
    n = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, Mapping) else None
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return 0
    return min(n, usage.cache_write_tokens)
