"""One bidirectional StreamConversation call (``docs/streaming.md`` is the protocol).

A reader task takes requests off the wire and hands each message to the engine at
once, so a client may pipeline; a sequencer task puts the answers in request order.
Events pushed by the conversation's shard (an operator's action, a person's message:
``Engine.watch``) are written as soon as they come, between those answers.
Protocol mistakes (a message before init, a message for another conversation)
answer with a recoverable StreamError and the stream goes on. A stream with no
request for ``idle_timeout_s`` (heartbeats count) is closed; a client that cancels
takes its reader task and queued work with it: every message not answered yet is
given up (``Engine.process_many``'s futures cancelled), which stops a generation
under way if the stream subscribed to ``response.delta`` (the engine sends a CANCEL only
for a command with a delta listener); otherwise the generation runs on until its deadline
or the provider's ``max_duration_s``.

A message's reply text, as its turn generates it, comes as ``response.delta`` events
(the engine's delta listener keeps them with the message's turn): the sequencer sends
them in order while that turn is the one it answers, then the turn's answer; a later
message's pieces wait for their turn, so that nothing of one message comes before the
answer to an earlier one. They hold places among the answers like the answers do.

Drain: once the server begins to shut down (:meth:`StreamRegistry.drain`), every
open stream stops reading, answers what it had already read, sends a StreamError
``SERVER_SHUTTING_DOWN`` and ends with UNAVAILABLE: a client reconnects (to another
server) and sends again what got no answer (with its ``metadata.request_id``, a
repeat is never applied twice). A stream opened while the server drains gets
UNAVAILABLE at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from confab.grpc_edge import auth, convert, errors
from confab.grpc_edge.call import note_target
from confab.grpc_edge.limits import TenantRateLimiter
from confab.protos import mcp_engine_pb2 as pb
from confab.runtime import VERSION
from confab.runtime.config import LimitsConfig
from confab.runtime.engine import ConversationEvent, Engine, Outcome, TextDelta, WireReply
from confab.runtime.errors import ConfabError, Unavailable
from confab.runtime.model import ConversationKey, new_id

# Responses computed but not yet written, per stream: beyond this, reading pauses.
MAX_PENDING = 256
DELTA_EVENT = "response.delta"
STREAM_EVENT_TYPES = (
    "state_changed",
    "heartbeat",
    "stream_closed",
    "agent_message",
    "operator_action",
    DELTA_EVENT,
)
SHUTTING_DOWN = "the server is shutting down; reconnect and send again what got no answer"


class StreamRegistry:
    """The open streams, so that a shutdown can end every one of them cleanly."""

    def __init__(self) -> None:
        self.draining = False
        self._open: weakref.WeakSet[ConversationStream] = weakref.WeakSet()

    def add(self, stream: ConversationStream) -> None:
        if self.draining:
            raise Unavailable(SHUTTING_DOWN)
        self._open.add(stream)

    def discard(self, stream: ConversationStream) -> None:
        self._open.discard(stream)

    def drain(self) -> None:
        self.draining = True
        for stream in list(self._open):
            stream.drain()

    def __len__(self) -> int:
        return len(self._open)


@dataclass(slots=True)
class StreamSettings:
    idle_timeout_s: float
    registry: StreamRegistry = field(default_factory=StreamRegistry)


class _Deltas:
    """The pieces of one message's reply text that came and are not sent yet (the engine's
    listener adds them, on the loop), and the sequencer's wait for more."""

    __slots__ = ("_wake", "pieces")

    def __init__(self) -> None:
        self.pieces: list[TextDelta] = []
        self._wake: asyncio.Future[None] | None = None

    def add(self, delta: TextDelta) -> None:
        self.pieces.append(delta)
        self.wake_up()

    def wake_up(self, _: object = None) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def take(self) -> list[TextDelta]:
        pieces, self.pieces = self.pieces, []
        return pieces

    async def more(self) -> None:
        """Return once :meth:`wake_up` is called (a piece came, or the outcome)."""
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await self._wake
        finally:
            self._wake = None


@dataclass(slots=True, eq=False)
class _Turn:
    key: ConversationKey
    message_id: str
    started: float
    outcome: asyncio.Future[Outcome]
    deltas: _Deltas | None  # None: the stream does not want response.delta events


# What the sequencer gets from the reader: a ready response, a turn to await, or the end.
_Item = pb.ConversationStreamResponse | _Turn | None
# What the writer sends: a response (and whether it answers a request, so holds a place), or the end.
_Out = tuple[pb.ConversationStreamResponse, bool] | None


def stream_error(
    code: str, message: str, *, recoverable: bool, request_id: str = ""
) -> pb.ConversationStreamResponse:
    response = pb.ConversationStreamResponse()
    response.error.error_code = code
    response.error.message = message
    response.error.recoverable = recoverable
    if request_id:
        response.error.metadata.request_id = request_id
    return response


def delta_event(conversation_id: str, request_id: str, piece: TextDelta) -> pb.ConversationStreamResponse:
    """A ``response.delta`` event: :func:`stream_event`'s, its data set field by field (one of
    these per piece of a reply: cheaper than filling the Struct from a dict)."""
    response = pb.ConversationStreamResponse()
    event = response.event
    event.event_type = DELTA_EVENT
    event.conversation_id = conversation_id
    fields = event.event_data.fields
    fields["stream_id"].string_value = piece.stream_id
    fields["sequence"].number_value = piece.sequence
    fields["text"].string_value = piece.text
    fields["request_id"].string_value = request_id
    convert.set_timestamp(event.timestamp, time.time())
    return response


def stream_event(
    event_type: str, conversation_id: str, data: dict[str, object]
) -> pb.ConversationStreamResponse:
    response = pb.ConversationStreamResponse()
    event = response.event
    event.event_type = event_type
    event.conversation_id = conversation_id
    convert.fill_struct(event.event_data, data)
    event.timestamp.CopyFrom(convert.timestamp(time.time()))
    return response


class ConversationStream:
    def __init__(
        self,
        engine: Engine,
        requests: AsyncIterator[pb.ConversationStreamRequest],
        settings: StreamSettings,
        *,
        limits: LimitsConfig | None = None,
        rate_limiter: TenantRateLimiter | None = None,
    ) -> None:
        self.engine = engine
        self.requests = requests
        self.settings = settings
        self.limits = limits or convert.DEFAULT_LIMITS
        self.rate_limiter = rate_limiter
        self.stream_id = new_id()
        self.key: ConversationKey | None = None
        self.event_types: set[str] = set()
        self._out: asyncio.Queue[_Item] = asyncio.Queue(MAX_PENDING)
        # Answers in request order (the sequencer's) and events pushed as they happen (the
        # conversation's operator actions and people's messages), as the client is sent them.
        self._wire: asyncio.Queue[_Out] = asyncio.Queue()
        self._places = asyncio.Semaphore(MAX_PENDING)  # answers in _wire not yet sent
        # Messages handed to the engine and not answered yet: given up if the stream ends first.
        self._unanswered: set[asyncio.Future[Outcome]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._sequencer: asyncio.Task[None] | None = None
        self._drained = False

    def drain(self) -> None:
        """Stop reading now; what was read is still answered, then the stream ends UNAVAILABLE."""
        self._drained = True
        if self._reader is not None:
            self._reader.cancel()

    async def responses(self) -> AsyncIterator[pb.ConversationStreamResponse]:
        registry = self.settings.registry
        registry.add(self)
        self._reader = asyncio.create_task(self._read())
        self._sequencer = asyncio.create_task(self._sequence())
        try:
            while (out := await self._wire.get()) is not None:
                response, answer = out
                yield response
                if answer:
                    self._places.release()
            if self._drained:
                yield stream_error("SERVER_SHUTTING_DOWN", SHUTTING_DOWN, recoverable=False)
                raise Unavailable(SHUTTING_DOWN)
        finally:
            registry.discard(self)
            if self.key is not None:
                self.engine.unwatch(self.key, self._pushed)
            # Only a stream that ends before its answers (the client cancelled) has any: what it
            # would have been sent has nobody to go to, and a generation under way stops.
            for outcome in self._unanswered:
                outcome.cancel()
            for task in (self._reader, self._sequencer):
                task.cancel()
            for task in (self._reader, self._sequencer):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sequence(self) -> None:
        """The answers, in the order of the requests they answer: each turn's once it is done."""
        try:
            while (item := await self._out.get()) is not None:
                answers = await self._answer(item) if isinstance(item, _Turn) else [item]
                for _ in answers:  # all at once below: nothing comes between a turn's answers
                    await self._places.acquire()
                for response in answers:
                    self._wire.put_nowait((response, True))
        finally:
            self._wire.put_nowait(None)

    def _pushed(self, event: ConversationEvent) -> None:
        """An operator action on the stream's conversation, or a person's message into it: sent at
        once, between answers, not when the user next writes."""
        if self._wants(event.type):
            self._wire.put_nowait((stream_event(event.type, event.key.conversation_id, event.data), False))

    # Reader ----------------------------------------------------------------

    async def _read(self) -> None:
        try:
            iterator = aiter(self.requests)
            while True:
                try:
                    request = await asyncio.wait_for(anext(iterator), self.settings.idle_timeout_s)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    await self._out.put(
                        stream_error(
                            "STREAM_IDLE_TIMEOUT",
                            f"no request for {self.settings.idle_timeout_s:.0f}s;"
                            " send heartbeats to keep a stream open",
                            recoverable=False,
                        )
                    )
                    return
                if not await self._handle(request):
                    return
        except asyncio.CancelledError:
            if not self._drained:
                raise
        finally:
            await self._out.put(None)

    async def _handle(self, request: pb.ConversationStreamRequest) -> bool:
        """Queue what answers ``request``; False once the stream should end."""
        kind = request.WhichOneof("request_type")
        if kind == "init":
            await self._out.put(self._init(request.init))
        elif kind == "message":
            await self._out.put(self._message(request.message))
        elif kind == "heartbeat":
            if self._wants("heartbeat"):
                conversation_id = self.key.conversation_id if self.key else ""
                await self._out.put(stream_event("heartbeat", conversation_id, {"stream_id": self.stream_id}))
        elif kind == "close":
            if self._wants("stream_closed"):
                conversation_id = self.key.conversation_id if self.key else ""
                await self._out.put(
                    stream_event("stream_closed", conversation_id, {"reason": request.close.reason})
                )
            return False
        else:
            await self._out.put(
                stream_error("EMPTY_REQUEST", "the request sets none of its fields", recoverable=True)
            )
        return True

    def _init(self, init: pb.StreamInit) -> pb.ConversationStreamResponse:
        if self.key is not None:
            return stream_error(
                "ALREADY_INITIALIZED", f"this stream is bound to {self.key}", recoverable=True
            )
        try:
            key = convert.conversation_key(init.tenant_context, init.conversation_id, "init.", self.limits)
            auth.authorize_tenant(key.tenant_id)
        except ConfabError as exc:
            return stream_error(exc.reason, exc.message, recoverable=True)
        unknown = set(init.event_types) - set(STREAM_EVENT_TYPES)
        if unknown:
            return stream_error(
                "UNKNOWN_EVENT_TYPE",
                f"unknown event types {sorted(unknown)}; known: {list(STREAM_EVENT_TYPES)}",
                recoverable=True,
            )
        self.key = key
        self.engine.watch(key, self._pushed)
        note_target(key.tenant_id, key.conversation_id)  # the access line names the conversation
        self.event_types = set(init.event_types)
        response = pb.ConversationStreamResponse()
        response.ack.stream_id = self.stream_id
        response.ack.status.success = True
        response.ack.status.message = f"stream bound to conversation {key.conversation_id}"
        convert.metadata(response.ack.metadata, self.stream_id, time.perf_counter(), VERSION)
        return response

    def _message(self, request: pb.ProcessMessageRequest) -> _Item:
        started, message_id = time.perf_counter(), new_id()
        if self.key is None:
            return stream_error(
                "STREAM_NOT_INITIALIZED", "send init before messages", recoverable=True, request_id=message_id
            )
        # A message may leave out what init already said.
        if not request.tenant_context.tenant_id:
            request.tenant_context.tenant_id = self.key.tenant_id
        if not request.conversation_id:
            request.conversation_id = self.key.conversation_id
        try:
            # Sent on serialized (upb, C speed): its shard reads what the edge does not.
            data = request.SerializeToString()
            turn = convert.wire_turn(request, data, message_id, "message.", self.limits)
            auth.authorize_tenant(turn.key.tenant_id)
        except ConfabError as exc:
            return stream_error(exc.reason, exc.message, recoverable=True, request_id=message_id)
        if turn.key != self.key:
            return stream_error(
                "CONVERSATION_MISMATCH",
                f"this stream is bound to conversation {self.key.conversation_id} of its tenant",
                recoverable=True,
                request_id=message_id,
            )
        deltas = _Deltas() if self._wants(DELTA_EVENT) else None
        try:
            if self.rate_limiter is not None:
                # RateLimited says when to retry in its message: a StreamError has no RetryInfo.
                self.rate_limiter.charge(turn.key.tenant_id)
            future = self.engine.process_many([turn], on_delta=[deltas.add if deltas else None])[0]
        except ConfabError as exc:
            return stream_error(exc.reason, exc.message, recoverable=True, request_id=message_id)
        self._unanswered.add(future)
        return _Turn(turn.key, message_id, started, future, deltas)

    # Sequencer -------------------------------------------------------------

    async def _relay(self, turn: _Turn, deltas: _Deltas) -> None:
        """Send ``turn``'s deltas as they come, until its outcome is in and they are all sent."""
        outcome = turn.outcome
        if not outcome.done():
            outcome.add_done_callback(deltas.wake_up)
        conversation_id, request_id = turn.key.conversation_id, turn.message_id
        while True:
            for piece in deltas.take():
                await self._places.acquire()
                self._wire.put_nowait((delta_event(conversation_id, request_id, piece), True))
            if deltas.pieces:
                continue  # more came while a place was awaited
            if outcome.done():
                return
            await deltas.more()

    async def _answer(self, turn: _Turn) -> list[pb.ConversationStreamResponse]:
        if turn.deltas is not None:
            await self._relay(turn, turn.deltas)
        try:
            outcome = await turn.outcome
        except Exception as exc:
            error = errors.as_confab_error(exc, turn.message_id)
            return [stream_error(error.reason, error.message, recoverable=True, request_id=turn.message_id)]
        finally:
            self._unanswered.discard(turn.outcome)
        assert isinstance(outcome, WireReply)
        response = pb.ConversationStreamResponse()
        # The shard's serialized response, parsed in place (upb), then this message's metadata.
        answer = response.message_response
        answer.MergeFromString(outcome.response)
        convert.metadata(answer.metadata, turn.message_id, turn.started, VERSION)
        answers = [response]
        if self._wants("state_changed"):
            before, after = outcome.state_before(), answer.current_state
            if before != after:
                answers.append(
                    stream_event("state_changed", turn.key.conversation_id, {"from": before, "to": after})
                )
        return answers

    def _wants(self, event_type: str) -> bool:
        # No event_types in init means every event type.
        return not self.event_types or event_type in self.event_types
