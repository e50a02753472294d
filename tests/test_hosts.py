"""The multi-host harness itself: namespaces that reach each other, cuts that isolate, kills that
leave nothing, a teardown that removes everything of the run, and real servers under load on hosts.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.cluster_load import LoadPlan, LoadProcess, LoadResult, applied_counts, conversation_names
from tests.host_server import HostServer
from tests.hosts import Hosts, link_names, namespace_names, unavailable_reason

UNAVAILABLE = unavailable_reason()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))]

MakeHosts = Callable[[int], Hosts]
PORT = 7000
LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""
# Forks a daemon into a session of its own, as Thespian's admin does, then waits. Each line
# is one write: the two processes share the log, and print() may write a line in pieces.
DAEMONIZER = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(1, f"daemon {os.getpid()}\\n".encode())
        time.sleep(600)
    os._exit(0)
os.wait()
os.write(1, f"parent {os.getpid()}\\n".encode())
time.sleep(600)
"""


def wait_for_text(path: Path, *texts: str, timeout: float = 10.0) -> str:
    """The file's content once every one of ``texts`` is in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if all(text in content for text in texts):
            return content
        time.sleep(0.02)
    raise AssertionError(f"not all of {texts} appeared in {path}")


def start_listener(network: Hosts, i: int, log: Path) -> subprocess.Popen[bytes]:
    process = network.spawn(i, [sys.executable, "-c", LISTENER, network.address(i), str(PORT)], log=log)
    wait_for_text(log, "listening")
    return process


def start_daemonizer(network: Hosts, i: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The process started and the pid of the daemon it forked, once both run."""
    process = network.spawn(i, [sys.executable, "-c", DAEMONIZER], log=log)
    content = wait_for_text(log, "parent", "daemon")
    pids = {line.split()[0]: int(line.split()[1]) for line in content.splitlines()}
    assert pids["parent"] == process.pid
    return process, pids["daemon"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def everything_of(network: Hosts) -> tuple[set[str], set[str]]:
    """The run's namespaces and links that exist right now."""
    namespaces = {network.namespace(i) for i in range(network.count)}
    links = {network.bridge, *(network.veth(i) for i in range(network.count))}
    return namespaces & namespace_names(), links & link_names()


# Reaching and cutting ---------------------------------------------------------------------


def test_a_listener_on_one_host_is_reached_from_the_other_host_and_from_the_root(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(2)
    start_listener(network, 0, tmp_path / "listener.log")
    assert network.listening(0) == [(network.address(0), PORT)]
    assert network.listening(1) == []
    assert network.address(0) != network.address(1) != network.bridge_address
    assert network.can_connect(1, network.address(0), PORT)
    assert network.can_connect(None, network.address(0), PORT)
    assert not network.can_connect(1, network.address(0), PORT + 1)  # the probe can say no


def test_a_cut_host_is_unreachable_while_its_processes_run_and_a_heal_restores_it(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(2)
    listener = start_listener(network, 0, tmp_path / "listener.log")
    with socket.create_server((network.bridge_address, PORT)):  # the root's own, on the bridge only
        assert network.can_connect(0, network.bridge_address, PORT)

        network.cut(0)
        assert not network.can_connect(1, network.address(0), PORT)
        assert not network.can_connect(None, network.address(0), PORT)
        assert not network.can_connect(0, network.bridge_address, PORT)  # nor does the host reach out
        assert listener.poll() is None and listener.pid in network.pids(0)
        assert network.can_connect(0, network.address(0), PORT)  # on the host itself all still works

        network.heal(0)
        assert network.wait_connectable(1, network.address(0), PORT)
        assert network.wait_connectable(None, network.address(0), PORT)
        assert network.wait_connectable(0, network.bridge_address, PORT)


# Killing and tearing down ---------------------------------------------------------------------


def test_kill_ends_every_process_of_the_host_even_a_daemon_in_its_own_session_and_no_other(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(2)
    parent, daemon = start_daemonizer(network, 0, tmp_path / "daemonizer.log")
    assert os.getsid(daemon) != os.getsid(parent.pid)  # a process-group kill would miss it
    assert network.pids(0) == sorted([parent.pid, daemon])
    other = start_listener(network, 1, tmp_path / "listener.log")

    killed = network.kill(0)

    assert killed == sorted([parent.pid, daemon])
    assert network.pids(0) == []
    assert not alive(parent.pid) and not alive(daemon)
    assert network.pids(1) == [other.pid]


def test_terminate_signals_only_the_process_spawned_and_not_what_it_forked(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(1)
    spawned, daemon = start_daemonizer(network, 0, tmp_path / "daemonizer.log")
    assert network.terminate(0) == [spawned]
    spawned.wait(10)
    assert network.pids(0) == [daemon]  # what the cluster test must clean up after a SIGTERM: kill()


def test_nothing_of_a_run_is_left_after_its_context_exits_even_on_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed here"), Hosts(2) as network:
        for i in range(2):
            start_daemonizer(network, i, tmp_path / f"host{i}.log")
        pids = network.pids(0) + network.pids(1)
        assert len(pids) == 4
        assert everything_of(network) == (
            {network.namespace(0), network.namespace(1)},
            {network.bridge, network.veth(0), network.veth(1)},
        )
        raise RuntimeError("the test failed here")
    assert everything_of(network) == (set(), set())
    assert not any(alive(pid) for pid in pids)
    assert network.leftovers() == []


def test_two_runs_at_once_get_names_and_subnets_of_their_own(tmp_path: Path) -> None:
    with Hosts(1) as first, Hosts(1) as second:
        assert first.token != second.token
        assert not first.subnet.overlaps(second.subnet)
        assert ipaddress.ip_address(first.address(0)) in first.subnet
        assert ipaddress.ip_address(second.address(0)) in second.subnet
        assert not ({first.namespace(0), first.bridge} & {second.namespace(0), second.bridge})
        start_listener(first, 0, tmp_path / "listener.log")
        assert second.pids(0) == []  # a process of one run is never counted as the other's
    assert everything_of(first) == everything_of(second) == (set(), set())


# Servers on hosts, under load from the root ----------------------------------------------------


def plan_for(
    edges: list[str], *, duration_s: float = 3.0, give_up_s: float = 20.0, attempt_timeout_s: float = 2.0
) -> LoadPlan:
    return LoadPlan(
        edges=tuple(edges),
        conversations=conversation_names("hosted-", 8),
        workers=4,
        duration_s=duration_s,
        give_up_s=give_up_s,
        attempt_timeout_s=attempt_timeout_s,
    )


def acknowledged_of(result: LoadResult) -> dict[str, int]:
    return {c: r.acknowledged for c, r in result.conversations.items()}


def test_a_server_on_a_host_serves_load_from_the_root_and_applies_what_was_acknowledged(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(1)
    server = HostServer(network, 0, tmp_path / "data").start()
    listening = network.listening(0)
    assert (network.address(0), server.port) in listening
    assert all(ip in (network.address(0), "127.0.0.1") for ip, _ in listening), listening
    with LoadProcess(plan_for([server.address]), tmp_path / "load").start() as load:
        result = load.wait()
    print(f"one host, one edge: {result.summary()}")
    assert result.failed == 0 and result.retries == 0
    assert all(r.acknowledged > 0 for r in result.conversations.values())
    assert applied_counts(server.address, result.plan.conversations) == acknowledged_of(result)
    assert server.stop() == 0
    assert network.pids(0) == []


def test_a_server_killed_mid_load_fails_requests_with_no_edge_left_and_leaves_no_process(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(1)
    server = HostServer(network, 0, tmp_path / "data").start()
    plan = plan_for([server.address], duration_s=60, give_up_s=1.0, attempt_timeout_s=0.5)
    with LoadProcess(plan, tmp_path / "load").start() as load:
        load.wait_for_progress(acknowledged=200)
        killed_at = time.monotonic()
        assert len(network.kill(0)) > 1  # the server and the actor system it started
        assert network.pids(0) == []
        load.wait_for_progress(failed=plan.workers)
        load.stop()
        result = load.wait()
    print(f"one edge killed: {result.summary()}")
    failures = [(when, reason) for r in result.conversations.values() for when, reason in r.failures]
    assert len(failures) == result.failed >= plan.workers
    assert all(when > killed_at for when, _ in failures)
    assert all(reason.split(":")[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED") for _, reason in failures)
    # Every acknowledged message is in the store; a failed one may be too (its reply may be what was lost).
    restarted = HostServer(network, 0, tmp_path / "data").start()
    applied = applied_counts(restarted.address, plan.conversations)
    for conversation, record in result.conversations.items():
        assert record.acknowledged <= applied[conversation] <= record.acknowledged + record.failed
    restarted.stop()
    assert network.pids(0) == []


def test_load_on_two_edges_moves_to_the_other_while_one_is_cut_and_nothing_is_lost(
    make_hosts: MakeHosts, tmp_path: Path
) -> None:
    network = make_hosts(2)
    servers = [HostServer(network, i, tmp_path / f"data{i}").start() for i in range(2)]
    plan = plan_for([s.address for s in servers], duration_s=60, attempt_timeout_s=1.0)
    with LoadProcess(plan, tmp_path / "load").start() as load:
        before = load.wait_for_progress(acknowledged=200)
        cut_at = time.monotonic()
        network.cut(0)
        load.wait_for_progress(acknowledged=before.acknowledged + 400)  # served by host 1 alone
        network.heal(0)
        load.stop()
        result = load.wait()
    print(f"one of two edges cut: {result.summary()}")
    assert result.failed == 0
    assert result.retries > 0
    assert any(t > cut_at for r in result.conversations.values() for t in r.ack_times)
    # The servers are separate (no shared store): a request whose reply the cut lost was
    # applied by host 0 and again by host 1, so a server may have more than it acknowledged.
    for server in servers:
        applied = applied_counts(server.address, plan.conversations)
        for conversation, record in result.conversations.items():
            acknowledged = record.acks_by_edge.get(server.address, 0)
            assert acknowledged <= applied[conversation] <= acknowledged + record.retries, conversation
    assert all(sum(r.acks_by_edge.get(s.address, 0) for r in result.conversations.values()) for s in servers)
    for i, server in enumerate(servers):
        server.stop()
        assert network.pids(i) == []
