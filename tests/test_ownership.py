"""Single activation on a shard: virtual shards claimed, renewed, released and fenced, on real stores.

Two shards opened on one SQLite file play two shard processes; their clocks are the
tests' to move, so a shard that was paused (or cut off) while another took over can
be made to try to serve and to write afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from confab.actors.ownership import _ranges
from confab.actors.settings import ShardSettings
from confab.actors.shard import Shard
from confab.runtime.model import Content, ConversationKey, InboundMessage, StateResult, TurnResult
from confab.runtime.protocol.directory import vshard_of
from confab.runtime.protocol.records import (
    MOVED,
    Command,
    CommandBatch,
    CommandKind,
    decode_outcome,
    is_moved,
)
from confab.runtime.store import Retention, open_store

VSHARDS = 8
LEASE_S = 4.0
_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_shard(tmp_path: Path) -> Iterator[Callable[..., Shard]]:
    opened: list[Shard] = []

    def factory(index: int, clock: Clock, wanted: range | set[int] = range(VSHARDS)) -> Shard:
        settings = ShardSettings(
            store_path=str(tmp_path / "store.sqlite3"),
            synchronous="NORMAL",
            resident_limit=100,
            default_flow="echo",
            retention=Retention(),
            host="h",
            vshards=VSHARDS,
            lease_s=LEASE_S,
            renew_every_s=1.0,
        )
        store = open_store(settings.store_path, synchronous="NORMAL", retention=settings.retention)
        shard = Shard(index, 1, settings, store)
        shard.ownership.clock = clock
        shard.ownership.want(wanted)
        shard.tick_ownership()
        opened.append(shard)
        return shard

    yield factory
    for shard in opened:
        shard.close()


def key_in(vshard: int) -> ConversationKey:
    for i in itertools.count():
        key = ConversationKey("t", f"c{i}")
        if vshard_of(key, VSHARDS) == vshard:
            return key
    raise AssertionError


def turn(key: ConversationKey, epoch: int) -> Command:
    message = InboundMessage("u", Content(text="hi"))
    return Command(CommandKind.TURN, f"m-{next(_ids)}", key, message, epoch=epoch)


def run(shard: Shard, *commands: Command) -> list[list[object]]:
    ((_, answer),) = shard.run_round([("edge", CommandBatch(next(_ids), list(commands)))])
    return answer.outcomes


def count(shard: Shard, key: ConversationKey) -> int:
    epoch = shard.ownership.held[vshard_of(key, VSHARDS)]
    (wire,) = run(shard, Command(CommandKind.GET_STATE, f"g-{next(_ids)}", key, epoch=epoch))
    outcome = decode_outcome(wire)
    assert isinstance(outcome, StateResult), outcome
    return outcome.state.message_count


def test_a_shard_runs_only_what_it_holds_at_the_epoch_it_was_routed_by(
    make_shard: Callable[..., Shard],
) -> None:
    clock = Clock()
    shard = make_shard(0, clock, wanted={0, 1})
    key0, key5 = key_in(0), key_in(5)
    epoch = shard.ownership.held[0]
    done, not_held, stale = run(shard, turn(key0, epoch), turn(key5, 1), turn(key0, epoch - 1))
    assert isinstance(decode_outcome(done), TurnResult)
    assert not_held == [MOVED, 5] and stale == [MOVED, 0]
    assert count(shard, key0) == 1  # the stale one did not run


def test_a_virtual_shard_another_holds_is_taken_only_once_its_holder_lets_go(
    make_shard: Callable[..., Shard],
) -> None:
    clock = Clock()
    first = make_shard(0, clock)
    second = make_shard(1, clock, wanted=set())
    second.ownership.want({3})
    second.tick_ownership()
    assert 3 not in second.ownership.held  # the first one's lease still runs
    clock.now += 1.0
    change = first.tick_ownership()  # its renewal finds 3 wanted by another: it lets go
    assert 3 in change.dropped and 3 not in first.ownership.held
    assert first.ownership.held.keys() == set(range(VSHARDS)) - {3}
    clock.now += 0.5  # long before the first one's lease would have run out
    second.tick_ownership()
    assert 3 in second.ownership.held  # it let go in the store, not only in memory
    first.tick_ownership()
    assert 3 not in first.ownership.held  # and it does not take it back on its older placement


def test_a_released_virtual_shard_is_claimed_at_once_with_a_new_epoch(
    make_shard: Callable[..., Shard],
) -> None:
    clock = Clock()
    first = make_shard(0, clock)
    key = key_in(2)
    run(first, turn(key, first.ownership.held[2]))
    old_epoch = first.ownership.held[2]
    first.ownership.want(set(range(VSHARDS)) - {2})
    first.tick_ownership()
    assert key not in first.residents  # its conversations left memory with it
    second = make_shard(1, clock, wanted={2})
    assert second.ownership.held == {2: old_epoch + 1}
    assert count(second, key) == 1  # from the store: the first shard's write stands


def test_a_paused_owner_is_fenced_out_and_writes_nothing(
    make_shard: Callable[..., Shard], tmp_path: Path
) -> None:
    """The worst moment: a shard checked that it holds the virtual shard, was paused past its
    lease while another took over and wrote, and then tries to commit its round."""
    paused_clock, clock = Clock(), Clock()
    paused = make_shard(0, paused_clock)
    key = key_in(4)
    run(paused, turn(key, paused.ownership.held[4]))
    other = make_shard(1, clock, wanted=set())
    _expire_in_store(tmp_path, "h/0")  # time passes for everyone but the paused shard
    other.ownership.want({4})
    other.tick_ownership()
    assert 4 in other.ownership.held
    run(other, turn(key, other.ownership.held[4]))  # count 2, written by the new holder

    # The paused shard still trusts its lease by its own clock, runs the command, and is fenced.
    (outcome,) = run(paused, turn(key, paused.ownership.held[4]))
    assert is_moved(outcome)
    assert 4 not in paused.ownership.held and key not in paused.residents
    assert count(other, key) == 2  # nothing of the paused shard's turn was written


def test_an_owner_that_cannot_renew_stops_serving_when_its_lease_could_end(
    make_shard: Callable[..., Shard], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    shard = make_shard(0, clock)
    key = key_in(1)
    epoch = shard.ownership.held[1]

    def unreachable(*_: object) -> set[int]:
        raise OSError("the store is out of reach")

    monkeypatch.setattr(shard.store, "renew", unreachable)
    monkeypatch.setattr(shard.store, "claim", unreachable)
    clock.now += LEASE_S - 0.5
    shard.tick_ownership()
    assert not is_moved(run(shard, turn(key, epoch))[0])  # still within what it may trust
    clock.now += 0.5
    shard.tick_ownership()
    assert shard.ownership.held == {}
    assert run(shard, turn(key, epoch)) == [[MOVED, 1]]  # reads and writes alike


def _expire_in_store(tmp_path: Path, owner: str) -> None:
    """End ``owner``'s leases now, as the store's clock passing them would."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "store.sqlite3")
    db.execute("UPDATE vshards SET lease_until = 0 WHERE owner = ?", (owner,))
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("vshards", "shown"),
    [
        ([1, 2, 3, 7], "1-3,7"),
        (range(0, 256, 2), "0-254 step 2"),  # one of a host's two shards
        ([4, 6], "4,6"),
        ([5], "5"),
        ([], ""),
    ],
)
def test_the_log_names_virtual_shards_in_ranges(vshards: list[int], shown: str) -> None:
    assert _ranges(vshards) == shown
