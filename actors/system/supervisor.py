"""The supervisor: starts this host's shards, replaces any that dies, and reports them to the host.

Shards are the supervisor's children, so Thespian tells it (``ChildActorExited``)
within milliseconds when a shard process dies. The replacement gets the same
index (the same shard id, so it takes its virtual shards back at once) and a new
generation, opens the store and its own data-plane addresses, and says so
(``ShardReady``); its conversations come back from the store on first use. A shard
that cannot start (``ShardFailed``) is tried again with a growing pause.

The supervisor knows nothing of other hosts: its actor system is this host's alone
and listens on loopback only. The host (``actors.system.host``) tells it which virtual
shards each shard should hold (``AssignShards``, computed by ``actors.cluster``
from the store's member table); the supervisor hands each shard its part
(``ShardAssign``) and sends the host a directory of this host's shards, with what
each holds (``ShardHoldings``), whenever that changes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import timedelta
from typing import Any, ClassVar

from thespian.actors import Actor, ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from confab.actors.settings import ShardSettings
from confab.actors.system.messages import (
    AssignShards,
    GetDirectory,
    RestartShard,
    ShardAssign,
    ShardFailed,
    ShardHoldings,
    ShardInit,
    ShardReady,
    StartShards,
)
from confab.actors.system.shard_actor import ShardActor
from confab.runtime.protocol.directory import NOBODY, Owner, ShardDirectory, ShardEndpoint

log = logging.getLogger(__name__)

RETRY_FIRST_S, RETRY_MOST_S = 0.5, 30.0


class SupervisorActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: ShardSettings | None = None
        self.watcher: Any = None
        self.addresses: list[Any] = []  # Thespian address of each shard actor
        self.endpoints: list[ShardEndpoint] = []
        self.retry_after: list[float] = []
        self.held: list[dict[int, int]] = []  # per shard: {vshard: epoch}
        self.assigned: list[ShardAssign] = []  # what each shard should hold, as last told
        self.restarts = 0
        self.stopping = False
        self.version = 0

    def receiveMessage(self, message: Any, sender: Any) -> None:
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(self, message, sender)

    # Handlers, one per message type -------------------------------------------------------

    def _on_start(self, start: StartShards, sender: Any) -> None:
        self.watcher = sender
        if not self.addresses:
            self.settings = start.settings
            for index in range(start.count):
                self.addresses.append(None)
                self.endpoints.append(ShardEndpoint(index, 0, "", host=start.settings.host))
                self.retry_after.append(RETRY_FIRST_S)
                self.held.append({})
                self.assigned.append(ShardAssign(frozenset(), claim=False))
                self._start(index)
        self._relay()

    def _on_ready(self, ready: ShardReady, sender: Any) -> None:
        if self._current(ready.index, ready.generation):
            self.endpoints[ready.index] = replace(
                self.endpoints[ready.index],
                address=ready.address,
                local_address=ready.local_address,
                pid=ready.pid,
                error="",
            )
            self.retry_after[ready.index] = RETRY_FIRST_S
            self._relay()

    def _on_failed(self, failure: ShardFailed, sender: Any) -> None:
        index = failure.index
        if not self._current(index, failure.generation):
            return
        log.error("shard %d could not start: %s", index, failure.reason)
        self.endpoints[index] = replace(self.endpoints[index], error=failure.reason)
        self._relay()
        delay = self.retry_after[index]
        self.retry_after[index] = min(delay * 2, RETRY_MOST_S)
        self.wakeupAfter(timedelta(seconds=delay), payload=(index, failure.generation))

    def _on_holdings(self, holdings: ShardHoldings, sender: Any) -> None:
        if self._current(holdings.index, holdings.generation):
            self.held[holdings.index] = dict(holdings.held)
            self._relay()

    def _on_assign(self, assign: AssignShards, sender: Any) -> None:
        for index, address in enumerate(self.addresses):
            wanted = assign.wanted[index] if index < len(assign.wanted) else frozenset()
            told = ShardAssign(wanted, claim=assign.claim)
            if told != self.assigned[index]:
                self.assigned[index] = told
                self.send(address, told)

    def _on_wakeup(self, wakeup: WakeupMessage, sender: Any) -> None:
        index, generation = wakeup.payload  # a shard that failed to start: its replacement tries again
        if not self.stopping and self._current(index, generation):
            self.send(self.addresses[index], ActorExitRequest())

    def _on_child_exited(self, exited: ChildActorExited, sender: Any) -> None:
        address = exited.childAddress
        if self.stopping or address not in self.addresses:
            return
        index = self.addresses.index(address)
        self.restarts += 1
        generation = self.endpoints[index].generation + 1
        log.warning("shard %d exited; starting generation %d", index, generation)
        # A shard being retried after a failed start keeps its reason until one starts.
        old = self.endpoints[index]
        self.endpoints[index] = ShardEndpoint(index, generation, "", host=old.host, error=old.error)
        self._start(index)
        self._relay()

    def _on_restart(self, restart: RestartShard, sender: Any) -> None:
        if 0 <= restart.index < len(self.addresses):
            log.warning("shard %d: restart requested by an operator", restart.index)
            self.send(self.addresses[restart.index], ActorExitRequest())

    def _on_get_directory(self, message: GetDirectory, sender: Any) -> None:
        self.send(sender, self._directory())

    def _on_poison(self, poison: PoisonMessage, sender: Any) -> None:
        log.debug("undeliverable: %s", poison.poisonMessage)

    def _on_exit(self, message: ActorExitRequest, sender: Any) -> None:
        self.stopping = True

    _handlers: ClassVar[dict[type, Any]] = {
        StartShards: _on_start,
        ShardReady: _on_ready,
        ShardFailed: _on_failed,
        ShardHoldings: _on_holdings,
        AssignShards: _on_assign,
        WakeupMessage: _on_wakeup,
        ChildActorExited: _on_child_exited,
        RestartShard: _on_restart,
        GetDirectory: _on_get_directory,
        PoisonMessage: _on_poison,
        ActorExitRequest: _on_exit,
    }

    # Shards ---------------------------------------------------------------------------

    def _current(self, index: int, generation: int) -> bool:
        return 0 <= index < len(self.endpoints) and self.endpoints[index].generation == generation

    def _start(self, index: int) -> None:
        assert self.settings is not None
        address = self.createActor(ShardActor)
        self.addresses[index] = address
        self.held[index] = {}
        assigned = self.assigned[index]
        self.send(
            address,
            ShardInit(
                index, self.endpoints[index].generation, self.settings, assigned.vshards, claim=assigned.claim
            ),
        )

    # The host ---------------------------------------------------------------------------

    def _relay(self) -> None:
        if self.watcher is not None:
            self.send(self.watcher, self._directory())

    def _directory(self) -> ShardDirectory:
        """This host's shards and what each holds, as they are now."""
        assert self.settings is not None
        owners = [NOBODY] * self.settings.vshards
        for index, held in enumerate(self.held):
            mine = self.endpoints[index].shard_id
            for v, epoch in held.items():
                if 0 <= v < len(owners) and epoch > owners[v].epoch:
                    owners[v] = Owner(mine, epoch)
        self.version += 1
        return ShardDirectory(
            version=self.version,
            shards=tuple(self.endpoints),
            owners=tuple(owners),
            restarts=self.restarts,
            supervisor_pid=os.getpid(),
            admin_pid=os.getppid(),
        )
