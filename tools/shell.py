"""``confab shell``: an interactive operator shell over the admin service (``confab.admin.v1.Admin``).

    confab shell [--target HOST:PORT] [--api-key KEY | --token JWT] [--tls-ca FILE]
                 [-c "COMMAND"] [--json]

Interactively it reads commands at ``confab> `` (prompt_toolkit: history, tab completion of
commands, options, and of the tenants and conversation ids seen earlier in the session).
``-c`` runs one command and exits: 0 success, 1 the server said no (NOT_FOUND,
INVALID_ARGUMENT, PERMISSION_DENIED, an action that was not ``ok``...), 2 a usage error,
3 the server cannot be reached. ``--json`` (or ``--json`` after any one command) prints
the server's answer as JSON instead of tables; ``tail --json`` prints one JSON object a line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from ..protos import admin_pb2 as admin
from ..protos import admin_pb2_grpc as admin_grpc

PROMPT = "confab> "
DEFAULT_TARGET = "127.0.0.1:50051"  # where `make serve` listens
CALL_TIMEOUT_S = 15.0  # unary calls; restart-shard and reload answer after the work is done
HISTORY_FILE = Path("~/.confab_history")
RESPONSE_WIDTH = 40  # a turn's response is cut to this in the turns table
VALUE_WIDTH = 60  # any other single value in a table or a key=value list

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
# Codes that mean the call never reached a server that could answer it.
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


class UsageError(Exception):
    """A command line that cannot be run as typed (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting: a typo must not end the shell."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # Only -h/--help exits without an error; its text has been printed already.
        raise UsageError(message or "") if status else _HelpShown()


class _HelpShown(Exception):
    """``COMMAND --help`` printed its usage: nothing more to do."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    parser: _Parser
    run: Callable[[argparse.Namespace], int]


@dataclass(slots=True)
class Learned:
    """Names seen in answers this session, offered by tab completion."""

    tenants: set[str] = field(default_factory=set)
    conversations: dict[str, set[str]] = field(default_factory=dict)  # tenant -> ids
    states: set[str] = field(default_factory=set)

    def conversation(self, tenant: str, conversation: str) -> None:
        if tenant:
            self.tenants.add(tenant)
            if conversation:
                self.conversations.setdefault(tenant, set()).add(conversation)

    def ids(self, tenant: str | None) -> set[str]:
        if tenant and tenant in self.conversations:
            return self.conversations[tenant]
        return {c for ids in self.conversations.values() for c in ids}


# Formatting ----------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """A plain text table: columns as wide as their widest cell; ``right`` columns right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    aligned = set(right)

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in aligned else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def cut(text: str, width: int = VALUE_WIDTH) -> str:
    """One line of at most ``width`` characters: a table row must stay a row."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def value(item: Any) -> str:
    if isinstance(item, float) and item.is_integer():
        return str(int(item))  # Struct numbers are doubles; 2.0 slots read as 2
    if isinstance(item, str):
        return item
    return json.dumps(item, separators=(",", ":"), default=str)


def pairs(mapping: dict[str, Any] | None) -> str:
    if not mapping:
        return "-"
    return " ".join(f"{k}={cut(value(v))}" for k, v in sorted(mapping.items()))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def clock(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def to_dict(message: Message) -> dict[str, Any]:
    # Zeros and empty strings too: a script reading "index" or "mailbox_depth" must find them.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# The shell ------------------------------------------------------------------


class Shell:
    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Sequence[tuple[str, str]] = (),
        out: TextIO | None = None,
        json_output: bool = False,
        err: TextIO | None = None,
    ) -> None:
        self.stub = admin_grpc.AdminStub(channel)
        self.metadata = tuple(metadata)
        self.out = out or sys.stdout
        self.err = err or self.out  # -c sends errors to stderr, so stdout stays parseable
        self.json_output = json_output
        self.learned = Learned()
        self._listing: admin.ListConversationsRequest | None = None  # for `ls --next`
        self._next_token = ""
        self.commands: dict[str, Command] = {}
        self._define()

    # Plumbing ---------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(f"error: {text}".rstrip() + "\n")
        self.err.flush()

    def emit_json(self, data: Any) -> None:
        self.say(json.dumps(data, indent=2, sort_keys=True, default=str))

    def _add(
        self, name: str, summary: str, run: Callable[[argparse.Namespace], int], synopsis: str = ""
    ) -> _Parser:
        # The synopsis is written by hand: argparse's own usage wraps and shows -h/--json everywhere.
        parser = _Parser(
            prog=name, description=summary, usage=f"{name} {synopsis} [--json]".replace("  ", " ")
        )
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")
        self.commands[name] = Command(name, summary, parser, run)
        return parser

    def execute(self, line: str) -> int:
        """Run one command line; print its output or one ``error:`` line; return its exit status."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.error(str(exc))
            return USAGE
        if not words:
            return OK
        name, rest = words[0], words[1:]
        if name in ("quit", "exit"):
            raise EOFError
        if name in ("help", "?"):
            self.say(self.help_text())
            return OK
        command = self.commands.get(name)
        if command is None:
            self.error(f"unknown command {name!r} (type help)")
            return USAGE
        try:
            args = command.parser.parse_args(rest)
        except _HelpShown:
            return OK
        except UsageError as exc:
            self.error(str(exc))
            return USAGE
        args.json = args.json or self.json_output
        try:
            return command.run(args)
        except UsageError as exc:
            self.error(str(exc))
            return USAGE
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            details = exc.details() or ""
            self.error(f"{code.name}: {details}")
            return UNREACHABLE if code in UNREACHABLE_CODES else REFUSED

    def help_text(self) -> str:
        rows = [(c.parser.usage or c.name, c.summary) for c in self.commands.values()]
        rows += [("help", "this list"), ("quit | exit | Ctrl-D", "leave the shell")]
        width = max(len(u) for u, _ in rows)
        # A long synopsis gets a line of its own, so the summaries stay in one narrow column.
        width = min(width, 50)
        lines = [
            f"  {u.ljust(width)}  {s}" if len(u) <= width else f"  {u}\n  {'':{width}}  {s}" for u, s in rows
        ]
        return "\n".join(["Commands (--json on any prints JSON; COMMAND --help for its options):", *lines])

    def _call(self, method: Callable[..., Any], request: Message) -> Any:
        return method(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)

    # Commands ---------------------------------------------------------------

    def _define(self) -> None:
        self._add("shards", "the shards, the store and the version (GetCluster)", self.shards, "")

        ls = self._add(
            "ls",
            "list conversations, with filters and paging (ListConversations)",
            self.ls,
            "[--tenant T] [--state S] [--flow F] [--idle SECONDS] [--handoff] [--resident]"
            " [--page-size N] [--next]",
        )
        ls.add_argument("--tenant", default="")
        ls.add_argument("--state", default="")
        ls.add_argument("--flow", default="")
        ls.add_argument("--idle", type=float, default=0.0, metavar="SECONDS", help="idle longer than")
        ls.add_argument("--handoff", action="store_true", help="only conversations handed to a person")
        ls.add_argument("--resident", action="store_true", help="only conversations live in a shard")
        ls.add_argument("--page-size", type=int, default=0, metavar="N")
        ls.add_argument("--next", action="store_true", help="the next page of the last listing")

        inspect = self._add(
            "inspect",
            "one conversation: state, mailbox, webhook, last turns (InspectConversation)",
            self.inspect,
            "TENANT CONVERSATION [--turns N]",
        )
        inspect.add_argument("tenant")
        inspect.add_argument("conversation")
        inspect.add_argument("--turns", type=int, default=10, metavar="N", help="last N turns (default 10)")

        tail = self._add(
            "tail",
            "follow events as they happen until Ctrl-C (TailEvents)",
            self.tail,
            "[--tenant T] [--conversation C] [--type TYPE ...]",
        )
        tail.add_argument("--tenant", default="")
        tail.add_argument("--conversation", default="")
        tail.add_argument(
            "--type",
            nargs="+",
            action="extend",
            default=[],
            metavar="TYPE",
            help="turn transition handoff error",
        )

        reset = self._add(
            "reset",
            "start a conversation over (ResetConversation)",
            self.reset,
            "TENANT CONVERSATION [REASON]",
        )
        self._conversation_arguments(reset)
        force = self._add(
            "force",
            "put a conversation in a state (ForceState)",
            self.force,
            "TENANT CONVERSATION STATE [REASON]",
        )
        force.add_argument("tenant")
        force.add_argument("conversation")
        force.add_argument("state")
        force.add_argument("reason", nargs="*")
        resume = self._add(
            "resume",
            "hand a conversation back to its flow (ResumeConversation)",
            self.resume,
            "TENANT CONVERSATION [REASON]",
        )
        self._conversation_arguments(resume)
        passivate = self._add(
            "passivate",
            "store a conversation and stop its actor (PassivateConversation)",
            self.passivate,
            "TENANT CONVERSATION [REASON]",
        )
        self._conversation_arguments(passivate)
        self._add("reload", "reload the flow files on every shard (ReloadFlows)", self.reload, "")
        restart = self._add(
            "restart-shard", "replace one shard process (RestartShard)", self.restart_shard, "N [REASON]"
        )
        restart.add_argument("shard", type=int, metavar="N")
        restart.add_argument("reason", nargs="*")

    @staticmethod
    def _conversation_arguments(parser: _Parser) -> None:
        parser.add_argument("tenant")
        parser.add_argument("conversation")
        parser.add_argument("reason", nargs="*")

    def shards(self, args: argparse.Namespace) -> int:
        cluster: admin.Cluster = self._call(self.stub.GetCluster, admin.GetClusterRequest())
        if args.json:
            self.emit_json(to_dict(cluster))
            return OK
        rows = [
            (
                s.index,
                s.pid or "-",
                s.generation,
                duration(s.uptime_s),
                s.resident_conversations,
                s.mailbox_depth,
                s.waiting_on_webhooks,
                s.commands,
                f"{s.rss_bytes / 1e6:.0f}",
                "yes" if s.healthy else f"NO {cut(s.error, 40)}",
            )
            for s in cluster.shards
        ]
        headers = (
            "SHARD",
            "PID",
            "GEN",
            "UPTIME",
            "RESIDENT",
            "MAILBOX",
            "WEBHOOKS",
            "COMMANDS",
            "RSS MB",
            "HEALTHY",
        )
        self.say(table(headers, rows, right=range(1, 9)))
        store = cluster.store
        self.say(f"store: {store.path}  {'ok' if store.ok else 'NOT OK'}  {store.latency_ms:.1f} ms")
        started = clock(cluster.started_at.seconds) if cluster.HasField("started_at") else "-"
        self.say(f"version: {cluster.version}  started {started}  shard restarts {cluster.shard_restarts}")
        return OK

    def ls(self, args: argparse.Namespace) -> int:
        if args.next:
            if self._listing is None or not self._next_token:
                raise UsageError("no further page: the last listing was complete (or there was none)")
            request = admin.ListConversationsRequest()
            request.CopyFrom(self._listing)
            request.page_token = self._next_token
        else:
            if args.page_size < 0 or args.idle < 0:
                raise UsageError("--page-size and --idle must not be negative")
            request = admin.ListConversationsRequest(
                tenant_id=args.tenant,
                state=args.state,
                flow_id=args.flow,
                idle_longer_than_s=args.idle,
                in_handoff=args.handoff,
                resident_only=args.resident,
                page_size=args.page_size,
            )
        reply: admin.ListConversationsResponse = self._call(self.stub.ListConversations, request)
        self._listing, self._next_token = request, reply.next_page_token
        for c in reply.conversations:
            self.learned.conversation(c.tenant_id, c.conversation_id)
            if c.current_state:
                self.learned.states.add(c.current_state)
        if args.json:
            self.emit_json(to_dict(reply))
            return OK
        rows = [
            (
                c.tenant_id,
                c.conversation_id,
                c.current_state or "-",
                f"{c.flow_id}@{c.flow_version}" if c.flow_version else (c.flow_id or "-"),
                c.message_count,
                clock(c.last_activity.seconds) if c.HasField("last_activity") else "-",
                "yes" if c.resident else "",
                "yes" if c.in_handoff else "",
                c.shard,
            )
            for c in reply.conversations
        ]
        headers = (
            "TENANT",
            "CONVERSATION",
            "STATE",
            "FLOW",
            "MSGS",
            "LAST ACTIVITY",
            "RESIDENT",
            "HANDOFF",
            "SHARD",
        )
        self.say(table(headers, rows, right=(4, 8)))
        more = "; `ls --next` for more" if reply.next_page_token else ""
        self.say(f"({len(rows)} conversation{'' if len(rows) == 1 else 's'}{more})")
        return OK

    def inspect(self, args: argparse.Namespace) -> int:
        if args.turns < 0:
            raise UsageError("--turns must not be negative")
        request = admin.InspectConversationRequest(
            tenant_id=args.tenant, conversation_id=args.conversation, last_turns=args.turns
        )
        detail: admin.ConversationDetail = self._call(self.stub.InspectConversation, request)
        self.learned.conversation(detail.tenant_id, detail.conversation_id)
        state = json_format.MessageToDict(detail.state)
        if state.get("current_state"):
            self.learned.states.add(str(state["current_state"]))
        if args.json:
            self.emit_json(to_dict(detail))
            return OK
        flow = f"{state.get('flow_id') or '-'}@{state.get('flow_version') or '?'}"
        self.say(
            f"{detail.tenant_id}/{detail.conversation_id}  shard {detail.shard}"
            f"  {'resident' if detail.resident else 'stored (not resident)'}"
        )
        self.say(
            f"state: {state.get('current_state') or '(new)'}  flow {flow}"
            f"  messages {value(state.get('message_count', 0))}  errors {value(state.get('error_count', 0))}"
        )
        intent = state.get("current_intent") or "-"
        confidence = state.get("intent_confidence")
        known = isinstance(confidence, float) and intent != "-"
        self.say(f"intent: {intent}" + (f" ({confidence:.2f})" if known else ""))
        previous = state.get("previous_states") or []
        self.say(f"previous states: {' > '.join(map(str, previous)) if previous else '-'}")
        self.say(
            f"created {clock(state.get('created_at'))}  last activity {clock(state.get('last_activity'))}"
        )
        self.say(f"slots: {pairs(state.get('slots'))}")
        self.say(f"variables: {pairs(state.get('variables'))}")
        self.say(f"flow memory: {pairs(state.get('flow_memory'))}")
        self.say(f"webhook in flight: {detail.webhook_in_flight or '-'}")
        self.say(f"mailbox: {detail.mailbox_depth} queued")
        if detail.queued:
            self.say(
                table(
                    ("MESSAGE ID", "KIND", "TEXT"),
                    [(q.message_id, q.kind, cut(q.text)) for q in detail.queued],
                )
            )
        if not detail.last_turns:
            self.say("last turns: none")
            return OK
        self.say(f"last {len(detail.last_turns)} turn{'' if len(detail.last_turns) == 1 else 's'}:")
        rows = [
            (
                t.seq,
                cut(t.input, 30) or ("" if t.kind == "turn" else f"({t.kind})"),
                t.intent or "-",
                f"{t.state_before or '(new)'} -> {t.state_after or '-'}",
                cut(t.response, RESPONSE_WIDTH),
                f"{t.duration_ms:.0f}",
            )
            for t in detail.last_turns
        ]
        self.say(table(("SEQ", "INPUT", "INTENT", "STATE", "RESPONSE", "MS"), rows, right=(0, 5)))
        return OK

    def tail(self, args: argparse.Namespace) -> int:
        request = admin.TailEventsRequest(
            tenant_id=args.tenant, conversation_id=args.conversation, event_types=args.type
        )
        # No deadline: a tail runs until the operator stops it.
        call = self.stub.TailEvents(request, metadata=self.metadata)
        if not args.json:
            self.say("-- following events; Ctrl-C to stop")
        try:
            for event in call:
                self.learned.conversation(event.tenant_id, event.conversation_id)
                if args.json:
                    self.say(json.dumps(to_dict(event), sort_keys=True, default=str))
                else:
                    self.say(event_line(event))
        except KeyboardInterrupt:
            # Ctrl-C ends the tail, not the shell; cancelling tells the server to stop sending.
            call.cancel()
            if not args.json:
                self.say("-- tail stopped")
            return OK
        self.say("-- the server ended the tail")
        return OK

    def _action(self, args: argparse.Namespace, result: admin.ActionResult) -> int:
        if args.json:
            self.emit_json(to_dict(result))
        else:
            details = json_format.MessageToDict(result.details)
            self.say(f"{'ok' if result.ok else 'NOT DONE'}: {result.message}")
            if details:
                for key, item in sorted(details.items()):
                    shown = ", ".join(map(value, item)) if isinstance(item, list) else value(item)
                    self.say(f"  {key}: {shown or '-'}")
        return OK if result.ok else REFUSED

    def _target(self, args: argparse.Namespace, default_reason: str) -> admin.ConversationAction:
        self.learned.conversation(args.tenant, args.conversation)
        reason = " ".join(args.reason) or default_reason
        return admin.ConversationAction(
            tenant_id=args.tenant, conversation_id=args.conversation, reason=reason
        )

    def reset(self, args: argparse.Namespace) -> int:
        request = self._target(args, "confab shell reset")
        return self._action(args, self._call(self.stub.ResetConversation, request))

    def force(self, args: argparse.Namespace) -> int:
        self.learned.conversation(args.tenant, args.conversation)
        request = admin.ForceStateRequest(
            tenant_id=args.tenant,
            conversation_id=args.conversation,
            state=args.state,
            reason=" ".join(args.reason) or "confab shell force",
        )
        return self._action(args, self._call(self.stub.ForceState, request))

    def resume(self, args: argparse.Namespace) -> int:
        request = self._target(args, "confab shell resume")
        return self._action(args, self._call(self.stub.ResumeConversation, request))

    def passivate(self, args: argparse.Namespace) -> int:
        request = self._target(args, "confab shell passivate")
        return self._action(args, self._call(self.stub.PassivateConversation, request))

    def reload(self, args: argparse.Namespace) -> int:
        return self._action(args, self._call(self.stub.ReloadFlows, admin.ReloadFlowsRequest()))

    def restart_shard(self, args: argparse.Namespace) -> int:
        request = admin.ShardAction(shard=args.shard, reason=" ".join(args.reason) or "confab shell")
        return self._action(args, self._call(self.stub.RestartShard, request))


def event_line(event: admin.Event) -> str:
    """One event on one line: time, type, conversation, then its data (the known fields first)."""
    at = (
        datetime.datetime.fromtimestamp(event.at.seconds + event.at.nanos / 1e9).strftime("%H:%M:%S.%f")[:-3]
        if event.HasField("at")
        else "--:--:--"
    )
    data = json_format.MessageToDict(event.data)
    parts = [at, event.type.ljust(10), f"{event.tenant_id}/{event.conversation_id}", f"shard {event.shard}"]
    before, after = data.pop("state_before", None), data.pop("state_after", None)
    if before is not None or after is not None:
        parts.append(f"{before or '(new)'} -> {after or '-'}")
    for key in ("input", "intent", "response"):
        if key in data:
            parts.append(f"{key}={cut(value(data.pop(key)), RESPONSE_WIDTH)!r}")
    parts += [f"{k}={cut(value(v), RESPONSE_WIDTH)}" for k, v in sorted(data.items())]
    return "  ".join(parts)


# Interactive mode -------------------------------------------------------------


def _completer(shell: Shell) -> Any:
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.document import Document

    conversation_commands = {"inspect", "reset", "force", "resume", "passivate"}

    class ShellCompleter(Completer):
        """Commands, then each command's options, tenants and conversation ids seen so far."""

        def get_completions(self, document: Document, complete_event: Any) -> Iterator[Completion]:
            text = document.text_before_cursor
            words = text.split()
            if text and not text[-1].isspace():
                current, before = words[-1], words[:-1]
            else:
                current, before = "", words
            if not before:
                candidates: Iterable[str] = [*shell.commands, "help", "quit", "exit"]
            else:
                candidates = self._arguments(before, current)
            for candidate in sorted(set(candidates)):
                if candidate.startswith(current):
                    yield Completion(candidate, start_position=-len(current))

        @staticmethod
        def _arguments(before: list[str], current: str) -> Iterable[str]:
            name = before[0]
            command = shell.commands.get(name)
            if command is None:
                return []
            previous = before[-1]
            tenant = None
            if "--tenant" in before[:-1]:
                tenant = before[before.index("--tenant") + 1]
            if previous == "--tenant":
                return shell.learned.tenants
            if previous == "--conversation":
                return shell.learned.ids(tenant)
            if previous == "--state":
                return shell.learned.states
            if current.startswith("-"):
                return [o for a in command.parser._actions for o in a.option_strings if o.startswith("--")]
            if name in conversation_commands:
                positional = [w for w in before[1:] if not w.startswith("-")]
                if len(positional) == 0:
                    return shell.learned.tenants
                if len(positional) == 1:
                    return shell.learned.ids(positional[0])
                if len(positional) == 2 and name == "force":
                    return shell.learned.states
            return []

    return ShellCompleter()


def _history() -> Any:
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    path = HISTORY_FILE.expanduser()
    # A file only where it can be written: a read-only home must not break the shell.
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    return FileHistory(str(path)) if writable else InMemoryHistory()


def interactive(shell: Shell, target: str) -> int:
    if not sys.stdin.isatty():
        # Commands piped in: no prompt, no line editing; each line is a command.
        for line in sys.stdin:
            try:
                shell.execute(line)
            except EOFError:
                break
        return OK
    from prompt_toolkit import PromptSession

    session: PromptSession[str] = PromptSession(
        history=_history(), completer=_completer(shell), complete_while_typing=False
    )
    shell.say(f"confab shell on {target}; type help for the commands, quit or Ctrl-D to leave")
    while True:
        try:
            line = session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt drops the line typed so far, as a shell does
        except EOFError:
            return OK
        try:
            shell.execute(line)
        except EOFError:
            return OK
        except KeyboardInterrupt:
            shell.say("-- interrupted")


# Command line -------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``shell`` subcommand, added to ``confab``'s subcommands."""
    shell = commands.add_parser("shell", help="operator shell over the admin service")
    shell.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT", help="the server")
    credential = shell.add_mutually_exclusive_group()
    credential.add_argument("--api-key", metavar="KEY", help="send x-api-key: KEY")
    credential.add_argument("--token", metavar="JWT", help="send authorization: Bearer JWT")
    shell.add_argument("--tls-ca", metavar="FILE", help="PEM CA to verify the server: use TLS")
    shell.add_argument(
        "-c", dest="one_command", metavar="COMMAND", help="run COMMAND and exit with its status"
    )
    shell.add_argument("--json", action="store_true", help="print answers as JSON")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    metadata: tuple[tuple[str, str], ...] = ()
    if args.api_key:
        metadata = (("x-api-key", args.api_key),)
    elif args.token:
        metadata = (("authorization", f"Bearer {args.token}"),)
    if args.tls_ca:
        try:
            root = Path(args.tls_ca).read_bytes()
        except OSError as exc:
            print(f"confab: --tls-ca: {exc}", file=sys.stderr)
            return USAGE
        channel = grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=root))
    else:
        channel = grpc.insecure_channel(args.target)
    with channel:
        if args.one_command is not None:
            shell = Shell(channel, metadata, out, json_output=args.json, err=sys.stderr)
            try:
                return shell.execute(args.one_command)
            except EOFError:  # `-c quit`
                return OK
            except KeyboardInterrupt:  # `-c tail` ended with Ctrl-C outside the tail loop
                return OK
        return interactive(Shell(channel, metadata, out, json_output=args.json), args.target)
