"""Thespian's view of a shard: it is created, told who it is, and told to stop.

On ``ShardInit`` it opens the store, builds the :class:`~.shard.Shard` and starts its
data-plane server (``actors.data_server``), then tells the supervisor where it
listens, or why it could not start. From then on the shard's work never passes
through this actor: Thespian's thread here only waits for ``ActorExitRequest``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from thespian.actors import Actor, ActorExitRequest

from ..runtime import telemetry
from ..runtime.store import open_store
from .data_server import ShardServer
from .messages import ShardFailed, ShardInit, ShardReady
from .shard import Shard

log = logging.getLogger(__name__)


class ShardActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server: ShardServer | None = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, ShardInit) and self.server is None:
            try:
                self.server = self._start(message)
            except Exception as exc:  # reported; the supervisor tries again later
                log.exception("shard %d: could not start", message.index)
                self.send(
                    sender, ShardFailed(message.index, message.generation, f"{type(exc).__name__}: {exc}")
                )
                return
            self.send(sender, ShardReady(message.index, message.generation, self.server.address, os.getpid()))
        elif isinstance(message, ActorExitRequest) and self.server is not None:
            self.server.stop()
            self.server.shard.close()
            telemetry.shutdown()  # flush the spans still queued for export
            self.server = None

    def _start(self, init: ShardInit) -> ShardServer:
        settings = init.settings
        # Each shard process exports its own spans (exporter threads do not survive a fork).
        telemetry.configure_tracing("confab-shard", {"confab.shard": init.index})
        store = open_store(
            settings.store_path, synchronous=settings.synchronous, retention=settings.retention
        )
        try:
            shard = Shard(init.index, init.generation, settings, store)
            server = ShardServer(shard, settings.address_of(init.index, init.generation))
            server.address = server.start()
        except BaseException:
            store.close()
            raise
        return server
