"""The Admin API calls the shell makes, one method per RPC (``confab.admin.v1.Admin``).

Each builds its request from plain values and returns the server's answer as it came;
a refusal is the ``grpc.RpcError`` the call raised. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.tools.connection import Metadata

CALL_TIMEOUT_S = 15.0  # unary calls; restart-shard and reload answer after the work is done

Answer = TypeVar("Answer", bound=Message)


class EventStream(Protocol):
    """A TailEvents call: its events as they come, and a way to stop them."""

    def __iter__(self) -> Iterator[admin.Event]: ...

    def cancel(self) -> bool: ...


class AdminVerbs:
    def __init__(self, channel: grpc.Channel, metadata: Metadata = ()) -> None:
        self.stub = admin_grpc.AdminStub(channel)
        self.metadata = metadata

    def _ask(self, method: Callable[..., Any], request: Message, answer: type[Answer]) -> Answer:
        """One unary call; its answer, checked to be of the type the schema says."""
        reply = method(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)
        if not isinstance(reply, answer):
            raise TypeError(f"expected a {answer.__name__}, got {type(reply).__name__}")
        return reply

    def cluster(self) -> admin.Cluster:
        return self._ask(self.stub.GetCluster, admin.GetClusterRequest(), admin.Cluster)

    def list_conversations(self, request: admin.ListConversationsRequest) -> admin.ListConversationsResponse:
        return self._ask(self.stub.ListConversations, request, admin.ListConversationsResponse)

    def inspect(self, tenant: str, conversation: str, last_turns: int) -> admin.ConversationDetail:
        request = admin.InspectConversationRequest(
            tenant_id=tenant, conversation_id=conversation, last_turns=last_turns
        )
        return self._ask(self.stub.InspectConversation, request, admin.ConversationDetail)

    def tail(self, tenant: str, conversation: str, event_types: Sequence[str]) -> EventStream:
        request = admin.TailEventsRequest(
            tenant_id=tenant, conversation_id=conversation, event_types=list(event_types)
        )
        # No deadline: a tail runs until the operator stops it.
        stream: EventStream = self.stub.TailEvents(request, metadata=self.metadata)
        return stream

    def reset(self, tenant: str, conversation: str, reason: str) -> admin.ActionResult:
        request = admin.ConversationAction(tenant_id=tenant, conversation_id=conversation, reason=reason)
        return self._ask(self.stub.ResetConversation, request, admin.ActionResult)

    def force_state(self, tenant: str, conversation: str, state: str, reason: str) -> admin.ActionResult:
        request = admin.ForceStateRequest(
            tenant_id=tenant, conversation_id=conversation, state=state, reason=reason
        )
        return self._ask(self.stub.ForceState, request, admin.ActionResult)

    def resume(self, tenant: str, conversation: str, reason: str) -> admin.ActionResult:
        request = admin.ConversationAction(tenant_id=tenant, conversation_id=conversation, reason=reason)
        return self._ask(self.stub.ResumeConversation, request, admin.ActionResult)

    def passivate(self, tenant: str, conversation: str, reason: str) -> admin.ActionResult:
        request = admin.ConversationAction(tenant_id=tenant, conversation_id=conversation, reason=reason)
        return self._ask(self.stub.PassivateConversation, request, admin.ActionResult)

    def abandon_webhook(self, tenant: str, conversation: str, reason: str) -> admin.ActionResult:
        request = admin.ConversationAction(tenant_id=tenant, conversation_id=conversation, reason=reason)
        return self._ask(self.stub.AbandonWebhook, request, admin.ActionResult)

    def reload_flows(self) -> admin.ActionResult:
        return self._ask(self.stub.ReloadFlows, admin.ReloadFlowsRequest(), admin.ActionResult)

    def restart_shard(self, shard: int, reason: str) -> admin.ActionResult:
        request = admin.ShardAction(shard=shard, reason=reason)
        return self._ask(self.stub.RestartShard, request, admin.ActionResult)
