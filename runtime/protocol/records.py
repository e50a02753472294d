"""The messages of the shard protocol, as the frames of one connection carry them.

An edge keeps one connection per shard; each frame is a list whose first item says
what it is:

    [BATCH,    batch_id, [command, ...], want_lifecycle]   edge → shard
    [OUTCOMES, batch_id, [outcome, ...], lifecycle]        shard → edge, same order
    [LATE,     [[batch_id, position, outcome], ...]]       shard → edge, when a deferred command is done
    [HELLO,    version, cluster, role]                     both ways, the first frame of each side
    [QUERY,    query_id, name, args, scope]                edge → shard (status, inspect, ...)
    [ANSWER,   query_id, ok, result]                       shard → edge
    [EVENT,    [[tenant, conversation, type, data], ...]]  shard → every edge connected to it
    [DELTA,    [[batch_id, position, stream, seq, text], ...]]  shard → edge, a reply's text as it is written
    [CANCEL,   [[batch_id, position], ...]]                edge → shard: its caller gave up on the command

Each side's first frame is a HELLO: a peer of another protocol version or another
cluster, or one whose first frame is anything else, is refused before it is read
further. A query's ``scope`` is the tenant the caller may see (None: an operator, every
tenant); the shard answers only within it, as the Admin API does.

A shard runs frames in the order they arrive on a connection, so one connection per
shard keeps each conversation's commands in order. An outcome is one of::

    [ERROR, reason, message, field]   the command failed (runtime.errors reasons)
    [DONE, reply]                     a reply (codec), applied now
    [REPLAYED, reply]                 the reply it got the first time: it was applied before
    [DONE|REPLAYED, reply, response]  the same for a WIRE_TURN, with the serialized response
                                      the shard made of the reply (``wire_pb.turn_response``)
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

A command that ``wants_deltas`` (a message on a StreamConversation) has the text its turn
generates sent back as it is written: DELTA entries name the command by its batch and
position, as LATE ones do, and carry the generation's stream id, the piece's sequence
number (from 0 in each stream) and its text; they all come before the command's outcome.
A CANCEL names a command the same way: the edge's caller went away, and the generation
its turn waits on stops (the turn takes its failure route; its outcome still comes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from confab.runtime.errors import ConfabError, InvalidArgument, error_from_reason
from confab.runtime.model import (
    Button,
    CarouselCard,
    Content,
    ConversationKey,
    InboundMessage,
    ProcessingHints,
    QuickReply,
)
from confab.runtime.protocol import codec
from confab.runtime.protocol.codec import Result

BATCH, OUTCOMES, LATE, QUERY, ANSWER, HELLO, EVENT, DELTA, CANCEL = 1, 2, 3, 4, 5, 6, 7, 8, 9
ERROR, DONE, REPLAYED, DEFERRED, MOVED = 0, 1, 2, 3, 4

DEFERRED_OUTCOME: list[Any] = [DEFERRED]

# The data plane's version: a peer saying another is refused at its HELLO. 1: the first
# with a HELLO (and queries carrying their tenant scope). 2: WIRE_TURN commands. 3: AGENT_MESSAGE
# commands, EVENT frames, the abandon and waiting queries. 4: a message carries the turn its user
# had seen (InboundMessage.seen_turn); commands that want deltas, DELTA and CANCEL frames.
PROTOCOL_VERSION = 4
# Who sends a HELLO: a shard serves; an edge sends commands; a probe only checks the peer answers.
SHARD_ROLE, EDGE_ROLE, PROBE_ROLE = "shard", "edge", "probe"
ROLES = (SHARD_ROLE, EDGE_ROLE, PROBE_ROLE)


class ShapeError(ValueError):
    """A frame that decoded but is not the record it claims to be (a peer's bug, or an attack)."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ShapeError(what)


_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bytes": (bytes,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
}


def check_shape(value: Any, hint: str, where: str) -> None:
    """Raise ShapeError unless ``value`` fits the annotation ``hint`` (the string form of
    a model field's type: ``str``, ``list[Button]``, ``JsonDict | None``...).

    Records from the wire are checked before a shard runs them: a wrong type deep inside
    a message must fail that one frame at the door, not a whole round later on."""
    hint = hint.replace(" ", "")
    if hint.endswith("|None"):
        if value is None:
            return
        hint = hint[: -len("|None")]
    if hint in _SCALARS:
        ok = isinstance(value, _SCALARS[hint]) and (hint == "bool" or not isinstance(value, bool))
        _expect(ok, f"{where} must be {hint}, got {type(value).__name__}")
    elif hint in ("JsonDict", "dict[str,Any]"):
        _expect(isinstance(value, dict), f"{where} must be a map, got {type(value).__name__}")
        _expect(all(isinstance(k, str) for k in value), f"{where} must have string keys")
    elif hint == "Any":
        return
    elif hint.startswith("list["):
        _expect(isinstance(value, list), f"{where} must be a list, got {type(value).__name__}")
        item = hint[len("list[") : -1]
        for i, element in enumerate(value):
            check_shape(element, item, f"{where}[{i}]")
    elif hint in _MODEL_RECORDS:
        check_record(value, _MODEL_RECORDS[hint], where)
    else:  # pragma: no cover - a model field of a type this checker does not know yet
        raise ShapeError(f"{where}: cannot check a field of type {hint}")


def check_record(w: Any, cls: type, where: str) -> None:
    """Raise ShapeError unless ``w`` is the wire list of model record ``cls`` (its
    ``to_wire()`` order: its dataclass fields, nested records as their own lists)."""
    fields = dataclasses.fields(cls)
    _expect(isinstance(w, list) and len(w) == len(fields), f"{where} must be a list of {len(fields)}")
    for f, value in zip(fields, w, strict=True):
        check_shape(value, str(f.type), f"{where}.{f.name}")


# A client's idempotency key (ProcessMessageRequest.metadata.request_id) becomes the message id
# with this prefix, so it can never be mistaken for an id the edge made up.
CLIENT_KEY_PREFIX = "c:"


def client_message_id(idempotency_key: str) -> str:
    return CLIENT_KEY_PREFIX + idempotency_key


# The user id of the system message an operator's resume sends (``operator:<who>``), and what
# the message id of a reset sent through the Admin API starts with.
OPERATOR_PREFIX = "operator:"
# The user id of a person's message (``agent:<name>``, CommandKind.AGENT_MESSAGE).
AGENT_PREFIX = "agent:"


class CommandKind(IntEnum):
    TURN = 1
    GET_STATE = 2
    RESET = 3
    FORCE_STATE = 4  # an operator moves a conversation to a state (body: the state's name)
    # A TURN whose message is a serialized ProcessMessageRequest (body: a WireMessage) and whose
    # answer carries the serialized ProcessMessageResponse too: the shard converts both.
    WIRE_TURN = 5
    # A person's message into a handed-off conversation (body: an InboundMessage whose user id is
    # ``agent:<name>`` and whose text is what the person says): recorded as a turn, no flow runs.
    AGENT_MESSAGE = 6


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A ProcessMessageRequest as its client serialized it: the body of a WIRE_TURN.

    ``prefix`` locates it in its call ("messages[3]." in a batch, "message." in a stream), so
    that an error the shard finds in it names the field as the edge would. ``said`` (the text or
    payload, for what the edge shows operators) stays at the edge: the shard reads it in ``data``.
    """

    data: bytes
    prefix: str = ""
    said: str = ""

    def to_wire(self) -> list[Any]:
        return [self.data, self.prefix]


@dataclass(frozen=True, slots=True)
class WireReply:
    """What a WIRE_TURN answered, at the edge: the serialized ProcessMessageResponse (but its
    metadata, the call's), and the packed reply it was made of, decoded only when asked."""

    response: bytes
    reply: bytes
    replayed: bool = False

    def result(self) -> Result:
        return codec.unpack_reply(self.reply, replayed=self.replayed)

    def state_before(self) -> str:
        """The state the conversation was in before the turn (its current one is in the response)."""
        return codec.reply_state_before(self.reply)


@dataclass(frozen=True, slots=True)
class Command:
    """One request addressed to one conversation, made once and never changed.

    ``body`` is the kind's argument: an :class:`InboundMessage` for TURN and AGENT_MESSAGE, the
    reason (str) for RESET, the state's name for FORCE_STATE, nothing for GET_STATE.

    The engine makes it with its trace. What routing adds on the way to a shard (the epoch
    its router sent it by, the time its deadline left) travels beside it, in a :class:`Routed`
    the edge's link makes as it sends the command; the shard reads the same bytes back as one
    Command, with ``budget_s`` and ``epoch`` as they were sent.
    """

    kind: CommandKind
    message_id: str
    key: ConversationKey
    body: InboundMessage | WireMessage | str | None = None
    # W3C traceparent of the edge span that sent it; None unless tracing is on (runtime.telemetry).
    trace: str | None = None
    # Seconds the caller's deadline left when the edge sent it; a shard that gets to it later
    # answers DEADLINE_EXCEEDED instead of running it. None: no deadline.
    budget_s: float | None = None
    # The epoch of the command's virtual shard the edge routed it by (see runtime.protocol.directory).
    epoch: int = 0
    # The caller hears a turn's generated text as it is written (a stream asked for deltas): the
    # shard hands each chunk to Shard.on_delta, and its data server sends them in DELTA frames.
    wants_deltas: bool = False

    @property
    def mutates(self) -> bool:
        return self.kind is not CommandKind.GET_STATE

    @property
    def said(self) -> str:
        """What the command carries for an operator to read: the user's text, a reason, a state."""
        body = self.body
        if isinstance(body, InboundMessage):
            return body.content.text or body.content.payload
        if isinstance(body, WireMessage):
            return body.said
        return str(body or "")

    def to_wire(self) -> list[Any]:
        return self.wire(self.epoch, self.budget_s)

    def wire(self, epoch: int, budget_s: float | None) -> list[Any]:
        """The command as it goes to a shard routed by ``epoch``, with ``budget_s`` left."""
        body: Any = self.body.to_wire() if isinstance(self.body, InboundMessage | WireMessage) else self.body
        wire = [
            int(self.kind),
            self.message_id,
            self.key.tenant_id,
            self.key.conversation_id,
            body,
            epoch,
        ]
        # Appended, and only when set: a plain command stays six items long.
        if self.trace is not None or budget_s is not None or self.wants_deltas:
            wire.append(self.trace)
        if budget_s is not None or self.wants_deltas:
            wire.append(budget_s)
        if self.wants_deltas:
            wire.append(True)
        return wire

    @classmethod
    def from_wire(cls, w: list[Any]) -> Command:
        """The command ``w`` carries; ShapeError when it is not one (every field's type is checked)."""
        _expect(isinstance(w, list) and 6 <= len(w) <= 9, "a command must be a list of 6 to 9 items")
        _expect(isinstance(w[0], int) and w[0] in CommandKind._value2member_map_, f"unknown command {w[0]!r}")
        kind = CommandKind(w[0])
        for i, name in ((1, "message id"), (2, "tenant id"), (3, "conversation id")):
            check_shape(w[i], "str", f"the command's {name}")
        check_shape(w[5], "int", "the command's epoch")
        if kind in (CommandKind.TURN, CommandKind.AGENT_MESSAGE):
            check_record(w[4], InboundMessage, "the message")
            body: InboundMessage | WireMessage | str | None = InboundMessage.from_wire(w[4])
        elif kind is CommandKind.WIRE_TURN:
            _expect(isinstance(w[4], list) and len(w[4]) == 2, "a wire message must be [data, prefix]")
            check_shape(w[4][0], "bytes", "the wire message's data")
            check_shape(w[4][1], "str", "the wire message's prefix")
            body = WireMessage(w[4][0], w[4][1])
        elif kind is CommandKind.GET_STATE:
            check_shape(w[4], "str|None", "the command's body")
            body = w[4]
        else:
            check_shape(w[4], "str", "the command's body")
            body = w[4]
        trace = w[6] if len(w) > 6 else None
        budget = w[7] if len(w) > 7 else None
        wants_deltas = w[8] if len(w) > 8 else False
        check_shape(trace, "str|None", "the command's trace")
        check_shape(budget, "float|None", "the command's budget")
        check_shape(wants_deltas, "bool", "the command's wants_deltas")
        return cls(
            kind, w[1], ConversationKey(w[2], w[3]), body, trace, budget, w[5], wants_deltas=wants_deltas
        )


@dataclass(frozen=True, slots=True)
class Routed:
    """A command on its way to a shard, and what routing adds beside it (made as it is sent).

    ``epoch`` is the epoch of the command's virtual shard at the holder the router sent it to
    (the shard answers MOVED unless it holds it at that epoch); ``budget_s`` the seconds the
    caller's deadline left when the link sent it (None: no deadline). Its wire form is the
    command's with these two in place: the shard decodes it as one :class:`Command`.
    """

    command: Command
    epoch: int
    budget_s: float | None = None

    def to_wire(self) -> list[Any]:
        return self.command.wire(self.epoch, self.budget_s)


# What a command produced, once decoded at the edge: a result, or the error that stopped it.
Outcome = Result | WireReply | ConfabError


def error_outcome(error: ConfabError) -> list[Any]:
    return [ERROR, error.reason, error.message, error.field if isinstance(error, InvalidArgument) else ""]


def decode_outcome(w: list[Any]) -> Outcome:
    tag = w[0]
    if tag == ERROR:
        return error_from_reason(w[1], w[2], w[3])
    if tag in (DONE, REPLAYED):
        if len(w) > 2:  # a WIRE_TURN's: the response made already, the reply left packed
            return WireReply(w[2], w[1], tag == REPLAYED)
        return codec.unpack_reply(w[1], replayed=tag == REPLAYED)
    raise ValueError(f"outcome tag {tag!r} has no result to decode")


def with_response(w: list[Any], response: bytes) -> list[Any]:
    """A DONE or REPLAYED outcome with the serialized response of its reply appended."""
    return [w[0], w[1], response]


def is_answer(w: list[Any]) -> bool:
    """Whether ``w`` is a reply (DONE or REPLAYED), not an error or a hand-back."""
    tag: int = w[0]
    return tag in (DONE, REPLAYED)


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
    """A batch of commands, as a shard reads it (the edge sends a :class:`RoutedBatch`)."""

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
        _expect(len(w) == 4 and w[0] == BATCH, "a batch must be [BATCH, id, commands, want_lifecycle]")
        check_shape(w[1], "int", "the batch id")
        check_shape(w[3], "bool", "the batch's want_lifecycle")
        _expect(isinstance(w[2], list), "a batch's commands must be a list")
        return cls(w[1], [Command.from_wire(c) for c in w[2]], w[3])


@dataclass(frozen=True, slots=True)
class RoutedBatch:
    """A batch of routed commands, as the edge's link sends it: the shard reads a :class:`CommandBatch`."""

    batch_id: int
    commands: list[Routed]
    want_lifecycle: bool = False  # see CommandBatch

    def to_frame(self) -> list[Any]:
        return [BATCH, self.batch_id, [r.to_wire() for r in self.commands], self.want_lifecycle]


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


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    """Something that happened to a conversation outside its user's turns, pushed by its shard to
    every edge as soon as it is stored: ``agent_message`` ({"agent", "text", "message_id"}) or
    ``operator_action`` ({"action", "state", "reason"}); an edge passes it to the conversation's
    open streams."""

    key: ConversationKey
    type: str
    data: dict[str, Any]

    def to_wire(self) -> list[Any]:
        return [self.key.tenant_id, self.key.conversation_id, self.type, self.data]

    @classmethod
    def from_wire(cls, w: Any) -> ConversationEvent:
        _expect(isinstance(w, list) and len(w) == 4, "an event must be [tenant, conversation, type, data]")
        for i, name in ((0, "tenant id"), (1, "conversation id"), (2, "type")):
            check_shape(w[i], "str", f"the event's {name}")
        check_shape(w[3], "JsonDict", "the event's data")
        return cls(ConversationKey(w[0], w[1]), w[2], w[3])


def events_frame(events: list[ConversationEvent]) -> list[Any]:
    return [EVENT, [e.to_wire() for e in events]]


def events_from_frame(w: list[Any]) -> list[ConversationEvent]:
    _expect(len(w) == 2 and isinstance(w[1], list), "an event frame must be [EVENT, events]")
    return [ConversationEvent.from_wire(e) for e in w[1]]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of a reply's text as the turn's generation writes it.

    ``stream_id`` names the generation (a turn may generate more than once); ``sequence``
    counts its pieces from 0, so that their order is never in doubt. Advisory: the
    command's outcome carries the whole text, which is what counts."""

    stream_id: str
    sequence: int
    text: str


# A delta as a shard sends it: (batch id, position in that batch) name its command.
DeltaEntry = tuple[int, int, TextDelta]


def delta_entry_wire(batch_id: int, position: int, delta: TextDelta) -> list[Any]:
    return [batch_id, position, delta.stream_id, delta.sequence, delta.text]


def deltas_frame(entries: list[list[Any]]) -> list[Any]:
    """A DELTA frame of entries made by :func:`delta_entry_wire`, in the order written."""
    return [DELTA, entries]


def deltas_from_frame(w: list[Any]) -> list[DeltaEntry]:
    """The entries of a DELTA frame; ShapeError when it is not one."""
    _expect(len(w) == 2 and isinstance(w[1], list), "a delta frame must be [DELTA, entries]")
    entries: list[DeltaEntry] = []
    for e in w[1]:
        # One of these per piece of text: the usual shape is checked in one go (``type(x) is int``
        # is no bool either), and only one that fails it is looked at field by field.
        if not (
            type(e) is list
            and len(e) == 5
            and type(e[0]) is int
            and type(e[1]) is int
            and type(e[2]) is str
            and type(e[3]) is int
            and type(e[4]) is str
        ):
            _delta_shape(e)
        entries.append((e[0], e[1], TextDelta(e[2], e[3], e[4])))
    return entries


def _delta_shape(e: Any) -> None:
    """Raise the ShapeError that says what is wrong with the DELTA entry ``e``."""
    _expect(isinstance(e, list) and len(e) == 5, "a delta must be [batch_id, position, stream, seq, text]")
    for value, hint, name in (
        (e[0], "int", "batch id"),
        (e[1], "int", "position"),
        (e[2], "str", "stream id"),
        (e[3], "int", "sequence"),
        (e[4], "str", "text"),
    ):
        check_shape(value, hint, f"the delta's {name}")


def cancel_frame(commands: list[tuple[int, int]]) -> list[Any]:
    """A CANCEL frame: the (batch id, position) of each command whose caller went away."""
    return [CANCEL, [[batch_id, position] for batch_id, position in commands]]


def cancels_from_frame(w: list[Any]) -> list[tuple[int, int]]:
    """The commands a CANCEL frame names; ShapeError when it is not one."""
    _expect(len(w) == 2 and isinstance(w[1], list), "a cancel frame must be [CANCEL, commands]")
    named: list[tuple[int, int]] = []
    for e in w[1]:
        _expect(isinstance(e, list) and len(e) == 2, "a cancelled command must be [batch_id, position]")
        check_shape(e[0], "int", "the cancelled command's batch id")
        check_shape(e[1], "int", "the cancelled command's position")
        named.append((e[0], e[1]))
    return named


@dataclass(slots=True)
class Query:
    """A question for a shard, answered between its batches (see ``protocol.queries``)."""

    query_id: int
    name: str
    args: list[Any]
    # The tenant the asker may see; None: every tenant (an operator, or the edge's own heartbeat).
    scope: str | None = None
    # When the shard read it (time.perf_counter(), not on the wire): an action's budget counts from it.
    received_at: float = 0.0

    def to_frame(self) -> list[Any]:
        return [QUERY, self.query_id, self.name, self.args, self.scope]

    @classmethod
    def from_frame(cls, w: list[Any]) -> Query:
        # Exactly five items: a query without its scope must not be read as an operator's.
        _expect(len(w) == 5 and w[0] == QUERY, "a query must be [QUERY, id, name, args, scope]")
        check_shape(w[1], "int", "the query id")
        check_shape(w[2], "str", "the query's name")
        check_shape(w[3], "list[Any]", "the query's arguments")
        check_shape(w[4], "str|None", "the query's scope")
        return cls(w[1], w[2], w[3], w[4])


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


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame of each side of every connection: who speaks, in which protocol and cluster."""

    version: int
    cluster: str
    role: str

    def to_frame(self) -> list[Any]:
        return [HELLO, self.version, self.cluster, self.role]

    @classmethod
    def from_frame(cls, w: Any) -> Hello:
        """The HELLO ``w`` is; ShapeError saying what came instead."""
        _expect(isinstance(w, list) and len(w) >= 1, f"the first frame is not a HELLO but {type(w).__name__}")
        _expect(w[0] == HELLO, f"the first frame is not a HELLO (kind {w[0]!r})")
        # Read the version alone first: a later version may shape the rest differently.
        _expect(len(w) >= 2 and isinstance(w[1], int), "a HELLO without a protocol version")
        if w[1] != PROTOCOL_VERSION:
            return cls(w[1], "", "")
        _expect(len(w) == 4, "a HELLO must be [HELLO, version, cluster, role]")
        check_shape(w[2], "str", "the HELLO's cluster")
        check_shape(w[3], "str", "the HELLO's role")
        return cls(w[1], w[2], w[3])

    def refusal(self, cluster: str, roles: tuple[str, ...]) -> str:
        """Why a peer that said this may not talk to a process of ``cluster`` expecting one of
        ``roles``; "" when it may."""
        if self.version != PROTOCOL_VERSION:
            return f"it speaks data-plane protocol version {self.version}, this process {PROTOCOL_VERSION}"
        if self.cluster != cluster:
            return f"it belongs to cluster {self.cluster!r}, not {cluster!r}"
        if self.role not in roles:
            return f"it is a {self.role!r}, expected {' or '.join(repr(r) for r in roles)}"
        return ""


# The model records a command carries, by the names their fields' annotations use.
_MODEL_RECORDS: dict[str, type] = {
    cls.__name__: cls for cls in (InboundMessage, Content, ProcessingHints, QuickReply, Button, CarouselCard)
}
