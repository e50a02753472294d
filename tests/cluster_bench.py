"""Measure a cluster on network-namespace hosts: failover after ``kill -9`` of a host, and
throughput of three hosts against one, with each host's CPU.

    python -m tests.cluster_bench [--kills 5] [--duration 15] [--json FILE]   (as root)

Needs what the cluster tests need (root, ``ip netns``, PostgreSQL's server binaries).
The store is a PostgreSQL server of the run's own with fsync on, listening on the
hosts' bridge. The load generator runs in the root namespace, in its own process;
every host runs one edge and one shard process per core this machine has (two here,
which the hosts share: three hosts on two cores cannot scale, so the CPU each host
spends per message is reported too, from which the scaling on real machines follows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from confab.tools.postgres_server import PostgresServer
from tests.cluster import Cluster
from tests.cluster_load import LoadPlan, LoadProcess, LoadResult, applied_counts, conversation_names
from tests.hosts import Hosts

TICKS = os.sysconf("SC_CLK_TCK")


def namespace_cpu_s(hosts: Hosts, host: int) -> float:
    """CPU seconds used so far by the processes alive on ``host``."""
    total = 0
    for pid in hosts.pids(host):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def exact(result: LoadResult, edge: str) -> bool:
    counts = applied_counts(edge, result.conversations)
    return all(counts[name] == c.acknowledged for name, c in result.conversations.items())


def plan(edges: list[str], duration_s: float, prefix: str, workers: int = 24) -> LoadPlan:
    return LoadPlan(
        edges=tuple(edges),
        conversations=conversation_names(prefix, workers * 4),
        workers=workers,
        duration_s=duration_s,
        give_up_s=30.0,
    )


def failovers(hosts: Hosts, root: Path, store: str, kills: int, duration_s: float) -> dict[str, Any]:
    cluster = Cluster(hosts, root / "failover", store, shards=1).start()
    runs = []
    try:
        for kill in range(kills):
            victim = 1 + kill % (hosts.count - 1)  # never host 0
            with LoadProcess(plan(cluster.edges, duration_s, f"f{kill}-"), root / f"load-f{kill}") as load:
                load.start().wait_for_progress(acknowledged=1500)
                killed_at = time.monotonic()
                hosts.kill(victim)
                result = load.wait()
            silences = result.silences()
            runs.append(
                {
                    "host": victim,
                    "max_silence_s": max(silences.values()),
                    "p50_silence_s": statistics.median(silences.values()),
                    "killed_at_s": killed_at - result.started,
                    "acknowledged": result.acknowledged,
                    "failed": result.failed,
                    "exact": exact(result, cluster.edges[0]),
                }
            )
            print(
                f"kill {kill + 1}: host {victim}, service back after {runs[-1]['max_silence_s']:.2f}s",
                flush=True,
            )
            cluster.servers[victim].start(timeout=60.0)
            cluster.wait_complete(hosts.count)
    finally:
        cluster.stop()
    worst = [r["max_silence_s"] for r in runs]
    return {"runs": runs, "p50_s": statistics.median(worst), "max_s": max(worst)}


def throughput(hosts: Hosts, root: Path, store: str, count: int, duration_s: float) -> dict[str, Any]:
    """``count`` hosts of ``hosts`` as a cluster, loaded through every edge."""
    cluster = Cluster(hosts, root / f"hosts{count}", store, count=count, shards=os.cpu_count() or 1).start()
    try:
        before = [namespace_cpu_s(hosts, i) for i in range(count)]
        with LoadProcess(
            plan(cluster.edges, duration_s, f"t{count}-", workers=64), root / f"load-t{count}"
        ) as load:
            result = load.start().wait()
        used = [namespace_cpu_s(hosts, i) - b for i, b in zip(range(count), before, strict=True)]
        per_host_messages = result.acknowledged / count
        return {
            "hosts": count,
            "msg_per_s": result.throughput(),
            "host_cpu_s": used,
            "cpu_ms_per_msg_per_host": [1000 * u / max(per_host_messages, 1) for u in used],
            "exact": exact(result, cluster.edges[0]),
            "failed": result.failed,
        }
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per measurement")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="confab-cluster-bench-"))
    with Hosts(3) as hosts:
        postgres = PostgresServer(listen=hosts.bridge_address, fsync=True).start()
        try:
            database = postgres.create_database()
            report = {"failover": failovers(hosts, root, database, args.kills, args.duration)}
            for count in (1, hosts.count):
                database = postgres.create_database()
                report[f"hosts_{count}"] = throughput(hosts, root, database, count, args.duration)
        finally:
            postgres.close()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
