"""A real shard in the test's own process, driven one turn at a time (no actors, no sockets).

For dialogue tests that need what only a shard does: its conversations, the store,
webhooks answered off the shard's thread, flow reloads keeping running conversations
on their version, the history a shard records for replays. Like the in-process runner it
can pin a turn's clock and answer its webhooks and model calls as a dialogue says (the shard
still suspends the turn and finishes it when the answer is in), so the two can be compared.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from confab.actors.settings import ShardSettings
from confab.actors.shard import Shard
from confab.runtime.errors import ConfabError, Unavailable
from confab.runtime.flows.authoring.dialogues import (
    ScriptedGenerations,
    TurnView,
    WebhookAnswers,
    dialogue_message,
    webhook_result,
)
from confab.runtime.model import (
    ConversationKey,
    InboundMessage,
    ResetResult,
    StateResult,
    TurnResult,
)
from confab.runtime.models import GENERATE, ChunkSink, ModelClient, ModelResult
from confab.runtime.outbound import answered
from confab.runtime.protocol.directory import vshard_of
from confab.runtime.protocol.records import Command, CommandBatch, CommandKind, decode_outcome, is_deferred
from confab.runtime.store import Retention, open_store
from confab.runtime.webhooks import WebhookClient, WebhookResult, WebhookTarget

WEBHOOK_WAIT_S = 30.0


def hold_every_vshard(shard: Shard) -> None:
    """Make ``shard`` hold every virtual shard, as the placement of a one-shard cluster would."""
    shard.ownership.want(range(shard.settings.vshards))
    shard.tick_ownership()


def routed(shard: Shard, commands: Sequence[Command]) -> list[Command]:
    """``commands`` as a shard reads them from the edge: with the epochs ``shard`` holds their
    virtual shards at, as the edge's router routes them (a command for a virtual shard it does
    not hold goes with epoch 0)."""
    held = shard.ownership.held
    return [replace(c, epoch=held.get(vshard_of(c.key, shard.settings.vshards), 0)) for c in commands]


class AnsweringWebhooks(WebhookClient):
    """A webhook client that answers the calls named in ``answers`` at once, as a dialogue
    file gives them (``dialogues.webhook_result``), and makes the others."""

    def __init__(self, targets: Iterable[WebhookTarget]) -> None:
        super().__init__(targets)
        self.answers: WebhookAnswers = {}

    def call(self, name: str, body: dict[str, Any]) -> Future[WebhookResult]:
        if name not in self.answers:
            return super().call(name, body)
        answered: Future[WebhookResult] = Future()
        answered.set_result(webhook_result(self.answers[name]))
        return answered


class ScriptedModels(ModelClient):
    """A model client that calls no model: each call gets the next of ``scripted``'s answers, as
    a dialogue gives them, its chunks handed on one by one as a provider's would be: a generate
    step's call its scripted generation, a model recognizer's its scripted reading (by the
    call's ``kind``)."""

    def __init__(self) -> None:
        super().__init__([])
        self.scripted = ScriptedGenerations()

    def call(
        self,
        name: str,
        request: Mapping[str, Any],
        on_chunk: ChunkSink | None = None,
        cancel: threading.Event | None = None,
        *,
        within_s: float | None = None,
        kind: str = GENERATE,
    ) -> Future[ModelResult]:
        result = self.scripted.next(kind)
        if on_chunk is not None and result.get("ok"):
            for piece in result.get("pieces") or [result["text"]]:
                on_chunk(piece)
        return answered(result)


class LocalRunner:
    """Runs turns on a real shard in this process, with a throwaway store."""

    pins_time = True

    def __init__(
        self,
        flow_dirs: Sequence[str] = (),
        default_flow: str = "echo",
        webhooks: Sequence[WebhookTarget] = (),
        *,
        history_s: float = 0.0,
        store_path: Path | None = None,
    ) -> None:
        """``history_s``: how long each turn's message is kept for replays (0: not recorded);
        ``store_path``: the store file (default: one in a directory removed on close)."""
        self._directory = tempfile.TemporaryDirectory(prefix="confab-dialogues-")
        self.store_path = store_path or Path(self._directory.name) / "dialogues.sqlite3"
        settings = ShardSettings(
            store_path=str(self.store_path),
            synchronous="OFF",
            resident_limit=10_000,
            default_flow=default_flow,
            retention=Retention(turns_kept=4, idempotency_window_s=60.0, history_s=history_s),
            flow_dirs=tuple(flow_dirs),
            webhooks=tuple(webhooks),
        )
        store = open_store(settings.store_path, synchronous="OFF", retention=settings.retention)
        self.shard = Shard(0, 1, settings, store)
        self.shard.webhooks.close()
        self.webhooks = self.shard.webhooks = AnsweringWebhooks(settings.webhooks)
        self.shard.models.close()
        self.models = self.shard.models = ScriptedModels()
        hold_every_vshard(self.shard)

    def close(self) -> None:
        self.shard.close()
        self._directory.cleanup()

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(
        self,
        conversation: ConversationKey,
        text: str,
        payload: str,
        channel: str,
        flow: str,
        *,
        language: str = "",
        now: float | None = None,
        webhooks: WebhookAnswers | None = None,
        seen_turn: int | None = None,
        generations: ScriptedGenerations | None = None,
    ) -> TurnView:
        message = dialogue_message(text, payload, channel, flow, language, seen_turn)
        return TurnView.of(
            self.turn(conversation, message, now=now, webhooks=webhooks, generations=generations)
        )

    def turn(
        self,
        conversation: ConversationKey,
        message: InboundMessage,
        *,
        now: float | None = None,
        webhooks: WebhookAnswers | None = None,
        generations: ScriptedGenerations | None = None,
    ) -> TurnResult:
        """One turn through the shard, at ``now`` (default: the time), its webhook calls
        answered by ``webhooks`` where they name them, its model calls by ``generations``."""
        self.shard.clock = time.time if now is None else lambda: now
        self.webhooks.answers = webhooks or {}
        self.models.scripted = generations or ScriptedGenerations()
        command = Command(CommandKind.TURN, uuid.uuid4().hex, conversation, message)
        batch = CommandBatch(1, routed(self.shard, [command]))
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
        return outcome

    def reset(self, conversation: ConversationKey, now: float | None = None) -> str:
        """Reset the conversation, as ResetConversation does (at ``now``); the state it was in."""
        self.shard.clock = time.time if now is None else lambda: now
        outcome = self._run(Command(CommandKind.RESET, uuid.uuid4().hex, conversation, "test reset"))
        assert isinstance(outcome, ResetResult), outcome
        return outcome.previous_state

    def force_state(self, conversation: ConversationKey, state: str) -> None:
        """Move the conversation to ``state``, as an operator does (Admin.ForceState)."""
        outcome = self._run(Command(CommandKind.FORCE_STATE, uuid.uuid4().hex, conversation, state))
        assert isinstance(outcome, StateResult), outcome

    def _run(self, command: Command) -> object:
        ((_, answer),) = self.shard.run_round([(None, CommandBatch(1, routed(self.shard, [command])))])
        (wire,) = answer.outcomes
        outcome = decode_outcome(wire)
        if isinstance(outcome, ConfabError):
            raise outcome
        return outcome
