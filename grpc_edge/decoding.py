"""Requests that are not valid protobuf get INVALID_ARGUMENT, not a leaked parser error.

gRPC decodes a request before any guard or service sees it, and a decode
failure (corrupt wire format, a string field that is not UTF-8) would reach the
client as UNKNOWN carrying the parser's exception text. :class:`DecodeGuard`
gives each method a deserializer that returns an :class:`Undecodable` marker
instead of raising, and answers that marker with INVALID_ARGUMENT: for a stream,
the first undecodable message ends the stream, since its framing can no longer be trusted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from confab.grpc_edge.call import CallInfo
from confab.grpc_edge.guards import CallGuard, Context, Handler, handler_like
from confab.runtime.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Undecodable:
    problem: str


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc).split(": ", 1)[-1])

    return deserialize


def _invalid(marker: Undecodable) -> InvalidArgument:
    return InvalidArgument(f"the request is not a valid protobuf message ({marker.problem})")


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    # Raise rather than abort: a handler may read its requests from another task, and only
    # the handler's own task may abort the call. The guards turn this into the status.
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _invalid(request)
        yield request


class DecodeGuard(CallGuard):
    def adapt(self, handler: Handler) -> Handler:
        behavior = (
            handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
        )
        assert behavior is not None  # a handler has one behaviour, whichever its kind
        return handler_like(handler, behavior, _lenient(handler.request_deserializer))

    def requests(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        return _checked(requests)

    def enter(self, call: CallInfo, request: Any, context: Context) -> None:
        if isinstance(request, Undecodable):
            raise _invalid(request)
