"""Which intent a message means to a flow, when its words hit several: the more specific match, then
one the current state can use, then the first declared; and a question the state handles is no
correction of its slots."""

from __future__ import annotations

from pathlib import Path

from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from tests.test_flow_turns import Conversation, flow_of

SHOP = r"""
    flow: shop
    settings: {start: menu, max_fallbacks: 5, fallback_response: {text: "Sorry?"}}
    intents:
      browse: {keywords: [shoes, look]}
      buy: {keywords: [shoes, buy]}
      size: {keywords: [size, "what size"]}
      "no": {keywords: ["no"]}
      stop: {keywords: [stop]}
    slots:
      count: {type: integer, minimum: 1, maximum: 9, prompt: "How many?"}
    routes:
      - {intent: stop, to: stopped}
    states:
      menu:
        on_enter: [{say: {text: "Browse or buy?"}}]
        transitions:
          - {intent: browse, to: browsing}
          - {intent: buy, to: buying}
      browsing:
        on_enter: [{say: {text: "Have a look."}}]
        transitions: [{intent: buy, to: buying}]
      buying:
        collect: [count]
        transitions: [{to: check}]
      check:
        on_enter: [{say: {text: "{{ slots.count }} pairs?"}}]
        corrections: {slots: [count]}
        transitions:
          - {intent: "no", to: buying, actions: [{clear: [slots.count]}]}
          - {intent: size, to: check, actions: [{say: {text: "All sizes."}}]}
      stopped: {terminal: true, on_enter: [{say: {text: "Stopped."}}]}
"""


def shop(tmp_path: Path) -> DeclarativeFlow:
    return flow_of(tmp_path, SHOP)


def test_of_equal_matches_the_state_takes_one_it_can_use(tmp_path: Path) -> None:
    menu = Conversation(shop(tmp_path))
    menu.send("hi")
    reply = menu.send("shoes")  # browse and buy both: the menu can use both, browse comes first
    assert menu.state.current_state == "browsing" and menu.state.current_intent == "browse"
    reply = menu.send("shoes")  # here only buy leads somewhere
    assert menu.state.current_state == "buying" and reply.response.text == "How many?"
    assert menu.state.current_intent == "buy"


def test_a_question_the_state_answers_in_place_is_no_correction(tmp_path: Path) -> None:
    chat = Conversation(shop(tmp_path))
    chat.send("hi")
    chat.send("buy")
    assert chat.send("3").response.text == "3 pairs?"
    asked = chat.send("what size is 1 pair")  # a transition back to this state: a question about it
    assert asked.response.text == "All sizes.\n3 pairs?" and chat.state.slots == {"count": 3}
    corrected = chat.send("no, 2")  # a transition that leaves: an answer, which a new value corrects
    assert corrected.response.text == "2 pairs?" and "correct:count" in corrected.actions_performed
    stopped = chat.send("stop at 4")  # a global route
    assert stopped.response.text == "Stopped." and chat.state.slots == {"count": 2}
