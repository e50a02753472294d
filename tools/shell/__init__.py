"""``confab shell``: an interactive operator shell over the admin service (``confab.admin.v1.Admin``).

    confab shell [--target HOST:PORT] [--api-key KEY | --token JWT] [--tls-ca FILE]
                 [-c "COMMAND"] [--json]

Interactively it reads commands at ``confab> `` (prompt_toolkit: history, tab completion of
commands, options, and of the tenants and conversation ids seen earlier in the session).
``-c`` runs one command and exits: 0 success, 1 the server said no (NOT_FOUND,
INVALID_ARGUMENT, PERMISSION_DENIED, an action that was not ``ok``...), 2 a usage error,
3 the server cannot be reached. ``--json`` (or ``--json`` after any one command) prints
the server's answer as JSON instead of tables; ``tail --json`` prints one JSON object a line.

The parts, one concern each: ``commands`` (the command table and how a line is read),
``verbs`` (the Admin API calls), ``text_view`` and ``json_view`` (the answers as text and
as JSON), ``completion`` (what Tab offers), ``repl`` (the prompt), ``session`` (a line in,
an exit status out), ``command_line`` (the subcommand's options).
"""

from confab.tools.shell.command_line import add_parser, run
from confab.tools.shell.session import Shell
from confab.tools.shell.verbs import AdminVerbs

__all__ = ["AdminVerbs", "Shell", "add_parser", "run"]
