"""What a model is sent, on a real shard against the local stand-in (tools.model_standin): the
conversation's recent texts, the same every call, and sensitive values masked however they are
written; and what an unmatched first message gets when a model can answer it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from confab.runtime.flows.execution.interpreter import DEFAULT_SYSTEM
from confab.runtime.flows.language.masking import value_spans
from confab.tools.model_standin import ModelStandIn, Script
from tests.test_flow_turns import Conversation, flow_of
from tests.test_generation import ShardMaker, on_standin

CARD = "5555444433332222"  # no card number's check digit: only the slot's sensitivity masks it
WRITTEN = ("5555-4444-3333-2222", "5555 4444 3333 2222", "5555.4444.3333.2222", "5555 - 4444 - 3333 - 2222")

FLOW = r"""
flow: helper
settings:
  start: ask
  generative_fallback: {}
slots:
  card:
    type: regex
    pattern: '(?P<value>\d(?:[ .-]*\d){12,18})'
    sensitive: true
    prompt: "Your card number?"
intents:
  greet: {patterns: ['^\W*(hi|hello)( there)?\W*$']}
  card: {keywords: [card]}
  person: {keywords: [person]}
routes:
  - {intent: greet, to: ask}
  - {intent: person, to: person}
  - {intent: card, to: card}
states:
  ask:
    on_enter: [{say: {text: "Hello! How can I help?"}}]
  card:
    collect: [card]
    transitions: [{to: noted}]
  noted:
    on_enter: [{say: {text: "Noted, {{ slots.card | mask }}."}}]
  person:
    on_enter: [{handoff: "asked for a person"}]
"""


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flows"
    directory.mkdir()
    (directory / "helper.yaml").write_text(FLOW)
    return directory


def numbered_answers(standin: ModelStandIn) -> None:
    """The stand-in answers "Answer 1", "Answer 2"... in the order it is asked."""
    count = itertools.count(1)
    standin.choose = lambda body: Script(text=f"Answer {next(count)}")


def conversation(request: Any) -> list[tuple[str, str]]:
    """A request's messages after the system message, as (role, content)."""
    messages = request.body["messages"]
    assert messages[0] == {"role": "system", "content": DEFAULT_SYSTEM}
    return [(m["role"], m["content"]) for m in messages[1:]]


# The conversation's texts -------------------------------------------------------------------------


def test_every_call_gets_the_last_six_texts_from_the_greeting_on(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    numbered_answers(standin)
    driver = on_standin(make_shard, flow_dir, standin)
    assert driver.say("c1", "hello there").response.text == "Hello! How can I help?"
    questions = [f"question {n}?" for n in range(1, 7)]
    for n, question in enumerate(questions, start=1):
        reply = driver.say("c1", question)
        assert reply.response.text == f"Answer {n}" and "generative_fallback" in reply.actions_performed
    texts = [("user", "hello there"), ("assistant", "Hello! How can I help?")]
    for n, question in enumerate(questions, start=1):
        texts += [("user", question), ("assistant", f"Answer {n}")]
    requests = standin.received()
    assert len(requests) == 6
    for n, request in enumerate(requests):
        before = texts[: 2 + 2 * n]  # the greeting's turn and every answered question before this one
        assert conversation(request) == [*before[-6:], ("user", questions[n])], n


def test_a_new_session_starts_the_texts_afresh(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    numbered_answers(standin)
    (flow_dir / "helper.yaml").write_text(
        FLOW.replace("  card: {keywords: [card]}\n", "  card: {keywords: [card]}\n  bye: {keywords: [bye]}\n")
        .replace("routes:\n", "routes:\n  - {intent: bye, to: bye}\n")
        .replace("states:\n", "states:\n  bye: {terminal: true, on_enter: [{say: {text: Bye.}}]}\n")
    )
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hi")
    driver.say("c1", "what now?")
    driver.say("c1", "bye")
    assert driver.say("c1", "hello").response.text == "Hello! How can I help?"
    driver.say("c1", "and now?")
    first, second = standin.received()
    assert conversation(first) == [
        ("user", "hi"),
        ("assistant", "Hello! How can I help?"),
        ("user", "what now?"),
    ]
    assert conversation(second) == [
        ("user", "hello"),
        ("assistant", "Hello! How can I help?"),
        ("user", "and now?"),
    ]


# Sensitive values, however written ----------------------------------------------------------------


@pytest.mark.parametrize("typed", [CARD, *WRITTEN])
def test_a_sensitive_value_never_reaches_the_model_however_it_is_written(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn, typed: str
) -> None:
    standin.script = Script(text="An answer.")
    driver = on_standin(make_shard, flow_dir, standin)
    driver.say("c1", "hi")
    assert driver.say("c1", "my card please").response.text == "Your card number?"
    noted = driver.say("c1", f"it is {typed}")
    assert noted.response.text == "Noted, ****2222."
    # Later, the same number in every way people write it: in the message the model answers,
    # and so in the texts of the conversation that go along with the next call.
    forms = " / ".join(WRITTEN)
    driver.say("c1", f"is {CARD} the same as {forms}?")
    driver.say("c1", "and another question?")
    sent = standin.everything_sent()
    assert len(standin.received()) == 2
    for form in (CARD, *WRITTEN, "5555 4444", "4444-3333", "3333.2222", "55554444"):
        assert form not in sent, form
    first, second = (conversation(r) for r in standin.received())
    assert first[-1] == ("user", f"is ****2222 the same as {' / '.join(['****2222'] * len(WRITTEN))}?")
    assert ("user", "it is ****2222") in first and first[-1] in second


# The same masking in what the store keeps --------------------------------------------------------------


def test_value_spans_find_a_value_however_it_is_written() -> None:
    text = "a 5555-4444-3333-2222, b 5555 4444 3333 2222, c 5555444433332222, d 5555.4444.3333.2222"
    assert [text[s:e] for s, e in value_spans(text, CARD)] == [
        "5555-4444-3333-2222",
        "5555 4444 3333 2222",
        "5555444433332222",
        "5555.4444.3333.2222",
    ]
    assert value_spans(text, "5555 4444 3333 2222") == value_spans(text, CARD)  # the slot's form aside
    assert value_spans("call (555) 123-4567", "5551234567") == [(6, 19)]
    assert value_spans("IBAN de89 3704", "DE893704") == [(5, 14)]  # case aside
    assert value_spans("555-444", CARD) == [] and value_spans("anything", " - ") == []


def test_the_store_keeps_a_sensitive_value_masked_however_it_is_typed_again(tmp_path: Path) -> None:
    flow = flow_of(tmp_path, FLOW.replace("  generative_fallback: {}\n", ""))
    chat = Conversation(flow)
    chat.send("hi")
    chat.send("card")
    assert chat.send(f"it is {WRITTEN[1]}").recorded_input == "it is ****2222"
    for typed in (CARD, *WRITTEN):
        assert chat.send(f"not {typed}, right?").recorded_input == "not ****2222, right?", typed
    assert chat.send("nothing of it here").recorded_input is None  # nothing to mask: kept as it came
    chat.send("a person")
    chat.send(f"my card is {WRITTEN[0]}")
    assert chat.state.flow_memory["handoff_log"][-1]["text"] == "my card is ****2222"


# The first message ----------------------------------------------------------------------------------


def test_a_question_as_the_first_message_gets_the_greeting_then_the_answer(
    make_shard: ShardMaker, flow_dir: Path, standin: ModelStandIn
) -> None:
    numbered_answers(standin)
    # No greeting intent: what only greets is told from what asks by its words alone.
    (flow_dir / "helper.yaml").write_text(
        "".join(line for line in FLOW.splitlines(True) if "greet" not in line)
    )
    driver = on_standin(make_shard, flow_dir, standin)
    opened = driver.say("c1", "Do you accept PayPal?")
    assert opened.response.text == "Hello! How can I help?\nAnswer 1"
    assert "generative_fallback" in opened.actions_performed and opened.state.error_count == 0
    (request,) = standin.received()
    assert conversation(request) == [("user", "Do you accept PayPal?")]
    # The same words again are answered as any message is, with the first exchange before them.
    again = driver.say("c1", "Do you accept PayPal?")
    assert again.response.text == "Answer 2"
    assert conversation(standin.received()[1]) == [
        ("user", "Do you accept PayPal?"),
        ("assistant", "Hello! How can I help?\nAnswer 1"),
        ("user", "Do you accept PayPal?"),
    ]
    for greeting in ("hi", "Hello there!", "good morning", "hallo zusammen"):
        assert driver.say(greeting, greeting).response.text == "Hello! How can I help?", greeting
    assert len(standin.received()) == 2  # a greeting asks the model nothing


def test_without_a_generative_fallback_a_first_question_gets_the_greeting_alone(tmp_path: Path) -> None:
    chat = Conversation(flow_of(tmp_path, FLOW.replace("  generative_fallback: {}\n", "")))
    opened = chat.send("Do you accept PayPal?")
    assert opened.response.text == "Hello! How can I help?" and chat.state.error_count == 0
    assert "fallback" not in opened.actions_performed
