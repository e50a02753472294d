"""A Confab cluster for tests: ``confab serve`` on several network-namespace hosts, one store.

Every host advertises its own address, shares one PostgreSQL store where the hosts
find each other (no host leads), and holds a certificate of the cluster's CA
(``confab cluster certs``' own code) for the data plane's mutual TLS between hosts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from confab.protos import admin_pb2 as admin_pb
from confab.protos import admin_pb2_grpc as admin_grpc
from confab.tools.cluster_certs import make_certs
from tests.host_server import HostServer
from tests.hosts import Hosts


class Cluster:
    def __init__(
        self,
        hosts: Hosts,
        root: Path,
        store: str,
        *,
        count: int = 0,
        shards: int = 1,
        extra: tuple[str, ...] = (),
        tls: bool = True,
    ) -> None:
        """A cluster on the first ``count`` hosts of ``hosts`` (0: all of them); ``tls`` False:
        plain TCP between the hosts (``--cluster-insecure-plaintext``), to measure what TLS costs."""
        self.hosts = hosts
        self.count = count or hosts.count
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        config = root / "cluster.yaml"
        config.write_text(f"store:\n  path: {store}\n  synchronous: NORMAL\n", encoding="utf-8")
        certs = root / "certs"
        made = make_certs(certs, "confab-test", [(f"host{i}", hosts.address(i)) for i in range(self.count)])

        def security(i: int) -> tuple[str, ...]:
            if not tls:
                return ("--cluster-insecure-plaintext",)
            return (
                "--cluster-ca",
                str(certs / "ca.pem"),
                "--cluster-cert",
                str(made[i].cert_file),
                "--cluster-key",
                str(made[i].key_file),
            )

        self.servers = [
            HostServer(
                hosts,
                i,
                root / f"host{i}",
                shards=shards,
                log_level="INFO",
                extra=(
                    "--config",
                    str(config),
                    "--advertise",
                    hosts.address(i),
                    "--cluster",
                    "confab-test",
                    *security(i),
                    *extra,
                ),
            )
            for i in range(self.count)
        ]

    @property
    def edges(self) -> list[str]:
        return [server.address for server in self.servers]

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            server.start(timeout=60.0)
        self.wait_complete(self.count)
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def cluster_view(self, edge: int = 0, timeout: float = 5.0) -> admin_pb.Cluster:
        with grpc.insecure_channel(self.servers[edge].address) as channel:
            stub = admin_grpc.AdminStub(channel)
            view: admin_pb.Cluster = stub.GetCluster(admin_pb.GetClusterRequest(), timeout=timeout)
            return view

    def wait_complete(self, up: int, edge: int = 0, timeout: float = 60.0) -> admin_pb.Cluster:
        """Wait until edge ``edge`` sees ``up`` hosts up and every virtual shard held."""
        deadline = time.monotonic() + timeout
        view: admin_pb.Cluster | None = None
        while time.monotonic() < deadline:
            try:
                view = self.cluster_view(edge)
            except grpc.RpcError:
                view = None
            if view is not None and view.complete and sum(h.state == "up" for h in view.hosts) == up:
                return view
            time.sleep(0.2)
        raise AssertionError(f"the cluster did not settle with {up} hosts up: {view}")

    def wait_balanced(self, edge: int = 0, timeout: float = 30.0) -> dict[str, int]:
        """Wait until every host up holds its fair share (no host two above another)."""
        deadline = time.monotonic() + timeout
        held: dict[str, int] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                view = self.cluster_view(edge)
                up = {h.host for h in view.hosts if h.state == "up"}
                held = self.holders(edge)
                counts = [held.get(host, 0) for host in up]
                if view.complete and counts and max(counts) - min(counts) <= 1:
                    return held
            time.sleep(0.2)
        raise AssertionError(f"the cluster did not even out: {held}")

    def holders(self, edge: int = 0) -> dict[str, int]:
        """Virtual shards held per host, as edge ``edge`` routes."""
        counts: dict[str, int] = {}
        for owner in self.cluster_view(edge).vshards:
            host = owner.shard_id.rpartition("/")[0]
            counts[host] = counts.get(host, 0) + 1
        return counts


@contextmanager
def running_cluster(hosts: Hosts, root: Path, store: str, **options: object) -> Iterator[Cluster]:
    cluster = Cluster(hosts, root, store, **options)  # type: ignore[arg-type]
    try:
        yield cluster.start()
    finally:
        cluster.stop()
