"""One connection from the edge to one shard, on the edge's event loop.

Requests become commands queued here; whatever is queued when the loop gets to it
goes out as one batch frame, so requests that arrive together share a frame, and a
lone request goes out at once. Up to ``max_batches_in_flight`` batches are in flight
(the connection is one ordered stream and the shard runs frames in arrival order, which
keeps every conversation's commands in order); what is queued while that many are out
rides the next batch once one is answered. Under load that makes batches grow with the
load instead of one frame, one round and one commit per request (at 64 calls in flight:
about 3 commands per frame with 2 in flight, 1.02 with no bound). Outcomes are matched
to commands by batch id and position, never by arrival.

When the connection breaks (the shard died, or is being replaced) every command
sent and not yet answered is put back, in its original order, in front of what is
still queued; once the directory names the shard's new address the link connects
there and sends them again. The message ids they carry make that safe: a command
the old shard had already applied is answered from its stored reply.

A command the shard answers MOVED (it does not hold the command's virtual shard at
the epoch it was routed by) is not settled here: it goes back to the router
(``on_moved``), which sends it again once it knows the new holder. The link counts
what it has outstanding per virtual shard, so that the router can wait for a virtual
shard's commands to be done here before it sends later ones elsewhere
(``drain``/``on_drained``): one conversation's commands never overtake each other.

A command that wants deltas (its caller shows the reply's text as it is written) is
known here by where it was sent, its batch id and position: the shard's DELTA entries
name it so and go to its listener (``Pending.on_delta``) as they come, on the loop;
pieces for a command whose caller is gone are dropped. When its caller gives up first
(its future is cancelled) while the shard has it, a CANCEL frame names it, and the
shard stops the generation its turn waits on.

A heartbeat (a status query) runs every ``heartbeat_interval_s``: a shard that has
answered nothing for ``heartbeat_timeout_s`` is reported unresponsive, and its latest
figures are what health checks and the cluster view show without asking again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confab.runtime.errors import ConfabError, DeadlineExceeded, InvalidArgument, Unavailable
from confab.runtime.inspection import ShardStatus
from confab.runtime.protocol import codec, queries, transport
from confab.runtime.protocol.directory import ShardEndpoint
from confab.runtime.protocol.records import (
    ANSWER,
    DELTA,
    EVENT,
    LATE,
    OUTCOMES,
    Answer,
    Command,
    ConversationEvent,
    LateOutcomes,
    Outcome,
    OutcomeBatch,
    Query,
    Routed,
    RoutedBatch,
    TextDelta,
    cancel_frame,
    decode_outcome,
    deltas_from_frame,
    events_from_frame,
    is_deferred,
    is_moved,
)
from confab.runtime.protocol.security import DataPlaneSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
RECONNECT_FIRST_S, RECONNECT_MOST_S = 0.02, 1.0
# Commands waiting behind a webhook are failed after this long without an outcome.
DEFERRED_TIMEOUT_S = 120.0
TICK_S = 0.25  # how often deadlines and timeouts are looked at

# Hears the pieces of a command's reply text as they are written (on the loop, in order).
DeltaListener = Callable[[TextDelta], None]


@dataclass(slots=True)
class Pending:
    """A command on its way: where its outcome goes, and what the router needs to place it again.

    The router makes it and alone sets ``epoch`` (again whenever it places the command anew);
    the link sends the command with it (:class:`~confab.runtime.protocol.records.Routed`)."""

    command: Command
    future: asyncio.Future[Outcome]
    deadline: float | None  # time.monotonic() after which the command must not start
    queued_at: float
    vshard: int
    seq: int  # submission order across the engine: re-placed commands keep their place
    epoch: int = 0  # of its virtual shard's holder the router sent it to
    # Where the reply's text goes as it is written (the command wants deltas); None: nowhere.
    on_delta: DeltaListener | None = None


@dataclass(frozen=True, slots=True)
class LinkSettings:
    max_batch: int = 512
    max_batches_in_flight: int = 2
    max_queued: int = 20_000
    shard_timeout_s: float = 30.0
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    # TLS to other hosts' shards, the cluster's name for the HELLO, the largest frame.
    data_plane: DataPlaneSettings = field(default_factory=DataPlaneSettings)


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    shard: int
    host: str
    connected: bool
    responsive: bool
    queued: int
    in_flight: int
    batches_sent: int
    commands_sent: int
    resends: int
    expired: int
    max_batch: int


class ShardLink:
    def __init__(self, endpoint: ShardEndpoint, address: str, settings: LinkSettings) -> None:
        self.index = endpoint.index
        self.shard_id = endpoint.shard_id
        self.endpoint = endpoint
        self.address = address  # where this edge connects (a Unix socket on the shard's own host)
        self.settings = settings
        # Set by the router: a command answered MOVED, and a virtual shard with nothing left here.
        self.on_moved: Callable[[ShardLink, Pending], None] = lambda link, pending: None
        self.on_drained: Callable[[ShardLink, int], None] = lambda link, vshard: None
        self.outstanding: dict[int, int] = {}  # vshard -> commands here not yet done
        self._draining: set[int] = set()
        # Set by the engine: whether to ask for activations and passivations, and who hears of them.
        self.want_lifecycle: Callable[[], bool] = lambda: False
        self.on_lifecycle: Callable[[int, list[list[str]]], None] | None = None
        # Who hears of operator actions and people's messages the shard stored (the engine).
        self.on_events: Callable[[list[ConversationEvent]], None] = lambda events: None
        # Told whenever the connection is made or lost (health re-checks at once).
        self.on_connection_change: Callable[[], None] = lambda: None
        self.status: ShardStatus | None = None  # the shard's figures from its last heartbeat
        self.last_heard = 0.0  # time.monotonic() of the last frame from the shard; 0: never
        self.last_error = ""
        self._connection: transport.FrameConnection | None = None
        self._queue: deque[Pending] = deque()
        self._in_flight: dict[int, tuple[list[Pending], float]] = {}
        self._deferred: dict[tuple[int, int], tuple[Pending, float]] = {}
        # Commands with a delta listener, by (batch id, position) as sent, until their outcome.
        self._listening: dict[tuple[int, int], Pending] = {}
        self._unsent_cancels: list[tuple[int, int]] = []
        self._queries: dict[int, asyncio.Future[Any]] = {}
        self._unsent_queries: list[Query] = []
        self._batch_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._flush_scheduled = False
        self._endpoint_changed = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._batches_sent = self._commands_sent = self._resends = self._expired = self._largest = 0

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._stay_connected(), name=f"confab-link-{self.index}"),
            asyncio.create_task(self._heartbeat(), name=f"confab-heartbeat-{self.index}"),
            asyncio.create_task(self._tick(), name=f"confab-link-timeouts-{self.index}"),
        ]

    def update_endpoint(self, endpoint: ShardEndpoint, address: str) -> None:
        """The directory changed: connect to the shard's new address if it has one."""
        if (endpoint.generation, address) == (self.endpoint.generation, self.address):
            return
        self.endpoint = endpoint
        self.address = address
        if self._connection is not None:
            self._connection.close()  # the old process is gone or going: its answers will not come
        self._endpoint_changed.set()

    async def close(self, timeout_s: float) -> None:
        """Stop taking commands; let what is queued and in flight finish (for up to ``timeout_s``)."""
        self._closing = True
        give_up = time.monotonic() + timeout_s
        while (self._queue or self._in_flight or self._deferred) and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._connection is not None:
            self._connection.close()
        self._fail_everything(Unavailable("the engine stopped before the shard answered"))

    # Commands --------------------------------------------------------------------------

    def room(self) -> int:
        """How many more commands may be queued here now."""
        return self.settings.max_queued - len(self._queue) - sum(len(p) for p, _ in self._in_flight.values())

    def submit(self, pending: list[Pending]) -> None:
        """Queue commands (sent in this order); each one's future gets its outcome."""
        if self._closing:
            raise Unavailable("the server is shutting down")
        outstanding = self.outstanding
        for p in pending:
            outstanding[p.vshard] = outstanding.get(p.vshard, 0) + 1
        self._queue.extend(pending)
        self._schedule_flush()

    def drain(self, vshard: int) -> bool:
        """Whether nothing of ``vshard`` is outstanding here; if something is, ``on_drained``
        hears when it is all done (answered, failed or handed back)."""
        if not self.outstanding.get(vshard):
            return True
        self._draining.add(vshard)
        return False

    def take_back(self) -> list[Pending]:
        """Everything not yet done, oldest first, for the router to place elsewhere (the shard is gone)."""
        taken = [p for p in self._queue if not p.future.done()]
        taken += [p for ps, _ in self._in_flight.values() for p in ps if not p.future.done()]
        taken += [p for p, _ in self._deferred.values() if not p.future.done()]
        self._queue.clear()
        self._in_flight.clear()
        self._deferred.clear()
        self._listening.clear()
        self.outstanding.clear()
        self._draining.clear()
        taken.sort(key=lambda p: p.seq)
        return taken

    def _done(self, p: Pending) -> None:
        """``p`` is settled, or handed back: it is no longer outstanding here."""
        left = self.outstanding.get(p.vshard, 0) - 1
        if left > 0:
            self.outstanding[p.vshard] = left
            return
        self.outstanding.pop(p.vshard, None)
        if p.vshard in self._draining:
            self._draining.discard(p.vshard)
            self.on_drained(self, p.vshard)

    def _finish(self, p: Pending, outcome: Outcome) -> None:
        _settle(p.future, outcome)
        self._done(p)

    def _moved(self, p: Pending) -> None:
        self._done(p)
        if not p.future.done():
            self.on_moved(self, p)

    def _schedule_flush(self) -> None:
        # Everything submitted before the loop gets to the flush rides in the same frame.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        connection = self._connection
        if connection is None or connection.closed:
            return
        frames: list[bytes] = [codec.frame(q.to_frame()) for q in self._unsent_queries]
        self._unsent_queries.clear()
        if self._unsent_cancels:
            frames.append(codec.frame(cancel_frame(self._unsent_cancels)))
            self._unsent_cancels = []
        now = time.monotonic()
        while (
            self._queue and connection.writable and len(self._in_flight) < self.settings.max_batches_in_flight
        ):
            taken: list[Pending] = []
            while self._queue and len(taken) < self.settings.max_batch:
                pending = self._queue.popleft()
                if pending.future.done():  # the caller gave up (cancelled) meanwhile
                    self._done(pending)
                    continue
                if pending.deadline is not None and pending.deadline <= now:
                    self._expired += 1
                    self._finish(pending, DeadlineExceeded("the deadline passed before the shard took it"))
                    continue
                taken.append(pending)
            if not taken:
                continue
            encoded = self._fitting(taken, now)
            if encoded is None:
                continue
            batch_id, data = encoded
            self._in_flight[batch_id] = (taken, now)
            for position, p in enumerate(taken):
                if p.on_delta is not None:
                    self._listen(p, batch_id, position)
            frames.append(data)
            self._batches_sent += 1
            self._commands_sent += len(taken)
            self._largest = max(self._largest, len(taken))
        if frames:
            connection.send_encoded(b"".join(frames))

    def _fitting(self, taken: list[Pending], now: float) -> tuple[int, bytes] | None:
        """The batch frame of ``taken``, at most ``max_frame_bytes`` long (the shard closes a
        connection that sends a longer one): what does not fit goes back to the front of the
        queue, in order, for the next batch; a command too big for any frame fails alone.
        ``taken`` is cut down to what the frame carries. None: nothing was left to send.
        Each command goes with its router's epoch and what its deadline leaves at ``now``
        (the shard honours the deadline too)."""
        limit = self.settings.data_plane.max_frame_bytes
        want_lifecycle = self.want_lifecycle()
        routed = [Routed(p.command, p.epoch, None if p.deadline is None else p.deadline - now) for p in taken]
        while True:
            # An id a frame too big used is never used again: ids only need to be unique.
            batch = RoutedBatch(next(self._batch_ids), routed[: len(taken)], want_lifecycle)
            data = codec.frame(batch.to_frame())
            if len(data) <= limit:
                return batch.batch_id, data
            if len(taken) == 1:
                self._finish(
                    taken.pop(),
                    InvalidArgument(f"the request is larger than the data plane carries ({limit} bytes)"),
                )
                return None
            half = len(taken) // 2
            self._queue.extendleft(reversed(taken[half:]))
            del taken[half:]

    # Deltas ----------------------------------------------------------------------------

    def _listen(self, p: Pending, batch_id: int, position: int) -> None:
        """``p`` went out as (batch id, position): its deltas come so named, and if its caller
        gives up before its outcome the shard is told to stop its generation."""
        self._listening[(batch_id, position)] = p
        p.future.add_done_callback(functools.partial(self._caller_gone, p, batch_id, position))

    def _caller_gone(self, p: Pending, batch_id: int, position: int, future: asyncio.Future[Outcome]) -> None:
        # Only if the shard still has it as sent then: an outcome, a lost connection or a
        # resend under another id took it out of _listening already.
        if future.cancelled() and self._listening.get((batch_id, position)) is p:
            del self._listening[(batch_id, position)]
            self._unsent_cancels.append((batch_id, position))
            self._schedule_flush()

    def _unlisten(self, batch_id: int, position: int) -> None:
        self._listening.pop((batch_id, position), None)

    def _deltas(self, value: list[Any]) -> None:
        listening = self._listening
        for batch_id, position, delta in deltas_from_frame(value):
            p = listening.get((batch_id, position))
            if p is None or p.on_delta is None or p.future.done():
                continue  # nobody listens any more: dropped
            try:
                p.on_delta(delta)
            except Exception:  # one listener's bug is its own
                log.exception("a delta listener of %s failed", p.command.key)

    # Queries ---------------------------------------------------------------------------

    async def query(self, name: str, args: list[Any], timeout_s: float, scope: str | None = None) -> Any:
        """Ask the shard ``name`` (``protocol.queries``); its result, or the error it answered.
        ``scope``: the tenant the caller may see (None: every tenant), which the shard enforces."""
        if self._closing:
            raise Unavailable("the server is shutting down")
        query = Query(next(self._query_ids), name, args, scope)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queries[query.query_id] = future
        self._unsent_queries.append(query)
        self._schedule_flush()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise Unavailable(f"shard {self.index} did not answer within {timeout_s:g}s") from None
        finally:
            self._queries.pop(query.query_id, None)

    # Frames from the shard -----------------------------------------------------------------

    def _received(self, connection: transport.FrameConnection, frames: list[Any]) -> None:
        if connection is not self._connection:
            return  # an old connection's last words: its commands were put back already
        self.last_heard = time.monotonic()
        try:
            self._read(frames)
        except Exception as exc:  # a frame not shaped as it claims: what it left unanswered is sent again
            log.warning(
                "shard %s at %s: dropping the connection: a bad frame: %s",
                self.shard_id,
                connection.peer,
                exc,
            )
            connection.close()

    def _read(self, frames: list[Any]) -> None:
        for value in frames:
            kind = value[0]
            if kind == OUTCOMES:
                self._settle_batch(OutcomeBatch.from_frame(value))
            elif kind == LATE:
                self._settle_late(LateOutcomes.from_frame(value))
            elif kind == EVENT:
                self.on_events(events_from_frame(value))
            elif kind == DELTA:
                self._deltas(value)
            elif kind == ANSWER:
                answer = Answer.from_frame(value)
                future = self._queries.get(answer.query_id)
                if future is not None and not future.done():
                    if answer.ok:
                        future.set_result(answer.result)
                    else:
                        future.set_exception(answer.error())

    def _settle_batch(self, answer: OutcomeBatch) -> None:
        entry = self._in_flight.pop(answer.batch_id, None)
        if self._queue:  # a batch fewer in flight: what waits behind the bound may go
            self._schedule_flush()
        if entry is None:
            return  # timed out already
        pending, _ = entry
        now = time.monotonic()
        for i, (p, outcome) in enumerate(zip(pending, answer.outcomes, strict=True)):
            if is_deferred(outcome):  # behind a webhook: a LATE frame answers it
                self._deferred[(answer.batch_id, i)] = (p, now)
                continue
            if p.on_delta is not None:
                self._unlisten(answer.batch_id, i)
            if is_moved(outcome):
                self._moved(p)
            else:
                self._finish(p, decode_outcome(outcome))
        if answer.lifecycle and self.on_lifecycle is not None:
            self.on_lifecycle(self.index, answer.lifecycle)

    def _settle_late(self, late: LateOutcomes) -> None:
        for batch_id, position, outcome in late.entries:
            entry = self._deferred.pop((batch_id, position), None)
            if entry is not None:
                if entry[0].on_delta is not None:
                    self._unlisten(batch_id, position)
                if is_moved(outcome):
                    self._moved(entry[0])
                else:
                    self._finish(entry[0], decode_outcome(outcome))

    # Connection ------------------------------------------------------------------------

    async def _stay_connected(self) -> None:
        pause = RECONNECT_FIRST_S
        while not self._closing:
            endpoint = self.endpoint
            if self._connection is not None and not self._connection.closed:
                self._endpoint_changed.clear()
                await self._endpoint_changed.wait()
                continue
            if endpoint.serving:
                plane = self.settings.data_plane
                try:
                    connection = transport.FrameConnection(
                        self._received, self._lost, self._schedule_flush, settings=plane
                    )
                    await transport.connect(self.address, connection, CONNECT_TIMEOUT_S, plane)
                except (OSError, TimeoutError) as exc:
                    self.last_error = f"cannot connect to {self.address}: {exc}"
                else:
                    self._connected(connection)
                    pause = RECONNECT_FIRST_S
                    continue
            else:
                self.last_error = endpoint.error or "the shard is starting"
            self._endpoint_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._endpoint_changed.wait(), pause)
            pause = min(pause * 2, RECONNECT_MOST_S)

    def _connected(self, connection: transport.FrameConnection) -> None:
        self._connection = connection
        self.last_error = ""
        self.last_heard = time.monotonic()
        self._flush()
        self.on_connection_change()

    def _lost(self, connection: transport.FrameConnection, exc: Exception | None) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self.last_error = f"connection to shard {self.index} lost" + (f": {exc}" if exc else "")
        # Everything the shard did not answer goes back in front, in the order it was sent.
        unanswered = [
            (batch_id, i, p) for batch_id, (ps, _) in self._in_flight.items() for i, p in enumerate(ps)
        ]
        unanswered += [(batch_id, i, p) for (batch_id, i), (p, _) in self._deferred.items()]
        unanswered.sort(key=lambda entry: (entry[0], entry[1]))
        self._in_flight.clear()
        self._deferred.clear()
        # Sent again under new ids (their deltas start over there); a cancel not yet sent is moot.
        self._listening.clear()
        self._unsent_cancels = []
        resent = []
        for _, _, p in unanswered:
            if p.future.done():
                self._done(p)
            else:
                resent.append(p)
        self._resends += len(resent)
        self._queue.extendleft(reversed(resent))
        for future in self._queries.values():
            if not future.done():
                future.set_exception(Unavailable(f"shard {self.index} went away before answering"))
        self._endpoint_changed.set()
        self.on_connection_change()
        if resent:
            log.warning("shard %d: connection lost; %d commands will be sent again", self.index, len(resent))

    # Timers ----------------------------------------------------------------------------

    async def refresh_status(self, timeout_s: float) -> None:
        """Ask the shard for its figures now; a shard that does not answer in time keeps its old ones."""
        if not self.connected:
            return
        try:
            self.status = queries.status_from_wire(await self.query(queries.STATUS, [], timeout_s))
        except ConfabError as exc:
            self.last_error = exc.message

    async def _heartbeat(self) -> None:
        settings = self.settings
        while not self._closing:
            if self._connection is None:
                await asyncio.sleep(settings.heartbeat_interval_s / 4)
                continue
            try:
                status = await self.query(queries.STATUS, [], settings.heartbeat_timeout_s)
            except ConfabError as exc:
                self.last_error = exc.message
            else:
                self.status = queries.status_from_wire(status)
            await asyncio.sleep(settings.heartbeat_interval_s)

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.closed

    @property
    def responsive(self) -> bool:
        return (
            self.connected
            and self.last_heard > 0
            and time.monotonic() - self.last_heard < self.settings.heartbeat_timeout_s
        )

    async def _tick(self) -> None:
        while not self._closing:
            await asyncio.sleep(TICK_S)
            self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        """Fail what waited too long: queued past its deadline or the shard timeout, sent and unanswered."""
        timeout = self.settings.shard_timeout_s
        if self._queue:
            kept: deque[Pending] = deque()
            for p in self._queue:
                if p.future.done():
                    self._done(p)
                elif p.deadline is not None and p.deadline <= now:
                    self._expired += 1
                    self._finish(p, DeadlineExceeded("the deadline passed before the shard took it"))
                elif now - p.queued_at > timeout:
                    why = "connected, busy" if self._connection else self.last_error or "unreachable"
                    self._finish(
                        p, Unavailable(f"shard {self.shard_id} did not take it in {timeout:g}s ({why})")
                    )
                else:
                    kept.append(p)
            self._queue = kept
        for batch_id, (pending, sent_at) in list(self._in_flight.items()):
            if now - sent_at > timeout:
                del self._in_flight[batch_id]
                for position, p in enumerate(pending):
                    self._unlisten(batch_id, position)
                    self._finish(p, Unavailable(f"shard {self.shard_id} did not answer in {timeout:g}s"))
                if self._queue:  # room for another batch in flight
                    self._schedule_flush()
        for key, (p, since) in list(self._deferred.items()):
            if now - since > DEFERRED_TIMEOUT_S:
                del self._deferred[key]
                self._unlisten(*key)
                self._finish(p, Unavailable("the shard did not finish the request (webhook)"))

    def _fail_everything(self, error: ConfabError) -> None:
        for p in self.take_back():
            _settle(p.future, error)

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            shard=self.index,
            host=self.endpoint.host,
            connected=self.connected,
            responsive=self.responsive,
            queued=len(self._queue),
            in_flight=sum(len(p) for p, _ in self._in_flight.values()) + len(self._deferred),
            batches_sent=self._batches_sent,
            commands_sent=self._commands_sent,
            resends=self._resends,
            expired=self._expired,
            max_batch=self._largest,
        )


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
