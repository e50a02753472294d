"""A shard: one OS process hosting many conversations.

:class:`Shard` holds the logic and is a plain object (unit-testable without
Thespian or sockets); ``actors.data_server`` feeds it the frames of its
connections and ``actors.system.shard_actor`` is the thin Thespian actor around both.

A shard runs a *round* at a time: every command batch that arrived since the last
round, in arrival order, each command on its conversation (a ``Conversation``, activated from
the store on first use); then it writes every changed conversation of the round in
one transaction, and only then answers. Under load many batches share one commit.
Resident conversations are bounded: the least recently used are passivated
(dropped from memory; their state is already in the store).

A shard runs only the commands of the virtual shards it holds, at the epoch the
edge routed each by (``actors.ownership``); any other comes back MOVED, unrun. Its
writes are fenced by those epochs: if the store finds that another shard took one
over meanwhile, nothing of that virtual shard is written, its commands come back
MOVED and its conversations leave memory.

A turn that reaches a webhook is suspended: the call runs on a thread, the batch
is answered with the command marked deferred, and the conversation's later commands
wait in its mailbox while other conversations carry on. When the call answers, the
webhook client says so (``on_webhook_done``), :meth:`Shard.finish_webhooks` runs the
turn again with the result, the mailbox drains, and the outcomes go back as late
outcomes to where the commands came from.

A ``generate`` step's call to a language model (``runtime.models``), and a model
recognizer's, is suspended the same way, and everything above (the mailbox, abandoning the
call, deadlines, the figures of what waits) applies to it alike. Besides: the tenant's
token budget for the day is checked in the store before the call and what the call spent is
added there after it (every shard of every host shares those counts); while the model
writes an answer the user is to read, each chunk goes to ``on_delta`` if the command asked
for deltas; a model call ends when its command's caller's deadline passes (the model client
is given what is left of it); :meth:`Shard.cancel_generation` stops a model call whose
caller no longer wants it, or marks the command still queued so that its turn, when it
runs, asks the model nothing; and every call, as it ends, is counted for the shard's
figures and logged if it failed (``actors.model_calls``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from confab.actors.analytics import LiveAnalytics
from confab.actors.conversation import Conversation, Suspended
from confab.actors.model_calls import ModelCalls
from confab.actors.ownership import OwnershipChange, VshardOwnership
from confab.actors.settings import ShardSettings
from confab.runtime import telemetry
from confab.runtime.errors import ConfabError, DeadlineExceeded, InternalError, Unavailable
from confab.runtime.flows import FlowRegistry, WebhookCall
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.inspection import Abandoned, FlowReload, ShardStatus
from confab.runtime.model import (
    ConversationKey,
    InboundMessage,
    ResetResult,
    StateResult,
    TurnResult,
)
from confab.runtime.models import (
    ABANDONED,
    BUDGET,
    CANCELLED,
    ChunkSink,
    ModelClient,
    ModelResult,
    failure,
    tokens_spent,
    utc_day,
)
from confab.runtime.outbound import answered
from confab.runtime.protocol import codec, wire_pb
from confab.runtime.protocol.directory import shard_id, vshard_of
from confab.runtime.protocol.records import (
    AGENT_PREFIX,
    CLIENT_KEY_PREFIX,
    DEFERRED_OUTCOME,
    DONE,
    ERROR,
    OPERATOR_PREFIX,
    REPLAYED,
    Command,
    CommandBatch,
    CommandKind,
    ConversationEvent,
    OutcomeBatch,
    WireMessage,
    error_outcome,
    is_answer,
    moved_outcome,
    with_response,
)
from confab.runtime.store import FencedOut, StaleWrite, Store
from confab.runtime.webhooks import WebhookClient, WebhookResult

log = logging.getLogger(__name__)

# Lifecycle events carried back by one round at most (an operator's view, not a log).
MAX_LIFECYCLE_EVENTS = 1000
# What a command dropped at its deadline is answered: it was not run, and never will be.
NOT_RUN = "not done: the deadline passed before its turn; nothing was changed"
# Tests only: a shard of generation 0 exits right after committing a round of at least this
# many commands, before answering: the worst moment to die (see tests/test_exactly_once.py).
EXIT_AFTER_COMMIT = "CONFAB_TEST_EXIT_AFTER_COMMIT"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a command came from: its outcome goes back there (``sender`` is a connection).

    ``wire``: the command came as a WIRE_TURN, whose reply goes back with the serialized
    response made of it (the conversation to name in it: the command's)."""

    sender: Any
    batch_id: int
    index: int
    wire: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """A command waiting in its conversation's mailbox, and when the shard got it.

    ``cancel``: set once its caller gave it up (``Shard.cancel_generation``): it still runs in
    its turn (it was accepted), but its generations are answered at once as cancelled."""

    origin: Origin
    command: Command
    arrived: float
    cancel: threading.Event | None = None

    @property
    def deadline(self) -> float | None:
        return _deadline_of(self.command, self.arrived)


@dataclass(slots=True)
class _Round:
    """The outcomes of one round (or one pass over finished webhooks) and what they staged."""

    origins: list[Origin] = field(default_factory=list)
    keys: list[ConversationKey] = field(default_factory=list)
    outcomes: list[list[Any] | None] = field(default_factory=list)  # None: deferred
    touched: dict[ConversationKey, Conversation] = field(default_factory=dict)
    first_staged: dict[ConversationKey, int] = field(default_factory=dict)

    def add(self, origin: Origin, conversation: Conversation, outcome: list[Any] | None) -> None:
        self.answer(origin, conversation.key, outcome)
        if conversation.staged:
            self.touched[conversation.key] = conversation
            self.first_staged.setdefault(conversation.key, len(self.outcomes) - 1)

    def answer(self, origin: Origin, key: ConversationKey, outcome: list[Any] | None) -> None:
        if origin.wire and outcome is not None and is_answer(outcome):
            replayed = outcome[0] == REPLAYED
            outcome = with_response(
                outcome, wire_pb.turn_response(outcome[1], key.conversation_id, replayed=replayed)
            )
        self.origins.append(origin)
        self.keys.append(key)
        self.outcomes.append(outcome)


@dataclass(slots=True)
class _Waiting:
    suspended: Suspended
    origin: Origin
    future: Future[WebhookResult]
    since: float = 0.0  # time.time() when the call was made
    # Set to stop the command's generation (the model client ends its stream then), and every
    # later one of its turn; None: nobody asked to (yet) and the call is a webhook. It stays with
    # the command for the rest of its turn.
    cancel: threading.Event | None = None
    # When the command's caller stops waiting (a time.perf_counter(); None: never): a generation
    # of its turn ends then, as cancelled. It too stays with the command for its turn.
    deadline: float | None = None


# Called on a model call's thread with each chunk of a generated answer the user is to read:
# (where the command came from, the stream's id, the chunk's number from 0, its text).
DeltaSink = Callable[[Origin, str, int, str], None]


class Shard:
    def __init__(
        self,
        index: int,
        generation: int,
        settings: ShardSettings,
        store: Store,
        *,
        on_webhook_done: Callable[[], None] | None = None,
    ) -> None:
        self.index = index
        self.generation = generation
        self.settings = settings
        self.store = store
        flows, problems = load_flows(settings.flow_dirs, providers=settings.models.names)
        for problem in problems:  # the edge reported each at start already: once is enough
            log.debug("shard %d: flow file skipped: %s", index, problem)
        self.flows = FlowRegistry(flows, settings.default_flow)
        self.webhooks = WebhookClient(settings.webhooks)
        self.models = ModelClient(settings.models.providers, settings.models.max_concurrent)
        # Called on a webhook (or model) thread when a call finishes: the owner schedules
        # finish_webhooks().
        self.on_webhook_done = on_webhook_done
        # Set by the owner to hear generated text as it is written (commands with wants_deltas).
        self.on_delta: DeltaSink | None = None
        # (tenant, UTC day, tokens) of model calls finished and not yet added to the store's counts;
        # appended to on the calls' threads, taken on the shard's.
        self._spent: deque[tuple[str, str, int]] = deque()
        self.waiting: set[Conversation] = set()  # turns suspended on a webhook or a model call
        # Late outcomes of deferred commands given back: MOVED (their virtual shard went to another
        # shard) or UNAVAILABLE (their conversation left memory after a write that failed).
        self.moved_late: list[tuple[Any, tuple[int, int, list[Any]]]] = []
        # Operator actions and people's messages applied: staged with their round, pushed to every
        # edge once stored (``take_events``), so that the conversation's open streams hear of them.
        self._staged_events: list[ConversationEvent] = []
        self.events: list[ConversationEvent] = []
        # Activations and passivations since the last round, kept only while the edge asks.
        self.lifecycle: list[list[str]] = []
        self._lifecycle_wanted = False
        self.residents: OrderedDict[ConversationKey, Conversation] = OrderedDict()
        self.started_at = time.time()
        self.activations = 0
        self.passivations = 0
        self.commands = 0
        self.rounds = 0
        self.last_write_error = ""
        self._recording = store.retention.history_s > 0
        # What the committed turns counted since this process started, for the live figures.
        self.analytics = LiveAnalytics()
        # Its model calls, counted and (when they fail) logged as they end.
        self.model_calls = ModelCalls(index)
        self.ownership = VshardOwnership(
            shard_id(settings.host, index),
            store,
            lease_s=settings.lease_s,
            renew_every_s=settings.renew_every_s,
        )
        self._exit_after_commit = int(os.environ.get(EXIT_AFTER_COMMIT, "0")) if generation == 0 else 0
        self._process = psutil.Process()
        # The clock of the turns (what "now" is to a flow); tests pin it.
        self.clock: Callable[[], float] = time.time

    def close(self) -> None:
        self.webhooks.close()
        self.models.close()
        self.store.close()

    # Rounds --------------------------------------------------------------------

    def run_round(self, batches: list[tuple[Any, CommandBatch]]) -> list[tuple[Any, OutcomeBatch]]:
        """Run the batches that arrived, (sender, batch) in arrival order; answer each."""
        received = time.perf_counter()
        now = self.ownership.clock()
        self._lifecycle_wanted = any(batch.want_lifecycle for _, batch in batches)
        done = _Round()
        vshards, ownership = self.settings.vshards, self.ownership
        try:
            with telemetry.batch_span(self.index, [batch for _, batch in batches]):
                for sender, batch in batches:
                    arrived = batch.received_at or received
                    for i, command in enumerate(batch.commands):
                        origin = Origin(sender, batch.batch_id, i)
                        vshard = vshard_of(command.key, vshards)
                        if not ownership.accepts(vshard, command.epoch, now):
                            done.answer(origin, command.key, moved_outcome(vshard))
                        elif command.kind is CommandKind.WIRE_TURN:
                            wire = Origin(sender, batch.batch_id, i, wire=True)
                            self._run_wire_command(command, wire, arrived, done)
                        else:
                            self._run_command(command, origin, arrived, done)
                self.commands += len(done.outcomes)
                self.rounds += 1
                if done.touched:
                    self._persist(done)
        except Exception:  # never leave a command unanswered: answer every one instead
            log.exception("shard %d: a round failed", self.index)
            failure = error_outcome(InternalError("shard failed to run the batch"))
            for conversation in done.touched.values():
                conversation.rollback()
            self._staged_events.clear()
            done = _Round(outcomes=[failure] * sum(len(batch.commands) for _, batch in batches))
        self._passivate_beyond_limit()
        return self._answers(batches, done)

    def _run_wire_command(self, command: Command, origin: Origin, arrived: float, done: _Round) -> None:
        """A WIRE_TURN: its message is read here, and it runs as the TURN it carries; its reply
        goes back with the serialized response (``_Round.answer``). A message that does not
        read fails alone, before anything is changed."""
        assert isinstance(command.body, WireMessage)
        try:
            message = wire_pb.read_turn(command.body.data, command.body.prefix)
        except ConfabError as exc:
            done.answer(origin, command.key, error_outcome(exc))
            return
        turn = Command(
            CommandKind.TURN,
            command.message_id,
            command.key,
            message,
            command.trace,
            command.budget_s,
            command.epoch,
            command.wants_deltas,
        )
        self._run_command(turn, origin, arrived, done)

    def _run_command(self, command: Command, origin: Origin, arrived: float, done: _Round) -> None:
        try:
            conversation = self._activate(command.key)
        except Unavailable as exc:  # the store cannot be read now: this command alone fails
            done.answer(origin, command.key, error_outcome(exc))
            return
        if conversation.waiting is not None:  # behind a webhook: wait in order
            conversation.mailbox.append(Queued(origin, command, arrived))
            done.add(origin, conversation, None)
            return
        applied = self._apply(conversation, command, arrived)
        self._settle(conversation, applied, origin, done, deadline=_deadline_of(command, arrived))
        if not conversation.exists and conversation.waiting is None and not conversation.staged:
            del self.residents[command.key]  # e.g. a lookup of an unknown id: keep no trace

    def _apply(self, conversation: Conversation, command: Command, arrived: float) -> list[Any] | Suspended:
        waited = time.perf_counter() - arrived
        if command.budget_s is not None and waited > command.budget_s:
            # The caller has given up by now: running it would apply what it was told failed.
            return error_outcome(DeadlineExceeded(NOT_RUN))
        with telemetry.turn_span(command) as span:
            outcome = conversation.apply(
                command,
                self.flows,
                self.store,
                now=self.clock(),
                waited_ms=waited * 1000.0,
                record=self._recording,
                count=self.settings.analytics,
            )
            if span is not None:
                telemetry.note_outcome(span, outcome)
        if _may_make_event(command):  # cheap: users' turns and reads never do
            event = _event_of(command, outcome)
            if event is not None:
                self._staged_events.append(event)
        return outcome

    def _answers(
        self, batches: list[tuple[Any, CommandBatch]], done: _Round
    ) -> list[tuple[Any, OutcomeBatch]]:
        answers: list[tuple[Any, OutcomeBatch]] = []
        position = 0
        lifecycle, self.lifecycle = self.lifecycle, []
        for sender, batch in batches:
            outcomes = [
                DEFERRED_OUTCOME if o is None else o
                for o in done.outcomes[position : position + len(batch.commands)]
            ]
            position += len(batch.commands)
            events = lifecycle if batch.want_lifecycle else []
            if events:
                lifecycle = []
            answers.append((sender, OutcomeBatch(batch.batch_id, outcomes, events)))
        return answers

    def _settle(
        self,
        conversation: Conversation,
        outcome: list[Any] | Suspended,
        origin: Origin,
        done: _Round,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
    ) -> None:
        if isinstance(outcome, Suspended):
            if self._suspend(conversation, outcome, origin, cancel, deadline):
                # Answered at once (no provider, the budget spent, cancelled): no need to wait.
                self._resume(conversation, conversation.waiting.future.result(), done)
                return
            done.add(origin, conversation, None)
        else:
            done.add(origin, conversation, outcome)

    def _persist(self, done: _Round) -> None:
        """Write what the round staged; on failure withdraw the answers that showed it. The events
        of what was written go out (``take_events``); the others are dropped with their changes."""
        try:
            self._write(done)
        finally:
            self._staged_events.clear()

    def take_events(self) -> list[ConversationEvent]:
        events, self.events = self.events, []
        return events

    def _write(self, done: _Round) -> None:
        now = time.time()
        retention = self.store.retention
        vshards = self.settings.vshards
        try:
            with telemetry.store_span(len(done.touched)):
                fence = self.ownership.fence({vshard_of(key, vshards) for key in done.touched})
                writes = [c.pending_write(retention, now) for c in done.touched.values()]
                self.store.write(writes, fence)
        except FencedOut as exc:
            self._fenced_out(done, exc.lost)
            if done.touched:
                self._write(done)  # what the other virtual shards staged still stands
            return
        except StaleWrite as exc:
            if not exc.keys & done.touched.keys():  # none of this round's: nothing to go back to
                self._write_failed(done, exc)
                return
            self._stale(done, exc.keys)
            if done.touched:
                self._write(done)  # the others were computed from what the store holds
            return
        except Exception as exc:
            self._write_failed(done, exc)
            return
        self.last_write_error = ""
        for conversation in done.touched.values():
            conversation.commit(retention, now)
        self.events += [e for e in self._staged_events if e.key in done.touched]
        self.analytics.add_committed(writes)
        if self._exit_after_commit and len(done.outcomes) >= self._exit_after_commit:
            os._exit(70)  # committed, not answered: the edge must re-send and nothing may apply twice

    def _fenced_out(self, done: _Round, lost: frozenset[int]) -> None:
        """Another shard holds ``lost`` now: nothing of them was written; their commands go back."""
        log.warning("shard %d: a write was fenced out of virtual shards %s", self.index, sorted(lost))
        self.ownership.drop(lost)
        vshards = self.settings.vshards
        for key in [k for k in done.touched if vshard_of(k, vshards) in lost]:
            done.touched.pop(key).rollback()
            done.first_staged.pop(key, None)
        for i, key in enumerate(done.keys):
            vshard = vshard_of(key, vshards)
            if vshard in lost and done.outcomes[i] is not None:
                done.outcomes[i] = moved_outcome(vshard)
        self.evict(lost)

    def _write_failed(self, done: _Round, exc: Exception) -> None:
        """Written or not, nobody can say (the connection may have dropped during COMMIT): the
        conversations leave memory and their next command loads whatever the store holds, where
        the turns kept with their message ids tell a re-sent command that was applied."""
        log.error("shard %d: store write failed; its outcome is unknown", self.index, exc_info=exc)
        self.last_write_error = f"{type(exc).__name__}: {exc}"
        failure = error_outcome(Unavailable(f"store write failed: {type(exc).__name__}"))
        self._forget(done.touched, failure)
        # Answers given after a conversation's first staged change may show state that was
        # rolled back: withdraw them. Earlier reads saw committed state and stand.
        for i, key in enumerate(done.keys):
            first = done.first_staged.get(key)
            answered = done.outcomes[i]
            if first is not None and i >= first and answered is not None and answered[0] != ERROR:
                done.outcomes[i] = failure

    def _stale(self, done: _Round, stale: frozenset[ConversationKey]) -> None:
        """The store holds other versions of ``stale`` than memory did: nothing was written. Every
        answer of theirs this round came from memory that was wrong, so each is withdrawn
        (UNAVAILABLE: a retry loads them from the store) and they leave memory."""
        log.warning(
            "shard %d: the store holds other versions of %d conversation(s); reloading them",
            self.index,
            len(stale),
        )
        failure = error_outcome(Unavailable("the conversation changed in the store; try again"))
        gone = {key: done.touched.pop(key) for key in stale if key in done.touched}
        for key in stale:
            done.first_staged.pop(key, None)
        self._forget(gone, failure)
        for i, key in enumerate(done.keys):
            if key in stale and done.outcomes[i] is not None:
                done.outcomes[i] = failure

    def _forget(self, conversations: dict[ConversationKey, Conversation], failure: list[Any]) -> None:
        """Drop ``conversations`` from memory, their staged changes undone; a command of theirs
        waiting behind a webhook or in a mailbox is answered ``failure``, late."""
        for conversation in conversations.values():
            conversation.rollback()
        self._drop(list(conversations), lambda _key: failure)

    # Virtual shards --------------------------------------------------------------

    def tick_ownership(self) -> OwnershipChange:
        """Claim, renew and release virtual shards (between rounds)."""
        change = self.ownership.tick()
        if change.dropped:
            self.evict(change.dropped)
        return change

    def evict(self, vshards: set[int] | frozenset[int]) -> None:
        """Drop the conversations of ``vshards`` from memory (their state is in the store).
        Commands suspended behind a webhook or queued behind one are answered MOVED, late
        (``take_moved``): their next holder runs them."""
        count = self.settings.vshards
        self._drop(
            [k for k in self.residents if vshard_of(k, count) in vshards],
            lambda key: moved_outcome(vshard_of(key, count)),
        )

    def _drop(
        self, keys: list[ConversationKey], late_outcome: Callable[[ConversationKey], list[Any]]
    ) -> None:
        """Take ``keys`` out of memory; what waited in them is answered ``late_outcome(key)``, late."""
        late = self.moved_late
        for key in keys:
            conversation = self.residents.pop(key, None)
            if conversation is None:
                continue
            outcome = late_outcome(key)
            if conversation.waiting is not None:
                if conversation.waiting.cancel is not None:  # nobody will read what it writes
                    conversation.waiting.cancel.set()
                origin = conversation.waiting.origin
                late.append((origin.sender, (origin.batch_id, origin.index, outcome)))
                self.waiting.discard(conversation)
                conversation.waiting = None
            for queued in conversation.mailbox:
                late.append((queued.origin.sender, (queued.origin.batch_id, queued.origin.index, outcome)))
            conversation.mailbox.clear()
            self.passivations += 1
            self._note("passivation", key)

    def take_moved(self) -> list[tuple[Any, tuple[int, int, list[Any]]]]:
        """(sender, late outcome) of every deferred command given back since the last call."""
        late, self.moved_late = self.moved_late, []
        return late

    # Webhooks and model calls ----------------------------------------------------

    def _suspend(
        self,
        conversation: Conversation,
        suspended: Suspended,
        origin: Origin,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Make the call ``suspended`` waits on; whether it was answered at once (a model call
        with no provider, the budget spent or cancelled: the caller resumes the turn itself).
        ``cancel``: the command's, from an earlier call of its turn or from its caller while it
        was queued (a generation cancelled then leaves the rest of the turn none); ``deadline``:
        its caller's (a model call ends by it)."""
        if suspended.call.to_model:
            cancel = cancel or threading.Event()
            future = self._generate(conversation.key, suspended, origin, cancel, deadline)
        else:
            future = self.webhooks.call(suspended.call.name, suspended.pending.body)
        conversation.waiting = _Waiting(suspended, origin, future, time.time(), cancel, deadline)
        self.waiting.add(conversation)
        answered_at_once = suspended.call.to_model and future.done()
        if self.on_webhook_done is not None and not answered_at_once:
            callback = self.on_webhook_done
            future.add_done_callback(lambda _: callback())
        return answered_at_once

    def _generate(
        self,
        key: ConversationKey,
        suspended: Suspended,
        origin: Origin,
        cancel: threading.Event,
        deadline: float | None,
    ) -> Future[ModelResult]:
        """Ask the model, within the tenant's budget and by the caller's deadline; what the call
        spends is counted after it."""
        if cancel.is_set():
            return answered(failure(CANCELLED, "the turn's generation was cancelled", chunks=0))
        within_s = None if deadline is None else deadline - time.perf_counter()
        if within_s is not None and within_s <= 0:
            return answered(failure(CANCELLED, "the caller's deadline passed before the call", chunks=0))
        call = suspended.call
        limit = self.settings.models.budget.limit(key.tenant_id)
        if limit and self.models.configured and self._tokens_used(key.tenant_id) >= limit:
            refused = failure(
                BUDGET, f"tenant {key.tenant_id!r} has spent its {limit} tokens for today", chunks=0
            )
            self._model_call_finished(key, call.name, answered(refused))
            return answered(refused)
        sink = self._delta_sink(suspended, origin)
        future = self.models.call(call.name, call.body, sink, cancel, within_s=within_s, kind=call.kind)
        future.add_done_callback(lambda finished: self._model_call_finished(key, call.name, finished))
        return future

    def _delta_sink(self, suspended: Suspended, origin: Origin) -> ChunkSink | None:
        """Where the chunks of ``suspended``'s generation go: ``on_delta``, numbered from 0 in a
        stream whose id is the command's and the call's (the same if the turn is run again)."""
        on_delta = self.on_delta
        if on_delta is None or not suspended.command.wants_deltas or not suspended.call.body.get("say"):
            return None
        stream_id = f"{suspended.command.message_id}/{suspended.call.key}"
        numbers = itertools.count()
        return lambda text: on_delta(origin, stream_id, next(numbers), text)

    def cancel_generation(self, sender: Any, batch_id: int, position: int) -> bool:
        """The caller of the command at ``position`` of batch ``batch_id`` from ``sender`` gave it
        up: stop its model calls. One its turn waits on ends as a failure ("cancelled"), and the
        turn takes its failure route (a model recognizer's call: the message is read without
        it). A command still queued behind another turn is marked: it runs in its turn all the
        same (it was accepted, and is applied once), but every model call of that turn is
        answered at once as cancelled, and nothing is asked of the model; a command whose turn
        waits on a webhook is marked alike (the webhook call runs on, the turn's later model calls
        are answered as cancelled). False if that command waits on nothing and is not queued
        (it may have finished)."""
        wanted = (sender, batch_id, position)
        for conversation in self.waiting:
            waiting: _Waiting = conversation.waiting
            origin = waiting.origin
            if (origin.sender, origin.batch_id, origin.index) == wanted:
                # A webhook runs on; the mark stays with the command (_resume) for what follows.
                waiting.cancel = waiting.cancel or threading.Event()
                waiting.cancel.set()
                return True
            mailbox = conversation.mailbox
            for i, queued in enumerate(mailbox):
                if (queued.origin.sender, queued.origin.batch_id, queued.origin.index) == wanted:
                    cancelled = threading.Event()
                    cancelled.set()
                    mailbox[i] = replace(queued, cancel=cancelled)
                    return True
        return False

    def _tokens_used(self, tenant: str) -> int:
        """What ``tenant`` spent today: the store's count, and what this shard has yet to add."""
        day = utc_day(time.time())
        pending = sum(n for t, d, n in list(self._spent) if t == tenant and d == day)
        try:
            return self.store.model_tokens_used(tenant, day) + pending
        except Exception as exc:  # the call is not refused for it: the turn's own write will tell
            log.warning("shard %d: reading tenant %r's token count failed: %s", self.index, tenant, exc)
            return pending

    def _model_call_finished(self, key: ConversationKey, name: str, future: Future[ModelResult]) -> None:
        """On the call's thread: keep what it spent for the store (``_record_spending``), count it
        for the figures and log it if it failed (``actors.model_calls``)."""
        if future.cancelled():
            return
        result = future.result()
        tokens = tokens_spent(result)
        if tokens:
            self._spent.append((key.tenant_id, utc_day(time.time()), tokens))
        provider = self.models.provider(name)
        self.model_calls.finished(key, provider.name if provider is not None else name, result)

    def _record_spending(self) -> None:
        """Add what finished model calls spent to the store's counts (kept for later if it fails)."""
        if not self._spent:
            return
        spent: dict[tuple[str, str], int] = {}
        while self._spent:
            tenant, day, tokens = self._spent.popleft()
            spent[(tenant, day)] = spent.get((tenant, day), 0) + tokens
        try:
            self.store.add_model_tokens(spent)
        except Exception as exc:
            log.warning("shard %d: adding model tokens to the store failed: %s", self.index, exc)
            self._spent.extend((tenant, day, tokens) for (tenant, day), tokens in spent.items())

    @property
    def has_waiting(self) -> bool:
        return bool(self.waiting)

    def finish_webhooks(self) -> list[tuple[Any, tuple[int, int, list[Any]]]]:
        """Finish the turns whose webhook (or model call) answered; return (sender, late outcome) pairs."""
        self._record_spending()
        # A cancelled call was dropped unstarted by a pool shutting down: its turn is left as it is.
        ready = [c for c in self.waiting if c.waiting.future.done() and not c.waiting.future.cancelled()]
        if not ready:
            return []
        done = _Round()
        for conversation in ready:
            self._resume(conversation, conversation.waiting.future.result(), done)
        return self._finish_late(done)

    def abandon_webhook(self, key: ConversationKey, who: str, reason: str) -> Abandoned:
        """Give up the webhook call ``key``'s turn waits on: the turn runs on at once with a failed
        result that names ``who`` (its flow's failure route), its mailbox drains, and the outcomes
        go back as late outcomes (``take_moved``). The call itself runs on until its timeout, on
        its thread; its answer is ignored (the conversation no longer waits on that future)."""
        conversation = self.residents.get(key)
        if conversation is None or conversation.waiting is None:
            return Abandoned(False, "its turn waits on no webhook (it may have answered meanwhile)")
        waiting: _Waiting = conversation.waiting
        name = waiting.suspended.call.label
        if waiting.cancel is not None:  # a generation: no use writing what nobody will read
            waiting.cancel.set()
        error = f"abandoned by {who}" + (f": {reason}" if reason else "")
        result: WebhookResult = {"ok": False, "error": error, "abandoned_by": who, "reason": ABANDONED}
        log.warning("shard %d: %s: %s %s", self.index, key, _described(waiting.suspended.call), error)
        done = _Round()
        self._resume(conversation, result, done)
        self.moved_late.extend(self._finish_late(done))  # written first: the outcome is as stored
        outcome = done.outcomes[0] if done.outcomes else None
        if outcome is None:
            return Abandoned(True, "abandoned; the turn went on to wait on another webhook", name)
        if outcome[0] == ERROR:
            return Abandoned(True, f"abandoned; the turn failed: {outcome[2]}", name)
        reply = codec.unpack_reply(outcome[1])
        if not isinstance(reply, TurnResult):
            return Abandoned(True, "abandoned", name)
        return Abandoned(
            True,
            f"abandoned; the turn took its failure route to state {reply.state.current_state!r}",
            name,
            reply.state.current_state,
            tuple(reply.actions_performed),
        )

    def _resume(self, conversation: Conversation, result: WebhookResult, done: _Round) -> None:
        """Run ``conversation``'s suspended turn on with ``result``, then what waits behind it."""
        waiting: _Waiting = conversation.waiting
        conversation.waiting = None
        self.waiting.discard(conversation)
        suspended = waiting.suspended
        outcome = conversation.apply(
            suspended.command,
            self.flows,
            self.store,
            record=self._recording,
            resume=suspended,
            webhook_result=result,
            count=self.settings.analytics,
        )
        self._settle(conversation, outcome, waiting.origin, done, waiting.cancel, waiting.deadline)
        while conversation.waiting is None and conversation.mailbox:
            queued = conversation.mailbox.popleft()
            applied = self._apply(conversation, queued.command, queued.arrived)
            self._settle(conversation, applied, queued.origin, done, queued.cancel, queued.deadline)

    def _finish_late(self, done: _Round) -> list[tuple[Any, tuple[int, int, list[Any]]]]:
        if done.touched:
            self._persist(done)
        return [
            (origin.sender, (origin.batch_id, origin.index, outcome))
            for origin, outcome in zip(done.origins, done.outcomes, strict=True)
            if outcome is not None
        ]

    def expire_queued(self) -> list[tuple[Any, tuple[int, int, list[Any]]]]:
        """Drop what waits behind a webhook past its caller's deadline: each is answered
        DEADLINE_EXCEEDED now, as a late outcome, and is never run (the caller is told it was not
        done while it can still hear it, instead of the command running once the webhook answers)."""
        now = time.perf_counter()
        late: list[tuple[Any, tuple[int, int, list[Any]]]] = []
        for conversation in self.waiting:
            mailbox = conversation.mailbox
            if not any(_expired(q, now) for q in mailbox):
                continue
            call = _described(conversation.waiting.suspended.call)
            dropped = error_outcome(
                DeadlineExceeded(
                    f"not done: the deadline passed while it waited behind the {call}"
                    " its conversation's turn waits on; nothing was changed"
                )
            )
            kept = [q for q in mailbox if not _expired(q, now)]
            for q in mailbox:
                if _expired(q, now):
                    late.append((q.origin.sender, (q.origin.batch_id, q.origin.index, dropped)))
            mailbox.clear()
            mailbox.extend(kept)
        return late

    # Residents -----------------------------------------------------------------

    def _activate(self, key: ConversationKey) -> Conversation:
        conversation = self.residents.get(key)
        if conversation is not None:
            self.residents.move_to_end(key)
            return conversation
        try:
            stored = self.store.load(key)
        except Exception as exc:
            log.warning("shard %d: loading %s failed: %s: %s", self.index, key, type(exc).__name__, exc)
            raise Unavailable(f"store read failed: {type(exc).__name__}") from exc
        conversation = Conversation.activate(key, stored)
        self.residents[key] = conversation
        self.activations += 1
        self._note("activation", key)
        return conversation

    def _passivate_beyond_limit(self) -> None:
        excess = len(self.residents) - self.settings.resident_limit
        skipped = 0
        while excess > 0 and skipped < len(self.residents):
            key, conversation = next(iter(self.residents.items()))
            if conversation.waiting is not None or conversation.mailbox:  # its work is in memory
                self.residents.move_to_end(key)
                skipped += 1
                continue
            del self.residents[key]
            self.passivations += 1
            self._note("passivation", key)
            excess -= 1

    def passivate(self, key: ConversationKey) -> tuple[bool, str]:
        conversation = self.residents.get(key)
        if conversation is None:
            return False, "not resident"
        if conversation.waiting is not None or conversation.mailbox:
            return False, "it has work waiting (a webhook or queued messages)"
        del self.residents[key]
        self.passivations += 1
        self._note("passivation", key)
        return True, "passivated; its state is in the store"

    def _note(self, event: str, key: ConversationKey) -> None:
        if self._lifecycle_wanted and len(self.lifecycle) < MAX_LIFECYCLE_EVENTS:
            self.lifecycle.append([event, key.tenant_id, key.conversation_id])

    # Control ---------------------------------------------------------------------

    def reload_flows(self) -> FlowReload:
        """Load the flow files again. New versions become the latest; conversations on an
        older version keep it until they end (the registry keeps every version)."""
        try:
            flows, problems = load_flows(self.settings.flow_dirs, providers=self.settings.models.names)
        except Exception as exc:  # keep serving the flows it had
            log.exception("shard %d: flow reload failed", self.index)
            return FlowReload([], [], [f"shard {self.index}: {type(exc).__name__}: {exc}"])
        self.flows.add(flows)
        return FlowReload([f"{f.flow_id}@{f.version}" for f in flows], [str(p) for p in problems], [])

    def status(self) -> ShardStatus:
        """The shard's figures; the store is probed with a write while its last write failed."""
        self.model_calls.flush()
        store_ok, latency_ms, error = True, 0.0, ""
        try:
            latency_ms = (self.store.probe_write() if self.last_write_error else self.store.ping()) * 1000.0
            self.last_write_error = ""
        except Exception as exc:
            store_ok, error = False, f"{type(exc).__name__}: {exc}"
            self.last_write_error = self.last_write_error or error
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        return ShardStatus(
            index=self.index,
            generation=self.generation,
            pid=os.getpid(),
            started_at=self.started_at,
            resident_conversations=len(self.residents),
            resident_limit=self.settings.resident_limit,
            activations=self.activations,
            passivations=self.passivations,
            commands=self.commands,
            batches=self.rounds,
            store_ok=store_ok,
            store_latency_ms=latency_ms,
            store_error=error,
            rss_bytes=rss,
            cpu_seconds=cpu.user + cpu.system,
            waiting_on_webhooks=len(self.waiting),
            host=self.settings.host,
            held=tuple(sorted(self.ownership.held.items())),
            ownership_error=self.ownership.last_error,
            analytics=tuple(
                (f, t, fl, s, w, o, v) for (f, t, fl, s, w, o), v in self.analytics.totals.items()
            ),
            models=self.model_calls.counts.totals(),
        )


def _described(call: WebhookCall) -> str:
    """The call a turn waits on, for a log line or an error: ``webhook 'price'``, ``model call
    'generate:default'``."""
    return f"{'model call' if call.to_model else 'webhook'} {call.label!r}"


def _expired(queued: Queued, now: float) -> bool:
    deadline = queued.deadline
    return deadline is not None and now > deadline


def _deadline_of(command: Command, arrived: float) -> float | None:
    """When ``command``'s caller stops waiting (a ``time.perf_counter()``; None: it has no deadline)."""
    return None if command.budget_s is None else arrived + command.budget_s


def _may_make_event(command: Command) -> bool:
    """Whether ``command`` is a person's message or an operator's action (see ``_event_of``)."""
    kind = command.kind
    if kind is CommandKind.TURN:  # a resume's system message
        body = command.body
        return isinstance(body, InboundMessage) and body.user_id.startswith(OPERATOR_PREFIX)
    if kind is CommandKind.RESET:
        return command.message_id.startswith(OPERATOR_PREFIX)
    return kind in (CommandKind.AGENT_MESSAGE, CommandKind.FORCE_STATE)


def _event_of(command: Command, outcome: list[Any] | Suspended) -> ConversationEvent | None:
    """The event an applied operator action or person's message makes (None: it makes none).
    A reset is an operator's when the Admin API sent it (its message id says so); a forced state
    only ever is; a turn is when it is a resume's system message."""
    if not isinstance(outcome, list) or outcome[0] != DONE:  # failed, waits, or a repeat
        return None
    kind, key = command.kind, command.key
    if kind is CommandKind.AGENT_MESSAGE and isinstance(command.body, InboundMessage):
        data: dict[str, Any] = {
            "agent": command.body.user_id.removeprefix(AGENT_PREFIX),
            "text": command.body.content.text,
            "message_id": command.message_id.removeprefix(CLIENT_KEY_PREFIX),
        }
        return ConversationEvent(key, "agent_message", data)
    reply = codec.unpack_reply(outcome[1])
    if kind is CommandKind.RESET and isinstance(reply, ResetResult):
        data = {"action": "reset", "state": reply.state.current_state, "reason": command.said}
    elif kind is CommandKind.FORCE_STATE and isinstance(reply, StateResult):
        data = {"action": "force_state", "state": reply.state.current_state, "reason": ""}
    elif kind is CommandKind.TURN and isinstance(reply, TurnResult):
        resumed = "handoff_resumed" in reply.actions_performed
        data = {"action": "resume", "state": reply.state.current_state, "reason": "", "resumed": resumed}
    else:
        return None
    return ConversationEvent(key, "operator_action", data)
