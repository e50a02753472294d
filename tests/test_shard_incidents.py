"""A shard's side of a conversation in trouble, without a server: a command queued behind a hanging
webhook is dropped at its deadline and never runs; an abandoned webhook's turn takes its failure
route at once and the call's late answer is ignored; people's messages and operators' actions make
the events the edges push to open streams, once stored."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import pytest

from confab.actors.shard import Shard
from confab.runtime.errors import DeadlineExceeded, FailedPrecondition
from confab.runtime.model import (
    Content,
    ConversationKey,
    InboundMessage,
    ProcessingHints,
    ResetResult,
    TurnResult,
)
from confab.runtime.protocol.records import (
    Command,
    CommandBatch,
    CommandKind,
    decode_outcome,
    is_deferred,
)
from confab.runtime.webhooks import WebhookResult
from tests.shard_runner import routed

KEY = ConversationKey("acme", "stuck")
_ids = itertools.count(1)


def pizza(text: str = "", payload: str = "", key: ConversationKey = KEY) -> Command:
    message = InboundMessage(
        "user-1", Content(text=text, payload=payload), hints=ProcessingHints(force_flow="pizza")
    )
    return Command(CommandKind.TURN, f"m-{next(_ids)}", key, message)


def raw(shard: Shard, *commands: Command) -> list[list[Any]]:
    ((_, answer),) = shard.run_round([("edge", CommandBatch(next(_ids), routed(shard, commands)))])
    return answer.outcomes


@pytest.fixture
def hanging(make_shard: Callable[..., Shard]) -> tuple[Shard, list[Future[WebhookResult]]]:
    """A shard whose webhook calls never answer (until a test answers them)."""
    shard = make_shard()
    calls: list[Future[WebhookResult]] = []

    def call(name: str, body: dict[str, Any]) -> Future[WebhookResult]:
        calls.append(Future())
        return calls[-1]

    shard.webhooks.call = call  # type: ignore[method-assign]
    return shard, calls


def test_a_command_behind_a_webhook_is_dropped_at_its_deadline_and_never_runs(
    hanging: tuple[Shard, list[Future[WebhookResult]]],
) -> None:
    shard, calls = hanging
    (waiting,) = raw(shard, pizza("2 large pizzas please"))
    assert is_deferred(waiting) and len(calls) == 1
    late_reset = Command(CommandKind.RESET, "reset-1", KEY, "operator reset", budget_s=0.05)
    patient = replace(pizza("hello?"), budget_s=60.0)
    assert all(is_deferred(o) for o in raw(shard, late_reset, patient))
    assert shard.expire_queued() == []  # not yet
    time.sleep(0.1)
    ((sender, (_, position, dropped)),) = shard.expire_queued()
    assert sender == "edge" and position == 0
    error = decode_outcome(dropped)
    assert isinstance(error, DeadlineExceeded) and "'price'" in error.message
    assert "nothing was changed" in error.message
    calls[0].set_result({"ok": False, "error": "timed out"})
    finished = [decode_outcome(outcome) for _, (_, _, outcome) in shard.finish_webhooks()]
    assert len(finished) == 2  # the turn and the message behind it; the reset is gone
    assert all(isinstance(r, TurnResult) for r in finished)
    first = finished[0]
    assert isinstance(first, TurnResult) and first.state.current_state == "price_unavailable"
    assert shard.residents[KEY].seq == 2  # two turns stored, no reset


def test_an_abandoned_webhook_takes_its_failure_route_at_once_and_its_late_answer_is_ignored(
    hanging: tuple[Shard, list[Future[WebhookResult]]],
) -> None:
    shard, calls = hanging
    raw(shard, pizza("2 large pizzas please"))
    behind = raw(shard, pizza(payload="NO"))
    assert is_deferred(behind[0])
    abandoned = shard.abandon_webhook(KEY, "key:ops", "price service down")
    assert abandoned.done and abandoned.webhook == "price"
    assert abandoned.state == "price_unavailable"  # where the abandoned turn itself left it
    late = [decode_outcome(outcome) for _, (_, _, outcome) in shard.take_moved()]
    turn, no = late
    assert isinstance(turn, TurnResult) and turn.state_before == ""
    assert {"webhook_failed:price", "webhook_abandoned:price"} <= set(turn.actions_performed)
    assert turn.state.variables["quote"] == {"error": "abandoned by key:ops: price service down"}
    assert isinstance(no, TurnResult) and no.state.current_state == "take_order"
    calls[0].set_result({"ok": True, "status": 200, "body": {"total": 9.5}})
    assert shard.finish_webhooks() == []  # nobody waits on that call any more
    assert not shard.abandon_webhook(KEY, "key:ops", "").done


def test_a_persons_message_and_operator_actions_make_events_once_stored(shard_with_handoff: Shard) -> None:
    shard = shard_with_handoff
    said = InboundMessage("agent:Alice", Content(type="agent", text="Hi, I'm Alice"))
    (outcome,) = raw(shard, Command(CommandKind.AGENT_MESSAGE, "c:a-1", KEY, said))
    reply = decode_outcome(outcome)
    assert isinstance(reply, TurnResult) and reply.response.text == "Hi, I'm Alice"
    assert reply.actions_performed == ["agent_message"] and reply.state.current_state == "human"
    (event,) = shard.take_events()
    assert (event.key, event.type) == (KEY, "agent_message")
    assert event.data == {"agent": "Alice", "text": "Hi, I'm Alice", "message_id": "a-1"}
    raw(shard, Command(CommandKind.AGENT_MESSAGE, "c:a-1", KEY, said))  # a repeat: answered, no event
    assert shard.take_events() == []
    raw(shard, Command(CommandKind.RESET, "r-0", KEY, "the client's own"))  # MCPEngine's: no event
    assert shard.take_events() == []
    raw(shard, pizza(payload="HUMAN"))
    (reset,) = raw(shard, Command(CommandKind.RESET, "operator:r-1", KEY, "start over"))  # the Admin API's
    assert isinstance(decode_outcome(reset), ResetResult)
    (event,) = shard.take_events()
    assert event.type == "operator_action" and event.data == {
        "action": "reset",
        "state": "",
        "reason": "start over",
    }
    (refused,) = raw(shard, Command(CommandKind.AGENT_MESSAGE, "c:a-2", KEY, said))
    assert isinstance(decode_outcome(refused), FailedPrecondition)  # no longer handed over
    assert shard.take_events() == []


@pytest.fixture
def shard_with_handoff(make_shard: Callable[..., Shard]) -> Shard:
    shard = make_shard()
    raw(shard, pizza("hi"))
    (handed,) = raw(shard, pizza(payload="HUMAN"))
    reply = decode_outcome(handed)
    assert isinstance(reply, TurnResult) and reply.state.current_state == "human"
    shard.take_events()
    return shard
