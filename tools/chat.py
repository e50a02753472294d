"""``confab chat``: a terminal chat client over StreamConversation, for trying flows by hand.

    confab chat [--target HOST:PORT] --tenant T [--conversation ID] [--flow NAME] [--user U]
                [--channel web|sms|...] [--api-key KEY | --token JWT] [--tls-ca FILE]

It uses the stream the way a streaming chat frontend does: one StreamConversation call
bound to the conversation by an init (``event_types: [state_changed]``), one message at
a time, heartbeats while the user is quiet. The bot's quick replies, buttons and carousel
buttons are numbered; typing the number sends that choice (its payload, its title as
text). ``--flow`` asks for that flow (``processing_hints.force_flow``) on the first
message, so a new conversation starts on it.

When the stream breaks (a server restart, a network drop) the client says so and
re-opens it with backoff for up to ``--reconnect-for`` seconds, re-binding the same
conversation; the conversation goes on with the state the server kept. A line typed
while disconnected is held and sent once the stream is back. A message that was sent
but not answered when the stream broke is reported as *not confirmed* and never sent
again by itself: the server may have applied it, and a blind resend could apply it twice.

Ctrl-D, Ctrl-C and ``/quit`` exit 0; a credential or argument the server refuses, or a
server that stays unreachable, exits 1.
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from ..protos import common_pb2
from ..protos import mcp_engine_pb2 as pb
from ..protos import mcp_engine_pb2_grpc as pb_grpc

try:  # line editing and history for input(); absent on some platforms, and not needed there
    import readline
except ImportError:  # pragma: no cover
    readline = None  # type: ignore[assignment]

PROMPT = "you> "
DEFAULT_TARGET = "127.0.0.1:50051"  # where `make serve` listens
CHANNELS = [
    n.removeprefix("CHANNEL_").lower() for n, _ in common_pb2.Channel.items() if n != "CHANNEL_UNKNOWN"
]
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
# The server sends state_changed right after the response it belongs to; this long is
# waited for it before the prompt comes back, so the prompt follows the whole turn.
EVENT_GRACE_S = 1.0
ACK_TIMEOUT_S = 10.0  # an init unanswered this long counts as a failed connection
CALL_TIMEOUT_S = 10.0  # unary calls: /state, /reset, and the state fetched on connect
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0

HELP = """\
Type a message and press Enter. A number picks the choice shown as [number].
  /state   the conversation's state (GetConversationState)
  /reset   start the conversation over (ResetConversation)
  /help    this text
  /quit    leave (so do Ctrl-D and Ctrl-C)
  //text   sends "/text" as a message"""


@dataclass(frozen=True, slots=True)
class Choice:
    title: str
    payload: str
    url: str = ""
    quick_reply: bool = False


@dataclass(slots=True)
class Turn:
    """One message the user sent, from typing to its answer (or its loss)."""

    text: str
    request: pb.ProcessMessageRequest
    done: threading.Event = field(default_factory=threading.Event)
    sent_at: float | None = None  # None while held for a reconnect
    answered_at: float | None = None


@dataclass(frozen=True, slots=True)
class ChatOptions:
    target: str
    tenant: str
    conversation_id: str
    flow: str = ""
    user: str = "chat-user"
    channel: str = "web"
    metadata: tuple[tuple[str, str], ...] = ()
    tls_ca: bytes | None = None
    heartbeat_s: float = 30.0
    reconnect_s: float = 60.0
    reply_timeout_s: float = 30.0


class Console:
    """Output that may arrive while the user is typing: it keeps the prompt and typed text intact."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.prompt = PROMPT if interactive else ""  # a pipe gets no prompts in its output
        self._lock = threading.RLock()
        self._prompting = False
        self._interrupted = False

    def interrupt(self) -> None:
        """Get the main thread out of ``read`` (now or at its next call) with KeyboardInterrupt."""
        with self._lock:
            self._interrupted = True
            if self._prompting:
                # Blocked in input(): only a signal aimed at the main thread gets it out.
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def say(self, *lines: str) -> None:
        with self._lock:
            redraw = self._prompting and self.interactive
            if redraw:
                self.out.write("\r\x1b[K")  # the prompt line goes; it is drawn again below the news
            for line in lines:
                self.out.write(line + "\n")
            if redraw:
                typed = readline.get_line_buffer() if readline is not None else ""
                self.out.write(self.prompt + typed)
            self.out.flush()

    def read(self) -> str:
        with self._lock:
            if self._interrupted:  # checked under the lock interrupt() takes: no window between
                raise KeyboardInterrupt
            self._prompting = True
        try:
            return input(self.prompt)
        finally:
            with self._lock:
                self._prompting = False


class Fatal(Exception):
    """The chat cannot go on (refused credential, unreachable server): exit 1."""


class ChatClient:
    def __init__(self, options: ChatOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self._stub_lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.MCPEngineStub | None = None
        # Link state, shared by the input (main) thread and the link thread; guarded by _lock.
        self._lock = threading.Lock()
        self._outbox: collections.deque[pb.ConversationStreamRequest | None] | None = None
        self._wakeup = threading.Condition(self._lock)
        self._call: Any = None  # the open StreamConversation call, to cancel on exit
        self._in_flight: collections.deque[Turn] = collections.deque()  # sent on this stream, unanswered
        self._held: list[Turn] = []  # typed while disconnected
        self._settling: Turn | None = None  # answered, its state_changed event still expected
        self._known_state = ""
        self._flow_confirmed = not options.flow  # force_flow goes out until a message is answered
        self._choices: list[Choice] = []
        self._connected_once = False
        self._bound = False  # the current stream was acknowledged (link thread only)
        self.fatal: str | None = None
        self.closing = threading.Event()
        self._thread = threading.Thread(target=self._link, name="confab-chat-link", daemon=True)

    # Lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_connected(self) -> None:
        """Block until the first stream is up (or the link gives up); Ctrl-C still works."""
        while not self._connected_once and self.fatal is None and self._thread.is_alive():
            time.sleep(0.05)
        if self.fatal is not None:
            raise Fatal(self.fatal)

    def close(self) -> None:
        self.closing.set()
        with self._lock:
            if self._outbox is not None:
                # Ends the stream politely: the server stops reading and finishes it.
                self._outbox.append(pb.ConversationStreamRequest(close=pb.StreamClose(reason="user left")))
                self._outbox.append(None)
                self._wakeup.notify_all()
        self._thread.join(2.0)
        call = self._call
        if call is not None:
            call.cancel()
        with self._stub_lock:
            if self._channel is not None:
                self._channel.close()

    # Sending -----------------------------------------------------------------

    def choice_for(self, line: str) -> Choice | None:
        with self._lock:
            choices = list(self._choices)
        if line.isdigit() and 1 <= int(line) <= len(choices):
            return choices[int(line) - 1]
        return None

    def send(self, text: str, payload: str = "", quick_reply: bool = False) -> Turn:
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
            if self._outbox is None:
                self._held.append(turn)
                held = True
            else:
                self._put(turn)
                held = False
        if held:
            self.console.say("-- not connected: the message will be sent once the stream is back")
        return turn

    def _put(self, turn: Turn) -> None:
        """Send ``turn`` on the open stream (caller holds _lock)."""
        assert self._outbox is not None
        turn.sent_at = time.monotonic()
        self._in_flight.append(turn)
        self._outbox.append(pb.ConversationStreamRequest(message=turn.request))
        self._wakeup.notify_all()

    def await_turn(self, turn: Turn) -> None:
        """Return once ``turn`` is answered (with its state change), lost, or overdue."""
        while not turn.done.wait(0.05):
            if self.fatal is not None:
                return
            now = time.monotonic()
            if turn.answered_at is not None and now - turn.answered_at > EVENT_GRACE_S:
                return
            if turn.sent_at is not None and now - turn.sent_at > self.options.reply_timeout_s:
                self.console.say(
                    f"-- no reply after {self.options.reply_timeout_s:.0f} s; it is shown when it comes"
                )
                return

    # Unary calls -------------------------------------------------------------

    def stub(self) -> pb_grpc.MCPEngineStub:
        with self._stub_lock:
            assert self._stub is not None, "the link thread makes a channel before anything is sent"
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
        return reply.conversation_state

    def reset(self) -> str:
        o = self.options
        request = pb.ResetConversationRequest(
            tenant_context=common_pb2.TenantContext(tenant_id=o.tenant),
            conversation_id=o.conversation_id,
            reason="confab chat /reset",
        )
        reply = self.stub().ResetConversation(request, metadata=o.metadata, timeout=CALL_TIMEOUT_S)
        with self._lock:
            self._known_state = ""
            self._choices = []
            # The conversation starts over; --flow must name its flow again.
            self._flow_confirmed = not o.flow
        return reply.previous_state

    # Link thread -------------------------------------------------------------

    def _new_channel(self) -> None:
        o = self.options
        # A fresh channel per attempt: a channel that saw the server go away waits out its own
        # reconnect backoff (up to minutes) before trying again, which would outlast ours.
        if o.tls_ca is not None:
            channel = grpc.secure_channel(o.target, grpc.ssl_channel_credentials(root_certificates=o.tls_ca))
        else:
            channel = grpc.insecure_channel(o.target)
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
                        raise Fatal(f"{code.name}: {exc.details()}") from exc
                    reason = f"{code.name}: {exc.details()}"
                if self.closing.is_set():
                    return
                if self._bound:  # a stream that worked broke: a new outage starts now
                    down_since, delay = time.monotonic(), FIRST_BACKOFF_S
                    self._disconnected(reason)
                elif not self._connected_once and not told_unreachable:
                    told_unreachable = True
                    self.console.say(
                        f"-- cannot reach {self.options.target} ({reason}); retrying for up to"
                        f" {self.options.reconnect_s:.0f} s (Ctrl-C to quit)"
                    )
                left = down_since + self.options.reconnect_s - time.monotonic()
                if left <= 0:
                    target, budget = self.options.target, self.options.reconnect_s
                    raise Fatal(f"no connection to {target} for {budget:.0f} s; giving up")
                # Jitter: many clients dropped by one restart should not all come back at once.
                self.closing.wait(min(delay * random.uniform(0.8, 1.2), left))
                delay = min(delay * 2, MAX_BACKOFF_S)
        except Fatal as exc:
            self._fail(str(exc))
        except Exception as exc:  # a bug here must not leave the user typing into nothing
            self._fail(f"chat link failed: {type(exc).__name__}: {exc}")

    def _fail(self, message: str) -> None:
        self.fatal = message
        self.console.say(f"!! {message}")
        with self._lock:
            for turn in self._in_flight:
                turn.done.set()
        self.console.interrupt()

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
                event_types=["state_changed"],
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
                raise Fatal(f"the server refused the stream: {first.error.error_code}: {first.error.message}")
            state = self.get_state()
            reconnect = self._connected_once
            with self._lock:
                self._bound = True
                self._known_state = state.current_state if state is not None else ""
                self._outbox = outbox
                self._connected_once = True
                where = (
                    f"continues in state {state.current_state} ({state.message_count} messages so far)"
                    if state is not None
                    else "is new"
                )
                if reconnect:
                    self.console.say(
                        f"-- reconnected after {time.monotonic() - down_since:.1f} s;"
                        f" conversation {o.conversation_id} {where}"
                    )
                else:
                    self.console.say(f"-- connected to {o.target}; conversation {o.conversation_id} {where}")
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
        self.console.say(f"!! connection lost ({reason}); reconnecting...")
        for turn in lost:
            self.console.say(
                f"!! not confirmed: {turn.text!r} may not have reached the bot;"
                " /state shows whether it counted, send it again if not"
            )
            turn.done.set()
        if settling is not None:
            settling.done.set()

    # Responses ---------------------------------------------------------------

    def _handle(self, response: pb.ConversationStreamResponse) -> None:
        kind = response.WhichOneof("response_type")
        if kind == "message_response":
            self._on_reply(response.message_response)
        elif kind == "event":
            self._on_event(response.event)
        elif kind == "error":
            error = response.error
            tail = "" if error.recoverable else " (the server closes the stream)"
            self.console.say(f"!! error {error.error_code}: {error.message}{tail}")
            with self._lock:
                # Responses come in request order; an error with messages in flight answers the oldest.
                turn = self._in_flight.popleft() if self._in_flight else None
            if turn is not None:
                turn.done.set()

    def _on_reply(self, reply: pb.ProcessMessageResponse) -> None:
        lines, choices = render(reply.response)
        if "handoff" in reply.actions_performed:
            lines.append("== handed over to a person: someone will answer you here ==")
        with self._lock:
            turn = self._in_flight.popleft() if self._in_flight else None
            self._choices = choices
            self._flow_confirmed = True
            expect_event = reply.current_state != self._known_state
            self._known_state = reply.current_state
            if turn is not None and expect_event:
                turn.answered_at = time.monotonic()
                self._settling = turn
        self.console.say(*lines)
        if turn is not None and not expect_event:
            turn.done.set()

    def _on_event(self, event: pb.StreamEvent) -> None:
        data = _as_dict(event.event_data)
        if event.event_type == "state_changed":
            before, after = str(data.get("from") or "(new)"), str(data.get("to") or "")
            with self._lock:
                self._known_state = after
                settling, self._settling = self._settling, None
            self.console.say(f"-- state: {before} -> {after}")
            if settling is not None:
                settling.done.set()
        else:
            self.console.say(f"-- event {event.event_type}: {data}")


# Rendering -------------------------------------------------------------------------


def render(content: pb.MessageContent) -> tuple[list[str], list[Choice]]:
    """The bot's response as lines for the terminal, and the choices it numbered."""
    lines: list[str] = []
    if content.text:
        first, *rest = content.text.splitlines() or [""]
        lines.append(f"bot> {first}")
        lines += [f"     {line}" for line in rest]
    if content.HasField("media"):
        lines.append(f"     {_media(content)}")
    if content.HasField("location"):
        loc = content.location
        name = ", ".join(p for p in (loc.place_name, loc.address) if p)
        lines.append(f"     [location] {name + ' ' if name else ''}({loc.latitude:.5f}, {loc.longitude:.5f})")
    if content.HasField("form"):
        lines.append(f"     [form {content.form.form_id}]")
    choices: list[Choice] = []
    for reply in content.quick_replies:
        choices.append(Choice(reply.title, reply.payload, quick_reply=True))
        lines.append(f"     [{len(choices)}] {reply.title}")
    for button in content.buttons:
        lines.append(_button_line(button, choices, "     "))
    for card in content.carousel:
        head = card.title + (f" - {card.subtitle}" if card.subtitle else "")
        lines.append(f"     * {head}" + (f" (image: {card.image_url})" if card.image_url else ""))
        for button in card.buttons:
            lines.append(_button_line(button, choices, "         "))
    if not lines:
        lines.append("bot> (no reply)")
    return lines, choices


def _media(content: pb.MessageContent) -> str:
    media = content.media
    kind = common_pb2.MessageType.Name(content.type).removeprefix("MESSAGE_TYPE_").lower()
    label = kind if kind not in ("unknown", "text") else (media.mime_type.split("/")[0] or "media")
    words = media.caption or media.alt_text
    url = media.secure_url or media.url
    mime = f"({media.mime_type})" if media.mime_type else ""
    return f"[{label}] " + " ".join(p for p in (words, url, mime) if p)


def _button_line(button: pb.Button, choices: list[Choice], indent: str) -> str:
    choices.append(Choice(button.title, button.payload, url=button.url))
    link = f" -> {button.url}" if button.url and not button.payload else ""
    return f"{indent}[{len(choices)}] {button.title}{link}"


def describe_state(state: pb.ConversationState) -> list[str]:
    """A conversation state in two or three short lines."""
    head = f"-- state {state.current_state or '(none)'} | flow {state.flow_id}"
    if state.flow_version:
        head += f"@{state.flow_version[:12]}"
    head += f" | {state.message_count} messages | {state.error_count} errors"
    if state.current_intent:
        head += f" | intent {state.current_intent} ({state.intent_confidence:.2f})"
    lines = [head]
    details = []
    for name in ("slots", "variables"):
        values = _as_dict(getattr(state, name))
        if values:
            details.append(f"{name}: " + " ".join(f"{k}={v}" for k, v in sorted(values.items())))
    if state.previous_states:
        details.append("previous: " + " > ".join(state.previous_states[-5:]))
    if details:
        lines.append("   " + " | ".join(details))
    return lines


def _as_dict(struct: Any) -> dict[str, Any]:
    values = json_format.MessageToDict(struct) if struct.fields else {}
    # Struct numbers are doubles: 2.0 reads better as 2.
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in values.items()}


# The command -----------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``chat`` subcommand, added to ``confab``'s subcommands."""
    chat = commands.add_parser("chat", help="chat with a flow in the terminal (over StreamConversation)")
    chat.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT", help="the server")
    chat.add_argument("--tenant", required=True, help="the tenant the conversation belongs to")
    chat.add_argument(
        "--conversation", metavar="ID", help="conversation id; resume it (default: a new random id)"
    )
    chat.add_argument("--flow", default="", metavar="NAME", help="start the conversation on this flow")
    chat.add_argument("--user", default="chat-user", help="user_id of the messages (default chat-user)")
    chat.add_argument("--channel", default="web", choices=CHANNELS, help="channel of the messages")
    credential = chat.add_mutually_exclusive_group()
    credential.add_argument("--api-key", metavar="KEY", help="send x-api-key: KEY")
    credential.add_argument("--token", metavar="JWT", help="send authorization: Bearer JWT")
    chat.add_argument("--tls-ca", metavar="FILE", help="PEM CA to verify the server: use TLS")
    chat.add_argument("--heartbeat", type=float, default=30.0, metavar="S", help="heartbeat interval")
    chat.add_argument(
        "--reconnect-for", type=float, default=60.0, metavar="S", help="give up reconnecting after S seconds"
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.heartbeat <= 0 or args.reconnect_for < 0:
        print("confab: --heartbeat must be positive and --reconnect-for not negative", file=sys.stderr)
        return 2
    metadata: tuple[tuple[str, str], ...] = ()
    if args.api_key:
        metadata = (("x-api-key", args.api_key),)
    elif args.token:
        metadata = (("authorization", f"Bearer {args.token}"),)
    tls_ca = None
    if args.tls_ca:
        try:
            tls_ca = Path(args.tls_ca).read_bytes()
        except OSError as exc:
            print(f"confab: --tls-ca: {exc}", file=sys.stderr)
            return 2
    conversation_id = args.conversation or f"chat-{uuid.uuid4().hex[:12]}"
    options = ChatOptions(
        target=args.target,
        tenant=args.tenant,
        conversation_id=conversation_id,
        flow=args.flow,
        user=args.user,
        channel=args.channel,
        metadata=metadata,
        tls_ca=tls_ca,
        heartbeat_s=args.heartbeat,
        reconnect_s=args.reconnect_for,
    )
    console = Console(out, interactive=sys.stdin.isatty() and out.isatty())
    if not args.conversation:
        console.say(f"-- new conversation {conversation_id} (to resume it: --conversation {conversation_id})")
    return chat(options, console)


def chat(options: ChatOptions, console: Console) -> int:
    if threading.current_thread() is threading.main_thread():
        # Started with SIGINT ignored (a shell's background job, some runners), Python installs no
        # KeyboardInterrupt handler; Ctrl-C, and the link thread's way out of input(), need it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    client = ChatClient(options, console)
    try:
        client.start()
        client.wait_connected()
        console.say("-- type /help for commands; Ctrl-D or /quit leaves")
        while client.fatal is None:
            try:
                line = console.read().strip()
            except EOFError:
                break
            if not line:
                continue
            if line.startswith("/") and not line.startswith("//"):
                if not _command(client, console, line):
                    break
                continue
            line = line[1:] if line.startswith("//") else line
            choice = client.choice_for(line)
            if choice is not None and not choice.payload and choice.url:
                console.say(f"-- a link, nothing to send: {choice.url}")
                continue
            if choice is not None:
                turn = client.send(choice.title, choice.payload, choice.quick_reply)
            else:
                turn = client.send(line)
            client.await_turn(turn)
    except (KeyboardInterrupt, Fatal):
        pass  # Ctrl-C is a normal way out; a fatal link error was already reported
    finally:
        client.close()
        if console.interactive:
            console.out.write("\n")
            console.out.flush()
    return 1 if client.fatal is not None else 0


def _command(client: ChatClient, console: Console, line: str) -> bool:
    """Run a /command; False when the chat should end."""
    name = line.split()[0].lower()
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        console.say(*HELP.splitlines())
        return True
    if name not in ("/state", "/reset"):
        console.say(f"-- unknown command {name}; /help lists them")
        return True
    try:
        if name == "/state":
            state = client.get_state()
            console.say(*(describe_state(state) if state is not None else ["-- no state yet: say something"]))
        else:
            previous = client.reset()
            console.say(f"-- reset (it was in state {previous or '(none)'}); the next message starts over")
    except grpc.RpcError as exc:
        console.say(f"!! {name[1:]} failed: {exc.code().name}: {exc.details()}")
    return True
