"""Requests that are not valid protobuf get INVALID_ARGUMENT, not a leaked parser error.

gRPC decodes a request before any interceptor or service sees it, and a decode
failure (corrupt wire format, a string field that is not UTF-8) would reach the
client as UNKNOWN carrying the parser's exception text. :class:`DecodeGuardInterceptor`
gives each method a deserializer that returns an :class:`Undecodable` marker
instead of raising, and answers that marker with INVALID_ARGUMENT: for a stream,
the first undecodable message ends the stream, since its framing can no longer be trusted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..runtime.errors import InvalidArgument
from . import errors
from .call import request_id


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


async def _reject(context: grpc.aio.ServicerContext, marker: Undecodable) -> None:
    await errors.abort(context, _invalid(marker), request_id())


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    # Raise rather than abort: a handler may read its requests from another task, and only
    # the handler's own task may abort the call. The error layer turns this into the status.
    async for request in requests:
        if isinstance(request, Undecodable):
            raise _invalid(request)
        yield request


def guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    options = {
        "request_deserializer": _lenient(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary or handler.unary_stream:
        unary_inner: Any = handler.unary_unary or handler.unary_stream
        if handler.unary_unary:

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    await _reject(context, request)
                return await unary_inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **options)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _reject(context, request)
            result = unary_inner(request, context)
            if isinstance(result, Awaitable):  # a handler that writes with context.write()
                await result
                return
            async for item in result:
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **options)

    stream_inner: Any = handler.stream_unary or handler.stream_stream
    if handler.stream_unary:

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await stream_inner(_checked(requests), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)

    async def stream_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        result = stream_inner(_checked(requests), context)
        if isinstance(result, Awaitable):
            await result
            return
        async for item in result:
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **options)


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        return None if handler is None else guard(handler)
