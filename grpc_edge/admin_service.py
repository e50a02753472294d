"""``confab.admin.v1.Admin``: what operators see of the live actors, and what they may do.

Everything comes from the running shards (control messages between batches), not
from reading the database behind their back. Actions on a conversation travel the
same path as its messages (reset, force-state and resume are ordered commands), so
they never race a turn. Every action is logged: who asked, the tenant and conversation
it acted on, its reason and arguments (``_audit``).

Who may do what, when authentication is on (``grpc_edge.auth``):

- a tenant's ``admin`` lists, tails, inspects and acts on its own tenant's
  conversations only; naming another tenant is PERMISSION_DENIED, and lists and
  tails are confined to its tenant;
- an ``operator`` (a role bound to no tenant) may do all that for every tenant, and
  alone sees the cluster (GetCluster) and acts on the whole runtime (ReloadFlows,
  RestartShard);
- a tenant's ``agent`` (a person answering handed-off conversations) may only send a
  person's message into its own tenant's conversations (SendAgentMessage), as its admin may.

An action that changes a conversation is given the caller's deadline, less the time its
answer needs to come back (``engine_service.action_deadline``): its shard does it within
that, or drops it and says so, and the caller hears which. DEADLINE_EXCEEDED sent by the
server means "not done, and never will be".

Errors are raised, not turned into statuses here: the error layer does that once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from confab.grpc_edge import auth, convert
from confab.grpc_edge.analytics_service import get_analytics
from confab.grpc_edge.call import note_target
from confab.grpc_edge.call import request_id as current_request_id
from confab.grpc_edge.engine_service import action_deadline
from confab.grpc_edge.health import HealthMonitor
from confab.protos import admin_pb2 as pb
from confab.protos import admin_pb2_grpc as pb_grpc
from confab.runtime import VERSION
from confab.runtime.config import LimitsConfig
from confab.runtime.engine import Engine
from confab.runtime.engine.events import TAIL_EVENT_TYPES
from confab.runtime.errors import DeadlineExceeded, InvalidArgument
from confab.runtime.inspection import ConversationFilter, ConversationInspection
from confab.runtime.model import ConversationKey

log = logging.getLogger(__name__)
DEFAULT_LAST_TURNS = 10
DEFAULT_PAGE_SIZE = 50
CLUSTER_WAIT_S = 1.0  # longest GetCluster waits for a shard's figures
AUDIT_ARGUMENT_CHARS = 200  # of one argument (a reason, say) in the audit line's text


def _operator() -> str:
    principal = auth.current_principal()
    return principal.subject if principal is not None else "anonymous (authentication is off)"


def _agent_name() -> str:
    """The name a person's message goes under when the request names none: the caller's key's
    name (a JWT's subject), "agent" with authentication off."""
    principal = auth.current_principal()
    return principal.subject.removeprefix("key:") if principal is not None else "agent"


def _key(tenant_id: str, conversation_id: str, limits: LimitsConfig) -> ConversationKey:
    """The conversation an action names, once the caller may administer its tenant."""
    key = ConversationKey(
        convert.identifier(tenant_id, "tenant_id", limits),
        convert.identifier(conversation_id, "conversation_id", limits),
    )
    note_target(tenant_id, conversation_id)
    auth.authorize_admin_of(key.tenant_id)
    return key


def _audit(action: str, key: ConversationKey | None = None, **arguments: Any) -> None:
    """One WARNING line per action: what, on which tenant's conversation, who asked, and with what.

    ``reload_flows`` and ``restart_shard`` act on the runtime, no conversation. The same is in
    the line's fields (``logging.format: json``) for machines: the action, the operator, the
    tenant and conversation, each argument."""
    operator = _operator()
    target = f" on tenant {key.tenant_id!r} conversation {key.conversation_id!r}" if key is not None else ""
    shown = ", ".join(f"{name}={_shown(value)}" for name, value in arguments.items())
    fields: dict[str, Any] = {"admin_action": action, "operator": operator}
    if key is not None:
        fields |= {"tenant": key.tenant_id, "conversation": key.conversation_id}
    log.warning(
        "admin action %s%s by %s%s",
        action,
        target,
        operator,
        f" ({shown})" if shown else "",
        extra={"fields": fields | arguments},
    )


def _shown(value: Any) -> str:
    """An argument as the audit line shows it: quoted (a newline in a reason cannot start a line of
    its own), and cut short past AUDIT_ARGUMENT_CHARS (the fields keep it whole)."""
    text = repr(value)
    return text if len(text) <= AUDIT_ARGUMENT_CHARS else text[: AUDIT_ARGUMENT_CHARS - 1] + "…"


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, engine: Engine, health: HealthMonitor, *, limits: LimitsConfig | None = None) -> None:
        self.engine = engine
        self.health = health
        # The ids it is given are held to the limits the MCPEngine service holds them to.
        self.limits = limits or convert.DEFAULT_LIMITS
        # (pid, when, commands) per shard at the previous GetCluster: the rate is measured between calls.
        self._last_counts: dict[str, tuple[int, float, int]] = {}

    async def GetCluster(
        self, request: pb.GetClusterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Cluster:
        auth.require_role(auth.OPERATOR_ROLE)
        # Fresh figures from every shard that answers in time; the others are marked, never waited for.
        remaining = context.time_remaining()
        wait = CLUSTER_WAIT_S if remaining is None else max(0.0, min(CLUSTER_WAIT_S, remaining * 0.5))
        view = await self.engine.refresh_cluster(wait)
        cluster = pb.Cluster(
            version=VERSION,
            shard_restarts=view.shard_restarts,
            complete=view.complete,
            this_host=view.this_host,
            held_commands=view.held_commands,
        )
        for host in view.hosts:
            cluster.hosts.add(
                host=host.host,
                state=host.state,
                heartbeat_age_s=host.heartbeat_age_s,
                edge=host.edge,
                pid=host.pid,
                shards=host.shards,
                incarnation=host.incarnation,
                vshards=host.vshards,
            )
        for v, owner in enumerate(view.owners):
            cluster.vshards.add(vshard=v, shard_id=owner.shard, epoch=owner.epoch)
        cluster.started_at.CopyFrom(convert.timestamp(view.started_at))
        now = time.time()
        for shard in view.shards:
            info = cluster.shards.add(
                index=shard.index,
                generation=shard.generation,
                address=shard.address,
                mailbox_depth=shard.queued,
                healthy=shard.responsive,
                error=shard.error,
                last_heard_s=shard.last_heard_s,
                host=shard.host,
                shard_id=shard.shard_id,
                vshards=shard.vshards,
            )
            status = shard.status
            if status is None:
                continue
            for v, epoch in status.held:
                info.held.add(vshard=v, epoch=epoch)
            info.pid = status.pid
            info.uptime_s = now - status.started_at
            counted = shard.shard_id
            pid, since, commands = self._last_counts.get(counted, (status.pid, status.started_at, 0))
            if pid != status.pid:  # a new shard process: count from its start
                since, commands = status.started_at, 0
            info.messages_per_s = (status.commands - commands) / max(now - since, 1e-3)
            self._last_counts[counted] = (status.pid, now, status.commands)
            info.resident_conversations = status.resident_conversations
            info.waiting_on_webhooks = status.waiting_on_webhooks
            info.commands, info.rss_bytes = status.commands, status.rss_bytes
        cluster.store.path = view.store
        cluster.store.ok = view.store_ok
        cluster.store.latency_ms = view.store_latency_ms
        return cluster

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListConversationsResponse:
        tenant_id = convert.identifier(request.tenant_id, "tenant_id", self.limits, required=False)
        wanted = ConversationFilter(
            tenant_id=auth.admin_tenant_scope(tenant_id),
            state=request.state,
            flow_id=request.flow_id,
            idle_longer_than_s=request.idle_longer_than_s,
            in_handoff=request.in_handoff,
            resident_only=request.resident_only,
            waiting_on_webhook=request.waiting_on_webhook,
        )
        page = await self.engine.list_conversations(
            wanted, request.page_token, request.page_size or DEFAULT_PAGE_SIZE, scope=auth.admin_scope()
        )
        response = pb.ListConversationsResponse(next_page_token=page.next_cursor)
        for c in page.conversations:
            summary = response.conversations.add(
                tenant_id=c.key.tenant_id,
                conversation_id=c.key.conversation_id,
                current_state=c.current_state,
                flow_id=c.flow_id,
                flow_version=c.flow_version,
                message_count=c.message_count,
                resident=c.resident,
                in_handoff=c.in_handoff,
                shard=c.shard,
                webhook=c.webhook,
                webhook_waiting_s=c.webhook_waiting_s,
                mailbox=c.mailbox,
            )
            summary.last_activity.CopyFrom(convert.timestamp(c.last_activity))
        return response

    async def TailEvents(
        self, request: pb.TailEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.Event]:
        tenant_id = auth.admin_tenant_scope(
            convert.identifier(request.tenant_id, "tenant_id", self.limits, required=False)
        )
        conversation_id = convert.identifier(
            request.conversation_id, "conversation_id", self.limits, required=False
        )
        unknown = set(request.event_types) - set(TAIL_EVENT_TYPES)
        if unknown:
            raise InvalidArgument(
                f"unknown event types {sorted(unknown)}; known: {list(TAIL_EVENT_TYPES)}", field="event_types"
            )
        types = set(request.event_types) or set(TAIL_EVENT_TYPES)
        queue = self.engine.events.subscribe()
        try:
            while True:
                event = await queue.get()
                if event.type not in types:
                    continue
                if tenant_id and event.key.tenant_id != tenant_id:
                    continue
                if conversation_id and event.key.conversation_id != conversation_id:
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
        self, request: pb.InspectConversationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ConversationDetail:
        key = _key(request.tenant_id, request.conversation_id, self.limits)
        last_turns = request.last_turns or DEFAULT_LAST_TURNS
        return _detail(await self.engine.inspect(key, last_turns, scope=auth.admin_scope()))

    async def ResetConversation(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id, self.limits)
        _audit("reset", key, reason=request.reason)
        with _not_done("reset"):
            result = await self.engine.reset(
                key,
                request.reason or "operator reset",
                message_id=current_request_id(),
                deadline=action_deadline(context),
                by_operator=True,
            )
        return _done(f"reset; it was in state {result.previous_state!r}", state=result.state.current_state)

    async def ForceState(
        self, request: pb.ForceStateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id, self.limits)
        if not request.state:
            raise InvalidArgument("state is required", field="state")
        _audit("force_state", key, state=request.state, reason=request.reason)
        with _not_done("force_state"):
            state = await self.engine.force_state(
                key, request.state, message_id=current_request_id(), deadline=action_deadline(context)
            )
        return _done(f"now in state {state.current_state!r}", state=state.current_state)

    async def ResumeConversation(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id, self.limits)
        _audit("resume", key, reason=request.reason)
        with _not_done("resume"):
            result = await self.engine.resume(
                key, _operator(), message_id=current_request_id(), deadline=action_deadline(context)
            )
        resumed = "handoff_resumed" in result.actions_performed
        message = "automation resumed" if resumed else "it was not handed over; the message went to its flow"
        return _done(message, state=result.state.current_state, resumed=resumed)

    async def PassivateConversation(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id, self.limits)
        _audit("passivate", key, reason=request.reason)
        with _not_done("passivate"):
            answer = await self.engine.passivate(
                key, scope=auth.admin_scope(), deadline=action_deadline(context)
            )
        return pb.ActionResult(ok=answer.done, message=answer.reason)

    async def AbandonWebhook(
        self, request: pb.ConversationAction, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        key = _key(request.tenant_id, request.conversation_id, self.limits)
        _audit("abandon_webhook", key, reason=request.reason)
        with _not_done("abandon_webhook"):
            abandoned = await self.engine.abandon_webhook(
                key,
                _operator(),
                request.reason,
                scope=auth.admin_scope(),
                deadline=action_deadline(context),
            )
        result = pb.ActionResult(ok=abandoned.done, message=abandoned.message)
        if abandoned.done:
            convert.fill_struct(
                result.details,
                {"webhook": abandoned.webhook, "state": abandoned.state, "actions": list(abandoned.actions)},
            )
        return result

    async def SendAgentMessage(
        self, request: pb.AgentMessage, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        key = ConversationKey(
            convert.identifier(request.tenant_id, "tenant_id", self.limits),
            convert.identifier(request.conversation_id, "conversation_id", self.limits),
        )
        note_target(key.tenant_id, key.conversation_id)
        auth.authorize_agent_of(key.tenant_id)
        if not request.text.strip():
            raise InvalidArgument("text is required: what the person says", field="text")
        if len(request.text) > self.limits.max_text_chars:
            raise InvalidArgument(
                f"text is longer than {self.limits.max_text_chars} characters", field="text"
            )
        agent = convert.identifier(request.agent, "agent", self.limits, required=False) or _agent_name()
        request_id = convert.identifier(request.request_id, "request_id", self.limits, required=False)
        _audit("agent_message", key, agent=agent, request_id=request_id)
        message_id = request_id or current_request_id()
        with _not_done("agent_message"):
            result = await self.engine.agent_message(
                key,
                agent,
                request.text,
                message_id=message_id,
                idempotency_key=request_id,
                deadline=action_deadline(context),
            )
        message = "already sent; original answer" if result.replayed else "sent"
        return _done(message, state=result.state.current_state, message_id=message_id, agent=agent)

    async def ReloadFlows(
        self, request: pb.ReloadFlowsRequest, context: grpc.aio.ServicerContext[Any, Any]
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
        self, request: pb.ShardAction, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ActionResult:
        auth.require_role(auth.OPERATOR_ROLE)
        _audit("restart_shard", shard=request.shard, host=request.host, reason=request.reason)
        await self.engine.restart_shard(request.shard, request.host)
        return _done(f"shard {request.shard} is being replaced; its conversations come back from the store")

    async def GetAnalytics(
        self, request: pb.GetAnalyticsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AnalyticsReport:
        return await get_analytics(self.engine, request, self.limits)


@contextlib.contextmanager
def _not_done(action: str) -> Iterator[None]:
    """DEADLINE_EXCEEDED raised in here comes from a command or query dropped before it ran (by
    the router, the link or the shard: never one that ran): the answer says it was not done."""
    try:
        yield
    except DeadlineExceeded as exc:
        said = exc.message if "nothing was changed" in exc.message else f"{exc.message}; nothing was changed"
        raise DeadlineExceeded(f"{action} not done: {said.removeprefix('not done: ')}") from exc


def _done(message: str, **details: Any) -> pb.ActionResult:
    result = pb.ActionResult(ok=True, message=message)
    convert.fill_struct(result.details, details)
    return result


def _detail(inspection: ConversationInspection) -> pb.ConversationDetail:
    state = inspection.state
    detail = pb.ConversationDetail(
        tenant_id=inspection.key.tenant_id,
        conversation_id=inspection.key.conversation_id,
        shard=inspection.shard,
        resident=inspection.resident,
        mailbox_depth=len(inspection.queued),
        webhook_in_flight=inspection.webhook_in_flight,
        webhook_waiting_s=inspection.webhook_waiting_s,
        first_turn_pending=inspection.first_turn_pending,
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
    for queued in inspection.queued:
        detail.queued.add(message_id=queued.message_id, kind=queued.kind, text=queued.text)
    for t in inspection.turns:
        turn = detail.last_turns.add(
            seq=t.seq,
            message_id=t.message_id,
            kind=t.kind,
            input=t.input,
            intent=t.intent,
            state_before=t.state_before,
            state_after=t.state_after,
            response=t.response,
            duration_ms=t.duration_ms,
        )
        turn.actions.extend(t.actions)
        turn.at.CopyFrom(convert.timestamp(t.at))
    return detail
