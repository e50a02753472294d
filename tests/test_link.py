"""The edge's link to one shard, against a scripted shard on a real Unix socket.

The scripted shard answers what it is told to; the link must keep order, share
frames between commands that arrive together, put back and re-send what a lost
connection left unanswered (in its original order, to the shard's new address),
match late outcomes, and time out what a silent shard never answers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from confab.runtime import eventloop
from confab.runtime.engine.link import DeltaListener, LinkSettings, Pending, ShardLink
from confab.runtime.errors import DeadlineExceeded, InvalidArgument, Unavailable
from confab.runtime.model import Content, ConversationKey, ConversationState, InboundMessage, StateResult
from confab.runtime.protocol import codec, queries, transport
from confab.runtime.protocol.directory import ShardEndpoint
from confab.runtime.protocol.records import (
    BATCH,
    CANCEL,
    DEFERRED_OUTCOME,
    DELTA,
    DONE,
    QUERY,
    SHARD_ROLE,
    Answer,
    Command,
    CommandBatch,
    CommandKind,
    LateOutcomes,
    Outcome,
    OutcomeBatch,
    Query,
    TextDelta,
    cancels_from_frame,
    delta_entry_wire,
    deltas_frame,
    moved_outcome,
)
from confab.runtime.protocol.security import DataPlaneSettings

_ids = itertools.count(1)
_seqs = itertools.count(1)


def command(conversation: str = "c") -> Command:
    return Command(
        CommandKind.TURN,
        f"m-{next(_ids)}",
        ConversationKey("t", conversation),
        InboundMessage("u", Content(text="x")),
    )


def reply_naming(command: Command) -> list[Any]:
    """A DONE outcome whose state names the command, so the test can tell which one it answers."""
    state = ConversationState(command.message_id, "echo", "1")
    return [DONE, codec.pack_state_reply(codec.pack_state(state))]


class ScriptedShard:
    """A data-plane peer: records every batch; answers them unless told to hold them."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.batches: list[CommandBatch] = []
        self.hold = False  # keep batches unanswered
        self.defer = False  # answer with DEFERRED
        self.silent = False  # answer nothing at all, as a stopped process would
        self.moved: set[str] = set()  # conversations whose commands are answered MOVED
        self.cancels: list[tuple[int, int]] = []  # (batch id, position) of every CANCEL received
        self.connections: list[transport.FrameConnection] = []
        self.server: asyncio.Server | None = None
        self.status_wire = [0, 0, 1, 0.0, 0, 10, 0, 0, 0, 0, True, 0.1, "", 1, 0.0, 0]

    async def start(self) -> ScriptedShard:
        self.server, _ = await transport.serve(self.address, self._accept)
        return self

    def _accept(self) -> transport.FrameConnection:
        connection = transport.FrameConnection(self._frames, role=SHARD_ROLE)
        self.connections.append(connection)
        return connection

    def _frames(self, connection: transport.FrameConnection, frames: list[Any]) -> None:
        if self.silent:
            return
        for value in frames:
            if value[0] == BATCH:
                batch = CommandBatch.from_frame(value)
                self.batches.append(batch)
                if self.hold:
                    continue
                outcomes = [
                    moved_outcome(7)
                    if c.key.conversation_id in self.moved
                    else DEFERRED_OUTCOME
                    if self.defer
                    else reply_naming(c)
                    for c in batch.commands
                ]
                connection.send(OutcomeBatch(batch.batch_id, outcomes).to_frame())
            elif value[0] == CANCEL:
                self.cancels += cancels_from_frame(value)
            elif value[0] == QUERY:
                query = Query.from_frame(value)
                if query.name == queries.STATUS:
                    connection.send(Answer(query.query_id, True, self.status_wire).to_frame())

    async def stop(self) -> None:
        for connection in self.connections:
            connection.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def run(test: Callable[[Path], Any], tmp_path: Path) -> None:
    eventloop.run(test(tmp_path))


def new_link(address: str, generation: int = 0, **settings: Any) -> ShardLink:
    link = ShardLink(ShardEndpoint(0, generation, address), address, LinkSettings(**settings))
    link.start()
    return link


def submit(
    link: ShardLink,
    commands: list[Command],
    deadline: float | None = None,
    vshard: int = 7,
    listeners: list[DeltaListener | None] | None = None,
) -> list[asyncio.Future[Outcome]]:
    """Queue ``commands`` on the link as the router does (``listeners``: each one's delta
    listener); their futures."""
    loop = asyncio.get_running_loop()
    heard = listeners or [None] * len(commands)
    pending = [
        Pending(c, loop.create_future(), deadline, time.monotonic(), vshard, next(_seqs), on_delta=listener)
        for c, listener in zip(commands, heard, strict=True)
    ]
    link.submit(pending)
    return [p.future for p in pending]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def named(outcome: Any) -> str:
    assert isinstance(outcome, StateResult)
    return outcome.state.current_state


def test_commands_submitted_together_share_a_frame_and_keep_their_order(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        link = new_link(shard.address)
        await until(lambda: link.connected)
        commands = [command(f"c{i % 3}") for i in range(50)]
        futures = submit(link, commands)
        outcomes = await asyncio.gather(*futures)
        assert [named(o) for o in outcomes] == [c.message_id for c in commands]
        assert len(shard.batches) == 1 and len(shard.batches[0].commands) == 50
        await link.close(1.0)
        await shard.stop()

    run(test, tmp_path)


def test_a_batch_is_cut_to_the_largest_frame_the_shard_takes_and_a_command_too_big_fails_alone(
    tmp_path: Path,
) -> None:
    limit = 64 * 1024

    def sized(conversation: str, chars: int) -> Command:
        return replace(command(conversation), body=InboundMessage("u", Content(text="x" * chars)))

    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        link = new_link(shard.address, data_plane=DataPlaneSettings(max_frame_bytes=limit))
        await until(lambda: link.connected)
        commands = [sized(f"c{i % 3}", 10_000) for i in range(20)]  # about 200 KB: several frames
        huge = sized("c0", limit)
        futures = submit(link, [*commands[:10], huge, *commands[10:]])
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(outcomes[10], InvalidArgument)
        assert [named(o) for o in outcomes[:10] + outcomes[11:]] == [c.message_id for c in commands]
        assert len(shard.batches) > 1
        assert all(len(codec.frame(b.to_frame())) <= limit for b in shard.batches)
        assert [c.message_id for b in shard.batches for c in b.commands] == [c.message_id for c in commands]
        await link.close(1.0)
        await shard.stop()

    run(test, tmp_path)


def test_what_queues_while_batches_are_in_flight_rides_one_batch_once_one_is_answered(
    tmp_path: Path,
) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.hold = True
        link = new_link(shard.address, max_batches_in_flight=2)
        await until(lambda: link.connected)
        first = submit(link, [command("a")])
        await until(lambda: len(shard.batches) == 1)
        second = submit(link, [command("b")])
        await until(lambda: len(shard.batches) == 2)
        later = [command(f"c{i}") for i in range(10)]
        waiting = []
        for c in later:  # one by one, as separate calls arrive
            waiting += submit(link, [c])
            await asyncio.sleep(0.005)
        assert len(shard.batches) == 2  # two are out: the rest waits
        held = shard.batches[0]
        shard.connections[-1].send(OutcomeBatch(held.batch_id, [reply_naming(held.commands[0])]).to_frame())
        await until(lambda: len(shard.batches) == 3)
        assert [c.message_id for c in shard.batches[2].commands] == [c.message_id for c in later]
        assert named(await first[0]) == held.commands[0].message_id
        assert not second[0].done() and not any(f.done() for f in waiting)
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_a_lost_connection_resends_what_was_unanswered_in_order_to_the_new_address(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        old = await ScriptedShard(f"unix:{tmp}/old.sock").start()
        old.hold = True
        link = new_link(old.address)
        await until(lambda: link.connected)
        first = submit(link, [command("a"), command("b")])
        await until(lambda: len(old.batches) == 1)
        second = submit(link, [command("a")])
        await until(lambda: len(old.batches) == 2)
        sent = [c.message_id for b in old.batches for c in b.commands]
        await old.stop()  # dies with three commands unanswered
        new = await ScriptedShard(f"unix:{tmp}/new.sock").start()
        link.update_endpoint(ShardEndpoint(0, 1, new.address), new.address)
        outcomes = await asyncio.gather(*first, *second)
        assert [named(o) for o in outcomes] == sent
        assert [c.message_id for b in new.batches for c in b.commands] == sent  # same ids, same order
        assert link.statistics().resends == 3
        await link.close(1.0)
        await new.stop()

    run(test, tmp_path)


def test_deferred_commands_are_answered_by_late_outcomes(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.defer = True
        link = new_link(shard.address)
        await until(lambda: link.connected)
        pending = submit(link, [command(), command()])
        await until(lambda: len(shard.batches) == 1)
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in pending)
        batch = shard.batches[0]
        late = LateOutcomes([(batch.batch_id, 1, reply_naming(batch.commands[1]))])
        shard.connections[-1].send(late.to_frame())
        assert named(await pending[1]) == batch.commands[1].message_id
        assert not pending[0].done()
        await link.close(0.1)
        with pytest.raises(Unavailable):
            await pending[0]
        await shard.stop()

    run(test, tmp_path)


def test_a_shard_that_never_answers_fails_the_commands_after_the_shard_timeout(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.hold = True
        link = new_link(shard.address, shard_timeout_s=0.3)
        await until(lambda: link.connected)
        (future,) = submit(link, [command()])
        with pytest.raises(Unavailable, match="did not answer"):
            await asyncio.wait_for(future, 5.0)
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_a_batch_that_timed_out_in_flight_makes_room_for_what_is_queued(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.hold = True
        link = new_link(shard.address, shard_timeout_s=1.0, max_batches_in_flight=1)
        await until(lambda: link.connected)
        (lost,) = submit(link, [command("a")])
        await until(lambda: len(shard.batches) == 1)
        await asyncio.sleep(0.5)
        (queued,) = submit(link, [command("b")])  # waits: one batch is out
        shard.hold = False  # the shard answers again, but the first batch's answer never comes
        with pytest.raises(Unavailable, match="did not answer"):
            await lost
        assert named(await queued) == shard.batches[1].commands[0].message_id  # else: failed, unsent
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_a_command_whose_deadline_passed_while_queued_is_not_sent(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        link = new_link(f"unix:{tmp}/nobody.sock")  # nothing listens: commands stay queued
        (future,) = submit(link, [command()], deadline=time.monotonic() + 0.1)
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(future, 5.0)
        await link.close(0.1)

    run(test, tmp_path)


def test_room_counts_what_is_queued_and_in_flight(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        link = new_link(f"unix:{tmp}/nobody.sock", max_queued=3)
        assert link.room() == 3
        submit(link, [command(), command()])
        assert link.room() == 1
        await link.close(0.1)

    run(test, tmp_path)


def test_a_moved_command_goes_back_to_the_router_unsettled_and_drains_its_vshard(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.moved = {"gone"}
        shard.hold = False
        link = new_link(shard.address)
        returned: list[Pending] = []
        drained: list[int] = []
        link.on_moved = lambda _, p: returned.append(p)
        link.on_drained = lambda _, v: drained.append(v)
        await until(lambda: link.connected)
        stays, goes = submit(link, [command("stays"), command("gone")])
        assert not link.drain(7)  # two outstanding
        assert named(await stays) == shard.batches[0].commands[0].message_id
        await until(lambda: bool(returned))
        assert [p.future for p in returned] == [goes] and not goes.done()
        assert drained == [7] and link.outstanding == {}
        assert link.drain(7)
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_take_back_returns_everything_unsettled_in_submission_order(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.hold = True
        link = new_link(shard.address)
        await until(lambda: link.connected)
        first = submit(link, [command("a"), command("b")])
        await until(lambda: len(shard.batches) == 1)
        await shard.stop()
        second = submit(link, [command("c")])
        taken = link.take_back()
        assert [p.future for p in taken] == first + second
        assert link.outstanding == {} and not any(f.done() for f in first + second)
        await link.close(0.1)

    run(test, tmp_path)


def test_heartbeats_report_a_silent_shard_unresponsive(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        link = new_link(shard.address, heartbeat_interval_s=0.05, heartbeat_timeout_s=0.3)
        await until(lambda: link.status is not None and link.responsive)
        shard.silent = True
        await until(lambda: not link.responsive, timeout=3.0)
        assert link.connected  # still connected: unresponsive, not gone
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


# Deltas ----------------------------------------------------------------------------------


class Heard:
    """A delta listener that records each piece and whether its command was settled by then."""

    def __init__(self) -> None:
        self.pieces: list[TextDelta] = []
        self.settled_before: list[bool] = []
        self.future: asyncio.Future[Outcome] | None = None

    def __call__(self, delta: TextDelta) -> None:
        self.pieces.append(delta)
        self.settled_before.append(self.future is not None and self.future.done())

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)


def wanting(conversation: str = "c") -> Command:
    return replace(command(conversation), wants_deltas=True)


def test_deltas_go_to_their_commands_listener_in_order_before_its_late_outcome(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.defer = True
        link = new_link(shard.address)
        await until(lambda: link.connected)
        first, second = Heard(), Heard()
        futures = submit(link, [wanting("a"), command("b"), wanting("c")], listeners=[first, None, second])
        first.future, second.future = futures[0], futures[2]
        await until(lambda: len(shard.batches) == 1)
        batch = shard.batches[0]
        pieces = [
            (0, "g1", 0, "Hel"),
            (2, "g2", 0, "Other"),
            (0, "g1", 1, "lo"),
            (1, "g9", 0, "nobody"),
            (0, "g1", 2, "!"),
        ]
        entries = [delta_entry_wire(batch.batch_id, i, TextDelta(g, n, t)) for i, g, n, t in pieces]
        late = LateOutcomes([(batch.batch_id, i, reply_naming(c)) for i, c in enumerate(batch.commands)])
        shard.connections[-1].send_many(
            [deltas_frame(entries[:2]), deltas_frame(entries[2:]), late.to_frame()]
        )
        await asyncio.gather(*futures)
        assert [(p.stream_id, p.sequence) for p in first.pieces] == [("g1", 0), ("g1", 1), ("g1", 2)]
        assert first.text == "Hello!" and second.text == "Other"
        assert first.settled_before == [False] * 3 and second.settled_before == [False]
        assert batch.commands[0].wants_deltas and not batch.commands[1].wants_deltas
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_deltas_nobody_listens_to_are_dropped_quietly(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        link = new_link(shard.address)
        await until(lambda: link.connected)
        heard = Heard()
        (future,) = submit(link, [wanting()], listeners=[heard])
        await future  # answered at once: settled, so no longer listened to
        batch = shard.batches[0]
        late_piece = delta_entry_wire(batch.batch_id, 0, TextDelta("g", 0, "late"))
        stranger = delta_entry_wire(batch.batch_id + 100, 3, TextDelta("g", 0, "unknown"))
        shard.connections[-1].send(deltas_frame([late_piece, stranger]))
        (after,) = submit(link, [command()])
        await after  # the connection took the frame and goes on
        assert heard.pieces == [] and link.connected and len(shard.connections) == 1
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_a_caller_that_gives_up_has_the_shard_told_and_hears_nothing_more(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.defer = True
        link = new_link(shard.address)
        await until(lambda: link.connected)
        heard = Heard()
        generating, plain = submit(link, [wanting("a"), command("b")], listeners=[heard, None])
        await until(lambda: len(shard.batches) == 1)
        batch = shard.batches[0]
        shard.connections[-1].send(
            deltas_frame([delta_entry_wire(batch.batch_id, 0, TextDelta("g", 0, "Hi"))])
        )
        await until(lambda: len(heard.pieces) == 1)
        generating.cancel()
        plain.cancel()  # wants no deltas: nothing to stop, nothing said
        await until(lambda: bool(shard.cancels))
        assert shard.cancels == [(batch.batch_id, 0)]
        shard.connections[-1].send(
            deltas_frame([delta_entry_wire(batch.batch_id, 0, TextDelta("g", 1, " there"))])
        )
        late = LateOutcomes([(batch.batch_id, i, reply_naming(c)) for i, c in enumerate(batch.commands)])
        shard.connections[-1].send(late.to_frame())
        (after,) = submit(link, [wanting("c")], listeners=[Heard()])
        shard.defer = False
        await after
        assert heard.text == "Hi" and shard.cancels == [(batch.batch_id, 0)]
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_a_command_given_up_before_it_was_sent_is_neither_sent_nor_cancelled(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        link = new_link(shard.address)
        await until(lambda: link.connected)
        given_up, kept = submit(link, [wanting("a"), wanting("b")], listeners=[Heard(), Heard()])
        given_up.cancel()  # before the loop flushed the queue
        await kept
        assert [c.key.conversation_id for b in shard.batches for c in b.commands] == ["b"]
        assert shard.cancels == []
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)


def test_a_malformed_delta_frame_drops_the_connection_and_its_commands_are_sent_again(tmp_path: Path) -> None:
    async def test(tmp: Path) -> None:
        shard = await ScriptedShard(f"unix:{tmp}/s.sock").start()
        shard.hold = True
        link = new_link(shard.address)
        await until(lambda: link.connected)
        heard = Heard()
        (future,) = submit(link, [wanting()], listeners=[heard])
        await until(lambda: len(shard.batches) == 1)
        batch_id = shard.batches[0].batch_id
        shard.hold = False
        shard.connections[-1].send([DELTA, [[batch_id, 0, "g", "zero", "x"]]])  # a sequence that is no int
        outcome = await future
        assert named(outcome) == shard.batches[1].commands[0].message_id
        assert len(shard.connections) == 2 and shard.connections[0].closed  # a new connection
        assert heard.pieces == [] and link.statistics().resends == 1
        await link.close(0.1)
        await shard.stop()

    run(test, tmp_path)
