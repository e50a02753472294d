"""Tab completion: command names, each command's options, and the names seen so far.

The shell offers what it has seen in the server's answers this session (tenants,
conversation ids, states) where a command expects one: after ``--tenant``, as the
operands of a conversation command, as the state of ``force``. What to offer is worked
out here; the prompt that offers it is ``repl``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confab.tools.shell.commands import HELP_WORDS, QUIT_WORDS, Operand, ShellCommand


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

    def state(self, state: str) -> None:
        if state:
            self.states.add(state)

    def ids(self, tenant: str | None) -> set[str]:
        if tenant and tenant in self.conversations:
            return self.conversations[tenant]
        return {c for ids in self.conversations.values() for c in ids}


def candidates(
    commands: Mapping[str, ShellCommand], learned: Learned, before: list[str], current: str
) -> Iterable[str]:
    """What may come next after the words ``before``, the word being typed being ``current``."""
    if not before:
        return [*commands, HELP_WORDS[0], *QUIT_WORDS]
    command = commands.get(before[0])
    if command is None:
        return []
    previous = before[-1]
    tenant = None
    if "--tenant" in before[:-1]:
        tenant = before[before.index("--tenant") + 1]
    if previous == "--tenant":
        return learned.tenants
    if previous == "--conversation":
        return learned.ids(tenant)
    if previous == "--state":
        return learned.states
    if current.startswith("-"):
        return command.options()
    operands = [w for w in before[1:] if not w.startswith("-")]
    if len(operands) >= len(command.operands):
        return []
    wanted = command.operands[len(operands)]
    if wanted is Operand.TENANT:
        return learned.tenants
    if wanted is Operand.CONVERSATION:
        return learned.ids(operands[0] if operands else None)
    if wanted is Operand.STATE:
        return learned.states
    return []


def completions(commands: Mapping[str, ShellCommand], learned: Learned, text: str) -> tuple[str, list[str]]:
    """For the line typed so far: the word being completed, and what may replace it."""
    words = text.split()
    if text and not text[-1].isspace():
        current, before = words[-1], words[:-1]
    else:
        current, before = "", words
    offered = sorted(set(candidates(commands, learned, before, current)))
    return current, [candidate for candidate in offered if candidate.startswith(current)]
