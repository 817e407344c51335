"""One error tree for the gateway; every failure a client can see is one of these.

    RouteplaneError                    status, kind, public message, retry_after
    ├── ClientError                    4xx: the request itself is wrong
    │   ├── InvalidRequest             400 malformed JSON, wrong types, missing fields
    │   ├── UnsupportedMediaType       415 body is not application/json
    │   ├── PayloadTooLarge            413 body over server.max_body_bytes
    │   ├── Unauthorized               401
    │   ├── Forbidden                  403
    │   ├── PaymentRequired            402 budget exhausted
    │   ├── NotFound / ModelNotFound   404
    │   ├── RateLimited                429 (+Retry-After)
    │   ├── GuardrailViolation         400
    │   └── HookDenied                 status chosen by a hook's DenyReason
    ├── UpstreamError                  a provider call failed (provider, upstream_status)
    │   ├── UpstreamStatusError        the provider answered with an error status
    │   ├── UpstreamTimeout            504, retriable
    │   ├── UpstreamConnectionError    502, retriable
    │   ├── InvalidUpstreamResponse    502, retriable (bad JSON, broken or cut stream)
    │   ├── UnsafeUpstreamURL          502, not retriable: the URL policy refused the target
    │   └── AllTargetsFailed           merged result of every attempt
    ├── NoTargetAvailable              503 the chain was empty after route hooks
    ├── StreamAborted                  a stream hook aborted the stream
    └── InternalError                  500; never carries details of the cause

`kind` is a wire-neutral name ("invalid_request", "rate_limit", ...) that each
wire's renderer maps to its own error `type`. `retriable` says whether the
executor may fall back to the next target after this error.
"""

from __future__ import annotations

from typing import Optional, Sequence


class RouteplaneError(Exception):
    status: int = 500
    kind: str = "internal"
    retriable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        kind: Optional[str] = None,
        code: Optional[str] = None,
        param: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class ClientError(RouteplaneError):
    status = 400
    kind = "invalid_request"


class InvalidRequest(ClientError):
    pass


class UnsupportedMediaType(ClientError):
    status = 415


class PayloadTooLarge(ClientError):
    status = 413
    kind = "request_too_large"


class Unauthorized(ClientError):
    status = 401
    kind = "authentication"


class Forbidden(ClientError):
    status = 403
    kind = "permission"


class PaymentRequired(ClientError):
    status = 402
    kind = "budget"


class NotFound(ClientError):
    status = 404
    kind = "not_found"


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model {model!r} is not a route of this gateway. "
            "GET /v1/models lists the valid names; a configured provider's model "
            "can also be named directly as 'provider:model'.",
            code="model_not_found",
            param="model",
        )
        self.model = model


class RateLimited(ClientError):
    status = 429
    kind = "rate_limit"


class GuardrailViolation(ClientError):
    status = 400
    kind = "guardrail"


class HookDenied(ClientError):
    """A pre-request hook denied the request; status comes from its DenyReason."""


class UpstreamError(RouteplaneError):
    status = 502
    kind = "upstream"
    retriable = True

    def __init__(
        self,
        message: str,
        *,
        provider: Optional[str] = None,
        upstream_status: Optional[int] = None,
        retriable: Optional[bool] = None,
        **kw,
    ) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.upstream_status = upstream_status
        if retriable is not None:
            self.retriable = retriable


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status; status mirrors it where meaningful."""


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"


class UpstreamConnectionError(UpstreamError):
    status = 502


class InvalidUpstreamResponse(UpstreamError):
    status = 502


class UnsafeUpstreamURL(UpstreamError):
    """A target's URL broke the URL safety policy; no connection was made."""

    status = 502
    retriable = False


class AllTargetsFailed(UpstreamError):
    retriable = False

    def __init__(self, message: str, *, errors: Sequence[UpstreamError], **kw) -> None:
        super().__init__(message, **kw)
        self.errors = tuple(errors)


def retry_cannot_help(err: RouteplaneError) -> bool:
    """A 5xx that the same request cannot fix (the gateway's provider key refused, a target URL the safety
    policy forbids), on its own or on every target: clients are told not to retry it."""
    if isinstance(err, AllTargetsFailed):
        return bool(err.errors) and all(retry_cannot_help(e) for e in err.errors)
    if isinstance(err, UnsafeUpstreamURL):
        return True
    return isinstance(err, UpstreamStatusError) and err.upstream_status in (401, 403)


class NoTargetAvailable(RouteplaneError):
    status = 503
    kind = "overloaded"


class StreamAborted(RouteplaneError):
    status = 400
    kind = "guardrail"


class InternalError(RouteplaneError):
    status = 500
    kind = "internal"

    def __init__(self, message: str = "The gateway hit an internal error; the request id identifies it in the logs.") -> None:
        super().__init__(message)


def merge_failures(errors: Sequence[UpstreamError]) -> UpstreamError:
    """Combine the errors of every attempt into the one the client sees.

    All 429 → 429 with the earliest Retry-After; all timeouts → 504; a single
    attempt keeps its own error; otherwise 502, or 503 (with the earliest
    Retry-After) if every target was overloaded.
    """
    if len(errors) == 1:
        return errors[0]
    statuses = [e.status for e in errors]
    summary = "; ".join(e.message if e.provider and e.message.startswith(e.provider)
                        else f"{e.provider or '?'}: {e.message}" for e in errors)  # named once
    message = f"All {len(errors)} upstream targets failed ({summary})"
    hints = [e.retry_after for e in errors if e.retry_after is not None]
    earliest = min(hints) if hints else None  # a client comes back when the first target frees up
    if all(e.kind == "budget" for e in errors):  # every account is out of credit: waiting will not help
        return AllTargetsFailed(message, errors=errors, status=statuses[0] if len(set(statuses)) == 1 else 402,
                                kind="budget")
    if all(s == 429 for s in statuses):
        return AllTargetsFailed(message, errors=errors, status=429, kind="rate_limit", retry_after=earliest)
    if all(isinstance(e, UpstreamTimeout) or e.status == 504 or e.kind == "timeout" for e in errors):
        return AllTargetsFailed(message, errors=errors, status=504, kind="timeout")
    if all(s in (503, 529) for s in statuses):
        return AllTargetsFailed(message, errors=errors, status=503, kind="overloaded", retry_after=earliest)
    return AllTargetsFailed(message, errors=errors, status=502, kind="upstream")
