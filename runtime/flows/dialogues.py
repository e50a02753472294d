"""Scripted dialogues: user lines in, expected responses and states out.

A flow author's test file (``confab flows test FILE``)::

    flow: pizza                  # the flow each dialogue runs (processing hint force_flow)
    tenant: acme                 # optional
    dialogues:
      - name: two large pizzas
        channel: web             # optional (web)
        turns:
          - user: "hi"
            expect: {state: greet, says: "order a pizza"}
          - payload: ORDER
            expect: {state: take_order, says: "Which size"}
          - user: "2 large please"
            expect: {state: confirm, slots: {size: large, quantity: 2}}

A turn sends ``user`` (text) and/or ``payload``. Every key of ``expect`` is optional:
``says`` (a piece of the response text, or a list of pieces), ``says_not``,
``state``, ``intent``, ``slots`` and ``variables`` (the given keys must have these
values), ``actions`` (these must be among actions_performed), ``quick_replies``
and ``buttons`` (their titles, exactly), ``error_count``.

Each dialogue runs on a fresh conversation, through a :class:`TurnRunner`: the
local one here runs a real shard (conversation actors, flows, a throwaway store)
in this process; ``tools.flows_cli`` also has one that talks to a server.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..errors import ConfabError, Unavailable
from ..model import Content, ConversationKey, InboundMessage, ProcessingHints, TurnResult
from ..protocol.records import Command, CommandBatch, CommandKind, decode_outcome, is_deferred
from ..store import Retention, open_store
from ..webhooks import WebhookTarget

WEBHOOK_WAIT_S = 30.0
EXPECT_KEYS = (
    "says",
    "says_not",
    "state",
    "intent",
    "slots",
    "variables",
    "actions",
    "quick_replies",
    "buttons",
    "error_count",
)


class DialogueFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class DialogueTurn:
    user: str
    payload: str
    expect: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Dialogue:
    name: str
    channel: str
    turns: tuple[DialogueTurn, ...]


@dataclass(frozen=True, slots=True)
class DialogueFile:
    flow: str
    tenant: str
    dialogues: tuple[Dialogue, ...]


@dataclass(frozen=True, slots=True)
class TurnView:
    """What a turn answered, whichever way it was run."""

    text: str
    state: str
    intent: str
    slots: dict[str, Any]
    variables: dict[str, Any]
    actions: list[str]
    quick_replies: list[str]
    buttons: list[str]
    error_count: int

    @classmethod
    def of(cls, result: TurnResult) -> TurnView:
        r, s = result.response, result.state
        return cls(
            text=r.text,
            state=s.current_state,
            intent=s.current_intent,
            slots=dict(s.slots),
            variables=dict(s.variables),
            actions=list(result.actions_performed),
            quick_replies=[q.title for q in r.quick_replies],
            buttons=[b.title for b in r.buttons],
            error_count=s.error_count,
        )


@dataclass(slots=True)
class DialogueResult:
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class TurnRunner(Protocol):
    def send(
        self, conversation: ConversationKey, text: str, payload: str, channel: str, flow: str
    ) -> TurnView: ...


def load_dialogues(path: Path) -> DialogueFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DialogueFileError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("dialogues"), list):
        raise DialogueFileError(f"{path}: expected a mapping with a list of dialogues")
    dialogues = []
    for i, raw in enumerate(data["dialogues"]):
        where = f"{path}: dialogues[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("turns"), list):
            raise DialogueFileError(f"{where}: expected a mapping with a list of turns")
        turns = []
        for j, turn in enumerate(raw["turns"]):
            if not isinstance(turn, dict) or not ("user" in turn or "payload" in turn):
                raise DialogueFileError(f"{where}.turns[{j}]: a turn needs `user` or `payload`")
            expect = turn.get("expect") or {}
            unknown = sorted(set(expect) - set(EXPECT_KEYS))
            if unknown:
                raise DialogueFileError(
                    f"{where}.turns[{j}]: unknown expectations {unknown}; known: {EXPECT_KEYS}"
                )
            turns.append(DialogueTurn(str(turn.get("user", "")), str(turn.get("payload", "")), dict(expect)))
        dialogues.append(
            Dialogue(str(raw.get("name", f"dialogue {i + 1}")), str(raw.get("channel", "web")), tuple(turns))
        )
    return DialogueFile(
        str(data.get("flow", "")), str(data.get("tenant", "dialogue-tests")), tuple(dialogues)
    )


def check(expect: dict[str, Any], view: TurnView) -> list[str]:
    """What in ``view`` differs from ``expect`` (empty when the turn went as expected)."""
    problems = []
    says = expect.get("says", [])
    for piece in [says] if isinstance(says, str) else says:
        if piece.lower() not in view.text.lower():
            problems.append(f"expected the response to say {piece!r}; it said {view.text!r}")
    says_not = expect.get("says_not", [])
    for piece in [says_not] if isinstance(says_not, str) else says_not:
        if piece.lower() in view.text.lower():
            problems.append(f"expected the response not to say {piece!r}; it said {view.text!r}")
    for key in ("state", "intent", "error_count"):
        if key in expect and expect[key] != getattr(view, key):
            problems.append(f"expected {key} {expect[key]!r}, got {getattr(view, key)!r}")
    for key in ("slots", "variables"):
        actual = getattr(view, key)
        for name, value in (expect.get(key) or {}).items():
            if actual.get(name) != value:
                problems.append(f"expected {key}.{name} = {value!r}, got {actual.get(name)!r}")
    missing = [a for a in expect.get("actions", []) if a not in view.actions]
    if missing:
        problems.append(f"expected actions {missing} among {view.actions}")
    for key in ("quick_replies", "buttons"):
        if key in expect and list(expect[key]) != getattr(view, key):
            problems.append(f"expected {key} {expect[key]!r}, got {getattr(view, key)!r}")
    return problems


def run_dialogues(file: DialogueFile, runner: TurnRunner) -> list[DialogueResult]:
    results = []
    for dialogue in file.dialogues:
        result = DialogueResult(dialogue.name)
        key = ConversationKey(file.tenant, f"dialogue-{uuid.uuid4().hex[:12]}")
        for n, turn in enumerate(dialogue.turns, start=1):
            try:
                view = runner.send(key, turn.user, turn.payload, dialogue.channel, file.flow)
            except ConfabError as exc:
                result.problems.append(f"turn {n} ({turn.user or turn.payload!r}): failed: {exc.message}")
                break
            problems = check(turn.expect, view)
            if problems:
                result.problems.extend(f"turn {n} ({turn.user or turn.payload!r}): {p}" for p in problems)
                break
        results.append(result)
    return results


class LocalRunner:
    """Runs turns on a real shard in this process, with a throwaway store."""

    def __init__(
        self,
        flow_dirs: Sequence[str] = (),
        default_flow: str = "echo",
        webhooks: Sequence[WebhookTarget] = (),
    ) -> None:
        from ...actors.messages import ShardSettings  # actors import flows: import at use
        from ...actors.shard import Shard

        self._directory = tempfile.TemporaryDirectory(prefix="confab-dialogues-")
        settings = ShardSettings(
            store_path=str(Path(self._directory.name) / "dialogues.sqlite3"),
            synchronous="OFF",
            resident_limit=10_000,
            default_flow=default_flow,
            retention=Retention(turns_kept=4, idempotency_window_s=60.0),
            flow_dirs=tuple(flow_dirs),
            webhooks=tuple(webhooks),
        )
        store = open_store(settings.store_path, synchronous="OFF", retention=settings.retention)
        self.shard = Shard(0, 1, settings, store)

    def close(self) -> None:
        self.shard.close()
        self._directory.cleanup()

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(
        self, conversation: ConversationKey, text: str, payload: str, channel: str, flow: str
    ) -> TurnView:
        message = InboundMessage(
            user_id="dialogue",
            content=Content(text=text, payload=payload),
            channel=channel,
            hints=ProcessingHints(force_flow=flow),
        )
        batch = CommandBatch(1, [Command(CommandKind.TURN, uuid.uuid4().hex, conversation, message)])
        ((_, answer),) = self.shard.run_round([(None, batch)])
        (wire,) = answer.outcomes
        give_up = time.monotonic() + WEBHOOK_WAIT_S
        while is_deferred(wire):  # the turn waits for a webhook: finish it once it answered
            if time.monotonic() > give_up:
                raise Unavailable("the turn's webhook did not answer")
            time.sleep(0.005)
            for _, (_, _, late) in self.shard.finish_webhooks():
                wire = late
        outcome = decode_outcome(wire)
        if isinstance(outcome, ConfabError):
            raise outcome
        assert isinstance(outcome, TurnResult)
        return TurnView.of(outcome)


def dialogue_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            yield path
