"""A shard: one OS process hosting many conversation actors.

:class:`Shard` holds the logic and is a plain object (unit-testable without
Thespian); :class:`ShardActor` is the thin Thespian actor around it.

A shard receives a batch of commands, runs them in order, each on its
conversation actor (activated from the store on first use), writes every changed
conversation in one transaction, and only then answers. Resident conversations
are bounded: the least recently used are passivated (dropped from memory; their
state is already in the store).

A turn that reaches a webhook is suspended: the call runs on a thread, the batch
is answered with the command marked deferred, and the conversation's later commands
wait in its mailbox while other conversations carry on. When the call answers
(:meth:`Shard.poll_webhooks`, driven by the actor's wakeups) the turn runs again
with the result, the mailbox drains, and the outcomes go to the edge as LateOutcomes.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import msgpack
import psutil
from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from ..runtime import telemetry
from ..runtime.errors import ConfabError, InternalError, Unavailable
from ..runtime.flows import FlowRegistry
from ..runtime.flows.catalog import load_flows
from ..runtime.model import ConversationKey, InboundMessage
from ..runtime.store import Store
from ..runtime.webhooks import WebhookClient, WebhookResult
from ..runtime.wire import (
    DEFERRED_WIRE,
    Command,
    CommandBatch,
    LateOutcomes,
    Outcome,
    OutcomeBatch,
    outcome_to_wire,
)
from .conversation import ConversationActor, Suspended
from .messages import (
    FlowsReloaded,
    Inspection,
    InspectRequest,
    Passivated,
    PassivateRequest,
    ReloadFlows,
    ResidentAmong,
    ScanStored,
    ShardInit,
    ShardSettings,
    ShardStatistics,
    StatusRequest,
    StoredPage,
)

log = logging.getLogger(__name__)

# Lifecycle events carried back by one batch reply at most (an operator's view, not a log).
MAX_LIFECYCLE_EVENTS = 1000
# How often a shard with turns waiting on webhooks looks for answers.
WEBHOOK_POLL = timedelta(milliseconds=20)


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a deferred command came from: its late outcome goes back there."""

    sender: Any
    batch_id: int
    index: int


@dataclass(slots=True)
class _Finished:
    """The outcomes one poll of webhooks produced, and what they staged."""

    origins: list[_Origin] = field(default_factory=list)
    keys: list[ConversationKey] = field(default_factory=list)
    outcomes: list[Outcome | None] = field(default_factory=list)
    touched: dict[ConversationKey, ConversationActor] = field(default_factory=dict)
    first_staged: dict[ConversationKey, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Waiting:
    suspended: Suspended
    origin: _Origin
    future: Future[WebhookResult]


class Shard:
    def __init__(self, index: int, generation: int, settings: ShardSettings) -> None:
        self.index = index
        self.generation = generation
        self.settings = settings
        self.store = Store(
            settings.store_path, synchronous=settings.synchronous, turns_kept=settings.turns_kept
        )
        flows, problems = load_flows(settings.flow_dirs)
        for problem in problems:  # the edge reported these at start too; the valid flows still run
            log.error("shard %d: flow file skipped: %s", index, problem)
        self.flows = FlowRegistry(flows, settings.default_flow)
        self.webhooks = WebhookClient(settings.webhooks)
        self.waiting: set[ConversationActor] = set()  # turns suspended on a webhook
        # Activations and passivations since the last batch, kept only while the edge asks.
        self.lifecycle: list[list[str]] = []
        self._lifecycle_wanted = False
        self.residents: OrderedDict[ConversationKey, ConversationActor] = OrderedDict()
        self.started_at = time.time()
        self.activations = 0
        self.passivations = 0
        self.commands = 0
        self.batches = 0
        self._process = psutil.Process()

    def close(self) -> None:
        self.webhooks.close()
        self.store.close()

    def run_batch(self, data: bytes, sender: Any = None) -> bytes:
        """Run an encoded :class:`CommandBatch`; return the encoded :class:`OutcomeBatch`.

        ``sender`` is where late outcomes of deferred commands are to go.
        """
        batch = CommandBatch.decode(data)
        self._lifecycle_wanted = batch.want_lifecycle
        try:
            with telemetry.batch_span(self.index, batch):
                outcomes = self._run(batch, sender)
        except Exception:  # never let Thespian retry a batch: answer every command instead
            log.exception("shard %d: batch %d failed", self.index, batch.batch_id)
            failure = outcome_to_wire(InternalError("shard failed to run the batch"))
            outcomes = [failure] * len(batch.commands)
        lifecycle, self.lifecycle = self.lifecycle, []
        return OutcomeBatch(batch.batch_id, outcomes, lifecycle).encode()

    def _run(self, batch: CommandBatch, sender: Any) -> list[list[Any]]:
        received = time.perf_counter()
        outcomes: list[Outcome | None] = []  # None: deferred
        touched: dict[ConversationKey, ConversationActor] = {}
        first_staged: dict[ConversationKey, int] = {}
        for i, command in enumerate(batch.commands):
            conversation = self._activate(command.key)
            origin = _Origin(sender, batch.batch_id, i)
            if conversation.waiting is not None:  # behind a webhook: wait in order
                conversation.mailbox.append((origin, command))
                outcomes.append(None)
                continue
            waited_ms = (time.perf_counter() - received) * 1000.0
            with telemetry.turn_span(command) as span:
                outcome = conversation.apply(command, self.flows, self.store)
                if span is not None and not isinstance(outcome, Suspended):
                    telemetry.note_outcome(span, outcome)
            if isinstance(outcome, Suspended):
                self._suspend(conversation, outcome, origin)
                outcomes.append(None)
                continue
            if hasattr(outcome, "queue_time_ms"):
                outcome.queue_time_ms = waited_ms
            outcomes.append(outcome)
            if conversation.staged:
                touched[command.key] = conversation
                first_staged.setdefault(command.key, i)
            elif not conversation.exists and conversation.waiting is None:
                del self.residents[command.key]  # e.g. a lookup of an unknown id: keep no trace
        self.commands += len(batch.commands)
        self.batches += 1
        if touched:
            self._persist([c.key for c in batch.commands], outcomes, touched, first_staged)
        self._passivate_beyond_limit()
        return [DEFERRED_WIRE if o is None else outcome_to_wire(o) for o in outcomes]

    # Webhooks ------------------------------------------------------------------

    def _suspend(self, conversation: ConversationActor, suspended: Suspended, origin: _Origin) -> None:
        body = {
            **suspended.call.body,
            "conversation": {
                "tenant_id": conversation.key.tenant_id,
                "conversation_id": conversation.key.conversation_id,
            },
        }
        conversation.waiting = _Waiting(suspended, origin, self.webhooks.call(suspended.call.name, body))
        self.waiting.add(conversation)

    def poll_webhooks(self) -> list[tuple[Any, tuple[int, int, list[Any]]]]:
        """Finish the turns whose webhook answered; return (sender, late outcome) pairs."""
        ready = [c for c in self.waiting if c.waiting.future.done()]
        if not ready:
            return []
        done = _Finished()
        for conversation in ready:
            waiting, conversation.waiting = conversation.waiting, None
            self.waiting.discard(conversation)
            suspended = waiting.suspended
            outcome = conversation.apply(
                suspended.command,
                self.flows,
                self.store,
                resume=suspended,
                webhook_result=waiting.future.result(),
            )
            self._settle(conversation, outcome, waiting.origin, done)
            while conversation.waiting is None and conversation.mailbox:
                origin, command = conversation.mailbox.popleft()
                self._settle(conversation, conversation.apply(command, self.flows, self.store), origin, done)
        if done.touched:
            self._persist(done.keys, done.outcomes, done.touched, done.first_staged)
        return [
            (origin.sender, (origin.batch_id, origin.index, outcome_to_wire(outcome)))
            for origin, outcome in zip(done.origins, done.outcomes, strict=True)
            if outcome is not None
        ]

    def _settle(
        self, conversation: ConversationActor, outcome: Outcome | Suspended, origin: _Origin, done: _Finished
    ) -> None:
        if isinstance(outcome, Suspended):
            self._suspend(conversation, outcome, origin)
            return
        done.origins.append(origin)
        done.keys.append(conversation.key)
        done.outcomes.append(outcome)
        if conversation.staged:
            done.touched[conversation.key] = conversation
            done.first_staged.setdefault(conversation.key, len(done.outcomes) - 1)

    @property
    def has_waiting(self) -> bool:
        return bool(self.waiting)

    def _persist(
        self,
        keys: list[ConversationKey],
        outcomes: list[Outcome | None],
        touched: dict[ConversationKey, ConversationActor],
        first_staged: dict[ConversationKey, int],
    ) -> None:
        """Write what ``touched`` staged; on failure withdraw the answers that showed it.

        ``keys[i]`` is the conversation ``outcomes[i]`` answers for (None: deferred).
        """
        try:
            with telemetry.store_span(len(touched)):
                self.store.write([c.pending_write() for c in touched.values()])
        except Exception as exc:
            log.exception("shard %d: store write failed", self.index)
            for conversation in touched.values():
                conversation.rollback()
                if not conversation.exists:
                    self.residents.pop(conversation.key, None)
            failure = Unavailable(f"store write failed: {type(exc).__name__}")
            # Answers given after a conversation's first staged change may show state that was
            # rolled back: withdraw them. Earlier reads saw committed state and stand.
            for i, key in enumerate(keys):
                first = first_staged.get(key)
                answered = outcomes[i]
                if (
                    first is not None
                    and i >= first
                    and answered is not None
                    and not isinstance(answered, ConfabError)
                ):
                    outcomes[i] = failure
            return
        for conversation in touched.values():
            conversation.commit()

    def _activate(self, key: ConversationKey) -> ConversationActor:
        conversation = self.residents.get(key)
        if conversation is not None:
            self.residents.move_to_end(key)
            return conversation
        conversation = ConversationActor.activate(key, self.store.load(key), self.settings.turns_kept)
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

    def reload_flows(self) -> FlowsReloaded:
        """Load the flow files again. New versions become the latest; conversations on an
        older version keep it until they end (the registry keeps every version)."""
        try:
            flows, problems = load_flows(self.settings.flow_dirs)
        except Exception as exc:  # keep serving the flows it had
            log.exception("shard %d: flow reload failed", self.index)
            return FlowsReloaded(self.index, (), (f"reload failed: {type(exc).__name__}: {exc}",))
        self.flows.add(flows)
        return FlowsReloaded(
            self.index, tuple((f.flow_id, f.version) for f in flows), tuple(str(p) for p in problems)
        )

    def inspect(self, request: InspectRequest) -> Inspection:
        """One conversation as it is now, without activating it."""
        key = ConversationKey(request.tenant_id, request.conversation_id)
        conversation = self.residents.get(key)
        if conversation is not None:
            packed = conversation.state
        else:
            stored = self.store.load(key)
            packed = stored.state if stored is not None else None
        state = msgpack.unpackb(packed) if packed is not None else None
        queued: list[tuple[str, str, str]] = []
        webhook = ""
        if conversation is not None:
            commands = [o.suspended.command for o in [conversation.waiting] if o is not None]
            commands += [command for _, command in conversation.mailbox]
            queued = [(c.message_id, c.kind.name.lower(), _text_of(c)) for c in commands]
            if conversation.waiting is not None:
                webhook = conversation.waiting.suspended.call.name
        turns = self.store.recent_turns(key, max(0, request.last_turns)) if state is not None else []
        return Inspection(
            exists=state is not None,
            resident=conversation is not None,
            state=state,
            queued=tuple(queued),
            webhook_in_flight=webhook,
            turns=tuple(turns),
        )

    def scan_stored(self, request: ScanStored) -> StoredPage:
        after = ConversationKey(*request.after) if request.after else None
        rows = self.store.scan(after, request.tenant_id, request.limit)
        return StoredPage(tuple((k.tenant_id, k.conversation_id, state, at) for k, state, at in rows))

    def passivate(self, request: PassivateRequest) -> Passivated:
        key = ConversationKey(request.tenant_id, request.conversation_id)
        conversation = self.residents.get(key)
        if conversation is None:
            return Passivated(False, "not resident")
        if conversation.waiting is not None or conversation.mailbox:
            return Passivated(False, "it has work waiting (a webhook or queued messages)")
        del self.residents[key]
        self.passivations += 1
        self._note("passivation", key)
        return Passivated(True, "passivated; its state is in the store")

    def _note(self, event: str, key: ConversationKey) -> None:
        if self._lifecycle_wanted and len(self.lifecycle) < MAX_LIFECYCLE_EVENTS:
            self.lifecycle.append([event, key.tenant_id, key.conversation_id])

    def statistics(self) -> ShardStatistics:
        store_ok, latency_ms, error = True, 0.0, ""
        try:
            latency_ms = self.store.ping() * 1000.0
        except Exception as exc:
            store_ok, error = False, f"{type(exc).__name__}: {exc}"
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        return ShardStatistics(
            index=self.index,
            generation=self.generation,
            pid=os.getpid(),
            started_at=self.started_at,
            resident_conversations=len(self.residents),
            resident_limit=self.settings.resident_limit,
            activations=self.activations,
            passivations=self.passivations,
            commands=self.commands,
            batches=self.batches,
            store_ok=store_ok,
            store_latency_ms=latency_ms,
            store_error=error,
            rss_bytes=rss,
            cpu_seconds=cpu.user + cpu.system,
            waiting_on_webhooks=len(self.waiting),
        )


class ShardActor(Actor):
    """Thespian's view of a shard: batches in, outcomes out, nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shard: Shard | None = None
        self._polling = False  # a wakeup is scheduled

    def _poll_soon(self) -> None:
        # Webhook answers arrive on other threads; Thespian handlers run only on messages,
        # so the actor wakes itself up to look while any turn is waiting.
        if self.shard is not None and self.shard.has_waiting and not self._polling:
            self._polling = True
            self.wakeupAfter(WEBHOOK_POLL)

    def _deliver_late(self, late: list[tuple[Any, tuple[int, int, list[Any]]]]) -> None:
        # One message per sender (actor addresses compare equal but are not hashable).
        by_sender: list[tuple[Any, list[tuple[int, int, list[Any]]]]] = []
        for sender, entry in late:
            for known, entries in by_sender:
                if known == sender:
                    entries.append(entry)
                    break
            else:
                by_sender.append((sender, [entry]))
        for sender, entries in by_sender:
            if sender is not None:
                self.send(sender, LateOutcomes(entries).encode())

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, bytes):
            if self.shard is None:
                batch = CommandBatch.decode(message)
                failure = outcome_to_wire(Unavailable("shard is not initialised"))
                reply = OutcomeBatch(batch.batch_id, [failure] * len(batch.commands)).encode()
            else:
                reply = self.shard.run_batch(message, sender)
                self._poll_soon()
            self.send(sender, reply)
        elif isinstance(message, WakeupMessage):
            self._polling = False
            if self.shard is not None:
                try:
                    self._deliver_late(self.shard.poll_webhooks())
                except Exception:  # never let Thespian retry: the edge times the requests out
                    log.exception("shard %d: finishing webhook turns failed", self.shard.index)
                self._poll_soon()
        elif isinstance(message, ShardInit):
            try:
                # Each shard process exports its own spans (exporter threads do not survive a fork).
                telemetry.configure_tracing("confab-shard", {"confab.shard": message.index})
                self.shard = Shard(message.index, message.generation, message.settings)
            except Exception:  # answered as UNAVAILABLE per batch; health shows the shard down
                log.exception("shard %d: could not start", message.index)
        elif isinstance(message, StatusRequest) and self.shard is not None:
            self.send(sender, self.shard.statistics())
        elif isinstance(message, ReloadFlows) and self.shard is not None:
            self.send(sender, self.shard.reload_flows())
        elif isinstance(message, InspectRequest) and self.shard is not None:
            self.send(sender, self.shard.inspect(message))
        elif isinstance(message, PassivateRequest) and self.shard is not None:
            self.send(sender, self.shard.passivate(message))
        elif isinstance(message, ScanStored) and self.shard is not None:
            self.send(sender, self.shard.scan_stored(message))
        elif isinstance(message, ResidentAmong) and self.shard is not None:
            resident = self.shard.residents
            self.send(
                sender, ResidentAmong(tuple(k for k in message.keys if ConversationKey(*k) in resident))
            )
        elif isinstance(message, ActorExitRequest) and self.shard is not None:
            self.shard.close()
            telemetry.shutdown()  # flush the spans still queued for export
            self.shard = None


def _text_of(command: Command) -> str:
    body = command.body
    if isinstance(body, InboundMessage):
        return body.content.text or body.content.payload
    return str(body or "")
