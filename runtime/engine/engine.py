"""The engine: everything the edge asks of the runtime, as typed async methods.

A conversation belongs to a virtual shard (a stable hash of tenant and conversation
id), and each virtual shard is held by one shard process at a time, on this host
or another: the :class:`~.router.Router` sends every command to its holder, over a
:class:`~.link.ShardLink` per shard, on the event loop, so a conversation's
commands stay in order wherever it lives. Where the shards are and what each holds
comes from the host (:class:`ShardHost`), which starts this host's shards and
passes on every directory of the cluster (``actors.cluster``). Every method returns
domain records (``runtime.model``, ``runtime.inspection``) or raises a
``runtime.errors`` error; nothing here knows protobuf or Thespian.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from confab.runtime import telemetry
from confab.runtime.analytics import AnalyticsQuery, JsonDict
from confab.runtime.config import ConfabConfig
from confab.runtime.engine.events import EventHub
from confab.runtime.engine.link import DeltaListener, LinkSettings, LinkStatistics, ShardLink
from confab.runtime.engine.router import Router
from confab.runtime.errors import ConversationNotFound, DeadlineExceeded, InvalidArgument, Unavailable
from confab.runtime.inspection import (
    Abandoned,
    ClusterView,
    ConversationFilter,
    ConversationInspection,
    ConversationPage,
    ConversationSummary,
    FlowReload,
    Passivation,
    ShardView,
)
from confab.runtime.model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    ResetResult,
    StateResult,
    TurnResult,
    new_id,
)
from confab.runtime.protocol import codec, queries
from confab.runtime.protocol.directory import ShardDirectory, vshard_of
from confab.runtime.protocol.records import (
    AGENT_PREFIX,
    OPERATOR_PREFIX,
    Command,
    CommandKind,
    ConversationEvent,
    Outcome,
    WireMessage,
    WireReply,
    client_message_id,
)
from confab.runtime.protocol.security import INSECURE_WARNING, data_plane_settings

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
QUERY_TIMEOUT_S = 5.0
WAITING_TIMEOUT_S = 2.0  # a shard that does not say what waits on webhooks by then is left out
RELOAD_TIMEOUT_S = 30.0
START_CONNECT_TIMEOUT_S = 10.0


class ShardHost(Protocol):
    """What starts the shards and knows where they are (``actors.system.host.ActorHost``)."""

    def start(self, on_directory: Callable[[ShardDirectory], None]) -> ShardDirectory:
        """Start the shards (blocking); ``on_directory`` hears of every later change, from any thread."""
        ...

    def restart_shard(self, index: int) -> None:
        """Replace this host's shard ``index`` with a new process."""
        ...

    def leave(self) -> None:
        """Hand this host's virtual shards to the other hosts (later directories show it)."""
        ...

    def edge_serving(self, address: str) -> None:
        """This host's edge serves at ``address`` now (what the cluster shows for the host)."""
        ...

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

    def command(self, trace: str | None = None, *, wants_deltas: bool = False) -> Command:
        """The command that carries this message (``trace``: the edge span's traceparent;
        ``wants_deltas``: its caller shows the reply's text as it is written)."""
        message_id = client_message_id(self.idempotency_key) if self.idempotency_key else self.message_id
        return Command(CommandKind.TURN, message_id, self.key, self.message, trace, wants_deltas=wants_deltas)


@dataclass(frozen=True, slots=True)
class WireTurnRequest:
    """One message for one conversation as its client serialized it (a ProcessMessageRequest):
    its shard reads it and answers with the serialized response (a :class:`WireReply`).

    The edge has checked what it routes and limits by: ``key``, the ids, the content's sizes;
    ``prefix`` locates the message in its call, ``said`` is its text or payload (for operators)."""

    key: ConversationKey
    data: bytes
    message_id: str
    idempotency_key: str = ""
    prefix: str = ""
    said: str = ""

    def command(self, trace: str | None = None, *, wants_deltas: bool = False) -> Command:
        message_id = client_message_id(self.idempotency_key) if self.idempotency_key else self.message_id
        body = WireMessage(self.data, self.prefix, self.said)
        return Command(CommandKind.WIRE_TURN, message_id, self.key, body, trace, wants_deltas=wants_deltas)


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    shards: int
    shard_restarts: int
    started_at: float
    links: tuple[LinkStatistics, ...]
    held: int = 0  # commands waiting for their virtual shard to have a holder
    moved: int = 0  # commands a shard answered MOVED, placed again
    taken_back: int = 0  # commands handed back by shards that left the directory


class Engine:
    def __init__(self, config: ConfabConfig, host: ShardHost) -> None:
        self.config = config
        self.host = host
        self.started_at = time.time()
        self.events = EventHub()
        self.directory: ShardDirectory | None = None
        self.directory_at = 0.0  # time.monotonic() when it came
        engine = config.engine
        # The client side of the data plane: TLS to other hosts' shards, from the cluster's files.
        self.data_plane = data_plane_settings(config)
        if config.cluster.advertise and self.data_plane.insecure_plaintext:
            log.warning(INSECURE_WARNING)
        self._router = Router(
            config.cluster.host_name,
            LinkSettings(
                max_batch=engine.max_commands_per_batch,
                max_batches_in_flight=engine.max_batches_in_flight,
                max_queued=engine.max_queued_per_shard,
                shard_timeout_s=engine.shard_timeout_s,
                heartbeat_interval_s=engine.heartbeat_interval_s,
                heartbeat_timeout_s=engine.heartbeat_timeout_s,
                data_plane=self.data_plane,
            ),
            max_held=engine.max_queued_per_shard,
            new_link=self._wire,
        )
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        # Called (on the loop) when a shard is reached or lost, or the directory changes.
        self.on_change: Callable[[], None] = lambda: None
        # Who hears of a conversation's operator actions and people's messages (its open streams).
        self._watchers: dict[ConversationKey, set[Callable[[ConversationEvent], None]]] = {}

    # Lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        directory = await asyncio.to_thread(self.host.start, self._directory_from_any_thread)
        self._directory_changed(directory)
        self._running = True
        self._ticker = asyncio.create_task(self._expire_held(), name="confab-router-timeouts")
        give_up = time.monotonic() + START_CONNECT_TIMEOUT_S
        # Serving starts once this host's shards have answered a heartbeat: health is true from the start.
        while not all(link.connected and link.status is not None for link in self.local_links):
            if time.monotonic() > give_up:
                await self.close()
                raise Unavailable("the shards started but the edge could not connect to them")
            await asyncio.sleep(0.01)

    async def leave(self, timeout_s: float) -> bool:
        """Hand this host's virtual shards to the other hosts; whether they took them all in time.
        Requests keep being served meanwhile (by whichever shard holds each conversation)."""
        host = self.config.cluster.host_name

        def others_up() -> bool:
            directory = self.directory
            return directory is not None and any(h.host != host and h.state == "up" for h in directory.hosts)

        def in_touch() -> bool:  # else no placement moves this host's share: nobody will take it
            return self.directory is not None and self.directory.in_touch

        if not in_touch():
            log.warning("hand-off not done: this host cannot reach the member table; stopping anyway")
            return False
        if not others_up():
            log.warning("hand-off not done: no other host is up to take this host's virtual shards")
            return False
        await asyncio.to_thread(self.host.leave)
        give_up = time.monotonic() + timeout_s
        # Nobody else up for a few heartbeats, not for one directory: a host starting up lists
        # the others only once it has read the member table.
        nobody_for_s = 3 * self.config.cluster.heartbeat_every_s
        nobody_since: float | None = None
        while time.monotonic() < give_up:
            directory = self.directory
            if (
                directory is not None
                and not any(owner.shard.startswith(f"{host}/") for owner in directory.owners)
                and directory.complete
            ):
                log.info("hand-off done: the other hosts hold every virtual shard")
                return True
            if others_up():
                nobody_since = None
            elif nobody_since is None:
                nobody_since = time.monotonic()
            elif time.monotonic() - nobody_since >= nobody_for_s:  # nobody will take it
                log.warning("hand-off not done: no other host is up (leaving, lost or gone); stopping anyway")
                return False
            if not in_touch():
                log.warning("hand-off not done: this host lost touch with the member table; stopping anyway")
                return False
            await asyncio.sleep(0.05)
        log.warning("hand-off not done within %.0fs: stopping anyway", timeout_s)
        return False

    async def close(self) -> None:
        """Let queued commands finish, then stop every shard."""
        self._running = False
        timeout = self.config.engine.shard_timeout_s
        links = list(self._router.links.values())
        await asyncio.gather(*(link.close(timeout) for link in links))
        self._router.fail_held(Unavailable("the engine stopped before the conversation's shard was known"))
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.to_thread(self.host.close)

    def _wire(self, link: ShardLink) -> None:
        link.want_lifecycle = lambda: self.events.active
        link.on_lifecycle = self.events.publish_lifecycle
        link.on_events = self._conversation_events
        link.on_connection_change = lambda: self.on_change()
        link.start()

    def _directory_from_any_thread(self, directory: ShardDirectory) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._directory_changed, directory)

    def _directory_changed(self, directory: ShardDirectory) -> None:
        if self.directory is not None and directory.version < self.directory.version:
            return
        self.directory = directory
        self.directory_at = time.monotonic()
        for link in self._router.update(directory):
            asyncio.get_running_loop().create_task(link.close(0.0))  # its commands were taken back
        self.on_change()

    async def _expire_held(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self._router.expire(time.monotonic())

    @property
    def running(self) -> bool:
        return self._running

    @property
    def local_links(self) -> list[ShardLink]:
        host = self.config.cluster.host_name
        return [link for link in self._router.links.values() if link.endpoint.host == host]

    @property
    def links(self) -> list[ShardLink]:
        return sorted(self._router.links.values(), key=lambda link: (link.endpoint.host, link.index))

    # Conversation events ------------------------------------------------------------------

    def watch(self, key: ConversationKey, listener: Callable[[ConversationEvent], None]) -> None:
        """``listener`` hears, on the loop and as soon as its shard has stored it, every operator
        action on ``key`` and every person's message into it, whichever edge they came through
        (each shard pushes them to every edge connected to it)."""
        self._watchers.setdefault(key, set()).add(listener)

    def unwatch(self, key: ConversationKey, listener: Callable[[ConversationEvent], None]) -> None:
        listeners = self._watchers.get(key)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._watchers[key]

    def _conversation_events(self, events: list[ConversationEvent]) -> None:
        for event in events:
            for listener in list(self._watchers.get(event.key, ())):
                try:
                    listener(event)
                except Exception:  # one listener's bug is its own
                    log.exception("a listener of %s failed", event.key)

    # Commands ---------------------------------------------------------------------------

    def vshard_for(self, key: ConversationKey) -> int:
        return vshard_of(key, self._router.vshards)

    def _holder(self, key: ConversationKey) -> ShardLink:
        link = self._router.holder(self.vshard_for(key))
        if link is None:
            raise Unavailable(f"conversation {key}: its shard is moving to another host; try again shortly")
        return link

    def _submit(
        self,
        commands: list[Command],
        deadline: float | None = None,
        on_delta: Sequence[DeltaListener | None] = (),
    ) -> list[asyncio.Future[Outcome]]:
        """Queue commands in this order; commands of one conversation run in this order.

        Each command carries the traceparent of the span that made it (None, and cheap to ask,
        unless tracing is on): the engine makes it so, and nothing on the way changes it.

        ``deadline`` is a ``time.monotonic()`` value: a command still queued then is
        not run (it fails with DEADLINE_EXCEEDED). ``on_delta``: the listener of each
        command's deltas, by position (the commands that have one want deltas).

        Cancelling a command's future gives it up: one still queued is not sent; one its
        shard has and that has a delta listener is named in a CANCEL frame, and its turn's
        generation stops (the turn then takes its failure route, and is applied all the
        same). Any other runs on at its shard: a model call of its turn ends by the command's
        deadline or the provider's ``max_duration_s``.
        """
        if not self._running:
            raise Unavailable("the engine is not running")
        futures = self._router.submit(commands, deadline, on_delta)
        if self.events.active:  # an operator is watching (Admin.TailEvents)
            for command, future in zip(commands, futures, strict=True):
                future.add_done_callback(functools.partial(self._publish, command))
        return futures

    def _publish(self, command: Command, future: asyncio.Future[Outcome]) -> None:
        if not future.cancelled():
            error = future.exception()
            link = self._router.holder(self.vshard_for(command.key))
            shard = link.index if link is not None else -1
            self.events.publish_outcome(command, shard, error if error is not None else future.result())

    async def _one(
        self, command: Command, deadline: float | None, on_delta: DeltaListener | None = None
    ) -> Outcome:
        return await self._submit([command], deadline, (on_delta,))[0]

    async def process(
        self, request: TurnRequest, *, deadline: float | None = None, on_delta: DeltaListener | None = None
    ) -> TurnResult:
        """Apply a message; its reply. ``on_delta`` hears the reply's text as its turn generates
        it (on the loop, in order, all before this returns); the reply has the whole text.
        Cancelled while the turn generates for ``on_delta``: the generation stops (without a
        listener it runs on until the deadline or the provider's ``max_duration_s``)."""
        command = request.command(telemetry.current_traceparent(), wants_deltas=on_delta is not None)
        result = await self._one(command, deadline, on_delta)
        assert isinstance(result, TurnResult)
        return result

    async def process_wire(
        self,
        request: WireTurnRequest,
        *,
        deadline: float | None = None,
        on_delta: DeltaListener | None = None,
    ) -> WireReply:
        """:meth:`process` for a message its shard converts: the answer is the serialized response."""
        command = request.command(telemetry.current_traceparent(), wants_deltas=on_delta is not None)
        result = await self._one(command, deadline, on_delta)
        assert isinstance(result, WireReply)
        return result

    def process_many(
        self,
        requests: list[TurnRequest] | list[WireTurnRequest],
        deadline: float | None = None,
        *,
        on_delta: Sequence[DeltaListener | None] = (),
    ) -> list[asyncio.Future[Outcome]]:
        """Queue messages in this order (one conversation's run in it); each future gets a
        TurnResult (a WireReply for a WireTurnRequest) or raises the error that stopped that
        message alone. ``on_delta``: the listener of each message's deltas, by position (see
        :meth:`process`); a message without one gets the whole text only."""
        trace = telemetry.current_traceparent()
        listened = [listener is not None for listener in on_delta]
        listened += [False] * (len(requests) - len(listened))
        asked: Sequence[TurnRequest | WireTurnRequest] = requests
        commands = [r.command(trace, wants_deltas=w) for r, w in zip(asked, listened, strict=False)]
        return self._submit(commands, deadline, on_delta)

    async def get_state(self, key: ConversationKey, *, deadline: float | None = None) -> ConversationState:
        result = await self._one(
            Command(CommandKind.GET_STATE, new_id(), key, None, telemetry.current_traceparent()), deadline
        )
        assert isinstance(result, StateResult)
        return result.state

    async def reset(
        self,
        key: ConversationKey,
        reason: str,
        *,
        message_id: str,
        deadline: float | None = None,
        by_operator: bool = False,
    ) -> ResetResult:
        """Start the conversation over; ``by_operator`` (the Admin API's): its open streams hear
        of it as an operator_action event."""
        if by_operator:
            message_id = OPERATOR_PREFIX + message_id
        result = await self._one(
            Command(CommandKind.RESET, message_id, key, reason, telemetry.current_traceparent()), deadline
        )
        assert isinstance(result, ResetResult)
        return result

    async def force_state(
        self, key: ConversationKey, state: str, *, message_id: str, deadline: float | None = None
    ) -> ConversationState:
        """Move a conversation to ``state``, ordered with its messages (an operator's action)."""
        result = await self._one(
            Command(CommandKind.FORCE_STATE, message_id, key, state, telemetry.current_traceparent()),
            deadline,
        )
        assert isinstance(result, StateResult)
        return result.state

    async def agent_message(
        self,
        key: ConversationKey,
        agent: str,
        text: str,
        *,
        message_id: str,
        idempotency_key: str = "",
        deadline: float | None = None,
    ) -> TurnResult:
        """A person's message into a handed-off conversation, kept as a turn (FailedPrecondition if
        it is not handed over); a repeat of ``idempotency_key`` gets the first answer, not sent again."""
        message = InboundMessage(f"{AGENT_PREFIX}{agent}", Content(type="agent", text=text))
        command_id = client_message_id(idempotency_key) if idempotency_key else message_id
        command = Command(
            CommandKind.AGENT_MESSAGE, command_id, key, message, telemetry.current_traceparent()
        )
        result = await self._one(command, deadline)
        assert isinstance(result, TurnResult)
        return result

    async def resume(
        self, key: ConversationKey, operator: str, *, message_id: str, deadline: float | None = None
    ) -> TurnResult:
        """Hand a conversation back from a person to its flow (a system message its flow understands)."""
        resume = InboundMessage(f"{OPERATOR_PREFIX}{operator}", Content(type="system", payload="resume"))
        return await self.process(TurnRequest(key, resume, message_id), deadline=deadline)

    # What operators see -------------------------------------------------------------------

    async def inspect(
        self, key: ConversationKey, last_turns: int, *, scope: str | None = None
    ) -> ConversationInspection:
        """``scope``, here and below: the tenant the caller may see (None: every tenant, an
        operator's); the shard refuses anything outside it, whatever the edge checked."""
        link = self._holder(key)
        args = [key.tenant_id, key.conversation_id, last_turns]
        found = await self._query(link, queries.INSPECT, args, scope=scope)
        if found is None:
            raise ConversationNotFound(f"conversation {key} not found")
        return queries.inspection_from_wire(found, key, link.index)

    async def abandon_webhook(
        self,
        key: ConversationKey,
        who: str,
        reason: str,
        *,
        scope: str | None = None,
        deadline: float | None = None,
    ) -> Abandoned:
        """Give up the webhook call ``key``'s turn waits on: the turn takes its failure route now,
        recorded as abandoned by ``who``. Not ordered with the conversation's commands (they wait
        behind that very turn): its shard does it between two rounds. With a ``deadline``
        (``time.monotonic()``), a shard that reads the request after it does nothing."""
        budget = None if deadline is None else deadline - time.monotonic()
        if budget is not None and budget <= 0:
            raise DeadlineExceeded("not done: the deadline passed before it was sent; nothing was changed")
        timeout = QUERY_TIMEOUT_S if budget is None else min(QUERY_TIMEOUT_S, budget)
        answer = await self._query(
            self._holder(key),
            queries.ABANDON,
            [key.tenant_id, key.conversation_id, who, reason, budget],
            timeout,
            scope=scope,
        )
        return queries.abandoned_from_wire(answer)

    async def passivate(
        self, key: ConversationKey, *, scope: str | None = None, deadline: float | None = None
    ) -> Passivation:
        budget = None if deadline is None else deadline - time.monotonic()
        if budget is not None and budget <= 0:
            raise DeadlineExceeded("not done: the deadline passed before it was sent; nothing was changed")
        timeout = QUERY_TIMEOUT_S if budget is None else min(QUERY_TIMEOUT_S, budget)
        answer = await self._query(
            self._holder(key),
            queries.PASSIVATE,
            [key.tenant_id, key.conversation_id, budget],
            timeout,
            scope=scope,
        )
        return queries.passivation_from_wire(answer)

    async def list_conversations(
        self, wanted: ConversationFilter, cursor: str, page_size: int, *, scope: str | None = None
    ) -> ConversationPage:
        """A page of conversations in key order, with whether each is in memory now and what its
        turn waits on: the stored ones, and those created by a first message whose turn waits on
        a webhook (nothing of them is stored yet); ``waiting_on_webhook``: only those waiting."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
        after = _cursor_key(cursor)
        if after is not None and wanted.tenant_id and after.tenant_id != wanted.tenant_id:
            raise InvalidArgument("page_token is not one this server gave out", field="page_token")
        waiting = await self._waiting(scope)
        now = time.time()
        if wanted.waiting_on_webhook:
            found = sorted(
                (
                    w
                    for w in waiting.values()
                    if wanted.admits(w, now) and (after is None or _after(w.key, after))
                ),
                key=_order,
            )
            return _paged(found, page_size)
        # Every shard opens the same store: any one of them can read it (a local one does).
        readers = [link for link in self.local_links if link.responsive] or self.local_links
        if not readers:
            raise Unavailable("no shard of this host is running")
        rows, last = await self._query(
            readers[0],
            queries.LIST,
            [
                queries.filter_to_wire(wanted),
                [after.tenant_id, after.conversation_id] if after else None,
                page_size,
            ],
            scope=scope,
        )
        summaries = [queries.summary_from_wire(w) for w in rows]
        resident = await self._resident_among([s.key for s in summaries], scope)
        page = [
            _with_placement(s, s.key in resident, self._shard_index(s.key), waiting.get(s.key))
            for s in summaries
            if s.key in resident or not wanted.resident_only
        ]
        # Conversations not stored yet (their first turn waits on a webhook), in this page's range.
        until = ConversationKey(last[0], last[1]) if last else None
        listed = {s.key for s in page}
        page += [
            w
            for w in waiting.values()
            if not w.stored
            and w.key not in listed
            and wanted.admits(w, now)
            and (after is None or _after(w.key, after))
            and (until is None or not _after(w.key, until))
        ]
        page.sort(key=_order)
        if len(page) > page_size:  # cut where it is full: the next page starts after its last
            return ConversationPage(tuple(page[:page_size]), _encode_cursor(page[page_size - 1].key))
        next_cursor = _encode_cursor(until) if until is not None else ""
        return ConversationPage(tuple(page), next_cursor)

    async def _waiting(self, scope: str | None) -> dict[ConversationKey, ConversationSummary]:
        """Every conversation whose turn waits on a webhook, from every shard that answers."""
        links = [link for link in self.links if link.connected]
        answers = await asyncio.gather(
            *(self._query(link, queries.WAITING, [], WAITING_TIMEOUT_S, scope=scope) for link in links),
            return_exceptions=True,
        )
        found: dict[ConversationKey, ConversationSummary] = {}
        for link, answer in zip(links, answers, strict=True):
            if isinstance(answer, BaseException):
                continue
            for w in answer:
                summary = queries.summary_from_wire(w)
                # Its holder's word, not that of a shard it has just left.
                if self._router.holder(self.vshard_for(summary.key)) is link:
                    found[summary.key] = summary
        return found

    async def analytics(self, query: AnalyticsQuery, *, scope: str | None = None) -> JsonDict:
        """A tenant's conversation analytics (runtime.analytics) as the shards recorded them in the
        store: any shard of this host reads them (a local one), as for a list."""
        readers = [link for link in self.local_links if link.responsive] or self.local_links
        if not readers:
            raise Unavailable("no shard of this host is running")
        report: JsonDict = await self._query(readers[0], queries.ANALYTICS, [query.to_wire()], scope=scope)
        return report

    def _shard_index(self, key: ConversationKey) -> int:
        link = self._router.holder(self.vshard_for(key))
        return link.index if link is not None else -1

    async def _resident_among(self, keys: list[ConversationKey], scope: str | None) -> set[ConversationKey]:
        by_link: dict[ShardLink, list[list[str]]] = {}
        for key in keys:
            link = self._router.holder(self.vshard_for(key))
            if link is not None:  # moving: not resident anywhere for now
                by_link.setdefault(link, []).append([key.tenant_id, key.conversation_id])
        answers = await asyncio.gather(
            *(self._query(link, queries.RESIDENT, [k], scope=scope) for link, k in by_link.items()),
            return_exceptions=True,
        )
        return {
            ConversationKey(k[0], k[1])
            for answer in answers
            if not isinstance(answer, BaseException)
            for k in answer
        }

    async def _query(
        self,
        link: ShardLink,
        name: str,
        args: list[Any],
        timeout_s: float = QUERY_TIMEOUT_S,
        *,
        scope: str | None = None,
    ) -> Any:
        if not self._running:
            raise Unavailable("the engine is not running")
        return await link.query(name, args, timeout_s, scope)

    async def refresh_cluster(self, timeout_s: float) -> ClusterView:
        """:meth:`cluster` with every shard asked for its figures first, waiting ``timeout_s`` at most:
        a shard that does not answer in time is shown with its last figures and as unresponsive."""
        await asyncio.gather(*(link.refresh_status(timeout_s) for link in self.links))
        return self.cluster()

    def cluster(self) -> ClusterView:
        """The shards as the edge sees them now, from their last heartbeats: it never waits on a shard."""
        now = time.monotonic()
        directory = self.directory
        owners = self._router.owners
        held = {shard: 0 for shard in self._router.links}
        for owner in owners:
            if owner.shard in held:
                held[owner.shard] += 1
        shards = []
        for link in self.links:
            stats = link.statistics()
            shards.append(
                ShardView(
                    index=link.index,
                    generation=link.endpoint.generation,
                    address=link.address,
                    responsive=link.responsive,
                    last_heard_s=now - link.last_heard if link.last_heard else -1.0,
                    error="" if link.responsive else (link.last_error or "no answer yet"),
                    queued=stats.queued,
                    in_flight=stats.in_flight,
                    status=link.status,
                    host=link.endpoint.host,
                    vshards=held[link.shard_id],
                )
            )
        age = now - self.directory_at
        hosts = tuple(
            replace(h, heartbeat_age_s=h.heartbeat_age_s + age)
            for h in (directory.hosts if directory else ())
        )
        statuses = [s.status for s in shards if s.status is not None and s.responsive]
        store_errors = sorted({s.store_error for s in statuses if not s.store_ok})
        return ClusterView(
            started_at=self.started_at,
            shard_restarts=directory.restarts if directory else 0,
            shards=tuple(shards),
            store=self.config.store_shown,
            store_ok=bool(statuses) and not store_errors,
            store_latency_ms=max((s.store_latency_ms for s in statuses), default=0.0),
            store_error="; ".join(store_errors) if statuses else "no shard can reach the store",
            hosts=hosts,
            owners=owners,
            held_commands=self._router.held(),
            this_host=self.config.cluster.host_name,
            in_touch=directory.in_touch if directory else True,
        )

    # The whole runtime --------------------------------------------------------------------

    async def restart_shard(self, index: int, host: str = "") -> None:
        """Replace this host's shard ``index`` with a new process (an operator's drill)."""
        if host and host != self.config.cluster.host_name:
            edges = [h.edge for h in (self.directory.hosts if self.directory else ()) if h.host == host]
            where = f" (its edge: {edges[0]})" if edges and edges[0] else ""
            raise InvalidArgument(
                f"shard {index} of host {host}: only that host's edge can restart it{where}", field="host"
            )
        count = len(self.local_links)
        if not 0 <= index < count:
            raise InvalidArgument(f"there is no shard {index}; shards are 0..{count - 1}", field="shard")
        await asyncio.to_thread(self.host.restart_shard, index)

    async def reload_flows(self) -> FlowReload:
        """Every shard of this host loads the flow files again (running conversations keep their
        version); each host reloads its own (SIGHUP or this call on each)."""
        links = self.local_links
        answers = await asyncio.gather(
            *(self._query(link, queries.RELOAD, [], RELOAD_TIMEOUT_S) for link in links),
            return_exceptions=True,
        )
        reloads = [queries.reload_from_wire(a) for a in answers if not isinstance(a, BaseException)]
        failed = [
            f"shard {link.index}: {a}"
            for link, a in zip(links, answers, strict=True)
            if isinstance(a, BaseException)
        ]
        return FlowReload(
            loaded=sorted({flow for r in reloads for flow in r.loaded}),
            skipped=sorted({problem for r in reloads for problem in r.skipped}),
            failed=failed + [f for r in reloads for f in r.failed],
        )

    def statistics(self) -> EngineStatistics:
        directory = self.directory
        router = self._router
        return EngineStatistics(
            shards=len(router.links),
            shard_restarts=directory.restarts if directory else 0,
            started_at=self.started_at,
            links=tuple(link.statistics() for link in self.links),
            held=router.held(),
            moved=router.moved,
            taken_back=router.taken_back,
        )


def _with_placement(
    summary: ConversationSummary, resident: bool, shard: int, waiting: ConversationSummary | None
) -> ConversationSummary:
    if waiting is not None:
        summary = replace(
            summary,
            webhook=waiting.webhook,
            webhook_waiting_s=waiting.webhook_waiting_s,
            mailbox=waiting.mailbox,
        )
    return replace(summary, resident=resident, shard=shard)


def _order(summary: ConversationSummary) -> tuple[str, str]:
    return (summary.key.tenant_id, summary.key.conversation_id)


def _after(key: ConversationKey, other: ConversationKey) -> bool:
    return (key.tenant_id, key.conversation_id) > (other.tenant_id, other.conversation_id)


def _paged(found: list[ConversationSummary], page_size: int) -> ConversationPage:
    if len(found) > page_size:
        return ConversationPage(tuple(found[:page_size]), _encode_cursor(found[page_size - 1].key))
    return ConversationPage(tuple(found), "")


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
