"""Requests that are not valid protobuf get INVALID_ARGUMENT, not a leaked parser error.

gRPC decodes a request before any interceptor or service sees it, and a decode
failure (corrupt wire format, a string field that is not UTF-8) would reach the
client as UNKNOWN carrying the parser's exception text. :class:`DecodeGuardInterceptor`
gives each method a deserializer that returns an :class:`Undecodable` marker
instead of raising, and answers that marker with INVALID_ARGUMENT: for a stream,
the first undecodable message ends the stream, since its framing can no longer be trusted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..runtime.errors import InvalidArgument
from . import errors
from .call import request_id
from .interceptors import HandlerInterceptor, guard_handler


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
    # the handler's own task may abort the call. The error layer turns this into the status.
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _invalid(request)
        yield request


@contextlib.asynccontextmanager
async def _reject_undecodable(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    if isinstance(request, Undecodable):
        await errors.abort(context, _invalid(request), request_id())
    yield


def guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    return guard_handler(
        handler,
        _reject_undecodable,
        request_deserializer=_lenient(handler.request_deserializer),
        request_stream=_checked,
    )


class DecodeGuardInterceptor(HandlerInterceptor):
    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return guard(handler)
