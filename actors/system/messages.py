"""Control records exchanged with the supervisor and the shard actors, over Thespian.

Per-request traffic does not go through Thespian (``actors.data_server``); these few
records start, locate and replace shards. They are small frozen dataclasses, which
Thespian pickles; the settings a shard starts with are ``actors.settings``, the
directory they carry is ``runtime.protocol.directory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from confab.actors.settings import ShardSettings


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
    # False while the host is out of touch with the store's member table: keep what is held, claim nothing.
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

    The host sends what the cluster's live members say (``actors.cluster.Assignment``); the
    supervisor hands each shard its own (``ShardAssign``), now and to every replacement.
    """

    wanted: tuple[frozenset[int], ...]  # per shard index
    # False while the host is out of touch with the store's member table, excluded by the
    # other hosts, or leaving: keep what is held, claim nothing.
    claim: bool = True
