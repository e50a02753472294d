"""A cluster of real hosts (network namespaces), one PostgreSQL store, load through every edge, faults.

Each case runs a load generator in its own process against the edges of every host
that stays up; a request an edge cannot answer is retried on the next edge with its
own request id, as a client following the retry policy would. What must hold, for
every fault: every acknowledged message is applied exactly once (a conversation's
count read back equals the acknowledgements it got), no request fails, and the
cluster settles again. How long service stopped is printed, not asserted: speed
targets live in the benchmark.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from confab.protos import mcp_engine_pb2_grpc as pb_grpc
from confab.runtime.model import ConversationKey
from confab.runtime.protocol.directory import vshard_of

from .cluster import Cluster, running_cluster
from .cluster_load import LoadPlan, LoadProcess, LoadResult, applied_counts, conversation_names
from .hosts import Hosts
from .postgres import start_server
from .support import message, run_confab

pytestmark = pytest.mark.integration

HOSTS = 3


@pytest.fixture
def cluster(make_hosts: Callable[[int], Hosts], tmp_path: Path) -> Iterator[Cluster]:
    hosts = make_hosts(HOSTS)
    # The store the hosts share, on the bridge between them: a host cut off loses it too.
    postgres = start_server(hosts.bridge_address)
    try:
        with running_cluster(hosts, tmp_path, postgres.create_database()) as running:
            yield running
    finally:
        shutil.copy(postgres.log_path, tmp_path / "postgresql.log")  # beside the hosts' logs
        postgres.close()


def load_plan(cluster: Cluster, edges: list[str], duration_s: float, prefix: str) -> LoadPlan:
    return LoadPlan(
        edges=tuple(edges),
        conversations=conversation_names(prefix, 48),
        workers=12,
        duration_s=duration_s,
        attempt_timeout_s=2.0,
        give_up_s=30.0,
    )


def check_exactly_once(result: LoadResult, edge: str) -> None:
    counts = applied_counts(edge, result.conversations)
    wrong = {
        name: (c.acknowledged, counts[name])
        for name, c in result.conversations.items()
        if counts[name] != c.acknowledged
    }
    assert not wrong, f"(acknowledged, applied) differ: {wrong}"
    assert result.failed == 0, [f for c in result.conversations.values() for f in c.failures][:5]


def test_every_edge_serves_every_conversation_and_each_host_holds_a_share(
    cluster: Cluster, tmp_path: Path
) -> None:
    view = cluster.wait_complete(HOSTS)
    assert sorted(h.host for h in view.hosts) == sorted(cluster.hosts.address(i) for i in range(HOSTS))
    assert [h.leader for h in sorted(view.hosts, key=lambda h: h.host)].count(True) == 1
    held = cluster.holders()
    assert len(held) == HOSTS and sum(held.values()) == len(view.vshards) == 256
    assert max(held.values()) - min(held.values()) <= 1  # a balanced share each
    assert all(owner.epoch >= 1 for owner in view.vshards)
    for i in range(HOSTS):  # edge, actor systems and data plane: all on the advertised address only
        listeners = cluster.hosts.listening(i)
        assert listeners and {address for address, _ in listeners} == {cluster.hosts.address(i)}, listeners
    for edge in range(1, HOSTS):  # every edge routes alike
        assert [(o.shard_id, o.epoch) for o in cluster.cluster_view(edge).vshards] == [
            (o.shard_id, o.epoch) for o in view.vshards
        ]
    shown = run_confab("shell", "--target", cluster.edges[1], "-c", "hosts", env={"HOME": str(tmp_path)})
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()[1:-1]
    assert sorted(r.split()[0] for r in rows) == sorted(cluster.hosts.address(i) for i in range(HOSTS))
    assert all(" up" in r for r in rows) and sum("(leader)" in r for r in rows) == 1
    assert all(server.address in shown.stdout for server in cluster.servers)  # each host's edge
    with LoadProcess(load_plan(cluster, cluster.edges, 4.0, "all-"), tmp_path / "load") as load:
        result = load.start().wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])
    # Requests went in through every edge, and conversations of every host were served.
    assert all(sum(c.acks_by_edge.get(e, 0) for c in result.conversations.values()) for e in cluster.edges)


def test_a_host_killed_under_load_loses_nothing_and_applies_nothing_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    lost = 2
    with LoadProcess(load_plan(cluster, cluster.edges, 16.0, "kill-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=2000)
        killed_at = time.monotonic()
        cluster.hosts.kill(lost)  # every process of the host, at once
        result = load.wait()
    print(result.summary(), f"(host killed {killed_at - result.started:.1f}s in)")
    check_exactly_once(result, cluster.edges[0])
    view = cluster.wait_complete(HOSTS - 1)
    assert [h.state for h in view.hosts if h.host == cluster.hosts.address(lost)] == ["lost"]
    assert cluster.hosts.address(lost) not in cluster.holders()


def test_a_cut_off_host_is_replaced_never_written_beside_and_rejoins(
    cluster: Cluster, tmp_path: Path
) -> None:
    cut = 2
    survivors = cluster.edges[:cut]
    with LoadProcess(load_plan(cluster, survivors, 30.0, "cut-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=1000)
        cut_at = time.monotonic()
        cluster.hosts.cut(cut)
        view = cluster.wait_complete(HOSTS - 1)  # its share moved while its processes still run
        assert cluster.hosts.address(cut) not in cluster.holders()
        assert cluster.servers[cut].alive()
        time.sleep(max(0.0, 20.0 - (time.monotonic() - cut_at)))
        cluster.hosts.heal(cut)
        view = cluster.wait_complete(HOSTS)  # back, and given a share again
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, survivors[0])
    assert cluster.holders().get(cluster.hosts.address(cut), 0) > 0
    assert [h.state for h in view.hosts].count("up") == HOSTS


def test_sigterm_hands_a_hosts_share_off_without_a_failed_call(cluster: Cluster, tmp_path: Path) -> None:
    leaving = 1
    with LoadProcess(load_plan(cluster, cluster.edges, 10.0, "term-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=1500)
        assert cluster.servers[leaving].stop() == 0  # SIGTERM: hand-off, drain, exit 0
        assert cluster.hosts.pids(leaving) == []
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])
    view = cluster.wait_complete(HOSTS - 1)
    assert cluster.hosts.address(leaving) not in {h.host for h in view.hosts}  # it left; it was not lost


def test_when_the_leader_is_lost_the_other_hosts_keep_serving_what_they_hold(cluster: Cluster) -> None:
    view = cluster.cluster_view(1)
    held_by = {o.vshard: o.shard_id.rpartition("/")[0] for o in view.vshards}
    leader = cluster.hosts.address(0)
    cluster.hosts.kill(0)
    time.sleep(6.0)  # past any lease the leader held
    served, waiting = [], []
    with grpc.insecure_channel(cluster.edges[1]) as channel:
        stub = pb_grpc.MCPEngineStub(channel)
        names = [f"leaderless-{i}" for i in range(60)]
        calls = [stub.ProcessMessage.future(message(name, "hi"), timeout=2.0) for name in names]  # at once
        for name, call in zip(names, calls, strict=True):
            on_leader = held_by[vshard_of(ConversationKey("acme", name), len(held_by))] == leader
            try:
                call.result()
                served.append(on_leader)
            except grpc.RpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                waiting.append(on_leader)
    # Without a coordinator nothing moves: the leader's share waits for it; the rest is served.
    print(f"served {len(served)}, waiting for the leader {len(waiting)}")
    assert served and waiting and not any(served) and all(waiting)
