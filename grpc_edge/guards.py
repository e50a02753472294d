"""What every call goes through, applied once per method: the edge's call guards.

Each concern that applies to every call (observing it, refusing undecodable
requests, authenticating, limits) is a :class:`CallGuard`: told when a call starts
(it may refuse it by raising a ``ConfabError``) and when it ends. Errors are turned
into gRPC statuses in one place, here: whatever a guard or a service raises (a
service simply raises) becomes its status (``errors.abort``), and a bug becomes
INTERNAL with only the request id.

Guards are applied when a service is registered, not per call: a
:class:`GuardedRegistry` is what the generated ``add_*Servicer_to_server`` functions
are given; it wraps each method handler once and registers the wrapped one on the
real server. gRPC's server interceptors, by contrast, are awaited on every call and
each rebuilds the handler; five of them cost about 280 µs of a single core per call.

Order, outermost first (a guard sees the calls the ones inside it refuse): observe
(CallInfo, metrics, access line), decode, authenticate, limits.

A method marked :func:`raw_wire` is given its request as it arrived (the serialized
protobuf) and returns its response serialized: gRPC's (de)serializers are left out for
it, and the service and method names, hence the wire API, stay as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeAlias, TypeVar

import grpc

from confab.grpc_edge import errors
from confab.grpc_edge.call import CallInfo, enter_call

Context = grpc.aio.ServicerContext[Any, Any]
# A method handler of any service: the guards serve every method, whatever its messages.
# Quoted: grpc's RpcMethodHandler is generic in its type stubs only, not at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class CallGuard:
    """A concern around every call. Each hook does nothing unless a guard overrides it."""

    def covers(self, method: str, handler: Handler) -> bool:
        """Whether this guard applies to ``method`` at all (decided once, at registration)."""
        return True

    def adapt(self, handler: Handler) -> Handler:
        """The handler this guard needs (say, another request deserializer), at registration."""
        return handler

    def requests(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The request stream of a client-streaming call, as the method will read it."""
        return requests

    def enter(self, call: CallInfo, request: Any, context: Context) -> None:
        """The call starts; raise a ConfabError to refuse it."""

    def exit(self, call: CallInfo, error: BaseException | None, context: Context) -> None:
        """The call ended (``error``: what ended it, None for success). Only if ``enter`` returned."""


RAW_WIRE = "_confab_raw_wire"
_Method = TypeVar("_Method", bound=Callable[..., Any])


def raw_wire(method: _Method) -> _Method:
    """Mark a service method that takes its request serialized and returns its response
    serialized (bytes both ways): the edge forwards what it does not read, as it came."""
    setattr(method, RAW_WIRE, True)
    return method


def _behavior(handler: Handler) -> Any:
    return handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream


def status_code_name(context: Context, error: BaseException | None) -> str:
    """How a call ended, as a gRPC status code name, from its context and what it raised.

    Reads only the context's own Python state: the native call may be gone by now.
    """
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        # gRPC cancels the method's task when the deadline passes: the client saw DEADLINE_EXCEEDED.
        return "DEADLINE_EXCEEDED" if errors.past_deadline(context) else "CANCELLED"
    return "UNKNOWN" if not isinstance(error, grpc.aio.AbortError) else "ABORTED"


def _peer(context: Context) -> str:
    # Read when the call starts: after a client cancelled, asking crashed grpcio 1.85 (cygrpc
    # turns the peer string into bytes without checking it for NULL).
    try:
        return str(context.peer())
    except Exception:  # a context without a peer (tests' fakes): the call matters more
        return ""


def handler_like(
    handler: Handler,
    behavior: Callable[..., Any],
    request_deserializer: Callable[[bytes], Any] | None,
    *,
    raw: bool = False,
) -> Handler:
    """A handler of ``handler``'s kind (which sides stream) and serializer, with ``behavior``;
    ``raw``: without a response serializer (the behaviour returns bytes)."""
    if handler.request_streaming:
        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler
        )
    else:
        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
    return factory(
        behavior,
        request_deserializer=request_deserializer,
        response_serializer=None if raw else handler.response_serializer,
    )


class _GuardedCall:
    """One call through its guards, around the method's own work (``async with``), for unary and
    streaming methods alike: the guards are entered first (:meth:`enter`), what the method or a
    guard raises becomes the call's status, and the guards entered are told the call ended."""

    __slots__ = ("active", "call", "context", "entered")

    def __init__(self, call: CallInfo, context: Context, active: tuple[CallGuard, ...]) -> None:
        self.call = call
        self.context = context
        self.active = active
        self.entered = 0

    def enter(self, request: Any) -> None:
        for guard in self.active:
            guard.enter(self.call, request, self.context)
            self.entered += 1

    async def __aenter__(self) -> _GuardedCall:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
                await errors.abort(self.context, error, self.call.request_id)
                error = None  # the status is set: the call ends as the context says
                return True
            return False
        except BaseException as exc:
            error = exc
            raise
        finally:
            for guard in reversed(self.active[: self.entered]):
                guard.exit(self.call, error, self.context)
            enter_call(None)


def guarded(method: str, handler: Handler, guards: Iterable[CallGuard]) -> Handler:
    """``handler`` with every call run through the ``guards`` that cover ``method``."""
    raw = bool(getattr(_behavior(handler), RAW_WIRE, False))
    if raw:  # bytes in, bytes out: no (de)serializer, before any guard adapts it
        handler = handler_like(handler, _behavior(handler), None, raw=True)
    active = tuple(g for g in guards if g.covers(method, handler))
    for guard in reversed(active):
        handler = guard.adapt(handler)
    client_streams = bool(handler.stream_unary or handler.stream_stream)

    def start(request: Any, context: Context) -> tuple[_GuardedCall, Any]:
        call = CallInfo(method, peer=_peer(context))
        enter_call(call)
        if client_streams:
            for guard in reversed(active):
                request = guard.requests(request)
        return _GuardedCall(call, context, active), request

    behavior: Callable[..., Any]
    if handler.unary_unary or handler.stream_unary:
        inner: Any = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: Context) -> Any:
            guarded_call, request = start(request, context)
            async with guarded_call:
                guarded_call.enter(request)
                return await inner(request, context)

        behavior = unary
    else:
        inner_stream: Any = handler.unary_stream or handler.stream_stream

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            guarded_call, request = start(request, context)
            async with guarded_call:
                guarded_call.enter(request)
                result = inner_stream(request, context)
                if asyncio.iscoroutine(result):  # a handler that writes with context.write()
                    await result
                else:
                    async for item in result:
                        yield item

        behavior = stream
    return handler_like(handler, behavior, handler.request_deserializer, raw=raw)


class GuardedRegistry:
    """Stands in for the server when services are added: each method is guarded once, then registered.

    The generated ``add_*Servicer_to_server`` functions register every service twice
    (as a generic handler and as registered methods, gRPC's faster lookup); the
    registered form is the one taken, and both are passed on, guarded.
    """

    def __init__(self, server: grpc.aio.Server, guards: Iterable[CallGuard]) -> None:
        self.server = server
        self.guards = tuple(guards)
        self.services: list[str] = []

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        wrapped = {name: guarded(f"/{service}/{name}", h, self.guards) for name, h in handlers.items()}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self.server.add_registered_method_handlers(service, wrapped)
        self.services.append(service)

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        for handler in handlers:
            if type(handler).__name__ != "DictionaryGenericHandler":
                # Only a service that also registers its methods can be guarded method by method.
                raise TypeError(f"{handler!r} cannot be guarded: register its methods instead")
