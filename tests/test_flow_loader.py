"""Flow files: the docs' example loads as documented; every mistake is reported at its line."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from confab.runtime.flows.language.document import (
    ActionSpec,
    ButtonSpec,
    ExperimentSpec,
    IntentSpec,
    QuickReplySpec,
    ResponseSpec,
    SlotSpec,
    StateSpec,
    TransitionSpec,
)
from confab.runtime.flows.language.loader import (
    FlowFileError,
    check_flow_file,
    load_flow_dirs,
    load_flow_file,
    load_flow_paths,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "flows.md"
MARK = "# <-"  # in a test file, marks the line an error must point at

MINIMAL = """\
flow: mini
settings:
  start: ask
intents:
  go: {keywords: [go]}
slots:
  name: {type: text, prompt: "Your name?"}
states:
  ask:
    collect: [name]
    transitions:
      - {intent: go, to: done}
  done:
    terminal: true
"""


def docs_example() -> str:
    """The YAML of docs/flows.md's complete example: the test keeps the docs right."""
    match = re.search(r"^## A complete example\n.*?^```yaml\n(.*?)^```", DOCS.read_text(), re.S | re.M)
    assert match, "docs/flows.md lost its complete example"
    return match.group(1)


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(old: str, new: str, base: str = MINIMAL) -> str:
    assert base.count(old) == 1, old
    return base.replace(old, new)


def only_error(tmp_path: Path, text: str) -> FlowFileError:
    """The file's one error, asserted to be on the line marked with MARK."""
    (line,) = [i for i, row in enumerate(text.splitlines(), 1) if MARK in row]
    check = check_flow_file(write(tmp_path, text))
    assert check.document is None
    assert [e.line for e in check.errors] == [line], [str(e) for e in check.errors]
    return check.errors[0]


def test_the_docs_example_loads_into_the_documented_records(tmp_path: Path) -> None:
    path = write(tmp_path, docs_example(), "pizza.yaml")
    check = check_flow_file(path)
    assert check.errors == [] and check.warnings == []
    doc = check.document
    assert doc is not None
    assert (doc.flow_id, doc.version, doc.tenant, doc.description) == ("pizza", "3", "", "Order a pizza")
    assert doc.source == str(path)

    settings = doc.settings
    assert (settings.start, settings.fallback_state, settings.max_fallbacks) == ("greet", "human", 3)
    assert settings.fallback_response == ResponseSpec(text="Sorry, I didn't get that. Pizza, or a person?")
    assert (settings.intent_threshold, settings.session_ttl_s) == (0.5, 1800.0)
    assert settings.carry_over_slots == ("email",)
    assert settings.handoff_response.text == "Hold on, a colleague will answer you here."

    # Unquoted yes/no/YES/NO are YAML 1.1 booleans, but where the format wants text they stay text.
    assert list(doc.intents) == ["order", "human", "yes", "no"]
    assert doc.intents["yes"] == IntentSpec(
        "yes", payloads=("YES",), keywords=("yes", "yep", "sure", "correct")
    )
    assert doc.intents["no"] == IntentSpec("no", payloads=("NO",), keywords=("no", "nope", "wrong"))
    assert doc.intents["order"].patterns == (r"\bmargh?erita\b",)
    assert doc.intents["order"].examples == ("I'd like a large pizza", "can I order food")

    assert doc.slots["size"] == SlotSpec(
        name="size",
        type="enum",
        prompt=ResponseSpec(text="Which size: small, medium or large?"),
        reprompts=(
            ResponseSpec(text="Sorry, small, medium or large?"),
            ResponseSpec(text="Please pick one size."),
        ),
        max_attempts=3,
        on_max_attempts="human",
        choices={"small": ("s", "little"), "medium": ("m", "regular"), "large": ("l", "big", "family")},
    )
    assert doc.slots["quantity"] == SlotSpec(
        name="quantity", type="integer", prompt=ResponseSpec(text="How many?"), minimum=1.0, maximum=20.0
    )
    assert doc.slots["email"].type == "email"

    assert doc.routes == (TransitionSpec(to="human", intent="human"),)
    assert list(doc.states) == ["greet", "take_order", "confirm", "done", "human", "greet_friendly"]
    (greeting,) = doc.states["greet"].on_enter
    assert greeting.say is not None
    assert greeting.say.text == "Hi {{ user_profile.name | default('there') }}! Pizza?"
    assert greeting.say.quick_replies == (
        QuickReplySpec("Order", "ORDER"),
        QuickReplySpec("A person", "HUMAN"),
    )
    assert greeting.say.channels == {
        "sms": ResponseSpec(text="Hi! Reply ORDER for pizza or HUMAN for a person.")
    }
    assert doc.states["greet"].transitions == (TransitionSpec(to="take_order", intent="order"),)
    assert doc.states["take_order"] == StateSpec(
        name="take_order",
        collect=("size", "quantity"),
        transitions=(
            TransitionSpec(
                to="confirm", actions=(ActionSpec(set={"variables.total": "slots.quantity * 9.5"}),)
            ),
        ),
    )
    confirm = doc.states["confirm"]
    assert confirm.on_enter[0].say is not None
    assert confirm.on_enter[0].say.buttons == (
        ButtonSpec("Yes", payload="YES"),
        ButtonSpec("No", payload="NO"),
    )
    assert confirm.transitions == (
        TransitionSpec(to="done", intent="yes"),
        TransitionSpec(to="take_order", intent="no", actions=(ActionSpec(clear=("slots",)),)),
    )
    assert doc.states["done"].terminal
    assert doc.states["done"].on_enter == (
        ActionSpec(say=ResponseSpec(text="Thanks! Your order is on its way.")),
    )
    assert doc.states["human"].on_enter == (ActionSpec(handoff="asked for a person"),)
    assert doc.experiments == {
        "greeting": ExperimentSpec(
            "greeting",
            weights={"plain": 1.0, "friendly": 1.0},
            states={"friendly": {"greet": "greet_friendly"}},
        )
    }


def test_version_defaults_to_a_hash_of_the_file(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path, MINIMAL)
    assert load_flow_file(path).version == hashlib.sha256(MINIMAL.encode()).hexdigest()[:12]
    assert load_flow_file(write(tmp_path, "version: 3\n" + MINIMAL)).version == "3"


def test_responses_in_full(tmp_path: Path) -> None:
    text = edited(
        "    terminal: true\n",
        """\
    terminal: true
    on_enter:
      - say:
          text: "Bye {{ slots.name }}"
          cards:
            - title: Margherita
              subtitle: tomato
              image_url: https://example.com/m.png
              buttons: [{title: Menu, type: url, url: "https://example.com/{{ slots.name }}"}]
          media: {url: https://example.com/a.png, mime_type: image/png, dimensions: {width: 2, height: 1}}
          location: {latitude: 52.5, longitude: 13.4}
          variants: {b: {text: Ciao}}
      - set: {slots.name: "upper(slots.name)", variables.n: 1}
      - clear: slots
      - handoff:
experiments:
  test: {weights: {a: 2, b: 0.5}}
""",
    )
    doc = load_flow_file(write(tmp_path, text))
    say, set_, clear, handoff = doc.states["done"].on_enter
    assert say.say is not None
    assert say.say.cards[0].buttons == (
        ButtonSpec("Menu", type="url", url="https://example.com/{{ slots.name }}"),
    )
    assert say.say.media == {
        "url": "https://example.com/a.png",
        "mime_type": "image/png",
        "dimensions": {"width": 2, "height": 1},
    }
    assert say.say.location == {"latitude": 52.5, "longitude": 13.4}
    assert say.say.variants == {"b": ResponseSpec(text="Ciao")}
    assert set_ == ActionSpec(set={"slots.name": "upper(slots.name)", "variables.n": "1"})
    assert (clear.kind, clear.clear) == ("clear", ("slots",))
    assert (handoff.kind, handoff.handoff) == ("handoff", "")
    assert doc.experiments["test"].weights == {"a": 2.0, "b": 0.5}


def test_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    text = edited(
        '  name: {type: text, prompt: "Your name?"}',
        '  name: &base {type: integer, prompt: "How many?", max_attempts: 2}\n'
        "  more: {<<: *base, maximum: 5}",
    )
    doc = load_flow_file(write(tmp_path, text))
    assert doc.slots["more"] == SlotSpec(
        "more", "integer", prompt=ResponseSpec(text="How many?"), max_attempts=2, maximum=5.0
    )


def test_choices_may_be_a_plain_list(tmp_path: Path) -> None:
    text = edited("  name: {type: text", "  color: {type: enum, choices: [red, green]}\n  name: {type: text")
    assert load_flow_file(write(tmp_path, text)).slots["color"].choices == {"red": (), "green": ()}


# Each case: (old, new) applied to MINIMAL, and pieces of the message; MARK is where the error must be.
ERRORS: dict[str, tuple[str, str, list[str]]] = {
    "misspelt key": (
        "    transitions:\n      - {intent: go, to: done}",
        "    transitions:\n      - {intent: go, to: done, actoins: []}  # <-",
        [
            "states.ask.transitions[0]: unknown key 'actoins'; did you mean 'actions'?",
            "(expected one of: to, intent, when, actions)",
        ],
    ),
    "misspelt settings key": (
        "  start: ask\n",
        "  start: ask\n  fallback_stat: done  # <-\n",
        ["settings: unknown key 'fallback_stat'; did you mean 'fallback_state'?"],
    ),
    "missing flow": ("flow: mini\nsettings:\n", "settings:  # <-\n", ["missing required key 'flow'"]),
    "missing start": (
        "  start: ask\n",
        "  max_fallbacks: 2  # <-\n",
        ["settings: missing required key 'start'"],
    ),
    "wrong type: number": (
        'prompt: "Your name?"}',
        'prompt: "Your name?", max_attempts: three}  # <-',
        ["slots.name.max_attempts: expected a whole number, found 'three'"],
    ),
    "wrong type: list": (
        "{keywords: [go]}",
        "{keywords: go}  # <-",
        ["intents.go.keywords: expected a list, found 'go'; write [go]"],
    ),
    "wrong type: boolean": (
        "    terminal: true",
        "    terminal: maybe  # <-",
        ["states.done.terminal: expected true or false, found 'maybe'"],
    ),
    "wrong type: mapping": ("  go: {keywords: [go]}", "  go: [go]  # <-", ["intents.go: expected a mapping"]),
    "unquoted template": (
        "\n  done:\n",
        "\n    on_enter: [{say: {text: {{ slots.name }}}}]  # <-\n  done:\n",
        ["expected text, found a mapping; quote text that starts with { or ["],
    ),
    "unknown state": (
        "to: done}",
        "to: dne}  # <-",
        ["states.ask.transitions[0].to: unknown state 'dne'; did you mean 'done'?"],
    ),
    "unknown start state": ("  start: ask", "  start: asks  # <-", ["settings.start: unknown state 'asks'"]),
    "undeclared intent": (
        "{intent: go, to: done}",
        "{intent: goo, to: done}  # <-",
        ["unknown intent 'goo'; did you mean 'go'?"],
    ),
    "intent never declared": (
        "{intent: go, to: done}",
        "{intent: stop, to: done}  # <-",
        ["states.ask.transitions[0].intent: unknown intent 'stop'; declare it under intents: (declared: go)"],
    ),
    "undeclared slot in collect": (
        "    collect: [name]",
        "    collect: [name, nmae]  # <-",
        ["states.ask.collect[1]: unknown slot 'nmae'; did you mean 'name'?"],
    ),
    "undeclared carry-over slot": (
        "  start: ask",
        "  start: ask\n  carry_over_slots: [email]  # <-",
        ["settings.carry_over_slots[0]: unknown slot 'email'; declare it under slots: (declared: name)"],
    ),
    "bad set target": (
        "to: done}",
        "to: done, actions: [{set: {slot.name: '1'}}]}  # <-",
        ["'slot.name' is not a target; expected slots.NAME or variables.NAME; did you mean slots.name?"],
    ),
    "set target of an undeclared slot": (
        "to: done}",
        "to: done, actions: [{set: {slots.age: '1'}}]}  # <-",
        ["unknown slot 'age'"],
    ),
    "bad clear target": (
        "to: done}",
        "to: done, actions: [{clear: [variables]}]}  # <-",
        ["'variables' is not a target; expected slots.NAME or variables.NAME, or slots for every slot"],
    ),
    "two keys in one action": (
        "to: done}",
        "to: done, actions: [{clear: slots, handoff: now}]}  # <-",
        ["an action has exactly one key, found clear, handoff; make each its own list item"],
    ),
    "say with a string": (
        "\n  done:\n",
        '\n    on_enter: [{say: "hello"}]  # <-\n  done:\n',
        [
            "states.ask.on_enter[0].say: expected a response (a mapping), found 'hello'; "
            "write say: {text: ...}"
        ],
    ),
    "bad intent regex": (
        "{keywords: [go]}",
        "{patterns: ['(go']}  # <-",
        ["intents.go.patterns[0]: invalid regular expression '(go'", "missing ), unterminated subpattern"],
    ),
    "bad slot regex": (
        "{type: text,",
        "{type: regex, pattern: '[a-', # <-\n   ",
        ["slots.name.pattern: invalid regular expression '[a-'"],
    ),
    "regex slot without a pattern": (
        "{type: text,",
        "{type: regex,  # <-\n   ",
        ["a regex slot needs a pattern"],
    ),
    "enum slot without choices": ("{type: text,", "{type: enum,  # <-\n   ", ["an enum slot needs choices"]),
    "choices on a text slot": (
        "{type: text,",
        "{type: text, choices: [a],  # <-\n   ",
        ["slots.name.choices: does not apply to a text slot (only to: enum)"],
    ),
    "unknown slot type": (
        "{type: text,",
        "{type: txt,  # <-\n   ",
        ["slots.name.type: unknown slot type 'txt'; did you mean 'text'?", "expected one of: text, integer"],
    ),
    "minimum above maximum": (
        "{type: text,",
        "{type: integer, minimum: 5, maximum: 2,  # <-\n   ",
        ["slots.name: maximum (2) is below minimum (5)"],
    ),
    "max_attempts below 1": (
        "{type: text,",
        "{type: text, max_attempts: 0,  # <-\n   ",
        ["slots.name.max_attempts: must be >= 1, found 0"],
    ),
    "unknown give-up state": (
        "{type: text,",
        "{type: text, on_max_attempts: human,  # <-\n   ",
        ["slots.name.on_max_attempts: unknown state 'human'; declare it under states: (declared: ask, done)"],
    ),
    "intent threshold out of range": (
        "  start: ask",
        "  start: ask\n  intent_threshold: 1.5  # <-",
        ["settings.intent_threshold: must be between 0 and 1, found 1.5"],
    ),
    "duplicate key": (
        "  done:\n",
        "  ask: {}  # <-\n  done:\n",
        ["states: 'ask' appears twice (first on line 9)"],
    ),
    "unknown button type": (
        "\n  done:\n",
        "\n    on_enter: [{say: {buttons: [{title: x, type: link}]}}]  # <-\n  done:\n",
        ["unknown button type 'link'", "expected one of: postback, url, phone, share, login"],
    ),
    "unknown channel": (
        "\n  done:\n",
        "\n    on_enter: [{say: {text: hi, channels: {whatsap: {text: x}}}}]  # <-\n  done:\n",
        ["unknown channel 'whatsap'; did you mean 'whatsapp'?"],
    ),
    "unknown media field": (
        "\n  done:\n",
        "\n    on_enter: [{say: {media: {url: x, mimetype: y}}}]  # <-\n  done:\n",
        ["unknown field 'mimetype'; did you mean 'mime_type'?"],
    ),
    "undeclared variant": (
        "\n  done:\n",
        "\n    on_enter: [{say: {text: hi, variants: {b: {text: x}}}}]  # <-\n  done:\n",
        ["'b' is not a variant of any experiment (none are declared)"],
    ),
    "zero weight": (
        "    terminal: true\n",
        "    terminal: true\nexperiments:\n  x: {weights: {a: 1, b: 0}}  # <-\n",
        ["experiments.x.weights.b: a weight must be > 0, found 0"],
    ),
    "experiment swaps an unknown state": (
        "    terminal: true\n",
        "    terminal: true\nexperiments:\n  x:\n    weights: {a: 1}\n    states: {a: {ask: ask2}}  # <-\n",
        ["experiments.x.states.a.ask: unknown state 'ask2'"],
    ),
    # The parser notices the unclosed list on the next line.
    "invalid YAML": ("  start: ask\nintents:", "  start: [ask\nintents:  # <-", ["invalid YAML"]),
    "a misspelt slot in an expression": (
        "{intent: go, to: done}",
        "{intent: go, when: \"slots.nmae == 'x'\", to: done}  # <-",
        ["when: unknown slot 'nmae'; did you mean 'name'?"],
    ),
    "a misspelt slot in filled()": (
        "{intent: go, to: done}",
        "{intent: go, when: \"filled('nam')\", to: done}  # <-",
        ["unknown slot 'nam'; did you mean 'name'?"],
    ),
    "a variable nothing sets": (
        "{intent: go, to: done}",
        "{intent: go, when: 'variables.scroe > 3', to: done, actions: [{set: {variables.score: '1'}}]}  # <-",
        [
            "variables.scroe is never set by a `set`, a webhook's store_as, a generate's into or a call;"
            " did you mean 'score'?"
        ],
    ),
    "a misspelt slot in a template": (
        "\n  done:\n",
        "\n    on_enter: [{say: {text: 'Hi {{ slots.nmae }}'}}]  # <-\n  done:\n",
        ["on_enter[0].say.text: unknown slot 'nmae'; did you mean 'name'?"],
    ),
    "an unknown name in a template": (
        "\n  done:\n",
        "\n    on_enter: [{say: {text: 'Hi {{ slot.name }}'}}]  # <-\n  done:\n",
        ["unknown name 'slot' in the template; did you mean 'slots'?"],
    ),
    "value outside a slot's checks": (
        "{intent: go, to: done}",
        "{intent: go, when: 'value > 3', to: done}  # <-",
        ["`value` (the value being checked) exists only in a slot's validate"],
    ),
    "=> for >=": (
        "{intent: go, to: done}",
        "{intent: go, when: 'slots.name => 4.5', to: done}  # <-",
        ["'=>' is not an operator; did you mean '>='?"],
    ),
    "a date range on a text slot": (
        'prompt: "Your name?"}',
        'prompt: "Your name?", range: past}  # <-',
        ["slots.name.range: does not apply to a text slot (only to: date)"],
    ),
    "an unknown mask": (
        "  start: ask\n",
        "  start: ask\n  mask: [credit_card]  # <-\n",
        ["unknown mask 'credit_card'"],
    ),
    "a language the flow does not list": (
        "\n  done:\n",
        "\n    on_enter: [{say: {text: hi, languages: {de: {text: hallo}}}}]  # <-\n  done:\n",
        ["'de' is not one of the flow's languages; list the flow's languages under settings.languages"],
    ),
    "a check with both kinds": (
        'prompt: "Your name?"}',
        'prompt: "Your name?", validate: [{when: "value != \'x\'", webhook: names}]}  # <-',
        ["a check has either `when` (an expression) or `webhook`, not both"],
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_mistake_is_reported_at_its_line(tmp_path: Path, case: str) -> None:
    old, new, pieces = ERRORS[case]
    error = only_error(tmp_path, edited(old, new))
    assert str(error) == f"{tmp_path / 'flow.yaml'}:{error.line}: {error.message}"
    for piece in pieces:
        assert piece in error.message


def test_a_misspelt_required_key_is_both_unknown_and_missing(tmp_path: Path) -> None:
    text = edited("{intent: go, to: done}", "{intent: go, too: done}")
    messages = [(e.line, e.message) for e in check_flow_file(write(tmp_path, text)).errors]
    assert messages == [
        (
            12,
            "states.ask.transitions[0]: unknown key 'too'; did you mean 'to'? "
            "(expected one of: to, intent, when, actions)",
        ),
        (12, "states.ask.transitions[0]: missing required key 'to'"),
    ]


def test_a_bad_expression_is_reported_at_its_line(tmp_path: Path) -> None:
    text = edited("{intent: go, to: done}", "{intent: go, when: 'slots.name ==', to: done}  # <-")
    error = only_error(tmp_path, text)
    assert (
        "states.ask.transitions[0].when: invalid expression 'slots.name ==' at character 14" in error.message
    )


def test_a_bad_set_expression_is_reported_at_its_line(tmp_path: Path) -> None:
    text = edited("to: done}", "to: done, actions: [{set: {variables.x: 'nope(1)'}}]}  # <-")
    assert "unknown function 'nope'" in only_error(tmp_path, text).message


def test_a_bad_template_is_reported_at_its_line(tmp_path: Path) -> None:
    text = edited('prompt: "Your name?"}', 'prompt: "Your {{ name"}  # <-')
    assert "slots.name.prompt: invalid template:" in only_error(tmp_path, text).message


def test_a_bad_template_in_a_block_is_reported_at_its_own_line(tmp_path: Path) -> None:
    text = edited(
        "    terminal: true\n",
        "    terminal: true\n    on_enter:\n      - say:\n          text: |\n            Bye.\n"
        "            {% if %}  # <-\n",
    )
    assert "states.done.on_enter[0].say.text: invalid template:" in only_error(tmp_path, text).message


def test_every_error_is_reported_in_line_order_and_load_raises_the_first(tmp_path: Path) -> None:
    text = edited("to: done}", "to: nowhere}").replace("  start: ask", "  start: ask\n  max_fallbacks: x")
    path = write(tmp_path, text)
    check = check_flow_file(path)
    assert [e.line for e in check.errors] == [4, 13]
    with pytest.raises(FlowFileError) as raised:
        load_flow_file(path)
    assert (raised.value.path, raised.value.line) == (str(path), 4)
    assert "max_fallbacks: expected a whole number, found 'x'" in raised.value.message
    assert pickle.loads(pickle.dumps(raised.value)).line == 4  # errors cross process boundaries


def test_warnings_do_not_stop_a_flow(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("  go: {keywords: [go]}", "  go: {keywords: [go]}\n  idle: {}")
        + "  orphan:\n    transitions: [{to: done}]\n"
        + "  gone: {terminal: true, transitions: [{to: ask}]}\n"
    )
    check = check_flow_file(write(tmp_path, text))
    assert check.document is not None and check.errors == []
    assert [(w.line, w.message) for w in check.warnings] == [
        (6, "intents.idle: no payloads, keywords, patterns or examples: it can never match"),
        (16, "states.orphan: unreachable from the start state 'ask'"),
        (
            16,
            "states.orphan: says nothing when entered and waits for the next message before its "
            "transitions are tried; to route at once, write them under decide:",
        ),
        (
            18,
            "states.gone: a terminal state ends the conversation, "
            "so its transitions and collect are never used",
        ),
        (18, "states.gone: unreachable from the start state 'ask'"),
    ]
    assert str(check.warnings[0]).endswith(
        ":6: warning: intents.idle: no payloads, keywords, patterns or examples: it can never match"
    )


def test_states_reached_by_routes_fallback_give_up_and_experiments_are_reachable(tmp_path: Path) -> None:
    text = edited(
        "    terminal: true\n",
        """\
    terminal: true
  routed: {}
  fallen: {}
  gave_up: {}
  swapped: {on_enter: [{say: {text: Hi}}], transitions: [{to: after_swap}]}
  after_swap: {}
routes: [{intent: go, to: routed}]
experiments:
  x: {weights: {a: 1}, states: {a: {ask: swapped}}}
""",
    )
    text = text.replace("  start: ask", "  start: ask\n  fallback_state: fallen")
    text = text.replace('prompt: "Your name?"}', 'prompt: "Your name?", on_max_attempts: gave_up}')
    check = check_flow_file(write(tmp_path, text))
    assert check.errors == [] and check.warnings == []


def test_an_invalid_file_does_not_stop_the_others(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    write(flows, MINIMAL, "a.yaml")
    write(flows, edited("to: done}", "to: nowhere}"), "b.yaml")
    write(flows, MINIMAL.replace("flow: mini", "flow: other"), "c.yml")
    write(flows, "not: a flow\n", "notes.txt")  # not a flow file: ignored
    write(flows, "broken: [", ".#a.yaml")  # an editor's lock file: ignored
    (flows / "sub").mkdir()
    write(flows / "sub", MINIMAL.replace("flow: mini", "flow: deeper"), "d.yaml")  # below: loaded too
    write(flows, "server:\n  listen: 127.0.0.1:50051\n", "confab.yaml")  # not a flow: skipped quietly
    result = load_flow_dirs([flows, tmp_path / "missing"])
    assert [d.flow_id for d in result.flows] == ["mini", "other", "deeper"]
    assert result.skipped == [str(flows / "confab.yaml")]
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'missing'}: not a directory",
        f"{flows / 'b.yaml'}:12: states.ask.transitions[0].to: unknown state 'nowhere'; "
        "declare it under states: (declared: ask, done)",
    ]
    assert result.files == [str(flows / n) for n in ("a.yaml", "b.yaml", "c.yml", "sub/d.yaml")]


def test_a_second_flow_with_the_same_id_and_tenant_is_an_error(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write(one, MINIMAL, "mini.yaml")
    write(two, "# the same flow again\n" + MINIMAL, "mini.yaml")
    write(two, MINIMAL.replace("flow: mini", "flow: mini\ntenant: acme"), "acme.yaml")  # another tenant: fine
    result = load_flow_dirs([one, two])
    assert [(d.flow_id, d.tenant, d.source) for d in result.flows] == [
        ("mini", "", str(one / "mini.yaml")),
        ("mini", "acme", str(two / "acme.yaml")),
    ]
    (error,) = result.errors
    assert (error.path, error.line) == (str(two / "mini.yaml"), 2)
    assert f"flow 'mini' (shared, no tenant) is already defined in {one / 'mini.yaml'}" in error.message


def test_paths_may_be_files(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL, "mini.flow")
    assert [d.flow_id for d in load_flow_paths([path]).flows] == ["mini"]
    (error,) = load_flow_paths([tmp_path / "nope.yaml"]).errors
    assert str(error) == f"{tmp_path / 'nope.yaml'}: no such file or directory"


@pytest.mark.parametrize(
    ("text", "line", "piece"),
    [
        ("", 1, "the file is empty"),
        ("- a list\n", 1, "expected a mapping, found a list"),
        ("flow: x\n---\nflow: y\n", 2, "invalid YAML"),
    ],
)
def test_files_that_are_not_flows(tmp_path: Path, text: str, line: int, piece: str) -> None:
    error = check_flow_file(write(tmp_path, text)).errors[0]
    assert error.line == line and piece in error.message


@pytest.mark.parametrize(
    ("text", "line", "hint"),
    [
        ("flow: x\nsettings:\n\tstart: a\n", 3, "this line has a tab; YAML is indented with spaces only"),
        (
            "flow: x\nsettings: {start: a}\nstates:\n  a:\n    on_enter: [{say: {text: Note: hi}}]\n",
            5,
            "inline {...} or [...] is not closed, or holds text with a comma or colon that needs quotes",
        ),
        (
            "flow: x\ndescription: Note: this is it\n",
            2,
            "a colon inside unquoted text; put the text in quotes",
        ),
        ("flow: x\nsettings:\n  start: a\n states: {}\n", 4, "the indentation of this line does not match"),
        ("flow: x\ndescription: `quoted`\n", 2, "text starting with ` must be in quotes"),
    ],
)
def test_yaml_errors_say_what_is_likely_wrong(tmp_path: Path, text: str, line: int, hint: str) -> None:
    (error,) = check_flow_file(write(tmp_path, text)).errors
    assert error.line == line and hint in error.message, error.message
    assert "the parser says:" in error.message  # the parser's own words stay, after the hint
