"""Generate steps in flow files: what loads, every mistake at its line, the providers a server
has, and dialogues that script a model's answers (no model is ever called by them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confab.runtime.flows import GENERATE, WebhookCall
from confab.runtime.flows.authoring.dialogues import (
    DialogueFileError,
    ScriptedGenerations,
    generation_result,
    load_dialogues,
    run_dialogues,
)
from confab.runtime.flows.authoring.runner import FlowRunner
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.flows.language.document import GenerateSpec, KnowledgeSpec, ResponseSpec
from confab.runtime.flows.language.loader import check_flow_file, load_flow_paths
from confab.runtime.model import ConversationKey
from confab.tools.cli import main
from confab.tools.model_standin import ModelStandIn
from tests.shard_runner import LocalRunner
from tests.test_flow_loader import edited, only_error, write

GENERATING = edited(
    "  done:\n    terminal: true\n",
    """\
  done:
    on_enter:
      - generate:
          provider: local
          system: "Be brief with {{ slots.name }}."
          prompt: "Say goodbye to {{ slots.name }}"
          history: 2
          knowledge: true
          into: variables.farewell
          max_tokens: 60
          temperature: 0.5
          on_failure: ask
          failure_response: "No words today."
          budget_response: {text: "Enough for today."}
      - say: {text: "{{ variables.farewell }}"}
knowledge:
  - "We open at nine."
  - {title: Parking, text: "Parking is free."}
""",
)

PROVIDER_LINE = next(n for n, line in enumerate(GENERATING.splitlines(), 1) if "provider: local" in line)


def test_a_generate_step_loads_with_every_option(tmp_path: Path) -> None:
    check = check_flow_file(write(tmp_path, GENERATING))
    assert check.document is not None, [str(e) for e in check.errors]
    assert not check.warnings, [str(w) for w in check.warnings]
    step = check.document.states["done"].on_enter[0].generate
    assert step == GenerateSpec(
        prompt="Say goodbye to {{ slots.name }}",
        system="Be brief with {{ slots.name }}.",
        provider="local",
        history=2,
        knowledge=True,
        into="variables.farewell",
        max_tokens=60,
        temperature=0.5,
        on_failure="ask",
        failure_response=ResponseSpec(text="No words today."),
        budget_response=ResponseSpec(text="Enough for today."),
    )
    assert check.document.knowledge == (
        KnowledgeSpec(text="We open at nine."),
        KnowledgeSpec(text="Parking is free.", title="Parking"),
    )
    assert check.providers == [("local", PROVIDER_LINE, "states.done.on_enter[0].generate.provider")]


def test_a_generative_fallback_needs_nothing_but_may_say_more(tmp_path: Path) -> None:
    text = edited("  start: ask\n", "  start: ask\n  generative_fallback: {history: 0}\n")
    check = check_flow_file(write(tmp_path, text))
    assert check.document is not None
    assert check.document.settings.generative_fallback == GenerateSpec(history=0)
    assert check.document.generations() == [GenerateSpec(history=0)]


GENERATE_ERRORS: dict[str, tuple[str, str, list[str]]] = {
    "no prompt": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {into: variables.x}}]  # <-\n",
        ["states.done.on_enter[0].generate: missing required key 'prompt'"],
    ),
    "a prompt that is no template": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: 'Hi {{ slots.name '}}]  # <-\n",
        ["states.done.on_enter[0].generate.prompt: invalid template"],
    ),
    "an unknown name in a prompt": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: 'Hi {{ slot.name }}'}}]  # <-\n",
        ["unknown name 'slot' in the template"],
    ),
    "a misspelt key": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {promt: hi, prompt: hi}}]  # <-\n",
        ["unknown key 'promt'; did you mean 'prompt'?"],
    ),
    "into what is no target": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: hi, into: answer}}]  # <-\n",
        ["'answer' is not a target; expected slots.NAME or variables.NAME"],
    ),
    "a history longer than kept": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: hi, history: 50}}]  # <-\n",
        ["history: must be between 0 and 12"],
    ),
    "a temperature out of range": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: hi, temperature: 3}}]  # <-\n",
        ["temperature: must be between 0 and 2, found 3"],
    ),
    "knowledge without passages": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: hi, knowledge: true}}]  # <-\n",
        ["the flow has no passages; list them under knowledge: at the top"],
    ),
    "an unknown failure route": (
        "  done:\n",
        "  done:\n    on_enter: [{generate: {prompt: hi, on_failure: nowhere}}]  # <-\n",
        ["unknown state 'nowhere'"],
    ),
    "a fallback that stores its answer": (
        "  start: ask\n",
        "  start: ask\n  generative_fallback: {into: variables.x}  # <-\n",
        ["settings.generative_fallback: unknown key 'into'"],
    ),
}


@pytest.mark.parametrize("case", list(GENERATE_ERRORS))
def test_each_mistake_in_a_generate_step_is_reported_at_its_line(tmp_path: Path, case: str) -> None:
    old, new, pieces = GENERATE_ERRORS[case]
    error = only_error(tmp_path, edited(old, new))
    for piece in pieces:
        assert piece in error.message


def test_a_model_answer_goes_into_a_text_slot_only(tmp_path: Path) -> None:
    text = edited(
        'slots:\n  name: {type: text, prompt: "Your name?"}\n',
        'slots:\n  name: {type: text, prompt: "Your name?"}\n  age: {type: integer}\n',
    )
    text = edited(
        "  done:\n", "  done:\n    on_enter: [{generate: {prompt: hi, into: slots.age}}]  # <-\n", text
    )
    error = only_error(tmp_path, text)
    assert "slots.age is an integer slot; a model's answer is text" in error.message


def test_a_provider_the_server_lacks_skips_the_file_and_none_configured_checks_nothing(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, GENERATING)
    refused = load_flow_paths([path], providers=("openai", "vllm"))
    assert refused.flows == []
    (error,) = refused.errors
    assert error.line == PROVIDER_LINE
    assert "no model provider 'local' is configured (models.providers: openai, vllm)" in error.message
    assert [d.flow_id for d in load_flow_paths([path], providers=("local",)).flows] == ["mini"]
    assert [d.flow_id for d in load_flow_paths([path]).flows] == ["mini"]


# Dialogues ----------------------------------------------------------------------------------


HELPER = """\
flow: helper
settings:
  start: ask
  generative_fallback: {knowledge: true}
knowledge: ["We open at nine."]
intents:
  explain: {keywords: [explain]}
routes: [{intent: explain, to: explain}]
states:
  ask:
    on_enter: [{say: {text: "Ask me."}}]
  explain:
    on_enter:
      - generate: {prompt: "Explain: {{ message }}", on_failure: sorry}
      - generate: {prompt: "And a joke", into: variables.joke}
  sorry:
    on_enter: [{say: {text: "The model is away."}}]
"""

HELPER_DIALOGUES = """\
flow: helper
generate: "File default."
dialogues:
  - name: answers come from the script, in call order
    turns:
      - user: hello
        expect: {says: "Ask me."}
      - user: explain the hours
        generate: ["We open at nine.", {chunks: ["Why ", "not?"]}]
        expect: {says: "We open at nine.", variables: {joke: "Why not?"}, actions: ["generate:default"]}
      - user: when do you open?
        generate: {text: "At nine."}
        expect: {says: "At nine.", actions: [fallback, generative_fallback]}
      - user: explain again
        generate: [{fail: timeout}]
        expect: {state: sorry, says: "The model is away.", actions: ["generate_failed:timeout"]}
  - name: a dialogue's own default, then the file's
    generate: {fail: budget}
    turns:
      - user: hello
      - user: what now?
        expect: {says: "Please try again tomorrow", actions: ["generate_failed:budget", fallback]}
  - name: the file's default
    turns:
      - user: hello
      - user: what now?
        expect: {says: "File default."}
"""


@pytest.fixture
def helper_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "flows"
    directory.mkdir()
    (directory / "helper.yaml").write_text(HELPER)
    return directory


def test_dialogues_script_the_models_answers(tmp_path: Path, helper_dir: Path) -> None:
    dialogues = write(tmp_path, HELPER_DIALOGUES, "helper-dialogues.yaml")
    flows, problems = load_flows([helper_dir])
    assert not problems
    with FlowRunner(flows) as runner:
        results = run_dialogues(load_dialogues(dialogues), runner, runner.find_flow)
    assert {r.name: r.problems for r in results} == {r.name: [] for r in results}
    assert all(r.passed for r in results)


def test_a_call_nothing_scripts_fails_as_without_a_provider(helper_dir: Path) -> None:
    flows, _ = load_flows([helper_dir])
    with FlowRunner(flows) as runner:
        key = ConversationKey("acme", "c")
        runner.send(key, "hello", "", "web", "helper")
        view = runner.send(key, "explain", "", "web", "helper")
    assert view.state == "sorry" and "generate_failed:no_provider" in view.actions
    call = WebhookCall("0", "", {}, GENERATE)
    assert runner.answer(call, {}, key)["reason"] == "no_provider"


@pytest.mark.parametrize(
    "given",
    [["a", "b"], {"chunks": []}, {"chunks": "ab"}, {"text": 3}, {"fail": "x", "text": "y"}, 42],
)
def test_an_answer_a_dialogue_cannot_mean_is_an_error(given: object) -> None:
    with pytest.raises(DialogueFileError):
        generation_result(given)


def test_scripted_answers_run_out_into_the_default() -> None:
    scripted = ScriptedGenerations(["one", {"chunks": ["t", "wo"]}], {"fail": "http_503"})
    first, second, third = scripted.next(), scripted.next(), scripted.next()
    assert (first["text"], second["text"], second["pieces"]) == ("one", "two", ["t", "wo"])
    assert (third["ok"], third["reason"]) == (False, "http_503")


def test_a_bad_answer_in_a_dialogue_file_names_its_turn(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "flow: helper\ndialogues:\n  - turns:\n      - user: hi\n        generate: {chunks: 5}\n",
        "bad.yaml",
    )
    with pytest.raises(DialogueFileError, match=r"dialogues\[0\]\.turns\[0\]\.generate"):
        load_dialogues(path)


def test_confab_flows_test_never_calls_the_configured_provider(
    tmp_path: Path, helper_dir: Path, standin: ModelStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "confab.yaml"
    config.write_text(
        f"flows: {{dirs: ['{helper_dir}']}}\n"
        f"models: {{providers: [{{name: standin, base_url: '{standin.url}', model: m}}]}}\n"
    )
    dialogues = write(tmp_path, HELPER_DIALOGUES, "helper-dialogues.yaml")
    assert main(["flows", "test", str(dialogues), "--config", str(config)]) == 0
    assert "3 passed, 0 failed" in capsys.readouterr().out
    assert standin.received() == []


def test_a_replay_answers_model_calls_from_the_recording_and_calls_no_provider(
    tmp_path: Path, helper_dir: Path, standin: ModelStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "history.sqlite3"
    with LocalRunner([str(helper_dir)], history_s=3600.0, store_path=store) as shard:
        key = ConversationKey("acme", "c1")
        shard.send(key, "hello", "", "web", "helper")
        explained = shard.send(
            key, "explain", "", "web", "helper", generations=ScriptedGenerations(["Because.", "Ha."])
        )
        assert explained.text == "Because." and explained.variables["joke"] == "Ha."
        shard.send(key, "when do you open?", "", "web", "helper", generations=ScriptedGenerations(["At 9."]))
        shard.send(
            key, "explain more", "", "web", "helper", generations=ScriptedGenerations([{"fail": "cut"}])
        )
    config = tmp_path / "confab.yaml"
    config.write_text(f"models: {{providers: [{{name: standin, base_url: '{standin.url}', model: m}}]}}\n")
    argv = ["flows", "replay", "--flow", "helper", "--from", str(store), "--dir", str(helper_dir)]
    assert main([*argv, "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert (summary["conversations"], summary["same"], summary["turns"]) == (1, 1, 4)
    assert summary["unrecorded_calls"] == 0
    assert standin.received() == []
