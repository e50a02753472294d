"""``mcp.engine.v2.MCPEngine``: the conversation API.

ProcessMessage (and each message of a batch) is not converted here: the edge parses the
request (upb, C speed) to read what it authenticates, authorises, limits and routes by,
and sends the serialized request on; its shard converts it, runs the turn and answers
with the serialized response, which goes back as it is (``raw_wire``: no (de)serializer),
this call's ``metadata`` appended. The other methods validate and convert their request
(``convert``), ask the engine, and convert the answer back. Errors are raised, and
become gRPC statuses in one place (the call guards, ``grpc_edge.guards``); an item of
a batch or a message of a stream fails alone, in its own status.

Idempotency: a client that sets ``metadata.request_id`` on a message (a unary call,
a batch item, a stream message) may send it again, for instance when a retry policy
repeats a call that timed out: within ``engine.idempotency_window_s`` the repeat gets
the reply the first one got (status message and ``performance_metrics.cache_status``
say so) and is not applied again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from confab.grpc_edge import auth, convert, errors
from confab.grpc_edge.call import note_target, note_text
from confab.grpc_edge.call import request_id as current_request_id
from confab.grpc_edge.guards import raw_wire
from confab.grpc_edge.health import HealthMonitor
from confab.grpc_edge.limits import TenantRateLimiter
from confab.grpc_edge.metrics_service import MetricsReport
from confab.grpc_edge.streams import ConversationStream, StreamSettings
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime import VERSION
from confab.runtime.config import LimitsConfig
from confab.runtime.engine import Engine, WireReply, WireTurnRequest
from confab.runtime.errors import ConfabError, InvalidArgument
from confab.runtime.model import ConversationKey, new_id

DEFAULT_BATCH_CONCURRENCY = 16


def authorized(key: ConversationKey) -> ConversationKey:
    """``key`` once the caller may act on its tenant; noted on the call for logs and traces."""
    note_target(key.tenant_id, key.conversation_id)
    auth.authorize_tenant(key.tenant_id)
    return key


def finish(response: Any, message: str, request_id: str, started: float) -> None:
    """The parts every answer shares: success, timings, metadata."""
    response.status.success = True
    response.status.message = message
    response.performance_metrics.execution_time_ms = int((time.perf_counter() - started) * 1000)
    convert.metadata(response.metadata, request_id, started, VERSION)


def deadline_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


# An action (a reset, an Admin API action) must be done or dropped while its caller still
# listens: its shard is given the caller's deadline less this share of it (at least the
# minimum, at most the maximum), the time the answer needs to come back and be sent.
ANSWER_MARGIN_SHARE, ANSWER_MARGIN_MIN_S, ANSWER_MARGIN_MAX_S = 0.1, 0.1, 1.0
ACTION_DEADLINE_S = 30.0  # an action whose call has no deadline gets this one


def action_deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float:
    """The ``time.monotonic()`` by which an action must have been done or dropped at its shard, so
    that the answer (done, or DEADLINE_EXCEEDED: not done) reaches the caller before its deadline:
    a caller is never told an action failed that is done afterwards."""
    remaining = context.time_remaining()
    if remaining is None:
        remaining = ACTION_DEADLINE_S
    margin = min(ANSWER_MARGIN_MAX_S, max(ANSWER_MARGIN_MIN_S, remaining * ANSWER_MARGIN_SHARE))
    return time.monotonic() + remaining - margin


class EngineService(pb_grpc.MCPEngineServicer):
    def __init__(
        self,
        engine: Engine,
        health: HealthMonitor,
        metrics: MetricsReport,
        *,
        max_batch_messages: int,
        stream: StreamSettings,
        limits: LimitsConfig | None = None,
        rate_limiter: TenantRateLimiter | None = None,
    ) -> None:
        self.engine = engine
        self.health = health
        self.metrics = metrics
        self.max_batch_messages = max_batch_messages
        self.stream = stream
        self.limits = limits or convert.DEFAULT_LIMITS
        self.rate_limiter = rate_limiter or TenantRateLimiter(0.0, 1)  # rate 0: off

    @raw_wire
    async def ProcessMessage(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        started, request_id = time.perf_counter(), current_request_id()
        message = convert.parse_request(request)
        note_text(message.content.text)
        turn = convert.wire_turn(message, request, request_id, limits=self.limits)
        authorized(turn.key)
        # Charged once authorized: nobody can spend another tenant's tokens.
        self.rate_limiter.charge(turn.key.tenant_id)
        reply = await self.engine.process_wire(turn, deadline=deadline_of(context))
        return reply.response + convert.metadata_tail(request_id, started, VERSION)

    async def GetConversationState(
        self, request: pb.GetConversationStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetConversationStateResponse:
        started, request_id = time.perf_counter(), current_request_id()
        key = authorized(
            convert.conversation_key(request.tenant_context, request.conversation_id, limits=self.limits)
        )
        state = await self.engine.get_state(key, deadline=deadline_of(context))
        response = pb.GetConversationStateResponse()
        convert.conversation_state(state, response.conversation_state)
        finish(response, "found", request_id, started)
        return response

    async def ResetConversation(
        self, request: pb.ResetConversationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResetConversationResponse:
        started, request_id = time.perf_counter(), current_request_id()
        key = authorized(
            convert.conversation_key(request.tenant_context, request.conversation_id, limits=self.limits)
        )
        result = await self.engine.reset(
            key, request.reason, message_id=request_id, deadline=action_deadline(context)
        )
        response = pb.ResetConversationResponse(
            conversation_id=key.conversation_id, previous_state=result.previous_state
        )
        finish(response, "reset", request_id, started)
        return response

    async def BatchProcessMessages(
        self, request: pb.BatchProcessMessagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BatchProcessMessagesResponse:
        started, request_id = time.perf_counter(), current_request_id()
        if len(request.messages) > self.max_batch_messages:
            raise InvalidArgument(
                f"a batch holds at most {self.max_batch_messages} messages", field="messages"
            )
        if request.max_concurrency < 0:
            raise InvalidArgument("max_concurrency must not be negative", field="max_concurrency")
        if request.tenant_context.tenant_id:  # a batch for another tenant is refused whole
            auth.authorize_tenant(request.tenant_context.tenant_id)
        batch = _Batch(request, started, deadline_of(context), self.limits)
        # Every valid item costs its tenant one token; a batch that does not fit is refused whole.
        self.rate_limiter.charge_all(Counter(turn.key.tenant_id for _, turn in batch.turns))
        if request.parallel_processing:
            await batch.run_parallel(self.engine, request.max_concurrency or DEFAULT_BATCH_CONCURRENCY)
        else:
            await batch.run_sequential(self.engine)
        response = batch.response
        response.successful_count = sum(1 for r in batch.responses if r.status.success)
        response.failed_count = len(batch.responses) - response.successful_count
        response.status.success = response.failed_count == 0
        response.status.message = f"{response.successful_count} processed, {response.failed_count} failed"
        response.performance_metrics.execution_time_ms = int((time.perf_counter() - started) * 1000)
        convert.metadata(response.metadata, request_id, started, VERSION)
        return response

    async def StreamConversation(
        self,
        request_iterator: AsyncIterator[pb.ConversationStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ConversationStreamResponse]:
        stream = ConversationStream(
            self.engine, request_iterator, self.stream, limits=self.limits, rate_limiter=self.rate_limiter
        )
        async for response in stream.responses():
            yield response

    async def HealthCheck(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HealthCheckResponse:
        report = self.health.latest
        response = pb.HealthCheckResponse(
            status=report.status, service_name="mcp.engine.v2.MCPEngine", version=VERSION
        )
        response.timestamp.CopyFrom(convert.timestamp(report.checked_at))
        convert.fill_struct(response.details, report.summary())
        return response

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetMetricsResponse:
        started, request_id = time.perf_counter(), current_request_id()
        metrics = await self.metrics.collect(request)
        response = pb.GetMetricsResponse(metrics=metrics)
        finish(response, f"{len(metrics)} metrics", request_id, started)
        return response


class _Batch:
    """One BatchProcessMessages call: ``responses[i]`` always answers ``messages[i]``."""

    def __init__(
        self,
        request: pb.BatchProcessMessagesRequest,
        started: float,
        deadline: float | None,
        limits: LimitsConfig,
    ) -> None:
        self.started = started
        self.deadline = deadline
        # The answer is built in place: responses[i] is the reply's own i-th item (no copies).
        self.response = pb.BatchProcessMessagesResponse()
        self.responses = [self.response.responses.add() for _ in request.messages]
        self.turns: list[tuple[int, WireTurnRequest]] = []
        for i, item in enumerate(request.messages):
            message_id = new_id()
            if not item.tenant_context.tenant_id:  # an item inherits the batch's tenant
                item.tenant_context.tenant_id = request.tenant_context.tenant_id
            try:
                # Sent on serialized (upb, C speed): its shard reads what the edge does not.
                data = item.SerializeToString()
                turn = convert.wire_turn(item, data, message_id, f"messages[{i}].", limits)
                auth.authorize_tenant(turn.key.tenant_id)
            except ConfabError as exc:
                self._fail(i, item.conversation_id, exc, message_id)
                continue
            self.turns.append((i, turn))

    async def run_parallel(self, engine: Engine, concurrency: int) -> None:
        # One group per conversation: its messages are submitted together, in request
        # order, so they run in that order; groups run concurrently.
        groups: dict[ConversationKey, list[tuple[int, WireTurnRequest]]] = {}
        for i, turn in self.turns:
            groups.setdefault(turn.key, []).append((i, turn))
        limit = asyncio.Semaphore(concurrency)

        async def run_group(group: list[tuple[int, WireTurnRequest]]) -> None:
            async with limit:
                await self._answer_group(engine, group)

        await asyncio.gather(*(run_group(g) for g in groups.values()))

    async def run_sequential(self, engine: Engine) -> None:
        for item in self.turns:
            await self._answer_group(engine, [item])

    async def _answer_group(self, engine: Engine, group: list[tuple[int, WireTurnRequest]]) -> None:
        try:
            futures = engine.process_many([turn for _, turn in group], self.deadline)
        except ConfabError as exc:
            for i, turn in group:
                self._fail(i, turn.key.conversation_id, exc, turn.message_id)
            return
        outcomes: list[Any] = await asyncio.gather(*futures, return_exceptions=True)
        for (i, turn), outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, WireReply):
                # The shard's serialized response, parsed in place (upb), then this item's metadata.
                response = self.responses[i]
                response.MergeFromString(outcome.response)
                convert.metadata(response.metadata, turn.message_id, self.started, VERSION)
            else:
                self._fail(i, turn.key.conversation_id, outcome, turn.message_id)

    def _fail(self, i: int, conversation_id: str, error: BaseException, message_id: str) -> None:
        convert.error_response(
            conversation_id,
            errors.as_confab_error(error, message_id),
            message_id,
            self.started,
            VERSION,
            out=self.responses[i],
        )
