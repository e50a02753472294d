"""The host ⇄ edge channel of ``confab serve --edges N``: what crosses it comes back equal."""

from __future__ import annotations

import socket
import threading

import pytest

from confab.runtime.config import auto_edges, config_from_mapping, config_to_mapping, load_config
from confab.runtime.engine.remote_host import HOST_GONE, RemoteShardHost
from confab.runtime.inspection import HostView, Owner
from confab.runtime.protocol import host_channel
from confab.runtime.protocol.directory import ShardDirectory, ShardEndpoint
from confab.runtime.protocol.host_channel import Channel

DIRECTORY = ShardDirectory(
    version=7,
    shards=(
        ShardEndpoint(0, 2, "tcp:10.0.0.1:4000", 123, "", "h1", "unix:/tmp/s0.2.sock"),
        ShardEndpoint(1, 1, "", 0, "could not open the store", "h1"),
    ),
    owners=(Owner("h1/0", 3), Owner(), Owner("h2/1", 9)),
    placement=("h1/0", "h1/1", "h2/1"),
    hosts=(HostView("h1", "up", 0.25, "10.0.0.1:50051", 42, 2, 99, 2), HostView("h2", "lost", 4.0)),
    restarts=3,
    supervisor_pid=55,
    admin_pid=54,
    in_touch=False,
)


def test_a_directory_crosses_the_channel_unchanged() -> None:
    ours, theirs = socket.socketpair()
    host, edge = Channel(ours), Channel(theirs)
    try:
        host.send(host_channel.DIRECTORY, host_channel.directory_to_wire(DIRECTORY))
        host.send(host_channel.PROBLEM, "restarting")
        kind, wire = edge.receive()
        assert kind == host_channel.DIRECTORY
        assert host_channel.directory_from_wire(wire) == DIRECTORY
        assert edge.receive() == [host_channel.PROBLEM, "restarting"]
        host.close()
        with pytest.raises(EOFError):
            edge.receive()
    finally:
        edge.close()


def test_the_remote_host_passes_directories_on_and_forwards_requests() -> None:
    ours, theirs = socket.socketpair()
    host = Channel(ours)
    remote = RemoteShardHost(Channel(theirs), start_timeout_s=5.0)
    later: list[ShardDirectory] = []
    seen = threading.Event()

    def on_directory(directory: ShardDirectory) -> None:
        later.append(directory)
        seen.set()

    host.send(host_channel.DIRECTORY, host_channel.directory_to_wire(DIRECTORY))
    assert remote.start(on_directory) == DIRECTORY
    newer = ShardDirectory(version=8, shards=DIRECTORY.shards)
    host.send(host_channel.DIRECTORY, host_channel.directory_to_wire(newer))
    assert seen.wait(5.0) and later == [newer]
    remote.restart_shard(1)
    remote.leave()
    remote.edge_serving("127.0.0.1:50051")
    assert [host.receive() for _ in range(3)] == [
        [host_channel.RESTART_SHARD, 1],
        [host_channel.LEAVE],
        [host_channel.EDGE_SERVING, "127.0.0.1:50051"],
    ]
    gone = threading.Event()
    remote.on_host_gone = gone.set
    host.close()
    assert gone.wait(5.0) and remote.problem() == HOST_GONE


def test_the_configuration_crosses_as_plain_values() -> None:
    config = load_config(None, **{"server.edges": 3, "engine.shards": 2, "flows.dirs": ["a", "b"]})
    again = config_from_mapping(config_to_mapping(config))
    assert again == config and again.edge_count == 3


@pytest.mark.parametrize(("cpus", "edges"), [(1, 1), (2, 1), (3, 2), (4, 2), (8, 5), (16, 10)])
def test_the_default_edges_are_two_thirds_of_the_cpus(cpus: int, edges: int) -> None:
    assert auto_edges(cpus) == edges
