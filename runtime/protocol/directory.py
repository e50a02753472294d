"""Where conversations live: virtual shards, the shard processes that hold them, and the hosts.

A conversation belongs to one of a fixed number of *virtual shards* by a stable hash
of its key (:func:`vshard_of`); the number is a setting of the whole cluster and never
changes while it runs. Virtual shards are what moves: each is held by one shard
process at a time, under an epoch the store bumps whenever it changes hands (see
``runtime.store``). Every host computes which shard should hold each from the
cluster's live members (``actors.cluster``) and makes a :class:`ShardDirectory`
whenever anything changes; its edge routes by ``owners``: what the lease table and
this host's own shards say is really held, at which epoch.

``version`` only grows, across restarts of the host too: of two directories, the
one with the higher version wins.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from confab.runtime.inspection import NOBODY, HostView, Owner
from confab.runtime.model import ConversationKey

__all__ = ["NOBODY", "HostView", "Owner", "ShardDirectory", "ShardEndpoint", "shard_id", "vshard_of"]


def vshard_of(key: ConversationKey, vshards: int) -> int:
    """The virtual shard of a conversation (the same on every host and in every version)."""
    return zlib.crc32(f"{key.tenant_id}\x00{key.conversation_id}".encode()) % vshards


def shard_id(host: str, index: int) -> str:
    """A shard's name in the cluster and its owner name in the store: the same across restarts."""
    return f"{host}/{index}"


@dataclass(frozen=True, slots=True)
class ShardEndpoint:
    index: int
    generation: int  # bumped whenever the shard's process is replaced
    address: str  # data plane for other hosts ("tcp:HOST:PORT"), "" while the shard is starting
    pid: int = 0
    error: str = ""  # why it is not serving (it could not start), "" when it is
    host: str = ""
    local_address: str = ""  # data plane for the edge of its own host ("unix:PATH"), if any

    @property
    def serving(self) -> bool:
        return bool(self.address) and not self.error

    @property
    def shard_id(self) -> str:
        return shard_id(self.host, self.index)

    def address_for(self, host: str) -> str:
        """Where an edge on ``host`` connects."""
        return self.local_address if host == self.host and self.local_address else self.address


@dataclass(frozen=True, slots=True)
class ShardDirectory:
    version: int
    shards: tuple[ShardEndpoint, ...]  # every shard of every host that is up or leaving
    owners: tuple[Owner, ...] = ()  # per virtual shard
    placement: tuple[str, ...] = ()  # per virtual shard: the shard id that should hold it
    hosts: tuple[HostView, ...] = ()
    restarts: int = 0  # shard processes replaced since the service started (this host's)
    supervisor_pid: int = 0  # of this host's supervisor
    admin_pid: int = 0  # the Thespian admin process this host's supervisor runs under
    # Whether this host's heartbeat reaches the member table: False once it has failed for
    # lost_after_s (the rest of the directory is then as last read, and may be stale).
    in_touch: bool = True

    @property
    def vshards(self) -> int:
        return len(self.owners)

    @property
    def settled(self) -> bool:
        """Every shard is serving or has said why it cannot."""
        return all(s.serving or s.error for s in self.shards)

    @property
    def complete(self) -> bool:
        """Every virtual shard is held by a shard of this directory: every conversation can be served."""
        live = {s.shard_id for s in self.shards if s.serving}
        return bool(self.owners) and all(owner.shard in live for owner in self.owners)

    def unowned(self) -> list[int]:
        live = {s.shard_id for s in self.shards if s.serving}
        return [v for v, owner in enumerate(self.owners) if owner.shard not in live]

    def shard(self, shard: str) -> ShardEndpoint | None:
        for endpoint in self.shards:
            if endpoint.shard_id == shard:
                return endpoint
        return None
