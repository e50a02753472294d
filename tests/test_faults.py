"""The guarantees under the faults that would break them, against real servers and actor processes.

- a shard killed after its commit and before its reply: the edge re-sends everything it
  left unanswered and nothing is applied twice, however many commands one conversation had;
- the supervisor killed under load: the actor system is started again, calls succeed
  again within seconds, no acknowledged message is lost;
- a shard that stops answering, or a store whose writes fail: health says so, naming
  it, and recovers by itself; GetCluster still answers within its deadline;
- a store that cannot be opened: ``confab serve`` exits at once, naming the file;
- no process of a server listens anywhere but on loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2 as std_health_pb2
from grpc_health.v1 import health_pb2_grpc as std_health_pb2_grpc

from confab.protos import admin_pb2 as admin
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.protos import health_pb2, health_pb2_grpc
from confab.protos import mcp_engine_pb2 as pb
from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.model import ConversationKey
from confab.runtime.protocol.directory import vshard_of
from confab.runtime.store import ConversationWrite, TurnRecord
from confab.runtime.store.sqlite import SqliteStore
from tests.support import ServerProcess, message, processes_marked, run_confab, serve_args, state_request

pytestmark = pytest.mark.integration  # every test here starts a server or a process

EXIT_AFTER_COMMIT = "CONFAB_TEST_EXIT_AFTER_COMMIT"


def count_of(stub: pb_grpc.MCPEngineStub, conversation: str) -> int:
    reply: pb.GetConversationStateResponse = stub.GetConversationState(
        state_request(conversation), timeout=20
    )
    return reply.conversation_state.message_count


def shard_pids(channel: grpc.Channel) -> list[int]:
    health = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(
        health_pb2.DetailedHealthRequest(), timeout=10
    )
    return [int(s["pid"]) for s in health.details["shard_detail"]]


def std_health(channel: grpc.Channel) -> int:
    reply = std_health_pb2_grpc.HealthStub(channel).Check(std_health_pb2.HealthCheckRequest(), timeout=5)
    status: int = reply.status  # grpc_health has no type information: a ServingStatus is an int
    return status


def detailed(channel: grpc.Channel) -> health_pb2.DetailedHealthResponse:
    request = health_pb2.DetailedHealthRequest(include_dependencies=True)
    reply: health_pb2.DetailedHealthResponse = health_pb2_grpc.HealthStub(channel).GetDetailedHealth(
        request, timeout=10
    )
    return reply


def wait_for(condition: object, timeout: float, every: float = 0.05) -> float:
    """Seconds until ``condition()`` held (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(every)
    return time.monotonic() - started


# Exactly once when a shard dies between its commit and its reply ---------------------------


@pytest.fixture
def fragile_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """One shard, whose first process exits right after committing a round of >= 2 commands."""
    server = ServerProcess(tmp_path / "data", shards=1, env={EXIT_AFTER_COMMIT: "2"})
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_resent_batch_of_100_commands_for_one_conversation_is_applied_once(
    fragile_server: ServerProcess,
) -> None:
    with fragile_server.channel() as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        before = shard_pids(channel)
        batch = pb.BatchProcessMessagesRequest(
            tenant_context={"tenant_id": "acme"},
            messages=[message("hot", f"m{i}") for i in range(100)],
            parallel_processing=True,  # one conversation: all 100 go to its shard together, in order
        )
        reply = stub.BatchProcessMessages(batch, timeout=60)
        assert shard_pids(channel) != before, "the shard did not die: the fault was not reached"
        assert reply.successful_count == 100, [
            r.status.message for r in reply.responses if not r.status.success
        ]
        assert [r.conversation_state.message_count for r in reply.responses] == list(range(1, 101))
        assert all(r.performance_metrics.cache_status == "replayed" for r in reply.responses)
        assert count_of(stub, "hot") == 100  # acknowledged 100, applied 100


def test_64_concurrent_calls_to_one_conversation_through_a_shard_death_are_applied_once(
    fragile_server: ServerProcess,
) -> None:
    with fragile_server.channel() as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        before = shard_pids(channel)
        with ThreadPoolExecutor(64) as pool:
            futures = [
                pool.submit(stub.ProcessMessage, message("together", f"m{i}"), timeout=60) for i in range(64)
            ]
            replies = [f.result() for f in futures]
        assert shard_pids(channel) != before, "the shard did not die: the fault was not reached"
        assert sorted(r.conversation_state.message_count for r in replies) == list(range(1, 65))
        assert count_of(stub, "together") == 64


# The supervisor ------------------------------------------------------------------------------


def test_killing_the_supervisor_under_load_is_survived_and_loses_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", shards=2).start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            (supervisor,) = {psutil.Process(pid).ppid() for pid in shard_pids(channel)}
            acknowledged: dict[str, int] = {}
            errors: list[str] = []
            successes: list[float] = []  # when each call was answered OK
            stop = threading.Event()

            def load(worker: int) -> None:
                conversation = f"load-{worker}"
                acknowledged[conversation] = 0
                while not stop.is_set():
                    try:
                        stub.ProcessMessage(message(conversation, "x"), timeout=20)
                    except grpc.RpcError as error:
                        errors.append(f"{error.code()}: {error.details()}")
                        continue
                    acknowledged[conversation] += 1
                    successes.append(time.monotonic())

            workers = [threading.Thread(target=load, args=(w,)) for w in range(8)]
            for worker in workers:
                worker.start()
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.kill(supervisor, signal.SIGKILL)
            saw_not_serving = False
            while time.monotonic() - killed_at < 15 and not (
                saw_not_serving and successes[-1] > killed_at + 1
            ):
                with contextlib.suppress(grpc.RpcError):
                    saw_not_serving |= std_health(channel) == std_health_pb2.HealthCheckResponse.NOT_SERVING
                time.sleep(0.02)
            stop.set()
            for worker in workers:
                worker.join(30)
            # The outage as clients saw it: the longest wait for an answer across the kill.
            answered = sorted(t for t in successes if t > killed_at - 1)
            outage = max(b - a for a, b in itertools.pairwise([killed_at, *answered]))
            print(f"supervisor killed: no call answered for {outage:.2f}s")
            assert outage < 10, f"calls were answered again only {outage:.1f}s after the kill"
            assert saw_not_serving, "health never said NOT_SERVING while no shard served"
            assert errors == []  # every call waited for the new shards and was answered
            assert (
                wait_for(lambda: std_health(channel) == std_health_pb2.HealthCheckResponse.SERVING, 10) < 10
            )
            for conversation, count in acknowledged.items():
                assert count_of(stub, conversation) == count, conversation  # none lost, none twice
            new_supervisors = {psutil.Process(pid).ppid() for pid in shard_pids(channel)}
            assert supervisor not in new_supervisors
    finally:
        server.stop()
    assert not processes_marked(server.marker)


# Health tells the truth ------------------------------------------------------------------------


def test_a_stopped_shard_makes_health_not_serving_and_getcluster_still_answers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", shards=2).start()
    try:
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            pids = shard_pids(channel)
            os.kill(pids[1], signal.SIGSTOP)
            try:
                wait_for(lambda: std_health(channel) == std_health_pb2.HealthCheckResponse.NOT_SERVING, 10)
                report = detailed(channel)
                failing = {d.name: d.error_message for d in report.dependencies if d.status != 1}
                # Its virtual shards cannot be routed meanwhile: the cluster's check says how many.
                assert set(failing) == {"shard-1", "cluster"}, failing
                assert "answer" in failing["shard-1"] or "no answer" in failing["shard-1"]
                assert failing["cluster"].startswith("128 of 256 virtual shards have no holder")
                started = time.monotonic()
                cluster = admin_grpc.AdminStub(channel).GetCluster(admin.GetClusterRequest(), timeout=3)
                assert time.monotonic() - started < 3
                assert [s.healthy for s in cluster.shards] == [True, False]
                assert cluster.shards[1].error and cluster.shards[1].last_heard_s > 1
                # The other shard's conversations are served meanwhile.
                held_by = {o.vshard: o.shard_id for o in cluster.vshards}
                served = [c for c in (f"iso-{i}" for i in range(40)) if held_by[_vshard_of(c)].endswith("/0")]
                for conversation in served[:5]:
                    stub.ProcessMessage(message(conversation, "still here"), timeout=5)
            finally:
                os.kill(pids[1], signal.SIGCONT)
            wait_for(lambda: std_health(channel) == std_health_pb2.HealthCheckResponse.SERVING, 10)
    finally:
        server.stop()


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # gRPC listens on ::ffff:127.0.0.1 for 127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _vshard_of(conversation: str) -> int:
    return vshard_of(ConversationKey("acme", conversation), 256)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB file system of the test's own, to fill up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_writes_clearly_and_health_names_the_store_until_space_is_back(
    small_disk: Path,
) -> None:
    server = ServerProcess(small_disk / "data", shards=1).start()
    filler = small_disk / "filler"
    try:
        with server.channel() as channel:
            stub = pb_grpc.MCPEngineStub(channel)
            stub.ProcessMessage(message("before", "hi"), timeout=10)
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
            with pytest.raises(grpc.RpcError) as caught:
                for i in range(200):  # until the WAL needs a page it cannot have
                    stub.ProcessMessage(message(f"full-{i}", "x" * 2000), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "store write failed" in (caught.value.details() or "")
            wait_for(lambda: std_health(channel) == std_health_pb2.HealthCheckResponse.NOT_SERVING, 10)
            failing = {d.name: d.error_message for d in detailed(channel).dependencies if d.status != 1}
            assert "store" in failing and "full" in failing["store"].lower(), failing
            filler.unlink()
            wait_for(lambda: std_health(channel) == std_health_pb2.HealthCheckResponse.SERVING, 10)
            assert stub.ProcessMessage(message("after", "hi"), timeout=10).status.success
    finally:
        server.stop()


# A store that cannot be opened -------------------------------------------------------------------


def serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_confab(*serve_args(data_dir=data_dir))


def test_a_store_that_is_not_a_database_stops_the_start(tmp_path: Path) -> None:
    store = tmp_path / "data" / "confab.sqlite3"
    store.parent.mkdir()
    store.write_bytes(os.urandom(64 * 1024))
    started = time.monotonic()
    result = serve_once(tmp_path / "data")
    assert result.returncode == 1 and time.monotonic() - started < 10
    (line,) = result.stderr.strip().splitlines()
    assert str(store) in line and "not an SQLite database" in line


def test_a_truncated_store_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "data" / "confab.sqlite3"
    store = SqliteStore(path, synchronous="OFF")
    store.write(
        [
            ConversationWrite(
                ConversationKey("t", f"c-{i}"), b"s" * 400, 1, [TurnRecord(1, f"m{i}", 1, b"r")]
            )
            for i in range(3000)
        ]
    )
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    result = serve_once(tmp_path / "data")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert str(path) in line


# Nothing listens beyond loopback ----------------------------------------------------------------


def test_no_process_of_a_server_listens_on_any_interface_but_loopback(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", shards=2).start()
    try:
        listening = []
        for process in processes_marked(server.marker):
            with contextlib.suppress(psutil.NoSuchProcess):
                for connection in process.net_connections(kind="inet"):
                    if connection.status == psutil.CONN_LISTEN:
                        listening.append((process.pid, connection.laddr.ip, connection.laddr.port))
        assert listening, "found no listener at all: the check is not looking where it should"
        assert all(_loopback(ip) for _, ip, _ in listening), listening
    finally:
        server.stop()
