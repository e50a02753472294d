"""``confab chat``'s terminal: a prompt, the bot's answers and the link's news, on top of :class:`ChatClient`.

The bot's quick replies, buttons and carousel buttons are numbered; typing the number
sends that choice (its payload, its title as text). ``/state``, ``/reset``, ``/help`` and
``/quit`` are the chat's own commands; ``//text`` sends ``/text``. News from the link
(a reply, a lost connection) may arrive while the user types: :class:`Console` writes it
above the prompt and draws the prompt and the typed text again.

A reply the flow generates is shown as it is written (its ``response.delta`` pieces,
appended to one open line; a second generation of the same reply starts a line of its own).
When the reply comes its text is not shown again if it is what was written; if it is not (the
generation failed and the flow answered otherwise, or the flow said more around it), what was
written is marked ``(replaced)`` and the reply is shown whole below it.

A line finished while a reply was still to come was typed ahead (:mod:`typeahead`): it is sent
with the turn of the reply that was on the screen then, and a number in it goes as text, for the
server to read against the choices that were on the screen then (not the new reply's).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TextIO

import grpc

from confab.protos import mcp_engine_pb2 as pb
from confab.tools.chat.client import ChatClient, ChatFailed, ChatListener, ChatOptions, Turn, delta_piece
from confab.tools.chat.render import (
    INDENT,
    REPLACED,
    Choice,
    as_dict,
    describe_state,
    render,
    streamed_piece,
    text_lines,
)
from confab.tools.chat.typeahead import TypeAhead

try:  # line editing and history for input(); absent on some platforms, and not needed there
    import readline
except ImportError:  # pragma: no cover
    readline = None  # type: ignore[assignment]

PROMPT = "you> "
HELP = """\
Type a message and press Enter. A number picks the choice shown as [number].
  /state   the conversation's state (GetConversationState)
  /reset   start the conversation over (ResetConversation)
  /help    this text
  /quit    leave (so do Ctrl-D and Ctrl-C)
  //text   sends "/text" as a message"""


class Console:
    """Output that may arrive while the user is typing: it keeps the prompt and typed text intact."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.prompt = PROMPT if interactive else ""  # a pipe gets no prompts in its output
        self._lock = threading.RLock()
        self._prompting = False
        self._interrupted = False
        self._line_open = False  # text was appended to the last line: anything else starts a new one

    def interrupt(self) -> None:
        """Get the main thread out of ``read`` (now or at its next call) with KeyboardInterrupt."""
        with self._lock:
            self._interrupted = True
            if self._prompting:
                # Blocked in input(): only a signal aimed at the main thread gets it out.
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def append(self, text: str) -> None:
        """Text that goes on where the last appended text ended (a reply as it is written)."""
        with self._lock:
            if self._prompting:  # the user types meanwhile: the piece is news, on a line of its own
                self.say(text)
                return
            self.out.write(text)
            self._line_open = True
            self.out.flush()

    def end_line(self) -> None:
        """End the line text was appended to, if one is open."""
        with self._lock:
            if self._line_open:
                self.out.write("\n")
                self.out.flush()
                self._line_open = False

    def say(self, *lines: str) -> None:
        with self._lock:
            self.end_line()
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
            self.end_line()
            self._prompting = True
        try:
            return input(self.prompt)
        finally:
            with self._lock:
                self._prompting = False


class TerminalListener(ChatListener):
    """The link's news as lines on the console; remembers the choices the last reply numbered."""

    def __init__(self, options: ChatOptions, console: Console, typeahead: TypeAhead | None = None) -> None:
        self.options = options
        self.console = console
        self.typeahead = typeahead  # the terminal's lines typed ahead; None: not reading a terminal
        self._lock = threading.Lock()
        self._choices: list[Choice] = []
        self._streamed = ""  # the text of the reply being written, shown as it came
        self._stream_id = ""  # the generation its last piece belonged to

    def choice_for(self, line: str) -> Choice | None:
        with self._lock:
            choices = list(self._choices)
        if line.isdigit() and 1 <= int(line) <= len(choices):
            return choices[int(line) - 1]
        return None

    def forget_choices(self) -> None:
        """The conversation starts over: nothing it showed counts any more."""
        with self._lock:
            self._choices = []
        if self.typeahead is not None:
            self.typeahead.forget()

    def connected(self, state: pb.ConversationState | None, reconnected_after_s: float | None) -> None:
        o = self.options
        where = (
            f"continues in state {state.current_state} ({state.message_count} messages so far)"
            if state is not None
            else "is new"
        )
        if reconnected_after_s is not None:
            self.console.say(
                f"-- reconnected after {reconnected_after_s:.1f} s; conversation {o.conversation_id} {where}"
            )
        else:
            self.console.say(f"-- connected to {o.target}; conversation {o.conversation_id} {where}")

    def unreachable(self, reason: str, retrying_for_s: float) -> None:
        self.console.say(
            f"-- cannot reach {self.options.target} ({reason}); retrying for up to"
            f" {retrying_for_s:.0f} s (Ctrl-C to quit)"
        )

    def disconnected(self, reason: str, unconfirmed: list[Turn]) -> None:
        with self._lock:
            self._streamed = ""
        self.console.say(f"!! connection lost ({reason}); reconnecting...")
        for turn in unconfirmed:
            self.console.say(
                f"!! not confirmed: {turn.text!r} may not have reached the bot;"
                " /state shows whether it counted, send it again if not"
            )

    def held(self, turn: Turn) -> None:
        self.console.say("-- not connected: the message will be sent once the stream is back")

    def delta(self, turn: Turn | None, stream_id: str, sequence: int, text: str) -> None:
        with self._lock:
            first = not self._streamed
            piece = delta_piece(self._streamed, self._stream_id, stream_id, text)
            self._streamed += piece
            self._stream_id = stream_id
        if piece:
            self.console.append(streamed_piece(piece, first))

    def replied(self, turn: Turn | None, reply: pb.ProcessMessageResponse) -> None:
        if self.typeahead is not None:  # before it shows: lines finished until now were typed ahead
            self.typeahead.reply_coming(reply.turn)
        lines, choices = render(reply.response)
        with self._lock:
            self._choices = choices
            streamed, self._streamed, self._stream_id = self._streamed, "", ""
        if streamed and streamed == reply.response.text:
            lines = lines[len(text_lines(streamed)) :]  # on the screen already, as it was written
        elif streamed:
            # What was written is not the reply (the generation failed and the flow answered
            # otherwise, or said more around it): the reply below takes its place.
            lines.insert(0, f"{INDENT}{REPLACED}")
        if "handoff" in reply.actions_performed:
            lines.append("== handed over to a person: someone will answer you here ==")
        self.console.end_line()  # a reply that differs from what was written starts a line of its own
        if lines:
            self.console.say(*lines)

    def state_changed(self, before: str, after: str) -> None:
        self.console.say(f"-- state: {before or '(new)'} -> {after}")

    def stream_error(self, turn: Turn | None, error: pb.StreamError) -> None:
        with self._lock:
            self._streamed, self._stream_id = "", ""  # what was written of a reply that failed does not count
        tail = "" if error.recoverable else " (the server closes the stream)"
        self.console.say(f"!! error {error.error_code}: {error.message}{tail}")

    def event(self, event: pb.StreamEvent) -> None:
        data = as_dict(event.event_data)
        if event.event_type == "agent_message":  # a person answers, whenever they do
            first, *rest = str(data.get("text", "")).splitlines() or [""]
            name = str(data.get("agent") or "a person")
            self.console.say(f"{name} (person): {first}", *(f"{INDENT}{line}" for line in rest))
        elif event.event_type == "operator_action":
            action = str(data.get("action", "")).replace("_", " ")
            why = f" ({data['reason']})" if data.get("reason") else ""
            state = data.get("state") or "(new)"
            self.console.say(f"-- an operator did {action}{why}; the conversation is in state {state}")
        else:
            self.console.say(f"-- event {event.event_type}: {data}")

    def failed(self, message: str) -> None:
        self.console.say(f"!! {message}")
        self.console.interrupt()


def chat(options: ChatOptions, console: Console) -> int:
    """The chat loop: read a line, send it, show the answer; 0 when the user leaves, 1 on failure."""
    if threading.current_thread() is threading.main_thread():
        # Started with SIGINT ignored (a shell's background job, some runners), Python installs no
        # KeyboardInterrupt handler; Ctrl-C, and the link thread's way out of input(), need it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    typeahead = TypeAhead.of(sys.stdin)
    listener = TerminalListener(options, console, typeahead)
    client = ChatClient(options, listener)
    try:
        client.start()
        client.wait_connected()
        console.say("-- type /help for commands; Ctrl-D or /quit leaves")
        while client.fatal is None:
            try:
                typed = console.read()
            except EOFError:
                break
            # Typed before the reply now on the screen came: what its user saw is older.
            seen_turn = typeahead.line_read(typed) if typeahead is not None else None
            line = typed.strip()
            if not line:
                continue
            if line.startswith("/") and not line.startswith("//"):
                if not _command(client, listener, console, line):
                    break
                continue
            line = line[1:] if line.startswith("//") else line
            # A number typed ahead picks from what was on the screen when it was typed: the
            # server, told what that was, reads it; the choices shown now are not those.
            choice = listener.choice_for(line) if seen_turn is None else None
            if choice is not None and not choice.payload and choice.url:
                console.say(f"-- a link, nothing to send: {choice.url}")
                continue
            if choice is not None:
                turn = client.send(choice.title, choice.payload, choice.quick_reply)
            else:
                turn = client.send(line, seen_turn=seen_turn)
            if not client.wait(turn):
                console.say(f"-- no reply after {options.reply_timeout_s:.0f} s; it is shown when it comes")
    except (KeyboardInterrupt, ChatFailed):
        pass  # Ctrl-C is a normal way out; a failed link was already reported
    finally:
        client.close()
        if console.interactive:
            console.out.write("\n")
            console.out.flush()
    return 1 if client.fatal is not None else 0


def _command(client: ChatClient, listener: TerminalListener, console: Console, line: str) -> bool:
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
            previous = client.reset("confab chat /reset")
            listener.forget_choices()
            console.say(f"-- reset (it was in state {previous or '(none)'}); the next message starts over")
    except grpc.RpcError as exc:
        console.say(f"!! {name[1:]} failed: {exc.code().name}: {exc.details()}")
    return True
