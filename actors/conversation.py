"""A conversation as a shard hosts it: its state and its one-at-a-time turns.

A :class:`Conversation` is a plain object, not an actor: a shard process hosts them
by the hundreds of thousands (a Thespian actor is an OS process, far too heavy per
conversation). Each turn is ``runtime.flows.execution.turn``'s, the one the authoring tools run.
The shard hands each conversation its commands in arrival order and never runs two
of them at once, which is what makes a conversation sequential.

State is kept packed: compact while resident, already in the form the store
writes, and every turn unpacks a private working copy, so a failing turn cannot
leave half-applied state. A turn's new state is packed once; those bytes are the
stored state and are embedded in the turn's reply (``protocol.codec``). Changes are
*staged* until the shard's store write commits, then made current (``commit``) or
dropped (``rollback``).

Exactly once: the conversation knows the message id of every turn the store still keeps
(the last ``turns_kept``, and every turn of the idempotency window), so a command
re-sent by the edge, or repeated by a client with the same request id, gets the
reply it got the first time instead of being applied again.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from confab.runtime import telemetry
from confab.runtime.analytics import TurnCounts
from confab.runtime.errors import (
    ConfabError,
    ConversationNotFound,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
)
from confab.runtime.flows import FlowRegistry, UnknownState, WebhookCall, in_handoff
from confab.runtime.flows.execution import analytics, turn
from confab.runtime.flows.execution.turn import Pending
from confab.runtime.model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    JsonDict,
    TurnResult,
)
from confab.runtime.protocol import codec
from confab.runtime.protocol.records import (
    CLIENT_KEY_PREFIX,
    DONE,
    REPLAYED,
    Command,
    CommandKind,
    error_outcome,
)
from confab.runtime.store import ConversationWrite, Retention, Store, StoredConversation, TurnRecord


@dataclass(slots=True)
class Suspended:
    """A command whose turn waits for a webhook: ``pending.call`` to make, then resume it."""

    command: Command
    pending: Pending
    waited_ms: float

    @property
    def call(self) -> WebhookCall:
        return self.pending.call


class Conversation:
    __slots__ = (
        "_counts",
        "_pending",
        "_staged_seq",
        "_staged_state",
        "key",
        "mailbox",
        "message_ids",
        "seq",
        "state",
        "waiting",
    )

    def __init__(
        self, key: ConversationKey, state: bytes | None, seq: int, message_ids: dict[str, float]
    ) -> None:
        self.key = key
        # state is None for a conversation that does not exist yet (never written).
        self.state = state
        self.seq = seq
        # Every kept turn's message id, with when it was written, in turn order.
        self.message_ids = message_ids
        self._staged_state: bytes | None = None
        self._staged_seq = seq
        self._pending: list[TurnRecord] = []
        self._counts: list[TurnCounts] = []  # what the pending turns add to the analytics
        # While a turn waits for a webhook (``waiting``, managed by the shard), later
        # commands wait in ``mailbox`` (``shard.Queued``), in arrival order.
        self.waiting: Any = None
        self.mailbox: deque[Any] = deque()

    @classmethod
    def activate(cls, key: ConversationKey, stored: StoredConversation | None) -> Conversation:
        if stored is None:
            return cls(key, None, 0, {})
        return cls(key, stored.state, stored.seq, dict(stored.message_ids))

    @property
    def exists(self) -> bool:
        return self._current_state() is not None

    @property
    def staged(self) -> bool:
        return bool(self._pending)

    def _current_state(self) -> bytes | None:
        return self._staged_state if self._pending else self.state

    def apply(
        self,
        command: Command,
        flows: FlowRegistry,
        store: Store,
        *,
        now: float | None = None,
        waited_ms: float = 0.0,
        record: bool = False,
        resume: Suspended | None = None,
        webhook_result: JsonDict | None = None,
        count: bool = False,
    ) -> list[Any] | Suspended:
        """Run one command against this conversation at ``now`` (default: the time); return
        its outcome (``protocol.records``).

        Mutations stay staged. A turn that needs a webhook answer comes back
        :class:`Suspended`; ``resume`` it later with the call's ``webhook_result``. With
        ``record``, a turn keeps the message it answered for replays (the store's history);
        with ``count``, what it adds to the analytics is written with it (``_count``).
        """
        try:
            if command.mutates and self._seen(command.message_id):
                return self._replay(command, store)
            if command.kind is CommandKind.GET_STATE:
                return [DONE, codec.pack_state_reply(self._existing_packed())]
            if command.kind is CommandKind.RESET:
                reset_at = time.time() if now is None else now
                return self._count(
                    self._reset(command, flows, reset_at), count and analytics.count_reset(reset_at)
                )
            if command.kind is CommandKind.FORCE_STATE:
                return self._count(self._force_state(command, flows), count and self._forced(flows))
            if command.kind is CommandKind.AGENT_MESSAGE:
                return self._agent_message(command, time.time() if now is None else now, record)
            assert isinstance(command.body, InboundMessage)
            started = time.perf_counter()
            if resume is None:
                span = functools.partial(telemetry.flow_span, command.trace)
                outcome = turn.begin(
                    flows,
                    self.key,
                    self._working_state,
                    command.body,
                    time.time() if now is None else now,
                    span=span,
                )
            else:
                assert webhook_result is not None
                outcome = turn.resume(resume.pending, webhook_result)
                waited_ms = resume.waited_ms
            if isinstance(outcome, turn.Pending):
                return Suspended(command, outcome, waited_ms)
            counted = count and analytics.count_turn(flows.for_state(outcome.state), self.key, outcome)
            return self._count(self._finish(command, outcome, waited_ms, started, record), counted)
        except ConfabError as exc:
            return error_outcome(exc)
        except Exception as exc:  # a flow bug: the turn fails alone, the state is untouched
            return error_outcome(InternalError(f"turn failed: {type(exc).__name__}"))

    def _working_state(self) -> ConversationState | None:
        """A private copy of the state for one attempt at a turn (None: not begun)."""
        packed = self._current_state()
        return None if packed is None else codec.unpack_state(packed)

    def _finish(
        self, command: Command, done: turn.Done, waited_ms: float, started: float, record: bool
    ) -> list[Any]:
        telemetry.note_state(done.state)
        result = done.result(waited_ms, (time.perf_counter() - started) * 1000.0)
        packed_state = codec.pack_state(done.state)
        # What the store keeps of the user's words: with what the flow declares sensitive masked.
        masked = done.reply.recorded_input
        said = masked if masked is not None else command.said
        recorded = (
            codec.pack_recorded(done.recorded_message, done.now, done.webhook_results) if record else b""
        )
        return self._stage(command, packed_state, codec.pack_turn_reply(result, packed_state), said, recorded)

    def _force_state(self, command: Command, flows: FlowRegistry) -> list[Any]:
        state = codec.unpack_state(self._existing_packed())
        try:
            turn.force(flows, state, str(command.body))
        except UnknownState as exc:
            raise InvalidArgument(str(exc), field="state") from exc
        packed_state = codec.pack_state(state)
        return self._stage(command, packed_state, codec.pack_state_reply(packed_state))

    def _agent_message(self, command: Command, now: float, record: bool) -> list[Any]:
        """A person's message into a handed-off conversation: kept as a turn (its reply is what
        the person said, to the user), no flow runs; FailedPrecondition unless it is handed over."""
        assert isinstance(command.body, InboundMessage)
        state = codec.unpack_state(self._existing_packed())
        if not in_handoff(state):
            raise FailedPrecondition(
                f"conversation {self.key} is not handed over to a person: its flow answers it"
            )
        before = state.current_state
        state.last_activity = now
        result = TurnResult(
            response=Content(text=command.body.content.text),
            state=state,
            actions_performed=["agent_message"],
            state_before=before,
        )
        packed_state = codec.pack_state(state)
        recorded = codec.pack_recorded(command.body, now, {}) if record else b""
        # Kept with no input of the user's: the text is the turn's response.
        return self._stage(command, packed_state, codec.pack_turn_reply(result, packed_state), "", recorded)

    def _reset(self, command: Command, flows: FlowRegistry, now: float) -> list[Any]:
        previous = codec.unpack_state(self._existing_packed())
        packed_state = codec.pack_state(turn.reset(flows, self.key, previous, now))
        return self._stage(
            command, packed_state, codec.pack_reset_reply(previous.current_state, packed_state)
        )

    def _existing_packed(self) -> bytes:
        packed = self._current_state()
        if packed is None:
            raise ConversationNotFound(f"conversation {self.key} not found")
        return packed

    def _stage(
        self, command: Command, state: bytes, reply: bytes, said: str | None = None, recorded: bytes = b""
    ) -> list[Any]:
        self._staged_state = state
        self._staged_seq += 1
        fingerprint = _fingerprint(command) if command.message_id.startswith(CLIENT_KEY_PREFIX) else b""
        self._pending.append(
            TurnRecord(
                self._staged_seq,
                command.message_id,
                int(command.kind),
                reply,
                command.said if said is None else said,
                fingerprint,
                recorded,
            )
        )
        return [DONE, reply]

    def _count(self, outcome: list[Any], counts: TurnCounts | bool | None) -> list[Any]:
        """Stage ``counts`` with the turn just staged: written with it, or dropped with it."""
        if isinstance(counts, TurnCounts):
            self._counts.append(counts)
        return outcome

    def _forced(self, flows: FlowRegistry) -> TurnCounts | None:
        state = codec.unpack_state(self._existing_packed())
        return analytics.count_forced(flows.for_state(state), state)

    def _seen(self, message_id: str) -> bool:
        return message_id in self.message_ids or any(r.message_id == message_id for r in self._pending)

    def _replay(self, command: Command, store: Store) -> list[Any]:
        for record in self._pending:
            if record.message_id == command.message_id:
                return [REPLAYED, self._same_request(command, record.fingerprint, record.input, record.reply)]
        kept = store.load_turn(self.key, command.message_id)
        if kept is None:  # pruned between activation and now; cannot be told apart from new
            raise InternalError("message was already applied; its reply is no longer kept")
        return [REPLAYED, self._same_request(command, kept.fingerprint, kept.input, kept.reply)]

    def _same_request(self, command: Command, fingerprint: bytes, recorded_input: str, reply: bytes) -> bytes:
        # A client that reuses its request id for another message has a bug it must hear about:
        # answering with the first message's reply would hide it.
        if not command.message_id.startswith(CLIENT_KEY_PREFIX):
            return reply
        same = fingerprint == _fingerprint(command) if fingerprint else recorded_input == command.said
        if not same:
            raise InvalidArgument(
                "this request_id was already used for a different message in this conversation",
                field="metadata.request_id",
            )
        return reply

    # Staging ---------------------------------------------------------------

    def pending_write(self, retention: Retention, now: float) -> ConversationWrite:
        """What the store must write, and which old turns it may let go.

        Old turns are looked at once every ``turns_kept`` turns, not on every write: the
        ones beyond the last ``turns_kept`` and older than the store keeps any turn go.
        """
        assert self._staged_state is not None
        # Conditional on the seq this conversation last loaded or committed: if the store holds another
        # (a commit whose outcome was unknown went through after all), the write is refused.
        write = ConversationWrite(
            self.key, self._staged_state, self._staged_seq, list(self._pending), base_seq=self.seq
        )
        write.analytics = list(self._counts)
        write.let_old_turns_go(retention, now)
        return write

    def _prunable(self, retention: Retention, now: float) -> int:
        """How many of the oldest ids in memory fall outside what a conversation must recognise
        (its last ``turns_kept``, and the idempotency window) once the pending ones are in."""
        beyond_count = len(self.message_ids) + len(self._pending) - retention.turns_kept
        if beyond_count <= 0:
            return 0
        cutoff = now - retention.idempotency_window_s
        prunable = 0
        for written_at in self.message_ids.values():
            if prunable >= beyond_count or written_at >= cutoff:
                break
            prunable += 1
        return prunable

    def commit(self, retention: Retention, now: float) -> None:
        for _ in range(self._prunable(retention, now)):
            del self.message_ids[next(iter(self.message_ids))]
        for record in self._pending:
            self.message_ids[record.message_id] = now
        self.state = self._staged_state
        self.seq = self._staged_seq
        self._pending.clear()
        self._counts.clear()
        self._staged_state = None

    def rollback(self) -> None:
        self._staged_seq = self.seq
        self._pending.clear()
        self._counts.clear()
        self._staged_state = None


def _fingerprint(command: Command) -> bytes:
    return hashlib.blake2b(command.said.encode("utf-8", "surrogatepass"), digest_size=16).digest()
