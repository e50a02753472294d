"""``confab shell`` against a real server (one shard, the pizza flow, a price webhook): ``-c`` and a pty."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pexpect
import pytest

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from tests.support import ServerProcess, exit_status, pizza, pizza_server, run_confab, spawn_confab, type_line

pytestmark = pytest.mark.integration  # every test here starts a server or a process

# prompt_toolkit draws "confab> " as "confab>" and a cursor move, so the space is not in the output.
PROMPT = "confab>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with pizza_server(tmp_path_factory.mktemp("shell")) as (process, _):
        yield process


@pytest.fixture(scope="module")
def engine(server: ServerProcess) -> Iterator[pb_grpc.MCPEngineStub]:
    with server.channel() as channel:
        yield pb_grpc.MCPEngineStub(channel)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME of the tests' own, so the shell's history file never lands in the real one."""
    return tmp_path_factory.mktemp("home")


def shell_c(address: str, command: str, *extra: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_confab("shell", "--target", address, *extra, "-c", command, env={"HOME": str(home)})


def ls_works(address: str) -> bool:
    """Whether the server answers ListConversations yet (it is being implemented alongside)."""
    with grpc.insecure_channel(address) as channel:
        try:
            admin_grpc.AdminStub(channel).ListConversations(admin.ListConversationsRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code() != grpc.StatusCode.UNIMPLEMENTED
    return True


def test_shards_as_table_and_json(server: ServerProcess, home: Path) -> None:
    shown = shell_c(server.address, "shards", home=home)
    assert shown.returncode == 0, shown.stderr
    header, row, *rest = shown.stdout.splitlines()
    assert header.split()[:6] == ["HOST", "SHARD", "PID", "GEN", "VSHARDS", "UPTIME"] and "HEALTHY" in header
    assert row.split()[:2] == ["127.0.0.1", "0"] and row.split()[4] == "256" and row.split()[-1] == "yes"
    assert any(line.startswith("store: ") and "confab.sqlite3" in line for line in rest)
    assert any(line.startswith("version: ") for line in rest)

    as_json = shell_c(server.address, "shards", "--json", home=home)
    assert as_json.returncode == 0, as_json.stderr
    cluster = json.loads(as_json.stdout)
    (shard,) = cluster["shards"]
    assert shard["healthy"] and shard["index"] == 0 and cluster["store"]["ok"]
    # A trailing --json on the command does the same as the option before -c.
    trailing = shell_c(server.address, "shards --json", home=home)
    assert json.loads(trailing.stdout)["version"] == cluster["version"]


def test_hosts_as_table_and_json(server: ServerProcess, home: Path) -> None:
    shown = shell_c(server.address, "hosts", home=home)
    assert shown.returncode == 0, shown.stderr
    header, row, summary = shown.stdout.splitlines()
    assert header.split() == [
        "HOST",
        "STATE",
        "INCARNATION",
        "HEARTBEAT",
        "EDGE",
        "SHARDS",
        "VSHARDS",
        "TOP",
        "EPOCH",
    ]
    cells = row.split()
    assert cells[:3] == ["127.0.0.1", "*", "up"] and int(cells[3]) > 0 and server.address in row
    assert cells[-2:] == ["256", "1"]  # it holds every virtual shard
    assert summary.startswith("256 virtual shards, all held")

    as_json = json.loads(shell_c(server.address, "hosts", "--json", home=home).stdout)
    assert set(as_json) == {"hosts", "vshards", "complete", "this_host"} and as_json["complete"]
    (host,) = as_json["hosts"]
    assert host["state"] == "up" and 0 <= host["heartbeat_age_s"] < 3 and int(host["incarnation"]) > 0
    assert host["vshards"] == 256 and not host.get("leader")
    assert [v["vshard"] for v in as_json["vshards"]] == list(range(256))
    assert {v["shard_id"] for v in as_json["vshards"]} == {"127.0.0.1/0"}


def test_inspect_force_reset_and_their_exit_codes(
    server: ServerProcess, engine: pb_grpc.MCPEngineStub, home: Path
) -> None:
    engine.ProcessMessage(pizza("shell-c", "hi"))
    shown = shell_c(server.address, "inspect acme shell-c", home=home)
    assert shown.returncode == 0, shown.stderr
    assert "state: greet  flow pizza@" in shown.stdout
    assert "SEQ  INPUT" in shown.stdout and "(new) -> greet" in shown.stdout

    detail = json.loads(shell_c(server.address, "inspect acme shell-c --turns 1 --json", home=home).stdout)
    assert detail["state"]["current_state"] == "greet" and len(detail["last_turns"]) == 1

    forced = shell_c(server.address, "force acme shell-c take_order checking the shell", "--json", home=home)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) == {
        "ok": True,
        "message": "now in state 'take_order'",
        "details": {"state": "take_order"},
    }
    nowhere = shell_c(server.address, "force acme shell-c nowhere", home=home)
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("error: INVALID_ARGUMENT: ")

    reset = shell_c(server.address, "reset acme shell-c", home=home)
    assert reset.returncode == 0 and reset.stdout.startswith("ok: reset; it was in state 'take_order'")


def test_errors_exit_with_their_status(server: ServerProcess, home: Path) -> None:
    missing = shell_c(server.address, "inspect acme never-was", home=home)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == "error: NOT_FOUND: conversation acme/never-was not found"
    assert shell_c(server.address, "inspect acme", home=home).returncode == 2  # a missing argument
    assert shell_c(server.address, "frobnicate", home=home).returncode == 2
    # Nothing listens on port 1: cannot connect.
    assert shell_c("127.0.0.1:1", "shards", home=home).returncode == 3


def spawn_shell(address: str, home: Path) -> pexpect.spawn[str]:
    env = {
        "HOME": str(home),
        "TERM": "xterm",
        # pexpect answers no cursor-position request; without this prompt_toolkit waits and warns.
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }
    # Wide: no table row wraps.
    child = spawn_confab("shell", "--target", address, env=env, dimensions=(50, 220))
    child.expect_exact(f"confab shell on {address}")
    child.expect_exact(PROMPT)
    return child


def run_line(child: pexpect.spawn[str], line: str, *expected: str) -> None:
    """Type ``line``; expect each of ``expected`` in order, then the prompt again."""
    type_line(child, line, *expected, prompt=PROMPT)


def test_interactive_shell(server: ServerProcess, engine: pb_grpc.MCPEngineStub, home: Path) -> None:
    engine.ProcessMessage(pizza("shell-pty", "hi"))
    engine.ProcessMessage(pizza("shell-pty", "I want to order"))
    assert ls_works(server.address), "ListConversations is not implemented on the server"
    child = spawn_shell(server.address, home)
    try:
        run_line(child, "help", "shards", "inspect", "force", "restart-shard", "quit | exit | Ctrl-D")
        run_line(child, "shards", "SHARD", "PID", "RSS MB", "HEALTHY", "store: ", "version: ")
        run_line(
            child,
            "inspect acme shell-pty",
            "acme/shell-pty  shard 0  resident",
            "state: take_order",
            "SEQ  INPUT",
            "INTENT",
            "RESPONSE",
            "(new) -> greet",
            "greet -> take_order",
        )
        run_line(child, "inspect acme gone", "error: NOT_FOUND: conversation acme/gone not found")
        run_line(child, "ls --tenant acme", "TENANT  CONVERSATION", "shell-pty")
        child.sendline("tail --tenant acme")
        child.expect_exact("-- following events")
        tail_started(engine)  # the line is printed before the call reaches the server
        engine.ProcessMessage(pizza("shell-pty", "2 large"))
        child.expect_exact("turn")
        child.expect_exact("acme/shell-pty")
        child.sendintr()
        child.expect_exact("-- tail stopped")
        child.expect_exact(PROMPT)
        run_line(child, "shards", "HEALTHY")  # the shell goes on after the tail
        child.sendline("quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


def tail_started(engine: pb_grpc.MCPEngineStub) -> None:
    """Return once the server serves a call besides the one asking: the tail a test just started
    (tests here run one at a time, so nothing else is in flight)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        in_flight = engine.GetMetrics(pb.GetMetricsRequest(metric_names=["confab.rpc.in_flight"])).metrics[0]
        if in_flight.points and in_flight.points[0].value >= 2:
            return
        time.sleep(0.05)
    raise AssertionError("the tail never reached the server")


def follow(
    address: str, engine: pb_grpc.MCPEngineStub, home: Path, command: str, *extra: str
) -> pexpect.spawn[str]:
    """``confab shell -c "tail ..."`` in a terminal, once the server serves the tail."""
    child = spawn_confab("shell", "--target", address, *extra, "-c", command, env={"HOME": str(home)})
    tail_started(engine)
    return child


def test_json_answers_carry_integers_as_integers(
    server: ServerProcess, engine: pb_grpc.MCPEngineStub, home: Path
) -> None:
    tail = follow(server.address, engine, home, "tail --conversation shell-types --type turn", "--json")
    try:
        engine.ProcessMessage(pizza("shell-types", "hi"))
        tail.expect(r"\{.*\}\r\n")
        event = json.loads(str(tail.after))
        tail.sendintr()
        assert exit_status(tail) == 0
    finally:
        tail.close(force=True)
    assert event["type"] == "turn" and event["data"]["message_count"] == 1
    assert type(event["data"]["message_count"]) is int  # not 1.0

    shown = shell_c(server.address, "inspect acme shell-types --json", home=home)
    (turn,) = json.loads(shown.stdout)["last_turns"]
    assert turn["seq"] == 1 and type(turn["seq"]) is int  # not "1"
    assert turn["duration_ms"] == round(turn["duration_ms"], 3)
    assert type(json.loads(shown.stdout)["state"]["message_count"]) is int


def test_the_text_tail_writes_values_as_json(
    server: ServerProcess, engine: pb_grpc.MCPEngineStub, home: Path
) -> None:
    tail = follow(server.address, engine, home, "tail --conversation shell-tail-text --type turn")
    try:
        tail.expect_exact("-- following events")
        engine.ProcessMessage(pizza("shell-tail-text", "I want to order"))
        tail.expect(r"turn .*\r\n")
        line = str(tail.after)
        tail.sendintr()
        tail.expect_exact("-- tail stopped")
        assert exit_status(tail) == 0
    finally:
        tail.close(force=True)
    assert "acme/shell-tail-text" in line and 'intent="order"' in line and "message_count=1" in line
    assert not any(f"{key}='" in line for key in ("input", "intent", "response"))  # no Python repr


def test_tab_completes_commands_and_the_names_seen(
    server: ServerProcess, engine: pb_grpc.MCPEngineStub, home: Path
) -> None:
    # A prefix no other conversation of this module's server has: Tab completes it at once.
    engine.ProcessMessage(pizza("tab-completed", "hi"))
    child = spawn_shell(server.address, home)
    try:
        run_line(child, "ls --tenant acme", "tab-completed")  # the shell learns the names it is shown
        child.send("ins\t")
        child.expect_exact("inspect")
        child.send(" ac\t")
        child.expect_exact("acme")
        child.send(" tab-\t")
        child.expect_exact("tab-completed")
        run_line(child, "", "acme/tab-completed  shard 0", "state: greet")
        child.sendline("quit")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)
