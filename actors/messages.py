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
    waiting_on_webhooks: int = 0


@dataclass(frozen=True, slots=True)
class ReloadFlows:
    """Edge → shard: load the flow files again; answered with :class:`FlowsReloaded`."""


@dataclass(frozen=True, slots=True)
class FlowsReloaded:
    index: int
    versions: tuple[tuple[str, str], ...]  # (flow id, version) now the latest of each flow
    problems: tuple[str, ...]  # files skipped, as "PATH:LINE: message"


@dataclass(frozen=True, slots=True)
class InspectRequest:
    """Edge → shard: describe one conversation (answered with an :class:`Inspection`)."""

    tenant_id: str
    conversation_id: str
    last_turns: int


@dataclass(frozen=True, slots=True)
class Inspection:
    exists: bool
    resident: bool
    state: list[Any] | None  # ConversationState wire form
    queued: tuple[tuple[str, str, str], ...]  # (message id, kind, text) waiting in the mailbox
    webhook_in_flight: str
    turns: tuple[tuple[int, str, int, bytes, float, str], ...]  # (seq, message id, kind, reply, at, input)


@dataclass(frozen=True, slots=True)
class PassivateRequest:
    """Edge → shard: drop one conversation from memory (answered with a :class:`Passivated`)."""

    tenant_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class Passivated:
    done: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RestartShard:
    """Edge → supervisor: stop shard ``index`` so that a new one takes its place (a drill)."""

    index: int


@dataclass(frozen=True, slots=True)
class ScanStored:
    """Edge → a shard: a page of stored conversations (answered with a :class:`StoredPage`)."""

    tenant_id: str
    after: tuple[str, str] | None  # (tenant id, conversation id) of the last one already seen
    limit: int


@dataclass(frozen=True, slots=True)
class StoredPage:
    rows: tuple[tuple[str, str, bytes, float], ...]  # (tenant id, conversation id, state, updated_at)


@dataclass(frozen=True, slots=True)
class ResidentAmong:
    """Edge → shard: which of these conversations are in memory (answered with the same type)."""

    keys: tuple[tuple[str, str], ...]
