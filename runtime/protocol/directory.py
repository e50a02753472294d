"""Where the shards are: the supervisor's directory, as the engine's client side keeps it.

Each shard index has an endpoint: the generation of the process serving it (bumped
whenever a shard is replaced), the data-plane address to connect to, and, while it
cannot serve, why. ``version`` only grows: of two directories, the newer wins.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShardEndpoint:
    index: int
    generation: int
    address: str  # "" while the shard is starting
    pid: int = 0
    error: str = ""  # why it is not serving (it could not start), "" when it is

    @property
    def serving(self) -> bool:
        return bool(self.address) and not self.error


@dataclass(frozen=True, slots=True)
class ShardDirectory:
    version: int
    shards: tuple[ShardEndpoint, ...]
    restarts: int = 0  # shard processes replaced since the service started
    supervisor_pid: int = 0
    admin_pid: int = 0  # the Thespian admin process the supervisor runs under

    @property
    def settled(self) -> bool:
        """Every shard is serving or has said why it cannot."""
        return all(s.serving or s.error for s in self.shards)
