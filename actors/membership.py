"""A host's side of the cluster protocol, as its supervisor keeps it (plain state, no Thespian).

The supervisor reports to the coordinator (``actors.coordinator``) with a heartbeat
built here, every ``heartbeat_every_s`` and at once when its shards or their
holdings change; it learns the directory from the replies, and the coordinator's
address from who sends them.

At most ``MAX_UNANSWERED`` heartbeats are in flight. Toward a coordinator that cannot
be reached (a cut link) Thespian holds a send for minutes, and twenty held sends stall
every other send of the supervisor, its answers to its own host included; the held
heartbeats are delivered once the link is back, and their answers resume the beat. A
coordinator silent for ``LOOKUP_AFTER_S`` is also looked up again by its global name,
once per silence (a leader whose actor system was started again has a new
coordinator); whichever answers is used.

A host that has not heard the coordinator for ``lost_after_s`` knows the cluster
counts it lost and is moving its share elsewhere: it keeps what it holds (until its
leases say otherwise, or the new holders want them) but claims nothing
(:attr:`out_of_touch`), so that a stale placement never has it take virtual shards
back from their new holders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..runtime.protocol.directory import HostView, ShardDirectory, ShardEndpoint, shard_id
from .messages import HostHeartbeat, HostIdentity

MAX_UNANSWERED = 3
LOOKUP_AFTER_S = 10.0


class HostMembership:
    def __init__(self, identity: HostIdentity, vshards: int, lost_after_s: float) -> None:
        self.identity = identity
        self.vshards = vshards
        self.lost_after_s = lost_after_s
        self.coordinator: object | None = None  # the address that answered last
        self.candidate: object | None = None  # a fresh lookup's address, until one answers
        self.directory: ShardDirectory | None = None
        self.hosts: tuple[HostView, ...] = ()  # as of the coordinator's latest reply
        self.held: dict[int, Mapping[int, int]] = {}  # shard index -> {vshard: epoch}
        self.wanted: dict[int, frozenset[int]] = {}  # shard index -> what it was told to hold
        self.leaving = False
        self._seq = 0
        self._answered = 0
        self._last_answer = time.monotonic()
        self._looked_up_in_silence = False

    def looked_up(self, address: object) -> None:
        """A lookup by global name gave ``address`` (it may not resolve until the leader answers)."""
        if self.coordinator is not None:
            self._looked_up_in_silence = True
        if self.coordinator is None:
            self.coordinator = address
        else:
            self.candidate = address

    def heartbeat(self, shards: tuple[ShardEndpoint, ...]) -> tuple[HostHeartbeat, list[object]] | None:
        """The next heartbeat and where to send it, or None while too many are unanswered."""
        if self.coordinator is None:
            return None
        targets = [self.coordinator]
        if self._seq - self._answered >= MAX_UNANSWERED:
            if self.candidate is None:
                return None
            targets = []  # the window is full: only the fresh lookup gets one
        if self.candidate is not None:  # once: a send to an address being resolved is held too
            targets.append(self.candidate)
            self.candidate = None
        self._seq += 1
        host = self.identity.host
        beat = HostHeartbeat(
            identity=self.identity,
            seq=self._seq,
            vshards=self.vshards,
            shards=shards,
            held={shard_id(host, i): dict(h) for i, h in self.held.items()},
            wanted={shard_id(host, i): w for i, w in self.wanted.items()},
            leaving=self.leaving,
            seen_version=self.directory.version if self.directory else 0,
        )
        return beat, targets

    def answered(self, seq: int, sender: object) -> None:
        self._last_answer = time.monotonic()
        self._looked_up_in_silence = False
        self.coordinator, self.candidate = sender, None
        if seq > 0:
            self._answered = max(self._answered, seq)
        else:  # a push: whatever was sent before it has been heard or is lost
            self._answered = self._seq

    def accept(self, directory: ShardDirectory) -> bool:
        """Whether ``directory`` is newer than the one held (then it is held)."""
        if self.directory is not None and directory.version <= self.directory.version:
            return False
        self.directory = directory
        return True

    def silent_for(self) -> float:
        """How long the coordinator has not answered while heartbeats were waiting for it."""
        if self._seq == self._answered:
            return 0.0
        return time.monotonic() - self._last_answer

    def wants_lookup(self) -> bool:
        return self.silent_for() > LOOKUP_AFTER_S and not self._looked_up_in_silence

    @property
    def out_of_touch(self) -> bool:
        """Silent long enough that the coordinator counts this host lost."""
        return self.silent_for() > self.lost_after_s

    def wanted_by_placement(self, index: int) -> frozenset[int]:
        """The virtual shards the latest placement gives shard ``index`` of this host."""
        if self.directory is None:
            return self.wanted.get(index, frozenset())
        mine = shard_id(self.identity.host, index)
        return frozenset(v for v, shard in enumerate(self.directory.placement) if shard == mine)

    @property
    def handed_off(self) -> bool:
        """Leaving, and no shard of this host holds anything any more."""
        return self.leaving and not any(self.held.values())
