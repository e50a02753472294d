"""What the runtime is doing, as events an operator can follow live (``Admin.TailEvents``).

The engine publishes an event when a command's outcome comes back from its shard;
each subscriber gets its own bounded queue, and a subscriber that falls behind loses
its oldest events rather than slowing the runtime down. Nothing is built when nobody
is subscribed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from confab.runtime.errors import ConfabError
from confab.runtime.model import ConversationKey, TurnResult
from confab.runtime.protocol.records import Command, Outcome, WireReply

TAIL_EVENT_TYPES = ("turn", "transition", "handoff", "error", "activation", "passivation")
QUEUE_SIZE = 1000
TEXT_SHOWN = 200  # characters of a response an event carries


@dataclass(frozen=True, slots=True)
class RuntimeEvent:
    type: str
    key: ConversationKey
    shard: int
    at: float
    data: dict[str, Any] = field(default_factory=dict)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[RuntimeEvent]] = set()

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self) -> asyncio.Queue[RuntimeEvent]:
        queue: asyncio.Queue[RuntimeEvent] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[RuntimeEvent]) -> None:
        self._subscribers.discard(queue)

    def publish(self, event: RuntimeEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # the slow subscriber loses its oldest event
            queue.put_nowait(event)

    def publish_outcome(self, command: Command, shard: int, outcome: Outcome | BaseException) -> None:
        for event in _events_of(command, shard, outcome):
            self.publish(event)

    def publish_lifecycle(self, shard: int, entries: list[list[str]]) -> None:
        """Activations and passivations a shard reported: (type, tenant id, conversation id)."""
        now = time.time()
        for kind, tenant_id, conversation_id in entries:
            self.publish(RuntimeEvent(kind, ConversationKey(tenant_id, conversation_id), shard, now))


def _events_of(command: Command, shard: int, outcome: Outcome | BaseException) -> list[RuntimeEvent]:
    now = time.time()
    if isinstance(outcome, ConfabError | Exception):
        reason = outcome.reason if isinstance(outcome, ConfabError) else "INTERNAL"
        return [
            RuntimeEvent(
                "error", command.key, shard, now, {"reason": reason, "message_id": command.message_id}
            )
        ]
    if isinstance(outcome, WireReply):  # its shard made the response: the reply is decoded only here
        outcome = outcome.result()
    if not isinstance(outcome, TurnResult):
        return []
    state = outcome.state
    turn = {
        "message_id": command.message_id,
        "state": state.current_state,
        "intent": state.current_intent,
        "message_count": state.message_count,
        "actions": list(outcome.actions_performed),
        "response": outcome.response.text[:TEXT_SHOWN],
        "duration_ms": round(outcome.execution_time_ms, 3),
    }
    events = [RuntimeEvent("turn", command.key, shard, now, turn)]
    if outcome.state_before != state.current_state:
        moved = {"from": outcome.state_before, "to": state.current_state, "message_id": command.message_id}
        events.append(RuntimeEvent("transition", command.key, shard, now, moved))
    if "handoff" in outcome.actions_performed:
        events.append(RuntimeEvent("handoff", command.key, shard, now, {"message_id": command.message_id}))
    return events
