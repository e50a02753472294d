"""What a shard process is started with, and who a host is: plain records of the shard side.

The supervisor hands a :class:`ShardSettings` to every shard it starts (inside the
Thespian records of ``actors.system.messages``, which pickles them); the shard itself
(``actors.shard``) and the tests that run one in their own process use it as is.
A :class:`HostIdentity` is how the other hosts know this one in the store's member
table (``actors.cluster``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confab.runtime.models import ModelSettings
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
    # What flows' generate steps may call (model providers), and the tenants' token budgets.
    models: ModelSettings = field(default_factory=ModelSettings)
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
    # Conversation analytics counted from the turns, written with them (engine.analytics).
    analytics: bool = True

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
