"""The one mapping from Confab's errors to gRPC statuses.

Every status carries a ``google.rpc.ErrorInfo`` with Confab's stable reason code
(domain ``confab``), and an ``InvalidArgument`` also a ``google.rpc.BadRequest``
naming the field. Anything that is not a :class:`ConfabError` is a bug: it is
logged with the request id and the client sees only INTERNAL and that id. The one
exception is the ``NotImplementedError`` of a generated servicer base (``*_pb2_grpc``),
which is what a method the service does not override raises: that method is
UNIMPLEMENTED, as a method the server does not know at all is.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from confab.runtime.errors import (
    ConfabError,
    ConversationNotFound,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    Overloaded,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[ConfabError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ConversationNotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    InternalError: grpc.StatusCode.INTERNAL,
}


def status_code(error: ConfabError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def as_confab_error(error: BaseException, request_id: str) -> ConfabError:
    """Confab errors pass through; anything else is logged and becomes an opaque INTERNAL.

    But for a method a service leaves to its generated base: that is UNIMPLEMENTED, not a bug.
    """
    if isinstance(error, ConfabError):
        return error
    if isinstance(error, NotImplementedError) and _raised_by_generated_servicer(error):
        return Unimplemented("this server does not implement the method")
    log.error("internal error (request_id=%s)", request_id, exc_info=error)
    return InternalError(f"internal error; request_id={request_id}")


def rich_status(error: ConfabError) -> grpc.Status:
    code = status_code(error)
    details = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain="confab")
    details.append(_pack(info))
    if isinstance(error, InvalidArgument) and error.field:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=error.field, description=error.message)
        details.append(_pack(bad))
    if isinstance(error, RateLimited):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(retry))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)
    # grpc_status has no type information: this is where its grpc.Status gets its type.
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


def past_deadline(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the call's deadline has passed (gRPC has ended it, or is about to)."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException, request_id: str
) -> NoReturn:
    """End the call with ``error``'s status; a call gRPC has already ended ends quietly.

    Once the deadline has passed, gRPC's core has ended the call with DEADLINE_EXCEEDED (the
    client's own timer says so too), whatever the service was about to answer; sending a status
    then fails in the core (``ExecuteBatchError``), which grpc.aio reported with a traceback
    when it saw the failure before the call's end. So no status is sent then, and a send that
    fails because the call ended meanwhile (the client cancelled) is not an error either: the
    call ends as cancelled, which grpc.aio takes quietly, its code noted for the access line.
    """
    if isinstance(error, grpc.aio.AbortError):  # aborted deeper down already: let it through
        raise error
    status = rich_status(as_confab_error(error, request_id))  # a bug is logged, whatever follows
    if not past_deadline(context):
        try:
            await context.abort_with_status(status)
        except grpc.aio.AbortError:
            raise
        except Exception as failed:  # ExecuteBatchError: no call left to send the status to
            log.debug("status %s not sent (request_id=%s): %r", status.code.name, request_id, failed)
        else:  # pragma: no cover
            raise AssertionError("abort_with_status returned")
    context.set_code(
        grpc.StatusCode.DEADLINE_EXCEEDED if past_deadline(context) else grpc.StatusCode.CANCELLED
    )
    raise asyncio.CancelledError


def _raised_by_generated_servicer(error: NotImplementedError) -> bool:
    """Whether ``error`` came from a method of a generated servicer base, not from Confab's code.

    Judged by where it was raised (the innermost frame), so a NotImplementedError that
    Confab's own code raises, or lets through from a library, is still a bug.
    """
    innermost: TracebackType | None = error.__traceback__
    if innermost is None:
        return False
    while innermost.tb_next is not None:
        innermost = innermost.tb_next
    return str(innermost.tb_frame.f_globals.get("__name__", "")).endswith("_pb2_grpc")


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed
