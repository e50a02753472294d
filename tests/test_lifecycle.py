"""Start, stop, kill and restart: state survives, nothing is applied twice, no process is left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from confab.protos import health_pb2, health_pb2_grpc
from tests.support import (
    ServerProcess,
    confab_argv,
    message,
    processes_marked,
    serve_args,
    state_request,
    wait_until_gone,
)

pytestmark = pytest.mark.integration  # every test here starts a server or a process


def shard_pids(server: ServerProcess) -> list[int]:
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(health_pb2.DetailedHealthRequest())
    return [int(s["pid"]) for s in health.details["shard_detail"]]


def test_state_survives_a_restart(own_server: ServerProcess) -> None:
    own_server.start()
    stub = own_server.stub()
    for i in range(3):
        stub.ProcessMessage(message("kept", f"m{i}"))
    assert own_server.terminate() == 0
    own_server.start()
    stub = own_server.stub()
    state = stub.GetConversationState(state_request("kept")).conversation_state
    assert (state.message_count, state.variables["last_message"]) == (3, "m2")
    assert stub.ProcessMessage(message("kept", "m3")).conversation_state.message_count == 4


def test_sigkill_of_the_server_alone_leaves_no_process(own_server: ServerProcess) -> None:
    own_server.start()
    marked = processes_marked(own_server.marker)
    assert len(marked) >= 5
    # The Thespian admin detaches into a session of its own: outside the server's group.
    assert any(os.getsid(p.pid) != os.getsid(own_server.pid) for p in marked)
    os.kill(own_server.pid, signal.SIGKILL)
    own_server.process.wait(5)  # type: ignore[union-attr]
    assert wait_until_gone(own_server.marker, 5.0) == []


def _load(
    server: ServerProcess, conversations: list[str], stop: threading.Event, acked: dict[str, list[int]]
) -> list[threading.Thread]:
    """One thread per conversation sending messages one after another, recording each ack."""

    def run(conversation: str) -> None:
        channel = server.channel()
        stub = server.stub()
        i = 0
        while not stop.is_set():
            try:
                reply = stub.ProcessMessage(message(conversation, f"n{i}"), timeout=20)
            except grpc.RpcError:
                return
            acked[conversation].append(reply.conversation_state.message_count)
            i += 1
        channel.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in conversations]
    for thread in threads:
        thread.start()
    return threads


def test_kill_9_of_everything_loses_no_acknowledged_message(own_server: ServerProcess) -> None:
    own_server.start()
    conversations = [f"durable-{i}" for i in range(8)]
    acked: dict[str, list[int]] = {c: [] for c in conversations}
    stop = threading.Event()
    threads = _load(own_server, conversations, stop, acked)
    time.sleep(1.0)
    os.killpg(own_server.pid, signal.SIGKILL)  # the edge, and everything of its group, at once
    own_server.process.wait(5)  # type: ignore[union-attr]
    stop.set()
    for thread in threads:
        thread.join(30)
    assert wait_until_gone(own_server.marker, 5.0) == []
    assert sum(len(a) for a in acked.values()) > 50

    own_server.start()
    stub = own_server.stub()
    for conversation, counts in acked.items():
        assert counts == list(range(1, len(counts) + 1))
        stored = stub.GetConversationState(state_request(conversation)).conversation_state.message_count
        # Every acknowledged message is there; only the one in flight at the kill may be applied unacked.
        assert len(counts) <= stored <= len(counts) + 1


def test_a_killed_shard_is_replaced_and_nothing_is_lost_or_applied_twice(own_server: ServerProcess) -> None:
    own_server.start()
    before = shard_pids(own_server)
    conversations = [f"resilient-{i}" for i in range(8)]
    acked: dict[str, list[int]] = {c: [] for c in conversations}
    stop = threading.Event()
    threads = _load(own_server, conversations, stop, acked)
    time.sleep(0.5)
    os.kill(before[0], signal.SIGKILL)
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    after = shard_pids(own_server)
    assert after[0] != before[0] and after[1] == before[1]
    assert not psutil.pid_exists(before[0]) or psutil.Process(before[0]).status() == psutil.STATUS_ZOMBIE
    stub = own_server.stub()
    for conversation, counts in acked.items():
        assert counts == list(range(1, len(counts) + 1)), conversation  # gap-free: none lost, none twice
        stored = stub.GetConversationState(state_request(conversation)).conversation_state.message_count
        assert stored == len(counts)  # every call was answered: the in-flight ones were retried
    with own_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(
            health_pb2.DetailedHealthRequest(include_metrics=True)
        )
    assert health.metrics["shard_restarts"] == 1


# A port already in use ----------------------------------------------------------------------------


@pytest.fixture
def taken_address() -> Iterator[str]:
    """A loopback address another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield f"127.0.0.1:{other.getsockname()[1]}"


def serve_on(
    address: str, data_dir: Path, *, prelude: str = "", edges: int = 1
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``confab serve`` on ``address`` to its end (``prelude``: code its process runs first);
    what it did, and the marker of its processes."""
    marker = uuid.uuid4().hex
    argv = confab_argv(*serve_args("--shards", "2", "--edges", str(edges), data_dir=data_dir, listen=address))
    if prelude:
        argv[1:3] = ["-c", f"{prelude}\nfrom confab.tools.cli import main\nraise SystemExit(main())"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, "CONFAB_TEST_RUN": marker}
    )
    return done, marker


@pytest.mark.parametrize("edges", [1, 2])
def test_a_port_in_use_stops_the_start_in_one_line(taken_address: str, tmp_path: Path, edges: int) -> None:
    done, marker = serve_on(taken_address, tmp_path / "data", edges=edges)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"confab: cannot listen on {taken_address}: Address already in use"]
    assert "serving on" not in done.stdout
    assert wait_until_gone(marker, 5.0) == []


# The port taken between the check at start and gRPC's bind: the check is skipped, so the bind
# fails once the actor processes run (counted just before it).
PORT_TAKEN_MEANWHILE = """
import os, sys
from confab.grpc_edge import tls
from tests.support import processes_marked
tls.check_address = lambda address: None
bind = tls.add_port
def add_port(*args):
    running = processes_marked(os.environ["CONFAB_TEST_RUN"])
    print(f"processes before the bind: {len(running)}", file=sys.stderr)
    return bind(*args)
tls.add_port = add_port
"""


def test_a_port_taken_once_the_shards_run_stops_them_all(taken_address: str, tmp_path: Path) -> None:
    done, marker = serve_on(taken_address, tmp_path / "data", prelude=PORT_TAKEN_MEANWHILE)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (counted,) = [line for line in done.stderr.splitlines() if line.startswith("processes before the bind")]
    assert int(counted.rsplit(" ", 1)[1]) >= 4  # the edge, Thespian's admin, the supervisor, 2 shards
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"confab: cannot listen on {taken_address}: Address already in use"
    assert wait_until_gone(marker, 5.0) == []
