"""Measure a cluster on network-namespace hosts: failover after ``kill -9`` of each host in
turn and the time its restart takes to get a fair share back, a rolling restart under load,
and throughput of three hosts (mutual TLS between them, and plain TCP, same run) against
one, with each host's CPU.

    python -m tests.cluster_bench [--kills 6] [--duration 15] [--json FILE]   (as root)

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
    """``kill -9`` of each host in turn (no host leads: the first started is killed too), under
    load; then its restart, timed until the cluster has evened out again."""
    cluster = Cluster(hosts, root / "failover", store, shards=1).start()
    runs = []
    try:
        for kill in range(kills):
            victim = kill % hosts.count
            with LoadProcess(plan(cluster.edges, duration_s, f"f{kill}-"), root / f"load-f{kill}") as load:
                load.start().wait_for_progress(acknowledged=1500)
                killed_at = time.monotonic()
                hosts.kill(victim)
                result = load.wait()
            silences = result.silences()
            other = (victim + 1) % hosts.count
            started = time.monotonic()
            cluster.servers[victim].start(timeout=60.0)
            serving = time.monotonic()
            cluster.wait_balanced(edge=other)
            balanced = time.monotonic()
            runs.append(
                {
                    "host": victim,
                    "max_silence_s": max(silences.values()),
                    "p50_silence_s": statistics.median(silences.values()),
                    "killed_at_s": killed_at - result.started,
                    "acknowledged": result.acknowledged,
                    "failed": result.failed,
                    "exact": exact(result, cluster.edges[other]),
                    "restart_to_serving_s": serving - started,
                    "serving_to_fair_share_s": balanced - serving,
                }
            )
            print(
                f"kill {kill + 1}: host {victim}, service back after {runs[-1]['max_silence_s']:.2f}s;"
                f" restarted, serving in {serving - started:.1f}s,"
                f" a fair share {balanced - serving:.1f}s later",
                flush=True,
            )
    finally:
        cluster.stop()
    worst = [r["max_silence_s"] for r in runs]
    share = [r["serving_to_fair_share_s"] for r in runs]
    return {
        "runs": runs,
        "p50_s": statistics.median(worst),
        "max_s": max(worst),
        "fair_share_p50_s": statistics.median(share),
        "fair_share_max_s": max(share),
    }


def rolling_restart(hosts: Hosts, root: Path, store: str, duration_s: float) -> dict[str, Any]:
    """SIGTERM and start again each host in turn, under load: how many calls fail."""
    cluster = Cluster(hosts, root / "rolling", store, shards=1).start()
    try:
        with LoadProcess(plan(cluster.edges, duration_s, "roll-"), root / "load-roll") as load:
            load.start().wait_for_progress(acknowledged=1000)
            for host in range(hosts.count):
                cluster.servers[host].stop()
                cluster.servers[host].start(timeout=60.0)
                cluster.wait_balanced(edge=(host + 1) % hosts.count)
            load.stop()
            result = load.wait()
        report = {
            "acknowledged": result.acknowledged,
            "failed": result.failed,
            "retries": result.retries,
            "max_silence_s": result.silence_max(),
            "exact": exact(result, cluster.edges[0]),
        }
        print(f"rolling restart: {report}", flush=True)
        return report
    finally:
        cluster.stop()


def throughput(
    hosts: Hosts, root: Path, store: str, count: int, duration_s: float, *, tls: bool = True
) -> dict[str, Any]:
    """``count`` hosts of ``hosts`` as a cluster, loaded through every edge."""
    name = f"hosts{count}" + ("" if tls else "-plaintext")
    cluster = Cluster(hosts, root / name, store, count=count, shards=os.cpu_count() or 1, tls=tls).start()
    try:
        before = [namespace_cpu_s(hosts, i) for i in range(count)]
        with LoadProcess(
            plan(cluster.edges, duration_s, f"t{count}-", workers=64), root / f"load-{name}"
        ) as load:
            result = load.start().wait()
        used = [namespace_cpu_s(hosts, i) - b for i, b in zip(range(count), before, strict=True)]
        per_host_messages = result.acknowledged / count
        return {
            "hosts": count,
            "tls": tls,
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
    parser.add_argument("--kills", type=int, default=6, help="kill -9 of each host in turn, this many in all")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per measurement")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="confab-cluster-bench-"))
    with Hosts(3) as hosts:
        postgres = PostgresServer(listen=hosts.bridge_address, fsync=True).start()
        try:
            database = postgres.create_database()
            report = {"failover": failovers(hosts, root, database, args.kills, args.duration)}
            report["rolling_restart"] = rolling_restart(
                hosts, root, postgres.create_database(), 4 * args.duration
            )
            # Alternated, so that neither gets the quieter minute of the machine.
            for name, count, tls in (
                ("hosts_1", 1, True),
                ("hosts_3_tls", hosts.count, True),
                ("hosts_3_plaintext", hosts.count, False),
                ("hosts_3_tls_again", hosts.count, True),
                ("hosts_3_plaintext_again", hosts.count, False),
            ):
                database = postgres.create_database()
                report[name] = throughput(hosts, root, database, count, args.duration, tls=tls)
                print(f"{name}: {report[name]}", flush=True)
        finally:
            postgres.close()
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
