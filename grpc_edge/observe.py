"""The pure observer of every call: its metrics and its access line, as one guard.

It is the outermost guard, so every call is seen, the ones the guards inside it
refuse included (undecodable, unauthenticated, over a limit). Everything the access
line needs from gRPC's side of the call (the peer) is read when the call starts
(``guards``); the status code read at the end is the context's own Python state.
"""

from __future__ import annotations

import time
from typing import Any

from confab.grpc_edge.access_log import AccessLog, trace_id
from confab.grpc_edge.call import CallInfo
from confab.grpc_edge.guards import CallGuard, Context, status_code_name
from confab.grpc_edge.metrics import RpcMetrics


class ObserverGuard(CallGuard):
    def __init__(self, metrics: RpcMetrics, access_log: AccessLog, *, traced: bool = True) -> None:
        self.metrics = metrics
        self.access_log = access_log
        # False when tracing is off (no span interceptor): no span is ever current then, and
        # asking OpenTelemetry which one is, twice per call, is not free.
        self.traced = traced

    def enter(self, call: CallInfo, request: Any, context: Context) -> None:
        self.metrics.in_flight += 1
        if self.access_log.enabled():
            # A tracing layer outside the guards has its span current now and at the end.
            if self.traced:
                call.trace_id = trace_id()
            if self.access_log.log_message_text:
                call.text = getattr(getattr(request, "content", None), "text", "")

    def exit(self, call: CallInfo, error: BaseException | None, context: Context) -> None:
        seconds = time.perf_counter() - call.started
        code = status_code_name(context, error)
        self.metrics.in_flight -= 1
        self.metrics.record(call.method, code, seconds)
        if self.access_log.enabled():
            trace = (trace_id() or call.trace_id) if self.traced else ""
            self.access_log.write(call, code, seconds, trace)
