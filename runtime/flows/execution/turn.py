"""A conversation's turn, written once: what every host of conversations runs.

The shard's conversations (``actors.conversation``), the in-process runner of ``confab
flows test`` and ``confab flows replay`` (``runtime.flows.authoring.runner``) and the benchmark's
direct baseline all run a turn through :func:`begin`, so a flow that passes its dialogues
here does the same on a server.

A turn is deterministic given (the state before it, the message, its clock, the answers
of its webhooks and model calls). A flow that reaches a webhook, a ``generate`` step or a
model recognizer's question, whose answer the turn does not have yet, raises
``NeedsWebhook``; the turn comes back :class:`Pending` with the ``call`` to make, and
:func:`resume` runs it again from the same state with that call's answer, until it is
:class:`Done`. Who makes the call, and when, is the host's: the shard on a thread while
other conversations carry on, the in-process runner at once (a dialogue's answers, a
recording's, or a real webhook; never a model).

The state comes from ``source``, called once per attempt: it gives a working copy the
turn may change freely (or None for a conversation that does not exist yet), so a turn
that fails or waits leaves the host's state as it was. What a host keeps of a :class:`Done`
turn, and how it stores it, is its own part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from confab.runtime.errors import InvalidArgument
from confab.runtime.flows import FlowRegistry, FlowReply, NeedsWebhook, UnknownFlow, WebhookCall
from confab.runtime.model import ConversationKey, ConversationState, InboundMessage, JsonDict, TurnResult

# A working copy of the conversation's state before the turn (None: it has not begun).
StateSource = Callable[[], ConversationState | None]
# Around the flow's handler: (flow id, state before) -> a context (a tracing span).
FlowSpan = Callable[[str, str], AbstractContextManager[Any]]


@dataclass(frozen=True, slots=True)
class Done:
    """A finished turn: the conversation's new state and what the flow answered."""

    state: ConversationState
    reply: FlowReply
    state_before: str  # the state the turn began in ("": a conversation that began with it)
    message: InboundMessage
    now: float
    webhook_results: dict[str, JsonDict]  # by call key, as the turn got them

    def result(self, queue_time_ms: float = 0.0, execution_time_ms: float = 0.0) -> TurnResult:
        """The turn as the API answers it."""
        reply = self.reply
        return TurnResult(
            response=reply.response,
            state=self.state,
            context_updates=reply.context_updates,
            actions_performed=reply.actions_performed,
            ab_variant=reply.ab_variant,
            queue_time_ms=queue_time_ms,
            execution_time_ms=execution_time_ms,
            state_before=self.state_before,
        )

    @property
    def recorded_message(self) -> InboundMessage:
        """The message as a store may keep it: what the flow declares sensitive masked."""
        masked = self.reply.recorded_input
        if masked is None:
            return self.message
        return replace(self.message, content=replace(self.message.content, text=masked))


@dataclass(frozen=True, slots=True)
class Pending:
    """A turn waiting for the answer to ``call``; :func:`resume` it with that answer."""

    call: WebhookCall
    flows: FlowRegistry
    key: ConversationKey
    source: StateSource
    message: InboundMessage
    now: float
    results: dict[str, JsonDict]  # the answers of the calls made so far, by call key
    span: FlowSpan | None = None

    @property
    def body(self) -> JsonDict:
        """What to send: a webhook gets the flow's body and which conversation calls; a model,
        the request as the flow made it (a prompt says nothing of whose conversation it is)."""
        if self.call.to_model:
            return self.call.body
        return webhook_body(self.key, self.call)


def begin(
    flows: FlowRegistry,
    key: ConversationKey,
    source: StateSource,
    message: InboundMessage,
    now: float,
    *,
    span: FlowSpan | None = None,
) -> Pending | Done:
    """Run conversation ``key``'s turn on ``message`` at ``now``.

    A conversation not begun starts on the tenant's flow; the hint ``force_flow`` moves it
    to a new session on another flow (InvalidArgument if there is no such flow).
    """
    return _attempt(flows, key, source, message, now, {}, span)


def resume(pending: Pending, answer: JsonDict) -> Pending | Done:
    """Run the turn again, from the same state, with ``answer`` to its pending call."""
    results = {**pending.results, pending.call.key: answer}
    return _attempt(
        pending.flows, pending.key, pending.source, pending.message, pending.now, results, pending.span
    )


def reset(
    flows: FlowRegistry,
    key: ConversationKey,
    previous: ConversationState | None,
    now: float,
    flow_id: str = "",
) -> ConversationState:
    """A reset: the conversation's flow starts over. ``flow_id`` names that flow when the
    conversation's state is not at hand (``previous`` None; InvalidArgument if unknown)."""
    if previous is not None:
        return flows.for_state(previous).start(now, key)
    try:
        flow = flows.by_id(flow_id, key.tenant_id)
    except UnknownFlow as exc:
        raise InvalidArgument(str(exc), field="flow") from exc
    return flow.start(now, key)


def force(flows: FlowRegistry, state: ConversationState, name: str) -> None:
    """An operator moving ``state`` to the state ``name``, in place (UnknownState if none)."""
    flows.for_state(state).force(state, name)


def webhook_body(key: ConversationKey, call: WebhookCall) -> JsonDict:
    """What a webhook is sent: the flow's body and which conversation calls."""
    return {
        **call.body,
        "conversation": {"tenant_id": key.tenant_id, "conversation_id": key.conversation_id},
    }


def starting_state(pending: Pending) -> ConversationState:
    """The state ``pending``'s turn runs from: for a conversation its first message creates, the
    one it starts on (what an operator is shown of a conversation that is not stored yet)."""
    state, _ = _starting(pending.flows, pending.key, pending.source, pending.message, pending.now)
    return state


def _starting(
    flows: FlowRegistry, key: ConversationKey, source: StateSource, message: InboundMessage, now: float
) -> tuple[ConversationState, str]:
    state = source()
    if state is None:
        state, state_before = flows.for_new_conversation(key.tenant_id).start(now, key), ""
    else:
        state_before = state.current_state
    forced = message.hints.force_flow
    if forced and forced != state.flow_id:
        state = _switch_flow(flows, key, state, forced, now)
    return state, state_before


def _attempt(
    flows: FlowRegistry,
    key: ConversationKey,
    source: StateSource,
    message: InboundMessage,
    now: float,
    results: dict[str, JsonDict],
    span: FlowSpan | None,
) -> Pending | Done:
    state, state_before = _starting(flows, key, source, message, now)
    flow = flows.for_state(state)
    try:
        with span(state.flow_id, state.current_state) if span is not None else contextlib.nullcontext():
            reply = flow.handle(state, message, now, results)
    except NeedsWebhook as need:
        return Pending(need.call, flows, key, source, message, now, results, span)
    state.message_count += 1
    state.last_activity = now
    return Done(state, reply, state_before, message, now, results)


def _switch_flow(
    flows: FlowRegistry, key: ConversationKey, state: ConversationState, flow_id: str, now: float
) -> ConversationState:
    """A new session on another flow, as the processing hint ``force_flow`` asks."""
    try:
        flow = flows.by_id(flow_id, key.tenant_id)
    except UnknownFlow as exc:
        raise InvalidArgument(str(exc), field="processing_hints.force_flow") from exc
    fresh = flow.start(now, key)
    fresh.created_at, fresh.message_count = state.created_at, state.message_count
    fresh.user_profile = state.user_profile
    return fresh


__all__ = [
    "Done",
    "FlowSpan",
    "Pending",
    "StateSource",
    "begin",
    "force",
    "reset",
    "resume",
    "starting_state",
    "webhook_body",
]
