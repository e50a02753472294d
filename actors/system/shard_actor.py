"""Thespian's view of a shard: it is created, told who it is, told what to hold, and told to stop.

On ``ShardInit`` it opens the store, builds the :class:`~.shard.Shard` and starts its
data-plane server (``actors.data_server``), then tells the supervisor where it
listens, or why it could not start. From then on the shard's work never passes
through this actor: Thespian's thread here hands on the virtual shards the shard
should hold (``ShardAssign``), reports those it holds (``ShardHoldings``, looked at
every ``REPORT_EVERY_S``), and waits for ``ActorExitRequest``.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from confab.actors.data_server import ShardServer
from confab.actors.shard import Shard
from confab.actors.system.messages import ShardAssign, ShardFailed, ShardHoldings, ShardInit, ShardReady
from confab.runtime import telemetry
from confab.runtime.store import open_store

log = logging.getLogger(__name__)

REPORT_EVERY_S = 0.05


class ShardActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server: ShardServer | None = None
        self.supervisor: Any = None
        self.init: ShardInit | None = None
        self.reported = -1

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, ShardInit) and self.server is None:
            self.supervisor, self.init = sender, message
            try:
                self.server = self._start(message)
            except Exception as exc:  # reported; the supervisor tries again later
                log.exception("shard %d: could not start", message.index)
                self.send(
                    sender, ShardFailed(message.index, message.generation, f"{type(exc).__name__}: {exc}")
                )
                return
            local, *remote = self.server.addresses
            self.send(
                sender,
                ShardReady(
                    message.index, message.generation, remote[0] if remote else local, os.getpid(), local
                ),
            )
            self.wakeupAfter(timedelta(seconds=REPORT_EVERY_S))
        elif isinstance(message, ShardAssign) and self.server is not None:
            self.server.want(message.vshards, message.claim)
        elif isinstance(message, WakeupMessage) and self.server is not None:
            self._report()
            self.wakeupAfter(timedelta(seconds=REPORT_EVERY_S))
        elif isinstance(message, ActorExitRequest) and self.server is not None:
            self.server.stop()
            self.server.shard.close()
            telemetry.shutdown()  # flush the spans still queued for export
            self.server = None

    def _report(self) -> None:
        assert self.server is not None and self.init is not None
        version, held = self.server.holdings
        if version != self.reported:
            self.reported = version
            self.send(self.supervisor, ShardHoldings(self.init.index, self.init.generation, version, held))

    def _start(self, init: ShardInit) -> ShardServer:
        settings = init.settings
        # Each shard process exports its own spans (exporter threads do not survive a fork).
        telemetry.configure_tracing("confab-shard", {"confab.shard": init.index})
        store = open_store(
            settings.store_path, synchronous=settings.synchronous, retention=settings.retention
        )
        try:
            shard = Shard(init.index, init.generation, settings, store)
            shard.ownership.want(init.wanted, claim=init.claim)
            server = ShardServer(shard, settings.addresses_of(init.index, init.generation))
            server.addresses = server.start()
        except BaseException:
            store.close()
            raise
        return server
