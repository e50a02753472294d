"""Server interceptors: cross-cutting concerns wrapped around every method.

Every Confab interceptor is a *call guard*: an async context manager entered when
a call starts and left when it ends, given the request and the context, so it can
refuse the call, watch it, or change how it ends. :func:`guard_handler` rewraps
any of gRPC's four kinds of method handlers around a guard, so each concern is
written once for unary and streaming methods alike.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from . import errors

# Runs around one whole call, given its request (an iterator for client streams) and
# context: it may abort the call before it starts, and sees (or replaces) what ended it.
CallGuard = Callable[[Any, grpc.aio.ServicerContext], contextlib.AbstractAsyncContextManager[None]]


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """Base of Confab's interceptors: each one rewraps the method handler of a call (:meth:`wrap`)."""

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        return None if handler is None else self.wrap(handler, handler_call_details)


def status_code_name(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """How a call ended, as a gRPC status code name, from its context and what it raised."""
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if error is None:
        return "OK"
    if isinstance(error, Exception) and type(error).__name__ == "CancelledError":
        return "CANCELLED"
    return "UNKNOWN" if not isinstance(error, grpc.aio.AbortError) else "ABORTED"


def guard_handler(
    handler: grpc.RpcMethodHandler,
    guard: CallGuard,
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
    request_stream: Callable[[AsyncIterator[Any]], AsyncIterator[Any]] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with every call run inside ``guard``.

    ``request_deserializer`` replaces the handler's; ``request_stream`` wraps the request
    iterator of client-streaming methods (both for layers that vet requests).
    """
    deserializer = request_deserializer or handler.request_deserializer
    client_streams = bool(handler.stream_unary or handler.stream_stream)

    def requests(request: Any) -> Any:
        return request_stream(request) if request_stream is not None and client_streams else request

    if handler.unary_unary or handler.stream_unary:
        inner: Any = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with guard(request, context):
                return await inner(requests(request), context)

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary_response, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )

    inner_stream: Any = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with guard(request, context):
            result = inner_stream(requests(request), context)
            if inspect.isawaitable(result):  # a handler that writes with context.write()
                await result
            else:
                async for item in result:
                    yield item

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        stream_response, request_deserializer=deserializer, response_serializer=handler.response_serializer
    )


class ErrorInterceptor(HandlerInterceptor):
    """The catch-all: an exception escaping a method that is not a gRPC abort is a bug.

    Left alone, grpc.aio would answer UNKNOWN with the exception's text, which can
    hold anything (paths, message text, internals). Instead the client gets INTERNAL
    with only the request id, and the log gets the traceback under that id.
    """

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return guard_handler(handler, _errors_become_statuses)


@contextlib.asynccontextmanager
async def _errors_become_statuses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    try:
        yield
    except grpc.aio.AbortError:
        raise  # the method chose its status already
    except Exception as exc:
        from .call import request_id  # call imports this module: import at use

        # A ConfabError keeps its own status; anything else is logged and becomes INTERNAL.
        await errors.abort(context, exc, request_id())
