"""A StreamConversation client that keeps one conversation going across server restarts.

It uses the stream the way a streaming chat frontend does: one StreamConversation call
bound to the conversation by an init (events: ``state_changed``, ``agent_message``,
``operator_action``, ``response.delta``), messages pipelined on it, heartbeats while the
user is quiet. A reply its flow generates comes as it is written (``ChatListener.delta``,
``Turn.streamed``) before the reply itself, whose text is the one that counts; the pieces of a
second generation in the same turn start a line of their own (:func:`delta_piece`), as the
reply's text joins what the turn says.
``ChatOptions.flow`` asks for that flow (``processing_hints.force_flow``) until a message is
answered, so a new conversation starts on it.

When the stream breaks (a server restart, a network drop) the client re-opens it with
backoff and jitter for up to ``reconnect_s`` seconds, re-binding the same conversation;
the conversation goes on with the state the server kept. A message sent while
disconnected is held and sent once the stream is back. A message that was sent but not
answered when the stream broke is reported *not confirmed* (``Turn.lost``) and never sent
again by itself: the server may have applied it, and a blind resend could apply it twice
(a caller that wants a safe resend sets ``metadata.request_id``: see docs/streaming.md).

Every message says which reply its user had seen when it was sent (the ``turn`` of the last
reply handed to the listener, as ``metadata.custom_metadata["confab.seen_turn"]``; 0 for a
conversation that had not begun): a message typed before the question it lands on was
shown is then not taken as its answer by a confirmation (docs/api.md). Until a reply has
been seen, for a conversation that began elsewhere, it says nothing. A caller that knows its
user wrote before the last reply was shown (a line typed ahead) says so:
``send(text, seen_turn=...)``.

Nothing here needs a terminal::

    client = ChatClient(ChatOptions(target="127.0.0.1:50051", tenant="acme", conversation_id="c-1"))
    with client:
        client.wait_connected(timeout_s=10)
        turn = client.send("hi")
        if client.wait(turn, timeout_s=10) and turn.reply is not None:
            print(turn.reply.response.text, turn.state_change)

What happens on the link (connected, lost, replies, events) is told to a
:class:`ChatListener`, from the client's own thread; ``confab chat`` is one such listener.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import json_format

from confab.protos import common_pb2
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.protocol.wire_pb import SEEN_TURN_KEY
from confab.tools.connection import Connection, Metadata

# Codes after which a new stream may well succeed; any other code will not change by retrying.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,  # the server cancels open streams when its shutdown grace ends
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # too many streams: may free up
    }
)
# The events a chat asks for: its turns' state changes, and what reaches the conversation from
# elsewhere, at once (a person's message while it is handed over, an operator's action).
STREAM_EVENT_TYPES = ("state_changed", "agent_message", "operator_action", "response.delta")
# The server sends state_changed right after the response it belongs to; this long is
# waited for it before a turn counts as settled without one.
EVENT_GRACE_S = 1.0
ACK_TIMEOUT_S = 10.0  # an init unanswered this long counts as a failed connection
CALL_TIMEOUT_S = 10.0  # unary calls: state, reset, and the state fetched on connect
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
POLL_S = 0.05  # how often waits look at the link's news


class ChatFailed(Exception):
    """The chat cannot go on: a credential or request the server refuses, or no server for too long."""


@dataclass(frozen=True, slots=True)
class ChatOptions:
    target: str
    tenant: str
    conversation_id: str
    flow: str = ""
    user: str = "chat-user"
    channel: str = "web"
    metadata: Metadata = ()
    tls_ca: bytes | None = None
    heartbeat_s: float = 30.0
    reconnect_s: float = 60.0
    reply_timeout_s: float = 30.0

    @property
    def connection(self) -> Connection:
        return Connection(self.target, self.metadata, self.tls_ca)


@dataclass(slots=True)
class Turn:
    """One message sent, from :meth:`ChatClient.send` to its answer (or its loss)."""

    text: str
    request: pb.ProcessMessageRequest
    settled: threading.Event = field(default_factory=threading.Event)
    sent_at: float | None = None  # None while held for a reconnect
    answered_at: float | None = None
    reply: pb.ProcessMessageResponse | None = None
    error: pb.StreamError | None = None  # the stream answered it with an error frame
    state_change: tuple[str, str] | None = None  # (from, to), when the turn moved the conversation
    # The reply's text as it was written (its response.delta events, in order, a line break
    # between two generations: delta_piece), before the reply.
    streamed: str = ""
    stream_id: str = ""  # the generation the last piece belonged to
    streamed_at: float | None = None  # when the last piece came: a reply being written is no silence
    lost: bool = False  # the stream broke before it was answered: it may or may not have counted


class ChatListener:
    """What a chat's link tells whoever shows it; every method is called from the link's thread.

    The base class ignores everything: override what matters to you.
    """

    def connected(self, state: pb.ConversationState | None, reconnected_after_s: float | None) -> None:
        """A stream is bound; ``state`` is the conversation's (None: new); a reconnect says after how long."""

    def unreachable(self, reason: str, retrying_for_s: float) -> None:
        """The first connection failed; the client keeps trying for ``retrying_for_s`` seconds."""

    def disconnected(self, reason: str, unconfirmed: list[Turn]) -> None:
        """A working stream broke; ``unconfirmed`` were sent on it and got no answer."""

    def held(self, turn: Turn) -> None:
        """``turn`` was sent while disconnected: it goes out once the stream is back (caller's thread)."""

    def delta(self, turn: Turn | None, stream_id: str, sequence: int, text: str) -> None:
        """A piece of the reply to ``turn`` as its flow writes it, in order, before :meth:`replied`;
        the reply's text is the whole of it (or, when the generation failed, what replaces it)."""

    def replied(self, turn: Turn | None, reply: pb.ProcessMessageResponse) -> None:
        """The answer to ``turn`` (None: to a message this client did not send)."""

    def state_changed(self, before: str, after: str) -> None:
        """The conversation moved from state ``before`` to ``after`` (right after the reply)."""

    def stream_error(self, turn: Turn | None, error: pb.StreamError) -> None:
        """An error frame; it answers ``turn`` when there was one in flight."""

    def event(self, event: pb.StreamEvent) -> None:
        """Any other event of the stream."""

    def failed(self, message: str) -> None:
        """The link gave up (see :class:`ChatFailed`); nothing more will come."""


class ChatClient:
    def __init__(self, options: ChatOptions, listener: ChatListener | None = None) -> None:
        self.options = options
        self.listener = listener or ChatListener()
        self._stub_lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.MCPEngineStub | None = None
        # Link state, shared by the caller's threads and the link thread; guarded by _lock.
        self._lock = threading.Lock()
        self._outbox: collections.deque[pb.ConversationStreamRequest | None] | None = None
        self._wakeup = threading.Condition(self._lock)
        self._call: Any = None  # the open StreamConversation call, to cancel on exit
        self._in_flight: collections.deque[Turn] = collections.deque()  # sent on this stream, unanswered
        self._held: list[Turn] = []  # sent while disconnected
        self._settling: Turn | None = None  # answered, its state_changed event still expected
        self._known_state = ""
        self._flow_confirmed = not options.flow  # force_flow goes out until a message is answered
        self._seen_turn: int | None = None  # the turn of the last reply the listener was given
        self._connected_once = False
        self._bound = False  # the current stream was acknowledged (link thread only)
        self.fatal: str | None = None
        self.closing = threading.Event()
        self._thread = threading.Thread(target=self._link, name="confab-chat-link", daemon=True)

    # Lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def __enter__(self) -> ChatClient:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._outbox is not None

    def wait_connected(self, timeout_s: float | None = None) -> bool:
        """Block until the first stream is up (True), ``timeout_s`` passes (False), or the link gives up.

        Raises ChatFailed when the link gave up. Ctrl-C still works while it waits.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._connected_once and self.fatal is None and self._thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        if self.fatal is not None:
            raise ChatFailed(self.fatal)
        return self._connected_once

    def close(self) -> None:
        self.closing.set()
        with self._lock:
            if self._outbox is not None:
                # Ends the stream politely: the server stops reading and finishes it.
                self._outbox.append(pb.ConversationStreamRequest(close=pb.StreamClose(reason="user left")))
                self._outbox.append(None)
                self._wakeup.notify_all()
        if self._thread.is_alive():
            self._thread.join(2.0)
        call = self._call
        if call is not None:
            call.cancel()
        with self._stub_lock:
            if self._channel is not None:
                self._channel.close()

    # Sending -----------------------------------------------------------------

    def send(
        self, text: str, payload: str = "", quick_reply: bool = False, seen_turn: int | None = None
    ) -> Turn:
        """Send a message (its text, or a choice's payload); held while disconnected.

        ``seen_turn``: the turn of the last reply its user had seen when they wrote it, when that
        is not the last reply handed to the listener (the default): a line typed while a reply
        was still to come.
        """
        o = self.options
        request = pb.ProcessMessageRequest(
            tenant_context=common_pb2.TenantContext(tenant_id=o.tenant),
            conversation_id=o.conversation_id,
            user_id=o.user,
            content=pb.MessageContent(
                type=common_pb2.MESSAGE_TYPE_QUICK_REPLY if quick_reply else common_pb2.MESSAGE_TYPE_TEXT,
                text=text,
                payload=payload,
            ),
        )
        request.channel = common_pb2.Channel.Value(f"CHANNEL_{o.channel.upper()}")  # type: ignore[assignment]
        turn = Turn(text or payload, request)
        with self._lock:
            # Until one message is answered, the flow may not have been started yet: ask again.
            if not self._flow_confirmed:
                request.processing_hints.force_flow = o.flow
            seen = self._seen_turn if seen_turn is None else seen_turn
            if seen is not None:  # what its user had seen when they wrote it
                request.metadata.custom_metadata.update({SEEN_TURN_KEY: seen})
            if self._outbox is None:
                self._held.append(turn)
                held = True
            else:
                self._put(turn)
                held = False
        if held:
            self.listener.held(turn)
        return turn

    def _put(self, turn: Turn) -> None:
        """Send ``turn`` on the open stream (caller holds _lock)."""
        assert self._outbox is not None
        turn.sent_at = time.monotonic()
        self._in_flight.append(turn)
        self._outbox.append(pb.ConversationStreamRequest(message=turn.request))
        self._wakeup.notify_all()

    def wait(self, turn: Turn, timeout_s: float | None = None) -> bool:
        """Wait until ``turn`` is settled: answered (with its state change), failed or lost.

        False when ``timeout_s`` (by default ``reply_timeout_s``) passed since it was sent
        (or since the last piece of its reply came) and it is still unanswered; its answer
        still reaches the listener when it comes.
        """
        timeout = self.options.reply_timeout_s if timeout_s is None else timeout_s
        while not turn.settled.wait(POLL_S):
            if self.fatal is not None:
                return True
            now = time.monotonic()
            if turn.answered_at is not None and now - turn.answered_at > EVENT_GRACE_S:
                return True  # answered; the state change it might have brought did not come
            heard_at = turn.streamed_at if turn.streamed_at is not None else turn.sent_at
            if heard_at is not None and now - heard_at > timeout:
                return False
        return True

    # Unary calls -------------------------------------------------------------

    def stub(self) -> pb_grpc.MCPEngineStub:
        with self._stub_lock:
            if self._stub is None:
                raise ChatFailed("not connected yet: start the client first")
            return self._stub

    def get_state(self) -> pb.ConversationState | None:
        """The conversation's state, or None if the server has never seen it."""
        o = self.options
        request = pb.GetConversationStateRequest(
            tenant_context=common_pb2.TenantContext(tenant_id=o.tenant), conversation_id=o.conversation_id
        )
        try:
            reply = self.stub().GetConversationState(request, metadata=o.metadata, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        state: pb.ConversationState = reply.conversation_state
        return state

    def reset(self, reason: str = "confab chat reset") -> str:
        """Start the conversation over; the state it was in."""
        o = self.options
        request = pb.ResetConversationRequest(
            tenant_context=common_pb2.TenantContext(tenant_id=o.tenant),
            conversation_id=o.conversation_id,
            reason=reason,
        )
        reply = self.stub().ResetConversation(request, metadata=o.metadata, timeout=CALL_TIMEOUT_S)
        with self._lock:
            self._known_state = ""
            # The conversation starts over; the flow asked for must be named again.
            self._flow_confirmed = not o.flow
            self._seen_turn = 0  # its turns count from 0 again, and nothing of them was seen
        previous: str = reply.previous_state
        return previous

    # Link thread -------------------------------------------------------------

    def _new_channel(self) -> None:
        # A fresh channel per attempt: a channel that saw the server go away waits out its own
        # reconnect backoff (up to minutes) before trying again, which would outlast ours.
        channel = self.options.connection.channel()
        with self._stub_lock:
            old, self._channel = self._channel, channel
            self._stub = pb_grpc.MCPEngineStub(channel)
        if old is not None:
            old.close()

    def _link(self) -> None:
        """Keep a stream open for as long as the chat runs; re-open it when it breaks."""
        down_since = time.monotonic()  # when the link last lost (or first sought) a stream
        delay = FIRST_BACKOFF_S
        told_unreachable = False
        try:
            while not self.closing.is_set():
                self._new_channel()
                self._bound = False
                try:
                    self._session(down_since)
                    reason = "the server ended the stream"
                except grpc.RpcError as exc:
                    if self.closing.is_set():
                        return
                    code = exc.code()
                    if code not in RETRYABLE:
                        raise ChatFailed(f"{code.name}: {exc.details()}") from exc
                    reason = f"{code.name}: {exc.details()}"
                if self.closing.is_set():
                    return
                if self._bound:  # a stream that worked broke: a new outage starts now
                    down_since, delay = time.monotonic(), FIRST_BACKOFF_S
                    self._disconnected(reason)
                elif not self._connected_once and not told_unreachable:
                    told_unreachable = True
                    self.listener.unreachable(reason, self.options.reconnect_s)
                left = down_since + self.options.reconnect_s - time.monotonic()
                if left <= 0:
                    target, budget = self.options.target, self.options.reconnect_s
                    raise ChatFailed(f"no connection to {target} for {budget:.0f} s; giving up")
                # Jitter: many clients dropped by one restart should not all come back at once.
                self.closing.wait(min(delay * random.uniform(0.8, 1.2), left))
                delay = min(delay * 2, MAX_BACKOFF_S)
        except ChatFailed as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug here must not leave the caller waiting on nothing
            self._fail(f"chat link failed: {type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        self.fatal = message
        with self._lock:
            for turn in self._in_flight:
                turn.settled.set()
        self.listener.failed(message)

    def _requests(
        self, outbox: collections.deque[pb.ConversationStreamRequest | None]
    ) -> Iterator[pb.ConversationStreamRequest]:
        """What the stream sends: queued requests, and a heartbeat after every quiet interval."""
        while True:
            with self._wakeup:
                if not outbox:
                    self._wakeup.wait(self.options.heartbeat_s)
                if not outbox:
                    heartbeat = pb.ConversationStreamRequest(heartbeat=pb.StreamHeartbeat())
                    heartbeat.heartbeat.timestamp.GetCurrentTime()
                    item: pb.ConversationStreamRequest | None = heartbeat
                else:
                    item = outbox.popleft()
            if item is None:
                return
            yield item

    def _session(self, down_since: float) -> None:
        """One stream, from init to its end; sets _bound once the server acknowledged init."""
        o = self.options
        outbox: collections.deque[pb.ConversationStreamRequest | None] = collections.deque()
        init = pb.ConversationStreamRequest(
            init=pb.StreamInit(
                tenant_context=common_pb2.TenantContext(tenant_id=o.tenant),
                conversation_id=o.conversation_id,
                event_types=list(STREAM_EVENT_TYPES),
            )
        )
        outbox.append(init)
        call = self.stub().StreamConversation(self._requests(outbox), metadata=o.metadata)
        self._call = call
        try:
            # A server that accepts the connection but never answers must not hang us forever.
            watchdog = threading.Timer(ACK_TIMEOUT_S, call.cancel)
            watchdog.daemon = True
            watchdog.start()
            try:
                first = next(call, None)
            finally:
                watchdog.cancel()
            if first is None:
                return
            if first.HasField("error"):
                raise ChatFailed(
                    f"the server refused the stream: {first.error.error_code}: {first.error.message}"
                )
            state = self.get_state()
            reconnected_after = time.monotonic() - down_since if self._connected_once else None
            with self._lock:
                self._bound = True
                self._known_state = state.current_state if state is not None else ""
                self._connected_once = True
                if state is None:  # a conversation not begun: its user has seen all of it
                    self._seen_turn = 0
            # Told before anything is sent on it, so the news comes before the held turns' replies;
            # anything sent meanwhile is still held, and goes out below in the order it was sent.
            self.listener.connected(state, reconnected_after)
            with self._lock:
                self._outbox = outbox
                held, self._held = self._held, []
                for turn in held:
                    self._put(turn)
            for response in call:
                self._handle(response)
        finally:
            self._call = None
            with self._lock:
                if self._outbox is outbox:
                    self._outbox = None
                outbox.append(None)  # ends _requests if gRPC is still reading it
                self._wakeup.notify_all()

    def _disconnected(self, reason: str) -> None:
        with self._lock:
            lost = list(self._in_flight)
            self._in_flight.clear()
            settling, self._settling = self._settling, None
        for turn in lost:
            turn.lost = True
        self.listener.disconnected(reason, lost)
        for turn in lost:
            turn.settled.set()
        if settling is not None:
            settling.settled.set()

    # Responses ---------------------------------------------------------------

    def _handle(self, response: pb.ConversationStreamResponse) -> None:
        kind = response.WhichOneof("response_type")
        if kind == "message_response":
            self._on_reply(response.message_response)
        elif kind == "event":
            self._on_event(response.event)
        elif kind == "error":
            with self._lock:
                # Responses come in request order; an error with messages in flight answers the oldest.
                turn = self._in_flight.popleft() if self._in_flight else None
            if turn is not None:
                turn.error = response.error
            self.listener.stream_error(turn, response.error)
            if turn is not None:
                turn.settled.set()

    def _on_reply(self, reply: pb.ProcessMessageResponse) -> None:
        with self._lock:
            turn = self._in_flight.popleft() if self._in_flight else None
            self._flow_confirmed = True
            expect_event = reply.current_state != self._known_state
            self._known_state = reply.current_state
            if turn is not None:
                turn.reply = reply
                if expect_event:
                    turn.answered_at = time.monotonic()
                    self._settling = turn
        self.listener.replied(turn, reply)
        with self._lock:
            self._seen_turn = reply.turn  # shown now: the next message is written having seen it
        if turn is not None and not expect_event:
            turn.settled.set()

    def _on_event(self, event: pb.StreamEvent) -> None:
        if event.event_type == "response.delta":
            self._on_delta(event)
            return
        if event.event_type == "operator_action":  # pushed at once: it moved the conversation
            state = json_format.MessageToDict(event.event_data).get("state")
            if isinstance(state, str) and state:
                with self._lock:
                    self._known_state = state
        if event.event_type != "state_changed":
            self.listener.event(event)
            return
        data = json_format.MessageToDict(event.event_data)
        before, after = str(data.get("from") or ""), str(data.get("to") or "")
        with self._lock:
            self._known_state = after
            settling, self._settling = self._settling, None
        if settling is not None:
            settling.state_change = (before, after)
        self.listener.state_changed(before, after)
        if settling is not None:
            settling.settled.set()

    def _on_delta(self, event: pb.StreamEvent) -> None:
        fields = event.event_data.fields
        text = fields["text"].string_value if "text" in fields else ""
        stream_id = fields["stream_id"].string_value if "stream_id" in fields else ""
        sequence = int(fields["sequence"].number_value) if "sequence" in fields else 0
        with self._lock:
            # Responses come in request order: a piece belongs to the oldest message not answered.
            turn = self._in_flight[0] if self._in_flight else None
            if turn is not None:
                turn.streamed += delta_piece(turn.streamed, turn.stream_id, stream_id, text)
                turn.stream_id = stream_id
                turn.streamed_at = time.monotonic()
        self.listener.delta(turn, stream_id, sequence, text)


def delta_piece(streamed: str, last_stream_id: str, stream_id: str, text: str) -> str:
    """What a ``response.delta`` adds to the text ``streamed`` so far: its ``text``, after a line
    break when it starts another generation of the same reply (``stream_id`` differs from the
    last piece's). A reply's text joins what its turn says line by line, so two generations'
    pieces put together this way are that text (docs/streaming.md)."""
    if streamed and stream_id != last_stream_id:
        return "\n" + text
    return text
