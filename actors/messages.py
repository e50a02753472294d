"""Control records exchanged with the supervisor and the shards.

The per-request traffic (command batches and their outcomes) is msgpack bytes
(``runtime.wire``). These few control records carry Thespian actor addresses,
which only Thespian itself can serialize, so they are small frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runtime.webhooks import WebhookTarget


@dataclass(frozen=True, slots=True)
class ShardSettings:
    store_path: str
    synchronous: str
    turns_kept: int
    resident_limit: int
    default_flow: str
    flow_dirs: tuple[str, ...] = ()  # loaded after the bundled flows
    webhooks: tuple[WebhookTarget, ...] = ()  # what flows' webhook actions may call


@dataclass(frozen=True, slots=True)
class StartShards:
    """Edge → supervisor: start ``count`` shards; answered with a :class:`ShardDirectory`."""

    count: int
    settings: ShardSettings


@dataclass(frozen=True, slots=True)
class ShardInit:
    """Supervisor → a new shard: who it is and how to open its store."""

    index: int
    generation: int
    settings: ShardSettings


@dataclass(frozen=True, slots=True)
class GetDirectory:
    """Edge → supervisor: where is each shard now?"""


@dataclass(frozen=True, slots=True)
class ShardDirectory:
    addresses: tuple[Any, ...]  # Thespian ActorAddress per shard index
    generations: tuple[int, ...]  # bumped each time a shard is restarted
    restarts: int
    pid: int  # the supervisor's own pid


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Edge → shard: answer with a :class:`ShardStatistics`."""


@dataclass(frozen=True, slots=True)
class ShardStatistics:
    index: int
    generation: int
    pid: int
    started_at: float
    resident_conversations: int
    resident_limit: int
    activations: int
    passivations: int
    commands: int
    batches: int
    store_ok: bool
    store_latency_ms: float
    store_error: str
    rss_bytes: int
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class ReloadFlows:
    """Edge → shard: load the flow files again; answered with :class:`FlowsReloaded`."""


@dataclass(frozen=True, slots=True)
class FlowsReloaded:
    index: int
    versions: tuple[tuple[str, str], ...]  # (flow id, version) now the latest of each flow
    problems: tuple[str, ...]  # files skipped, as "PATH:LINE: message"
