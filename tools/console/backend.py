"""The console's calls to the server: the Admin API and GetMetrics over one grpc.aio channel.

The console holds no credential of its own: every call carries the signed-in person's
credential (:class:`Credential`), so the server applies exactly that key's roles and
tenant. A refusal is a :class:`CallFailed` with the status name and the server's words;
UNIMPLEMENTED (an RPC this server does not serve yet) is its subclass :class:`NotAvailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.tools.connection import API_KEY_HEADER, AUTHORIZATION_HEADER, Metadata

CALL_TIMEOUT_S = 10.0
ENRICH_CONCURRENCY = 8  # InspectConversation calls at once when a listing lacks the webhook fields

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Credential:
    """What the person typed at the login page, as the metadata every call carries."""

    kind: str  # "api_key" | "token"
    secret: str

    @property
    def metadata(self) -> Metadata:
        if not self.secret:
            return ()
        if self.kind == "token":
            return ((AUTHORIZATION_HEADER, f"Bearer {self.secret}"),)
        return ((API_KEY_HEADER, self.secret),)


class CallFailed(Exception):
    """The server refused a call, or could not be reached: ``code`` is the status name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}" if details else code)
        self.code = code
        self.details = details


class NotAvailable(CallFailed):
    """UNIMPLEMENTED: this server does not serve the RPC (an older or partial build)."""


def failure(error: grpc.RpcError) -> CallFailed:
    code: grpc.StatusCode = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotAvailable(code.name, details)
    return CallFailed(code.name, details)


async def _call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except grpc.RpcError as exc:
        raise failure(exc) from None


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def has_webhook_fields(summary: admin.ConversationSummary) -> bool:
    return bool(summary.webhook or summary.webhook_waiting_s or summary.mailbox)


@dataclass(slots=True)
class Enriched:
    """A listed conversation with what only InspectConversation says on a server that does not
    fill ConversationSummary's webhook and mailbox fields yet."""

    summary: admin.ConversationSummary
    webhook: str = ""
    webhook_waiting_s: float = 0.0
    mailbox: int = 0


class Backend:
    """One channel to the server, shared by every session; the credential is per call."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.admin: Any = admin_grpc.AdminStub(channel)
        self.engine: Any = pb_grpc.MCPEngineStub(channel)
        self.health: Any = health_pb2_grpc.HealthStub(channel)
        # Whether the server applies ListConversationsRequest.waiting_on_webhook and fills the
        # summaries' webhook fields: None until a listing shows it, then (answer, when learned).
        self._filter_known: tuple[bool, float] | None = None

    # Who is this --------------------------------------------------------------

    async def probe(self, who: Credential) -> tuple[str, str]:
        """(role, tenant) of a credential the server accepts for the Admin API; CallFailed if not.

        The role is "operator" when GetCluster answers, else "admin"; an admin's tenant is
        read from its own listing ("" while it has no conversation yet)."""
        listing = await self.list_page(who, admin.ListConversationsRequest(page_size=1))
        try:
            await self.cluster(who)
        except CallFailed as exc:
            if exc.code != "PERMISSION_DENIED":
                raise
            tenant = listing.conversations[0].tenant_id if listing.conversations else ""
            return "admin", tenant
        return "operator", ""

    # Reads ----------------------------------------------------------------------

    async def cluster(self, who: Credential) -> admin.Cluster:
        answer: admin.Cluster = await _call(
            self.admin.GetCluster(admin.GetClusterRequest(), metadata=who.metadata, timeout=CALL_TIMEOUT_S)
        )
        return answer

    async def serving(self) -> str:
        """The standard health check of the server (open to anyone): SERVING, NOT_SERVING..."""
        answer = await _call(self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5.0))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

    async def metrics(
        self, who: Credential, start: float, end: float, granularity: str
    ) -> pb.GetMetricsResponse:
        request = pb.GetMetricsRequest(
            metric_names=["rpc.requests", "rpc.latency.p99_ms", "rpc.in_flight"],
            start_time=timestamp(start),
            end_time=timestamp(end),
            granularity=granularity,
        )
        answer: pb.GetMetricsResponse = await _call(
            self.engine.GetMetrics(request, metadata=who.metadata, timeout=CALL_TIMEOUT_S)
        )
        return answer

    async def list_page(
        self, who: Credential, request: admin.ListConversationsRequest
    ) -> admin.ListConversationsResponse:
        answer: admin.ListConversationsResponse = await _call(
            self.admin.ListConversations(request, metadata=who.metadata, timeout=CALL_TIMEOUT_S)
        )
        return answer

    async def list_all(
        self, who: Credential, request: admin.ListConversationsRequest, limit: int
    ) -> tuple[list[admin.ConversationSummary], bool]:
        """Every conversation the filters match, at most ``limit``; and whether there were more."""
        found: list[admin.ConversationSummary] = []
        request.page_size = min(500, limit)
        while True:
            page = await self.list_page(who, request)
            found.extend(page.conversations)
            if not page.next_page_token:
                return found[:limit], len(found) > limit
            if len(found) >= limit:
                return found[:limit], True
            request.page_token = page.next_page_token

    async def webhook_fields_served(self, who: Credential) -> bool:
        """Whether this server fills the summaries' webhook and mailbox fields and applies the
        waiting_on_webhook filter: a server that ignores the filter lists conversations that
        wait on nothing. Learned once a minute."""
        if self._filter_known is not None and time.monotonic() - self._filter_known[1] < 60.0:
            return self._filter_known[0]
        page = await self.list_page(who, admin.ListConversationsRequest(waiting_on_webhook=True, page_size=5))
        if not page.conversations:
            # Nothing waits, or (a server that ignores the filter) nothing is listed at all:
            # either way nothing to ask the shards now, and nothing learned for later.
            return True
        served = all(has_webhook_fields(c) for c in page.conversations)
        self._filter_known = (served, time.monotonic())
        return served

    async def enrich(self, who: Credential, summaries: list[admin.ConversationSummary]) -> list[Enriched]:
        """The webhook and mailbox of each resident conversation, asked of its shard (at most
        ENRICH_CONCURRENCY at once); for a server whose listing does not carry them."""
        gate = asyncio.Semaphore(ENRICH_CONCURRENCY)

        async def one(summary: admin.ConversationSummary) -> Enriched:
            if not summary.resident:
                return Enriched(summary)
            async with gate:
                try:
                    detail = await self.inspect(who, summary.tenant_id, summary.conversation_id, 1)
                except CallFailed:
                    return Enriched(summary)
            # The mailbox holds the turn in progress too while a webhook keeps it waiting.
            behind = detail.mailbox_depth - (1 if detail.webhook_in_flight and detail.mailbox_depth else 0)
            return Enriched(summary, detail.webhook_in_flight, 0.0, behind)

        return list(await asyncio.gather(*(one(s) for s in summaries)))

    async def inspect(
        self, who: Credential, tenant: str, conversation: str, last_turns: int
    ) -> admin.ConversationDetail:
        request = admin.InspectConversationRequest(
            tenant_id=tenant, conversation_id=conversation, last_turns=last_turns
        )
        answer: admin.ConversationDetail = await _call(
            self.admin.InspectConversation(request, metadata=who.metadata, timeout=CALL_TIMEOUT_S)
        )
        return answer

    async def analytics(self, who: Credential, request: admin.GetAnalyticsRequest) -> admin.AnalyticsReport:
        answer: admin.AnalyticsReport = await _call(
            self.admin.GetAnalytics(request, metadata=who.metadata, timeout=CALL_TIMEOUT_S)
        )
        return answer

    async def tail(self, who: Credential, request: admin.TailEventsRequest) -> AsyncIterator[admin.Event]:
        """The events as they come; leaving the loop (or cancelling the task) ends the call."""
        call = self.admin.TailEvents(request, metadata=who.metadata)
        try:
            async for event in call:
                yield event
        except grpc.RpcError as exc:
            raise failure(exc) from None
        finally:
            call.cancel()

    # Actions ---------------------------------------------------------------------

    async def act(self, who: Credential, action: str, tenant: str, conversation: str, **args: str) -> Any:
        """One action on one conversation, by the name the console's forms use."""
        target = {"tenant_id": tenant, "conversation_id": conversation}
        reason = args.get("reason", "")
        if action == "force":
            call = self.admin.ForceState(
                admin.ForceStateRequest(**target, state=args["state"], reason=reason), **self._md(who)
            )
        elif action == "agent_message":
            request = admin.AgentMessage(
                **target,
                text=args["text"],
                agent=args.get("agent", ""),
                request_id=args.get("request_id", ""),
            )
            call = self.admin.SendAgentMessage(request, **self._md(who))
        else:
            method = {
                "reset": self.admin.ResetConversation,
                "resume": self.admin.ResumeConversation,
                "passivate": self.admin.PassivateConversation,
                "abandon_webhook": self.admin.AbandonWebhook,
            }[action]
            call = method(admin.ConversationAction(**target, reason=reason), **self._md(who))
        answer: admin.ActionResult = await _call(call)
        return answer

    @staticmethod
    def _md(who: Credential) -> dict[str, Any]:
        return {"metadata": who.metadata, "timeout": CALL_TIMEOUT_S}


ACTIONS = ("reset", "force", "resume", "passivate", "abandon_webhook", "agent_message")
