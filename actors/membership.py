"""A host's side of the cluster protocol, as its supervisor keeps it (plain state, no Thespian).

The supervisor reports to the coordinator (``actors.coordinator``) with a heartbeat
built here, every ``heartbeat_every_s`` and at once when its shards or their
holdings change; it learns the directory from the replies. At most
``MAX_UNANSWERED`` heartbeats are in flight: toward a coordinator that cannot be
reached, more would only pile up in Thespian's transmit queue (and stall the
supervisor's other sends). A coordinator silent for ``SILENT_AFTER_S`` is looked up
again (a new leader system has a new coordinator).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..runtime.protocol.directory import ShardDirectory, ShardEndpoint, shard_id
from .messages import HostHeartbeat, HostIdentity

MAX_UNANSWERED = 3
SILENT_AFTER_S = 5.0


class HostMembership:
    def __init__(self, identity: HostIdentity, vshards: int) -> None:
        self.identity = identity
        self.vshards = vshards
        self.coordinator: object | None = None
        self.directory: ShardDirectory | None = None
        self.held: dict[int, Mapping[int, int]] = {}  # shard index -> {vshard: epoch}
        self.wanted: dict[int, frozenset[int]] = {}  # shard index -> what it was told to hold
        self.leaving = False
        self._seq = 0
        self._answered = 0
        self._last_answer = time.monotonic()
        self._last_sent = 0.0

    def found(self, coordinator: object) -> None:
        self.coordinator = coordinator
        self._answered = self._seq
        self._last_answer = time.monotonic()

    def heartbeat(self, shards: tuple[ShardEndpoint, ...]) -> HostHeartbeat | None:
        """The next heartbeat, or None while too many are unanswered."""
        if self.coordinator is None or self._seq - self._answered >= MAX_UNANSWERED:
            return None
        self._seq += 1
        self._last_sent = time.monotonic()
        host = self.identity.host
        return HostHeartbeat(
            identity=self.identity,
            seq=self._seq,
            vshards=self.vshards,
            shards=shards,
            held={shard_id(host, i): dict(h) for i, h in self.held.items()},
            wanted={shard_id(host, i): w for i, w in self.wanted.items()},
            leaving=self.leaving,
            seen_version=self.directory.version if self.directory else 0,
        )

    def answered(self, seq: int) -> None:
        self._last_answer = time.monotonic()
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
