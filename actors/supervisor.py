"""The supervisor: starts this host's shards, replaces any that dies, and speaks for the host.

Shards are the supervisor's children, so Thespian tells it (``ChildActorExited``)
within milliseconds when a shard process dies. The replacement gets the same
index (the same shard id, so it takes its virtual shards back at once) and a new
generation, opens the store and its own data-plane addresses, and says so
(``ShardReady``); its conversations come back from the store on first use. A shard
that cannot start (``ShardFailed``) is tried again with a growing pause.

Toward the cluster, the supervisor is the host: it finds the coordinator
(``actors.coordinator``, through Thespian's convention), heartbeats to it
(``actors.membership``), hands each shard the virtual shards the placement gives it
(``ShardAssign``) and reports what each holds (``ShardHoldings``). Whoever sent
``StartShards`` (the host, ``actors.host``) is sent the directory every time it
changes, with this host's own shards as the supervisor knows them (fresher than the
coordinator's copy, and known even while the coordinator is out of reach).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from ..runtime.protocol.directory import Owner, ShardDirectory, ShardEndpoint
from .coordinator import COORDINATOR_NAME, CoordinatorActor
from .membership import HostMembership
from .messages import (
    ClusterProblem,
    ClusterSettings,
    EdgeServing,
    GetDirectory,
    HeartbeatReply,
    HostRefused,
    LeaveCluster,
    RestartShard,
    ShardAssign,
    ShardFailed,
    ShardHoldings,
    ShardInit,
    ShardReady,
    ShardSettings,
    StartShards,
)
from .shard_actor import ShardActor

log = logging.getLogger(__name__)

RETRY_FIRST_S, RETRY_MOST_S = 0.5, 30.0
BEAT = "beat"


class SupervisorActor(Actor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: ShardSettings | None = None
        self.cluster = ClusterSettings()
        self.membership: HostMembership | None = None
        self.watcher: Any = None
        self.addresses: list[Any] = []  # Thespian address of each shard actor
        self.endpoints: list[ShardEndpoint] = []
        self.retry_after: list[float] = []
        self.restarts = 0
        self.stopping = False
        self.refused = ""
        self.frozen = False  # out of touch with the coordinator: no new claims
        self.assigned: dict[int, ShardAssign] = {}  # what each shard was last told

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, StartShards):
            self.watcher = sender
            if not self.addresses:
                self._start_all(message)
            self._relay()
        elif isinstance(message, ShardReady):
            if self._current(message.index, message.generation):
                self.endpoints[message.index] = replace(
                    self.endpoints[message.index],
                    address=message.address,
                    local_address=message.local_address,
                    pid=message.pid,
                    error="",
                )
                self.retry_after[message.index] = RETRY_FIRST_S
                self._changed()
        elif isinstance(message, ShardFailed):
            if self._current(message.index, message.generation):
                self._failed(message)
        elif isinstance(message, ShardHoldings):
            if self._current(message.index, message.generation) and self.membership is not None:
                self.membership.held[message.index] = message.held
                self._changed()
        elif isinstance(message, HeartbeatReply):
            self._answered(message, sender)
        elif isinstance(message, HostRefused):
            self.refused = message.reason
            log.error("the cluster refused this host: %s", message.reason)
            self.send(self.watcher, ClusterProblem(message.reason, fatal=True))
        elif isinstance(message, EdgeServing):
            if self.membership is not None:
                self.membership.identity = replace(self.membership.identity, edge=message.address)
                self._beat()
        elif isinstance(message, LeaveCluster):
            if self.membership is not None and not self.membership.leaving:
                self.membership.leaving = True
                self._beat()
        elif isinstance(message, WakeupMessage):
            self._woken(message.payload)
        elif isinstance(message, ChildActorExited):
            self._replace(message.childAddress)
        elif isinstance(message, RestartShard):
            if 0 <= message.index < len(self.addresses):
                log.warning("shard %d: restart requested by an operator", message.index)
                self.send(self.addresses[message.index], ActorExitRequest())
        elif isinstance(message, GetDirectory):
            self.send(sender, self._directory())
        elif isinstance(message, PoisonMessage):
            log.debug("undeliverable: %s", message.poisonMessage)  # e.g. a heartbeat to a lost coordinator
        elif isinstance(message, ActorExitRequest):
            self.stopping = True

    # Shards ---------------------------------------------------------------------------

    def _start_all(self, start: StartShards) -> None:
        self.settings = start.settings
        self.cluster = start.cluster
        self.membership = HostMembership(start.identity, start.cluster.vshards, start.cluster.lost_after_s)
        for index in range(start.count):
            self.addresses.append(None)
            self.endpoints.append(ShardEndpoint(index, 0, "", host=start.identity.host))
            self.retry_after.append(RETRY_FIRST_S)
            self._start(index)
        self._find_coordinator()
        self.wakeupAfter(timedelta(seconds=self.cluster.heartbeat_every_s), payload=BEAT)

    def _current(self, index: int, generation: int) -> bool:
        return 0 <= index < len(self.endpoints) and self.endpoints[index].generation == generation

    def _start(self, index: int) -> None:
        assert self.settings is not None and self.membership is not None
        address = self.createActor(ShardActor)
        self.addresses[index] = address
        wanted = self.membership.wanted_by_placement(index)
        self.membership.wanted[index] = wanted
        self.membership.held[index] = {}
        self.assigned[index] = ShardAssign(wanted, claim=not self.frozen)
        self.send(
            address,
            ShardInit(index, self.endpoints[index].generation, self.settings, wanted, claim=not self.frozen),
        )

    def _failed(self, failure: ShardFailed) -> None:
        index = failure.index
        log.error("shard %d could not start: %s", index, failure.reason)
        self.endpoints[index] = replace(self.endpoints[index], error=failure.reason)
        self._changed()
        delay = self.retry_after[index]
        self.retry_after[index] = min(delay * 2, RETRY_MOST_S)
        self.wakeupAfter(timedelta(seconds=delay), payload=("retry", index, failure.generation))

    def _replace(self, address: Any) -> None:
        if self.stopping or address not in self.addresses:
            return  # not a shard: e.g. the coordinator could not be created (no leader reachable)
        index = self.addresses.index(address)
        self.restarts += 1
        generation = self.endpoints[index].generation + 1
        log.warning("shard %d exited; starting generation %d", index, generation)
        # A shard being retried after a failed start keeps its reason until one starts.
        old = self.endpoints[index]
        self.endpoints[index] = ShardEndpoint(index, generation, "", host=old.host, error=old.error)
        self._start(index)
        self._changed()

    # The cluster ----------------------------------------------------------------------

    def _find_coordinator(self) -> None:
        """Look the coordinator up by its global name (on the leader, this creates it)."""
        assert self.membership is not None
        coordinator = self.createActor(CoordinatorActor, globalName=COORDINATOR_NAME)
        self.membership.looked_up(coordinator)
        if self.membership.identity.leader:
            self.send(coordinator, self.cluster)
        self._beat()

    def _woken(self, payload: Any) -> None:
        if payload == BEAT:
            membership = self.membership
            if membership is not None and not self.refused:
                if membership.out_of_touch and not self.frozen:
                    self.frozen = True
                    problem = f"the coordinator has not answered for {membership.silent_for():.0f}s"
                    log.warning("%s: claiming no virtual shard until it does", problem)
                    self.send(self.watcher, ClusterProblem(problem, fatal=False))
                    self._assign()
                if membership.wants_lookup():
                    log.warning("looking the coordinator up again")
                    self._find_coordinator()
                else:
                    self._beat()
            self.wakeupAfter(timedelta(seconds=self.cluster.heartbeat_every_s), payload=BEAT)
        elif isinstance(payload, tuple) and payload[0] == "retry":
            _, index, generation = payload
            if not self.stopping and self._current(index, generation):
                self.send(self.addresses[index], ActorExitRequest())  # its replacement tries again

    def _beat(self) -> None:
        if self.membership is None:
            return
        beat = self.membership.heartbeat(tuple(self.endpoints))
        if beat is not None:
            message, targets = beat
            for target in targets:
                self.send(target, message)

    def _answered(self, reply: HeartbeatReply, sender: Any) -> None:
        membership = self.membership
        if membership is None:
            return
        membership.answered(reply.seq, sender)
        thawed = self.frozen
        if thawed:
            self.frozen = False
            log.info("the coordinator answers again")
        newer = reply.directory is not None and membership.accept(reply.directory)
        if reply.hosts:
            membership.hosts = reply.hosts
        if newer or thawed:
            self._assign()
        self._relay()  # the hosts' heartbeat ages, at least, are new

    def _assign(self) -> None:
        """Tell each shard what it should hold now, if that changed."""
        assert self.membership is not None
        membership = self.membership
        for index, address in enumerate(self.addresses):
            assign = ShardAssign(membership.wanted_by_placement(index), claim=not self.frozen)
            if assign != self.assigned.get(index):
                membership.wanted[index] = assign.vshards
                self.assigned[index] = assign
                self.send(address, assign)

    def _changed(self) -> None:
        """This host's shards changed: tell the coordinator, and this host's edge at once."""
        self._beat()
        self._relay()

    def _relay(self) -> None:
        if self.watcher is not None:
            self.send(self.watcher, self._directory())

    def _directory(self) -> ShardDirectory:
        """The latest directory, with this host's own shards and holdings as they are now."""
        membership = self.membership
        assert membership is not None
        base = membership.directory or ShardDirectory(version=0, shards=())
        host = membership.identity.host
        shards = tuple(s for s in base.shards if s.host != host) + tuple(self.endpoints)
        owners = list(base.owners)
        for index, held in membership.held.items():
            mine = self.endpoints[index].shard_id
            for v, epoch in held.items():
                if 0 <= v < len(owners) and epoch > owners[v].epoch:
                    owners[v] = Owner(mine, epoch)
        return replace(
            base,
            shards=shards,
            owners=tuple(owners),
            hosts=membership.hosts or base.hosts,
            restarts=self.restarts,
            supervisor_pid=os.getpid(),
            admin_pid=os.getppid(),
            in_touch=not self.frozen,
        )
