"""Control records exchanged with the supervisor and the shard actors, over Thespian.

Per-request traffic does not go through Thespian (``actors.data_server``); these few
records start, locate and replace shards. They are small frozen dataclasses, which
Thespian pickles; the directory they carry is ``runtime.protocol.directory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confab.runtime.protocol.security import DataPlaneSettings
from confab.runtime.store import Retention
from confab.runtime.webhooks import WebhookTarget


@dataclass(frozen=True, slots=True)
class ShardSettings:
    store_path: str
    synchronous: str
    resident_limit: int
    default_flow: str
    retention: Retention = field(default_factory=Retention)
    flow_dirs: tuple[str, ...] = ()  # loaded after the bundled flows
    webhooks: tuple[WebhookTarget, ...] = ()  # what flows' webhook actions may call
    # Where shard N of generation G listens for its own host's edge:
    # "unix:<dir>/s{index}.{generation}.sock".
    data_address: str = ""
    # And for the edges of other hosts, in a cluster: "tcp:<advertised address>:0" (the port
    # is the kernel's choice); "" on a single host.
    cluster_data_address: str = ""
    host: str = "local"  # this host's id in the cluster (shard ids are "<host>/<index>")
    vshards: int = 256
    lease_s: float = 4.0  # how long a claimed or renewed virtual shard is held without renewal
    renew_every_s: float = 1.0
    # TLS files and limits of the data-plane server (paths: each shard builds its own contexts).
    data_plane: DataPlaneSettings = field(default_factory=DataPlaneSettings)

    def addresses_of(self, index: int, generation: int) -> list[str]:
        addresses = [self.data_address.format(index=index, generation=generation)]
        if self.cluster_data_address:
            addresses.append(self.cluster_data_address)
        return addresses


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """Who a host is, as the other hosts see it in the store's member table."""

    host: str
    edge: str = ""  # its gRPC listen address
    pid: int = 0  # its edge process
    # Tells this run of the host from an earlier one under the same name (a restart).
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class StartShards:
    """Host → supervisor: start ``count`` shards. The sender hears every directory from now on."""

    count: int
    settings: ShardSettings


@dataclass(frozen=True, slots=True)
class ShardInit:
    """Supervisor → a new shard: who it is, how to open its store, where to listen."""

    index: int
    generation: int
    settings: ShardSettings
    wanted: frozenset[int] = frozenset()  # the virtual shards it should hold from the start
    claim: bool = True  # see ShardAssign


@dataclass(frozen=True, slots=True)
class ShardAssign:
    """Supervisor → shard: the virtual shards it should hold now (it claims and releases)."""

    vshards: frozenset[int]
    # False while the host is out of touch with the coordinator: keep what is held, claim nothing.
    claim: bool = True


@dataclass(frozen=True, slots=True)
class ShardHoldings:
    """Shard → supervisor: the virtual shards it holds now, at their epochs."""

    index: int
    generation: int
    version: int
    held: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class ShardReady:
    """Shard → supervisor: serving at ``address``."""

    index: int
    generation: int
    address: str  # for other hosts' edges (its own host's when there are no others)
    pid: int
    local_address: str = ""  # for its own host's edge


@dataclass(frozen=True, slots=True)
class ShardFailed:
    """Shard → supervisor: it could not start (the store would not open, say)."""

    index: int
    generation: int
    reason: str


@dataclass(frozen=True, slots=True)
class GetDirectory:
    """Host → supervisor: send the directory (also how the host knows the supervisor answers)."""


@dataclass(frozen=True, slots=True)
class RestartShard:
    """Host → supervisor: stop shard ``index`` so that a new one takes its place (a drill)."""

    index: int


@dataclass(frozen=True, slots=True)
class AssignShards:
    """Host → supervisor: the virtual shards each of its shards should hold now.

    The host computes them from the cluster's live members (``actors.cluster``); the
    supervisor hands each shard its own (``ShardAssign``), now and to every replacement.
    """

    wanted: tuple[frozenset[int], ...]  # per shard index
    # False while the host is out of touch with the store's member table, excluded by the
    # other hosts, or leaving: keep what is held, claim nothing.
    claim: bool = True
