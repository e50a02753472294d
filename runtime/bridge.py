"""The bridge between the asyncio edge and the Thespian shards.

Thespian has no asyncio support and its calls block, so each shard gets a
:class:`ShardLink`: a queue filled by the event loop and one thread that owns a
private Thespian context (contexts must not be shared between threads: replies
would go to the wrong caller).

Coalescing is the point of the design. A Thespian round trip costs the calling
process ~0.5 ms of CPU whatever it carries, so a link keeps exactly one batch in
flight per shard and sends everything that queued up meanwhile as the next batch:
under load, many requests share one round trip; when idle, a request goes out
at once. One batch in flight per shard also keeps each conversation's commands
in arrival order.

Replies are matched by batch id and position, never by arrival: ``ask`` returns
whatever reaches the context next. A batch that goes unanswered is re-sent to
the shard's replacement once the supervisor has started one; the message ids it
carries make the re-send idempotent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..actors.messages import GetDirectory, ShardDirectory, ShardStatistics, StatusRequest
from .errors import ConfabError, DeadlineExceeded, InternalError, Overloaded, Unavailable
from .wire import (
    Command,
    CommandBatch,
    LateOutcomes,
    Outcome,
    OutcomeBatch,
    decode_reply,
    is_deferred,
    outcome_from_wire,
)

log = logging.getLogger(__name__)

# How long a link waits for a reply before checking whether its shard was replaced.
POLL_S = 0.25
DIRECTORY_TIMEOUT_S = 2.0
# While commands wait behind webhooks, how often an idle link listens for their outcomes,
# and how long it waits for them at most.
DEFERRED_POLL_S = 0.01
DEFERRED_TIMEOUT_S = 120.0


@dataclass(slots=True)
class _Pending:
    command: Command
    future: asyncio.Future[Outcome]
    deadline: float | None  # time.monotonic() after which the command must not run


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    shard: int
    queued: int
    in_flight: int
    batches_sent: int
    commands_sent: int
    resends: int
    expired: int
    max_batch: int


class ShardDirectoryView:
    """The edge's copy of the supervisor's :class:`ShardDirectory`, shared by the links."""

    def __init__(self, supervisor: Any, directory: ShardDirectory) -> None:
        self.supervisor = supervisor
        self._directory = directory
        self._lock = threading.Lock()

    @property
    def current(self) -> ShardDirectory:
        return self._directory

    def update(self, directory: ShardDirectory) -> None:
        with self._lock:
            self._directory = directory

    def refresh(self, context: Any) -> ShardDirectory | None:
        """Ask the supervisor for the latest directory with a context of one's own (nothing
        else may arrive on it); None if it does not answer."""
        reply = context.ask(self.supervisor, GetDirectory(), DIRECTORY_TIMEOUT_S)
        if not isinstance(reply, ShardDirectory):
            return None
        self.update(reply)
        return reply


class ShardLink:
    def __init__(
        self,
        index: int,
        system: Any,
        directory: ShardDirectoryView,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int,
        max_queued: int,
        timeout_s: float,
    ) -> None:
        self.index = index
        self._system = system
        self._directory = directory
        self._loop = loop
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._queue: deque[_Pending] = deque()
        # Control messages for the shard (status, flow reload) and who waits for each answer.
        self._control: list[tuple[Any, type, float, asyncio.Future[Any]]] = []
        # Set by the engine: whether to ask the shard for activations and passivations, and
        # who hears about them (called on the event loop).
        self.want_lifecycle: Callable[[], bool] = lambda: False
        self.on_lifecycle: Callable[[int, list[list[str]]], None] | None = None
        # Commands the shard deferred (behind a webhook), by (batch id, position), with when.
        self._deferred: dict[tuple[int, int], tuple[_Pending, float]] = {}
        self._wakeup = threading.Condition()
        self._closing = False
        self._batch_ids = itertools.count(1)
        self._in_flight = 0
        self._batches_sent = 0
        self._commands_sent = 0
        self._resends = 0
        self._expired = 0
        self._largest_batch = 0
        self._thread = threading.Thread(target=self._run, name=f"confab-shard-link-{index}", daemon=True)
        self._thread.start()

    # Called on the event loop -------------------------------------------------

    def submit(self, commands: list[Command], deadline: float | None) -> list[asyncio.Future[Outcome]]:
        """Queue commands (kept in this order); each future resolves to its outcome."""
        futures = [self._loop.create_future() for _ in commands]
        with self._wakeup:
            if self._closing:
                raise Unavailable("the engine is shutting down")
            if len(self._queue) + len(commands) > self._max_queued:
                raise Overloaded(f"shard {self.index} has {len(self._queue)} commands queued")
            self._queue.extend(_Pending(c, f, deadline) for c, f in zip(commands, futures, strict=True))
            self._wakeup.notify()
        return futures

    def request_statistics(self) -> asyncio.Future[ShardStatistics]:
        return self.request_control(StatusRequest(), expect=ShardStatistics, timeout_s=2.0)

    def request_control(self, message: Any, *, expect: type, timeout_s: float) -> asyncio.Future[Any]:
        """Send a control message between batches; the future gets the shard's answer, of type
        ``expect`` (anything else arriving meanwhile is a late answer to something earlier)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._wakeup:
            self._control.append((message, expect, timeout_s, future))
            self._wakeup.notify()
        return future

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            shard=self.index,
            queued=len(self._queue),
            in_flight=self._in_flight,
            batches_sent=self._batches_sent,
            commands_sent=self._commands_sent,
            resends=self._resends,
            expired=self._expired,
            max_batch=self._largest_batch,
        )

    def close(self, timeout: float) -> None:
        """Stop taking commands, finish what is queued, and end the thread."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join(timeout)

    # The link's thread --------------------------------------------------------

    def _run(self) -> None:
        with self._system.private() as context:
            while True:
                with self._wakeup:
                    while not self._queue and not self._control and not self._closing:
                        if self._deferred:  # late outcomes come only when this thread listens
                            self._wakeup.wait(DEFERRED_POLL_S)
                            break
                        self._wakeup.wait()
                    if self._closing and not self._queue and not self._control:
                        self._fail_deferred(Unavailable("the engine stopped before the answer came"))
                        return
                    taken = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                    control, self._control = self._control, []
                for message, expect, timeout_s, future in control:
                    self._answer_control(context, message, expect, timeout_s, future)
                if taken:
                    self._send(context, taken)
                if self._deferred:
                    self._collect_late(context)

    def _send(self, context: Any, taken: list[_Pending]) -> None:
        now = time.monotonic()
        pending: list[_Pending] = []
        expired: list[_Pending] = []
        for p in taken:
            if p.future.cancelled():
                continue
            (expired if p.deadline is not None and p.deadline <= now else pending).append(p)
        if expired:
            self._expired += len(expired)
            error = DeadlineExceeded("the deadline passed before the shard could take the request")
            self._resolve(expired, [error] * len(expired))
        if not pending:
            return
        batch = CommandBatch(next(self._batch_ids), [p.command for p in pending], self.want_lifecycle())
        self._in_flight = len(pending)
        self._batches_sent += 1
        self._commands_sent += len(pending)
        self._largest_batch = max(self._largest_batch, len(pending))
        outcomes: list[Outcome]
        try:
            reply = self._exchange(context, batch)
        except (Unavailable, InternalError) as exc:
            outcomes = [exc] * len(pending)
        except Exception as exc:  # a bug in the link must not strand the waiting requests
            log.exception("shard link %d failed", self.index)
            outcomes = [InternalError(f"shard link failed: {type(exc).__name__}")] * len(pending)
        else:
            if reply.lifecycle and self.on_lifecycle is not None:
                self._loop.call_soon_threadsafe(self.on_lifecycle, self.index, reply.lifecycle)
            answered, outcomes = [], []
            for i, (p, wire) in enumerate(zip(pending, reply.outcomes, strict=True)):
                if is_deferred(wire):  # waiting behind a webhook: answered by a LateOutcomes
                    self._deferred[(batch.batch_id, i)] = (p, time.monotonic())
                else:
                    answered.append(p)
                    outcomes.append(outcome_from_wire(wire))
            pending = answered
        self._in_flight = 0
        self._resolve(pending, outcomes)

    def _settle_late(self, late: LateOutcomes) -> None:
        for batch_id, index, wire in late.entries:
            entry = self._deferred.pop((batch_id, index), None)
            if entry is not None:
                self._resolve([entry[0]], [outcome_from_wire(wire)])

    def _collect_late(self, context: Any) -> None:
        reply = context.listen(0.001)
        while isinstance(reply, bytes):
            decoded = decode_reply(reply)
            if isinstance(decoded, LateOutcomes):
                self._settle_late(decoded)
            reply = context.listen(0.001)
        too_old = time.monotonic() - DEFERRED_TIMEOUT_S
        for key, (p, since) in list(self._deferred.items()):
            if since < too_old:
                del self._deferred[key]
                self._resolve([p], [Unavailable("the shard did not finish the request (webhook)")])

    def _fail_deferred(self, error: ConfabError) -> None:
        if self._deferred:
            self._resolve([p for p, _ in self._deferred.values()], [error] * len(self._deferred))
            self._deferred.clear()

    def _exchange(self, context: Any, batch: CommandBatch) -> OutcomeBatch:
        data = batch.encode()
        give_up = time.monotonic() + self._timeout_s
        directory = self._directory.current
        generation = directory.generations[self.index]
        reply = context.ask(directory.addresses[self.index], data, POLL_S)
        while True:
            if isinstance(reply, bytes):
                decoded = decode_reply(reply)
                if isinstance(decoded, LateOutcomes):
                    self._settle_late(decoded)
                    reply = context.listen(POLL_S)
                    continue
                if decoded.batch_id == batch.batch_id:
                    return decoded
                # A late answer to a batch that was re-sent: already handled.
            elif reply is not None:
                if _is_poison_for(reply, data):
                    raise InternalError(f"shard {self.index} could not take the batch")
                # A late answer to a control message that timed out (a busy shard answers
                # status requests only between batches): not this batch's reply.
                reply = context.listen(POLL_S)
                continue
            if time.monotonic() >= give_up:
                raise Unavailable(f"shard {self.index} did not answer in {self._timeout_s:.0f}s")
            latest, answered = self._ask_directory(context, batch.batch_id)
            if answered is not None:  # the batch's answer came while we asked the supervisor
                return answered
            directory = latest or self._directory.current
            if directory.generations[self.index] != generation:
                generation = directory.generations[self.index]
                self._resends += 1
                log.warning(
                    "re-sending batch %d to shard %d generation %d", batch.batch_id, self.index, generation
                )
                reply = context.ask(directory.addresses[self.index], data, POLL_S)
            else:
                reply = context.listen(POLL_S)

    def _ask_directory(
        self, context: Any, batch_id: int
    ) -> tuple[ShardDirectory | None, OutcomeBatch | None]:
        """Ask the supervisor where the shard is now. This context may receive the batch's own
        answer meanwhile (``ask`` returns whatever arrives next): that is returned, never dropped."""
        give_up = time.monotonic() + DIRECTORY_TIMEOUT_S
        reply = context.ask(self._directory.supervisor, GetDirectory(), DIRECTORY_TIMEOUT_S)
        while reply is not None and not isinstance(reply, ShardDirectory):
            if isinstance(reply, bytes):
                decoded = decode_reply(reply)
                if isinstance(decoded, LateOutcomes):
                    self._settle_late(decoded)
                elif decoded.batch_id == batch_id:
                    return None, decoded
            remaining = give_up - time.monotonic()
            reply = context.listen(remaining) if remaining > 0 else None
        if reply is None:
            return None, None
        self._directory.update(reply)
        return reply, None

    def _answer_control(
        self, context: Any, message: Any, expect: type, timeout_s: float, future: asyncio.Future[Any]
    ) -> None:
        address = self._directory.current.addresses[self.index]
        give_up = time.monotonic() + timeout_s
        reply = context.ask(address, message, timeout_s)
        while reply is not None and not isinstance(reply, expect):
            if isinstance(reply, bytes):  # late outcomes may arrive first
                decoded = decode_reply(reply)
                if isinstance(decoded, LateOutcomes):
                    self._settle_late(decoded)
            elif _is_poison_for(reply, message):
                reply = None
                break
            # Anything else answers an earlier control message that timed out: drop it.
            remaining = give_up - time.monotonic()
            reply = context.listen(remaining) if remaining > 0 else None
        result: Any = reply
        if reply is None:
            result = Unavailable(f"shard {self.index} did not answer {type(message).__name__}")
        self._loop.call_soon_threadsafe(_settle_all, [future], [result])

    def _resolve(self, pending: list[_Pending], outcomes: list[Outcome]) -> None:
        # One wake-up of the event loop per batch, not per request.
        self._loop.call_soon_threadsafe(_settle_all, [p.future for p in pending], outcomes)


def _is_poison_for(reply: Any, message: Any) -> bool:
    """Thespian returns a message its handler failed on twice as PoisonMessage."""
    return type(reply).__name__ == "PoisonMessage" and getattr(reply, "poisonMessage", None) == message


def _settle_all(futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
