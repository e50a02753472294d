"""The interactive shell: a prompt with history and completion, or commands piped in one a line."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from confab.tools.shell.commands import OK
from confab.tools.shell.completion import completions
from confab.tools.shell.session import Shell

PROMPT = "confab> "
HISTORY_FILE = Path("~/.confab_history")


class ShellCompleter(Completer):
    """Offers, at Tab, what ``completion`` works out for the line typed so far."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        current, offered = completions(self.shell.commands, self.shell.learned, document.text_before_cursor)
        for candidate in offered:
            yield Completion(candidate, start_position=-len(current))


def history() -> History:
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
    session: PromptSession[str] = PromptSession(
        history=history(), completer=ShellCompleter(shell), complete_while_typing=False
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
