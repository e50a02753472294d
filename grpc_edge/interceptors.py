"""Server interceptors: cross-cutting concerns wrapped around every method.

:func:`wrap_handler` rewraps any of the four kinds of gRPC method handlers with
an ``observe`` callback that is told how each call ended, so an interceptor is
written once for unary and streaming methods alike.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from .metrics import RpcMetrics


class CallObserver(Protocol):
    def started(self, method: str) -> None: ...

    def finished(self, method: str, code: str, seconds: float) -> None: ...


def _code_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if error is None:
        return "OK"
    if isinstance(error, Exception) and type(error).__name__ == "CancelledError":
        return "CANCELLED"
    return "UNKNOWN" if not isinstance(error, grpc.aio.AbortError) else "ABORTED"


def wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, observer: CallObserver
) -> grpc.RpcMethodHandler:
    if handler.unary_unary or handler.stream_unary:
        inner: Any = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            observer.started(method)
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                observer.finished(method, _code_of(context, error), time.perf_counter() - started)

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    inner_stream: Any = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        observer.started(method)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            result = inner_stream(request, context)
            if inspect.isawaitable(result):  # a handler that writes with context.write()
                await result
            else:
                async for item in result:
                    yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            observer.finished(method, _code_of(context, error), time.perf_counter() - started)

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        stream_response,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by method and outcome, with its duration, and tracks in-flight calls."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self.metrics = metrics

    def started(self, method: str) -> None:
        self.metrics.in_flight += 1

    def finished(self, method: str, code: str, seconds: float) -> None:
        self.metrics.in_flight -= 1
        self.metrics.record(method, code, seconds)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return wrap_handler(handler, handler_call_details.method, self)
