"""Which shard each command goes to: the holder of its virtual shard, as the directory says.

The router keeps one :class:`~.link.ShardLink` per shard of the directory (over a
Unix socket to this host's shards, TCP to other hosts') and sends each command to
the shard that holds its virtual shard, with that holder's epoch beside it (``Pending.epoch``,
which only the router sets; the link sends the command with it).

A virtual shard that has no holder (its host was lost, it is being handed off) or
whose holder just changed has its commands *held* here, in submission order,
bounded like a shard region's buffer: they go out once a holder is known and every
command of that virtual shard sent to the previous holder is done (answered, failed,
or handed back MOVED): the later commands of a conversation never overtake the
earlier ones. Held commands still fail at their deadline, or after
``shard_timeout_s`` with UNAVAILABLE.

When a shard leaves the directory (its host was lost), its link hands back every
command it had not got an outcome for, and they are held like the others: one the
lost shard had applied is answered from the store by the next holder (message ids),
never applied twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence

from confab.runtime.engine.link import DeltaListener, LinkSettings, Pending, ShardLink
from confab.runtime.errors import DeadlineExceeded, Overloaded, Unavailable
from confab.runtime.protocol.directory import NOBODY, Owner, ShardDirectory, vshard_of
from confab.runtime.protocol.records import Command, Outcome

log = logging.getLogger(__name__)


class Router:
    def __init__(
        self,
        host: str,
        settings: LinkSettings,
        *,
        max_held: int,
        new_link: Callable[[ShardLink], None],
    ) -> None:
        self.host = host
        self.settings = settings
        self.max_held = max_held
        self.new_link = new_link  # the engine wires a new link up (events, health) and starts it
        self.links: dict[str, ShardLink] = {}
        self.owners: tuple[Owner, ...] = ()
        self.vshards = 0
        self._held: dict[int, list[Pending]] = {}
        self._held_count = 0
        self._draining: dict[int, ShardLink] = {}  # vshard -> the previous holder it waits for
        # vshard -> the holder (and epoch) that answered MOVED: not sent there again at that epoch.
        self._refused: dict[int, Owner] = {}
        self._seq = itertools.count()
        self.moved = 0  # commands answered MOVED and placed again
        self.taken_back = 0  # commands handed back by the links of shards that left

    # The directory ------------------------------------------------------------------

    def update(self, directory: ShardDirectory) -> list[ShardLink]:
        """Follow ``directory``; the links of shards that left it (to be closed)."""
        if directory.vshards:
            self.vshards = directory.vshards
        for endpoint in directory.shards:
            link = self.links.get(endpoint.shard_id)
            if link is None:
                link = ShardLink(endpoint, endpoint.address_for(self.host), self.settings)
                link.on_moved = self._moved
                link.on_drained = self._drained
                self.links[endpoint.shard_id] = link
                self.new_link(link)
            else:
                link.update_endpoint(endpoint, endpoint.address_for(self.host))
        present = {endpoint.shard_id for endpoint in directory.shards}
        gone = [link for shard, link in self.links.items() if shard not in present]
        for link in gone:
            del self.links[link.shard_id]
            for v in [v for v, waited in self._draining.items() if waited is link]:
                del self._draining[v]  # what it had comes back now, in order
            taken = link.take_back()
            if taken:
                log.warning(
                    "shard %s left; %d commands will go to the next holders", link.shard_id, len(taken)
                )
                self.taken_back += len(taken)
            for p in taken:
                self._hold(p)
        previous = self.owners
        self.owners = directory.owners or previous
        for v, owner in enumerate(self.owners):
            before = previous[v] if v < len(previous) else NOBODY
            if owner != before:
                self._refused.pop(v, None)
                self._changed(v, before)
        for v in list(self._held):
            self._release(v)
        return gone

    def _changed(self, vshard: int, before: Owner) -> None:
        """``vshard`` changed hands: what went to the previous holder must be done first."""
        previous = self.links.get(before.shard)
        if previous is not None and not previous.drain(vshard):
            self._draining[vshard] = previous

    def _drained(self, link: ShardLink, vshard: int) -> None:
        if self._draining.get(vshard) is link:
            del self._draining[vshard]
            self._release(vshard)

    # Commands -------------------------------------------------------------------------

    def submit(
        self,
        commands: list[Command],
        deadline: float | None,
        on_delta: Sequence[DeltaListener | None] = (),
    ) -> list[asyncio.Future[Outcome]]:
        """Place commands in this order; each future gets its outcome. ``on_delta``: the
        listener of each command's deltas (by position; None or missing: none)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        count = self.vshards
        by_link: dict[ShardLink, list[Pending]] = {}
        futures: list[asyncio.Future[Outcome]] = []
        for i, command in enumerate(commands):
            future: asyncio.Future[Outcome] = loop.create_future()
            v = vshard_of(command.key, count)
            listener = on_delta[i] if i < len(on_delta) else None
            p = Pending(command, future, deadline, now, v, next(self._seq), on_delta=listener)
            futures.append(future)
            link = self._link_for(v)
            if link is None:
                self._hold(p)
            else:
                p.epoch = self.owners[v].epoch
                by_link.setdefault(link, []).append(p)
        for link, pending in by_link.items():
            if len(pending) > link.room():
                error = Overloaded(
                    f"shard {link.shard_id} has {self.settings.max_queued - link.room()} commands waiting"
                )
                for p in pending:
                    p.future.set_exception(error)
                continue
            link.submit(pending)
        return futures

    def holder(self, vshard: int) -> ShardLink | None:
        """The link of the shard that holds ``vshard`` now (None while nobody does)."""
        owner = self.owners[vshard] if vshard < len(self.owners) else NOBODY
        return self.links.get(owner.shard) if owner.shard else None

    def _link_for(self, vshard: int) -> ShardLink | None:
        if vshard in self._held or vshard in self._draining:
            return None  # behind commands that wait: after them
        return self.holder(vshard)

    def _hold(self, p: Pending) -> None:
        if self._held_count >= self.max_held:
            p.future.set_exception(
                Overloaded(
                    f"{self._held_count} commands are waiting for their virtual shards to have a holder"
                )
            )
            return
        held = self._held.setdefault(p.vshard, [])
        if held and held[-1].seq > p.seq:  # an older command handed back: it keeps its place
            at = next(i for i, q in enumerate(held) if q.seq > p.seq)
            held.insert(at, p)
        else:
            held.append(p)
        self._held_count += 1

    def _moved(self, link: ShardLink, p: Pending) -> None:
        self.moved += 1
        self._refused[p.vshard] = Owner(link.shard_id, p.epoch)
        self._hold(p)
        self._release(p.vshard)

    def _release(self, vshard: int) -> None:
        """Send what is held for ``vshard`` if it has a holder and nothing is outstanding elsewhere."""
        if vshard in self._draining or self._refused.get(vshard) == self.owners[vshard]:
            return  # wait: for the previous holder, or for a directory newer than the refusal
        link = self.holder(vshard)
        held = self._held.get(vshard)
        if link is None or not held:
            return
        del self._held[vshard]
        self._held_count -= len(held)
        epoch = self.owners[vshard].epoch
        waiting = [p for p in held if not p.future.done()]
        for p in waiting:
            p.epoch = epoch
        if waiting:
            link.submit(waiting)

    def expire(self, now: float) -> None:
        """Fail held commands past their deadline, or held longer than the shard timeout."""
        timeout = self.settings.shard_timeout_s
        for v, held in list(self._held.items()):
            kept = []
            for p in held:
                if p.future.done():
                    continue
                if p.deadline is not None and p.deadline <= now:
                    p.future.set_exception(DeadlineExceeded("the deadline passed while its shard was moving"))
                elif now - p.queued_at > timeout:
                    p.future.set_exception(
                        Unavailable(
                            f"no shard has held this conversation's virtual shard ({v}) for {timeout:g}s"
                        )
                    )
                else:
                    kept.append(p)
            self._held_count -= len(held) - len(kept)
            if kept:
                self._held[v] = kept
            else:
                del self._held[v]

    def held(self) -> int:
        return self._held_count

    def fail_held(self, error: Exception) -> None:
        for held in self._held.values():
            for p in held:
                if not p.future.done():
                    p.future.set_exception(error)
        self._held.clear()
        self._held_count = 0
