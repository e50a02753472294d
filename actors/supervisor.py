"""The supervisor: starts the shards and replaces any that dies.

Shards are the supervisor's children, so Thespian tells it (``ChildActorExited``)
within milliseconds when a shard process dies. The replacement gets the same
index and a new generation; its conversations come back from the store on first
use. The edge learns the new address by asking for the :class:`ShardDirectory`
when a batch goes unanswered, and re-sends the batch: message ids make that safe.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ChildActorExited

from .messages import GetDirectory, RestartShard, ShardDirectory, ShardInit, ShardSettings, StartShards
from .shard import ShardActor

log = logging.getLogger(__name__)


class SupervisorActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: ShardSettings | None = None
        self.addresses: list[Any] = []
        self.generations: list[int] = []
        self.restarts = 0
        self.stopping = False

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, StartShards):
            if not self.addresses:
                self.settings = message.settings
                for index in range(message.count):
                    self.addresses.append(None)
                    self.generations.append(0)
                    self._start(index)
            self.send(sender, self._directory())
        elif isinstance(message, GetDirectory):
            self.send(sender, self._directory())
        elif isinstance(message, ChildActorExited):
            self._replace(message.childAddress)
        elif isinstance(message, RestartShard):
            if 0 <= message.index < len(self.addresses):
                log.warning("shard %d: restart requested by an operator", message.index)
                self.send(self.addresses[message.index], ActorExitRequest())
            self.send(sender, self._directory())
        elif isinstance(message, ActorExitRequest):
            self.stopping = True

    def _start(self, index: int) -> None:
        assert self.settings is not None
        address = self.createActor(ShardActor)
        self.addresses[index] = address
        self.send(address, ShardInit(index, self.generations[index], self.settings))

    def _replace(self, address: Any) -> None:
        if self.stopping or address not in self.addresses:
            return
        index = self.addresses.index(address)
        self.restarts += 1
        self.generations[index] += 1
        log.warning("shard %d exited; starting generation %d", index, self.generations[index])
        self._start(index)

    def _directory(self) -> ShardDirectory:
        return ShardDirectory(
            addresses=tuple(self.addresses),
            generations=tuple(self.generations),
            restarts=self.restarts,
            pid=os.getpid(),
        )
