"""The model recognizer (settings.nlu: {recognizer: model}) on a real shard, against a local
OpenAI-compatible stand-in (tools.model_standin), and in-process where no model is called.

The cafe example flow (tests/dialogues/examples/flows/cafe.yaml) reads coffee orders this way.
A reading that passes every check fills the intent and slots; every way a reading can be
unusable, and every way its call can fail, leaves exactly what the built-in recognizer alone
makes of the message (measured against a shard without a provider); exact matches never reach
the model; no prompt carries what the flow masks; dialogues and replays never call a model.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from confab.protos import mcp_engine_pb2 as pb
from confab.runtime.flows import RECOGNIZE
from confab.runtime.flows.authoring.dialogues import (
    DialogueFileError,
    ScriptedGenerations,
    dialogue_message,
    load_dialogues,
    reading_result,
    run_dialogues,
)
from confab.runtime.flows.authoring.runner import FlowRunner
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.flows.execution.intents import (
    AsksModel,
    DefaultRecognizer,
    IntentMatch,
    IntentRecognizer,
    ModelQuestion,
    ModelReading,
    Utterance,
)
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.flows.execution.model_recognizer import ModelRecognizer
from confab.runtime.flows.execution.nlu import (
    register_recognizer,
    registered_recognizers,
    unregister_recognizer,
)
from confab.runtime.flows.language.document import IntentSpec, SlotSpec
from confab.runtime.flows.language.loader import load_flow_paths
from confab.runtime.model import ConversationKey, InboundMessage, TurnResult
from confab.runtime.models import ModelProvider, ModelSettings, TokenBudget
from confab.tools.cli import main
from confab.tools.model_standin import ModelStandIn, Script
from tests.shard_runner import LocalRunner
from tests.support import ServerProcess, message
from tests.test_flow_loader import MARK, only_error, write
from tests.test_generation import Driver, ShardMaker

EXAMPLES = Path(__file__).parent / "dialogues" / "examples"
CAFE = EXAMPLES / "flows" / "cafe.yaml"
CARD = "4111 1111 1111 1111"
PHONE = "07946095800"


@pytest.fixture
def cafe_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flows"
    directory.mkdir()
    (directory / "cafe.yaml").write_text(CAFE.read_text())
    return directory


def reading(intent: str | None = None, confidence: float = 0.9, **slots: Any) -> Script:
    """The stand-in's answer: a reading as a model writes it."""
    return Script(text=json.dumps({"intent": intent, "confidence": confidence, "slots": slots}))


def cafe(
    make_shard: ShardMaker,
    cafe_dir: Path,
    standin: ModelStandIn | None,
    *,
    timeout_s: float = 5.0,
    retries: int = 0,
    budget: TokenBudget | None = None,
) -> Driver:
    """A shard running the cafe flow; with ``standin``, its model provider (else none)."""
    if standin is None:
        return Driver(make_shard(flow_dirs=(str(cafe_dir),)), flow="cafe")
    provider = ModelProvider("standin", standin.url, "standin-model", timeout_s=timeout_s, retries=retries)
    models = ModelSettings((provider,), budget or TokenBudget())
    return Driver(make_shard(flow_dirs=(str(cafe_dir),), models=models), flow="cafe")


# A reading that passes -----------------------------------------------------------------------


def test_a_reading_fills_the_intent_and_slots_the_words_alone_would_miss(
    make_shard: ShardMaker, cafe_dir: Path, standin: ModelStandIn
) -> None:
    driver = cafe(make_shard, cafe_dir, standin)
    standin.script = reading()
    assert driver.say("c1", "hello").state.current_state == "welcome"
    standin.script = reading("order", 0.93, drink="latte", size="large", quantity=2)
    ordered = driver.say("c1", "could I get two of the big ones, lattes")
    assert ordered.state.current_state == "take_order"
    assert (ordered.state.current_intent, ordered.state.intent_confidence) == ("order", 0.93)
    assert ordered.state.slots == {"drink": "latte", "size": "large", "quantity": 2}
    assert ordered.response.text.startswith("Your phone number")
    assert "recognize:default" in ordered.actions_performed
    assert not any(a.startswith("nlu_fallback") for a in ordered.actions_performed)

    # An answer to the sensitive question is not sent; a correction the words alone miss is read.
    confirming = driver.say("c1", "0171 2345678")
    assert (
        confirming.state.current_state == "confirm"
        and "nlu_fallback:sensitive" in confirming.actions_performed
    )
    standin.script = reading(None, 0.88, size="medium")
    corrected = driver.say("c1", "hmm, not that big after all, the middle one")
    assert corrected.state.current_state == "confirm" and corrected.state.slots["size"] == "medium"
    assert "correct:size" in corrected.actions_performed and "2 medium latte(s)" in corrected.response.text
    assert driver.say("c1", "", payload="YES").state.current_state == "ordered"

    requests = standin.received()
    assert len(requests) == 3  # hello, the order, the correction: not the phone number, not the button
    body = requests[1].body
    assert body["response_format"] == {"type": "json_object"}
    assert (body["max_tokens"], body["temperature"]) == (120, 0.0)  # the flow's options
    system, user = body["messages"]
    assert user == {"role": "user", "content": "could I get two of the big ones, lattes"}
    prompt = system["content"]
    assert '"intent": NAME or null' in prompt
    assert '- order: e.g. "I\'d like a latte"; "can I get a coffee"; "two espressos please"' in prompt
    assert "- size: one of small; medium (also: regular); large" in prompt
    assert "- quantity: a whole number, from 1 to 10" in prompt
    assert "phone" not in prompt  # a sensitive slot is never offered
    keys = {r.header("Idempotency-Key") for r in requests}
    assert len(keys) == 3 and "" not in keys


# Readings that cannot be used, calls that fail ---------------------------------------------------

MESSAGE = "a large latte please"  # alone: the intent order (a keyword), drink and size; not exact
UNUSABLE: dict[str, tuple[Script, dict[str, Any], list[str]]] = {
    "an unknown intent": (reading("refund"), {}, ["recognize:default", "nlu_fallback:unknown_intent"]),
    "an unknown slot": (reading("order", milk="oat"), {}, ["nlu_fallback:unknown_slot"]),
    "a sensitive slot": (reading("order", phone=PHONE), {}, ["nlu_fallback:unknown_slot"]),
    "a size the bar lacks": (reading("order", size="gigantic"), {}, ["nlu_fallback:invalid_slot"]),
    "too many": (reading("order", quantity=40), {}, ["nlu_fallback:invalid_slot"]),
    "half a coffee": (reading("order", quantity=2.5), {}, ["nlu_fallback:invalid_slot"]),
    "a list for a size": (reading("order", size=["large"]), {}, ["nlu_fallback:invalid_slot"]),
    "prose": (Script(text="Sure, a large latte!"), {}, ["nlu_fallback:invalid_json"]),
    "no confidence": (Script(text='{"intent": "order"}'), {}, ["nlu_fallback:invalid_json"]),
    "low confidence": (reading("order", 0.5, quantity=1), {}, ["nlu_fallback:low_confidence"]),
    "a 500": (Script(fail_status=500), {}, ["recognize_failed:http_500", "nlu_fallback:http_500"]),
    "a 429, retried": (Script(fail_status=429), {"retries": 1}, ["nlu_fallback:http_429"]),
    "too slow": (Script(first_delay_s=3.0), {"timeout_s": 0.3}, ["recognize_failed:timeout"]),
    "a cut stream": (Script(text="{ one two three", cut_after=1), {}, ["nlu_fallback:cut"]),
}


def as_seen(result: TurnResult) -> tuple[Any, ...]:
    """What a user and the store see of a turn (not how it got there)."""
    state = result.state
    return (result.response.text, state.current_state, state.current_intent, state.slots, state.error_count)


@pytest.fixture(scope="module")
def lexical() -> tuple[TurnResult, TurnResult]:
    """What the built-in recognizer alone makes of MESSAGE, and of the next one: a shard without
    a model provider (the call fails at once: nlu_fallback:no_provider)."""
    with LocalRunner([str(CAFE.parent)]) as runner:
        key = ConversationKey("acme", "lexical")
        runner.send(key, "hi", "", "web", "cafe")
        first = runner.turn(key, runner_message(MESSAGE))
        second = runner.turn(key, runner_message("3"))
    assert "nlu_fallback:no_provider" in first.actions_performed
    assert first.state.slots == {"drink": "latte", "size": "large"}
    return first, second


def runner_message(text: str) -> InboundMessage:
    return dialogue_message(text, "", "web", "cafe")


@pytest.mark.parametrize("case", list(UNUSABLE), ids=list(UNUSABLE))
def test_an_unusable_reading_or_a_failed_call_leaves_the_built_in_answer(
    make_shard: ShardMaker,
    cafe_dir: Path,
    standin: ModelStandIn,
    lexical: tuple[TurnResult, TurnResult],
    case: str,
) -> None:
    script, provider, actions = UNUSABLE[case]
    driver = cafe(make_shard, cafe_dir, standin, **provider)
    standin.script = reading()
    driver.say("c1", "hi")
    standin.script = script
    result = driver.say("c1", MESSAGE)
    assert as_seen(result) == as_seen(lexical[0])
    assert [a for a in actions if a not in result.actions_performed] == []
    assert driver.state("c1") == "take_order"  # as stored
    # The conversation goes on from there, the model answering again.
    standin.script = reading(None, 0.9, quantity=3)
    after = driver.say("c1", "3")
    assert as_seen(after) == as_seen(lexical[1])
    assert "recognize:default" in after.actions_performed
    assert after.state.message_count == 3
    assert "asked for: quantity." in standin.received()[-1].body["messages"][0]["content"]


def test_a_spent_budget_leaves_the_built_in_answer_and_no_call_leaves(
    make_shard: ShardMaker, cafe_dir: Path, standin: ModelStandIn, lexical: tuple[TurnResult, TurnResult]
) -> None:
    driver = cafe(make_shard, cafe_dir, standin, budget=TokenBudget(tokens_per_day=30))
    standin.script = reading()  # the stand-in counts 30 tokens a call
    assert "recognize:default" in driver.say("c1", "hi").actions_performed
    result = driver.say("c1", MESSAGE)
    assert as_seen(result) == as_seen(lexical[0])
    assert "recognize_failed:budget" in result.actions_performed
    assert "nlu_fallback:budget" in result.actions_performed
    assert len(standin.received()) == 1
    other = driver.say("o1", "hi", tenant="other")  # another tenant's budget is its own
    assert "recognize:default" in other.actions_performed and len(standin.received()) == 2


def test_exact_matches_never_reach_the_model(
    make_shard: ShardMaker, cafe_dir: Path, standin: ModelStandIn
) -> None:
    driver = cafe(make_shard, cafe_dir, standin)
    standin.script = reading("human", 0.99)  # were it asked, it would hand the order over
    assert driver.say("c1", "", payload="ORDER").state.current_state == "take_order"  # a button
    assert driver.say("c1", "latte").state.slots == {"drink": "latte"}  # nothing but a keyword
    assert driver.say("c2", "Barista!").state.current_state == "barista"  # and a route's keyword
    assert standin.received() == []


def test_a_model_call_is_waited_on_in_its_own_conversation_only(
    make_shard: ShardMaker, cafe_dir: Path, standin: ModelStandIn
) -> None:
    """Suspended like any outside call: a later message of the same conversation waits behind it."""
    gate = threading.Event()
    standin.choose = lambda body: (
        Script(text=reading("order", drink="tea").text, gate=gate)
        if "slowly" in body["messages"][-1]["content"]
        else reading()
    )
    driver = cafe(make_shard, cafe_dir, standin)
    slow, _ = driver.start("slow", "a tea, slowly")
    queued, _ = driver.start("slow", "hello again")
    assert driver.say("quick", "hello").state.current_state == "welcome"
    assert slow not in driver.outcomes and queued not in driver.outcomes
    gate.set()
    assert driver.wait(slow).state.slots == {"drink": "tea"}
    assert driver.wait(queued).state.current_state == "take_order"


@pytest.mark.integration
def test_through_a_real_server_a_failed_call_leaves_the_words_and_a_reading_fills_the_order(
    tmp_path: Path, standin: ModelStandIn
) -> None:
    config = tmp_path / "confab.yaml"
    config.write_text(
        f"flows: {{dirs: ['{CAFE.parent}']}}\n"
        f"models: {{providers: [{{name: standin, base_url: '{standin.url}', model: m, retries: 0}}]}}\n"
    )
    server = ServerProcess(tmp_path / "data", shards=1, extra=["--config", str(config)])
    try:
        stub = server.start().stub()

        def send(text: str) -> pb.ProcessMessageResponse:
            request = message("c1", text)
            request.processing_hints.force_flow = "cafe"
            reply: pb.ProcessMessageResponse = stub.ProcessMessage(request)
            return reply

        standin.script = reading()
        assert send("hello").current_state == "welcome"
        standin.script = Script(fail_status=500)
        fell_back = send("a latte, the big one")
        assert (fell_back.current_state, fell_back.response.text) == (
            "take_order",
            "Which size: small, medium or large?",
        )
        assert "recognize_failed:http_500" in fell_back.actions_performed
        standin.script = reading(None, 0.9, size="large", quantity=2)
        read = send("the big one, two of them")
        assert (read.current_state, read.response.text) == (
            "take_order",
            "Your phone number, so we can text you when it's ready?",
        )
        assert "recognize:default" in read.actions_performed and "nlu_fallback" not in str(
            read.actions_performed
        )
        assert len(standin.received()) == 3
    finally:
        server.stop()


# Masking -------------------------------------------------------------------------------------------


def test_no_prompt_carries_a_sensitive_value_or_what_the_masks_match(
    make_shard: ShardMaker, cafe_dir: Path, standin: ModelStandIn
) -> None:
    driver = cafe(make_shard, cafe_dir, standin)
    standin.script = reading("order", drink="latte", size="large", quantity=2)
    first = driver.say("c1", f"two large lattes, text {PHONE}, I pay with {CARD}")
    assert first.state.current_state == "confirm" and first.state.slots["phone"] == PHONE
    standin.script = reading(None, quantity=3)
    again = driver.say("c1", f"is {PHONE} right? and make it three, card {CARD.replace(' ', '')}")
    assert again.state.slots["quantity"] == 3 and "correct:quantity" in again.actions_performed
    # A phone number written with spaces, read as its digits: masked however it is written.
    spaced = driver.say("c1", "my other number is +44 20 7946 0958, make it four")
    assert "nlu_fallback:sensitive" not in spaced.actions_performed
    first_request, second_request, third_request = standin.received()
    assert third_request.body["messages"][1]["content"] == "my other number is ****0958, make it four"
    sent = standin.everything_sent()
    for secret in (PHONE, CARD, CARD.replace(" ", ""), "7946 0958", "4111 1111"):
        assert secret not in sent
    assert first_request.body["messages"][1]["content"] == "two large lattes, text ****, I pay with ****1111"
    assert second_request.body["messages"][1]["content"] == "is **** right? and make it three, card ****1111"


# The plug-in interface -----------------------------------------------------------------------------


class Echoing:
    """A plug-in that asks a model (AsksModel) with its own prompt and its own reading: the model's
    answer is "INTENT;SLOT=VALUE;..." (no intent: "")."""

    def __init__(
        self, intents: Mapping[str, IntentSpec], threshold: float, options: Mapping[str, Any], language: str
    ) -> None:
        self.lexical = DefaultRecognizer(intents, threshold)
        self.asked: list[Utterance] = []

    def recognize(self, text: str, payload: str = "") -> IntentMatch | None:
        return self.lexical.recognize(text, payload)

    def question(self, utterance: Utterance) -> ModelQuestion | None:
        self.asked.append(utterance)
        return ModelQuestion(({"role": "user", "content": f"Read: {utterance.text}"},), provider="own")

    def read(self, utterance: Utterance, answer: str) -> ModelReading:
        intent, *pairs = answer.split(";")
        return ModelReading(intent or None, 1.0, dict(p.split("=", 1) for p in pairs))


PLUGGED = """\
flow: plugged
settings: {start: ask, nlu: {recognizer: echoing}}
intents: {book: {keywords: [book]}}
slots:
  nights: {type: integer, minimum: 1, maximum: 14, validate: [{when: "value != 13"}]}
  note: {type: text, prompt: "Anything else?"}
  card: {type: regex, pattern: '(?P<value>\\d{16})', sensitive: true}
states:
  ask:
    transitions: [{intent: book, to: booking}]
  booking:
    collect: [nights, note]
    transitions: [{to: booked}]
  booked:
    on_enter: [{say: {text: "{{ slots.nights }} nights, {{ slots.note }}."}}]
"""


def test_a_plug_in_that_asks_a_model_goes_through_the_same_checks(tmp_path: Path) -> None:
    register_recognizer("echoing", Echoing)
    try:
        assert registered_recognizers()[:2] == ["builtin", "model"] and "echoing" in registered_recognizers()
        directory = tmp_path / "flows"
        directory.mkdir()
        (directory / "plugged.yaml").write_text(PLUGGED)
        flows, problems = load_flows([directory])
        assert not problems
        (flow,) = [f for f in flows if isinstance(f, DeclarativeFlow) and f.flow_id == "plugged"]
        recognizer = flow.recognizers[""]
        assert isinstance(recognizer, Echoing) and isinstance(recognizer, AsksModel)
        assert not isinstance(DefaultRecognizer({}, 0.5), AsksModel)
        with FlowRunner(flows) as runner:
            key = ConversationKey("acme", "p")

            def send(text: str, answer: str) -> Any:
                return runner.send(
                    key, text, "", "web", "plugged", generations=ScriptedGenerations(reading=answer)
                )

            assert "nlu_fallback:unknown_intent" in send("hi", "stay").actions  # an intent the flow lacks
            booking = send("a room please", "book;nights=13")  # 13 nights: the slot's check refuses
            assert booking.state == "ask" and "nlu_fallback:invalid_slot" in booking.actions
            assert "rejected:nights" in booking.actions
            booking = send("a room, 4111111111111111, for a week", "book;nights=7")
            assert (booking.state, booking.slots) == ("booking", {"nights": 7})
            assert "recognize:own" in booking.actions and booking.text == "Anything else?"
            booked = send("we arrive around ten, thanks", ";note=arriving around ten")
            assert (booked.state, booked.text) == ("booked", "7 nights, arriving around ten.")
        # Asked once a message (a turn that waits on a call runs again with its answer, asking the same).
        asked = list(dict.fromkeys((u.text, tuple(u.slots)) for u in recognizer.asked))
        assert [text for text, _ in asked] == [
            "hi",
            "a room please",
            "a room, ****1111, for a week",  # the card slot's value, masked
            "we arrive around ten, thanks",
        ]
        # A text slot is offered only to the answer to its question; a sensitive slot never.
        assert [slots for _, slots in asked] == [("nights",)] * 3 + [("nights", "note")]
    finally:
        unregister_recognizer("echoing")


def test_a_plug_in_without_question_and_read_is_asked_nothing(tmp_path: Path) -> None:
    def lexical_only(
        intents: Mapping[str, IntentSpec], threshold: float, options: Mapping[str, Any], language: str
    ) -> IntentRecognizer:
        return DefaultRecognizer(intents, threshold)

    register_recognizer("echoing", lexical_only)
    try:
        directory = tmp_path / "flows"
        directory.mkdir()
        (directory / "plugged.yaml").write_text(PLUGGED)
        flows, _ = load_flows([directory])
        with FlowRunner(flows) as runner:
            key = ConversationKey("acme", "p")
            runner.send(key, "hi", "", "web", "plugged")
            view = runner.send(key, "book a room for 3 nights", "", "web", "plugged")
        assert (view.state, view.slots) == ("booking", {"nights": 3})
        assert not any("recognize" in a or "nlu" in a for a in view.actions)
    finally:
        unregister_recognizer("echoing")


# Reading a model's answer ----------------------------------------------------------------------------


def model_recognizer(**options: Any) -> ModelRecognizer:
    intents = {"order": IntentSpec("order", keywords=("latte",)), "hours": IntentSpec("hours")}
    return ModelRecognizer(DefaultRecognizer(intents, 0.5), intents, options)


UTTERANCE = Utterance(
    "two lattes", None, {"quantity": SlotSpec("quantity", "integer")}, today=datetime.date(2026, 3, 12)
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            '{"intent": "order", "confidence": 0.8, "slots": {"quantity": 2}}',
            ModelReading("order", 0.8, {"quantity": 2}),
        ),
        ('```json\n{"intent": null, "confidence": 1}\n```', ModelReading(None, 1.0, {})),
        (
            '{"intent": "order", "confidence": 0.7, "slots": {"quantity": null}}',
            ModelReading("order", 0.7, {}),
        ),
        ('{"intent": "order", "confidence": 0.59}', ModelReading(problem="low_confidence")),
        ('{"intent": "order", "confidence": NaN}', ModelReading(problem="invalid_json")),
        ('{"intent": "order", "confidence": true}', ModelReading(problem="invalid_json")),
        ('{"intent": "order", "confidence": 1.5}', ModelReading(problem="invalid_json")),
        ('{"intent": 3, "confidence": 0.9}', ModelReading(problem="invalid_json")),
        ('{"intent": "order", "confidence": 0.9, "slots": [2]}', ModelReading(problem="invalid_json")),
        ('{"confidence": 0.9}', ModelReading(problem="invalid_json")),
        ('["order"]', ModelReading(problem="invalid_json")),
        ("order, surely", ModelReading(problem="invalid_json")),
    ],
)
def test_a_models_answer_is_read_strictly(answer: str, expected: ModelReading) -> None:
    assert model_recognizer().read(UTTERANCE, answer) == expected


def test_the_prompt_says_what_the_flow_declares_and_nothing_else() -> None:
    date = SlotSpec("day", "date", range="future")
    question = model_recognizer(examples=False, provider="local").question(
        Utterance("tomorrow?", None, {"day": date}, asking="day", today=datetime.date(2026, 3, 12))
    )
    assert question is not None and question.provider == "local"
    system = question.messages[0]["content"]
    assert "- order: words: latte\n- hours" in system
    assert "- day: a date, as YYYY-MM-DD, today or after" in system
    assert "Today is 2026-03-12 (Thursday)." in system
    assert "asked for: day." in system
    assert question.messages[1] == {"role": "user", "content": "tomorrow?"}
    # The same message asks the same: a turn run again makes the same request.
    assert (
        model_recognizer(examples=False, provider="local").question(
            Utterance("tomorrow?", None, {"day": date}, asking="day", today=datetime.date(2026, 3, 12))
        )
        == question
    )


# Loading a flow -------------------------------------------------------------------------------------


def options_flow(*options: str) -> str:
    lines = "".join(f"      {option}\n" for option in options)
    head = "flow: mini\nsettings:\n  start: a\n  nlu:\n    recognizer: model\n    options:\n"
    return f"{head}{lines}states:\n  a: {{}}\n"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("provider: 3", "settings.nlu.options.provider: must be the name of a model provider"),
        ("min_confidence: 2", "settings.nlu.options.min_confidence: must be a number between 0 and 1"),
        ("examples: some", "settings.nlu.options.examples: must be true or false"),
        ("max_tokens: 0", "settings.nlu.options.max_tokens: must be a whole number of at least 1"),
        ("temperature: -1", "settings.nlu.options.temperature: must be a number between 0 and 2"),
    ],
)
def test_each_bad_option_is_reported_at_its_line(tmp_path: Path, option: str, message: str) -> None:
    text = options_flow(f"{option}  {MARK}")
    assert message in only_error(tmp_path, text).message


def test_an_unknown_option_is_reported_at_the_options(tmp_path: Path) -> None:
    text = options_flow(f"verbose: true  {MARK}")  # reported at the options (their first line)
    message = only_error(tmp_path, text).message
    assert "settings.nlu.options: unknown option(s) verbose; the model recognizer has provider," in message


def test_a_provider_the_server_lacks_skips_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, options_flow("provider: local", "min_confidence: 0.7"))
    refused = load_flow_paths([path], providers=("openai",))
    (error,) = refused.errors
    assert error.line == 7 and "settings.nlu.options.provider: no model provider 'local'" in error.message
    assert [d.flow_id for d in load_flow_paths([path], providers=("local",)).flows] == ["mini"]
    assert [d.flow_id for d in load_flow_paths([path]).flows] == ["mini"]  # none configured: not checked


# Dialogues and replays --------------------------------------------------------------------------


def test_a_dialogue_scripts_the_readings_and_each_turn_its_own() -> None:
    scripted = ScriptedGenerations(["Generated."], None, {"intent": "order", "confidence": 0.9}, "{}")
    own, default = scripted.next(RECOGNIZE), scripted.next(RECOGNIZE)
    assert json.loads(own["text"]) == {"intent": "order", "confidence": 0.9} and default["text"] == "{}"
    assert scripted.next()["text"] == "Generated."  # generate steps' answers are their own
    assert ScriptedGenerations().next(RECOGNIZE)["reason"] == "no_provider"
    assert reading_result({"fail": "http_503"})["reason"] == "http_503"


@pytest.mark.parametrize("given", [{"intent": "x", "slot": {}}, {}, 3, ["a"], {"fail": "x", "intent": "y"}])
def test_a_reading_a_dialogue_cannot_mean_is_an_error(given: object) -> None:
    with pytest.raises(DialogueFileError):
        reading_result(given)


def test_a_bad_reading_in_a_dialogue_file_names_its_turn(tmp_path: Path) -> None:
    text = "flow: cafe\ndialogues:\n  - turns:\n      - user: hi\n        recognize: {intnt: order}\n"
    with pytest.raises(
        DialogueFileError, match=r"dialogues\[0\]\.turns\[0\]\.recognize: \{'intnt'"
    ) as raised:
        load_dialogues(write(tmp_path, text, "bad.yaml"))
    assert str(raised.value).count("recognize:") == 1  # where it was, said once


def test_confab_flows_test_plays_the_cafe_without_calling_its_provider(
    tmp_path: Path, standin: ModelStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "confab.yaml"
    config.write_text(
        f"flows: {{dirs: ['{CAFE.parent}']}}\n"
        f"models: {{providers: [{{name: standin, base_url: '{standin.url}', model: m}}]}}\n"
    )
    assert main(["flows", "test", str(EXAMPLES / "cafe.yaml"), "--config", str(config)]) == 0
    assert "3 passed, 0 failed" in capsys.readouterr().out
    assert standin.received() == []


def test_a_replay_reads_each_message_as_recorded_and_calls_no_provider(
    tmp_path: Path, standin: ModelStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    # The phone number is not sensitive here: its answers are recorded as written, so a replay can
    # read them again (a masked answer is replayed masked, and reads otherwise: test_flow_replay).
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "cafe.yaml").write_text(CAFE.read_text().replace("    sensitive: true\n", ""))
    store = tmp_path / "history.sqlite3"
    file = load_dialogues(EXAMPLES / "cafe.yaml")
    with LocalRunner([str(flows)], history_s=3600.0, store_path=store) as shard:
        results = run_dialogues(file, shard)
    assert results[0].transcript[3].view is not None
    assert "correct:size" in results[0].transcript[3].view.actions  # a reading the words alone miss
    config = tmp_path / "confab.yaml"
    config.write_text(f"models: {{providers: [{{name: standin, base_url: '{standin.url}', model: m}}]}}\n")
    argv = ["flows", "replay", "--flow", "cafe", "--from", str(store), "--dir", str(flows)]
    assert main([*argv, "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    turns = sum(len(d.turns) for d in file.dialogues)
    assert (summary["conversations"], summary["same"], summary["turns"]) == (3, 3, turns)
    assert summary["unrecorded_calls"] == 0
    assert standin.received() == []
