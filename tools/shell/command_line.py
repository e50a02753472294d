"""The ``confab shell`` subcommand: its options, and the channel and shell they make."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from confab.tools.connection import ConnectionOptionError, add_connection_arguments, connection_from
from confab.tools.shell.commands import OK, USAGE
from confab.tools.shell.session import Shell
from confab.tools.shell.verbs import AdminVerbs


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``shell`` subcommand, added to ``confab``'s subcommands."""
    shell = commands.add_parser("shell", help="operator shell over the admin service")
    add_connection_arguments(shell)
    shell.add_argument(
        "-c", dest="one_command", metavar="COMMAND", help="run COMMAND and exit with its status"
    )
    shell.add_argument("--json", action="store_true", help="print answers as JSON")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        connection = connection_from(args)
    except ConnectionOptionError as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return USAGE
    with connection.channel() as channel:
        verbs = AdminVerbs(channel, connection.metadata)
        if args.one_command is not None:
            shell = Shell(verbs, out, json_output=args.json, err=sys.stderr)
            try:
                return shell.execute(args.one_command)
            except EOFError:  # `-c quit`
                return OK
            except KeyboardInterrupt:  # `-c tail` ended with Ctrl-C outside the tail loop
                return OK
        from confab.tools.shell.repl import (
            interactive,  # prompt_toolkit is loaded only for a person at a prompt
        )

        return interactive(Shell(verbs, out, json_output=args.json), args.target)
