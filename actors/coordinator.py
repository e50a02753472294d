"""The coordinator: one per cluster, on the leader's actor system; it owns the directory.

Every host's supervisor finds it through Thespian's convention (a global name, on the
system whose capabilities say it leads: ``LEADER_CAPABILITY``) and sends it a
:class:`~.messages.HostHeartbeat` every second and whenever something changed: its
shards, the virtual shards each holds (at which epochs), whether it is leaving. The
coordinator answers each, with the directory when the host's is older.

Failures are judged here, not by Thespian's convention timers (which take about 22
minutes to drop a member): a host silent for ``lost_after_s`` is lost, its shards
leave the directory (edges take back what they sent there) and the placement
(``actors.placement``) gives its virtual shards to the other hosts. Those claim them
in the store once the lost host's leases have run out, which it cannot renew
without reaching the store, and which it stops trusting before they do. A lost host
that comes back (a cut link healed, a pause over) is a host like any other: it
holds nothing by then, and gets a share again.

The coordinator keeps no state of its own that matters: a new one (after the
leader's actor system was started again) rebuilds the directory from the next
heartbeats, starting from what the hosts say they hold and were told to hold.
Nothing is ever sent to a host that is lost: Thespian keeps a send to an
unreachable host pending for minutes, and enough of them stall every other send.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from thespian.actors import Actor, WakeupMessage

from ..runtime.protocol.directory import NOBODY, HostView, Owner, ShardDirectory, ShardEndpoint
from .messages import ClusterSettings, HeartbeatReply, HostHeartbeat, HostIdentity, HostRefused
from .placement import place

log = logging.getLogger(__name__)

COORDINATOR_NAME = "confab-coordinator"
LEADER_CAPABILITY = "Confab Leader"
TICK_S = 0.25


@dataclass(slots=True)
class _Host:
    identity: HostIdentity
    address: Any  # its supervisor
    last_heard: float
    shards: tuple[ShardEndpoint, ...] = ()
    held: dict[str, dict[int, int]] = field(default_factory=dict)
    wanted: dict[str, frozenset[int]] = field(default_factory=dict)
    leaving: bool = False
    lost: bool = False
    seen_version: int = 0

    @property
    def state(self) -> str:
        return "lost" if self.lost else "leaving" if self.leaving else "up"


class CoordinatorActor(Actor):
    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: dict[str, Any]) -> bool:
        return bool(capabilities.get(LEADER_CAPABILITY))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings: ClusterSettings | None = None
        self.hosts: dict[str, _Host] = {}
        self.placement: tuple[str, ...] = ()
        self.directory: ShardDirectory | None = None
        self.version = 0

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, ClusterSettings):
            if self.settings is None:
                self.settings = message
                self.wakeupAfter(timedelta(seconds=TICK_S))
        elif isinstance(message, HostHeartbeat):
            if self.settings is not None:
                self._heard(message, sender)
        elif isinstance(message, WakeupMessage):
            self._tick()
            self.wakeupAfter(timedelta(seconds=TICK_S))

    # Hosts --------------------------------------------------------------------------

    def _heard(self, beat: HostHeartbeat, sender: Any) -> None:
        assert self.settings is not None
        if beat.vshards != self.settings.vshards:
            self.send(
                sender,
                HostRefused(
                    f"this host has {beat.vshards} virtual shards and the cluster {self.settings.vshards}:"
                    " every host must have the same cluster.vshards"
                ),
            )
            return
        name = beat.identity.host
        host = self.hosts.get(name)
        now = time.monotonic()
        if (
            host is not None
            and host.address != sender
            and not host.lost
            and host.identity.pid != beat.identity.pid
        ):
            self.send(
                sender, HostRefused(f"another host already calls itself {name!r}: host ids must be unique")
            )
            return
        if host is None or host.address != sender:
            if host is None:
                log.info("host %s joined (edge %s)", name, beat.identity.edge or "-")
            host = self.hosts[name] = _Host(beat.identity, sender, now)
            changed = True
        else:
            changed = host.lost
            if host.lost:
                log.warning("host %s is back after %.1fs", name, now - host.last_heard)
        host.last_heard = now
        host.lost = False
        held = {s: dict(h) for s, h in beat.held.items()}
        wanted = dict(beat.wanted)
        changed |= (beat.shards, held, beat.leaving) != (host.shards, host.held, host.leaving)
        host.identity, host.shards, host.held, host.wanted = beat.identity, beat.shards, held, wanted
        if beat.leaving and not host.leaving:
            log.info("host %s is leaving: its virtual shards move", name)
        host.leaving = beat.leaving
        host.seen_version = max(host.seen_version, beat.seen_version)
        if changed:
            self._recompute(reply_to=host)
        directory = self.directory
        newer = directory if directory is not None and host.seen_version < directory.version else None
        if newer is not None:
            host.seen_version = newer.version
        self.send(sender, HeartbeatReply(beat.seq, newer, self._host_views(time.monotonic())))

    def _tick(self) -> None:
        assert self.settings is not None
        now = time.monotonic()
        changed = False
        for name, host in list(self.hosts.items()):
            silent = now - host.last_heard
            if host.leaving and silent > self.settings.lost_after_s:
                log.info("host %s left", name)  # it handed its share off and stopped
                del self.hosts[name]
                changed = True
            elif not host.lost and silent > self.settings.lost_after_s:
                log.error("host %s lost: no heartbeat for %.1fs; its virtual shards move", name, silent)
                host.lost = True
                changed = True
            elif host.lost and silent > self.settings.forget_after_s:
                del self.hosts[name]
                changed = True
        if changed:
            self._recompute(reply_to=None)

    # The directory --------------------------------------------------------------------

    def _recompute(self, reply_to: _Host | None) -> None:
        assert self.settings is not None
        count = self.settings.vshards
        live = [h for h in self.hosts.values() if not h.lost]
        owners = self._owners(live, count)
        if not self.placement:
            self.placement = self._seed(live, owners, count)
        eligible = [
            endpoint.shard_id for h in live if not h.leaving for endpoint in h.shards if not endpoint.error
        ]
        placement = place(self.placement, eligible, count) if eligible else self.placement
        moved = sum(1 for a, b in zip(self.placement, placement, strict=True) if a != b)
        if moved:
            log.info("placement: %d virtual shards move", moved)
        self.placement = placement
        now = time.monotonic()
        directory = ShardDirectory(
            version=0,
            shards=tuple(endpoint for h in live for endpoint in h.shards),
            owners=owners,
            placement=placement,
            hosts=self._host_views(now),
        )
        previous = self.directory
        if previous is not None and _same(previous, directory):
            return
        self.version = max(self.version + 1, time.time_ns() // 1000)  # grows across restarts too
        directory = ShardDirectory(
            self.version, directory.shards, directory.owners, directory.placement, directory.hosts
        )
        self.directory = directory
        for host in live:
            if host is not reply_to:  # that one gets it in its heartbeat's reply
                host.seen_version = directory.version
                self.send(host.address, HeartbeatReply(-1, directory, directory.hosts))

    def _host_views(self, now: float) -> tuple[HostView, ...]:
        return tuple(
            HostView(
                host=h.identity.host,
                state=h.state,
                heartbeat_age_s=now - h.last_heard,
                edge=h.identity.edge,
                leader=h.identity.leader,
                pid=h.identity.pid,
                shards=len(h.shards),
            )
            for h in sorted(self.hosts.values(), key=lambda h: h.identity.host)
        )

    @staticmethod
    def _owners(live: list[_Host], count: int) -> tuple[Owner, ...]:
        owners = [NOBODY] * count
        for host in live:
            for shard, held in host.held.items():
                for v, epoch in held.items():
                    if 0 <= v < count and epoch > owners[v].epoch:  # a stale report has the older epoch
                        owners[v] = Owner(shard, epoch)
        return tuple(owners)

    @staticmethod
    def _seed(live: list[_Host], owners: tuple[Owner, ...], count: int) -> tuple[str, ...]:
        """A new coordinator's first placement: what the hosts hold, else what they were told."""
        seed = [owner.shard for owner in owners]
        for host in live:
            for shard, wanted in host.wanted.items():
                for v in wanted:
                    if 0 <= v < count and not seed[v]:
                        seed[v] = shard
        return tuple(seed)


def _same(a: ShardDirectory, b: ShardDirectory) -> bool:
    """Equal but for the version and heartbeat ages (which change on every beat)."""
    return (
        a.shards == b.shards
        and a.owners == b.owners
        and a.placement == b.placement
        and [(h.host, h.state, h.edge, h.leader, h.pid, h.shards) for h in a.hosts]
        == [(h.host, h.state, h.edge, h.leader, h.pid, h.shards) for h in b.hosts]
    )
