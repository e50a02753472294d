"""Conversations that feel natural, rule by rule on a small flow: a pattern that matches the whole
message is exact, corrections at a confirmation, numbers that mean what the user last saw, and
confirmations that never take an answer written before their question was seen."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from confab.runtime.flows.authoring.dialogues import DialogueFileError, load_dialogues
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.flows.language.loader import check_flow_file
from tests.test_flow_turns import Conversation, flow_of

SHOP = r"""
    flow: shop
    settings:
      start: menu
      max_fallbacks: 5
      fallback_response:
        text: "Sorry?"
        quick_replies: [{title: Shop, payload: SHOP}, {title: Help, payload: HELP}]
    intents:
      shop: {payloads: [SHOP], keywords: [shop]}
      help: {payloads: [HELP], keywords: [help]}
      "yes": {payloads: ["YES"], keywords: ["yes"]}
      "no": {payloads: ["NO"], keywords: ["no"]}
      stop: {patterns: ['^\W*(stop|quit)\W*$']}
    slots:
      color:
        type: enum
        choices: [red, blue, green]
        prompt:
          text: "Which color?"
          quick_replies: [{title: Red, payload: red}, {title: Blue, payload: blue}]
        reprompts: ["Red, blue or green?"]
      count:
        type: integer
        minimum: 1
        maximum: 9
        prompt: "How many?"
        reprompts: ["From 1 to 9, please."]
        validate: [{when: "value != 7", message: "Not seven, sorry."}]
      note: {type: text, prompt: "Any note?"}
    routes:
      - {intent: stop, to: stopped}
    states:
      menu:
        on_enter:
          - say: {text: "Shop?", quick_replies: [{title: Shop, payload: SHOP}, {title: Help, payload: HELP}]}
        transitions: [{intent: shop, to: pick}]
      pick:
        collect: [color, count]
        transitions: [{to: check, actions: [{set: {variables.total: "slots.count * 2"}}]}]
      check:
        confirm: true
        on_enter:
          - set: {variables.checked: "slots.color"}
          - say:
              text: "{{ slots.count }} {{ slots.color }} for {{ variables.total }}?"
              buttons: [{title: "Yes", payload: "YES"}, {title: "No", payload: "NO"}]
        corrections: {slots: [color, count], to: pick, actions: [{say: {text: "Changed."}}]}
        transitions:
          - {intent: "yes", to: noted}
          - {intent: "no", to: pick, actions: [{clear: slots}]}
      noted:
        collect: [note]
        transitions: [{to: done}]
      done: {terminal: true, on_enter: [{say: {text: "Done: {{ slots.note }}"}}]}
      stopped: {terminal: true, on_enter: [{say: {text: "Stopped."}}]}
"""


def shop(tmp_path: Path) -> DeclarativeFlow:
    return flow_of(tmp_path, SHOP)


def at_check(flow: DeclarativeFlow, **seen: Any) -> Conversation:
    """A conversation whose third turn asked the confirmation: 2 red for 4?"""
    chat = Conversation(flow)
    chat.send("hi")
    chat.send(payload="SHOP", **seen)
    reply = chat.send("2 red", **seen)
    assert chat.state.current_state == "check" and reply.response.text == "2 red for 4?"
    return chat


def buttons(reply: Any) -> list[str]:
    return [b.title for b in reply.response.buttons]


def quick_replies(reply: Any) -> list[str]:
    return [q.title for q in reply.response.quick_replies]


# --- whole-message patterns ---------------------------------------------------------------------------


def test_a_whole_message_pattern_interrupts_a_free_text_question_which_keeps_no_value(
    tmp_path: Path,
) -> None:
    chat = at_check(shop(tmp_path))
    assert chat.send("yes").response.text == "Any note?"
    reply = chat.send("Quit!")
    assert chat.state.current_state == "stopped" and chat.state.slots.get("note") is None
    assert "fill:note" not in reply.actions_performed and reply.response.text == "Stopped."


def test_words_that_only_contain_the_command_are_the_answer(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    chat.send("yes")
    assert chat.send("stop ringing the bell").response.text == "Done: stop ringing the bell"


def test_an_exact_intent_that_leads_nowhere_is_still_the_answer(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    chat.send("yes")
    assert chat.send("no").response.text == "Done: no"  # "no" is exact, but not a way out of here


# --- corrections -----------------------------------------------------------------------------------


def test_a_correction_changes_that_slot_runs_the_route_and_asks_again(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    reply = chat.send("actually make it blue")
    assert reply.response.text == "Changed.\n2 blue for 4?"
    assert chat.state.slots == {"color": "blue", "count": 2}
    assert "correct:color" in reply.actions_performed and "transition:check->pick" in reply.actions_performed
    reply = chat.send("no, 3 please")  # the correction, not the "no" in its words
    assert reply.response.text == "Changed.\n3 blue for 6?" and chat.state.variables["total"] == 6
    assert buttons(reply) == ["Yes", "No"] and chat.state.error_count == 0


def test_a_value_the_slot_refuses_is_said_and_the_question_asked_again(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    refused = chat.send("make it 7")  # the slot's own check
    assert refused.response.text == "Not seven, sorry.\n2 red for 4?"
    out_of_bounds = chat.send("make it 12")  # its bounds: the re-prompt says them
    assert out_of_bounds.response.text == "From 1 to 9, please.\n2 red for 4?"
    assert "correction_refused:count" in out_of_bounds.actions_performed
    assert chat.state.slots == {"color": "red", "count": 2} and buttons(out_of_bounds) == ["Yes", "No"]
    assert "set:variables.checked" not in out_of_bounds.actions_performed  # only the question again


def test_a_value_the_slot_has_is_no_correction_and_no_error(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    reply = chat.send("red please")
    assert reply.response.text == "2 red for 4?" and chat.state.error_count == 0
    assert "correct_unchanged:color" in reply.actions_performed
    assert chat.send("yes red").response.text == "Any note?"  # its intent still answers


def test_a_button_is_no_correction(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    chat.send(payload="NO")
    assert chat.state.current_state == "pick" and chat.state.slots == {}


def test_without_a_target_the_correction_route_comes_back_to_its_state(tmp_path: Path) -> None:
    own = SHOP.replace("corrections: {slots: [color, count], to: pick,", "corrections: {slots: [color],")
    chat = at_check(flow_of(tmp_path, own))
    reply = chat.send("green")
    assert reply.response.text == "Changed.\n2 green for 4?"
    assert "transition:check->check" in reply.actions_performed
    assert chat.send("3 please").response.text == "Sorry?"  # count is not named: no correction


# --- confirmations and what the user has seen ------------------------------------------------------


def test_an_answer_written_before_the_question_was_seen_is_not_taken(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path), seen_turn=1)  # the question was asked in turn 3
    early = chat.send("yes", seen_turn=2)
    assert early.response.text == "Just to be sure:\n2 red for 4?" and buttons(early) == ["Yes", "No"]
    assert "typed_ahead:check" in early.actions_performed
    assert "set:variables.checked" not in early.actions_performed  # the question alone, not on_enter
    assert chat.state.current_state == "check" and chat.state.error_count == 0
    assert chat.send("yes", seen_turn=4).response.text == "Any note?"


def test_a_question_asked_again_as_it_was_may_be_answered_by_who_saw_it_first(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path), seen_turn=1)  # "2 red for 4?" asked in turn 3
    assert "typed_ahead:check" in chat.send("yes", seen_turn=2).actions_performed  # asked again in 4
    # The question of turn 4 is the one of turn 3, word for word and with the same values:
    # a user who saw turn 3 has seen it, and is not asked "just to be sure" once more.
    assert chat.send("yes", seen_turn=3).response.text == "Any note?"


def test_a_question_asked_again_with_other_values_must_be_seen_again(tmp_path: Path) -> None:
    own = SHOP.replace('to: pick, actions: [{say: {text: "Changed."}}]}', "to: pick}")
    chat = at_check(flow_of(tmp_path, own), seen_turn=1)  # "2 red for 4?" asked in turn 3
    assert chat.send("make it blue", seen_turn=3).response.text == "2 blue for 4?"  # asked in 4
    assert "typed_ahead:check" in chat.send("yes", seen_turn=3).actions_performed  # not the blue one
    again = chat.send("yes", seen_turn=3)  # turn 5 asked it again as in turn 4: still unseen
    assert "typed_ahead:check" in again.actions_performed
    assert chat.send("yes", seen_turn=4).response.text == "Any note?"


def test_a_value_the_slot_has_may_be_said_so_before_the_question(tmp_path: Path) -> None:
    said = 'unchanged_response: {text: "It is {{ slots.count }} {{ slots.color }} already."}, '
    own = SHOP.replace(
        "corrections: {slots: [color, count], ", "corrections: {slots: [color, count], " + said
    )
    chat = at_check(flow_of(tmp_path, own))
    reply = chat.send("make it two")
    assert reply.response.text == "It is 2 red already.\n2 red for 4?" and buttons(reply) == ["Yes", "No"]
    assert "correct_unchanged:count" in reply.actions_performed and chat.state.error_count == 0


def test_routes_still_work_from_an_unseen_question(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path), seen_turn=1)
    assert chat.send("stop", seen_turn=1).response.text == "Stopped."


def test_a_question_about_an_unseen_confirmation_is_answered_and_the_answers_still_wait(
    tmp_path: Path,
) -> None:
    """A transition back to the confirmation ("how much?") is a question about it, not an
    answer: taken although the question was not seen; "yes" and "no", which leave, are not."""
    own = SHOP.replace(
        "      stop: {patterns:", '      price: {keywords: ["how much"]}\n      stop: {patterns:'
    ).replace(
        '          - {intent: "yes", to: noted}\n',
        '          - {intent: "yes", to: noted}\n'
        "          - {intent: price, to: check,"
        ' actions: [{say: {text: "That is {{ variables.total }}."}}]}\n',
    )
    chat = at_check(flow_of(tmp_path, own), seen_turn=1)  # "2 red for 4?" asked in turn 3
    priced = chat.send("how much?", seen_turn=2)
    assert priced.response.text == "That is 4.\n2 red for 4?" and buttons(priced) == ["Yes", "No"]
    assert "transition:check->check" in priced.actions_performed
    assert "typed_ahead:check" not in priced.actions_performed
    assert chat.state.current_state == "check" and chat.state.error_count == 0
    # Asked again word for word: still the question of turn 3, which this user has not seen.
    assert "typed_ahead:check" in chat.send("no", seen_turn=2).actions_performed
    assert chat.state.current_state == "check" and chat.state.slots == {"color": "red", "count": 2}
    assert chat.send("yes", seen_turn=3).response.text == "Any note?"


def test_a_correction_written_ahead_is_applied_and_asked_again(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path), seen_turn=1)
    assert chat.send("make it blue", seen_turn=2).response.text == "Changed.\n2 blue for 4?"
    assert "typed_ahead:check" in chat.send("yes", seen_turn=3).actions_performed  # not the new question


def test_without_seen_turn_a_message_is_taken_as_it_comes(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path), seen_turn=1)
    assert chat.send("yes").response.text == "Any note?"


def test_a_state_an_operator_forced_asked_nothing_that_could_be_unseen(tmp_path: Path) -> None:
    flow = shop(tmp_path)
    chat = at_check(flow)
    chat.send("no")
    chat.send("2 green")
    flow.force(chat.state, "check")
    assert chat.send("yes", seen_turn=0).response.text == "Any note?"


def test_an_unmarked_state_takes_answers_whatever_was_seen(tmp_path: Path) -> None:
    chat = at_check(flow_of(tmp_path, SHOP.replace("confirm: true", "confirm: false")), seen_turn=1)
    assert chat.send("yes", seen_turn=0).response.text == "Any note?"


# --- numbers mean what the user last saw -------------------------------------------------------------


def test_a_number_picks_from_the_choices_shown_last(tmp_path: Path) -> None:
    chat = Conversation(shop(tmp_path))
    chat.send("hi")
    picked = chat.send("1")
    assert "choice:1" in picked.actions_performed and picked.response.text == "Which color?"
    assert quick_replies(picked) == ["Red", "Blue"]
    chat.send("#2")
    assert chat.state.slots == {"color": "blue"}
    chat.send("2")  # the slot asked is a number: the answer, not a choice
    assert chat.state.slots == {"color": "blue", "count": 2} and chat.state.current_state == "check"
    assert chat.send("1.").response.text == "Any note?"
    assert chat.send("2").response.text == "Done: 2"  # a question without choices: plain text


def test_after_a_fallback_a_number_answers_the_question_not_the_fallback_menu(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    fallback = chat.send("hmm")
    # The flow's fallback offers the question's choices, not its own (the menu's).
    assert fallback.response.text == "Sorry?" and buttons(fallback) == ["Yes", "No"]
    assert quick_replies(fallback) == []
    assert chat.send("1").response.text == "Any note?"


def test_a_state_fallback_is_said_as_written(tmp_path: Path) -> None:
    fallback = "        fallback_response: {text: 'Yes or no?'}\n"
    own = SHOP.replace("        confirm: true\n", "        confirm: true\n" + fallback)
    chat = at_check(flow_of(tmp_path, own))
    fallback = chat.send("hmm")
    assert fallback.response.text == "Yes or no?" and buttons(fallback) == []
    assert chat.send("1").response.text == "Any note?"  # the question's choices still count


def test_a_number_out_of_range_is_asked_again_with_the_choices(tmp_path: Path) -> None:
    chat = at_check(shop(tmp_path))
    reply = chat.send("3")
    assert reply.response.text == "That number isn't one of the choices. Please pick one of these:"
    assert buttons(reply) == ["Yes", "No"] and "choice_out_of_range:3" in reply.actions_performed
    assert chat.state.error_count == 1 and chat.state.current_state == "check"


def test_a_number_written_before_the_last_replies_picks_from_what_its_user_saw(tmp_path: Path) -> None:
    chat = Conversation(shop(tmp_path))
    chat.send("hi")  # turn 1 shows the menu
    chat.send("shop")  # turn 2 shows the colors
    # Written looking at the menu of turn 1: its first item is "Shop", not "Red".
    reply = chat.send("1", seen_turn=1)
    assert chat.state.slots == {} and "choice:1" in reply.actions_performed
    assert reply.response.text == "Red, blue or green?"  # SHOP is no color: asked again
    chat.send("1", seen_turn=3)
    assert chat.state.slots == {"color": "red"}


def test_the_store_keeps_the_number_as_it_was_written(tmp_path: Path) -> None:
    masked = SHOP.replace("      max_fallbacks: 5\n", "      max_fallbacks: 5\n      mask: [card_number]\n")
    chat = Conversation(flow_of(tmp_path, masked))
    chat.send("hi")
    assert chat.send("1").recorded_input == "1"


# --- the file format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("check: {confirm: true, transitions: [{intent: 'yes', to: menu}]}", "asks its question in on_enter"),
        (
            "check: {confirm: true, on_enter: [{say: {text: 'ok?'}}], decide: [{to: menu}]}",
            "cannot have confirm",
        ),
        ("check: {corrections: {slots: [note]}, on_enter: [{say: {text: 'ok?'}}]}", "'note' is a text slot"),
        ("check: {corrections: {slots: []}, on_enter: [{say: {text: 'ok?'}}]}", "name the slots"),
        ("check: {corrections: {slots: [colour]}, on_enter: [{say: {text: 'ok?'}}]}", "did you mean 'color'"),
        ("check: {corrections: {slots: [color], to: chek}, on_enter: [{say: {text: ok}}]}", "unknown state"),
    ],
)
def test_confirmations_and_corrections_are_checked_on_load(tmp_path: Path, state: str, error: str) -> None:
    text = f"""\
        flow: bad
        settings: {{start: menu}}
        intents: {{"yes": {{keywords: ["yes"]}}}}
        slots: {{color: {{type: enum, choices: [red]}}, note: {{type: text}}}}
        states:
          menu: {{on_enter: [{{say: {{text: hi}}}}], transitions: [{{intent: "yes", to: check}}]}}
          {state}
    """
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(text))
    errors = check_flow_file(path).errors
    assert any(error in str(e) for e in errors), errors


@pytest.mark.parametrize("seen", ["-1", "two", "1.5", "true"])
def test_a_dialogue_turn_says_seen_turn_as_a_whole_number(tmp_path: Path, seen: str) -> None:
    path = tmp_path / "dialogue.yaml"
    path.write_text(f"flow: shop\ndialogues:\n  - turns:\n      - user: hi\n        seen_turn: {seen}\n")
    with pytest.raises(DialogueFileError, match="seen_turn"):
        load_dialogues(path)


def test_operators_see_the_kept_choices_masked_as_the_flow_says(tmp_path: Path) -> None:
    masked = SHOP.replace(
        "      max_fallbacks: 5\n", "      max_fallbacks: 5\n      mask_patterns: ['\\d{3}-\\d{4}']\n"
    )
    flow = flow_of(
        tmp_path, masked.replace("{title: Help, payload: HELP}]}", "{title: Call 555-1234, payload: HELP}]}")
    )
    chat = Conversation(flow)
    chat.send("hi")
    assert "555-1234" in str(chat.state.flow_memory)
    assert "555-1234" not in str(flow.redact_state(chat.state).flow_memory)
    assert "555-1234" in str(chat.state.flow_memory)  # the conversation's own copy is untouched
