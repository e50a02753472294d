"""One turn: `confab flows test` and `confab flows replay` run what a server runs.

Every bundled dialogue is played twice, turn by turn: through the in-process runner
(``runtime.flows.authoring.runner``) and through a real shard with its SQLite store
(``tests.shard_runner``), on the same clock and with the same webhook answers (the
dialogue's, else the price service's) and model answers (the dialogue's). Each turn must
give the same reply and leave the same state, whatever the dialogue expects; a turn that
fails must fail alike.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from confab.runtime.errors import ConfabError
from confab.runtime.flows import FlowReply
from confab.runtime.flows.authoring.dialogues import (
    ScriptedGenerations,
    conversation_for_variants,
    dialogue_files,
    load_dialogues,
)
from confab.runtime.flows.authoring.runner import FlowRunner
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.model import Content, ConversationState, InboundMessage, ProcessingHints, TurnResult
from confab.runtime.webhooks import WebhookTarget
from confab.tools.price_service import PriceService
from tests.shard_runner import LocalRunner

DIALOGUES = Path(__file__).parent / "dialogues"
EXAMPLES = DIALOGUES / "examples"
# The clock of the dialogues that pin none (the in-process runner and the shard must share one).
CLOCK = 1_780_000_000.0

# (dialogue file, the flow directories it needs besides the bundled flows)
BUNDLED = [
    *[(path, ()) for path in dialogue_files([DIALOGUES])],
    *[(path, (EXAMPLES / "flows",)) for path in dialogue_files([EXAMPLES])],
]


def shown(value: Any) -> str:
    """A value as both runners can be compared on: JSON (the shard's went through msgpack)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, sort_keys=True, default=str)


def in_process(
    runner: FlowRunner,
    key: Any,
    message: InboundMessage,
    now: float,
    answers: dict[str, Any],
    generations: ScriptedGenerations,
) -> dict[str, str]:
    before = runner.state_of(key)
    state_before = before.current_state if before is not None else ""
    try:
        state, reply = runner.play(
            key, message, now, lambda call: runner.answer(call, answers, key, generations)
        )
    except ConfabError as exc:
        return {"failed": f"{type(exc).__name__}: {exc.message}"}
    return turn_shown(state, reply, state_before)


def on_the_shard(
    shard: LocalRunner,
    key: Any,
    message: InboundMessage,
    now: float,
    answers: dict[str, Any],
    generations: ScriptedGenerations,
) -> dict[str, str]:
    try:
        result: TurnResult = shard.turn(key, message, now=now, webhooks=answers, generations=generations)
    except ConfabError as exc:
        return {"failed": f"{type(exc).__name__}: {exc.message}"}
    reply = FlowReply(result.response, result.context_updates, result.actions_performed, result.ab_variant)
    return turn_shown(result.state, reply, result.state_before)


def turn_shown(state: ConversationState, reply: FlowReply, state_before: str) -> dict[str, str]:
    return {
        "response": shown(reply.response),
        "context_updates": shown(reply.context_updates),
        "actions": shown(reply.actions_performed),
        "ab_variant": reply.ab_variant,
        "state_before": state_before,
        "state": shown(state),
    }


@pytest.mark.parametrize(("path", "dirs"), BUNDLED, ids=lambda p: p.stem if isinstance(p, Path) else "")
def test_the_in_process_runner_and_a_shard_run_the_same_turns(
    path: Path, dirs: tuple[Path, ...], prices: PriceService
) -> None:
    flows, problems = load_flows(list(dirs))
    assert not problems
    file = load_dialogues(path)
    targets = (WebhookTarget("price", prices.url, 2.0, 0),)
    turns = 0
    with (
        FlowRunner(flows, webhooks=targets) as local,
        LocalRunner([str(d) for d in dirs], webhooks=targets) as shard,
    ):
        for n, dialogue in enumerate(file.dialogues):
            flow = local.find_flow(file.flow, file.tenant) if dialogue.variants else None
            key = conversation_for_variants(flow, file.tenant, dialogue.variants, f"same-{n}")
            clock = dialogue.now if dialogue.now is not None else CLOCK
            for t, sent in enumerate(dialogue.turns, start=1):
                clock += sent.after_s
                message = InboundMessage(
                    user_id="dialogue",
                    content=Content(text=sent.user, payload=sent.payload, language=sent.language),
                    channel=dialogue.channel,
                    hints=ProcessingHints(force_flow=file.flow),
                )
                expected = in_process(
                    local, key, message, clock, dialogue.webhooks, dialogue.generations(sent)
                )
                actual = on_the_shard(
                    shard, key, message, clock, dialogue.webhooks, dialogue.generations(sent)
                )
                assert actual == expected, f"{dialogue.name}, turn {t}"
                turns += 1
    assert turns == sum(len(d.turns) for d in file.dialogues) >= 4
