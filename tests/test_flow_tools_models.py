"""The flow tools and model providers: ``confab flows validate/show/test`` read the server
config as ``confab serve`` does and check the providers flows name against it; the validator,
dialogue files, ``--target``, ``--transcript`` and ``replay`` each say what a model call is.
Run in-process (no server); ``replay`` reads a store a real shard recorded."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from confab.runtime.flows.authoring.dialogues import (
    DialogueFileError,
    DialogueTurn,
    TurnView,
    generation_result,
    load_dialogues,
    shown_by_flow,
)
from confab.runtime.flows.authoring.replay import UnrecordedCall
from confab.runtime.flows.execution.catalog import load_flows
from confab.runtime.flows.language.loader import check_flow_file
from confab.runtime.model import ConversationKey
from confab.runtime.models import REASONS
from confab.tools.cli import main
from tests.shard_runner import LocalRunner
from tests.test_flow_loader import write

NAMING = """\
flow: naming
settings: {start: ask}
states:
  ask:
    on_enter:
      - generate:
          provider: openai
          prompt: "Hello"
    transitions: [{to: ask}]
"""
PROVIDER_LINE = next(n for n, line in enumerate(NAMING.splitlines(), 1) if "provider: openai" in line)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["flows", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def config_with(tmp_path: Path, providers: list[str], flow_dir: Path | None = None) -> Path:
    entries = ", ".join(f"{{name: {p}, base_url: 'http://127.0.0.1:9/v1', model: m}}" for p in providers)
    dirs = f"flows: {{dirs: ['{flow_dir}']}}\n" if flow_dir is not None else ""
    return write(tmp_path, f"{dirs}models: {{providers: [{entries}]}}\n", "confab.yaml")


# validate and show against the config's providers ---------------------------------------------


def test_validate_checks_the_providers_a_config_names_and_says_which_it_assumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    path = write(flows, NAMING, "naming.yaml")
    config = config_with(tmp_path, ["local", "vllm"])
    code, out, _ = run(capsys, "validate", str(flows), "--config", str(config))
    assert code == 1
    error, summary, providers = out.splitlines()
    assert error.startswith(f"{path}:{PROVIDER_LINE}: states.ask.on_enter[0].generate.provider: ")
    assert "no model provider 'openai' is configured (models.providers: local, vllm)" in error
    assert summary == "1 file: 0 valid, 1 error, 0 warnings"
    assert providers == f"model providers ({config}): local, vllm"

    assert run(capsys, "validate", str(flows), "--config", str(config_with(tmp_path, ["openai"])))[0] == 0

    # Without --config: the bundled defaults, which have none (nothing is refused; steps fail over).
    code, out, _ = run(capsys, "validate", str(flows))
    assert code == 0
    assert out.splitlines()[-1] == (
        "model providers (the bundled defaults; --config FILE checks them against a server's):"
        " none, so generate steps take their failure route"
    )


def test_validate_says_nothing_of_providers_when_no_file_calls_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        tmp_path,
        NAMING.replace(
            '      - generate:\n          provider: openai\n          prompt: "Hello"\n',
            "      - say: {text: Hi}\n",
        ),
    )
    assert run(capsys, "validate", str(tmp_path)) == (0, "1 file: 1 valid, 0 errors, 0 warnings\n", "")


def test_validate_with_a_config_that_does_not_load_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, NAMING, "naming.yaml")
    bad = write(tmp_path / "..", "models: {providers: [{name: x}]}\n", f"{tmp_path.name}-bad.yaml")
    code, out, err = run(capsys, "validate", str(tmp_path), "--config", str(bad))
    assert (code, out) == (2, "")
    assert err.startswith(f"confab: {bad}: ") and "models.providers[0]" in err


def test_show_finds_a_flow_through_the_config_and_reports_a_provider_it_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    write(flows, NAMING, "naming.yaml")
    code, out, _ = run(capsys, "show", "naming", "--config", str(config_with(tmp_path, ["openai"], flows)))
    assert code == 0 and "flow naming" in out and 'generate "Hello"' in out
    code, _, err = run(capsys, "show", "naming", "--config", str(config_with(tmp_path, ["local"], flows)))
    assert code == 1
    assert "no model provider 'openai' is configured (models.providers: local)" in err
    assert "confab: no flow 'naming'" in err


# flows test -----------------------------------------------------------------------------------

ECHOED = """\
flow: carded
settings: {start: ask}
slots:
  card:
    type: regex
    pattern: '(?P<value>\\d{13,19})'
    sensitive: true
    prompt: "Your card number?"
intents:
  explain: {keywords: [explain]}
states:
  ask:
    collect: [card]
    transitions: [{to: done}]
  done:
    on_enter:
      - generate: {prompt: "Explain", on_failure: done}
    transitions: [{intent: explain, to: done}]
"""

CARDED_DIALOGUES = """\
flow: carded
dialogues:
  - name: a card, then a model's answer
    turns:
      - user: hello
        expect: {says: "Your card number?"}
      - user: "my card is 4111111111111111 thanks"
        generate: "Noted."
        expect: {state: done, says: "Noted.", slots: {card: "4111111111111111"}}
"""


def test_a_dir_the_config_names_too_is_loaded_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = write_dir(tmp_path, ECHOED)
    dialogues = write(tmp_path, CARDED_DIALOGUES, "d.yaml")
    config = config_with(tmp_path, [], flows)
    spelled_otherwise = f"{tmp_path}/./flows/"
    code, out, err = run(capsys, "test", str(dialogues), "--dir", spelled_otherwise, "--config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "1 passed, 0 failed"


def test_a_transcript_masks_sensitive_values_as_the_store_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = write_dir(tmp_path, ECHOED)
    dialogues = write(tmp_path, CARDED_DIALOGUES, "d.yaml")
    code, out, _ = run(capsys, "test", str(dialogues), "--dir", str(flows), "--transcript")
    assert code == 0
    assert "4111111111111111" not in out and "411111" not in out
    assert "  you> my card is ****1111 thanks" in out.splitlines()
    assert "       (state done, slots card='****1111')" in out.splitlines()


def test_against_a_server_a_dialogue_that_scripts_model_answers_is_skipped_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as unused:  # nothing is sent: every dialogue of the file is skipped
        unused.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{unused.getsockname()[1]}"
    dialogues = write(
        tmp_path,
        CARDED_DIALOGUES + "  - name: pinned\n    now: 1800000000\n    webhooks: {price: {total: 1}}\n"
        "    turns: [{user: hi}]\n",
        "d.yaml",
    )
    code, out, _ = run(capsys, "test", str(dialogues), "--target", target)
    assert code == 0  # none failed: skipped ones are said, and no failure
    assert out.splitlines() == [
        "SKIP d.yaml: a card, then a model's answer (scripts model answers: a server calls its own"
        " models; only the in-process runner plays it)",
        "SKIP d.yaml: pinned (scripts webhook answers: a server calls its own webhooks; pins the clock"
        " (now: or after:): a server keeps its own time; only the in-process runner plays it)",
        "0 passed, 0 failed, 2 skipped",
    ]


def test_with_no_dialogue_to_play_at_all_the_test_fails_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = write(tmp_path, "flow: pizza\ndialogues: []\n", "empty.yaml")
    code, out, err = run(capsys, "test", str(empty))
    assert code == 1 and out.splitlines() == ["0 passed, 0 failed"]
    assert f"no dialogue to play in {empty}" in err


@pytest.mark.parametrize("reason", ["nonsense", "http_5000", "HTTP 500", "abandoned"])
def test_a_failure_no_model_call_has_is_an_error_naming_the_known_ones(reason: str) -> None:
    with pytest.raises(DialogueFileError) as raised:
        generation_result({"fail": reason})
    message = str(raised.value)
    assert repr(reason) in message and all(known in message for known in REASONS) and "http_NNN" in message


@pytest.mark.parametrize("reason", [*REASONS, "http_429", "http_503"])
def test_every_reason_a_model_call_fails_for_may_be_scripted(reason: str) -> None:
    assert generation_result({"fail": reason})["reason"] == reason


def test_a_dialogue_file_with_an_unknown_failure_names_where(tmp_path: Path) -> None:
    path = write(tmp_path, "flow: helper\ngenerate: {fail: nonsense}\ndialogues: []\n", "d.yaml")
    with pytest.raises(
        DialogueFileError, match=r"d\.yaml: generate: \{fail: 'nonsense'\}: not a reason"
    ) as raised:
        load_dialogues(path)
    assert str(raised.value).count("generate:") == 1  # where it was, said once


def test_a_bad_answer_of_a_turn_names_the_turn_once(tmp_path: Path) -> None:
    text = "flow: helper\ndialogues:\n  - turns:\n      - user: hi\n        generate: [ok, {chunks: []}]\n"
    with pytest.raises(DialogueFileError) as raised:
        load_dialogues(write(tmp_path, text, "d.yaml"))
    message = str(raised.value)
    assert "dialogues[0].turns[0].generate: {'chunks': []}: chunks must be text" in message
    assert message.count("generate:") == 1


# The validator ----------------------------------------------------------------------------------

ROUTER = """\
flow: router
settings: {start: ask}
intents:
  more: {keywords: [more]}
states:
  ask:
    on_enter:
      - generate: {prompt: "Greet the user"%s}
    transitions: [{to: ask, when: "true"}]
"""


def test_a_state_that_says_a_models_answer_on_entry_is_not_silent(tmp_path: Path) -> None:
    said = check_flow_file(write(tmp_path, ROUTER % "", "said.yaml"))
    assert said.document is not None and said.warnings == []
    stored = check_flow_file(write(tmp_path, ROUTER % ", into: variables.greeting", "stored.yaml"))
    assert [w.message.split(":")[0] for w in stored.warnings] == ["states.ask"]
    assert "says nothing when entered" in stored.warnings[0].message


# replay -----------------------------------------------------------------------------------------

PLAIN = """\
flow: helper
settings: {start: ask}
intents:
  explain: {keywords: [explain]}
states:
  ask:
    on_enter: [{say: {text: "Ask me."}}]
    transitions: [{intent: explain, to: explain}]
  explain:
    on_enter: [{say: {text: "Nothing to explain."}}]
    transitions: [{intent: explain, to: explain}]
"""


def test_replay_names_a_model_call_it_cannot_answer_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    write(recorded, PLAIN, "helper.yaml")
    store = tmp_path / "history.sqlite3"
    with LocalRunner([str(recorded)], history_s=3600.0, store_path=store) as shard:
        key = ConversationKey("acme", "c1")
        shard.send(key, "hello", "", "web", "helper")
        shard.send(key, "explain", "", "web", "helper")
    generating = tmp_path / "next"
    generating.mkdir()
    write(
        generating,
        PLAIN.replace('[{say: {text: "Nothing to explain."}}]', '[{generate: {prompt: "Explain"}}]'),
        "helper.yaml",
    )
    argv = ["replay", "--flow", "helper", "--from", str(store), "--dir", str(generating)]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert "! turn 2: model call generate:default has no recorded answer, answered as a failure" in out
    assert "webhook generate" not in out
    assert "1 model call had no recorded answer: 0 answered as given, 1 as failures" in out
    assert UnrecordedCall(2, "stock", "failed").label == "webhook stock"


def test_a_turn_a_server_played_is_masked_by_the_flow_the_file_names(tmp_path: Path) -> None:
    flows, problems = load_flows([write_dir(tmp_path, ECHOED)])
    assert not problems
    flow = next(f for f in flows if f.flow_id == "carded")
    sent = DialogueTurn("my card is 4111111111111111 thanks", "", {})
    view = TurnView(
        text="Noted.",
        state="done",
        intent="",
        slots={"card": "4111111111111111"},
        variables={},
        actions=[],
        quick_replies=[],
        buttons=[],
        error_count=0,
    )
    shown = shown_by_flow(flow, sent, view, {})
    # Which part of it the card came from, a client cannot tell: masked whole, as the store masks
    # a message a value was read from in another form.
    assert (shown.user, shown.slots, shown.text) == ("****anks", {"card": "****1111"}, "Noted.")
    later = shown_by_flow(flow, DialogueTurn("explain", "", {}), view, view.slots)
    assert later.user == "explain"  # the card was given before: this message gave nothing
    unknown = shown_by_flow(None, sent, view, {})
    assert (unknown.user, unknown.slots) == ("****anks", {"card": "****1111"})


def write_dir(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "flows"
    directory.mkdir()
    write(directory, text, "flow.yaml")
    return directory
