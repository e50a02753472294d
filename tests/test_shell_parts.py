"""``confab shell``'s parts without a server: reading a line, completing it, answers as text and JSON."""

from __future__ import annotations

import io
import json

import grpc
import pytest

from confab.protos import admin_pb2 as admin
from confab.tools.shell.commands import Builtin, Invocation, UsageError, command_table, parse_line
from confab.tools.shell.completion import Learned, completions
from confab.tools.shell.json_view import to_dict, to_json
from confab.tools.shell.session import Shell
from confab.tools.shell.text_view import detail_text, event_line
from confab.tools.shell.verbs import AdminVerbs

TABLE = command_table()


def turn_event() -> admin.Event:
    event = admin.Event(type="turn", tenant_id="acme", conversation_id="order-7", shard=1)
    event.at.FromSeconds(1_700_000_000)
    event.data.update(
        {
            "intent": "order",
            "input": "2 large, please",
            "response": 'Say "yes" = confirm',
            "message_count": 3,
            "actions": ["set_slot", "ask"],
            "duration_ms": 1.234,
        }
    )
    return event


def inspected() -> admin.ConversationDetail:
    detail = admin.ConversationDetail(tenant_id="acme", conversation_id="order-7", shard=1, resident=True)
    detail.state.update({"current_state": "confirm", "message_count": 3, "slots": {"quantity": 2}})
    detail.last_turns.add(
        seq=12,
        kind="turn",
        input="2 large",
        state_before="take_order",
        state_after="confirm",
        duration_ms=2 / 3,
    )
    return detail


def test_json_integers_are_integers_and_timings_are_rounded() -> None:
    detail = to_dict(inspected())
    (turn,) = detail["last_turns"]
    assert turn["seq"] == 12 and type(turn["seq"]) is int  # int64: protobuf's JSON would say "12"
    assert turn["duration_ms"] == 0.667  # not 0.6666666666666666
    assert detail["state"]["message_count"] == 3 and type(detail["state"]["message_count"]) is int
    assert detail["state"]["slots"] == {"quantity": 2}
    assert detail["mailbox_depth"] == 0 and detail["webhook_in_flight"] == ""  # defaults are written too

    data = to_dict(turn_event())["data"]
    assert data["message_count"] == 3 and type(data["message_count"]) is int  # a Struct number: 3.0
    assert data["duration_ms"] == 1.234

    shard = admin.ShardInfo(index=0, rss_bytes=123_456_789, uptime_s=12.3456789)
    assert to_dict(shard)["rss_bytes"] == 123_456_789 and to_dict(shard)["uptime_s"] == 12.346


def test_one_line_json_is_one_line_that_parses_back() -> None:
    line = to_json(turn_event(), indent=None)
    assert "\n" not in line and json.loads(line)["data"]["intent"] == "order"


def test_an_event_line_quotes_texts_as_json_never_as_python() -> None:
    line = event_line(turn_event())
    assert "'" not in line
    assert 'intent="order"' in line and 'input="2 large, please"' in line
    assert 'response="Say \\"yes\\" = confirm"' in line
    assert "message_count=3 " in line + " " and "duration_ms=1.234" in line
    assert 'actions=["set_slot","ask"]' in line
    assert "acme/order-7" in line and "shard 1" in line


def test_the_inspect_text_shows_whole_numbers_as_integers() -> None:
    text = detail_text(inspected())
    assert "messages 3 " in text and "slots: quantity=2" in text
    assert "take_order -> confirm" in text and "3.0" not in text


def test_a_line_becomes_a_command_with_its_arguments() -> None:
    parsed = parse_line("force acme order-7 take_order because I said so", TABLE)
    assert isinstance(parsed, Invocation) and parsed.command.name == "force"
    assert (parsed.args.tenant, parsed.args.conversation, parsed.args.state) == (
        "acme",
        "order-7",
        "take_order",
    )
    assert parsed.args.reason == ["because", "I", "said", "so"]
    assert parse_line("   ", TABLE) is Builtin.NOTHING
    assert parse_line("exit", TABLE) is Builtin.QUIT and parse_line("?", TABLE) is Builtin.HELP


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("frobnicate", "unknown command 'frobnicate'"),
        ("inspect acme", "inspect: the following arguments are required: conversation"),
        ("ls --page-size many", "ls: argument --page-size: invalid int value"),
        ("inspect 'acme", "No closing quotation"),
    ],
)
def test_a_line_that_cannot_run_says_why(line: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        parse_line(line, TABLE)


def test_completion_offers_commands_options_and_names_seen() -> None:
    learned = Learned()
    learned.conversation("acme", "order-7")
    learned.conversation("globex", "g-1")
    learned.state("confirm")
    assert completions(TABLE, learned, "in") == ("in", ["inspect"])
    assert completions(TABLE, learned, "inspect ") == ("", ["acme", "globex"])
    assert completions(TABLE, learned, "inspect acme ") == ("", ["order-7"])
    assert completions(TABLE, learned, "force acme order-7 c") == ("c", ["confirm"])
    assert completions(TABLE, learned, "ls --ten") == ("--ten", ["--tenant"])
    assert completions(TABLE, learned, "tail --tenant globex --conversation ") == ("", ["g-1"])
    assert completions(TABLE, learned, "reload ") == ("", [])


def test_usage_errors_and_help_need_no_server() -> None:
    out = io.StringIO()
    with grpc.insecure_channel("127.0.0.1:1") as nowhere:  # never used: nothing here reaches a verb
        shell = Shell(AdminVerbs(nowhere), out=out)
        assert shell.execute("inspect acme") == 2
        assert shell.execute("help") == 0
        assert shell.execute("ls --next") == 2  # no listing yet
        with pytest.raises(EOFError):
            shell.execute("quit")
    text = out.getvalue()
    assert "error: inspect: the following arguments are required" in text
    assert "restart-shard N [REASON]" in text and "error: no further page" in text
