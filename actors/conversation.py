"""The conversation actor: one conversation's state and its one-at-a-time turns.

Conversation actors are plain objects hosted by the hundreds of thousands inside
a shard process (a Thespian actor is an OS process, far too heavy per
conversation). The shard hands each actor its commands in arrival order and
never runs two of them at once, which is what makes a conversation sequential.

State is kept packed (msgpack bytes): it is compact while resident, already in
the form the store writes, and every turn unpacks a private working copy, so a
failing turn cannot leave half-applied state. Changes are *staged* until the
shard's store write commits, then made current (``commit``) or dropped
(``rollback``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..runtime import telemetry
from ..runtime.errors import ConfabError, ConversationNotFound, InternalError, InvalidArgument
from ..runtime.flows import FlowRegistry, NeedsWebhook, UnknownFlow, UnknownState, WebhookCall
from ..runtime.model import (
    ConversationKey,
    ConversationState,
    InboundMessage,
    JsonDict,
    ResetResult,
    StateResult,
    TurnResult,
)
from ..runtime.store import ConversationWrite, Store, StoredConversation, TurnRecord
from ..runtime.wire import Command, CommandKind, Outcome, outcome_from_wire, outcome_to_wire


@dataclass(slots=True)
class Suspended:
    """A turn waiting for a webhook: it runs again, from the same state, with ``results``
    plus the answer to ``call`` (turns are deterministic given their inputs)."""

    command: Command
    call: WebhookCall
    now: float
    results: dict[str, JsonDict] = field(default_factory=dict)


class ConversationActor:
    __slots__ = (
        "_pending",
        "_staged_seq",
        "_staged_state",
        "key",
        "mailbox",
        "recent_ids",
        "seq",
        "state",
        "waiting",
    )

    def __init__(
        self, key: ConversationKey, state: bytes | None, seq: int, recent_ids: list[str], keep: int
    ) -> None:
        self.key = key
        # state is None for a conversation that does not exist yet (never written).
        self.state = state
        self.seq = seq
        self.recent_ids: deque[str] = deque(recent_ids, maxlen=keep)
        self._staged_state: bytes | None = None
        self._staged_seq = seq
        self._pending: list[TurnRecord] = []
        # While a turn waits for a webhook (``waiting``, managed by the shard), later
        # commands wait in ``mailbox``, in arrival order.
        self.waiting: Any = None
        self.mailbox: deque[Any] = deque()

    @classmethod
    def activate(
        cls, key: ConversationKey, stored: StoredConversation | None, keep: int
    ) -> ConversationActor:
        if stored is None:
            return cls(key, None, 0, [], keep)
        return cls(key, stored.state, stored.seq, stored.recent_message_ids, keep)

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
        resume: Suspended | None = None,
        webhook_result: JsonDict | None = None,
    ) -> Outcome | Suspended:
        """Run one command against this conversation; mutations stay staged.

        A turn that needs a webhook answer comes back :class:`Suspended`; ``resume``
        it later with the call's ``webhook_result``.
        """
        if command.mutates and self._seen(command.message_id):
            return self._replay(command.message_id, store)
        try:
            if command.kind is CommandKind.GET_STATE:
                return StateResult(self._load_existing())
            if command.kind is CommandKind.RESET:
                return self._reset(command, flows)
            if command.kind is CommandKind.FORCE_STATE:
                return self._force_state(command, flows)
            assert isinstance(command.body, InboundMessage)
            if resume is None:
                return self._turn(command, command.body, flows, time.time(), {})
            assert webhook_result is not None
            results = {**resume.results, resume.call.key: webhook_result}
            return self._turn(command, command.body, flows, resume.now, results)
        except ConfabError as exc:
            return exc
        except Exception as exc:  # a flow bug: the turn fails alone, the state is untouched
            return InternalError(f"turn failed: {type(exc).__name__}")

    def _turn(
        self,
        command: Command,
        message: InboundMessage,
        flows: FlowRegistry,
        now: float,
        webhook_results: dict[str, JsonDict],
    ) -> Outcome | Suspended:
        started = time.perf_counter()
        packed = self._current_state()
        if packed is None:
            state, state_before = flows.for_new_conversation(self.key.tenant_id).start(now, self.key), ""
        else:
            state = ConversationState.from_wire(msgpack.unpackb(packed))
            state_before = state.current_state
        forced = message.hints.force_flow
        if forced and forced != state.flow_id:
            state = self._switch_flow(state, flows, forced, now)
        flow = flows.for_state(state)
        try:
            with telemetry.flow_span(command.trace, state.flow_id, state.current_state):
                reply = flow.handle(state, message, now, webhook_results)
        except NeedsWebhook as need:
            return Suspended(command, need.call, now, webhook_results)
        state.message_count += 1
        state.last_activity = now
        result = TurnResult(
            response=reply.response,
            state=state,
            context_updates=reply.context_updates,
            actions_performed=reply.actions_performed,
            ab_variant=reply.ab_variant,
            execution_time_ms=(time.perf_counter() - started) * 1000.0,
            state_before=state_before,
        )
        self._stage(command, state, result)
        return result

    def _switch_flow(
        self, state: ConversationState, flows: FlowRegistry, flow_id: str, now: float
    ) -> ConversationState:
        """A new session on another flow, as the processing hint ``force_flow`` asks."""
        try:
            flow = flows.by_id(flow_id, self.key.tenant_id)
        except UnknownFlow as exc:
            raise InvalidArgument(str(exc), field="processing_hints.force_flow") from exc
        fresh = flow.start(now, self.key)
        fresh.created_at, fresh.message_count = state.created_at, state.message_count
        fresh.user_profile = state.user_profile
        return fresh

    def _force_state(self, command: Command, flows: FlowRegistry) -> Outcome:
        state = self._load_existing()
        try:
            flows.for_state(state).force(state, str(command.body))
        except UnknownState as exc:
            raise InvalidArgument(str(exc), field="state") from exc
        result = StateResult(state)
        self._stage(command, state, result)
        return result

    def _reset(self, command: Command, flows: FlowRegistry) -> Outcome:
        previous = self._load_existing()
        state = flows.for_state(previous).start(time.time(), self.key)
        result = ResetResult(previous_state=previous.current_state, state=state)
        self._stage(command, state, result)
        return result

    def _load_existing(self) -> ConversationState:
        packed = self._current_state()
        if packed is None:
            raise ConversationNotFound(f"conversation {self.key} not found")
        return ConversationState.from_wire(msgpack.unpackb(packed))

    def _stage(
        self, command: Command, state: ConversationState, result: TurnResult | ResetResult | StateResult
    ) -> None:
        self._staged_state = msgpack.packb(state.to_wire())
        self._staged_seq += 1
        reply = msgpack.packb(outcome_to_wire(result))
        body = command.body
        said = (
            (body.content.text or body.content.payload)
            if isinstance(body, InboundMessage)
            else str(body or "")
        )
        self._pending.append(TurnRecord(self._staged_seq, command.message_id, int(command.kind), reply, said))

    def _seen(self, message_id: str) -> bool:
        return message_id in self.recent_ids or any(r.message_id == message_id for r in self._pending)

    def _replay(self, message_id: str, store: Store) -> Outcome:
        for record in self._pending:
            if record.message_id == message_id:
                return _replayed(record.reply)
        reply = store.load_reply(self.key, message_id)
        if reply is None:  # pruned: the id is remembered but its reply is gone
            return InternalError("message was already applied; its reply is no longer kept")
        return _replayed(reply)

    # Staging ---------------------------------------------------------------

    def pending_write(self) -> ConversationWrite:
        assert self._staged_state is not None
        return ConversationWrite(self.key, self._staged_state, self._staged_seq, list(self._pending))

    def commit(self) -> None:
        self.state = self._staged_state
        self.seq = self._staged_seq
        self.recent_ids.extend(r.message_id for r in self._pending)
        self._pending.clear()
        self._staged_state = None

    def rollback(self) -> None:
        self._staged_seq = self.seq
        self._pending.clear()
        self._staged_state = None


def _replayed(reply: bytes) -> Outcome:
    outcome = outcome_from_wire(msgpack.unpackb(reply))
    if isinstance(outcome, TurnResult | ResetResult):
        outcome.replayed = True
    return outcome
