"""Shard: batches of commands run on its conversations, persisted in one store write."""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confab.actors.shard import Shard
from confab.runtime.errors import ConversationNotFound, InternalError, InvalidArgument, Unavailable
from confab.runtime.flows import EchoFlow, FlowReply
from confab.runtime.model import (
    Content,
    ConversationKey,
    ConversationState,
    InboundMessage,
    ResetResult,
    StateResult,
    TurnResult,
)
from confab.runtime.protocol import codec
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind, Outcome, decode_outcome
from confab.runtime.store import ConversationWrite, StaleWrite, open_store
from tests.shard_runner import routed

TENANT = "tenant-a"
_ids = itertools.count(1)
_batch_ids = itertools.count(100)


def key(conversation_id: str, tenant: str = TENANT) -> ConversationKey:
    return ConversationKey(tenant, conversation_id)


def turn(conversation_id: str, text: str, message_id: str | None = None, tenant: str = TENANT) -> Command:
    message = InboundMessage(user_id="user-1", content=Content(text=text))
    return Command(
        CommandKind.TURN, message_id or f"auto-{next(_ids)}", key(conversation_id, tenant), message
    )


def get_state(conversation_id: str, tenant: str = TENANT) -> Command:
    return Command(CommandKind.GET_STATE, f"get-{next(_ids)}", key(conversation_id, tenant))


def reset(conversation_id: str, message_id: str | None = None, tenant: str = TENANT) -> Command:
    return Command(
        CommandKind.RESET, message_id or f"reset-{next(_ids)}", key(conversation_id, tenant), "test reset"
    )


def run(shard: Shard, *commands: Command) -> list[Outcome]:
    batch_id = next(_batch_ids)
    ((sender, answer),) = shard.run_round([("edge", CommandBatch(batch_id, routed(shard, commands)))])
    assert sender == "edge" and answer.batch_id == batch_id
    assert len(answer.outcomes) == len(commands)
    return [decode_outcome(w) for w in answer.outcomes]


def run_one(shard: Shard, command: Command) -> Outcome:
    (outcome,) = run(shard, command)
    return outcome


def as_turn(outcome: Outcome) -> TurnResult:
    assert isinstance(outcome, TurnResult), outcome
    return outcome


def state_of(shard: Shard, conversation_id: str, tenant: str = TENANT) -> ConversationState:
    outcome = run_one(shard, get_state(conversation_id, tenant))
    assert isinstance(outcome, StateResult), outcome
    return outcome.state


def count_of(shard: Shard, conversation_id: str, tenant: str = TENANT) -> int:
    return state_of(shard, conversation_id, tenant).message_count


@pytest.fixture
def shard(make_shard: Callable[..., Shard]) -> Shard:
    return make_shard()


# Ordering -------------------------------------------------------------------------------


def test_turns_in_one_batch_run_in_command_order(shard: Shard) -> None:
    commands = []
    for i in range(1, 6):
        commands.append(turn("c1", f"one-{i}"))
        commands.append(turn("c2", f"two-{i}"))
    outcomes = [as_turn(o) for o in run(shard, *commands)]
    c1 = outcomes[0::2]
    c2 = outcomes[1::2]
    assert [o.state.message_count for o in c1] == [1, 2, 3, 4, 5]
    assert [o.state.message_count for o in c2] == [1, 2, 3, 4, 5]
    assert [o.context_updates["last_message"] for o in c1] == [f"one-{i}" for i in range(1, 6)]
    assert [o.state.variables["last_message"] for o in c2] == [f"two-{i}" for i in range(1, 6)]
    assert c1[0].response.text == "Hello! You said: one-1"
    assert c1[0].actions_performed == ["greet", "echo"]
    assert c1[0].state.current_state == "chatting"
    assert c1[0].state.previous_states == ["start"]
    assert [o.response.text for o in c1[1:]] == [f"You said: one-{i}" for i in range(2, 6)]
    assert not any(o.replayed for o in outcomes)
    assert all(o.queue_time_ms >= 0.0 and o.execution_time_ms >= 0.0 for o in outcomes)
    assert count_of(shard, "c1") == 5
    assert count_of(shard, "c2") == 5


def test_counts_continue_across_batches(shard: Shard) -> None:
    run(shard, turn("c", "a"), turn("c", "b"))
    outcomes = run(shard, turn("c", "c"), get_state("c"), turn("c", "d"))
    assert as_turn(outcomes[0]).state.message_count == 3
    assert isinstance(outcomes[1], StateResult)
    assert outcomes[1].state.message_count == 3
    assert as_turn(outcomes[2]).state.message_count == 4


def test_outcomes_keep_command_order_for_mixed_kinds(shard: Shard) -> None:
    outcomes = run(shard, get_state("x"), turn("x", "hi"), get_state("x"), reset("x"), get_state("x"))
    assert isinstance(outcomes[0], ConversationNotFound)
    assert as_turn(outcomes[1]).state.message_count == 1
    assert isinstance(outcomes[2], StateResult) and outcomes[2].state.message_count == 1
    assert isinstance(outcomes[3], ResetResult) and outcomes[3].previous_state == "chatting"
    assert isinstance(outcomes[4], StateResult) and outcomes[4].state.message_count == 0


# Unknown conversations --------------------------------------------------------------------


def test_get_state_of_unknown_is_not_found_and_not_resident(shard: Shard) -> None:
    outcome = run_one(shard, get_state("ghost"))
    assert isinstance(outcome, ConversationNotFound)
    assert outcome.reason == "CONVERSATION_NOT_FOUND"
    assert len(shard.residents) == 0
    assert shard.store.count_conversations() == 0


def test_get_state_of_unknown_does_not_evict_known(shard: Shard) -> None:
    run(shard, turn("known", "hi"))
    outcomes = run(shard, get_state("ghost-1"), get_state("known"), get_state("ghost-2"))
    assert isinstance(outcomes[0], ConversationNotFound)
    assert isinstance(outcomes[1], StateResult)
    assert isinstance(outcomes[2], ConversationNotFound)
    assert list(shard.residents) == [key("known")]


def test_reset_of_unknown_is_not_found(shard: Shard) -> None:
    outcome = run_one(shard, reset("ghost"))
    assert isinstance(outcome, ConversationNotFound)
    assert len(shard.residents) == 0
    assert shard.store.count_conversations() == 0
    assert isinstance(run_one(shard, get_state("ghost")), ConversationNotFound)


# Reset ----------------------------------------------------------------------------------


def test_reset_returns_previous_state_and_fresh_state(shard: Shard) -> None:
    run(shard, turn("c", "a"), turn("c", "b"), turn("c", "c"))
    before = time.time()
    outcome = run_one(shard, reset("c"))
    assert isinstance(outcome, ResetResult)
    assert not outcome.replayed
    assert outcome.previous_state == "chatting"
    state = outcome.state
    assert state.current_state == EchoFlow.START
    assert (state.flow_id, state.flow_version) == (EchoFlow.flow_id, EchoFlow.version)
    assert state.message_count == 0
    assert state.previous_states == []
    assert state.variables == {}
    assert state.created_at >= before - 1.0

    stored = state_of(shard, "c")
    assert stored.message_count == 0
    assert stored.current_state == EchoFlow.START
    after = as_turn(run_one(shard, turn("c", "again")))
    assert after.state.message_count == 1
    assert after.response.text == "Hello! You said: again"


def test_reset_survives_restart(make_shard: Callable[..., Shard]) -> None:
    first = make_shard()
    run(first, turn("c", "a"), turn("c", "b"), reset("c"))
    second = make_shard()
    assert count_of(second, "c") == 0
    assert state_of(second, "c").current_state == EchoFlow.START


# At-most-once -------------------------------------------------------------------------


def test_duplicate_message_id_in_one_batch_is_applied_once(shard: Shard) -> None:
    outcomes = [as_turn(o) for o in run(shard, turn("c", "hi", "m-1"), turn("c", "hi", "m-1"))]
    assert not outcomes[0].replayed
    assert outcomes[1].replayed
    assert outcomes[0].state.message_count == outcomes[1].state.message_count == 1
    assert outcomes[1].response == outcomes[0].response
    assert count_of(shard, "c") == 1


def test_duplicate_message_id_in_later_batch_is_applied_once(shard: Shard) -> None:
    first = as_turn(run_one(shard, turn("c", "hello", "m-1")))
    run(shard, turn("c", "other", "m-2"))
    again = as_turn(run_one(shard, turn("c", "hello", "m-1")))
    assert again.replayed
    assert again.state.message_count == first.state.message_count == 1
    assert again.response == first.response
    assert again.state == first.state
    assert count_of(shard, "c") == 2


def test_duplicate_message_id_after_restart_is_applied_once(make_shard: Callable[..., Shard]) -> None:
    before = make_shard()
    first = [as_turn(o) for o in run(before, turn("c", "a", "m-1"), turn("c", "b", "m-2"))]
    before.close()

    after = make_shard()
    outcomes = [
        as_turn(o) for o in run(after, turn("c", "b", "m-2"), turn("c", "a", "m-1"), turn("c", "new"))
    ]
    assert outcomes[0].replayed and outcomes[1].replayed
    assert outcomes[0].state.message_count == first[1].state.message_count == 2
    assert outcomes[1].state.message_count == first[0].state.message_count == 1
    assert outcomes[0].response == first[1].response
    assert not outcomes[2].replayed
    assert outcomes[2].state.message_count == 3


def test_duplicate_reset_is_applied_once(shard: Shard) -> None:
    run(shard, turn("c", "a"), turn("c", "b"))
    first = run_one(shard, reset("c", "r-1"))
    run(shard, turn("c", "c"))
    again = run_one(shard, reset("c", "r-1"))
    assert isinstance(first, ResetResult) and isinstance(again, ResetResult)
    assert not first.replayed and again.replayed
    assert again.previous_state == first.previous_state == "chatting"
    assert count_of(shard, "c") == 1  # the turn after the reset was not undone


def test_message_id_is_per_conversation(shard: Shard) -> None:
    outcomes = [as_turn(o) for o in run(shard, turn("c1", "x", "same"), turn("c2", "x", "same"))]
    assert not outcomes[0].replayed and not outcomes[1].replayed
    assert count_of(shard, "c1") == count_of(shard, "c2") == 1


def test_duplicate_after_passivation_is_applied_once(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(resident_limit=1)
    run(shard, turn("c1", "a", "m-1"))
    run(shard, turn("c2", "b"))
    assert key("c1") not in shard.residents
    again = as_turn(run_one(shard, turn("c1", "a", "m-1")))
    assert again.replayed
    assert again.state.message_count == 1


def test_replay_of_reapplied_message_id_returns_latest_reply(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(turns_kept=4, window_s=0.0)  # kept by count alone
    run(shard, turn("c", "first", "m-1"))
    for i in range(2, 6):
        run(shard, turn("c", f"t{i}", f"m-{i}"))
    # m-1 is no longer among the last 4 and older than the window: applied again (count 6)...
    reapplied = as_turn(run_one(shard, turn("c", "first", "m-1")))
    assert not reapplied.replayed
    assert reapplied.state.message_count == 6
    # ...and its retry must answer what that application produced, not the first one.
    retry = as_turn(run_one(shard, turn("c", "first", "m-1")))
    assert retry.replayed
    assert retry.state.message_count == 6
    assert retry.response == reapplied.response


def test_a_replacement_recognises_every_command_of_a_resent_batch(make_shard: Callable[..., Shard]) -> None:
    # 100 commands for one conversation, more than turns_kept (32): the old shard commits them all
    # and dies before answering; the edge sends the same batch to its replacement.
    batch = [turn("hot", f"m{i}", f"id-{i}") for i in range(100)]
    first = make_shard(turns_kept=32)
    applied = [as_turn(o) for o in run(first, *batch)]
    first.close()
    replacement = make_shard(turns_kept=32)
    again = [as_turn(o) for o in run(replacement, *batch)]
    assert all(o.replayed for o in again)
    assert (
        [o.state.message_count for o in again]
        == [o.state.message_count for o in applied]
        == list(range(1, 101))
    )
    assert count_of(replacement, "hot") == 100


def test_ids_younger_than_the_window_are_kept_beyond_turns_kept(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(turns_kept=4, window_s=3600.0)
    for i in range(10):
        run(shard, turn("c", f"t{i}", f"m-{i}"))
    shard.close()
    restarted = make_shard(turns_kept=4, window_s=3600.0)
    assert all(as_turn(run_one(restarted, turn("c", f"t{i}", f"m-{i}"))).replayed for i in range(10))
    assert count_of(restarted, "c") == 10


def test_turns_beyond_the_count_and_the_window_are_pruned_from_the_store(
    make_shard: Callable[..., Shard],
) -> None:
    shard = make_shard(turns_kept=4, window_s=0.0)
    for i in range(10):
        run(shard, turn("c", f"t{i}", f"m-{i}"))
    stored = shard.store.load(key("c"))
    assert stored is not None and [m for m, _ in stored.message_ids] == [f"m-{i}" for i in range(6, 10)]


def test_a_client_key_reused_for_another_message_is_refused(shard: Shard) -> None:
    first = as_turn(run_one(shard, turn("c", "pay 10 EUR", "c:key-1")))
    assert as_turn(run_one(shard, turn("c", "pay 10 EUR", "c:key-1"))).replayed
    reused = run_one(shard, turn("c", "pay 99 EUR", "c:key-1"))
    assert isinstance(reused, InvalidArgument) and reused.field == "metadata.request_id"
    assert count_of(shard, "c") == first.state.message_count == 1


def test_with_history_on_each_turn_keeps_its_message_and_time_for_replays(
    make_shard: Callable[..., Shard],
) -> None:
    shard = make_shard(history_s=3600.0)
    run(shard, turn("c", "first"), reset("c"), turn("c", "second"))
    recorded = shard.store.recorded_turns(key("c"))
    assert [t.seq for t in recorded] == [1, 3]  # turns only: a reset answers no message
    message, at, webhooks = codec.unpack_recorded(recorded[1].recorded)
    assert message.content.text == "second" and at > 0 and webhooks == {}
    assert make_shard().store.recorded_turns(key("c"))  # kept in the store, whoever reads it


def test_with_history_off_nothing_is_recorded(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(history_s=0.0)
    run(shard, turn("c", "first"))
    assert shard.store.recorded_turns(key("c")) == []


# Flow failures --------------------------------------------------------------------------


@pytest.fixture
def exploding_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    original = EchoFlow.handle

    def handle(
        self: EchoFlow, state: ConversationState, message: InboundMessage, now: float, results: object = None
    ) -> FlowReply:
        if message.content.text == "boom":
            # Scribble on the working copy first: none of it may survive the failure.
            state.variables["poisoned"] = True
            state.message_count += 100
            state.current_state = "broken"
            raise RuntimeError("secret detail")
        return original(self, state, message, now)

    monkeypatch.setattr(EchoFlow, "handle", handle)


@pytest.mark.usefixtures("exploding_flow")
def test_flow_failure_fails_only_that_command(shard: Shard) -> None:
    outcomes = run(
        shard,
        turn("c", "one"),
        turn("other", "x"),
        turn("c", "boom", "m-boom"),
        turn("c", "two"),
        turn("other", "y"),
    )
    assert as_turn(outcomes[0]).state.message_count == 1
    assert as_turn(outcomes[1]).state.message_count == 1
    error = outcomes[2]
    assert isinstance(error, InternalError)
    assert "secret detail" not in error.message
    two = as_turn(outcomes[3])
    assert two.state.message_count == 2
    assert "poisoned" not in two.state.variables
    assert two.state.current_state == "chatting"
    assert as_turn(outcomes[4]).state.message_count == 2

    state = state_of(shard, "c")
    assert state.message_count == 2
    assert state.variables == {"last_message": "two"}
    assert state.current_state == "chatting"


@pytest.mark.usefixtures("exploding_flow")
def test_flow_failure_in_separate_batch_leaves_state_unchanged(shard: Shard) -> None:
    run(shard, turn("c", "one"))
    before = state_of(shard, "c")
    assert isinstance(run_one(shard, turn("c", "boom", "m-boom")), InternalError)
    assert state_of(shard, "c") == before
    assert as_turn(run_one(shard, turn("c", "two"))).state.message_count == 2


@pytest.mark.usefixtures("exploding_flow")
def test_failed_message_id_is_not_remembered(shard: Shard) -> None:
    run(shard, turn("c", "one"))
    assert isinstance(run_one(shard, turn("c", "boom", "m-x")), InternalError)
    retried = as_turn(run_one(shard, turn("c", "fixed", "m-x")))
    assert not retried.replayed
    assert retried.state.message_count == 2


@pytest.mark.usefixtures("exploding_flow")
def test_flow_failure_on_first_message_creates_nothing(shard: Shard) -> None:
    assert isinstance(run_one(shard, turn("new", "boom")), InternalError)
    assert len(shard.residents) == 0
    assert shard.store.count_conversations() == 0
    assert isinstance(run_one(shard, get_state("new")), ConversationNotFound)


# Store failures -------------------------------------------------------------------------


def failing_write(calls: list[int]) -> Callable[..., None]:
    def write(writes: Any, fence: Any = None) -> None:
        calls.append(len(list(writes)))
        raise sqlite3.OperationalError("disk I/O error")

    return write


def test_store_write_failure_answers_unavailable_and_rolls_back(
    shard: Shard, make_shard: Callable[..., Shard], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(shard, turn("old", "a", "m-a"), turn("old", "b", "m-b"))
    before = state_of(shard, "old")

    calls: list[int] = []
    with monkeypatch.context() as m:
        m.setattr(shard.store, "write", failing_write(calls))
        outcomes = run(
            shard,
            turn("old", "c", "m-c"),
            turn("fresh", "hello", "m-fresh"),
            turn("old", "d", "m-d"),
            turn("old", "b", "m-b"),  # a replay of an earlier, committed message
            reset("old", "r-1"),
        )
    assert calls == [2]
    for outcome in outcomes:
        assert isinstance(outcome, Unavailable), outcome
        assert outcome.reason == "UNAVAILABLE"

    # Nothing of the failed batch is visible, in memory or in the store.
    assert state_of(shard, "old") == before
    assert isinstance(run_one(shard, get_state("fresh")), ConversationNotFound)
    assert key("fresh") not in shard.residents
    restarted = make_shard()
    assert state_of(restarted, "old") == before
    assert isinstance(run_one(restarted, get_state("fresh")), ConversationNotFound)

    # A later successful batch continues from the old count; the failed ids can be retried (on the
    # replacement: it took the virtual shards over, so the old shard could no longer write).
    outcomes = run(restarted, turn("old", "c", "m-c"), turn("fresh", "hello", "m-fresh"))
    retried = as_turn(outcomes[0])
    assert not retried.replayed
    assert retried.state.message_count == 3
    assert as_turn(outcomes[1]).state.message_count == 1
    assert not as_turn(outcomes[1]).replayed


def test_store_write_failure_keeps_unrelated_errors_and_reads(
    shard: Shard, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(shard, turn("old", "a"))
    monkeypatch.setattr(shard.store, "write", failing_write([]))
    outcomes = run(shard, get_state("ghost"), reset("ghost"), get_state("old"), turn("old", "b"))
    assert isinstance(outcomes[0], ConversationNotFound)
    assert isinstance(outcomes[1], ConversationNotFound)
    assert isinstance(outcomes[2], StateResult)
    assert outcomes[2].state.message_count == 1
    assert isinstance(outcomes[3], Unavailable)


def test_a_conversation_moved_on_in_the_store_behind_the_shard_is_reloaded_not_overwritten(
    shard: Shard, db_path: Path
) -> None:
    run(shard, turn("old", "a", "m-a"), turn("other", "a"))
    # Another writer moves "old" on (as a commit the shard was told had failed would have).
    elsewhere = open_store(str(db_path), synchronous="NORMAL")
    try:
        stored = elsewhere.load(key("old"))
        assert stored is not None and stored.seq == 1
        state = codec.unpack_state(stored.state)
        state.message_count, state.variables = 2, {"last_message": "from elsewhere"}
        elsewhere.write([ConversationWrite(key("old"), codec.pack_state(state), 2, [], base_seq=stored.seq)])
    finally:
        elsewhere.close()
    outcomes = run(shard, turn("old", "b", "m-b"), turn("other", "b"), get_state("old"))
    assert isinstance(outcomes[0], Unavailable) and isinstance(outcomes[2], Unavailable)
    assert as_turn(outcomes[1]).state.message_count == 2  # the other conversation was written
    assert key("old") not in shard.residents
    retried = as_turn(run_one(shard, turn("old", "b", "m-b")))  # the client's retry
    assert retried.state.message_count == 3
    assert retried.state_before == state.current_state
    assert state_of(shard, "old").variables == {"last_message": "b"}
    reloaded = shard.store.load(key("old"))
    assert reloaded is not None and reloaded.seq == 3


def test_a_stale_write_naming_none_of_the_rounds_conversations_fails_the_round(
    shard: Shard, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(shard, turn("c", "a"))
    calls: list[int] = []

    def refused(writes: Any, fence: Any = None) -> None:
        calls.append(len(list(writes)))
        raise StaleWrite(frozenset({key("never-here")}))

    monkeypatch.setattr(shard.store, "write", refused)
    assert isinstance(run_one(shard, turn("c", "b")), Unavailable)
    assert calls == [1]  # given up at once, not tried again and again
    assert key("c") not in shard.residents
    monkeypatch.undo()
    assert count_of(shard, "c") == 1


def test_a_store_that_cannot_be_read_fails_only_the_commands_it_must_load_for(
    shard: Shard, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(shard, turn("resident", "a"))

    def unreadable(_key: ConversationKey) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(shard.store, "load", unreadable)
    outcomes = run(shard, turn("elsewhere", "a"), turn("resident", "b"))
    assert isinstance(outcomes[0], Unavailable) and "store read failed" in str(outcomes[0])
    assert as_turn(outcomes[1]).state.message_count == 2


def test_read_only_batch_does_not_write(shard: Shard, monkeypatch: pytest.MonkeyPatch) -> None:
    run(shard, turn("c", "a"))
    calls: list[int] = []
    monkeypatch.setattr(shard.store, "write", failing_write(calls))
    outcomes = run(shard, get_state("c"), get_state("ghost"))
    assert calls == []
    assert isinstance(outcomes[0], StateResult)


def test_store_write_failure_get_state_does_not_report_uncommitted_state(
    shard: Shard, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(shard, turn("c", "a"))
    monkeypatch.setattr(shard.store, "write", failing_write([]))
    outcomes = run(shard, turn("c", "b"), get_state("c"))
    assert isinstance(outcomes[0], Unavailable)
    read = outcomes[1]
    # Either the committed state (count 1) or an error is acceptable; count 2 never existed.
    assert not (isinstance(read, StateResult) and read.state.message_count == 2)


def test_unexpected_shard_error_answers_every_command(shard: Shard, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_key: ConversationKey) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(shard, "_activate", broken)
    outcomes = run(shard, turn("c", "a"), get_state("c"))
    assert all(isinstance(o, InternalError) for o in outcomes)


# Passivation ----------------------------------------------------------------------------


def test_passivation_beyond_resident_limit(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(resident_limit=2)
    run(shard, turn("c1", "a"), turn("c1", "b"), turn("c1", "c"))
    run(shard, turn("c2", "a"))
    run(shard, turn("c3", "a"))
    assert len(shard.residents) == 2
    assert shard.passivations == 1
    assert list(shard.residents) == [key("c2"), key("c3")]  # the least recently used went
    assert shard.activations == 3

    state = state_of(shard, "c1")  # comes back from the store
    assert state.message_count == 3
    assert state.variables == {"last_message": "c"}
    assert shard.activations == 4
    assert shard.passivations == 2
    assert as_turn(run_one(shard, turn("c1", "d"))).state.message_count == 4


def test_passivation_evicts_least_recently_used(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(resident_limit=2)
    run(shard, turn("c1", "a"))
    run(shard, turn("c2", "a"))
    run(shard, get_state("c1"))  # c1 is now more recent than c2
    run(shard, turn("c3", "a"))
    assert set(shard.residents) == {key("c1"), key("c3")}


def test_passivation_within_one_big_batch(make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(resident_limit=2)
    outcomes = run(shard, *(turn(f"c{i}", "x") for i in range(5)))
    assert all(as_turn(o).state.message_count == 1 for o in outcomes)
    assert len(shard.residents) == 2
    assert shard.passivations == 3
    assert shard.store.count_conversations() == 5
    assert count_of(shard, "c0") == 1


# Tenants --------------------------------------------------------------------------------


def test_tenants_are_isolated(shard: Shard) -> None:
    run(
        shard,
        turn("same", "a1", "m-1", tenant="A"),
        turn("same", "a2", "m-2", tenant="A"),
        turn("same", "b1", "m-1", tenant="B"),  # same message id, other tenant: not a replay
    )
    assert count_of(shard, "same", "A") == 2
    assert count_of(shard, "same", "B") == 1
    assert state_of(shard, "same", "B").variables == {"last_message": "b1"}
    assert isinstance(run_one(shard, get_state("same", "C")), ConversationNotFound)

    assert isinstance(run_one(shard, reset("same", tenant="A")), ResetResult)
    assert count_of(shard, "same", "A") == 0
    assert count_of(shard, "same", "B") == 1
    assert shard.store.count_conversations() == 2


# Statistics -----------------------------------------------------------------------------


def test_statistics(make_shard: Callable[..., Shard]) -> None:
    before = time.time()
    shard = make_shard(resident_limit=2, index=3, generation=7)
    run(shard, turn("c1", "a"), turn("c2", "a"))
    run(shard, turn("c3", "a"), get_state("ghost"))
    run(shard, get_state("c1"))
    stats = shard.status()
    assert stats.index == 3
    assert stats.generation == 7
    assert stats.pid == os.getpid()
    assert before - 1.0 <= stats.started_at <= time.time()
    assert stats.resident_conversations == len(shard.residents) == 2
    assert stats.resident_limit == 2
    assert stats.activations == 5  # c1, c2, c3, ghost, c1 again
    assert stats.passivations == 2
    assert stats.commands == 5
    assert stats.batches == 3
    assert stats.store_ok is True
    assert stats.store_error == ""
    assert 0.0 <= stats.store_latency_ms < 5000.0
    assert stats.rss_bytes > 1_000_000
    assert stats.cpu_seconds > 0.0


def test_statistics_reports_store_failure(shard: Shard) -> None:
    shard.store.close()
    stats = shard.status()
    assert stats.store_ok is False
    assert stats.store_error.startswith("ProgrammingError")


# Stored form ----------------------------------------------------------------------------


def test_batch_is_persisted_with_turns(shard: Shard) -> None:
    run(shard, turn("c", "a", "m-1"), turn("c", "b", "m-2"), reset("c", "r-1"))
    stored = shard.store.load(key("c"))
    assert stored is not None
    assert stored.seq == 3
    assert [m for m, _ in stored.message_ids] == ["m-1", "m-2", "r-1"]
    assert shard.store.load_turn(key("c"), "m-2") is not None


def test_one_store_write_per_batch(shard: Shard, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[list[ConversationWrite]] = []
    original = shard.store.write

    def spy(batch: Any, fence: Any = None) -> None:
        batch = list(batch)
        writes.append(batch)
        original(batch, fence)

    monkeypatch.setattr(shard.store, "write", spy)
    run(shard, turn("c1", "a"), turn("c2", "a"), turn("c1", "b"), get_state("c1"))
    assert len(writes) == 1
    by_key = {w.key: w for w in writes[0]}
    assert set(by_key) == {key("c1"), key("c2")}
    assert by_key[key("c1")].seq == 2
    assert len(by_key[key("c1")].turns) == 2
