"""The shell's command table, and how a typed line becomes a command and its arguments.

Nothing here talks to a server: a line is split as a POSIX shell would, its first
word names a :class:`ShellCommand`, and that command's parser reads the rest. A
mistake raises :class:`UsageError` (exit status 2), never exits the process: a typo
must not end an interactive shell.
"""

from __future__ import annotations

import argparse
import enum
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

# Exit statuses of `confab shell -c`.
OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3

QUIT_WORDS = ("quit", "exit")
HELP_WORDS = ("help", "?")
HELP_WIDTH = 50  # a longer synopsis gets a line of its own in `help`


class UsageError(Exception):
    """A command line that cannot be run as typed (exit status 2)."""


class HelpShown(Exception):
    """``COMMAND --help`` printed its usage: nothing more to do."""


class CommandParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # Only -h/--help exits without an error; its text has been printed already.
        raise UsageError(message or "") if status else HelpShown()


class Operand(enum.Enum):
    """What a positional argument names, so completion can offer the names seen so far."""

    TENANT = "tenant"
    CONVERSATION = "conversation"
    STATE = "state"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """One command of the shell: its name, what ``help`` says of it, and how its arguments read."""

    name: str
    summary: str
    synopsis: str
    parser: CommandParser
    operands: tuple[Operand, ...] = ()

    def options(self) -> list[str]:
        return [o for action in self.parser._actions for o in action.option_strings if o.startswith("--")]


class Builtin(enum.Enum):
    NOTHING = "nothing"  # a blank line, or COMMAND --help (already printed)
    HELP = "help"
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class Invocation:
    command: ShellCommand
    args: argparse.Namespace


def _command(
    table: dict[str, ShellCommand],
    name: str,
    summary: str,
    synopsis: str = "",
    *,
    operands: tuple[Operand, ...] = (),
) -> CommandParser:
    # The synopsis is written by hand: argparse's own usage wraps and shows -h/--json everywhere.
    parser = CommandParser(
        prog=name, description=summary, usage=f"{name} {synopsis} [--json]".replace("  ", " ")
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    table[name] = ShellCommand(name, summary, synopsis, parser, operands)
    return parser


def _conversation_operands(parser: CommandParser, *more: str) -> None:
    parser.add_argument("tenant")
    parser.add_argument("conversation")
    for name in more:
        parser.add_argument(name)
    parser.add_argument("reason", nargs="*")


def command_table() -> dict[str, ShellCommand]:
    """Every command, in the order ``help`` lists them."""
    table: dict[str, ShellCommand] = {}
    on_conversation = (Operand.TENANT, Operand.CONVERSATION)
    _command(table, "shards", "the shards, the store and the version (GetCluster)")
    _command(table, "hosts", "the cluster's hosts, their heartbeats and virtual shards (GetCluster)")

    ls = _command(
        table,
        "ls",
        "list conversations, with filters and paging (ListConversations)",
        "[--tenant T] [--state S] [--flow F] [--idle SECONDS] [--handoff] [--resident] [--waiting]"
        " [--page-size N] [--next]",
    )
    ls.add_argument("--tenant", default="")
    ls.add_argument("--state", default="")
    ls.add_argument("--flow", default="")
    ls.add_argument("--idle", type=float, default=0.0, metavar="SECONDS", help="idle longer than")
    ls.add_argument("--handoff", action="store_true", help="only conversations handed to a person")
    ls.add_argument("--resident", action="store_true", help="only conversations live in a shard")
    ls.add_argument(
        "--waiting",
        action="store_true",
        help="only conversations whose turn waits on a webhook (new ones too)",
    )
    ls.add_argument("--page-size", type=int, default=0, metavar="N")
    ls.add_argument("--next", action="store_true", help="the next page of the last listing")

    inspect = _command(
        table,
        "inspect",
        "one conversation: state, mailbox, webhook, last turns (InspectConversation)",
        "TENANT CONVERSATION [--turns N]",
        operands=on_conversation,
    )
    inspect.add_argument("tenant")
    inspect.add_argument("conversation")
    inspect.add_argument("--turns", type=int, default=10, metavar="N", help="last N turns (default 10)")

    tail = _command(
        table,
        "tail",
        "follow events as they happen until Ctrl-C (TailEvents)",
        "[--tenant T] [--conversation C] [--type TYPE ...]",
    )
    tail.add_argument("--tenant", default="")
    tail.add_argument("--conversation", default="")
    tail.add_argument(
        "--type", nargs="+", action="extend", default=[], metavar="TYPE", help="turn transition handoff error"
    )

    reset = _command(
        table,
        "reset",
        "start a conversation over (ResetConversation)",
        "TENANT CONVERSATION [REASON]",
        operands=on_conversation,
    )
    _conversation_operands(reset)
    force = _command(
        table,
        "force",
        "put a conversation in a state (ForceState)",
        "TENANT CONVERSATION STATE [REASON]",
        operands=(*on_conversation, Operand.STATE),
    )
    _conversation_operands(force, "state")
    resume = _command(
        table,
        "resume",
        "hand a conversation back to its flow (ResumeConversation)",
        "TENANT CONVERSATION [REASON]",
        operands=on_conversation,
    )
    _conversation_operands(resume)
    passivate = _command(
        table,
        "passivate",
        "store a conversation and stop its actor (PassivateConversation)",
        "TENANT CONVERSATION [REASON]",
        operands=on_conversation,
    )
    _conversation_operands(passivate)
    abandon = _command(
        table,
        "abandon-webhook",
        "give up the webhook a turn waits on: it takes its failure route (AbandonWebhook)",
        "TENANT CONVERSATION [REASON]",
        operands=on_conversation,
    )
    _conversation_operands(abandon)
    _command(table, "reload", "reload the flow files on every shard (ReloadFlows)")
    restart = _command(table, "restart-shard", "replace one shard process (RestartShard)", "N [REASON]")
    restart.add_argument("shard", type=int, metavar="N")
    restart.add_argument("reason", nargs="*")
    return table


def parse_line(line: str, table: Mapping[str, ShellCommand]) -> Invocation | Builtin:
    """What ``line`` asks for; UsageError if it cannot be run as typed."""
    try:
        words = shlex.split(line)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(str(exc)) from exc
    if not words:
        return Builtin.NOTHING
    name, rest = words[0], words[1:]
    if name in QUIT_WORDS:
        return Builtin.QUIT
    if name in HELP_WORDS:
        return Builtin.HELP
    command = table.get(name)
    if command is None:
        raise UsageError(f"unknown command {name!r} (type help)")
    try:
        args = command.parser.parse_args(rest)
    except HelpShown:
        return Builtin.NOTHING
    return Invocation(command, args)


def help_text(table: Mapping[str, ShellCommand]) -> str:
    rows = [(c.parser.usage or c.name, c.summary) for c in table.values()]
    rows += [("help", "this list"), ("quit | exit | Ctrl-D", "leave the shell")]
    width = min(max(len(usage) for usage, _ in rows), HELP_WIDTH)
    # A long synopsis gets a line of its own, so the summaries stay in one narrow column.
    lines = [
        f"  {usage.ljust(width)}  {summary}"
        if len(usage) <= width
        else f"  {usage}\n  {'':{width}}  {summary}"
        for usage, summary in rows
    ]
    return "\n".join(["Commands (--json on any prints JSON; COMMAND --help for its options):", *lines])


def reason(args: argparse.Namespace, default: str) -> str:
    """The free words after a command's operands, or ``default``."""
    words: list[str] = args.reason
    return " ".join(words) or default
