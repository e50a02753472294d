"""What-if replay: conversations recorded by a real shard, replayed against new versions of a flow.

Every store here is written by a real shard (``LocalRunner``) with history on, and read
back the way ``confab flows replay`` reads it (``tools.replay_store``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from confab.runtime.flows import Flow, builtin_flows
from confab.runtime.flows.authoring.dialogues import conversation_for_variants
from confab.runtime.flows.authoring.replay import (
    FAILED,
    RESPONSE,
    SLOTS,
    STATE,
    ConversationReplay,
    RecordedConversation,
    RecordedReset,
    RecordedStep,
    RecordedTurn,
    Replayer,
    ReplayError,
    UnrecordedTurn,
    choose_flow,
    replay_start,
    summarize,
)
from confab.runtime.flows.execution.catalog import bundled_flow_dir, declarative_flows, flow_set_over
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.model import Content, ConversationKey, ConversationState, InboundMessage, TurnResult
from confab.runtime.protocol import codec
from confab.runtime.store import ConversationWrite, TurnRecord, open_store
from confab.runtime.webhooks import WebhookTarget
from confab.tools.cli import main
from confab.tools.flows_replay import since_time
from confab.tools.price_service import PriceService
from confab.tools.replay_store import open_history, read_conversation, recorded_keys
from tests.shard_runner import LocalRunner

TENANT = "acme"
CARD = "4111 1111 1111 1111"  # passes the Luhn check: masked wherever the flow masks card numbers

SHOP = """\
flow: shop
version: "1"
settings:
  start: ask_item
  mask: [card_number]
  session_ttl_s: 86400
intents:
  "yes": {payloads: [YES], keywords: ["yes"]}
  "no": {payloads: [NO], keywords: ["no"]}
slots:
  item: {type: enum, choices: [tea, coffee], prompt: "Tea or coffee?"}
  last4:
    type: regex
    pattern: '\\b(?P<value>\\d{4})\\b'
    prompt: "The last four digits of your card?"
states:
  ask_item:
    collect: [item]
    transitions: [{to: pay}]
  pay:
    collect: [last4]
    transitions:
      - to: confirm
        actions: [{webhook: {name: price, store_as: quote, on_failure: no_price}}]
  confirm:
    on_enter:
      - say:
          text: "One {{ slots.item }} for {{ variables.quote.total }} EUR, card ending {{ slots.last4 }}. OK?"
    transitions:
      - {intent: "yes", to: done}
      - {intent: "no", to: ask_item, actions: [{clear: [slots]}]}
  no_price:
    on_enter: [{say: {text: "No price right now."}}]
  done:
    terminal: true
    on_enter: [{say: {text: "Thanks!"}}]
"""


def shop_version(directory: Path, version: str, *edits: tuple[str, str]) -> Path:
    """The shop flow with ``edits`` (old, new) made, as ``version``, in a directory of its own."""
    text = SHOP.replace('version: "1"', f'version: "{version}"')
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "shop.yaml").write_text(text)
    return directory


def recording_shard(store: Path, flow_dirs: list[Path], prices: PriceService) -> LocalRunner:
    """A real shard that records every turn (history on) into ``store``."""
    return LocalRunner(
        [str(d) for d in flow_dirs],
        webhooks=(WebhookTarget("price", prices.url, 5.0, 0),),
        history_s=3600.0,
        store_path=store,
    )


def chat(shard: LocalRunner, conversation: str, *lines: str, flow: str = "shop") -> list[str]:
    """Send ``lines`` (``[PAYLOAD]`` for a payload); the states the conversation ended each turn in."""
    key = ConversationKey(TENANT, conversation)
    states = []
    for line in lines:
        payload = line[1:-1] if line.startswith("[") else ""
        states.append(shard.send(key, "" if payload else line, payload, "web", flow).state)
    return states


def replay_all(store: Path, new_dirs: list[Path], flow_id: str = "shop", version: str = "") -> ReplayRun:
    """Every conversation of ``store`` that ran ``flow_id``, replayed as ``confab flows replay`` does."""
    flow_set = flow_set_over(new_dirs, [bundled_flow_dir()])
    assert not flow_set.errors, flow_set.errors
    chosen = choose_flow(flow_set.flows, flow_id, version, "")
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    new = next(f for f in flows if isinstance(f, DeclarativeFlow) and f.document is chosen)
    replayer = Replayer(flows, new)
    history = open_history(store)
    try:
        conversations = [read_conversation(history, key) for key in recorded_keys(history, "", 0.0)]
    finally:
        history.close()
    replays = {c.key.conversation_id: replayer.replay(c) for c in conversations if replayer.concerns(c)}
    return ReplayRun(new, replays)


class ReplayRun:
    def __init__(self, flow: Flow, replays: dict[str, ConversationReplay]) -> None:
        self.flow = flow
        self.replays = replays

    def __getitem__(self, conversation_id: str) -> ConversationReplay:
        return self.replays[conversation_id]

    @property
    def outcomes(self) -> dict[str, str]:
        return {c: r.outcome for c, r in self.replays.items()}


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    return shop_version(tmp_path / "v1", "1")


@pytest.fixture
def recorded(tmp_path: Path, v1: Path, prices: PriceService) -> Path:
    """A store with three shop conversations: an order, one with a reset, one an operator moved."""
    store = tmp_path / "store.sqlite3"
    with recording_shard(store, [v1], prices) as shard:
        assert chat(shard, "order", "hi", "tea", "1234", "yes") == ["ask_item", "pay", "confirm", "done"]
        chat(shard, "reset", "hi", "coffee")
        shard.reset(ConversationKey(TENANT, "reset"))
        assert chat(shard, "reset", "coffee", "5678") == ["pay", "confirm"]
        chat(shard, "moved", "hi")
        shard.force_state(ConversationKey(TENANT, "moved"), "no_price")
        chat(shard, "moved", "hello?")
    return store


# --- the same flow: nothing diverges ----------------------------------------------------------------


def test_replaying_against_the_recorded_version_finds_every_turn_the_same(recorded: Path, v1: Path) -> None:
    run = replay_all(recorded, [v1])
    assert run.outcomes == {"moved": "same", "order": "same", "reset": "same"}
    assert {c: r.turns for c, r in run.replays.items()} == {"order": 4, "reset": 4, "moved": 2}
    summary = summarize(run.flow, run.replays.values())
    assert (summary.conversations, summary.same, summary.diverging, summary.turns) == (3, 3, 0, 10)


def test_a_store_without_history_has_nothing_to_replay(
    tmp_path: Path, v1: Path, prices: PriceService
) -> None:
    store = tmp_path / "store.sqlite3"
    with LocalRunner([str(v1)], store_path=store) as shard:  # history_s=0: nothing recorded
        chat(shard, "order", "hi", "tea")
    assert replay_all(store, [v1]).replays == {}


# --- a changed flow: where it diverges ----------------------------------------------------------------


def test_a_changed_response_diverges_at_the_turn_that_says_it(tmp_path: Path, recorded: Path) -> None:
    v2 = shop_version(tmp_path / "v2", "2", ("EUR, card ending", "EUR on the card ending"))
    run = replay_all(recorded, [v2], version="2")
    assert run.outcomes == {"order": "diverges", "reset": "diverges", "moved": "same"}
    first = run["order"].first
    assert first is not None
    assert (first.seq, first.at_state, first.sent, first.differs) == (3, "pay", "1234", (RESPONSE,))
    assert first.recorded.text == "One tea for 9.5 EUR, card ending 1234. OK?"
    # The price in the new words is the recorded webhook answer's: the replay calls no webhook.
    assert first.replayed.text == "One tea for 9.5 EUR on the card ending 1234. OK?"
    assert first.recorded.state == first.replayed.state == "confirm"
    assert run["order"].later == 0 and run["order"].unrecorded_calls == []
    reset = run["reset"].first
    assert reset is not None and reset.seq == 5  # turns 1-2, the reset (3), then 4 and 5
    summary = summarize(run.flow, run.replays.values())
    assert (summary.diverging, summary.same, summary.by_state) == (2, 1, {"pay": 2})


def test_a_changed_route_diverges_in_state_then_counts_the_later_turns_that_differ(
    tmp_path: Path, recorded: Path
) -> None:
    # The new version asks for the card before the item.
    v2 = shop_version(
        tmp_path / "v2",
        "2",
        ("start: ask_item", "start: pay"),
        (
            "    transitions: [{to: pay}]",
            "    transitions: [{to: confirm, actions: [{webhook: {name: price, store_as: quote}}]}]",
        ),
        (
            "      - to: confirm\n        actions: [{webhook:",
            "      - to: ask_item\n        actions: [{webhook:",
        ),
    )
    run = replay_all(recorded, [v2])
    order = run["order"]
    assert order.first is not None
    assert (order.first.seq, order.first.at_state) == (1, "")  # the greeting already differs
    assert order.first.recorded.state == "ask_item" and order.first.replayed.state == "pay"
    assert STATE in order.first.differs and RESPONSE in order.first.differs
    assert order.later == 3
    assert summarize(run.flow, run.replays.values()).by_state == {"": 3}


def test_slots_read_otherwise_are_a_divergence(tmp_path: Path, recorded: Path) -> None:
    v2 = shop_version(tmp_path / "v2", "2", ("choices: [tea, coffee]", "choices: [tea, coffee, cocoa]"))
    assert replay_all(recorded, [v2]).outcomes["order"] == "same"  # tea is still tea
    v3 = shop_version(
        tmp_path / "v3", "3", ("choices: [tea, coffee]", "choices: {black tea: [tea], coffee: []}")
    )
    order = replay_all(recorded, [v3])["order"]
    first = order.first
    assert first is not None and (first.seq, first.differs, first.changed_slots) == (2, (SLOTS,), ("item",))
    assert (first.recorded.slots["item"], first.replayed.slots["item"]) == ("tea", "black tea")
    assert order.later == 2  # the slot stays "black tea" to the end


def test_a_turn_the_new_version_fails_is_a_divergence_and_the_state_stays(
    tmp_path: Path, recorded: Path
) -> None:
    looping = (
        "  done:\n",
        "  spin:\n    decide: [{to: spin_back}]\n  spin_back:\n    decide: [{to: spin}]\n  done:\n",
    )
    v2 = shop_version(
        tmp_path / "v2",
        "2",
        looping,
        ('      - {intent: "yes", to: done}', '      - {intent: "yes", to: spin}'),
    )
    order = replay_all(recorded, [v2])["order"]
    assert order.first is not None and order.first.seq == 4
    assert order.first.differs == (FAILED,)
    assert "state changes" in order.first.replayed.failed
    assert order.first.replayed.state == "confirm"  # where it was: a failed turn changes nothing


# --- webhooks -------------------------------------------------------------------------------------------


def test_webhook_turns_replay_with_their_recorded_answers(
    tmp_path: Path, v1: Path, prices: PriceService
) -> None:
    store = tmp_path / "store.sqlite3"
    calls_before = prices.calls
    with recording_shard(store, [v1], prices) as shard:
        chat(shard, "order", "coffee", "4321")
    assert prices.calls == calls_before + 1
    run = replay_all(store, [v1])
    assert run.outcomes == {"order": "same"}
    assert prices.calls == calls_before + 1  # the replay called nothing


def test_a_webhook_call_the_recording_cannot_answer_fails_and_is_reported(
    tmp_path: Path, recorded: Path, v1: Path
) -> None:
    # The new version asks a stock service first: no recorded turn ever called it.
    stock = (
        "        actions: [{webhook:",
        "        actions: [{webhook: {name: stock, store_as: stock}}, {webhook:",
    )
    v2 = shop_version(tmp_path / "v2", "2", stock)
    run = replay_all(recorded, [v2])
    order = run["order"]
    assert [(c.seq, c.webhook, c.answered) for c in order.unrecorded_calls] == [(3, "stock", "failed")]
    # The price call is still answered with its own recorded answer: calls match by webhook name.
    assert order.outcome == "same"
    flow_set = flow_set_over([v2], [bundled_flow_dir()])
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    new = next(f for f in flows if f.flow_id == "shop")
    history = open_history(recorded)
    conversation = read_conversation(history, ConversationKey(TENANT, "order"))
    history.close()
    given = Replayer(flows, new, answers={"stock": {"available": True}}).replay(conversation)
    assert [(c.webhook, c.answered) for c in given.unrecorded_calls] == [("stock", "given")]


# --- masking --------------------------------------------------------------------------------------------


def test_a_card_number_typed_is_not_recorded_and_the_replay_still_runs(
    tmp_path: Path, v1: Path, prices: PriceService, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.sqlite3"
    with recording_shard(store, [v1], prices) as shard:
        chat(shard, "typo", "tea", f"it is {CARD}", "yes")
    history = open_history(store)
    conversation = read_conversation(history, ConversationKey(TENANT, "typo"))
    history.close()
    sent = [s.message.content.text for s in conversation.steps if isinstance(s, RecordedTurn)]
    assert sent == ["tea", "it is ****1111", "yes"]
    typo = replay_all(store, [v1])["typo"]
    assert typo.turns == 3
    # The recording read "4111" from the card number; the replay can only read the masked "****1111".
    first = typo.first
    assert first is not None and first.seq == 2 and first.masked and first.changed_slots == ("last4",)
    assert (first.recorded.slots["last4"], first.replayed.slots["last4"]) == ("4111", "1111")
    # Nothing the CLI prints holds the card number.
    code = main(["flows", "replay", "--flow", "shop", "--from", str(store), "--dir", str(v1), "--json"])
    out = capsys.readouterr().out
    assert code == 1 and json.loads(out)["summary"]["masked"] == 1
    assert CARD not in out and CARD.replace(" ", "") not in out


GIFT = """\
flow: gift
settings: {start: ask, mask: [card_number]}
intents:
  "yes": {payloads: [YES], keywords: ["yes"]}
slots:
  wrap: {type: boolean, prompt: "Gift wrap?"}
states:
  ask:
    collect: [wrap]
    transitions: [{to: done}]
  done:
    terminal: true
    on_enter: [{say: {text: "Wrapped: {{ slots.wrap }}"}}]
"""


def test_a_button_pressed_in_a_masking_flow_is_recorded_and_replayed_as_pressed(
    tmp_path: Path, prices: PriceService
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "gift.yaml").write_text(GIFT)
    store = tmp_path / "store.sqlite3"
    with recording_shard(store, [flows], prices) as shard:
        # A button's payload is a choice, not a typed "yes": it fills no slot, the question stays.
        assert chat(shard, "press", "hi", "[YES]", flow="gift") == ["ask", "ask"]
    history = open_history(store)
    conversation = read_conversation(history, ConversationKey(TENANT, "press"))
    history.close()
    pressed = conversation.steps[1]
    assert isinstance(pressed, RecordedTurn)
    assert (pressed.message.content.text, pressed.message.content.payload) == ("", "YES")
    assert replay_all(store, [flows], flow_id="gift").outcomes == {"press": "same"}


# --- operators' resets and forced states ---------------------------------------------------------------


def test_a_state_an_operator_forced_that_the_new_version_lacks_stops_the_comparison(
    tmp_path: Path, recorded: Path
) -> None:
    v2 = shop_version(
        tmp_path / "v2",
        "2",
        (", on_failure: no_price", ""),
        ('  no_price:\n    on_enter: [{say: {text: "No price right now."}}]\n', ""),
    )
    moved = replay_all(recorded, [v2])["moved"]
    assert moved.first is not None and moved.first.seq == 2 and moved.first.differs == (STATE,)
    assert "no_price" in moved.first.sent and "no state 'no_price'" in moved.first.replayed.failed
    assert moved.turns == 1 and "not compared" in moved.stopped


def step_turn(seq: int, text: str = "hi") -> RecordedTurn:
    state = ConversationState(current_state="ask_item", flow_id="shop", flow_version="1")
    return RecordedTurn(seq, InboundMessage("u", Content(text=text)), 1.0, {}, Content(), state, "")


@pytest.mark.parametrize(
    ("steps", "start", "why"),
    [
        ([step_turn(1), step_turn(2)], 0, ""),
        ([step_turn(3), step_turn(4)], None, "its turns 1 to 2 are no longer kept"),
        ([step_turn(2), RecordedReset(3, 5.0, "shop"), step_turn(4)], 1, ""),
        ([step_turn(1), UnrecordedTurn(2), step_turn(3)], None, "its turn 2 was stored without its message"),
        ([UnrecordedTurn(1), RecordedReset(2, 5.0, "shop"), step_turn(3)], 1, ""),
        ([RecordedReset(2, 5.0, "shop"), UnrecordedTurn(3)], None, "its turn 3 was stored without"),
    ],
)
def test_a_replay_starts_at_the_first_turn_or_at_a_reset_after_what_is_missing(
    steps: list[RecordedStep], start: int | None, why: str
) -> None:
    found, reason = replay_start(steps)
    assert found == start
    assert why in reason and (reason == "") == (start is not None)


def test_a_conversation_replayed_from_a_reset_starts_its_flow_over_there(recorded: Path, v1: Path) -> None:
    history = open_history(recorded)
    full = read_conversation(history, ConversationKey(TENANT, "reset"))
    history.close()
    assert [type(s).__name__ for s in full.steps] == ["RecordedTurn"] * 2 + ["RecordedReset"] + [
        "RecordedTurn"
    ] * 2
    pruned = RecordedConversation(full.key, full.steps[1:])  # as if turn 1 were no longer kept
    flow_set = flow_set_over([v1], [bundled_flow_dir()])
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    replay = Replayer(flows, next(f for f in flows if f.flow_id == "shop")).replay(pruned)
    assert (replay.outcome, replay.turns) == ("same", 2)


# --- A/B variants ---------------------------------------------------------------------------------------


def test_each_conversation_keeps_its_a_b_variant(tmp_path: Path, prices: PriceService) -> None:
    pizza = (bundled_flow_dir() / "pizza.yaml").read_text()
    bundled = next(
        f for f in declarative_flows(flow_set_over([], [bundled_flow_dir()]).flows) if f.flow_id == "pizza"
    )
    friendly = conversation_for_variants(bundled, TENANT, {"greeting": "friendly"}, "friendly")
    plain = conversation_for_variants(bundled, TENANT, {"greeting": "plain"}, "plain")
    store = tmp_path / "store.sqlite3"
    with recording_shard(store, [], prices) as shard:
        for key in (friendly, plain):
            shard.send(key, "hi", "", "web", "pizza")
    new = tmp_path / "new"
    new.mkdir()
    (new / "pizza.yaml").write_text(
        pizza.replace("Hey {{ user_profile.name | default('friend') }}, hungry?", "Hungry?")
    )
    run = replay_all(store, [new], flow_id="pizza")
    assert run.outcomes == {friendly.conversation_id: "diverges", plain.conversation_id: "same"}


# --- choosing the version -------------------------------------------------------------------------------


def test_the_version_asked_for_must_be_the_one_found(tmp_path: Path, v1: Path) -> None:
    flows = flow_set_over([v1], [bundled_flow_dir()]).flows
    assert choose_flow(flows, "shop", "1", "").version == "1"
    with pytest.raises(ReplayError, match="is version '1', not '2'"):
        choose_flow(flows, "shop", "2", "")
    with pytest.raises(ReplayError, match="did you mean 'shop'"):
        choose_flow(flows, "shopp", "", "")


def test_a_new_version_in_its_own_directory_replaces_the_server_s_file(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    (new / "pizza.yaml").write_text(
        (bundled_flow_dir() / "pizza.yaml").read_text().replace("flow: pizza", 'flow: pizza\nversion: "9"')
    )
    flow_set = flow_set_over([new], [bundled_flow_dir()])
    assert flow_set.errors == []
    assert [d.version for d in flow_set.flows if d.flow_id == "pizza"] == ["9"]
    assert any(d.flow_id == "support" for d in flow_set.flows)  # the others stay


# --- the command ----------------------------------------------------------------------------------------


def replay_command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["flows", "replay", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_reports_divergences_as_json(
    tmp_path: Path, recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = shop_version(tmp_path / "v2", "2", ("EUR, card ending", "EUR on the card ending"))
    code, out, err = replay_command(
        capsys, "--flow", "shop@2", "--from", str(recorded), "--dir", str(v2), "--json"
    )
    assert (code, err) == (1, "")
    report = json.loads(out)
    assert (report["flow"], report["version"], report["source"]) == ("shop", "2", str(v2 / "shop.yaml"))
    summary = report["summary"]
    assert (summary["conversations"], summary["diverging"], summary["same"], summary["by_state"]) == (
        3,
        2,
        1,
        {"pay": 2},
    )
    by_id = {c["conversation_id"]: c for c in report["conversations"]}
    order = by_id["order"]
    assert (order["outcome"], order["turns"], order["later_divergences"]) == ("diverges", 4, 0)
    first = order["first_divergence"]
    assert (first["turn"], first["at_state"], first["sent"], first["differs"]) == (
        3,
        "pay",
        "1234",
        ["response"],
    )
    assert first["replayed"]["text"] == "One tea for 9.5 EUR on the card ending 1234. OK?"
    assert by_id["moved"]["outcome"] == "same"


def test_the_command_prints_each_divergence_and_a_summary(
    tmp_path: Path, recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = shop_version(tmp_path / "v2", "2", ("EUR, card ending", "EUR on the card ending"))
    code, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v2), "--tenant", TENANT
    )
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith(
        f"replay of shop@2 ({v2 / 'shop.yaml'}) against the conversations of tenant 'acme'"
    )
    assert lines[1] == 'DIVERGES acme/order  turn 3 in pay, on "1234": differs in response'
    assert lines[2] == '         recorded  confirm  "One tea for 9.5 EUR, card ending 1234. OK?"'
    assert lines[3] == '         replayed  confirm  "One tea for 9.5 EUR on the card ending 1234. OK?"'
    assert lines[-2:] == [
        "3 conversations replayed (10 turns): 1 same, 2 diverge",
        "first divergences by state: pay 2",
    ]
    code, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v2), "--tenant", "globex"
    )
    assert code == 0 and "no recorded conversation ran shop" in out


def test_the_command_counts_the_later_turns_that_differ_in_words_that_agree(
    tmp_path: Path, recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The order's confirmation (turn 3) says it otherwise, and so does its last turn: one later.
    v2 = shop_version(
        tmp_path / "v2", "2", ("EUR, card ending", "EUR on the card ending"), ("Thanks!", "Thank you!")
    )
    _, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v2), "--tenant", TENANT
    )
    assert "         + 1 later turn differs" in out.splitlines()
    # The greeting asks for the card instead: every later turn of the order differs.
    v3 = shop_version(tmp_path / "v3", "3", ("start: ask_item", "start: pay"))
    _, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v3), "--tenant", TENANT
    )
    assert "         + 3 later turns differ" in out.splitlines()


def test_the_command_replays_only_what_was_recorded_since(
    tmp_path: Path, recorded: Path, v1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v1), "--since", "1h"
    )
    assert code == 0 and out.splitlines()[-1] == "3 conversations replayed (10 turns): 3 same, 0 diverge"
    code, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v1), "--since", "2999-01-01", "--json"
    )
    assert code == 0 and json.loads(out)["conversations"] == []
    code, out, _ = replay_command(
        capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v1), "--limit", "2", "--json"
    )
    report = json.loads(out)
    assert len(report["conversations"]) == 2 and report["limit_reached"] is True


def test_the_command_reports_what_it_cannot_replay_and_replays_the_rest(
    recorded: Path, v1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ConversationState(current_state="ask_item", flow_id="shop", flow_version="1")
    reply = codec.pack_turn_reply(TurnResult(Content(text="Tea or coffee?"), state), codec.pack_state(state))
    said = codec.pack_recorded(InboundMessage("u", Content(text="hi")), time.time(), {})
    store = open_store(str(recorded))
    store.write(
        [
            # Its first two turns are no longer kept, and it was never reset.
            ConversationWrite(
                ConversationKey(TENANT, "late"), b"", 3, [TurnRecord(3, "m3", 1, reply, "hi", recorded=said)]
            ),
            ConversationWrite(
                ConversationKey(TENANT, "torn"),
                b"",
                1,
                [TurnRecord(1, "m1", 1, reply, "hi", recorded=b"\xc1")],
            ),
        ]
    )
    store.close()
    code, out, _ = replay_command(capsys, "--flow", "shop", "--from", str(recorded), "--dir", str(v1))
    lines = out.splitlines()
    assert code == 1
    assert "SKIPPED  acme/late  its turns 1 to 2 are no longer kept, and it was not reset since" in out
    assert any(line.startswith("ERROR    acme/torn  turn 1 cannot be read:") for line in lines)
    assert lines[-1] == "4 conversations replayed (10 turns): 3 same, 0 diverge, 1 failed; 1 skipped"


def test_since_is_a_duration_back_or_a_date() -> None:
    assert since_time("2001-12-01") < since_time("2001-12-01T12:00") < since_time("1h") < since_time("30m")
    with pytest.raises(Exception, match="expected a duration"):
        since_time("yesterday")


def test_the_command_needs_a_store_file_and_never_makes_one(
    tmp_path: Path, v1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.sqlite3"
    code, _, err = replay_command(capsys, "--flow", "shop", "--from", str(missing), "--dir", str(v1))
    assert code == 2 and "no such store file" in err and not missing.exists()
    code, _, err = replay_command(capsys, "--flow", "shop", "--from", "127.0.0.1:50051", "--dir", str(v1))
    assert code == 2 and "looks like a server address" in err
    code, _, err = replay_command(capsys, "--flow", "shop@7", "--from", str(missing), "--dir", str(v1))
    assert code == 2 and "is version '1', not '7'" in err


def test_the_command_refuses_a_dir_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Replaying the version the server runs instead would pass in CI and prove nothing.
    missing = tmp_path / "next"
    code, out, err = replay_command(
        capsys, "--flow", "pizza", "--from", str(tmp_path / "store.sqlite3"), "--dir", f"{missing}/"
    )
    assert (code, out, err) == (2, "", f"confab: --dir {missing}/: no such directory\n")
