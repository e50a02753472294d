"""``confab flows validate`` and ``confab flows show``, run in-process (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from confab.tools.cli import main
from tests.test_flow_loader import MINIMAL, docs_example, edited, write

# A flow id no bundled flow file uses, so that `show` finds the test's own.
CLI_FLOW = MINIMAL.replace("flow: mini", "flow: cli_test_flow")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["flows", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_valid_files_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, docs_example(), "pizza.yaml")
    other = write(tmp_path / "..", MINIMAL, f"{tmp_path.name}-mini.yml")
    code, out, _ = run(capsys, "validate", str(tmp_path), str(other))
    assert code == 0
    assert out == "2 files: 2 valid, 0 errors, 0 warnings\n"


def test_validate_prints_each_error_and_warning_then_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, MINIMAL + "  lonely: {}\n", "a.yaml")
    bad = write(tmp_path, edited("to: done}", "to: dne}"), "b.yaml")
    code, out, _ = run(capsys, "validate", str(good), str(bad), str(tmp_path / "missing.yaml"))
    assert code == 1
    assert out.splitlines() == [
        f"{good}:15: warning: states.lonely: unreachable from the start state 'ask'",
        f"{bad}:12: states.ask.transitions[0].to: unknown state 'dne'; did you mean 'done'?",
        # (b.yaml's `done` is unreachable too, but only because of the error: not reported)
        f"{tmp_path / 'missing.yaml'}: no such file or directory",
        "2 files: 1 valid, 2 errors, 1 warning",
    ]


def test_validate_skips_yaml_that_is_not_a_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, MINIMAL, "a.yaml")
    write(tmp_path, "server:\n  listen: 127.0.0.1:50051\n", "confab.yaml")
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert (code, out) == (
        0,
        "1 file: 1 valid, 0 errors, 0 warnings; 1 YAML file that is not a flow skipped\n",
    )


def test_validate_with_no_flow_files_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert (code, out) == (1, "0 files: 0 valid, 0 errors, 0 warnings (no flow files found)\n")


def test_validate_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["flows", "validate"])
    assert exited.value.code == 2
    capsys.readouterr()


def test_show_prints_the_state_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, docs_example().replace("flow: pizza", "flow: cli_pizza"), "pizza.yaml")
    code, out, _ = run(capsys, "show", "cli_pizza", "--dir", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        "flow cli_pizza (version 3)",
        "  Order a pizza",
        f"  from {path}",
        "start: greet; fallback: human after 3 unmatched in a row",
        "",
        "routes (tried first, in every state):",
        "  intent human -> human",
        "",
        "states:",
        "> greet (start)",
        "      on enter: say \"Hi {{ user_profile.name | default('there') }}...\" "
        "(+2 quick replies, channels: sms)",
        "      intent order -> take_order",
        "  take_order",
        "      collects: size (enum; after 3 failures -> human)",
        "      collects: quantity (integer)",
        "      always -> confirm  [set variables.total = slots.quantity * 9.5]",
        "  confirm (confirm)",
        '      on enter: say "{{ slots.quantity }} {{ slots.size }} pizza{{..." (+2 buttons)',
        "      intent yes -> done",
        "      intent no -> take_order  [clear slots]",
        "      corrects size, quantity -> take_order",
        "* done (terminal)",
        '      on enter: say "Thanks! Your order is on its way."',
        "  human",
        '      on enter: handoff "asked for a person"',
        "  greet_friendly",
        "      on enter: say \"Hey {{ user_profile.name | default('you') }}!...\"",
        "      intent order -> take_order",
        "",
        "experiment greeting: plain 1, friendly 1",
        "  friendly: greet is replaced by greet_friendly",
    ]


def test_show_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, docs_example().replace("flow: pizza", "flow: cli_pizza"), "pizza.yaml")
    code, out, _ = run(capsys, "show", "cli_pizza", "--dir", str(tmp_path), "--dot")
    assert code == 0
    assert out.startswith('digraph "cli_pizza" {\n') and out.endswith("}\n")
    lines = out.splitlines()
    assert '  "__start__" -> "greet";' in lines
    assert (
        '  "take_order" -> "confirm" [label="always\\nset variables.total = slots.quantity * 9.5"];' in lines
    )
    assert '  "confirm" -> "done" [label="intent yes"];' in lines
    assert '  "confirm" -> "take_order" [label="corrects size, quantity", style=dashed];' in lines
    assert '  "take_order" -> "human" [label="size: 3 failures", style=dotted];' in lines
    assert '  "__any__" -> "human" [label="intent human", style=bold];' in lines
    assert '  "__any__" -> "human" [label="3 unmatched", style=dotted];' in lines
    assert (
        '  "greet" -> "greet_friendly" [label="greeting=friendly", style=dashed, arrowhead=empty];' in lines
    )
    assert '  "done" [label="done\\nsay \\"Thanks! Your order is on its way.\\"", peripheries=2];' in lines
    # Quotes and backslashes in texts are escaped: every line is a whole DOT statement.
    assert all(line.count('"') % 2 == 0 for line in lines if '\\"' not in line)


def test_show_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, CLI_FLOW, "flow.yaml")
    code, out, _ = run(capsys, "show", str(path))
    assert code == 0
    assert "> ask (start)\n      collects: name (text)\n      intent go -> done\n* done (terminal)\n" in out


def test_show_an_unknown_flow_suggests_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, CLI_FLOW, "flow.yaml")
    write(tmp_path, "flow: [", "broken.yaml")
    code, out, err = run(capsys, "show", "cli_test_flw", "--dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert f"{tmp_path / 'broken.yaml'}:1: invalid YAML: while parsing a flow node" in err
    assert "confab: no flow 'cli_test_flw'; did you mean 'cli_test_flow'?" in err


def test_show_another_file_s_errors_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, CLI_FLOW, "flow.yaml")
    write(tmp_path, "flow: [", "broken.yaml")
    code, out, err = run(capsys, "show", "cli_test_flow", "--dir", str(tmp_path))
    assert code == 0 and out.startswith("flow cli_test_flow")
    assert f"{tmp_path / 'broken.yaml'}:1: invalid YAML" in err


def test_show_a_tenant_s_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, CLI_FLOW.replace("flow: cli_test_flow", "flow: cli_test_flow\ntenant: acme"), "a.yaml")
    assert run(capsys, "show", "cli_test_flow", "--dir", str(tmp_path))[0] == 1
    code, out, _ = run(capsys, "show", "cli_test_flow", "--dir", str(tmp_path), "--tenant", "acme")
    assert code == 0 and out.startswith("flow cli_test_flow (version ")
    assert ", tenant acme)" in out.splitlines()[0]


LONG_CONDITIONS = """\
flow: cli_conditions
settings: {start: ask}
slots: {score: {type: integer, prompt: "Score?"}}
states:
  ask:
    collect: [score]
    transitions:
      - when: "slots.score >= 9 and slots.score <= 10 and filled('score') and slots.score != 0"
        to: promoter
        actions: [{webhook: {name: crm, store_as: crm, on_failure: offline}}]
      - when: "slots.score >= 9 and slots.score <= 10 and filled('score') and slots.score != 1"
        to: offline
  promoter: {terminal: true}
  offline: {terminal: true}
experiments:
  tone:
    weights: {plain: 1, warm: 2}
"""


def test_show_prints_webhooks_failure_routes_and_whole_conditions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = LONG_CONDITIONS.replace(
        "  promoter: {terminal: true}",
        (
            "  promoter:\n    terminal: true\n"
            "    on_enter: [{say: {text: Thanks, variants: {warm: {text: Thanks a lot}}}}]"
        ),
    )
    path = write(tmp_path, text, "conditions.yaml")
    code, out, _ = run(capsys, "show", str(path))
    assert code == 0
    assert (
        "when slots.score >= 9 and slots.score <= 10 and filled('score') and slots.score != 0 -> promoter"
        "  [webhook crm -> variables.crm (fails -> offline)]"
    ) in out
    assert (
        "when slots.score >= 9 and slots.score <= 10 and filled('score') and slots.score != 1 -> offline"
        in out
    )
    assert "      webhook crm fails -> offline" in out
    assert "handoff" not in out
    assert "experiment tone: plain 1, warm 2\n  warm: says its own words in promoter" in out
    code, dot, _ = run(capsys, "show", str(path), "--dot")
    assert '"ask" -> "offline" [label="webhook crm fails", style=dotted, color=red];' in dot
    assert '"__experiment_tone__" -> "promoter" [label="warm: own words", style=dashed];' in dot


def test_show_prints_decisions_and_sub_flow_calls(capsys: pytest.CaptureFixture[str]) -> None:
    examples = str(Path(__file__).parent / "dialogues" / "examples" / "flows")
    code, out, _ = run(capsys, "show", "cards", "--dir", examples)
    assert code == 0
    assert "      calls flow identity (its outcome in variables.identity)" in out
    assert "      decides at once:\n        when variables.identity.state == 'verified' -> details" in out


PRICED = """\
flow: cli_priced
dialogues:
  - name: priced by the service
    turns:
      - payload: ORDER
        expect: {state: take_order}
      - user: "2 large"
        expect: {state: confirm, says: "24.00 EUR"}
"""


def test_test_takes_webhooks_from_a_server_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from confab.tools.price_service import PriceService

    service = PriceService().start()
    try:
        config = write(
            tmp_path, f"flows:\n  webhooks:\n    - {{name: price, url: '{service.url}'}}\n", "c.yaml"
        )
        dialogues = write(tmp_path, PRICED.replace("cli_priced", "pizza"), "d.yaml")
        code, out, _ = run(capsys, "test", str(dialogues), "--config", str(config))
        assert (code, out.splitlines()[-1]) == (0, "1 passed, 0 failed")
        assert service.calls == 1
    finally:
        service.stop()


def test_test_reports_every_failing_turn_and_prints_transcripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dialogues = write(
        tmp_path,
        """\
flow: pizza
webhooks: {price: {total: 24}}
dialogues:
  - name: two wrong expectations
    variants: {greeting: plain}
    turns:
      - user: hi
        expect: {state: nowhere}
      - payload: ORDER
        expect: {says: "Which size"}
      - user: "2 large"
        expect: {says: "a million EUR"}
""",
        "d.yaml",
    )
    code, out, _ = run(capsys, "test", str(dialogues), "--transcript")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "FAIL d.yaml: two wrong expectations"
    assert "turn 1 ('hi'): expected state 'nowhere', got 'greet'" in lines[1]
    assert "turn 3 ('2 large'): expected the response to say 'a million EUR'" in lines[2]
    assert "  you> hi" in lines and "  bot> Hi there! Would you like to order a pizza?" in lines
    assert "       [Order a pizza]  [Talk to a person]" in lines
    assert "  you>  [ORDER]" in lines and lines[-1] == "0 passed, 1 failed"


def test_validate_reports_a_directory_as_it_was_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my-flows").mkdir()
    write(tmp_path / "my-flows", "flow: broken\n", "broken.yaml")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "validate", "my-flows/")
    assert code == 1
    assert out.splitlines()[0].startswith("my-flows/broken.yaml:1: ")


EXAMPLES = Path(__file__).parent / "dialogues" / "examples"


def test_test_names_the_loaded_flows_when_a_dialogue_s_flow_is_not_loaded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "test", str(EXAMPLES))
    assert code == 1
    hint = "is loaded (loaded: echo, pizza, support); --dir DIR loads the flow files in DIR"
    assert f"FAIL survey.yaml: no flow 'survey' {hint}" in out.splitlines()
    assert out.splitlines()[-1] == "0 passed, 14 failed"
    code, out, _ = run(capsys, "test", str(EXAMPLES), "--dir", str(EXAMPLES / "flows"))
    assert (code, out.splitlines()[-1]) == (0, "14 passed, 0 failed")
