"""The router: every command to the holder of its virtual shard, held while nobody holds it,
and never overtaking an earlier command of the same virtual shard, against scripted shards
on real Unix sockets. One virtual shard (``vshards=1``) keeps every conversation in it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from confab.runtime import eventloop
from confab.runtime.engine.link import LinkSettings, ShardLink
from confab.runtime.engine.router import Router
from confab.runtime.errors import DeadlineExceeded, Overloaded, Unavailable
from confab.runtime.protocol.directory import NOBODY, Owner, ShardDirectory, ShardEndpoint
from confab.runtime.protocol.records import OutcomeBatch
from tests.test_link import ScriptedShard, command, named, reply_naming, until


def endpoint(index: int, address: str) -> ShardEndpoint:
    return ShardEndpoint(index, 0, address, host="h")


def directory(version: int, owner: Owner, *shards: ShardEndpoint) -> ShardDirectory:
    return ShardDirectory(version, shards, owners=(owner,))


def new_router(**settings: Any) -> Router:
    return Router("h", LinkSettings(**settings), max_held=4, new_link=ShardLink.start)


async def close(router: Router, *shards: ScriptedShard) -> None:
    await asyncio.gather(*(link.close(0.1) for link in router.links.values()))
    for shard in shards:
        await shard.stop()


def test_commands_wait_for_a_holder_and_then_go_in_order(tmp_path: Path) -> None:
    async def test() -> None:
        shard = await ScriptedShard(f"unix:{tmp_path}/a.sock").start()
        router = new_router()
        router.update(directory(1, NOBODY, endpoint(0, shard.address)))
        commands = [command(f"c{i}") for i in range(3)]
        futures = router.submit(commands, None)
        await asyncio.sleep(0.05)
        assert router.held() == 3 and not shard.batches
        router.update(directory(2, Owner("h/0", 5), endpoint(0, shard.address)))
        outcomes = await asyncio.gather(*futures)
        assert [named(o) for o in outcomes] == [c.message_id for c in commands]
        assert [c.epoch for b in shard.batches for c in b.commands] == [5, 5, 5]
        await close(router, shard)

    eventloop.run(test())


def test_moved_commands_wait_for_a_newer_directory_then_reach_the_new_holder_in_order(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        old = await ScriptedShard(f"unix:{tmp_path}/old.sock").start()
        new = await ScriptedShard(f"unix:{tmp_path}/new.sock").start()
        old.moved = {"c0", "c1", "c2"}  # it let the virtual shard go
        router = new_router()
        both = (endpoint(0, old.address), endpoint(1, new.address))
        router.update(directory(1, Owner("h/0", 1), *both))
        first = router.submit([command("c0"), command("c1")], None)
        await until(lambda: router.held() == 2)
        later = router.submit([command("c2")], None)  # behind the held ones, not sent to the old holder
        await asyncio.sleep(0.05)
        assert len(old.batches) == 1 and router.held() == 3
        router.update(directory(2, Owner("h/1", 2), *both))
        outcomes = await asyncio.gather(*first, *later)
        sent = [c.message_id for b in new.batches for c in b.commands]
        assert [named(o) for o in outcomes] == sent and len(sent) == 3
        assert [c.key.conversation_id for b in new.batches for c in b.commands] == ["c0", "c1", "c2"]
        assert router.moved == 2
        await close(router, old, new)

    eventloop.run(test())


def test_a_new_holder_gets_nothing_until_the_old_one_answered_what_it_had(tmp_path: Path) -> None:
    async def test() -> None:
        old = await ScriptedShard(f"unix:{tmp_path}/old.sock").start()
        new = await ScriptedShard(f"unix:{tmp_path}/new.sock").start()
        old.hold = True
        router = new_router()
        both = (endpoint(0, old.address), endpoint(1, new.address))
        router.update(directory(1, Owner("h/0", 1), *both))
        (earlier,) = router.submit([command("c")], None)
        await until(lambda: len(old.batches) == 1)
        router.update(directory(2, Owner("h/1", 2), *both))
        (later,) = router.submit([command("c")], None)
        await asyncio.sleep(0.1)
        assert not new.batches and not later.done()  # it would overtake the earlier command
        batch = old.batches[0]
        old.connections[-1].send(OutcomeBatch(batch.batch_id, [reply_naming(batch.commands[0])]).to_frame())
        await earlier
        await later
        assert len(new.batches) == 1
        await close(router, old, new)

    eventloop.run(test())


def test_the_commands_of_a_shard_that_left_go_to_the_next_holder_in_order(tmp_path: Path) -> None:
    async def test() -> None:
        lost = await ScriptedShard(f"unix:{tmp_path}/lost.sock").start()
        survivor = await ScriptedShard(f"unix:{tmp_path}/survivor.sock").start()
        lost.hold = True  # a host cut off: nothing comes back
        router = new_router()
        router.update(directory(1, Owner("h/0", 1), endpoint(0, lost.address), endpoint(1, survivor.address)))
        futures = router.submit([command("a"), command("b")], None)
        await until(lambda: len(lost.batches) == 1)
        futures += router.submit([command("c")], None)
        gone = router.update(directory(2, NOBODY, endpoint(1, survivor.address)))  # its host was lost
        assert [link.shard_id for link in gone] == ["h/0"] and router.held() == 3
        router.update(directory(3, Owner("h/1", 2), endpoint(1, survivor.address)))
        outcomes = await asyncio.gather(*futures)
        assert [c.key.conversation_id for b in survivor.batches for c in b.commands] == ["a", "b", "c"]
        assert [named(o) for o in outcomes] == [c.message_id for b in survivor.batches for c in b.commands]
        for link in gone:
            await link.close(0.1)
        await close(router, lost, survivor)

    eventloop.run(test())


def test_held_commands_fail_at_their_deadline_or_after_the_shard_timeout_and_are_bounded(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        router = new_router(shard_timeout_s=0.2)
        router.update(directory(1, NOBODY))
        (soon,) = router.submit([command()], time.monotonic() + 0.05)
        (later,) = router.submit([command()], None)
        router.submit([command(), command()], None)
        (over,) = router.submit([command()], None)
        with pytest.raises(Overloaded):
            await over
        await asyncio.sleep(0.1)
        router.expire(time.monotonic())
        with pytest.raises(DeadlineExceeded):
            await soon
        assert not later.done()
        await asyncio.sleep(0.15)
        router.expire(time.monotonic())
        with pytest.raises(Unavailable, match="no shard has held"):
            await later
        assert router.held() == 0

    eventloop.run(test())
