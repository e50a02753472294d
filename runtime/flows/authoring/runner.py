"""The in-process runner: conversations kept in memory, each turn run as a shard runs it.

``confab flows test`` plays dialogues through a :class:`FlowRunner` and ``confab flows
replay`` plays recorded conversations through one. It holds no turn logic of its own: a
turn, a reset and a forced state are those of ``runtime.flows.execution.turn``, which the shard's
conversations run too. What it adds is where the states live (a dict) and who answers a
webhook call: at once, from a dialogue's or a recording's answers, or by a real call. A
language model is never called: a model call gets the dialogue's scripted answer, else fails
as with no provider configured.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

from confab.runtime.errors import ConversationNotFound, Unavailable
from confab.runtime.flows import Flow, FlowRegistry, FlowReply, UnknownFlow, WebhookCall
from confab.runtime.flows.authoring.dialogues import (
    ScriptedGenerations,
    ShownTurn,
    TurnView,
    WebhookAnswers,
    dialogue_message,
    masked_slots,
    webhook_result,
)
from confab.runtime.flows.execution import turn
from confab.runtime.model import (
    ConversationKey,
    ConversationState,
    InboundMessage,
    JsonDict,
)
from confab.runtime.webhooks import WebhookClient, WebhookTarget

WEBHOOK_WAIT_S = 30.0


class FlowRunner:
    """Runs the flows themselves in this process, as a shard's conversation does, deterministically.

    The clock is the dialogue's ``now`` (else the real one), webhook calls are answered by
    the dialogue's ``webhooks`` or made to ``webhooks`` targets (a server config's).
    """

    pins_time = True

    def __init__(
        self,
        flows: Sequence[Flow],
        default_flow: str = "echo",
        webhooks: Sequence[WebhookTarget] = (),
    ) -> None:
        self.registry = FlowRegistry(list(flows), default_flow)
        self._client = WebhookClient(webhooks) if webhooks else None
        self._states: dict[ConversationKey, ConversationState] = {}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> FlowRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def find_flow(self, flow_id: str, tenant: str) -> Flow | None:
        try:
            return (
                self.registry.by_id(flow_id, tenant)
                if flow_id
                else self.registry.for_new_conversation(tenant)
            )
        except UnknownFlow:
            return None

    def send(
        self,
        conversation: ConversationKey,
        text: str,
        payload: str,
        channel: str,
        flow: str,
        *,
        language: str = "",
        now: float | None = None,
        webhooks: WebhookAnswers | None = None,
        seen_turn: int | None = None,
        generations: ScriptedGenerations | None = None,
    ) -> TurnView:
        message = dialogue_message(text, payload, channel, flow, language, seen_turn)
        answers = webhooks or {}
        scripted = generations or ScriptedGenerations()
        state, reply = self.play(
            conversation,
            message,
            time.time() if now is None else now,
            lambda call: self.answer(call, answers, conversation, scripted),
        )
        response = reply.response
        said, slots = self.masked(state, response.text)
        user, payload = text, payload
        if reply.recorded_input is not None:  # the message as the store keeps it
            user, payload = (reply.recorded_input, payload) if text else ("", reply.recorded_input)
        return TurnView(
            text=response.text,
            state=state.current_state,
            intent=state.current_intent,
            slots=dict(state.slots),
            variables=dict(state.variables),
            actions=list(reply.actions_performed),
            quick_replies=[q.title for q in response.quick_replies],
            buttons=[b.title for b in response.buttons],
            error_count=state.error_count,
            turn=state.message_count,
            shown=ShownTurn(user, payload, said, slots),
        )

    def masked(self, state: ConversationState, text: str) -> tuple[str, JsonDict]:
        """``text`` (what the flow said) and ``state``'s slots as operators may see them: masked
        as the state's flow says (``masked_slots``; its mask patterns in the text too)."""
        flow = self.registry.for_state(state)
        return flow.redact_text(text), masked_slots(flow, state)

    def play(
        self,
        key: ConversationKey,
        message: InboundMessage,
        now: float,
        answer: Callable[[WebhookCall], JsonDict],
    ) -> tuple[ConversationState, FlowReply]:
        """One turn of ``key`` (``runtime.flows.execution.turn``): the conversation's state after it (the
        runner's own: read it, do not change it) and the flow's reply.

        A turn that reaches a webhook runs again from the same state with ``answer``'s result
        for that call. The state is kept only when the whole turn succeeds: a turn that raises
        leaves it as it was.
        """
        outcome = turn.begin(self.registry, key, lambda: copy.deepcopy(self._states.get(key)), message, now)
        while isinstance(outcome, turn.Pending):
            outcome = turn.resume(outcome, answer(outcome.call))
        self._states[key] = outcome.state
        return outcome.state, outcome.reply

    def reset(self, key: ConversationKey, now: float, flow_id: str = "") -> ConversationState:
        """An operator's reset (``runtime.flows.execution.turn.reset``): the conversation's flow starts over.

        ``flow_id`` names that flow for a conversation this runner has not seen (one played
        from a reset on); otherwise the runner's own state says which flow it is on.
        """
        state = turn.reset(self.registry, key, self._states.get(key), now, flow_id)
        self._states[key] = state
        return state

    def force(self, key: ConversationKey, name: str) -> ConversationState:
        """An operator moving the conversation to state ``name`` (UnknownState if its flow has none)."""
        stored = self._states.get(key)
        if stored is None:
            raise ConversationNotFound(f"conversation {key} not found")
        state = copy.deepcopy(stored)
        turn.force(self.registry, state, name)
        self._states[key] = state
        return state

    def state_of(self, key: ConversationKey) -> ConversationState | None:
        """Conversation ``key``'s state (the runner's own: read it, do not change it), if it began."""
        return self._states.get(key)

    def forget(self, key: ConversationKey) -> None:
        """Drop what the runner keeps of conversation ``key``."""
        self._states.pop(key, None)

    def answer(
        self,
        call: WebhookCall,
        answers: WebhookAnswers,
        key: ConversationKey,
        generations: ScriptedGenerations | None = None,
    ) -> JsonDict:
        """The answer to a call of conversation ``key``: a model's is ``generations``' next of its
        kind (never a real call); a webhook's is ``answers``' for it if they name it, else a real call
        (Unavailable without webhook targets)."""
        if call.to_model:
            return (generations or ScriptedGenerations()).next(call.kind)
        if call.name in answers:
            return webhook_result(answers[call.name])
        if self._client is None:
            raise Unavailable(
                f"the flow calls webhook {call.name!r}: give its answer under webhooks: in the dialogue "
                "file, or a server config with --config"
            )
        return self._client.call(call.name, turn.webhook_body(key, call)).result(timeout=WEBHOOK_WAIT_S)


__all__ = ["FlowRunner"]
