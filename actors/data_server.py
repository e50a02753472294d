"""The shard's end of the data plane: a thread with an event loop that owns the :class:`Shard`.

Thespian delivers the shard actor's few control messages on its own thread; every
command, query and late outcome goes through here instead, over one connection per
edge (``runtime.protocol.transport``). Only this thread touches the Shard.

Frames are not run one by one: whatever arrived during one pass of the loop, on
every connection, is one *round* (``Shard.run_round``), one store transaction, and
its answers are written per connection in one go. A busy shard therefore commits
many batches at once, and an idle one answers a lone request at once. A webhook
that finishes wakes the loop (``call_soon_threadsafe``), and its late outcomes are
pushed on the connection the command came from.

A generation's text comes the same way, from its model call's thread (``Shard.on_delta``):
pieces that arrive while the loop is busy share one DELTA frame per connection, in the
order written, and always go out before the outcome of their command: the thread
schedules the send before it can schedule its turn's end, and whatever sends outcomes sends
the pieces still waiting first (a pass over finished calls that another call's end scheduled
may find this one finished too). A CANCEL frame (the edge's
caller went away) stops the generation its command waits on, or marks it if it is still
queued behind another turn (it runs without asking the model), after the round that arrived
with it, so that a command and its cancel sent together meet in that order.

A peer's bad input costs that peer its connection and nobody else anything: a frame
that is not the record it claims to be closes its connection before it is queued
(so it never reaches a round other connections' batches ride in); the connections
are bounded (``max_connections``), idle ones are closed, and reading stops while too
much waits to be run or while a peer does not read its answers, so that what the
shard buffers stays bounded whatever its peers do.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from confab.actors import queries
from confab.actors.shard import Origin, Shard
from confab.runtime import eventloop
from confab.runtime.errors import InternalError
from confab.runtime.protocol import codec, transport
from confab.runtime.protocol.records import (
    ANSWER,
    BATCH,
    CANCEL,
    DEFERRED_OUTCOME,
    DELTA,
    EDGE_ROLE,
    LATE,
    OUTCOMES,
    QUERY,
    SHARD_ROLE,
    Answer,
    CommandBatch,
    LateOutcomes,
    OutcomeBatch,
    Query,
    TextDelta,
    cancels_from_frame,
    delta_entry_wire,
    deltas_frame,
    error_outcome,
    events_frame,
)
from confab.runtime.protocol.security import DataPlaneSettings

log = logging.getLogger(__name__)

# A round that follows the last one within GROUP_WINDOW_S waits GROUP_DELAY_S for company.
GROUP_WINDOW_S = 0.002
GROUP_DELAY_S = 0.0005
OWNERSHIP_TICK_S = 0.1  # how often virtual shards are claimed, renewed and released
# How often commands waiting behind a webhook are looked at for a deadline that passed.
EXPIRE_TICK_S = 0.05


class ShardServer:
    def __init__(self, shard: Shard, addresses: list[str], settings: DataPlaneSettings | None = None) -> None:
        self.shard = shard
        self.addresses = addresses
        self.settings = settings if settings is not None else shard.settings.data_plane
        self._loop = eventloop.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=f"confab-shard-{shard.index}", daemon=True)
        self._started: Future[list[str]] = Future()
        self._servers: list[asyncio.Server] = []
        self._holdings: tuple[int, dict[int, int]] = (0, {})
        self._connections: set[transport.FrameConnection] = set()
        self._batches: list[tuple[transport.FrameConnection, CommandBatch]] = []
        self._queries: list[tuple[transport.FrameConnection, Query]] = []
        # Commands whose caller went away: (connection, batch id, position), after the next round.
        self._cancels: list[tuple[transport.FrameConnection, int, int]] = []
        # Pieces of generated text from model threads, (connection, DELTA entry), until the loop
        # sends them; _deltas_scheduled: a send is scheduled already (both under _deltas_lock).
        self._deltas: list[tuple[Any, list[Any]]] = []
        self._deltas_lock = threading.Lock()
        self._deltas_scheduled = False
        self._scheduled = False
        self._busy = False  # reading is paused: too many frames wait for a round
        self._last_round_end = 0.0
        shard.on_webhook_done = self._webhook_done
        shard.on_delta = self._delta

    def start(self, timeout: float = 10.0) -> list[str]:
        """Listen; return the addresses the shard really listens on (edges connect there)."""
        self._thread.start()
        return self._started.result(timeout)

    @property
    def holdings(self) -> tuple[int, dict[int, int]]:
        """(version, {vshard: epoch}) as of the last change; safe to read from any thread."""
        return self._holdings

    def want(self, vshards: frozenset[int], claim: bool) -> None:
        """The virtual shards this shard should hold now (called on the actor's thread)."""
        self._loop.call_soon_threadsafe(self._want, vshards, claim)

    def _want(self, vshards: frozenset[int], claim: bool) -> None:
        self.shard.ownership.want(vshards, claim=claim)
        self._tick_ownership()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        bound: list[str] = []
        try:
            for address in self.addresses:
                server, where = self._loop.run_until_complete(
                    transport.serve(address, self._accept, self.settings)
                )
                self._servers.append(server)
                bound.append(where)
        except BaseException as exc:
            for server in self._servers:
                server.close()
            self._started.set_exception(exc)
            return
        self._started.set_result(bound)
        self._loop.call_soon(self._keep_ownership)
        self._loop.call_soon(self._close_idle)
        self._loop.call_soon(self._expire_queued)
        try:
            self._loop.run_forever()
        finally:
            for server in self._servers:
                server.close()
            for connection in list(self._connections):
                connection.close()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def _accept(self) -> transport.FrameConnection:
        return transport.FrameConnection(
            self._received,
            self._closed,
            settings=self.settings,
            role=SHARD_ROLE,
            on_opened=self._admit,
            pause_while_unwritable=True,  # a peer that does not read its answers is not read either
        )

    def _admit(self, connection: transport.FrameConnection) -> bool:
        limit = self.settings.max_connections
        if len(self._connections) >= limit:
            log.warning(
                "shard %d: refusing the connection from %s: it has %d (data_plane.max_connections)",
                self.shard.index,
                connection.peer,
                limit,
            )
            return False
        self._connections.add(connection)
        if self._busy:
            connection.hold_reading(transport.BUSY, True)
        return True

    def _closed(self, connection: transport.FrameConnection, exc: Exception | None) -> None:
        self._connections.discard(connection)

    def _close_idle(self) -> None:
        """Close connections that sent nothing for ``idle_timeout_s`` (an edge's heartbeats keep
        its own open); looked at a few times per timeout."""
        timeout = self.settings.idle_timeout_s
        now = time.monotonic()
        for connection in list(self._connections):
            if now - connection.last_received > timeout and not connection.closed:
                log.info("shard %d: closing %s: idle for %.0fs", self.shard.index, connection.peer, timeout)
                connection.close()
        self._loop.call_later(min(max(timeout / 4, 0.01), 5.0), self._close_idle)

    # The loop's work ----------------------------------------------------------------

    def _received(self, connection: transport.FrameConnection, frames: list[Any]) -> None:
        now = time.perf_counter()
        batches: list[CommandBatch] = []
        asked: list[Query] = []
        cancels: list[tuple[int, int]] = []
        try:
            for value in frames:
                kind = value[0] if isinstance(value, list) and value else None
                if kind == BATCH:
                    batch = CommandBatch.from_frame(value)
                    batch.received_at = now
                    batches.append(batch)
                elif kind == QUERY:
                    query = Query.from_frame(value)
                    query.received_at = now
                    asked.append(query)
                elif kind == CANCEL:
                    cancels += cancels_from_frame(value)
                else:
                    raise ValueError(f"a frame of kind {kind!r} has no place here")
        except Exception as exc:  # any shape this shard cannot run: this connection's problem only
            log.warning(
                "shard %d: closing the connection with %s: a bad frame: %s",
                self.shard.index,
                connection.peer,
                exc,
            )
            connection.close()
            return
        self._batches.extend((connection, batch) for batch in batches)
        self._queries.extend((connection, query) for query in asked)
        self._cancels.extend((connection, batch_id, position) for batch_id, position in cancels)
        waiting = len(self._batches) + len(self._queries) + len(self._cancels)
        if not self._busy and waiting >= self.settings.max_inbound_frames:
            self._busy = True  # read nothing more until the next round has taken them
            for other in self._connections:
                other.hold_reading(transport.BUSY, True)
        self._schedule()

    def _schedule(self) -> None:
        # Everything that arrives before the loop gets to the round rides in it. Under load
        # (the last round ended a moment ago) the round waits a little longer for more: a
        # commit costs about as much CPU for one command as for fifty, and on a busy host
        # that CPU is what the edge needs. An idle shard answers at once.
        if not self._scheduled:
            self._scheduled = True
            if time.perf_counter() - self._last_round_end < GROUP_WINDOW_S:
                self._loop.call_later(GROUP_DELAY_S, self._run_round)
            else:
                self._loop.call_soon(self._run_round)

    def _run_round(self) -> None:
        self._scheduled = False
        out: dict[transport.FrameConnection, list[Any]] = {}
        if self._batches:
            batches, self._batches = self._batches, []
            for connection, answer in self.shard.run_round(batches):
                out.setdefault(connection, []).append(answer.to_frame())
        if self._queries:
            asked, self._queries = self._queries, []
            for connection, query in asked:
                out.setdefault(connection, []).append(queries.answer(self.shard, query).to_frame())
        self._send_deltas()  # an abandoned generation's pieces go before its outcome (moved_late)
        for connection, frames in out.items():
            self._send(connection, frames)
        if self._cancels:
            self._cancel_generations()
        if self._busy:
            self._busy = False
            for connection in self._connections:
                connection.hold_reading(transport.BUSY, False)
        if self.shard.moved_late:  # a fenced-out write gave deferred commands back
            self._send_moved()
        self._send_events()
        self._note_holdings()
        self._last_round_end = time.perf_counter()

    def _keep_ownership(self) -> None:
        self._tick_ownership()
        self._loop.call_later(OWNERSHIP_TICK_S, self._keep_ownership)

    def _tick_ownership(self) -> None:
        try:
            self.shard.tick_ownership()
        except Exception:  # the next tick tries again; trust runs out on its own
            log.exception("shard %d: keeping its virtual shards failed", self.shard.index)
        self._note_holdings()
        self._send_moved()

    def _note_holdings(self) -> None:
        ownership = self.shard.ownership
        if ownership.version != self._holdings[0]:
            self._holdings = (ownership.version, dict(ownership.held))  # one reference, swapped whole

    def _send_moved(self) -> None:
        by_connection: dict[Any, list[tuple[int, int, list[Any]]]] = {}
        for connection, entry in self.shard.take_moved():
            by_connection.setdefault(connection, []).append(entry)
        for connection, entries in by_connection.items():
            if connection in self._connections:
                self._send(connection, [LateOutcomes(entries).to_frame()])

    def _send(self, connection: transport.FrameConnection, frames: list[Any]) -> None:
        limit = self.settings.max_frame_bytes
        connection.send_encoded(b"".join(data for value in frames for data in fit_frames(value, limit)))

    def _expire_queued(self) -> None:
        """Answer DEADLINE_EXCEEDED, now, to what waits behind a webhook past its deadline."""
        if self.shard.waiting:
            try:
                self._send_late(self.shard.expire_queued())
            except Exception:  # the next tick tries again
                log.exception("shard %d: expiring queued commands failed", self.shard.index)
        self._loop.call_later(EXPIRE_TICK_S, self._expire_queued)

    def _webhook_done(self) -> None:
        """Called on a webhook thread."""
        self._loop.call_soon_threadsafe(self._finish_webhooks)

    def _finish_webhooks(self) -> None:
        try:
            late = self.shard.finish_webhooks()
        except Exception:  # the edge times those requests out; the shard keeps serving
            log.exception("shard %d: finishing webhook turns failed", self.shard.index)
            return
        # A generation this pass finished may have pieces not sent yet (this pass was scheduled by
        # another call's end, before the send its pieces scheduled): they go before its outcome.
        self._send_deltas()
        self._send_late(late)
        self._send_moved()
        self._send_events()

    def _send_events(self) -> None:
        """Operator actions and people's messages just stored, to every edge connected: whichever
        edge holds a stream of the conversation passes it on at once."""
        events = self.shard.take_events()
        if events:
            frame = events_frame(events)
            for connection in list(self._connections):
                if connection.peer_role == EDGE_ROLE:
                    self._send(connection, [frame])

    def _cancel_generations(self) -> None:
        """Stop the generations whose callers went away (their turns end on their own, late)."""
        cancels, self._cancels = self._cancels, []
        for connection, batch_id, position in cancels:
            try:
                self.shard.cancel_generation(connection, batch_id, position)
            except Exception:  # the generation runs to its end; its caller hears nothing of it
                log.exception("shard %d: cancelling a generation failed", self.shard.index)

    def _delta(self, origin: Origin, stream_id: str, sequence: int, text: str) -> None:
        """A piece of a generation's text (called on its model call's thread, in the order written)."""
        entry = delta_entry_wire(origin.batch_id, origin.index, TextDelta(stream_id, sequence, text))
        with self._deltas_lock:
            self._deltas.append((origin.sender, entry))
            if self._deltas_scheduled:
                return  # the send already scheduled takes it along
            self._deltas_scheduled = True
            # Scheduled under the lock: a thread that finds a send scheduled knows it was scheduled
            # before anything that thread schedules next (its turn's end among them).
            try:
                self._loop.call_soon_threadsafe(self._send_deltas)
            except RuntimeError:  # the loop is closed: the server stopped, nobody is listening
                self._deltas_scheduled = False
                self._deltas.clear()

    def _send_deltas(self) -> None:
        """Whatever pieces arrived since the last send, one DELTA frame per connection. Also
        called before outcomes are sent: a send still scheduled then finds nothing, or later pieces."""
        with self._deltas_lock:
            if not self._deltas:
                return
            taken, self._deltas = self._deltas, []
            self._deltas_scheduled = False
        by_connection: dict[Any, list[list[Any]]] = {}
        for sender, entry in taken:
            by_connection.setdefault(sender, []).append(entry)
        for connection, entries in by_connection.items():
            if connection in self._connections:  # an edge that went away gets nothing
                self._send(connection, [deltas_frame(entries)])

    def _send_late(self, late: list[tuple[Any, tuple[int, int, list[Any]]]]) -> None:
        by_connection: dict[Any, list[tuple[int, int, list[Any]]]] = {}
        for connection, entry in late:
            by_connection.setdefault(connection, []).append(entry)
        for connection, entries in by_connection.items():
            if connection in self._connections:  # an edge that went away gets nothing
                self._send(connection, [LateOutcomes(entries).to_frame()])


def fit_frames(value: list[Any], limit: int) -> list[bytes]:
    """``value`` as frames of at most ``limit`` bytes, which the peer's decoder accepts.

    Outcomes too big for one frame go as DEFERRED, then in LATE frames that fit (the link
    already matches those by batch and position); an outcome or answer too big for any
    frame is replaced by an INTERNAL error rather than sent and refused.
    """
    data = codec.frame(value)
    if len(data) <= limit:
        return [data]
    kind = value[0]
    if kind == OUTCOMES:
        batch = OutcomeBatch.from_frame(value)
        head = OutcomeBatch(batch.batch_id, [DEFERRED_OUTCOME] * len(batch.outcomes), batch.lifecycle)
        entries = [(batch.batch_id, i, outcome) for i, outcome in enumerate(batch.outcomes)]
        return [codec.frame(head.to_frame()), *_late_frames(entries, limit)]
    if kind == LATE:
        return _late_frames(LateOutcomes.from_frame(value).entries, limit)
    if kind == DELTA:
        return _delta_frames(value[1], limit)
    if kind == ANSWER:
        failed = Answer.failed(value[1], InternalError(f"the answer is larger than {limit} bytes"))
        return [codec.frame(failed.to_frame())]
    log.error("a frame of kind %r is larger than %d bytes: not sent", kind, limit)
    return []


_FRAME_OVERHEAD = 64  # header, tag and list headers of a LATE or DELTA frame, generously


def _late_frames(entries: list[tuple[int, int, list[Any]]], limit: int) -> list[bytes]:
    fitted: list[list[Any]] = []
    for batch_id, position, outcome in entries:
        if len(codec.pack([batch_id, position, outcome])) + _FRAME_OVERHEAD > limit:
            too_big = InternalError(f"the reply is larger than {limit} bytes (data_plane.max_frame_bytes)")
            outcome = error_outcome(too_big)
        fitted.append([batch_id, position, outcome])
    return _frames_of(fitted, limit, _late_frame)


def _late_frame(entries: list[list[Any]]) -> list[Any]:
    return LateOutcomes([(e[0], e[1], e[2]) for e in entries]).to_frame()


def _delta_frames(entries: list[list[Any]], limit: int) -> list[bytes]:
    fitted = []
    for entry in entries:
        if len(codec.pack(entry)) + _FRAME_OVERHEAD > limit:
            # Not sent rather than refused by the edge: the outcome carries the whole text anyway.
            log.error("a piece of generated text is larger than %d bytes: not sent as a delta", limit)
            continue
        fitted.append(entry)
    return _frames_of(fitted, limit, deltas_frame)


def _frames_of(
    entries: list[list[Any]], limit: int, make: Callable[[list[list[Any]]], list[Any]]
) -> list[bytes]:
    """``entries`` (each one fits) as frames ``make`` makes of consecutive runs, each within ``limit``."""
    frames: list[bytes] = []
    chunk: list[list[Any]] = []
    size = _FRAME_OVERHEAD
    for entry in entries:
        entry_size = len(codec.pack(entry))
        if chunk and size + entry_size > limit:
            frames.append(codec.frame(make(chunk)))
            chunk, size = [], _FRAME_OVERHEAD
        chunk.append(entry)
        size += entry_size
    if chunk:
        frames.append(codec.frame(make(chunk)))
    return frames
