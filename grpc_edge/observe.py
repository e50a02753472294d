"""The pure observers of every call, as one guard: its CallInfo, its metrics, its access line.

They sit outermost (inside tracing, when that is on), so every call is seen, the
ones that the layers below reject included (undecodable, unauthenticated, over a
limit). One guard instead of three keeps the per-call cost of observing low.

Everything the access line needs from gRPC's side of the call (the peer) is read
when the call *starts*. Asking a servicer context for its peer after the client
cancelled has crashed the process with a segfault in grpcio 1.85 (cygrpc turns the
peer string into bytes without checking it for NULL), so nothing here touches the
native call once it may have ended: the status code and details that
``status_code_name`` reads are plain Python state of the context.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from .access_log import AccessLog, trace_id
from .call import CallInfo, enter_call
from .interceptors import HandlerInterceptor, guard_handler, status_code_name
from .metrics import RpcMetrics

log = logging.getLogger(__name__)


class ObserverInterceptor(HandlerInterceptor):
    def __init__(self, metrics: RpcMetrics, access_log: AccessLog) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def guard(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> contextlib.AbstractAsyncContextManager[None]:
            return self._observed(method, request, context)

        return guard_handler(handler, guard)

    @contextlib.asynccontextmanager
    async def _observed(
        self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        call = CallInfo(method, peer=_peer(context))
        enter_call(call)
        metrics = self.metrics
        metrics.in_flight += 1
        # A tracing layer outside this one has its span current now and at the end.
        trace_at_start = trace_id() if self.access_log.enabled() else ""
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds = time.perf_counter() - call.started
            code = status_code_name(context, error)
            metrics.in_flight -= 1
            metrics.record(method, code, seconds)
            if self.access_log.enabled():
                self.access_log.write(call, code, seconds, trace_id() or trace_at_start, request)
            enter_call(None)


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    try:
        return str(context.peer())
    except Exception:  # a context without a peer (tests' fakes); the call matters more
        return ""
