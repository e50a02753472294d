"""The conversation logic a conversation actor runs, behind a small interface.

A :class:`Flow` decides what a conversation says and which state it moves to.
It receives a working copy of the state and may change it freely: the actor
commits the copy only if the whole turn succeeds, so a flow that raises leaves
no half-applied state behind.

The built-in :class:`EchoFlow` greets, echoes and counts; declarative flows plug
in through the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..model import Content, ConversationState, InboundMessage, JsonDict, QuickReply


@dataclass(slots=True)
class FlowReply:
    """What a flow produced for one turn (the actor adds the state and the timings)."""

    response: Content
    context_updates: JsonDict = field(default_factory=dict)
    actions_performed: list[str] = field(default_factory=list)
    ab_variant: str = ""


class Flow(Protocol):
    flow_id: str
    version: str

    def start(self, now: float) -> ConversationState:
        """The state of a conversation that has just begun (or was reset)."""
        ...

    def handle(self, state: ConversationState, message: InboundMessage, now: float) -> FlowReply:
        """Run one turn: read and update ``state`` in place, return the reply."""
        ...


class EchoFlow:
    """Greets on the first message, then echoes each message back."""

    flow_id = "echo"
    version = "1"
    START = "start"
    CHATTING = "chatting"

    def start(self, now: float) -> ConversationState:
        return ConversationState(
            current_state=self.START,
            flow_id=self.flow_id,
            flow_version=self.version,
            created_at=now,
            last_activity=now,
        )

    def handle(self, state: ConversationState, message: InboundMessage, now: float) -> FlowReply:
        said = message.content.text or message.content.payload
        updates: JsonDict = {"last_message": said}
        state.variables.update(updates)
        if state.current_state == self.START:
            _move(state, self.CHATTING)
            return FlowReply(
                response=Content(
                    text=f"Hello! You said: {said}",
                    quick_replies=[QuickReply(title="Say hi", payload="hi")],
                ),
                context_updates=updates,
                actions_performed=["greet", "echo"],
            )
        return FlowReply(
            response=Content(text=f"You said: {said}"),
            context_updates=updates,
            actions_performed=["echo"],
        )


def _move(state: ConversationState, to: str) -> None:
    state.previous_states.append(state.current_state)
    state.current_state = to


class UnknownFlow(LookupError):
    pass


class FlowRegistry:
    """The flows a shard can run, by id and version."""

    def __init__(self, flows: list[Flow], default_flow_id: str) -> None:
        self._flows = {(f.flow_id, f.version): f for f in flows}
        self._latest = {f.flow_id: f for f in flows}
        if default_flow_id not in self._latest:
            raise UnknownFlow(f"default flow {default_flow_id!r} is not loaded")
        self.default = self._latest[default_flow_id]

    def for_state(self, state: ConversationState) -> Flow:
        """The flow (and version) a conversation started on, else that flow's latest version."""
        flow = self._flows.get((state.flow_id, state.flow_version))
        return flow or self._latest.get(state.flow_id, self.default)


def builtin_flows() -> list[Flow]:
    return [EchoFlow()]
