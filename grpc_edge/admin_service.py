"""``confab.admin.v1.Admin``: what operators see of the live actors, and what they may do.

Everything comes from the running shards (control messages between batches), not
from reading the database behind their back. Actions on a conversation travel the
same path as its messages (reset, force-state and resume are ordered commands), so
they never race a turn. Every action is logged with who asked for it.

Who may do what, when authentication is on (``grpc_edge.auth``):

- a tenant's ``admin`` lists, tails, inspects and acts on its own tenant's
  conversations only; naming another tenant is PERMISSION_DENIED, and lists and
  tails are confined to its tenant;
- an ``operator`` (a role bound to no tenant) may do all that for every tenant, and
  alone sees the cluster (GetCluster) and acts on the whole runtime (ReloadFlows,
  RestartShard).

Errors are raised, not turned into statuses here: the error layer does that once.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import msgpack

from ..actors.messages import Inspection, InspectRequest, Passivated, PassivateRequest, ShardStatistics
from ..protos import admin_pb2 as pb
from ..protos import admin_pb2_grpc as pb_grpc
from ..runtime import VERSION
from ..runtime.engine import Engine
from ..runtime.errors import ConversationNotFound, InvalidArgument
from ..runtime.events import EVENT_TYPES
from ..runtime.model import Content, ConversationKey, ConversationState, InboundMessage, TurnResult
from ..runtime.wire import Command, CommandKind, outcome_from_wire
from . import auth, convert
from .call import note_target
from .call import request_id as current_request_id
from .health import HealthMonitor

log = logging.getLogger(__name__)
DEFAULT_LAST_TURNS = 10
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
SCAN_ROWS = 2000  # stored conversations read per ListConversations call, filters applied after


def _operator() -> str:
    principal = auth.current_principal()
    return principal.subject if principal is not None else "anonymous (authentication is off)"


def _key(tenant_id: str, conversation_id: str) -> ConversationKey:
    """The conversation an action names, once the caller may administer its tenant."""
    key = ConversationKey(
        convert.identifier(tenant_id, "tenant_id", convert.DEFAULT_LIMITS),
        convert.identifier(conversation_id, "conversation_id", convert.DEFAULT_LIMITS),
    )
    note_target(tenant_id, conversation_id)
    auth.authorize_admin_of(key.tenant_id)
    return key


def _audit(action: str, **details: Any) -> None:
    log.warning("admin action %s by %s", action, _operator(), extra={"admin_action": action, **details})


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, engine: Engine, health: HealthMonitor) -> None:
        self.engine = engine
        self.health = health
        # (pid, when, commands) per shard at the previous GetCluster: the rate is measured between calls.
        self._last_counts: dict[int, tuple[int, float, int]] = {}

    async def GetCluster(
        self, request: pb.GetClusterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Cluster:
        auth.require_role(auth.OPERATOR_ROLE)
        stats = self.engine.statistics()
        cluster = pb.Cluster(version=VERSION, shard_restarts=stats.shard_restarts)
        cluster.started_at.CopyFrom(convert.timestamp(stats.started_at))
        now = time.time()
        shard_results = await self.engine.shard_statistics()
        addresses = self.engine.shard_addresses()
        for link, result in zip(stats.links, shard_results, strict=True):
            info = cluster.shards.add(index=link.shard, mailbox_depth=link.queued)
            info.address = addresses[link.shard] if link.shard < len(addresses) else ""
            if isinstance(result, ShardStatistics):
                info.generation, info.pid = result.generation, result.pid
                info.uptime_s = now - result.started_at
                pid, since, commands = self._last_counts.get(link.shard, (result.pid, result.started_at, 0))
                if pid != result.pid:  # a new shard process: count from its start
                    since, commands = result.started_at, 0
                info.messages_per_s = (result.commands - commands) / max(now - since, 1e-3)
                self._last_counts[link.shard] = (result.pid, now, result.commands)
                info.resident_conversations = result.resident_conversations
                info.waiting_on_webhooks = result.waiting_on_webhooks
                info.commands, info.rss_bytes, info.healthy = result.commands, result.rss_bytes, True
            else:
                info.error = str(result)
        good = [r for r in shard_results if isinstance(r, ShardStatistics)]
        cluster.store.path = str(self.engine.config.store_path)
        cluster.store.ok = bool(good) and all(r.store_ok for r in good)
        cluster.store.latency_ms = max((r.store_latency_ms for r in good), default=0.0)
        return cluster

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        tenant_id = auth.admin_tenant_scope(request.tenant_id)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
        after = _decode_token(request.page_token)
        if after is not None and tenant_id and after.tenant_id != tenant_id:
            raise InvalidArgument("page_token is not one this server gave out", field="page_token")
        page = await self.engine.scan_stored(tenant_id, after, SCAN_ROWS)
        now = time.time()
        chosen: list[tuple[ConversationKey, ConversationState]] = []
        last: ConversationKey | None = None
        for tenant_id, conversation_id, packed, _ in page.rows:
            last = ConversationKey(tenant_id, conversation_id)
            state = ConversationState.from_wire(msgpack.unpackb(packed))
            if _wanted(request, state, now):
                chosen.append((last, state))
                if len(chosen) == page_size:
                    break
        resident = await self.engine.resident_among([k for k, _ in chosen])
        if request.resident_only:
            chosen = [(k, st) for k, st in chosen if k in resident]
        response = pb.ListConversationsResponse()
        for key, state in chosen:
            summary = response.conversations.add(
                tenant_id=key.tenant_id,
                conversation_id=key.conversation_id,
                current_state=state.current_state,
                flow_id=state.flow_id,
                flow_version=state.flow_version,
                message_count=state.message_count,
                resident=key in resident,
                in_handoff="handoff" in state.flow_memory,
                shard=self.engine.shard_for(key),
            )
            summary.last_activity.CopyFrom(convert.timestamp(state.last_activity))
        # More may follow when the scan filled up (rows were read up to `last`).
        if (last is not None and len(page.rows) == SCAN_ROWS) or len(chosen) == page_size:
            response.next_page_token = _encode_token(last) if last is not None else ""
        return response

    async def TailEvents(
        self, request: pb.TailEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        tenant_id = auth.admin_tenant_scope(request.tenant_id)
        unknown = set(request.event_types) - set(EVENT_TYPES)
        if unknown:
            raise InvalidArgument(
                f"unknown event types {sorted(unknown)}; known: {list(EVENT_TYPES)}", field="event_types"
            )
        types = set(request.event_types) or set(EVENT_TYPES)
        queue = self.engine.events.subscribe()
        try:
            while True:
                event = await queue.get()
                if event.type not in types:
                    continue
                if tenant_id and event.key.tenant_id != tenant_id:
                    continue
                if request.conversation_id and event.key.conversation_id != request.conversation_id:
                    continue
                out = pb.Event(
                    type=event.type,
                    tenant_id=event.key.tenant_id,
                    conversation_id=event.key.conversation_id,
                    shard=event.shard,
                )
                out.at.CopyFrom(convert.timestamp(event.at))
                convert.fill_struct(out.data, event.data)
                yield out
        finally:
            self.engine.events.unsubscribe(queue)

    async def InspectConversation(
        self, request: pb.InspectConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConversationDetail:
        key = _key(request.tenant_id, request.conversation_id)
        inspection = await self.engine.ask_shard_of(
            key,
            InspectRequest(key.tenant_id, key.conversation_id, request.last_turns or DEFAULT_LAST_TURNS),
            expect=Inspection,
        )
        if not isinstance(inspection, Inspection) or not inspection.exists:
            raise ConversationNotFound(f"conversation {key} not found")
        return _detail(key, self.engine.shard_for(key), inspection)

    async def ResetConversation(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id)
        _audit("reset", conversation=str(key), reason=request.reason)
        result = await self.engine.reset(
            key, request.reason or "operator reset", message_id=current_request_id()
        )
        return _done(f"reset; it was in state {result.previous_state!r}", state=result.state.current_state)

    async def ForceState(
        self, request: pb.ForceStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id)
        if not request.state:
            raise InvalidArgument("state is required", field="state")
        _audit("force_state", conversation=str(key), state=request.state, reason=request.reason)
        outcome = await self.engine.run(
            Command(CommandKind.FORCE_STATE, current_request_id(), key, request.state)
        )
        state: ConversationState = outcome.state  # type: ignore[union-attr]
        return _done(f"now in state {state.current_state!r}", state=state.current_state)

    async def ResumeConversation(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id)
        _audit("resume", conversation=str(key), reason=request.reason)
        resume = InboundMessage(f"operator:{_operator()}", Content(type="system", payload="resume"))
        result = await self.engine.process(key, resume, message_id=current_request_id())
        resumed = "handoff_resumed" in result.actions_performed
        message = "automation resumed" if resumed else "it was not handed over; the message went to its flow"
        return _done(message, state=result.state.current_state, resumed=resumed)

    async def PassivateConversation(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id)
        _audit("passivate", conversation=str(key), reason=request.reason)
        answer = await self.engine.ask_shard_of(
            key, PassivateRequest(key.tenant_id, key.conversation_id), expect=Passivated
        )
        assert isinstance(answer, Passivated)
        return pb.ActionResult(ok=answer.done, message=answer.reason)

    async def ReloadFlows(
        self, request: pb.ReloadFlowsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ActionResult:
        auth.require_role(auth.OPERATOR_ROLE)
        _audit("reload_flows")
        reload = await self.engine.reload_flows()
        result = pb.ActionResult(ok=not reload.failed, message=f"{len(reload.loaded)} flow versions loaded")
        convert.fill_struct(
            result.details, {"loaded": reload.loaded, "skipped": reload.skipped, "failed": reload.failed}
        )
        return result

    async def RestartShard(
        self, request: pb.ShardAction, context: grpc.aio.ServicerContext
    ) -> pb.ActionResult:
        auth.require_role(auth.OPERATOR_ROLE)
        _audit("restart_shard", shard=request.shard, reason=request.reason)
        await self.engine.restart_shard(request.shard)
        return _done(f"shard {request.shard} is being replaced; its conversations come back from the store")


def _wanted(request: pb.ListConversationsRequest, state: ConversationState, now: float) -> bool:
    return (
        (not request.state or state.current_state == request.state)
        and (not request.flow_id or state.flow_id == request.flow_id)
        and (not request.idle_longer_than_s or now - state.last_activity > request.idle_longer_than_s)
        and (not request.in_handoff or "handoff" in state.flow_memory)
    )


def _encode_token(key: ConversationKey) -> str:
    return base64.urlsafe_b64encode(msgpack.packb([key.tenant_id, key.conversation_id])).decode()


def _decode_token(token: str) -> ConversationKey | None:
    if not token:
        return None
    try:
        tenant_id, conversation_id = msgpack.unpackb(base64.urlsafe_b64decode(token.encode()))
        return ConversationKey(str(tenant_id), str(conversation_id))
    except Exception as exc:
        raise InvalidArgument("page_token is not one this server gave out", field="page_token") from exc


def _done(message: str, **details: Any) -> pb.ActionResult:
    result = pb.ActionResult(ok=True, message=message)
    convert.fill_struct(result.details, details)
    return result


def _detail(key: ConversationKey, shard: int, inspection: Inspection) -> pb.ConversationDetail:
    assert inspection.state is not None
    state = ConversationState.from_wire(inspection.state)
    detail = pb.ConversationDetail(
        tenant_id=key.tenant_id,
        conversation_id=key.conversation_id,
        shard=shard,
        resident=inspection.resident,
        mailbox_depth=len(inspection.queued),
        webhook_in_flight=inspection.webhook_in_flight,
    )
    convert.fill_struct(
        detail.state,
        {
            "current_state": state.current_state,
            "flow_id": state.flow_id,
            "flow_version": state.flow_version,
            "previous_states": state.previous_states,
            "slots": state.slots,
            "variables": state.variables,
            "user_profile": state.user_profile,
            "intent_history": state.intent_history,
            "current_intent": state.current_intent,
            "intent_confidence": state.intent_confidence,
            "created_at": state.created_at,
            "last_activity": state.last_activity,
            "message_count": state.message_count,
            "error_count": state.error_count,
            "flow_memory": state.flow_memory,
        },
    )
    for message_id, queued_kind, text in inspection.queued:
        detail.queued.add(message_id=message_id, kind=queued_kind, text=text)
    for seq, message_id, kind, reply, at, said in inspection.turns:
        turn = detail.last_turns.add(
            seq=seq, message_id=message_id, kind=CommandKind(kind).name.lower(), input=said
        )
        turn.at.CopyFrom(convert.timestamp(at))
        outcome = outcome_from_wire(_unpack(reply))
        if isinstance(outcome, TurnResult):
            turn.intent = outcome.state.current_intent
            turn.state_before, turn.state_after = outcome.state_before, outcome.state.current_state
            turn.response = outcome.response.text
            turn.duration_ms = outcome.execution_time_ms
            turn.actions.extend(outcome.actions_performed)
        elif hasattr(outcome, "state"):
            turn.state_after = outcome.state.current_state
    return detail


def _unpack(reply: bytes) -> Any:
    return msgpack.unpackb(reply)
