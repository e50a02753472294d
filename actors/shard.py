"""A shard: one OS process hosting many conversation actors.

:class:`Shard` holds the logic and is a plain object (unit-testable without
Thespian); :class:`ShardActor` is the thin Thespian actor around it.

A shard receives a batch of commands, runs them in order, each on its
conversation actor (activated from the store on first use), writes every changed
conversation in one transaction, and only then answers. Resident conversations
are bounded: the least recently used are passivated (dropped from memory; their
state is already in the store).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import Any

import psutil
from thespian.actors import Actor, ActorExitRequest

from ..runtime import telemetry
from ..runtime.errors import ConfabError, InternalError, Unavailable
from ..runtime.flows import FlowRegistry
from ..runtime.flows.catalog import load_flows
from ..runtime.model import ConversationKey
from ..runtime.store import Store
from ..runtime.wire import CommandBatch, Outcome, OutcomeBatch, outcome_to_wire
from .conversation import ConversationActor
from .messages import FlowsReloaded, ReloadFlows, ShardInit, ShardSettings, ShardStatistics, StatusRequest

log = logging.getLogger(__name__)


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
        self.residents: OrderedDict[ConversationKey, ConversationActor] = OrderedDict()
        self.started_at = time.time()
        self.activations = 0
        self.passivations = 0
        self.commands = 0
        self.batches = 0
        self._process = psutil.Process()

    def close(self) -> None:
        self.store.close()

    def run_batch(self, data: bytes) -> bytes:
        """Run an encoded :class:`CommandBatch`; return the encoded :class:`OutcomeBatch`."""
        batch = CommandBatch.decode(data)
        try:
            with telemetry.batch_span(self.index, batch):
                outcomes = self._run(batch)
        except Exception:  # never let Thespian retry a batch: answer every command instead
            log.exception("shard %d: batch %d failed", self.index, batch.batch_id)
            failure = outcome_to_wire(InternalError("shard failed to run the batch"))
            outcomes = [failure] * len(batch.commands)
        return OutcomeBatch(batch.batch_id, outcomes).encode()

    def _run(self, batch: CommandBatch) -> list[list[Any]]:
        received = time.perf_counter()
        outcomes: list[Outcome] = []
        touched: dict[ConversationKey, ConversationActor] = {}
        first_staged: dict[ConversationKey, int] = {}
        for i, command in enumerate(batch.commands):
            conversation = self._activate(command.key)
            waited_ms = (time.perf_counter() - received) * 1000.0
            with telemetry.turn_span(command) as span:
                outcome = conversation.apply(command, self.flows, self.store)
                if span is not None:
                    telemetry.note_outcome(span, outcome)
            if hasattr(outcome, "queue_time_ms"):
                outcome.queue_time_ms = waited_ms
            outcomes.append(outcome)
            if conversation.staged:
                touched[command.key] = conversation
                first_staged.setdefault(command.key, i)
            elif not conversation.exists:  # e.g. a lookup of an unknown id: keep no trace
                del self.residents[command.key]
        self.commands += len(batch.commands)
        self.batches += 1
        if touched:
            self._persist(batch, outcomes, touched, first_staged)
        self._passivate_beyond_limit()
        return [outcome_to_wire(o) for o in outcomes]

    def _persist(
        self,
        batch: CommandBatch,
        outcomes: list[Outcome],
        touched: dict[ConversationKey, ConversationActor],
        first_staged: dict[ConversationKey, int],
    ) -> None:
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
            for i, command in enumerate(batch.commands):
                first = first_staged.get(command.key)
                if first is not None and i >= first and not isinstance(outcomes[i], ConfabError):
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
        return conversation

    def _passivate_beyond_limit(self) -> None:
        excess = len(self.residents) - self.settings.resident_limit
        for _ in range(max(0, excess)):
            self.residents.popitem(last=False)
            self.passivations += 1

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
        )


class ShardActor(Actor):
    """Thespian's view of a shard: batches in, outcomes out, nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shard: Shard | None = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, bytes):
            if self.shard is None:
                batch = CommandBatch.decode(message)
                failure = outcome_to_wire(Unavailable("shard is not initialised"))
                reply = OutcomeBatch(batch.batch_id, [failure] * len(batch.commands)).encode()
            else:
                reply = self.shard.run_batch(message)
            self.send(sender, reply)
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
        elif isinstance(message, ActorExitRequest) and self.shard is not None:
            self.shard.close()
            telemetry.shutdown()  # flush the spans still queued for export
            self.shard = None
