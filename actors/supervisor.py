"""The supervisor: starts the shards, replaces any that dies, and keeps the directory.

Shards are the supervisor's children, so Thespian tells it (``ChildActorExited``)
within milliseconds when a shard process dies. The replacement gets the same
index and a new generation, opens the store and its own data-plane address, and
says so (``ShardReady``); its conversations come back from the store on first use.
A shard that cannot start (``ShardFailed``) is tried again with a growing pause.

Whoever sent ``StartShards`` (the host, ``actors.host``) is sent the directory
every time it changes, so the edge reconnects to a replacement and re-sends what
the old process left unanswered: message ids make that safe.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ChildActorExited, WakeupMessage

from ..runtime.protocol.directory import ShardDirectory, ShardEndpoint
from .messages import (
    GetDirectory,
    RestartShard,
    ShardFailed,
    ShardInit,
    ShardReady,
    ShardSettings,
    StartShards,
)
from .shard_actor import ShardActor

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
        self.restarts = 0
        self.version = 0
        self.stopping = False

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, StartShards):
            self.watcher = sender
            if not self.addresses:
                self.settings = message.settings
                for index in range(message.count):
                    self.addresses.append(None)
                    self.endpoints.append(ShardEndpoint(index, 0, ""))
                    self.retry_after.append(RETRY_FIRST_S)
                    self._start(index)
            self._publish()
        elif isinstance(message, ShardReady):
            if self._current(message.index, message.generation):
                self.endpoints[message.index] = ShardEndpoint(
                    message.index, message.generation, message.address, message.pid
                )
                self.retry_after[message.index] = RETRY_FIRST_S
                self._publish()
        elif isinstance(message, ShardFailed):
            if self._current(message.index, message.generation):
                log.error("shard %d could not start: %s", message.index, message.reason)
                self.endpoints[message.index] = replace(self.endpoints[message.index], error=message.reason)
                self._publish()
                delay = self.retry_after[message.index]
                self.retry_after[message.index] = min(delay * 2, RETRY_MOST_S)
                self.wakeupAfter(
                    timedelta(seconds=delay), payload=("retry", message.index, message.generation)
                )
        elif isinstance(message, WakeupMessage):
            _, index, generation = message.payload
            if not self.stopping and self._current(index, generation):
                self.send(self.addresses[index], ActorExitRequest())  # its replacement tries again
        elif isinstance(message, ChildActorExited):
            self._replace(message.childAddress)
        elif isinstance(message, RestartShard):
            if 0 <= message.index < len(self.addresses):
                log.warning("shard %d: restart requested by an operator", message.index)
                self.send(self.addresses[message.index], ActorExitRequest())
            self._publish()
        elif isinstance(message, GetDirectory):
            self.send(sender, self._directory())
        elif isinstance(message, ActorExitRequest):
            self.stopping = True

    def _current(self, index: int, generation: int) -> bool:
        return 0 <= index < len(self.endpoints) and self.endpoints[index].generation == generation

    def _start(self, index: int) -> None:
        assert self.settings is not None
        address = self.createActor(ShardActor)
        self.addresses[index] = address
        self.send(address, ShardInit(index, self.endpoints[index].generation, self.settings))

    def _replace(self, address: Any) -> None:
        if self.stopping or address not in self.addresses:
            return
        index = self.addresses.index(address)
        self.restarts += 1
        generation = self.endpoints[index].generation + 1
        log.warning("shard %d exited; starting generation %d", index, generation)
        # A shard being retried after a failed start keeps its reason until one starts.
        self.endpoints[index] = ShardEndpoint(index, generation, "", error=self.endpoints[index].error)
        self._start(index)
        self._publish()

    def _directory(self) -> ShardDirectory:
        return ShardDirectory(
            version=self.version,
            shards=tuple(self.endpoints),
            restarts=self.restarts,
            supervisor_pid=os.getpid(),
            admin_pid=os.getppid(),
        )

    def _publish(self) -> None:
        self.version += 1
        if self.watcher is not None:
            self.send(self.watcher, self._directory())
