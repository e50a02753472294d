"""Confab's exception tree, documented in one place.

Every error the engine raises is a :class:`ConfabError`. Each subclass carries a
stable ``reason`` (a machine-readable code that clients may switch on and that
travels between processes) and maps to exactly one gRPC status at the edge
(``grpc_edge.errors``)::

    ConfabError
    ├── InvalidArgument        a request field is missing or malformed  (INVALID_ARGUMENT)
    ├── Unauthenticated        no credentials, or credentials not valid  (UNAUTHENTICATED)
    ├── PermissionDenied       the caller may not act on this tenant    (PERMISSION_DENIED)
    ├── ConversationNotFound   the conversation never existed           (NOT_FOUND)
    ├── FailedPrecondition     not in the state the request needs      (FAILED_PRECONDITION)
    ├── Overloaded             a bounded queue or limit is full         (RESOURCE_EXHAUSTED)
    │   └── RateLimited        the tenant's request rate is exceeded    (RESOURCE_EXHAUSTED + RetryInfo)
    ├── DeadlineExceeded       the caller's deadline passed first       (DEADLINE_EXCEEDED)
    ├── Unavailable            a shard or the store cannot answer now   (UNAVAILABLE)
    ├── Unimplemented          an API method this server leaves out     (UNIMPLEMENTED)
    └── InternalError          a bug; details are logged, not returned  (INTERNAL)
"""

from __future__ import annotations


class ConfabError(Exception):
    """Base of every error Confab raises on purpose."""

    reason = "CONFAB_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ConfabError):
    """A request field is missing or malformed; ``field`` names it."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Unauthenticated(ConfabError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(ConfabError):
    reason = "PERMISSION_DENIED"


class ConversationNotFound(ConfabError):
    reason = "CONVERSATION_NOT_FOUND"


class FailedPrecondition(ConfabError):
    """The conversation is not in the state the request needs (say, a person's message to a
    conversation that is not handed over): nothing was changed."""

    reason = "FAILED_PRECONDITION"


class Overloaded(ConfabError):
    reason = "OVERLOADED"


class RateLimited(Overloaded):
    """``retry_after_s`` says when the tenant's bucket has a token again."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ConfabError):
    reason = "DEADLINE_EXCEEDED"


class Unavailable(ConfabError):
    reason = "UNAVAILABLE"


class Unimplemented(ConfabError):
    reason = "UNIMPLEMENTED"


class InternalError(ConfabError):
    reason = "INTERNAL"


ERRORS_BY_REASON: dict[str, type[ConfabError]] = {
    cls.reason: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        ConversationNotFound,
        FailedPrecondition,
        Overloaded,
        RateLimited,
        DeadlineExceeded,
        Unavailable,
        Unimplemented,
        InternalError,
    )
}


def error_from_reason(reason: str, message: str, field: str = "") -> ConfabError:
    """Rebuild an error that crossed a process boundary as ``(reason, message, field)``."""
    cls = ERRORS_BY_REASON.get(reason, InternalError)
    return InvalidArgument(message, field=field) if cls is InvalidArgument else cls(message)
