"""The messages of the shard protocol, as the frames of one connection carry them.

An edge keeps one connection per shard; each frame is a list whose first item says
what it is:

    [BATCH,    batch_id, [command, ...], want_lifecycle]   edge → shard
    [OUTCOMES, batch_id, [outcome, ...], lifecycle]        shard → edge, same order
    [LATE,     [[batch_id, position, outcome], ...]]       shard → edge, when a deferred command is done
    [QUERY,    query_id, name, args]                       edge → shard (status, inspect, ...)
    [ANSWER,   query_id, ok, result]                       shard → edge

A shard runs frames in the order they arrive on a connection, so one connection per
shard keeps each conversation's commands in order. An outcome is one of::

    [ERROR, reason, message, field]   the command failed (runtime.errors reasons)
    [DONE, reply]                     a reply (codec), applied now
    [REPLAYED, reply]                 the reply it got the first time: it was applied before
    [DEFERRED]                        waiting behind a webhook; its outcome comes in a LATE frame
    [MOVED, vshard]                   not run: this shard does not hold the command's virtual
                                      shard at the epoch the edge sent it for (it moved, or is moving)

Every command carries a message id; a shard remembers the ids it applied (for the
idempotency window), so a command re-sent after a shard was replaced, or repeated by
a client with the same request id, is answered, not applied again. Every command
also names the epoch of its virtual shard the edge routed it by, and runs only on
the shard that holds that virtual shard at that very epoch: a command that reaches a
shard after its virtual shard changed hands comes back MOVED, and the edge sends it
again, in order, once it knows the new holder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..errors import ConfabError, InvalidArgument, error_from_reason
from ..model import ConversationKey, InboundMessage
from . import codec
from .codec import Result

BATCH, OUTCOMES, LATE, QUERY, ANSWER = 1, 2, 3, 4, 5
ERROR, DONE, REPLAYED, DEFERRED, MOVED = 0, 1, 2, 3, 4

DEFERRED_OUTCOME: list[Any] = [DEFERRED]

# A client's idempotency key (ProcessMessageRequest.metadata.request_id) becomes the message id
# with this prefix, so it can never be mistaken for an id the edge made up.
CLIENT_KEY_PREFIX = "c:"


def client_message_id(idempotency_key: str) -> str:
    return CLIENT_KEY_PREFIX + idempotency_key


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
    # Seconds the caller's deadline left when the edge sent it; a shard that gets to it later
    # answers DEADLINE_EXCEEDED instead of running it. None: no deadline.
    budget_s: float | None = None
    # The epoch of the command's virtual shard the edge routed it by (see runtime.protocol.directory).
    epoch: int = 0

    @property
    def mutates(self) -> bool:
        return self.kind is not CommandKind.GET_STATE

    @property
    def said(self) -> str:
        """What the command carries for an operator to read: the user's text, a reason, a state."""
        body = self.body
        if isinstance(body, InboundMessage):
            return body.content.text or body.content.payload
        return str(body or "")

    def to_wire(self) -> list[Any]:
        body: Any = self.body.to_wire() if isinstance(self.body, InboundMessage) else self.body
        wire = [
            int(self.kind),
            self.message_id,
            self.key.tenant_id,
            self.key.conversation_id,
            body,
            self.epoch,
        ]
        # Appended, and only when set: a plain command stays six items long.
        if self.trace is not None or self.budget_s is not None:
            wire.append(self.trace)
        if self.budget_s is not None:
            wire.append(self.budget_s)
        return wire

    @classmethod
    def from_wire(cls, w: list[Any]) -> Command:
        kind = CommandKind(w[0])
        body = InboundMessage.from_wire(w[4]) if kind is CommandKind.TURN else w[4]
        trace = w[6] if len(w) > 6 else None
        budget = w[7] if len(w) > 7 else None
        return cls(kind, w[1], ConversationKey(w[2], w[3]), body, trace, budget, w[5])


# What a command produced, once decoded at the edge: a result, or the error that stopped it.
Outcome = Result | ConfabError


def error_outcome(error: ConfabError) -> list[Any]:
    return [ERROR, error.reason, error.message, error.field if isinstance(error, InvalidArgument) else ""]


def decode_outcome(w: list[Any]) -> Outcome:
    tag = w[0]
    if tag == ERROR:
        return error_from_reason(w[1], w[2], w[3])
    if tag in (DONE, REPLAYED):
        return codec.unpack_reply(w[1], replayed=tag == REPLAYED)
    raise ValueError(f"outcome tag {tag!r} has no result to decode")


def is_deferred(w: list[Any]) -> bool:
    tag: int = w[0]
    return tag == DEFERRED


def moved_outcome(vshard: int) -> list[Any]:
    return [MOVED, vshard]


def is_moved(w: list[Any]) -> bool:
    tag: int = w[0]
    return tag == MOVED


@dataclass(slots=True)
class CommandBatch:
    batch_id: int
    commands: list[Command]
    # An operator is watching (Admin.TailEvents): report activations and passivations.
    want_lifecycle: bool = False
    # When the shard read it (time.perf_counter(), not on the wire): commands' budgets count from it.
    received_at: float = 0.0

    def to_frame(self) -> list[Any]:
        return [BATCH, self.batch_id, [c.to_wire() for c in self.commands], self.want_lifecycle]

    @classmethod
    def from_frame(cls, w: list[Any]) -> CommandBatch:
        return cls(w[1], [Command.from_wire(c) for c in w[2]], bool(w[3]))


@dataclass(slots=True)
class OutcomeBatch:
    """The outcomes of one :class:`CommandBatch`, in its order."""

    batch_id: int
    outcomes: list[list[Any]]
    # (event type, tenant id, conversation id): activations and passivations, when asked for.
    lifecycle: list[list[str]] = field(default_factory=list)

    def to_frame(self) -> list[Any]:
        return [OUTCOMES, self.batch_id, self.outcomes, self.lifecycle]

    @classmethod
    def from_frame(cls, w: list[Any]) -> OutcomeBatch:
        return cls(w[1], w[2], w[3])


@dataclass(slots=True)
class LateOutcomes:
    """Outcomes of deferred commands: (batch id, position in that batch, outcome)."""

    entries: list[tuple[int, int, list[Any]]]

    def to_frame(self) -> list[Any]:
        return [LATE, [list(e) for e in self.entries]]

    @classmethod
    def from_frame(cls, w: list[Any]) -> LateOutcomes:
        return cls([(e[0], e[1], e[2]) for e in w[1]])


@dataclass(slots=True)
class Query:
    """A question for a shard, answered between its batches (see ``protocol.queries``)."""

    query_id: int
    name: str
    args: list[Any]

    def to_frame(self) -> list[Any]:
        return [QUERY, self.query_id, self.name, self.args]

    @classmethod
    def from_frame(cls, w: list[Any]) -> Query:
        return cls(w[1], w[2], w[3])


@dataclass(slots=True)
class Answer:
    query_id: int
    ok: bool
    result: Any  # the query's result when ok, else [reason, message]

    def to_frame(self) -> list[Any]:
        return [ANSWER, self.query_id, self.ok, self.result]

    @classmethod
    def from_frame(cls, w: list[Any]) -> Answer:
        return cls(w[1], w[2], w[3])

    @classmethod
    def failed(cls, query_id: int, error: ConfabError) -> Answer:
        return cls(query_id, False, [error.reason, error.message])

    def error(self) -> ConfabError:
        return error_from_reason(self.result[0], self.result[1])
