"""The interpreter's turn rules, one at a time, on small flows written for each."""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from confab.runtime.flows import NeedsWebhook
from confab.runtime.flows.execution.catalog import declarative_flows, load_flows
from confab.runtime.flows.execution.intents import IntentMatch, IntentRecognizer
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.flows.execution.nlu import register_recognizer, unregister_recognizer
from confab.runtime.flows.language.document import IntentSpec
from confab.runtime.flows.language.loader import check_flow_file, load_flow_file, load_flow_paths
from confab.runtime.model import Content, ConversationKey, InboundMessage, JsonDict

KEY = ConversationKey("acme", "c-1")
EXAMPLES = Path(__file__).parent / "dialogues" / "examples" / "flows"


def flow_of(tmp_path: Path, text: str, name: str = "flow.yaml") -> DeclarativeFlow:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return DeclarativeFlow(load_flow_file(path))


def say(
    text: str = "", payload: str = "", language: str = "", seen_turn: int | None = None
) -> InboundMessage:
    content = Content(text=text, payload=payload, language=language)
    return InboundMessage("u", content, seen_turn=seen_turn)


class Conversation:
    """A conversation with one flow, turns counted as a shard's conversation counts them."""

    def __init__(self, flow: DeclarativeFlow, now: float = 1_780_000_000.0) -> None:  # in 2026
        self.flow = flow
        self.now = now
        self.state = flow.start(now, KEY)

    def send(self, text: str = "", payload: str = "", *, after: float = 1.0, **kw: Any) -> Any:
        self.now += after
        reply = self.flow.handle(self.state, say(text, payload, **kw), self.now)
        self.state.message_count += 1
        self.state.last_activity = self.now
        return reply


GREETER = """\
    flow: greeter
    settings: {start: welcome, max_fallbacks: 5, session_ttl_s: 60}
    intents:
      greet: {keywords: [hi, hello]}
      help: {keywords: [help]}
      human: {keywords: [person]}
    states:
      welcome:
        on_enter: [{say: {text: "Welcome!"}}]
        fallback_response:
          text: "Say hi or ask for help. (miss {{ fallback_count }}, {{ error_count }} in all)"
        transitions:
          - {intent: greet, to: welcome}
          - {intent: help, to: helping}
          - {intent: human, to: human}
      helping:
        on_enter: [{say: {text: "How can I help?"}}]
      human:
        on_enter: [{handoff: "asked at message {{ message_count + 1 }} in {{ state }}"}]
"""


def test_the_first_message_greets_once_even_when_it_is_a_greeting(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, GREETER))
    first = chat.send("hi")
    assert first.response.text == "Welcome!" and "already_in:welcome" in first.actions_performed
    again = chat.send("hello")  # later, the same words greet again, as the flow says
    assert again.response.text == "Welcome!" and chat.state.error_count == 0


def test_error_count_is_cumulative_and_fallback_count_consecutive(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, GREETER))
    chat.send("hi")
    assert chat.send("blah").response.text == "Say hi or ask for help. (miss 1, 1 in all)"
    assert chat.send("blah blah").response.text == "Say hi or ask for help. (miss 2, 2 in all)"
    chat.send("hi")  # understood: the misses in a row start again, the total stays
    assert chat.send("what").response.text == "Say hi or ask for help. (miss 1, 3 in all)"


def test_the_handoff_reason_is_a_template(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, GREETER))
    chat.send("hi")
    chat.send("a person please")
    assert chat.state.flow_memory["handoff"] == "asked at message 2 in human"


def test_a_message_after_the_session_expired_is_answered_and_understood(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, GREETER))
    chat.send("hi")
    late = chat.send("help", after=61)
    assert "session_expired" in late.actions_performed
    assert late.response.text.splitlines() == [
        "It's been a while, so we're starting over. (Our last conversation timed out.)",
        "Welcome!",
        "How can I help?",
    ]
    assert chat.state.current_state == "helping"


def test_an_empty_session_expired_response_says_nothing(tmp_path: Path) -> None:
    text = GREETER.replace("session_ttl_s: 60}", "session_ttl_s: 60, session_expired_response: {}}")
    chat = Conversation(flow_of(tmp_path, text))
    chat.send("hi")
    assert chat.send("hi", after=61).response.text == "Welcome!"


ROUTER = """\
    flow: router
    settings: {start: ask}
    slots:
      age: {type: integer, prompt: "How old are you?"}
    states:
      ask:
        collect: [age]
        transitions: [{to: route}]
      route:
        decide:
          - {when: "slots.age < 18", to: young}
          - to: adult
      young: {terminal: true, on_enter: [{say: {text: "Junior menu."}}]}
      adult: {terminal: true, on_enter: [{say: {text: "Full menu."}}]}
"""


def test_a_decision_state_routes_without_waiting(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, ROUTER))
    chat.send("hi")
    reply = chat.send("I'm 12")
    assert reply.response.text == "Junior menu." and "decide:route" in reply.actions_performed


def test_a_routing_state_that_waits_silently_is_warned_about(tmp_path: Path) -> None:
    waiting = ROUTER.replace(
        '        decide:\n          - {when: "slots.age < 18", to: young}\n          - to: adult\n',
        '        transitions:\n          - {when: "slots.age < 18", to: young}\n          - to: adult\n',
    )
    path = tmp_path / "waits.yaml"
    path.write_text(textwrap.dedent(waiting))
    (warning,) = check_flow_file(path).warnings
    assert "states.route: says nothing when entered and waits" in warning.message
    assert "decide:" in warning.message


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            "  route:\n    collect: [age]\n    decide: [{to: adult}]\n",
            "states.route.collect: a state that decides (decide:) moves on at once",
        ),
        (
            "  route:\n    decide: [{intent: go, to: adult}]\n",
            "states.route.decide[0].intent: a decision is made without a message",
        ),
        (
            "  route:\n    decide: [{when: 'slots.age > 1', to: adult}]\n",
            "states.route.decide: the last choice must have no `when`",
        ),
        (
            "  route:\n    call: {flow: other, store_as: out}\n",
            "states.route: a state that calls a flow needs decide:",
        ),
    ],
)
def test_decision_and_call_states_are_checked(tmp_path: Path, state: str, message: str) -> None:
    text = (
        "flow: bad\nsettings: {start: route}\nintents: {go: {keywords: [go]}}\n"
        "slots: {age: {type: integer}}\nstates:\n" + state + "  adult: {terminal: true}\n"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert any(message in e.message for e in check_flow_file(path).errors), check_flow_file(path).errors


def test_choices_said_in_a_state_passed_through_are_dropped(tmp_path: Path) -> None:
    text = """\
        flow: menu
        settings: {start: menu}
        intents: {order: {keywords: [pizza]}}
        slots:
          size:
            type: enum
            choices: [small, large]
            prompt: {text: "Size?", quick_replies: [{title: Small}, {title: Large}]}
        states:
          menu:
            on_enter: [{say: {text: "Hi!", quick_replies: [{title: Order}, {title: Help}]}}]
            transitions: [{intent: order, to: order}]
          order:
            collect: [size]
            transitions: [{to: done}]
          done: {terminal: true}
    """
    reply = Conversation(flow_of(tmp_path, text)).send("pizza")
    assert reply.response.text == "Hi!\nSize?"
    assert [q.title for q in reply.response.quick_replies] == ["Small", "Large"]


def test_dates_follow_the_turn_s_clock_not_the_machine_s(tmp_path: Path) -> None:
    text = """\
        flow: when
        settings: {start: ask}
        slots: {day: {type: date, prompt: "When?"}}
        states:
          ask:
            collect: [day]
            transitions: [{to: done}]
          done: {terminal: true}
    """
    chat = Conversation(flow_of(tmp_path, text), now=1_767_225_600.0)  # 2026-01-01 (UTC)
    chat.send("hi")
    chat.send("tomorrow", after=3600.0)
    assert chat.state.slots["day"] in ("2026-01-02", "2026-01-01")  # the server's time zone decides
    replay = Conversation(flow_of(tmp_path, text), now=1_767_225_600.0)
    replay.send("hi")
    replay.send("tomorrow", after=3600.0)
    assert replay.state.slots == chat.state.slots


# --- masking ------------------------------------------------------------------------------------------


def test_card_numbers_in_a_message_are_masked_for_the_store_and_the_handoff_log() -> None:
    flows, _ = load_flows()
    support = next(f for f in flows if f.flow_id == "support")
    assert isinstance(support, DeclarativeFlow)
    chat = Conversation(support)
    # Words an intent takes: a message nothing matched would go to the model, which has no answer here.
    reply = chat.send("my card 4111 1111 1111 1111 was charged twice, I want a refund")
    assert reply.recorded_input == "my card ****1111 was charged twice, I want a refund"
    assert chat.send("hours").recorded_input == "hours"  # masking on: every input is given, as stored
    chat.send(payload="HUMAN")
    chat.send("IBAN DE89 3704 0044 0532 0130 00, please refund")
    assert chat.state.flow_memory["handoff_log"][-1]["text"] == "IBAN ****3000, please refund"
    assert support.redact_text("call 4111111111111112") == "call 4111111111111112"  # fails Luhn: no card


def test_sensitive_slots_are_masked_in_what_is_stored_and_shown() -> None:
    (identity,) = [f for f in declarative_flows([load_flow_file(EXAMPLES / "identity.yaml")])]
    chat = Conversation(identity)
    assert chat.send("hi").recorded_input is None  # nothing sensitive, no masking declared
    reply = chat.send("born 1990-03-12")
    assert reply.recorded_input == "born ****"
    shown = identity.redact_state(chat.state)
    assert shown.slots == {"birth_date": "****"} and chat.state.slots == {"birth_date": "1990-03-12"}


# --- sub-flows ---------------------------------------------------------------------------------------


@pytest.fixture()
def cards() -> DeclarativeFlow:
    flow_set = load_flow_paths([EXAMPLES])
    assert not flow_set.errors
    flows = {f.flow_id: f for f in declarative_flows(flow_set.flows)}
    return flows["cards"]


def run_with_answers(
    flow: DeclarativeFlow, chat: Conversation, text: str, answers: Mapping[str, JsonDict]
) -> Any:
    results: dict[str, JsonDict] = {}
    while True:
        attempt = copy.deepcopy(chat.state)
        try:
            reply = flow.handle(attempt, say(text), chat.now, results)
        except NeedsWebhook as need:
            results[need.call.key] = dict(answers[need.call.name])
            continue
        chat.state = attempt
        chat.state.message_count += 1
        return reply


def test_a_sub_flow_keeps_the_caller_s_slots_apart_and_returns_its_outcome(cards: DeclarativeFlow) -> None:
    chat = Conversation(cards)
    chat.send("I lost my visa card")
    assert chat.state.current_state == "ask" and chat.state.slots == {}  # the identity flow's own
    assert chat.state.flow_memory["calls"][0]["slots"] == {"card_type": "visa"}
    chat.send("1990-03-12")
    reply = run_with_answers(
        cards, chat, "SW1A 1AA", {"identity_check": {"ok": True, "body": {"valid": True}}}
    )
    assert "return:identity->verify" in reply.actions_performed
    assert chat.state.current_state == "details" and chat.state.slots == {"card_type": "visa"}
    outcome = chat.state.variables["identity"]
    assert outcome["state"] == "verified" and outcome["slots"]["postcode"] == "SW1A 1AA"
    assert "calls" not in chat.state.flow_memory


def test_a_turn_inside_a_sub_flow_replays_the_same(cards: DeclarativeFlow) -> None:
    answers = {"identity_check": {"ok": True, "body": {"valid": True}}}
    outcomes = []
    for _ in range(2):
        chat = Conversation(cards)
        chat.send("I lost my card")
        chat.send("1990-03-12")
        reply = run_with_answers(cards, chat, "SW1A 1AA", answers)
        outcomes.append((reply.actions_performed, reply.response.text, chat.state.to_wire()))
    assert outcomes[0] == outcomes[1]


def test_a_sub_flow_s_sensitive_slots_are_masked_as_it_declares_them(cards: DeclarativeFlow) -> None:
    # The conversation's flow (cards) declares nothing sensitive; the identity flow it calls does.
    chat = Conversation(cards)
    chat.send("I lost my visa card")
    chat.send("1990-03-12")
    shown = cards.redact_state(chat.state)
    assert chat.state.slots == {"birth_date": "1990-03-12"}
    assert shown.slots == {"birth_date": "****"}
    assert shown.flow_memory["calls"][0]["slots"] == {"card_type": "visa"}  # the caller's: not sensitive


def test_forcing_a_state_leaves_the_sub_flow(cards: DeclarativeFlow) -> None:
    chat = Conversation(cards)
    chat.send("I lost my mastercard")
    cards.force(chat.state, "details")
    assert "calls" not in chat.state.flow_memory and chat.state.slots == {"card_type": "mastercard"}
    assert "last four digits" in chat.send("mastercard").response.text


@pytest.mark.parametrize(
    ("caller", "problem"),
    [
        ("call: {flow: nobody, store_as: out}", "states.go.call.flow: no flow 'nobody' is loaded"),
        ("call: {flow: callee, store_as: out, with: {slots.nope: '1'}}", "flow 'callee' has no slot 'nope'"),
        ("call: {flow: callee, store_as: out}", "calls itself"),
    ],
)
def test_sub_flow_calls_are_checked_against_the_flows_loaded(
    tmp_path: Path, caller: str, problem: str
) -> None:
    (tmp_path / "caller.yaml").write_text(
        f"flow: caller\nsettings: {{start: go}}\nstates:\n  go:\n    {caller}\n    decide: [{{to: end}}]\n"
        "  end: {terminal: true}\n"
    )
    calls_back = problem == "calls itself"
    callee_state = (
        "  ask:\n    call: {flow: caller, store_as: back}\n    decide: [{to: end}]\n  end: {terminal: true}\n"
        if calls_back
        else "  ask: {terminal: true}\n"
    )
    (tmp_path / "callee.yaml").write_text(
        "flow: callee\nsettings: {start: ask}\nslots: {x: {type: text}}\nstates:\n" + callee_state
    )
    result = load_flow_paths([tmp_path])
    assert any(problem in e.message for e in result.errors), result.errors
    assert "caller" not in [d.flow_id for d in result.flows]


# --- the answer to the question asked beats intents in its words -------------------------------------


SURVEY = EXAMPLES / "survey.yaml"


def test_an_exact_intent_still_interrupts_a_question() -> None:
    (survey,) = declarative_flows([load_flow_file(SURVEY)])
    chat = Conversation(survey)
    chat.send("hi")
    chat.send("2")
    reply = chat.send("Stop")
    assert (
        "enter:stopped" in reply.actions_performed
        and "answer_over_intent:stop" not in reply.actions_performed
    )


# --- a recognizer plug-in --------------------------------------------------------------------------------


class _Rules:
    """A stand-in for a real NLU model: 'card' anywhere means lost_card, with the type as an entity."""

    def __init__(
        self, intents: Mapping[str, IntentSpec], threshold: float, options: Mapping[str, Any]
    ) -> None:
        self.intents = intents
        self.word = str(options.get("word", "card"))

    def recognize(self, text: str, payload: str = "") -> IntentMatch | None:
        if self.word in text:
            entities = {"card_type": "visa"} if "visa" in text else {}
            return IntentMatch("lost_card", 0.8, entities=entities)
        return None


def _rules_factory(
    intents: Mapping[str, IntentSpec], threshold: float, options: Mapping[str, Any], language: str
) -> IntentRecognizer:
    return _Rules(intents, threshold, options)


@pytest.fixture()
def plugin() -> Iterator[None]:
    register_recognizer("rules", _rules_factory)
    yield
    unregister_recognizer("rules")


def test_a_flow_can_name_a_registered_recognizer(tmp_path: Path, plugin: None) -> None:
    text = """\
        flow: nlu
        settings: {start: ask, nlu: {recognizer: rules, options: {word: plastic}}}
        intents: {lost_card: {examples: ["I lost my card"]}}
        slots: {card_type: {type: enum, choices: [visa, debit]}}
        states:
          ask:
            on_enter: [{say: {text: "Hi"}}]
            transitions: [{intent: lost_card, to: block}]
          block: {terminal: true, on_enter: [{say: {text: "Blocking your {{ slots.card_type }} card."}}]}
    """
    chat = Conversation(flow_of(tmp_path, text))
    chat.send("hello")
    assert chat.send("I lost my card").response.text == "Sorry, I didn't get that."  # not its word
    chat2 = Conversation(flow_of(tmp_path, text))
    chat2.send("hello")
    assert chat2.send("my visa plastic is gone").response.text == "Blocking your visa card."


def test_an_unknown_recognizer_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "nlu.yaml"
    path.write_text("flow: nlu\nsettings: {start: a, nlu: {recognizer: rulez}}\nstates: {a: {}}\n")
    (error,) = check_flow_file(path).errors
    assert "no recognizer 'rulez' is registered" in error.message and "builtin" in error.message


def test_loading_with_a_logger_says_what_loaded_and_what_was_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    (tmp_path / "confab.yaml").write_text("server: {listen: '127.0.0.1:0'}\n")  # a config, not a flow
    (tmp_path / "broken.yaml").write_text("flow: broken\nsettings: {start: nowhere}\nstates: {}\n")
    log = logging.getLogger("confab.test.flows")
    with caplog.at_level(logging.DEBUG, logger="confab.test.flows"):
        flows, problems = load_flows([tmp_path], log=log)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    loaded = messages[0][1]
    assert messages[0][0] == "INFO" and loaded.startswith("flows loaded: echo@1, pizza@")
    assert "support@" in loaded and "config/flows/pizza.yaml" in loaded
    assert [m for level, m in messages if level == "ERROR"] == [f"flow file skipped: {problems[0]}"]
    assert ("DEBUG", f"not a flow file, skipped: {tmp_path / 'confab.yaml'}") in messages
    assert len(problems) == 1 and "broken" not in [f.flow_id for f in flows]


DETOUR = """\
    flow: detour
    settings: {start: ask}
    intents:
      hours: {keywords: [hours]}
      back: {keywords: [back]}
      change: {keywords: [change]}
      send: {keywords: [send]}
    slots:
      email: {type: email, prompt: "Your email? Say send when it's right."}
    routes:
      - {intent: hours, to: hours}
    states:
      ask:
        collect: [email]
        transitions: [{intent: send, to: confirm}]
      confirm:
        on_enter: [{say: {text: "Sent to {{ slots.email }}. Change it?"}}]
        transitions: [{intent: change, to: ask}]
      hours:
        on_enter: [{say: {text: "Open 9 to 5."}}]
        transitions: [{intent: back, to: ask}]
"""


def test_coming_back_to_change_asks_again_but_a_detour_does_not(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, DETOUR))
    chat.send("hi")
    chat.send("ada@example.com")
    assert chat.send("send").response.text == "Sent to ada@example.com. Change it?"
    again = chat.send("change it")  # back to where it moved on from, same value: asked again
    assert "ask_again:ask" in again.actions_performed and "Your email?" in again.response.text
    detour = Conversation(flow_of(tmp_path, DETOUR))
    detour.send("hi")
    detour.send("ada@example.com")  # filled; the state waits for "send"
    assert detour.send("hours?").response.text == "Open 9 to 5."  # a route away: not a move on
    back = detour.send("back")
    assert "ask_again:ask" not in back.actions_performed
    assert detour.state.slots == {"email": "ada@example.com"}
