"""The engine: everything the edge asks of the runtime, as typed async methods.

A conversation always lands on the same shard (a stable hash of tenant and
conversation id), so its commands stay in order. Each shard is reached through a
:class:`~.link.ShardLink` on the event loop; where the shards are comes from the
host (:class:`ShardHost`), which starts them and says whenever one is replaced.
Every method returns domain records (``runtime.model``, ``runtime.inspection``) or
raises a ``runtime.errors`` error; nothing here knows protobuf or Thespian.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .. import telemetry
from ..config import ConfabConfig
from ..errors import ConversationNotFound, InvalidArgument, Unavailable
from ..inspection import (
    ClusterView,
    ConversationFilter,
    ConversationInspection,
    ConversationPage,
    ConversationSummary,
    FlowReload,
    Passivation,
    ShardView,
)
from ..model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    ResetResult,
    StateResult,
    TurnResult,
    new_id,
)
from ..protocol import codec, queries
from ..protocol.directory import ShardDirectory
from ..protocol.records import Command, CommandKind, Outcome, client_message_id
from .events import EventHub
from .link import LinkSettings, LinkStatistics, ShardLink

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
QUERY_TIMEOUT_S = 5.0
RELOAD_TIMEOUT_S = 30.0
START_CONNECT_TIMEOUT_S = 10.0


class ShardHost(Protocol):
    """What starts the shards and knows where they are (``actors.host.ActorHost``)."""

    def start(self, on_directory: Callable[[ShardDirectory], None]) -> ShardDirectory:
        """Start the shards (blocking); ``on_directory`` hears of every later change, from any thread."""
        ...

    def restart_shard(self, index: int) -> None: ...

    def problem(self) -> str:
        """Why the shards cannot be reached as a whole now (say, the actor system is being
        started again), or "" when nothing is wrong."""
        ...

    def close(self) -> None:
        """Stop every shard (blocking)."""
        ...


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One message for one conversation, as the edge hands it over."""

    key: ConversationKey
    message: InboundMessage
    message_id: str  # the id the edge gave this request (its reply names it)
    # The client's own key for this message (metadata.request_id): a repeat within the
    # idempotency window gets the first reply and is not applied again. "" for none.
    idempotency_key: str = ""

    def command(self) -> Command:
        message_id = client_message_id(self.idempotency_key) if self.idempotency_key else self.message_id
        return Command(CommandKind.TURN, message_id, self.key, self.message)


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    shards: int
    shard_restarts: int
    started_at: float
    links: tuple[LinkStatistics, ...]


class Engine:
    def __init__(self, config: ConfabConfig, host: ShardHost) -> None:
        self.config = config
        self.host = host
        self.started_at = time.time()
        self.events = EventHub()
        self.directory: ShardDirectory | None = None
        self._links: list[ShardLink] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Called (on the loop) when a shard is reached or lost, or the directory changes.
        self.on_change: Callable[[], None] = lambda: None

    # Lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        directory = await asyncio.to_thread(self.host.start, self._directory_from_any_thread)
        engine = self.config.engine
        settings = LinkSettings(
            max_batch=engine.max_commands_per_batch,
            max_queued=engine.max_queued_per_shard,
            shard_timeout_s=engine.shard_timeout_s,
            heartbeat_interval_s=engine.heartbeat_interval_s,
            heartbeat_timeout_s=engine.heartbeat_timeout_s,
        )
        self._links = [ShardLink(endpoint, settings) for endpoint in directory.shards]
        for link in self._links:
            link.want_lifecycle = lambda: self.events.active
            link.on_lifecycle = self.events.publish_lifecycle
            link.on_connection_change = lambda: self.on_change()
            link.start()
        self.directory = directory
        give_up = time.monotonic() + START_CONNECT_TIMEOUT_S
        # Serving starts once every shard has answered a heartbeat: health is true from the start.
        while not all(link.connected and link.status is not None for link in self._links):
            if time.monotonic() > give_up:
                await self.close()
                raise Unavailable("the shards started but the edge could not connect to them")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Let queued commands finish, then stop every shard."""
        timeout = self.config.engine.shard_timeout_s
        await asyncio.gather(*(link.close(timeout) for link in self._links))
        await asyncio.to_thread(self.host.close)

    def _directory_from_any_thread(self, directory: ShardDirectory) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._directory_changed, directory)

    def _directory_changed(self, directory: ShardDirectory) -> None:
        self.directory = directory
        for link, endpoint in zip(self._links, directory.shards, strict=True):
            link.update_endpoint(endpoint)
        self.on_change()

    @property
    def running(self) -> bool:
        return bool(self._links)

    # Commands ---------------------------------------------------------------------------

    def shard_for(self, key: ConversationKey) -> int:
        return zlib.crc32(f"{key.tenant_id}\x00{key.conversation_id}".encode()) % len(self._links)

    def _submit(
        self, commands: list[Command], deadline: float | None = None
    ) -> list[asyncio.Future[Outcome]]:
        """Queue commands in this order; commands of one conversation run in this order.

        ``deadline`` is a ``time.monotonic()`` value: a command still queued then is
        not run (it fails with DEADLINE_EXCEEDED).
        """
        if not self._links:
            raise Unavailable("the engine is not running")
        traceparent = telemetry.current_traceparent()  # None (and cheap) unless tracing is on
        if traceparent is not None:
            for command in commands:
                command.trace = traceparent
        if len(commands) == 1:  # the common case, without the grouping
            shard = self.shard_for(commands[0].key)
            futures = self._links[shard].submit(commands, deadline)
            if self.events.active:
                futures[0].add_done_callback(functools.partial(self._publish, commands[0], shard))
            return futures
        by_shard: dict[int, list[int]] = {}
        for i, command in enumerate(commands):
            by_shard.setdefault(self.shard_for(command.key), []).append(i)
        placed: list[asyncio.Future[Outcome] | None] = [None] * len(commands)
        for shard, positions in by_shard.items():
            submitted = self._links[shard].submit([commands[i] for i in positions], deadline)
            for i, future in zip(positions, submitted, strict=True):
                placed[i] = future
                if self.events.active:  # an operator is watching (Admin.TailEvents)
                    future.add_done_callback(functools.partial(self._publish, commands[i], shard))
        return [f for f in placed if f is not None]

    def _publish(self, command: Command, shard: int, future: asyncio.Future[Outcome]) -> None:
        if not future.cancelled():
            error = future.exception()
            self.events.publish_outcome(command, shard, error if error is not None else future.result())

    async def _run(self, command: Command, deadline: float | None) -> Outcome:
        return await self._submit([command], deadline)[0]

    async def process(self, request: TurnRequest, *, deadline: float | None = None) -> TurnResult:
        result = await self._run(request.command(), deadline)
        assert isinstance(result, TurnResult)
        return result

    def process_many(
        self, requests: list[TurnRequest], deadline: float | None = None
    ) -> list[asyncio.Future[Outcome]]:
        """Queue messages in this order (one conversation's run in it); each future gets a
        TurnResult or raises the error that stopped that message alone."""
        return self._submit([r.command() for r in requests], deadline)

    async def get_state(self, key: ConversationKey, *, deadline: float | None = None) -> ConversationState:
        result = await self._run(Command(CommandKind.GET_STATE, new_id(), key), deadline)
        assert isinstance(result, StateResult)
        return result.state

    async def reset(
        self, key: ConversationKey, reason: str, *, message_id: str, deadline: float | None = None
    ) -> ResetResult:
        result = await self._run(Command(CommandKind.RESET, message_id, key, reason), deadline)
        assert isinstance(result, ResetResult)
        return result

    async def force_state(self, key: ConversationKey, state: str, *, message_id: str) -> ConversationState:
        """Move a conversation to ``state``, ordered with its messages (an operator's action)."""
        result = await self._run(Command(CommandKind.FORCE_STATE, message_id, key, state), None)
        assert isinstance(result, StateResult)
        return result.state

    async def resume(self, key: ConversationKey, operator: str, *, message_id: str) -> TurnResult:
        """Hand a conversation back from a person to its flow (a system message its flow understands)."""
        resume = InboundMessage(f"operator:{operator}", Content(type="system", payload="resume"))
        return await self.process(TurnRequest(key, resume, message_id))

    # What operators see -------------------------------------------------------------------

    async def inspect(self, key: ConversationKey, last_turns: int) -> ConversationInspection:
        shard = self.shard_for(key)
        args = [key.tenant_id, key.conversation_id, last_turns]
        found = await self._query(shard, queries.INSPECT, args)
        if found is None:
            raise ConversationNotFound(f"conversation {key} not found")
        return queries.inspection_from_wire(found, key, shard)

    async def passivate(self, key: ConversationKey) -> Passivation:
        answer = await self._query(
            self.shard_for(key), queries.PASSIVATE, [key.tenant_id, key.conversation_id]
        )
        return queries.passivation_from_wire(answer)

    async def list_conversations(
        self, wanted: ConversationFilter, cursor: str, page_size: int
    ) -> ConversationPage:
        """A page of stored conversations in key order, with whether each is in memory now."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
        after = _cursor_key(cursor)
        if after is not None and wanted.tenant_id and after.tenant_id != wanted.tenant_id:
            raise InvalidArgument("page_token is not one this server gave out", field="page_token")
        # Every shard opens the same store: any one of them can read it (shard 0 does).
        rows, last = await self._query(
            0,
            queries.LIST,
            [
                queries.filter_to_wire(wanted),
                [after.tenant_id, after.conversation_id] if after else None,
                page_size,
            ],
        )
        summaries = [queries.summary_from_wire(w) for w in rows]
        resident = await self._resident_among([s.key for s in summaries])
        page = [
            _with_placement(s, s.key in resident, self.shard_for(s.key))
            for s in summaries
            if s.key in resident or not wanted.resident_only
        ]
        next_cursor = _encode_cursor(ConversationKey(last[0], last[1])) if last else ""
        return ConversationPage(tuple(page), next_cursor)

    async def _resident_among(self, keys: list[ConversationKey]) -> set[ConversationKey]:
        by_shard: dict[int, list[list[str]]] = {}
        for key in keys:
            by_shard.setdefault(self.shard_for(key), []).append([key.tenant_id, key.conversation_id])
        answers = await asyncio.gather(*(self._query(i, queries.RESIDENT, [k]) for i, k in by_shard.items()))
        return {ConversationKey(k[0], k[1]) for answer in answers for k in answer}

    async def _query(self, shard: int, name: str, args: list[Any], timeout_s: float = QUERY_TIMEOUT_S) -> Any:
        if not self._links:
            raise Unavailable("the engine is not running")
        return await self._links[shard].query(name, args, timeout_s)

    async def refresh_cluster(self, timeout_s: float) -> ClusterView:
        """:meth:`cluster` with every shard asked for its figures first, waiting ``timeout_s`` at most:
        a shard that does not answer in time is shown with its last figures and as unresponsive."""
        await asyncio.gather(*(link.refresh_status(timeout_s) for link in self._links))
        return self.cluster()

    def cluster(self) -> ClusterView:
        """The shards as the edge sees them now, from their last heartbeats: it never waits on a shard."""
        now = time.monotonic()
        directory = self.directory
        shards = []
        for link in self._links:
            stats = link.statistics()
            shards.append(
                ShardView(
                    index=link.index,
                    generation=link.endpoint.generation,
                    address=link.endpoint.address,
                    responsive=link.responsive,
                    last_heard_s=now - link.last_heard if link.last_heard else -1.0,
                    error="" if link.responsive else (link.last_error or "no answer yet"),
                    queued=stats.queued,
                    in_flight=stats.in_flight,
                    status=link.status,
                )
            )
        statuses = [s.status for s in shards if s.status is not None and s.responsive]
        store_errors = sorted({s.store_error for s in statuses if not s.store_ok})
        return ClusterView(
            started_at=self.started_at,
            shard_restarts=directory.restarts if directory else 0,
            shards=tuple(shards),
            store=str(self.config.store_path),
            store_ok=bool(statuses) and not store_errors,
            store_latency_ms=max((s.store_latency_ms for s in statuses), default=0.0),
            store_error="; ".join(store_errors) if statuses else "no shard can reach the store",
        )

    # The whole runtime --------------------------------------------------------------------

    async def restart_shard(self, index: int) -> None:
        """Replace shard ``index`` with a new process (an operator's drill)."""
        if not 0 <= index < len(self._links):
            raise InvalidArgument(
                f"there is no shard {index}; shards are 0..{len(self._links) - 1}", field="shard"
            )
        await asyncio.to_thread(self.host.restart_shard, index)

    async def reload_flows(self) -> FlowReload:
        """Every shard loads the flow files again (running conversations keep their version)."""
        answers = await asyncio.gather(
            *(self._query(link.index, queries.RELOAD, [], RELOAD_TIMEOUT_S) for link in self._links),
            return_exceptions=True,
        )
        reloads = [queries.reload_from_wire(a) for a in answers if not isinstance(a, BaseException)]
        failed = [f"shard {i}: {a}" for i, a in enumerate(answers) if isinstance(a, BaseException)]
        return FlowReload(
            loaded=sorted({flow for r in reloads for flow in r.loaded}),
            skipped=sorted({problem for r in reloads for problem in r.skipped}),
            failed=failed + [f for r in reloads for f in r.failed],
        )

    def statistics(self) -> EngineStatistics:
        directory = self.directory
        return EngineStatistics(
            shards=len(self._links),
            shard_restarts=directory.restarts if directory else 0,
            started_at=self.started_at,
            links=tuple(link.statistics() for link in self._links),
        )


def _with_placement(summary: ConversationSummary, resident: bool, shard: int) -> ConversationSummary:
    return replace(summary, resident=resident, shard=shard)


def _encode_cursor(key: ConversationKey) -> str:
    return base64.urlsafe_b64encode(codec.pack([key.tenant_id, key.conversation_id])).decode()


def _cursor_key(cursor: str) -> ConversationKey | None:
    if not cursor:
        return None
    try:
        tenant_id, conversation_id = codec.unpack(base64.urlsafe_b64decode(cursor.encode()))
        return ConversationKey(str(tenant_id), str(conversation_id))
    except Exception as exc:
        raise InvalidArgument("page_token is not one this server gave out", field="page_token") from exc
