"""``confab reload``: load the flow files again on a running server, through the Admin API.

It does what ``kill -HUP <pid>`` does on the server's host (running conversations keep
their version), without the pid, from anywhere the server can be reached: it calls
``confab.admin.v1.Admin/ReloadFlows``, which needs the ``operator`` role when
authentication is on (``--api-key`` or ``--token``, as ``confab shell`` takes them). In
a cluster each host loads its own files: reload each host (``--target`` its edge).

Its output and exit status are those of ``confab shell -c reload``: what loaded, and
0 reloaded, 1 refused (or a flow file failed to load), 2 usage, 3 unreachable.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from confab.tools.connection import ConnectionOptionError, add_connection_arguments, connection_from
from confab.tools.shell.commands import USAGE
from confab.tools.shell.session import Shell
from confab.tools.shell.verbs import AdminVerbs


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``reload`` subcommand, added to ``confab``'s subcommands."""
    reload = commands.add_parser(
        "reload", help="reload the flow files of a running server (Admin ReloadFlows; like kill -HUP)"
    )
    add_connection_arguments(reload)
    reload.add_argument("--json", action="store_true", help="print the answer as JSON")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        connection = connection_from(args)
    except ConnectionOptionError as exc:
        print(f"confab: {exc}", file=sys.stderr)
        return USAGE
    with connection.channel() as channel:
        shell = Shell(AdminVerbs(channel, connection.metadata), out, json_output=args.json, err=sys.stderr)
        return shell.execute("reload")
