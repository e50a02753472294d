"""What operators see of the live runtime: plain records the engine answers the Admin API with.

The shards fill them (``actors.queries``), the data plane carries them as positional
lists (``to_wire``/``from_wire``, like every record that crosses a process), the edge
turns them into protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confab.runtime.model import ConversationKey, ConversationState


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """A shard's own figures, as it answers a heartbeat."""

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
    host: str = ""
    held: tuple[tuple[int, int], ...] = ()  # (virtual shard, epoch) of each it holds now
    ownership_error: str = ""  # why its last claim or renewal failed, "" if it did not
    # Its live analytics: (figure, tenant, flow, state, webhook, outcome, value), runtime.analytics.
    analytics: tuple[tuple[str, str, str, str, str, str, float], ...] = ()
    # Its model calls: (figure, provider, item, value), runtime.model_figures.
    models: tuple[tuple[str, str, str, float], ...] = ()

    def to_wire(self) -> list[Any]:
        return [
            self.index,
            self.generation,
            self.pid,
            self.started_at,
            self.resident_conversations,
            self.resident_limit,
            self.activations,
            self.passivations,
            self.commands,
            self.batches,
            self.store_ok,
            self.store_latency_ms,
            self.store_error,
            self.rss_bytes,
            self.cpu_seconds,
            self.waiting_on_webhooks,
            self.host,
            [list(h) for h in self.held],
            self.ownership_error,
            [list(a) for a in self.analytics],
            [list(m) for m in self.models],
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> ShardStatus:
        fields = list(w)
        if len(fields) > 17:  # msgpack gives lists back: the held pairs become tuples again
            fields[17] = tuple((v, epoch) for v, epoch in fields[17])
        if len(fields) > 19:
            fields[19] = tuple(tuple(a) for a in fields[19])
        if len(fields) > 20:
            fields[20] = tuple(tuple(m) for m in fields[20])
        return cls(*fields)


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a virtual shard now: a shard id and the epoch it holds it at ("" and 0: nobody)."""

    shard: str = ""
    epoch: int = 0


NOBODY = Owner()


@dataclass(frozen=True, slots=True)
class HostView:
    """A host of the cluster as the member table shows it (``actors.cluster``)."""

    host: str
    # "up"; "leaving" (handing its virtual shards off); "lost" (no heartbeat for lost_after_s);
    # "unreachable" (its heartbeat is young, but most other hosts cannot reach it: it holds nothing)
    state: str
    heartbeat_age_s: float  # by the store's clock, when the directory was made
    edge: str = ""  # the host's gRPC listen address
    pid: int = 0  # of the host's edge process
    shards: int = 0
    incarnation: int = 0  # this run of the host (a restart has a new one)
    vshards: int = 0  # the virtual shards its shards hold


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """A command waiting in a conversation's mailbox (behind a webhook)."""

    message_id: str
    kind: str  # turn | reset | get_state | force_state
    text: str


@dataclass(frozen=True, slots=True)
class TurnSummary:
    seq: int
    message_id: str
    kind: str
    at: float
    input: str  # what the user sent (text, else payload), or an operator's reason
    intent: str = ""
    state_before: str = ""
    state_after: str = ""
    response: str = ""
    duration_ms: float = 0.0
    actions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationInspection:
    key: ConversationKey
    shard: int
    resident: bool
    state: ConversationState
    queued: tuple[QueuedCommand, ...] = ()
    webhook_in_flight: str = ""  # the webhook its turn waits for, if any
    turns: tuple[TurnSummary, ...] = ()
    webhook_waiting_s: float = 0.0  # how long its turn has waited on that webhook
    # Created by its first message, whose turn waits on a webhook: nothing of it is stored yet
    # (``state`` is the one that turn began with).
    first_turn_pending: bool = False


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    key: ConversationKey
    current_state: str
    flow_id: str
    flow_version: str
    message_count: int
    last_activity: float
    in_handoff: bool
    resident: bool
    shard: int
    webhook: str = ""  # the webhook its turn waits on ("" if none)
    webhook_waiting_s: float = 0.0  # for how long
    mailbox: int = 0  # commands queued behind that turn
    stored: bool = True  # False: created by its first message, whose turn waits on a webhook


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """Which conversations a list shows; every field is optional."""

    tenant_id: str = ""
    state: str = ""
    flow_id: str = ""
    idle_longer_than_s: float = 0.0
    in_handoff: bool = False
    resident_only: bool = False
    waiting_on_webhook: bool = False

    def admits(self, summary: ConversationSummary, now: float) -> bool:
        """Whether ``summary`` passes every filter that is set."""
        return not (
            (self.tenant_id and summary.key.tenant_id != self.tenant_id)
            or (self.state and summary.current_state != self.state)
            or (self.flow_id and summary.flow_id != self.flow_id)
            or (self.idle_longer_than_s and now - summary.last_activity <= self.idle_longer_than_s)
            or (self.in_handoff and not summary.in_handoff)
            or (self.resident_only and not summary.resident)
            or (self.waiting_on_webhook and not summary.webhook)
        )


@dataclass(frozen=True, slots=True)
class ConversationPage:
    conversations: tuple[ConversationSummary, ...]
    next_cursor: str  # "" on the last page; opaque, given back to list the next page


@dataclass(frozen=True, slots=True)
class Abandoned:
    """What abandoning a webhook call did: whether there was one, and how its turn ended."""

    done: bool
    message: str
    webhook: str = ""
    state: str = ""  # the state the turn left the conversation in
    actions: tuple[str, ...] = ()

    def to_wire(self) -> list[Any]:
        return [self.done, self.message, self.webhook, self.state, list(self.actions)]

    @classmethod
    def from_wire(cls, w: list[Any]) -> Abandoned:
        return cls(bool(w[0]), str(w[1]), str(w[2]), str(w[3]), tuple(str(a) for a in w[4]))


@dataclass(frozen=True, slots=True)
class Passivation:
    done: bool
    reason: str


@dataclass(frozen=True, slots=True)
class FlowReload:
    """What a reload of the flow files did across the shards."""

    loaded: list[str]  # "flow@version", now the latest of each flow
    skipped: list[str]  # files that did not load, as "PATH:LINE: message"
    failed: list[str]  # shards that could not reload


@dataclass(frozen=True, slots=True)
class ShardView:
    """One shard as the edge sees it: where it is, whether it answers, and its last figures."""

    index: int
    generation: int
    address: str
    responsive: bool
    # Seconds since the shard last answered anything (a heartbeat, a batch); -1: never.
    last_heard_s: float
    error: str
    queued: int  # commands waiting at the edge to be sent
    in_flight: int  # commands sent and not answered yet
    status: ShardStatus | None = None
    host: str = ""
    vshards: int = 0  # virtual shards it holds, as the directory says

    @property
    def shard_id(self) -> str:
        return f"{self.host}/{self.index}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    started_at: float
    shard_restarts: int
    shards: tuple[ShardView, ...]
    store: str  # where the store is (a path, or a database without its password)
    store_ok: bool
    store_latency_ms: float
    store_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    hosts: tuple[HostView, ...] = ()
    owners: tuple[Owner, ...] = ()  # per virtual shard, as this edge routes
    held_commands: int = 0  # commands waiting at this edge for their virtual shard to have a holder
    this_host: str = ""
    # Whether this host's heartbeat reaches the member table (else the owners may be stale).
    in_touch: bool = True

    @property
    def unowned(self) -> list[int]:
        """Virtual shards this edge cannot route now: nobody holds them, or their holder does not
        answer this edge (a host cut off from this one)."""
        live = {s.shard_id for s in self.shards if s.responsive}
        return [v for v, owner in enumerate(self.owners) if owner.shard not in live]

    @property
    def complete(self) -> bool:
        """Every virtual shard has a holder this edge reaches: every conversation can be served."""
        return bool(self.owners) and self.in_touch and not self.unowned
