"""A cluster of real hosts (network namespaces), one PostgreSQL store, load through every edge, faults.

Each case runs a load generator in its own process against the edges of every host;
a request an edge cannot answer is retried on the next edge under its own request id
(its idempotency key), as a client following the documented retry policy would. What
must hold, for every fault: every acknowledged message is applied exactly once (a
conversation's count read back equals the acknowledgements it got), no request fails,
and the cluster settles again with a fair share on every host. No host leads: any of
them may be killed, cut off or restarted. How long service stopped is printed, not
asserted: speed targets live in the benchmark (``tests.cluster_bench``).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from confab.tools.cluster_certs import make_certs
from confab.tools.postgres_server import PostgresServer
from tests.cluster import Cluster, running_cluster
from tests.cluster_load import LoadPlan, LoadProcess, LoadResult, applied_counts, conversation_names
from tests.hosts import Hosts
from tests.postgres import start_server
from tests.support import run_confab

pytestmark = pytest.mark.integration

HOSTS = 3
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def postgres(make_hosts: Callable[[int], Hosts]) -> Iterator[tuple[Hosts, PostgresServer]]:
    hosts = make_hosts(HOSTS)
    # The store the hosts share, on the bridge between them (a host cut off loses it too),
    # durable as in production.
    server = start_server(hosts.bridge_address, fsync=True)
    try:
        yield hosts, server
    finally:
        server.close()


@pytest.fixture
def cluster(postgres: tuple[Hosts, PostgresServer], tmp_path: Path) -> Iterator[Cluster]:
    hosts, server = postgres
    try:
        with running_cluster(hosts, tmp_path, server.create_database()) as running:
            yield running
    finally:
        shutil.copy(server.log_path, tmp_path / "postgresql.log")  # beside the hosts' logs


def load_plan(edges: list[str], duration_s: float, prefix: str) -> LoadPlan:
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


def cluster_health(edge: str, timeout: float = 2.0) -> int:
    """The edge's grpc.health.v1 status of the service ``confab.cluster`` (-1: no answer)."""
    try:
        with grpc.insecure_channel(edge) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service="confab.cluster"), timeout=timeout)
            return int(reply.status)
    except grpc.RpcError:
        return -1


def settles_serving(edge: str, timeout: float = 10.0) -> bool:
    """Whether ``edge`` reports the cluster SERVING within ``timeout``.

    Each host computes placement from its own reads of the member table, and an edge's health
    is re-checked when its directory changes: another edge may see the cluster complete a
    moment before this one does.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster_health(edge) == SERVING:
            return True
        time.sleep(0.2)
    return bool(cluster_health(edge) == SERVING)


class HolderWatch:
    """Samples, from one edge, how many virtual shards each host holds (to catch one holding all)."""

    def __init__(self, cluster: Cluster, edges: list[int]) -> None:
        self.cluster = cluster
        self.edges = edges
        self.most_held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for edge in self.edges:
                try:
                    held = self.cluster.holders(edge)
                except grpc.RpcError:
                    continue
                self.most_held = max(self.most_held, max(held.values(), default=0))
                break

    def __enter__(self) -> HolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_every_edge_serves_every_conversation_and_each_host_holds_a_share(
    cluster: Cluster, tmp_path: Path
) -> None:
    view = cluster.wait_complete(HOSTS)
    assert sorted(h.host for h in view.hosts) == sorted(cluster.hosts.address(i) for i in range(HOSTS))
    assert not any(h.leader for h in view.hosts)  # no host leads
    assert len({h.incarnation for h in view.hosts}) == HOSTS
    held = cluster.wait_balanced()
    view = cluster.cluster_view()
    assert len(held) == HOSTS and sum(held.values()) == len(view.vshards) == 256
    assert max(held.values()) - min(held.values()) <= 1  # a balanced share each
    assert all(owner.epoch >= 1 for owner in view.vshards)
    for i in range(HOSTS):
        # The edge and the data plane on the advertised address; Thespian on loopback only.
        listeners = cluster.hosts.listening(i)
        assert {address for address, _ in listeners} == {cluster.hosts.address(i), "127.0.0.1"}, listeners

    # Every edge routes alike, once each has read the member and lease tables (every host reads
    # them on its own, a fraction of a second apart).
    def routes(edge: int) -> list[tuple[str, int]]:
        return [(o.shard_id, o.epoch) for o in cluster.cluster_view(edge).vshards]

    deadline = time.monotonic() + 10.0
    while len({tuple(routes(edge)) for edge in range(HOSTS)}) > 1:
        assert time.monotonic() < deadline, [routes(edge)[:4] for edge in range(HOSTS)]
        time.sleep(0.2)
    shown = run_confab("shell", "--target", cluster.edges[1], "-c", "hosts", env={"HOME": str(tmp_path)})
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()[1:-1]
    assert sorted(r.split()[0] for r in rows) == sorted(cluster.hosts.address(i) for i in range(HOSTS))
    assert all(" up " in r for r in rows)
    assert all(str(h.incarnation) in shown.stdout for h in view.hosts)
    assert all(server.address in shown.stdout for server in cluster.servers)  # each host's edge
    with LoadProcess(load_plan(cluster.edges, 4.0, "all-"), tmp_path / "load") as load:
        result = load.start().wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])
    # Requests went in through every edge, and conversations of every host were served.
    assert all(sum(c.acks_by_edge.get(e, 0) for c in result.conversations.values()) for e in cluster.edges)


def test_each_host_killed_in_turn_comes_back_to_a_fair_share_and_nothing_is_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    """kill -9 of every host in turn, the first started included; each restarted."""
    with LoadProcess(load_plan(cluster.edges, 60.0, "kill-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=500)
        for victim in range(HOSTS):
            survivors = [i for i in range(HOSTS) if i != victim]
            with HolderWatch(cluster, survivors) as watch:
                cluster.hosts.kill(victim)
                view = cluster.wait_complete(HOSTS - 1, edge=survivors[0])
                lost = [h.state for h in view.hosts if h.host == cluster.hosts.address(victim)]
                assert lost in ([], ["lost"]), view.hosts  # never shown up once its heartbeat stopped
                assert cluster.hosts.address(victim) not in cluster.holders(survivors[0])
                cluster.servers[victim].start(timeout=60.0)
                cluster.wait_complete(HOSTS, edge=survivors[0])
                cluster.wait_balanced(edge=survivors[0])
            assert watch.most_held < 256, "a host held every virtual shard"
        load.stop()
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])


def test_a_cut_off_host_is_replaced_never_written_beside_and_rejoins(
    cluster: Cluster, tmp_path: Path
) -> None:
    cut = 2
    survivors = cluster.edges[:cut]
    with LoadProcess(load_plan(survivors, 30.0, "cut-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=1000)
        cut_at = time.monotonic()
        cluster.hosts.cut(cut)
        view = cluster.wait_complete(HOSTS - 1)  # its share moved while its processes still run
        assert cluster.hosts.address(cut) not in cluster.holders()
        assert cluster.servers[cut].alive()
        assert [h.state for h in view.hosts if h.host == cluster.hosts.address(cut)] == ["lost"]
        assert all(settles_serving(edge) for edge in survivors)
        time.sleep(max(0.0, 20.0 - (time.monotonic() - cut_at)))
        cluster.hosts.heal(cut)
        view = cluster.wait_complete(HOSTS)  # back, and given a share again
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, survivors[0])
    assert cluster.holders().get(cluster.hosts.address(cut), 0) > 0
    assert [h.state for h in view.hosts].count("up") == HOSTS


def test_a_host_cut_off_from_the_others_but_not_the_store_stops_serving_and_rejoins(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Its heartbeat still reaches the store: the others' votes take it out."""
    cut = 1
    others = [cluster.edges[i] for i in range(HOSTS) if i != cut]
    with LoadProcess(load_plan(others, 30.0, "island-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=1000)
        cut_at = time.monotonic()
        cluster.hosts.isolate(cut)
        view = cluster.wait_complete(HOSTS - 1)
        assert [h.state for h in view.hosts if h.host == cluster.hosts.address(cut)] == ["unreachable"]
        assert cluster.hosts.address(cut) not in cluster.holders()
        # The cut host's own edge (which clients on its side still reach) cannot route the
        # others' virtual shards: it says so, every time it is asked while the cut lasts.
        grace_s = 4.0  # its links notice a silent peer after engine.heartbeat_timeout_s
        while time.monotonic() - cut_at < 20.0:
            if time.monotonic() - cut_at > grace_s:
                assert cluster_health(cluster.edges[cut]) != SERVING
            time.sleep(0.5)
        cluster.hosts.rejoin(cut)
        view = cluster.wait_complete(HOSTS)
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, others[0])
    assert cluster.holders().get(cluster.hosts.address(cut), 0) > 0
    assert settles_serving(cluster.edges[cut])


def test_sigterm_hands_a_hosts_share_off_without_a_failed_call(cluster: Cluster, tmp_path: Path) -> None:
    leaving = 1
    with LoadProcess(load_plan(cluster.edges, 10.0, "term-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=1500)
        assert cluster.servers[leaving].stop() == 0  # SIGTERM: hand-off, drain, exit 0
        assert cluster.hosts.pids(leaving) == []
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])
    view = cluster.wait_complete(HOSTS - 1)
    assert cluster.hosts.address(leaving) not in {h.host for h in view.hosts}  # it left; it was not lost


def test_a_rolling_restart_of_every_host_fails_no_call(cluster: Cluster, tmp_path: Path) -> None:
    with LoadProcess(load_plan(cluster.edges, 60.0, "roll-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=500)
        for host in range(HOSTS):
            assert cluster.servers[host].stop() == 0
            cluster.servers[host].start(timeout=60.0)
            cluster.wait_complete(HOSTS, edge=(host + 1) % HOSTS)
            cluster.wait_balanced(edge=(host + 1) % HOSTS)
        load.stop()
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])


def test_postgresql_restarted_under_load_loses_nothing(
    cluster: Cluster, postgres: tuple[Hosts, PostgresServer], tmp_path: Path
) -> None:
    _, server = postgres
    with LoadProcess(load_plan(cluster.edges, 30.0, "pg-"), tmp_path / "load") as load:
        load.start().wait_for_progress(acknowledged=1000)
        server.stop()
        time.sleep(2.0)
        server.start()
        back_at = time.monotonic()
        cluster.wait_complete(HOSTS)
        print(f"cluster complete again {time.monotonic() - back_at:.1f}s after PostgreSQL was back")
        result = load.wait()
    print(result.summary())
    check_exactly_once(result, cluster.edges[0])


def test_a_stranger_on_the_hosts_network_gets_nothing_from_any_port_but_the_api(
    make_hosts: Callable[[int], Hosts], tmp_path: Path
) -> None:
    """A fourth namespace on the same bridge, not a member: every port of every host but the
    public gRPC edge gives it no data-plane frame, whether it speaks plaintext, TLS without a
    certificate or TLS with a certificate of another CA; Thespian's ports are not reachable."""
    hosts = make_hosts(HOSTS + 1)
    stranger = HOSTS
    (intruder,) = make_certs(tmp_path / "foreign", "confab-test", [("intruder", hosts.address(stranger))])
    server = start_server(hosts.bridge_address)
    try:
        with running_cluster(hosts, tmp_path, server.create_database(), count=HOSTS) as cluster:
            cluster.wait_complete(HOSTS)
            tried = 0
            for i in range(HOSTS):
                for address, port in hosts.listening(i):
                    if port == cluster.servers[i].port:
                        continue  # the API itself, open to clients by design (and guarded by auth)
                    ran = hosts.run(
                        stranger,
                        [
                            sys.executable,
                            "-m",
                            "tests.stranger",
                            hosts.address(i),
                            str(port),
                            str(intruder.cert_file),
                            str(intruder.key_file),
                        ],
                    )
                    assert ran.returncode == 0, ran.stderr
                    got = json.loads(ran.stdout)
                    where = f"host {i} {address}:{port}"
                    assert all(way["frames"] == 0 for way in got.values()), (where, got)
                    if address == "127.0.0.1":  # Thespian, and nothing else: not there off the host
                        assert not any(way["opened"] for way in got.values()), (where, got)
                    else:  # a shard's data plane: it opens, and says nothing to a stranger
                        assert all(way["opened"] for way in got.values()), (where, got)
                    tried += 1
            assert tried >= 2 * HOSTS  # each host's shard and its actor system at least
            assert cluster.wait_complete(HOSTS)  # and the cluster is none the worse for it
    finally:
        server.close()
