"""Control records exchanged with the supervisor and the shard actors, over Thespian.

Per-request traffic does not go through Thespian (``actors.data_server``); these few
records start, locate and replace shards. They are small frozen dataclasses, which
Thespian pickles; the directory they carry is ``runtime.protocol.directory``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.store import Retention
from ..runtime.webhooks import WebhookTarget


@dataclass(frozen=True, slots=True)
class ShardSettings:
    store_path: str
    synchronous: str
    resident_limit: int
    default_flow: str
    retention: Retention = field(default_factory=Retention)
    flow_dirs: tuple[str, ...] = ()  # loaded after the bundled flows
    webhooks: tuple[WebhookTarget, ...] = ()  # what flows' webhook actions may call
    # Where shard N of generation G listens: "unix:<dir>/s{index}.{generation}.sock" on one
    # host, "tcp:<host>:0" between hosts (the port is the kernel's choice).
    data_address: str = ""

    def address_of(self, index: int, generation: int) -> str:
        return self.data_address.format(index=index, generation=generation)


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


@dataclass(frozen=True, slots=True)
class ShardReady:
    """Shard → supervisor: serving at ``address``."""

    index: int
    generation: int
    address: str
    pid: int


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
