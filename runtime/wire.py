"""Records that travel between the edge and the shards, serialized with msgpack.

A shard receives one :class:`CommandBatch` per Thespian message and answers with
one :class:`OutcomeBatch`: many requests share one Thespian round trip, which is
what makes the edge→shard path affordable (a Thespian round trip costs the edge
~0.5 ms of CPU; see README "Architecture").

Every command carries a ``message_id``; a conversation remembers the ids it has
applied recently, so a batch re-sent after a shard restart is never applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from .errors import ConfabError, error_from_reason
from .model import ConversationKey, InboundMessage, ResetResult, StateResult, TurnResult


class CommandKind(IntEnum):
    TURN = 1
    GET_STATE = 2
    RESET = 3
    FORCE_STATE = 4  # an operator moves a conversation to a state (body: the state's name)


@dataclass(slots=True)
class Command:
    """One request addressed to one conversation.

    ``body`` is the kind's argument: an :class:`InboundMessage` for TURN, the
    reason (str) for RESET, the state's name for FORCE_STATE, nothing for GET_STATE.
    """

    kind: CommandKind
    message_id: str
    key: ConversationKey
    body: InboundMessage | str | None = None
    # W3C traceparent of the edge span that sent it; None unless tracing is on (runtime.telemetry).
    trace: str | None = None

    @property
    def mutates(self) -> bool:
        return self.kind is not CommandKind.GET_STATE

    def to_wire(self) -> list[Any]:
        body: Any = self.body.to_wire() if isinstance(self.body, InboundMessage) else self.body
        wire = [int(self.kind), self.message_id, self.key.tenant_id, self.key.conversation_id, body]
        if self.trace is not None:  # appended, and only when set: untraced commands stay as before
            wire.append(self.trace)
        return wire

    @classmethod
    def from_wire(cls, w: list[Any]) -> Command:
        kind = CommandKind(w[0])
        body = InboundMessage.from_wire(w[4]) if kind is CommandKind.TURN else w[4]
        return cls(kind, w[1], ConversationKey(w[2], w[3]), body, w[5] if len(w) > 5 else None)


# What a command produced: a result, or the error that stopped it.
Outcome = TurnResult | ResetResult | StateResult | ConfabError


# In an OutcomeBatch: this command waits (behind a webhook); its outcome follows later
# in a LateOutcomes message to the same sender.
DEFERRED_WIRE = [4]
# The batch id that marks a LateOutcomes message (real batch ids start at 1).
LATE_BATCH_ID = -1


def is_deferred(wire: list[Any]) -> bool:
    return wire[0] == DEFERRED_WIRE[0]


def outcome_to_wire(outcome: Outcome) -> list[Any]:
    if isinstance(outcome, ConfabError):
        return [0, outcome.reason, outcome.message, getattr(outcome, "field", "")]
    if isinstance(outcome, TurnResult):
        return [1, outcome.to_wire()]
    if isinstance(outcome, ResetResult):
        return [2, outcome.to_wire()]
    return [3, outcome.to_wire()]


def outcome_from_wire(w: list[Any]) -> Outcome:
    tag = w[0]
    if tag == 0:
        return error_from_reason(w[1], w[2], w[3] if len(w) > 3 else "")
    if tag == 1:
        return TurnResult.from_wire(w[1])
    if tag == 2:
        return ResetResult.from_wire(w[1])
    return StateResult.from_wire(w[1])


@dataclass(slots=True)
class CommandBatch:
    batch_id: int
    commands: list[Command]
    # An operator is watching (Admin.TailEvents): report activations and passivations.
    want_lifecycle: bool = False

    def encode(self) -> bytes:
        wire: list[Any] = [self.batch_id, [c.to_wire() for c in self.commands]]
        if self.want_lifecycle:
            wire.append(True)
        return msgpack.packb(wire)

    @classmethod
    def decode(cls, data: bytes) -> CommandBatch:
        wire = msgpack.unpackb(data, use_list=True)
        return cls(wire[0], [Command.from_wire(c) for c in wire[1]], len(wire) > 2 and bool(wire[2]))


@dataclass(slots=True)
class OutcomeBatch:
    """The answers to one :class:`CommandBatch`, in the same order."""

    batch_id: int
    outcomes: list[list[Any]]  # wire form; decoded lazily, one per waiting request
    # (event type, tenant id, conversation id): activations and passivations, when asked for.
    lifecycle: list[list[str]] = field(default_factory=list)

    def encode(self) -> bytes:
        wire: list[Any] = [self.batch_id, self.outcomes]
        if self.lifecycle:
            wire.append(self.lifecycle)
        return msgpack.packb(wire)

    @classmethod
    def decode(cls, data: bytes) -> OutcomeBatch:
        wire = msgpack.unpackb(data, use_list=True)
        return cls(wire[0], wire[1], wire[2] if len(wire) > 2 else [])


def pack(value: Any) -> bytes:
    return msgpack.packb(value)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, use_list=True)


@dataclass(slots=True)
class LateOutcomes:
    """Outcomes of commands that were deferred: (batch id, position in that batch, outcome wire)."""

    entries: list[tuple[int, int, list[Any]]]

    def encode(self) -> bytes:
        return msgpack.packb([LATE_BATCH_ID, [list(e) for e in self.entries]])


def decode_reply(data: bytes) -> OutcomeBatch | LateOutcomes:
    """A shard's answer: the outcomes of a batch, or late outcomes of earlier batches."""
    wire = msgpack.unpackb(data, use_list=True)
    if wire[0] == LATE_BATCH_ID:
        return LateOutcomes([(e[0], e[1], e[2]) for e in wire[1]])
    return OutcomeBatch(wire[0], wire[1], wire[2] if len(wire) > 2 else [])
