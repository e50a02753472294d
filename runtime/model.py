"""The domain model: plain dataclasses, independent of protobuf and of Thespian.

The gRPC edge converts protobuf to these once (``grpc_edge.convert``); everything
behind it (the engine, the shards, their conversations, flows, store) speaks only these.

Each record that crosses a process boundary has ``to_wire()`` / ``from_wire()``:
a compact positional list that msgpack serializes (see ``runtime.protocol.codec``).
Positional lists keep messages small and avoid per-field reflection on the hot path;
new fields are appended at the end so older readers keep working.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


def new_id() -> str:
    """A fresh id for a request, a message or a stream: 32 random hex digits (128 bits)."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """A conversation is identified by its tenant and its id: tenants never share one."""

    tenant_id: str
    conversation_id: str

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.conversation_id}"


@dataclass(slots=True)
class QuickReply:
    title: str
    payload: str = ""
    content_type: str = ""

    def to_wire(self) -> list[Any]:
        return [self.title, self.payload, self.content_type]

    @classmethod
    def from_wire(cls, w: list[Any]) -> QuickReply:
        return cls(*w)


@dataclass(slots=True)
class Button:
    title: str
    type: str = "postback"  # postback | url | phone | share | login
    payload: str = ""
    url: str = ""

    def to_wire(self) -> list[Any]:
        return [self.title, self.type, self.payload, self.url]

    @classmethod
    def from_wire(cls, w: list[Any]) -> Button:
        return cls(*w)


@dataclass(slots=True)
class CarouselCard:
    title: str
    subtitle: str = ""
    image_url: str = ""
    buttons: list[Button] = field(default_factory=list)

    def to_wire(self) -> list[Any]:
        return [self.title, self.subtitle, self.image_url, [b.to_wire() for b in self.buttons]]

    @classmethod
    def from_wire(cls, w: list[Any]) -> CarouselCard:
        return cls(w[0], w[1], w[2], [Button.from_wire(b) for b in w[3]])


@dataclass(slots=True)
class Content:
    """A message's content, inbound or outbound.

    ``media``, ``location`` and ``form`` keep the proto's field names as plain dicts:
    Confab passes them through to flows without interpreting them.
    """

    type: str = "text"
    text: str = ""
    payload: str = ""
    language: str = ""
    quick_replies: list[QuickReply] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    carousel: list[CarouselCard] = field(default_factory=list)
    media: JsonDict | None = None
    location: JsonDict | None = None
    form: JsonDict | None = None
    metadata: JsonDict = field(default_factory=dict)

    def to_wire(self) -> list[Any]:
        return [
            self.type,
            self.text,
            self.payload,
            self.language,
            [q.to_wire() for q in self.quick_replies],
            [b.to_wire() for b in self.buttons],
            [c.to_wire() for c in self.carousel],
            self.media,
            self.location,
            self.form,
            self.metadata,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> Content:
        return cls(
            w[0],
            w[1],
            w[2],
            w[3],
            [QuickReply.from_wire(q) for q in w[4]],
            [Button.from_wire(b) for b in w[5]],
            [CarouselCard.from_wire(c) for c in w[6]],
            w[7],
            w[8],
            w[9],
            w[10],
        )


@dataclass(slots=True)
class ProcessingHints:
    priority: str = "normal"
    expected_response_type: str = ""
    bypass_automation: bool = False
    require_human_review: bool = False
    bypass_cache: bool = False
    force_flow: str = ""
    custom_hints: JsonDict = field(default_factory=dict)

    def to_wire(self) -> list[Any]:
        return [
            self.priority,
            self.expected_response_type,
            self.bypass_automation,
            self.require_human_review,
            self.bypass_cache,
            self.force_flow,
            self.custom_hints,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> ProcessingHints:
        return cls(*w)


@dataclass(slots=True)
class InboundMessage:
    """One user message addressed to one conversation."""

    user_id: str
    content: Content
    channel: str = "web"
    session_id: str = ""
    hints: ProcessingHints = field(default_factory=ProcessingHints)
    # The turn of the last reply its user had seen when they wrote it (the wire's
    # metadata.custom_metadata["confab.seen_turn"]); None: the client did not say.
    seen_turn: int | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.user_id,
            self.content.to_wire(),
            self.channel,
            self.session_id,
            self.hints.to_wire(),
            self.seen_turn,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> InboundMessage:
        # Messages recorded before seen_turn was appended have five items.
        seen_turn = w[5] if len(w) > 5 else None
        return cls(w[0], Content.from_wire(w[1]), w[2], w[3], ProcessingHints.from_wire(w[4]), seen_turn)


@dataclass(slots=True)
class ConversationState:
    """Everything a conversation remembers; mirrors the proto's ``ConversationState``.

    Times are Unix seconds (float).
    """

    current_state: str
    flow_id: str
    flow_version: str
    previous_states: list[str] = field(default_factory=list)
    slots: JsonDict = field(default_factory=dict)
    variables: JsonDict = field(default_factory=dict)
    user_profile: JsonDict = field(default_factory=dict)
    intent_history: list[str] = field(default_factory=list)
    current_intent: str = ""
    intent_confidence: float = 0.0
    created_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    message_count: int = 0
    error_count: int = 0
    # What a flow keeps for itself between turns (the slot being asked, attempts, A/B
    # variants, human handoff...): not part of the wire contract's ConversationState.
    flow_memory: JsonDict = field(default_factory=dict)

    def to_wire(self) -> list[Any]:
        return [
            self.current_state,
            self.flow_id,
            self.flow_version,
            self.previous_states,
            self.slots,
            self.variables,
            self.user_profile,
            self.intent_history,
            self.current_intent,
            self.intent_confidence,
            self.created_at,
            self.last_activity,
            self.message_count,
            self.error_count,
            self.flow_memory,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> ConversationState:
        return cls(*w)  # states stored before a field was appended get its default


@dataclass(slots=True)
class TurnResult:
    """What one processed message produced."""

    response: Content
    state: ConversationState
    context_updates: JsonDict = field(default_factory=dict)
    actions_performed: list[str] = field(default_factory=list)
    ab_variant: str = ""
    # Time the command waited in the shard's batch before its turn, and the turn itself.
    queue_time_ms: float = 0.0
    execution_time_ms: float = 0.0
    # True when this is the remembered answer to a message id seen before.
    replayed: bool = False
    # The conversation's current_state before this turn ("" for a new conversation).
    state_before: str = ""

    @property
    def turn(self) -> int:
        """The turn this reply answers: the conversation's message count after it. A client
        sends it back as the turn its user has seen (``InboundMessage.seen_turn``)."""
        return self.state.message_count

    def to_wire(self) -> list[Any]:
        return [
            self.response.to_wire(),
            self.state.to_wire(),
            self.context_updates,
            self.actions_performed,
            self.ab_variant,
            self.queue_time_ms,
            self.execution_time_ms,
            self.replayed,
            self.state_before,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> TurnResult:
        return cls(
            Content.from_wire(w[0]),
            ConversationState.from_wire(w[1]),
            w[2],
            w[3],
            w[4],
            w[5],
            w[6],
            w[7],
            w[8],
        )


@dataclass(slots=True)
class ResetResult:
    previous_state: str
    state: ConversationState
    replayed: bool = False

    def to_wire(self) -> list[Any]:
        return [self.previous_state, self.state.to_wire(), self.replayed]

    @classmethod
    def from_wire(cls, w: list[Any]) -> ResetResult:
        return cls(w[0], ConversationState.from_wire(w[1]), w[2])


@dataclass(slots=True)
class StateResult:
    """A conversation's state, read without changing it."""

    state: ConversationState

    def to_wire(self) -> list[Any]:
        return [self.state.to_wire()]

    @classmethod
    def from_wire(cls, w: list[Any]) -> StateResult:
        return cls(ConversationState.from_wire(w[0]))
